"""replace_vm's lock and cut-over checks, with a fake cloud (the real proofs are the
integration tests in test_replace_vm.py)."""

import multiprocessing
import time

import pytest

from vmopslib import replace
from vmopslib.errors import CloudError, InvalidInput, VmopsError
from vmopslib.store import Locked


class Cloud:
    name, driver = "fake", "openstack"

    def __init__(self, new_status="ACTIVE", new_ips=("203.0.113.7",), ip_owner=None):
        self.new_status, self.new_ips, self.ip_owner = new_status, list(new_ips), ip_owner
        self.calls = []

    def describe(self, server_id):
        if server_id == "new":
            return {"id": "new", "status": self.new_status, "floating_ips": self.new_ips}
        return {"id": server_id, "status": "ACTIVE", "floating_ips": []}

    def exists(self, server_id):
        return self._get_server(server_id) is not None

    def _get_server(self, server_id):
        return {"id": server_id}

    def delete(self, server_id):
        self.calls.append(("delete", server_id))

    delete_id = delete

    def flip_floating_ip(self, address, server, fixed_ip=None, test=False, only_from=None):
        owner = self.ip_owner.get(address, "old") if self.ip_owner else "old"
        if only_from is not None and owner not in (None, server, *only_from):
            return {"address": address, "left": True, "old": {"server_id": owner}}
        if not test:
            self.calls.append(("flip", address, server) + ((fixed_ip,) if fixed_ip else ()))
            self.new_ips.append(address)
        return {
            "address": address,
            "old": {"server_id": owner},
            "new": {"server_id": server, "fixed_ip": fixed_ip or "10.0.0.9"},
        }


def _replacement(tmp_path, cloud, state, ips=("203.0.113.7",)):
    journal = replace.Journal(str(tmp_path))
    journal.save(
        {
            "vm": "app2",
            "state": state,
            "old": {"id": "old"},
            "new": {"id": "new"},
            "floating_ips": list(ips),
            "keep_old": "delete",
            "steps": [],
            "owner": replace.current_owner("tok"),
        }
    )
    return replace.Replacement({}, cloud, None, journal, None, token="tok")


@pytest.mark.parametrize(
    "status, ips, why",
    [
        ("BUILD", ["203.0.113.7"], "is BUILD"),
        ("ACTIVE", [], "does not hold 203.0.113.7"),
    ],
)
def test_retire_keeps_the_old_server_until_the_new_one_serves(tmp_path, status, ips, why):
    cloud = Cloud(new_status=status, new_ips=ips)
    rep = _replacement(tmp_path, cloud, "flipped")
    with pytest.raises(InvalidInput, match="%s.*old server old is kept" % why):
        rep.retire("app2")
    assert cloud.calls == []
    assert rep.journal.load("app2")["state"] == "flipped"


def test_retire_deletes_the_old_server_once_the_new_one_serves(tmp_path):
    cloud = Cloud()
    rep = _replacement(tmp_path, cloud, "flipped")
    assert rep.retire("app2")["state"] == "done"
    assert cloud.calls == [("delete", "old")]


def test_flip_never_takes_an_ip_someone_moved_elsewhere(tmp_path):
    cloud = Cloud(new_ips=[], ip_owner={"203.0.113.8": "third-server"})
    rep = _replacement(tmp_path, cloud, "checked", ips=("203.0.113.7", "203.0.113.8"))
    out = rep.flip("app2")
    assert cloud.calls == [("flip", "203.0.113.7", "new")]
    assert "203.0.113.8 (moved to third-server by someone else; left there)" in out["comment"]
    assert rep.journal.load("app2")["floating_ips"] == ["203.0.113.7"]


def _hold(directory, ready, release):
    journal = replace.Journal(directory)
    journal.lock("app2")
    ready.set()
    release.wait(10)


def test_the_lock_is_real_across_processes_and_dies_with_its_holder(tmp_path):
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(tmp_path), ready, release))
    holder.start()
    try:
        assert ready.wait(10)
        with pytest.raises(
            Locked, match="replacement of app2 is already running \\(pid %d" % holder.pid
        ):
            replace.Journal(str(tmp_path)).store.lock("app2")
    finally:
        holder.kill()
        holder.join()
    time.sleep(0.1)
    replace.Journal(str(tmp_path)).store.lock("app2").release()  # free once its holder died


def test_a_corrupt_journal_is_a_clear_error(tmp_path):
    (tmp_path / "app2.json").write_text('{"vm": "app2", "sta')
    with pytest.raises(InvalidInput, match="not a valid record.*move it aside"):
        replace.Journal(str(tmp_path)).load("app2")


class PlanCloud:
    name, driver, profile = "fake", "openstack", {}

    def __init__(self):
        self.booted = []

    def servers_named(self, name, brief=False):
        return [
            {
                "id": "old",
                "name": name,
                "status": "ACTIVE",
                "flavor": "m1",
                "image": "img",
                "key_name": None,
                "security_groups": [],
                "networks": {"private": ["10.0.0.5"]},
                "metadata": {},
                "availability_zone": None,
                "floating_ips": [],
                "host": "cmp1",
            }
        ]

    def resolve_spec(self, spec):
        return dict(spec)

    def extras(self, server_id):  # pylint: disable=unused-argument
        return {}

    def volumes(self, server_id):  # pylint: disable=unused-argument
        return []

    def exists(self, server_id):
        return self._get_server(server_id) is not None

    def _get_server(self, server_id):
        return None

    def boot(self, spec, wait=False):
        self.booted.append(spec)
        return {"id": "new"}

    def wait_for_status(self, server_id, status, timeout):
        return {"id": server_id, "host": "cmp2"}


class PlanKeys:
    def accepted_pub(self, name):
        return "OLD PUB"


def test_the_plan_freezes_the_settings_a_later_pillar_change_does_not_reach_the_new_vm(tmp_path):
    import yaml

    conf = {
        "master": {"address": "salt.example"},
        "sanity_grain": "role",
        "vms": {"app2": {"level": "web", "grains": {"team": "a"}}},
    }
    cloud = PlanCloud()
    rep = replace.Replacement(
        conf, cloud, PlanKeys(), replace.Journal(str(tmp_path)), None, token="tok"
    )
    plan = rep.plan("app2")
    assert "check role=web" in plan["comment"]
    conf["vms"]["app2"] = {"level": "db", "grains": {"team": "b"}}  # changed mid-run
    conf["sanity_grain"] = "tier"
    rep.boot("app2")
    doc = yaml.safe_load(cloud.booted[0]["user_data"])
    assert doc["salt_minion"]["grains"] == {"team": "a", "role": "web"}
    record = rep.journal.load("app2")
    assert record["settings"]["sanity_grain"] == "role" and record["level"] == "web"
    assert "PRIVATE" not in cloud.booted[0]["user_data"]
    rep.journal.unlock("app2")


class StateRuns:
    """The minion side of the highstate step: jobs published, and their outcome."""

    def __init__(self, failures=()):
        self.failures, self.published, self.waited = list(failures), [], []

    def run_state(self, name, fun, timeout, jid, on_jid):
        if jid is None:
            jid = "2026%d" % len(self.published)
            self.published.append((name, fun))
            on_jid(jid)
        self.waited.append(jid)
        return jid, self.failures, 12


def test_the_highstate_is_journaled_by_job_and_a_resumed_run_waits_for_that_job(tmp_path):
    rep = _replacement(tmp_path, Cloud(), "sane")
    rep.minion = StateRuns()
    out = rep.highstate("app2")
    assert out["step"] == "highstate" and "job 20260, 12 states" in out["comment"]
    assert rep.minion.published == [("app2", "state.highstate")]
    assert rep.journal.load("app2")["jobs"] == {"highstate": "20260", "highstate_ok": True}
    assert rep.highstate("app2")["skipped"]  # passed: never run twice
    # killed after publishing: the resumed run waits for that job, publishes none
    record = rep.journal.load("app2")
    record["jobs"] = {"highstate": "20260"}
    rep.journal.save(record)
    rep.highstate("app2")
    assert rep.minion.published == [("app2", "state.highstate")]
    assert rep.minion.waited == ["20260", "20260"]
    rep.journal.unlock("app2")


def test_a_failed_highstate_names_its_failed_states(tmp_path):
    rep = _replacement(tmp_path, Cloud(), "sane")
    rep.minion = StateRuns(failures=["nginx: service failed to start"])
    with pytest.raises(VmopsError, match="highstate of the new app2 failed .*nginx: service"):
        rep.highstate("app2")
    rep.journal.unlock("app2")


def test_deploy_is_reported_with_its_duration(tmp_path):
    cloud = Cloud()
    rep = _replacement(tmp_path, cloud, "sane")
    record = rep.journal.load("app2")
    record["steps"].append({"step": "highstate", "result": True, "at": time.time() - 5})
    rep.journal.save(record)
    out = rep.passed("app2", "deploy")
    assert out["step"] == "deploy" and out["duration"] >= 5
    assert [s["step"] for s in rep.journal.load("app2")["steps"]][-1] == "deploy"
    with pytest.raises(InvalidInput, match="only deploy"):
        rep.passed("app2", "flip")
    rep.journal.unlock("app2")


class MultiHomed(Cloud):
    """The new VM has a port on two networks; Neutron cannot choose by itself."""

    def __init__(self, new_nets):
        super().__init__(new_ips=[])
        self.new_nets = new_nets

    def describe(self, server_id):
        return dict(super().describe(server_id), networks=self.new_nets)

    def floating_ip_show(self, address):
        return {"address": address, "server_id": "old", "fixed_ip": "10.0.0.5"}

    def flip_floating_ip(self, address, server, fixed_ip=None, test=False, only_from=None):
        if server == "new" and fixed_ip is None and len(self.new_nets) > 1:
            raise InvalidInput("server new has several fixed IPs: say which one with fixed_ip")
        return super().flip_floating_ip(address, server, fixed_ip, test, only_from)


def _multihomed(tmp_path, cloud, fip_network=None):
    rep = _replacement(tmp_path, cloud, "sane")
    record = rep.journal.load("app2")
    record["old"]["networks"] = {"private": ["10.0.0.5"]}
    record["fip_network"] = fip_network
    rep.journal.save(record)
    return rep


def test_a_multi_homed_new_vm_gets_the_ip_on_the_network_it_had_on_the_old_one(tmp_path):
    cloud = MultiHomed({"storage": ["10.1.0.9"], "private": ["10.0.0.9", "fd00::9"]})
    rep = _multihomed(tmp_path, cloud)
    rep.checked("app2")
    assert rep.journal.load("app2")["flip_to"] == {"203.0.113.7": "10.0.0.9"}
    rep.flip("app2")
    assert cloud.calls == [("flip", "203.0.113.7", "new", "10.0.0.9")]
    rep.journal.unlock("app2")


def test_a_flip_that_cannot_choose_a_port_fails_the_checks_not_the_cut_over(tmp_path):
    """Before the point of no return: the orchestration rolls back; never stuck at checked."""
    cloud = MultiHomed({"storage": ["10.1.0.9"], "backup": ["10.2.0.9"]})
    rep = _multihomed(tmp_path, cloud)
    with pytest.raises(VmopsError, match="203.0.113.7 cannot be pointed.*set fip_network"):
        rep.checked("app2")
    assert rep.journal.load("app2")["state"] == "sane" and cloud.calls == []
    rep.journal.unlock("app2")
    rep = _multihomed(tmp_path, cloud, fip_network="backup")
    rep.checked("app2")
    assert rep.journal.load("app2")["flip_to"] == {"203.0.113.7": "10.2.0.9"}
    rep.journal.unlock("app2")
    rep = _multihomed(tmp_path, cloud, fip_network="public")
    with pytest.raises(VmopsError, match="fip_network public: the new app2 has no address on it"):
        rep.checked("app2")
    rep.journal.unlock("app2")


class AbandonKeys:
    def __init__(self, pub):
        self.pub = pub

    def accepted_pub(self, name):
        return self.pub


@pytest.mark.parametrize(
    "pub, holder", [("OLD", "still the old VM's"), ("NEW", "no longer the old VM's")]
)
def test_abandon_changes_nothing_ends_the_run_and_says_where_everything_is(tmp_path, pub, holder):
    cloud = Cloud()
    rep = _replacement(tmp_path, cloud, "checked")
    record = rep.journal.load("app2")
    record["old_pub"] = "OLD"
    rep.journal.save(record)
    rep.keys = AbandonKeys(pub)
    out = rep.abandon("app2")
    assert out["state"] == "abandoned" and cloud.calls == []
    assert "abandoned at state checked, nothing changed" in out["comment"]
    assert "new server new ACTIVE, floating IPs 203.0.113.7" in out["comment"]
    assert holder in out["comment"]
    with pytest.raises(InvalidInput, match="no replacement of app2 is in progress"):
        rep.flip("app2")
    replace.Journal(str(tmp_path)).store.lock("app2").release()  # its lock went with it


def test_plan_options_of_the_wrong_type_are_refused_before_any_change(tmp_path):
    rep = replace.Replacement(
        {}, PlanCloud(), PlanKeys(), replace.Journal(str(tmp_path)), None, token="tok"
    )
    with pytest.raises(InvalidInput, match="fip_network must be a name"):
        rep.plan("app2", options={"fip_network": ["a", "b"]})


class FlakyDelete(PlanCloud):
    """Deletes fail ``failures`` times with a 503 first."""

    def __init__(self, failures):
        super().__init__()
        self.failures, self.deletes, self.present = failures, 0, {"left"}

    def _get_server(self, server_id):
        return {"id": server_id} if server_id in self.present else None

    def delete(self, server_id):
        self.deletes += 1
        if self.failures:
            self.failures -= 1
            raise CloudError("HTTP 503 from compute", transient=True)
        self.present.discard(server_id)


def test_a_rollback_asks_a_5xx_cloud_again_and_records_what_it_could_not_remove(tmp_path):
    rep = replace.Replacement({}, FlakyDelete(2), PlanKeys(), None, None)
    rep.retry_pause = 0
    record = {"vm": "app2"}
    assert rep._remove_new(record, "left") == "left deleted"  # pylint: disable=W0212
    assert rep.provider.deletes == 3 and "leftover" not in record
    rep = replace.Replacement({}, FlakyDelete(5), PlanKeys(), None, None)
    rep.retry_pause = 0
    out = rep._remove_new(record, "left")  # pylint: disable=protected-access
    assert "left NOT removed" in out and "the next run for app2 removes it first" in out
    assert record["leftover"] == "left" and rep.provider.deletes == 3


def test_the_next_plan_removes_what_a_rolled_back_run_left_or_refuses(tmp_path):
    conf = {"vms": {"app2": {"level": "web"}}}
    journal = replace.Journal(str(tmp_path))
    journal.save({"vm": "app2", "state": "rolled_back", "leftover": "left", "steps": []})
    cloud = FlakyDelete(9)
    rep = replace.Replacement(conf, cloud, PlanKeys(), journal, None, token="tok")
    rep.retry_pause = 0
    assert "first removes the server left" in rep.plan("app2", test=True)["comment"]
    assert cloud.deletes == 0  # test=True changes nothing
    with pytest.raises(InvalidInput, match="server left a rolled-back replacement of app2 left"):
        rep.plan("app2")
    assert journal.load("app2")["state"] == "rolled_back"  # no new run started
    journal.unlock("app2")
    cloud.failures = 0
    out = rep.plan("app2")
    assert out["state"] == "planned" and "left" not in cloud.present
    assert out["comment"].startswith("removed what a rolled-back run left: left deleted")
    journal.unlock("app2")


def test_a_rollback_cut_short_is_finished_by_the_next_run_never_gone_forward(tmp_path):
    """Killed (or the master restarted) after the rollback removed the new server: the
    resumed run must not wait for the deleted VM's minion; every forward step refuses and
    the rollback is what runs again."""
    cloud = Cloud()
    rep = _replacement(tmp_path, cloud, "sane")
    record = rep.journal.load("app2")
    record["failed"] = {"step": "highstate", "reason": "no return"}
    record["rolling_back"] = {"since": time.time()}
    rep.journal.save(record)
    for step in (rep.wait, rep.sanity, rep.checked, rep.flip, rep.retire):
        with pytest.raises(VmopsError, match="rollback .* was interrupted: it is finished now"):
            step("app2")
    rep.fail("app2", "wait", VmopsError("refused"))
    assert rep.journal.load("app2")["failed"]["step"] == "highstate"  # what is rolled back
    assert cloud.calls == []
    rep.journal.unlock("app2")


def test_state_failures_name_the_failed_states_or_why_nothing_ran():
    from vmopslib import saltglue  # pylint: disable=import-outside-toplevel

    ok = {"file_|-motd_|-/etc/motd_|-managed": {"result": True, "comment": "ok"}}
    assert saltglue.state_failures({"return": ok, "retcode": 0}) == []
    bad = dict(ok, **{"service_|-web_|-nginx_|-running": {"result": False, "comment": "dead"}})
    assert saltglue.state_failures({"return": bad, "retcode": 2}) == ["nginx: dead"]
    busy = ["The function state.highstate is running as PID 42"]
    assert saltglue.state_failures({"return": busy, "retcode": 1}) == busy
    assert saltglue.state_failures({"return": ok, "retcode": 5}) == ["retcode 5"]
    assert saltglue.state_failures({"return": "Passed invalid arguments"}) == [
        "Passed invalid arguments"
    ]
