"""evacuate.py against an in-memory cloud: the edge cases (the real proof is
tests/functional/test_evacuate.py and tests/integration/test_evacuate_node.py)."""

import itertools

import pytest

from vmopslib import evacuate
from vmopslib.errors import InvalidInput, NotFound, NotSupported
from vmopslib.store import JournalStore, Locked

HOSTS = ("cmp1", "cmp2", "cmp3")


class Clock:
    def __init__(self):
        self.slept = 0.0

    def sleep(self, seconds):
        self.slept += seconds


class FakeCloud:
    """Servers move one tick after they were asked to (a ``hang`` one never does)."""

    name = "fake"
    driver = "openstack"
    has_compute_hosts = True

    def __init__(self, free_ram=100000):
        self.svc = {
            h: {
                "host": h,
                "binary": "nova-compute",
                "status": "enabled",
                "state": "up",
                "forced_down": False,
                "disabled_reason": None,
                "zone": "nova",
                "updated_at": None,
            }
            for h in HOSTS
        }
        self.servers = {}
        self.migs = []
        self.free_ram = {h: free_ram for h in HOSTS}
        self.groups = []
        self.calls = []
        self.inflight_max = 0
        self.ids = itertools.count(1)

    # --- test set-up
    def add(self, name, host="cmp1", status="ACTIVE", ram=512, **extra):
        sid = "srv-%s" % name
        self.servers[sid] = dict(
            {
                "id": sid,
                "name": name,
                "status": status,
                "task_state": None,
                "vm_state": status.lower(),
                "host": host,
                "project_id": "p",
                "locked": False,
                "metadata": {},
                "updated": None,
                "needs": {"VCPU": 1, "MEMORY_MB": ram, "DISK_GB": 1},
            },
            **extra,
        )
        return sid

    def _tick(self):
        busy = 0
        for srv in self.servers.values():
            job = srv.get("_job")
            if not job:
                continue
            if job["kind"] == "hang" and not job.get("end"):
                busy += 1
                continue
            job["ticks"] -= 1
            if job["ticks"] > 0:
                busy += 1
                continue
            mig = job.get("mig")
            srv["_job"] = None
            srv["task_state"] = None
            if job.get("end") == "abort" or job["kind"] == "fail":
                mig["status"] = "cancelled" if job.get("end") == "abort" else "error"
                continue
            if job["kind"] == "live":
                srv["host"] = job["dest"]
                mig["status"] = "completed"
            elif job["kind"] == "cold":
                srv["host"] = job["dest"]
                srv["status"] = "VERIFY_RESIZE"
                mig["status"] = "finished"
            elif job["kind"] == "confirm":
                srv["status"] = srv.pop("_before")
                mig["status"] = "confirmed"
            elif job["kind"] == "offload":
                srv.update(status="SHELVED_OFFLOADED", host=None)
            elif job["kind"] == "stop":
                srv["status"] = "SHUTOFF"
            elif job["kind"] == "resume":
                srv["status"] = "ACTIVE"
        on_node = sum(
            1
            for s in self.servers.values()
            if s.get("_job") and s["_job"]["kind"] in ("live", "cold", "hang")
        )
        self.inflight_max = max(self.inflight_max, on_node)
        del busy

    def _dest(self, srv, host):
        if host:
            return host
        options = [h for h in HOSTS if h != srv["host"] and self.svc[h]["status"] == "enabled"]
        return sorted(options, key=lambda h: -self.free_ram[h])[0]

    def _start(self, sid, kind, host=None, ticks=1):
        srv = self.servers[sid]
        self.calls.append((kind, sid))
        mode = srv["metadata"].get("fakevm:migrate")
        job = {"kind": kind, "ticks": ticks}
        if kind in ("live", "cold"):
            job["dest"] = self._dest(srv, host)
            job["mig"] = {
                "id": next(self.ids),
                "server_id": sid,
                "status": "running",
                "type": "live-migration" if kind == "live" else "migration",
                "source": srv["host"],
                "dest": job["dest"],
                "created": str(len(self.migs)),
                "updated": None,
            }
            self.migs.append(job["mig"])
            if mode == "fail" or (mode == "fail-once" and not srv.get("_failed")):
                srv["_failed"] = True
                job["kind"] = "fail"
            elif mode == "hang":
                job["kind"] = "hang"
        srv["_job"] = job
        srv["task_state"] = {"live": "migrating", "cold": "resize_prep"}.get(kind, "busy")
        if kind == "confirm":
            srv["task_state"] = None
            srv["_job"]["ticks"] = 1
            srv["_job"]["mig"] = [m for m in self.migs if m["server_id"] == sid][-1]
        self._tick_count_inflight()

    def _tick_count_inflight(self):
        on_node = sum(
            1
            for s in self.servers.values()
            if s.get("_job") and s["_job"]["kind"] in ("live", "cold", "hang", "fail")
        )
        self.inflight_max = max(self.inflight_max, on_node)

    @staticmethod
    def _public(srv):
        return {k: v for k, v in srv.items() if not k.startswith("_")}

    # --- the primitives evacuate.py uses
    def service_list(self):
        return [dict(v) for v in self.svc.values()]

    def service_show(self, host):
        return dict(self.svc[host])

    def service_disable(self, host, reason):
        self.calls.append(("disable", host))
        self.svc[host].update(status="disabled", disabled_reason=reason)

    def service_enable(self, host):
        self.calls.append(("enable", host))
        self.svc[host].update(status="enabled", disabled_reason=None)
        return dict(self.svc[host])

    def host_server_states(self, host):
        return [self._public(s) for s in self.servers.values() if s["host"] == host]

    def server_states(self, since):  # pylint: disable=unused-argument
        self._tick()
        return [self._public(s) for s in self.servers.values()]

    def server_state(self, sid):
        return self._public(self.servers[sid]) if sid in self.servers else None

    def host_migrations(self, host, since):  # pylint: disable=unused-argument
        return [dict(m) for m in self.migs if host in (m["source"], m["dest"])]

    def migration_progress(self, sid):
        job = self.servers[sid].get("_job") or {}
        if job.get("kind") == "hang":
            return [
                {
                    "id": job["mig"]["id"],
                    "status": "running",
                    "memory_total": 100,
                    "memory_remaining": 50,
                    "disk_total": 0,
                    "disk_remaining": 0,
                }
            ]
        return []

    def placement_free(self, hosts=None):  # pylint: disable=unused-argument
        return {
            h: {
                "VCPU": {"free": 100, "max_unit": 100},
                "MEMORY_MB": {"free": self.free_ram[h], "max_unit": 100000},
                "DISK_GB": {"free": 100, "max_unit": 100},
            }
            for h in HOSTS
        }

    def anti_affinity_groups(self):
        return self.groups

    def start_live_migration(self, sid, host=None):
        self._start(sid, "live", host)

    def start_cold_migration(self, sid, host=None):
        self._start(sid, "cold", host)

    def confirm_migration(self, sid):
        self.servers[sid]["_before"] = (
            "SHUTOFF" if self.servers[sid]["vm_state"] == "stopped" else "ACTIVE"
        )
        self._start(sid, "confirm")

    def shelve_offload(self, sid):
        self._start(sid, "offload")

    def power_off(self, sid):
        self._start(sid, "stop")

    def resume(self, sid):
        self._start(sid, "resume")

    def reset_server_state(self, sid, state):
        self.calls.append(("reset", sid))
        self.servers[sid]["status"] = state.upper()

    def migration_abort_id(self, sid, mig_id):  # pylint: disable=unused-argument
        self.calls.append(("abort", sid))
        self.servers[sid]["_job"]["end"] = "abort"
        self.servers[sid]["_job"]["ticks"] = 1

    def migration_force_complete_id(self, sid, mig_id):  # pylint: disable=unused-argument
        self.calls.append(("force_complete", sid))
        job = self.servers[sid]["_job"]
        job.update(kind="live", end="complete", ticks=1)


@pytest.fixture
def cloud():
    return FakeCloud()


@pytest.fixture
def store(tmp_path):
    return JournalStore(str(tmp_path / "evacuate"), what="evacuation")


def make(cloud, store, events=None, **opts):
    return evacuate.Evacuation(
        cloud,
        store,
        evacuate.options({}, dict({"poll_interval": 0, "settle_seconds": 0}, **opts)),
        events=events,
        clock=Clock(),
        who="tester@test",
    )


# ---------------------------------------------------------------- input


@pytest.mark.parametrize("node", ["cmp*", "cmp1,cmp2", "cmp[12]", "", None, "cmp1\n", "L@cmp1"])
def test_node_names_that_are_not_one_host_are_refused(cloud, store, node):
    with pytest.raises(InvalidInput, match="not a plain host name"):
        make(cloud, store).run(node, "x")
    assert cloud.calls == []


def test_unknown_node_lists_the_hosts_and_changes_nothing(cloud, store):
    with pytest.raises(
        NotFound, match=r"no nova-compute service on host 'cmp10'.*cmp1, cmp2, cmp3"
    ):
        make(cloud, store).run("cmp10", "x")
    assert cloud.calls == []


@pytest.mark.parametrize(
    "opts, match",
    [
        ({"concurrency": "abc"}, "concurrency must be an integer"),
        ({"concurrency": 0}, "concurrency must be at least 1"),
        ({"force": "maybe"}, "force must be true or false"),
        ({"on_timeout": "panic"}, "on_timeout must be one of"),
        ({"bogus": 1}, "unknown evacuation option"),
        ({"target": "cmp*"}, "not a plain host name"),
    ],
)
def test_bad_options_are_refused(opts, match):
    with pytest.raises(InvalidInput, match=match):
        evacuate.options({}, opts)


def test_only_enabled_host_and_missing_reason_are_refused(cloud, store):
    cloud.add("a")
    with pytest.raises(InvalidInput, match="say why"):
        make(cloud, store).run("cmp1", "")
    cloud.svc["cmp2"]["status"] = cloud.svc["cmp3"]["status"] = "disabled"
    with pytest.raises(InvalidInput, match="only enabled nova-compute host"):
        make(cloud, store).run("cmp1", "x")
    assert cloud.calls == []


def test_ec2_says_it_has_no_compute_hosts(store):
    class EC2:
        name, driver, has_compute_hosts = "aws", "ec2", False

    with pytest.raises(NotSupported, match="no compute hosts to evacuate"):
        make(EC2(), store)


# ---------------------------------------------------------------- plan


def test_classify_by_state():
    opts = evacuate.options({}, {})
    base = {"task_state": None, "locked": False, "metadata": {}}
    want = {
        "ACTIVE": "live",
        "PAUSED": "live",
        "SHUTOFF": "cold",
        "VERIFY_RESIZE": "confirm",
        "SHELVED": "offload",
        "SUSPENDED": "blocked",
        "RESCUED": "blocked",
        "ERROR": "blocked",
        "BUILD": "blocked",
    }
    for status, method in want.items():
        assert evacuate.classify(dict(base, status=status), opts)[0] == method, status
    assert (
        evacuate.classify(dict(base, status="ACTIVE", task_state="migrating"), opts)[0] == "blocked"
    )
    assert evacuate.classify(dict(base, status="ACTIVE", locked=True), opts)[0] == "blocked"
    assert (
        evacuate.classify(dict(base, status="ACTIVE", metadata={"vmops:evacuate": "skip"}), opts)[0]
        == "skip"
    )
    assert (
        evacuate.classify(dict(base, status="ACTIVE", metadata={"vmops:evacuate": "stop"}), opts)[0]
        == "stop"
    )
    opted = evacuate.options(
        {},
        {
            "suspended": "resume_and_live_migrate",
            "on_error": "reset_and_cold_migrate",
            "locked": "move",
        },
    )
    assert evacuate.classify(dict(base, status="SUSPENDED"), opted)[0] == "resume_live"
    assert evacuate.classify(dict(base, status="ERROR"), opted)[0] == "reset_cold"
    assert evacuate.classify(dict(base, status="ACTIVE", locked=True), opted)[0] == "live"


def test_plan_changes_nothing_and_shows_capacity(cloud, store):
    cloud.add("a")
    cloud.add("b", status="SHUTOFF")
    cloud.add("c", status="SUSPENDED")
    plan = make(cloud, store).plan("cmp1")
    assert cloud.calls == []
    assert plan["result"] is True and plan["test"] is True and plan["targets"] == ["cmp2", "cmp3"]
    assert {s["name"]: s["method"] for s in plan["servers"]} == {
        "a": "live",
        "b": "cold",
        "c": "blocked",
    }
    assert plan["capacity"]["need"]["MEMORY_MB"] == 1024  # the suspended one is not moved
    assert plan["capacity"]["free_after"]["cmp2"]["MEMORY_MB"] < 100000


def test_capacity_refusal_names_the_numbers_and_changes_nothing(cloud, store):
    cloud.free_ram = {"cmp1": 100000, "cmp2": 1000, "cmp3": 1500}
    cloud.add("big", ram=2048)
    cloud.add("small", ram=512)
    with pytest.raises(InvalidInput) as err:
        make(cloud, store).run("cmp1", "disk errors")
    msg = str(err.value)
    assert "MEMORY_MB 2560" in msg and "cmp2: " in msg and "cannot place big" in msg
    assert "MEMORY_MB 2048 > 1500" in msg and "nothing was changed" in msg
    assert cloud.calls == [] and cloud.svc["cmp1"]["status"] == "enabled"
    # force goes on (and the scheduler decides)
    report = make(cloud, store, force=True).run("cmp1", "disk errors")
    assert report["warnings"] and report["counts"] == {"moved": 2}


def test_anti_affinity_needs_room_and_members_never_move_together(cloud, store):
    a, b = cloud.add("a"), cloud.add("b")
    other = cloud.add("c", host="cmp2")
    cloud.groups = [{"id": "g1", "name": "web", "members": [a, b, other]}]
    # two members on the node, cmp2 holds the third: only cmp3 is free of the group
    with pytest.raises(InvalidInput, match="anti-affinity group web.*2 member.*only 1 target"):
        make(cloud, store).run("cmp1", "x")
    assert cloud.calls == []
    cloud.groups = [{"id": "g1", "name": "web", "members": [a, b]}]
    report = make(cloud, store, concurrency=4).run("cmp1", "x")
    assert report["result"] is True
    assert cloud.inflight_max == 1  # the two members went one after the other


# ---------------------------------------------------------------- run


def test_mixed_node_is_drained_within_the_concurrency_bound(cloud, store):
    for i in range(5):
        cloud.add("act%d" % i)
    cloud.add("paused", status="PAUSED")
    cloud.add("off", status="SHUTOFF", vm_state="stopped")
    cloud.add("shelved", status="SHELVED")
    cloud.add("susp", status="SUSPENDED")
    cloud.add("err", status="ERROR")
    cloud.add("optout", metadata={"vmops:evacuate": "skip"})
    seen = []
    report = make(cloud, store, events=lambda tag, msg, **d: seen.append(tag), concurrency=2).run(
        "cmp1", "disk errors"
    )
    phases = {s["name"]: s["phase"] for s in report["servers"]}
    assert phases == dict(
        {"act%d" % i: "moved" for i in range(5)},
        paused="moved",
        off="moved",
        shelved="offloaded",
        susp="blocked",
        err="blocked",
        optout="skipped",
    )
    assert cloud.inflight_max <= 2
    assert report["result"] is False and report["retcode"] == 1  # two servers left behind
    assert {s["name"] for s in report["remaining"]} == {"susp", "err", "optout"}
    assert cloud.svc["cmp1"]["status"] == "disabled"
    assert cloud.svc["cmp1"]["disabled_reason"].startswith(
        "vmops-evacuate run=%s by tester@test" % report["run"]
    )
    assert cloud.servers["srv-off"]["status"] == "SHUTOFF"  # cold-migrated and confirmed
    assert cloud.servers["srv-paused"]["status"] == "PAUSED"
    assert "evacuate/cmp1/disabled" in seen and "evacuate/cmp1/done" in seen
    # one request per move (6 live, 1 cold) and one confirm for the cold one
    moves = [c for c in cloud.calls if c[0] in ("live", "cold", "confirm")]
    assert len(moves) == 6 + 1 + 1


def test_failed_migration_is_retried_then_reported(cloud, store):
    cloud.add("flaky", metadata={"fakevm:migrate": "fail-once"})
    cloud.add("broken", metadata={"fakevm:migrate": "fail"})
    cloud.add("fine")
    report = make(cloud, store, retries=2).run("cmp1", "x")
    by = {s["name"]: s for s in report["servers"]}
    assert by["flaky"]["phase"] == "moved" and by["flaky"]["attempts"] == 2
    assert by["broken"]["phase"] == "failed" and by["broken"]["attempts"] == 3
    assert "migration" in by["broken"]["comment"] and "error" in by["broken"]["comment"]
    assert by["fine"]["phase"] == "moved"
    assert report["result"] is False


def test_stop_on_failure_starts_nothing_new(cloud, store):
    cloud.add("a-broken", metadata={"fakevm:migrate": "fail"})
    cloud.add("b")
    report = make(cloud, store, retries=0, stop_on_failure=True).run("cmp1", "x")
    by = {s["name"]: s for s in report["servers"]}
    assert by["a-broken"]["phase"] == "failed"
    assert by["b"]["phase"] == "pending" and "not started" in by["b"]["comment"]
    assert ("live", "srv-b") not in cloud.calls


@pytest.mark.parametrize("action, phase", [("abort", "failed"), ("force_complete", "moved")])
def test_stuck_live_migration_is_handled(cloud, store, action, phase):
    cloud.add("stuck", metadata={"fakevm:migrate": "hang"})
    cloud.add("fine")
    ev = make(cloud, store, on_timeout=action, stall_seconds=3, concurrency=2)
    times = itertools.count(0, 1.0)
    real = evacuate.time.time
    evacuate.time.time = lambda: 1_000_000 + next(times)
    try:
        report = ev.run("cmp1", "x")
    finally:
        evacuate.time.time = real
    by = {s["name"]: s for s in report["servers"]}
    assert (action, "srv-stuck") in cloud.calls
    assert by["stuck"]["phase"] == phase, by["stuck"]
    assert by["fine"]["phase"] == "moved"
    if action == "abort":
        assert "no progress" in by["stuck"]["comment"] and by["stuck"]["attempts"] == 1


def test_someone_elses_disable_is_kept_and_not_undone(cloud, store):
    cloud.add("a")
    cloud.svc["cmp1"].update(status="disabled", disabled_reason="RMA ticket 42")
    report = make(cloud, store).run("cmp1", "x")
    assert report["result"] is True and report["prior_reason"] == "RMA ticket 42"
    assert cloud.svc["cmp1"]["disabled_reason"] == "RMA ticket 42"
    assert ("disable", "cmp1") not in cloud.calls
    with pytest.raises(InvalidInput, match="disabled by someone else.*RMA ticket 42"):
        make(cloud, store).enable("cmp1")
    assert cloud.svc["cmp1"]["status"] == "disabled"
    assert make(cloud, store).enable("cmp1", force=True)["changed"] is True


def test_enable_and_migrate_back(cloud, store):
    cloud.add("a")
    cloud.add("b", status="SHUTOFF", vm_state="stopped")
    assert make(cloud, store).run("cmp1", "x")["result"] is True
    out = make(cloud, store).enable("cmp1", migrate_back=True)
    assert out["changed"] and out["migrate_back"]["result"] is True
    assert cloud.servers["srv-a"]["host"] == "cmp1" and cloud.servers["srv-b"]["host"] == "cmp1"
    assert make(cloud, store).enable("cmp1")["changed"] is False


def test_a_second_run_on_the_node_is_refused(cloud, store):
    cloud.add("a")
    held = store.lock("cmp1")
    try:
        with pytest.raises(Locked, match="already running \\(pid"):
            make(cloud, store).run("cmp1", "x")
        with pytest.raises(InvalidInput, match="is running"):
            make(cloud, store).enable("cmp1")
    finally:
        held.release()
    assert cloud.calls == []


def test_resume_adopts_a_migration_in_flight(cloud, store):
    cloud.add("a")
    cloud.add("b")
    ev = make(cloud, store)
    state = {}

    def interrupt(tag, message, **data):  # pylint: disable=unused-argument
        if tag.endswith("/started") and not state:
            state["hit"] = True
            raise KeyboardInterrupt

    ev.events = interrupt
    with pytest.raises(KeyboardInterrupt):
        ev.run("cmp1", "x")
    journal = store.load("cmp1")
    assert journal["state"] == "interrupted"
    starts = [c for c in cloud.calls if c[0] == "live"]
    assert len(starts) == 1
    report = make(cloud, store).run("cmp1", "x")
    assert report["result"] is True and report["run"] == journal["run"]
    # the migration in flight was adopted, not started again
    assert [c for c in cloud.calls if c[0] == "live"].count(starts[0]) == 1


def test_a_server_deleted_meanwhile_is_reported_not_fought(cloud, store):
    sid = cloud.add("doomed")
    orig = cloud.server_states

    def states(since):
        cloud.servers[sid].update(status="DELETED", task_state=None, _job=None)
        return orig(since)

    cloud.server_states = states
    report = make(cloud, store).run("cmp1", "x")
    assert report["servers"][0]["phase"] == "gone"


def test_a_late_arrival_is_moved_too(cloud, store):
    cloud.add("a")
    orig = cloud.host_server_states
    count = {"n": 0}

    def listing(host):
        count["n"] += 1
        if count["n"] == 3:  # after the run's second look: the scheduler raced us
            cloud.add("late")
        return orig(host)

    cloud.host_server_states = listing
    report = make(cloud, store).run("cmp1", "x")
    assert {s["name"]: s["phase"] for s in report["servers"]} == {"a": "moved", "late": "moved"}
    assert report["result"] is True


def test_corrupt_journal_is_a_clear_error(cloud, store, tmp_path):
    cloud.add("a")
    (tmp_path / "evacuate").mkdir()
    (tmp_path / "evacuate" / "cmp1.json").write_text("{not json")
    with pytest.raises(InvalidInput, match="not a valid record.*move it aside"):
        make(cloud, store).run("cmp1", "x")


def test_a_server_moved_by_someone_else_is_noticed_not_fought(cloud, store):
    cloud.add("a")
    theirs = cloud.add("b")
    orig = cloud.server_states

    def states(since):
        if cloud.servers[theirs]["host"] == "cmp1":  # an operator moved it by hand meanwhile
            cloud.servers[theirs]["host"] = "cmp3"
        return orig(since)

    cloud.server_states = states
    report = make(cloud, store, concurrency=1).run("cmp1", "x")
    by = {s["name"]: s for s in report["servers"]}
    assert by["b"]["phase"] == "elsewhere" and "by someone else (now on cmp3)" in by["b"]["comment"]
    assert ("live", theirs) not in cloud.calls
    assert report["result"] is True
