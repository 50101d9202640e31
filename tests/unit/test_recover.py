"""recover.py against an in-memory cloud: the edges (the real proof is
tests/integration/test_recover_node.py)."""

import pytest

from tests.unit.fakeclock import Clock, stamp
from vmopslib import recover
from vmopslib.errors import InvalidInput
from vmopslib.store import JournalStore


class DeadHostCloud:
    """cmp2 is dead; an evacuated server lands on cmp1 two polls after it was asked for."""

    name = "fake"

    def __init__(self, clock, lands="ACTIVE"):
        self.clock, self.lands = clock, lands
        self.calls, self.inflight, self.max_inflight = [], {}, 0
        self.svc = {
            h: {
                "host": h,
                "status": "enabled",
                "state": "down" if h == "cmp2" else "up",
                "forced_down": False,
                "disabled_reason": None,
                "updated_at": stamp(clock.time() - 120 if h == "cmp2" else clock.time()),
            }
            for h in ("cmp1", "cmp2", "cmp3")
        }
        self.servers = {}
        self.vols = {}
        self.never = set()  # ids whose evacuation never finishes

    def add(self, name, status="ACTIVE", local=("root disk (from image)",), task=None, vols=()):
        sid = "id-" + name
        self.servers[sid] = {
            "id": sid,
            "name": name,
            "status": status,
            "task_state": task,
            "host": "cmp2",
            "needs": {"VCPU": 1, "MEMORY_MB": 512, "DISK_GB": 1},
            "local_disk": list(local),
            "fault": None,
        }
        self.vols[sid] = list(vols)
        return sid

    def service_show(self, host):
        return dict(self.svc[host])

    def service_list(self):
        return [dict(v) for v in self.svc.values()]

    def service_force_down(self, host, forced=True):
        self.calls.append(("force_down", host, forced))
        self.svc[host]["forced_down"] = forced

    def service_disable(self, host, reason):
        self.calls.append(("disable", host))
        self.svc[host].update(status="disabled", disabled_reason=reason)

    def service_enable(self, host):
        self.calls.append(("enable", host))
        self.svc[host].update(status="enabled", disabled_reason=None)

    def host_server_states(self, host):
        return [dict(s) for s in self.servers.values() if s["host"] == host]

    def placement_free(self, hosts=None):
        return {
            h: {"VCPU": {"free": 8}, "MEMORY_MB": {"free": 4096}, "DISK_GB": {"free": 40}}
            for h in (hosts or ("cmp1", "cmp3"))
        }

    def reset_server_state(self, sid, state):
        self.calls.append(("reset", sid))
        self.servers[sid].update(status=state.upper(), task_state=None)

    def evacuate(self, sid, host=None):  # pylint: disable=unused-argument
        self.calls.append(("evacuate", sid))
        self.inflight[sid] = 2
        self.max_inflight = max(self.max_inflight, len(self.inflight))
        self.servers[sid]["task_state"] = "rebuilding"

    def server_state(self, sid):
        srv = self.servers.get(sid)
        if srv is None:
            return None
        if sid in self.inflight and sid not in self.never:
            self.inflight[sid] -= 1
            if self.inflight[sid] <= 0:
                del self.inflight[sid]
                srv.update(host="cmp1", task_state=None)
                srv["status"] = self.lands if srv["status"] == "ACTIVE" else srv["status"]
        return dict(srv)

    def power_on(self, sid):
        self.calls.append(("start", sid))
        self.servers[sid]["status"] = "ACTIVE"

    def volumes(self, sid):
        return [{"volume_id": v, "status": "in-use"} for v in self.vols[sid]]


@pytest.fixture
def world(tmp_path):
    clock = Clock()
    return DeadHostCloud(clock), clock, tmp_path


def make(world, fence_result=None, answers=False, **opts):
    cloud, clock, tmp_path = world
    fenced = []

    def do_fence(action, node):
        fenced.append((action, node))
        return fence_result if fence_result is not None else (True, "exit 0")

    rec = recover.Recovery(
        cloud,
        JournalStore(str(tmp_path / "recover"), "recovery"),
        recover.options({}, dict({"poll_interval": 1}, **opts)),
        fence=do_fence,
        node_answers=lambda node: answers,
        events=None,
        clock=clock,
        who="tester@test",
    )
    rec.fenced_calls = fenced
    return rec


@pytest.mark.parametrize(
    "opts, match",
    [
        ({"local_disks": "yes"}, "local_disks must be"),
        ({"fence": "ipmitool off"}, "fence must be"),
        ({"fence": {"cmd": " "}}, "fence must be"),
        ({"concurrency": 0}, "concurrency"),
        ({"timeout": "later"}, "timeout"),
        ({"fenced": "perhaps"}, "fenced"),
        ({"evacuate": True}, "unknown recovery option"),
    ],
)
def test_bad_options_are_refused(opts, match):
    with pytest.raises(InvalidInput, match=match):
        recover.options({}, opts)


def test_without_a_fence_proof_nothing_moves(world):
    cloud = world[0]
    cloud.add("vm1", local=())
    with pytest.raises(InvalidInput, match="no proof that cmp2 is off.*nothing was changed"):
        make(world).run("cmp2")
    assert cloud.calls == []


def test_a_host_that_still_reports_or_answers_is_refused(world):
    cloud = world[0]
    cloud.add("vm1", local=())
    cloud.svc["cmp2"]["state"] = "up"
    with pytest.raises(InvalidInput, match="is up .*a host that still reports is not dead"):
        make(world, fenced=True).run("cmp2")
    cloud.svc["cmp2"]["state"] = "down"
    with pytest.raises(InvalidInput, match="the minion of cmp2 answers: the host is running"):
        make(world, fenced=True, answers=True).run("cmp2")
    assert cloud.calls == []


def test_a_failed_fence_action_moves_nothing_and_forces_nothing_down(world):
    cloud = world[0]
    cloud.add("vm1", local=())
    rec = make(world, fence_result=(False, "exit 1: BMC unreachable"), fence={"cmd": "off {node}"})
    with pytest.raises(InvalidInput, match="fence action for cmp2 failed.*BMC unreachable"):
        rec.run("cmp2")
    assert rec.fenced_calls == [({"cmd": "off {node}"}, "cmp2")]
    assert cloud.calls == []


def test_the_fence_command_runs_on_the_master_with_the_node_quoted(tmp_path):
    out = tmp_path / "fenced"
    ok, summary = recover.run_fence({"cmd": "echo {node} > %s" % out}, "cmp2", 10)
    assert ok and out.read_text().strip() == "cmp2"
    ok, summary = recover.run_fence({"cmd": "echo no BMC >&2; exit 3"}, "cmp2", 10)
    assert not ok and summary == "exit 3: no BMC"
    ok, summary = recover.run_fence({"cmd": "sleep 5"}, "cmp2", 0.2)
    assert not ok and "did not finish" in summary


def test_classification_local_disks_busy_and_unevacuable_states(world):
    cloud = world[0]
    vol = cloud.add("bfv", local=())
    local = cloud.add("local")
    busy = cloud.add("busy", local=(), task="resize_migrating")
    paused = cloud.add("paused", status="PAUSED", local=())
    plan = make(world, fenced=True).plan("cmp2")
    by = {s["id"]: s for s in plan["servers"]}
    assert by[vol]["method"] == "evacuate"
    assert by[local]["method"] == "blocked" and "local_disks=rebuild" in by[local]["plan"]
    assert by[busy]["method"] == "blocked" and "reset_state=True" in by[busy]["plan"]
    assert by[paused]["method"] == "blocked" and "ACTIVE, SHUTOFF and ERROR" in by[paused]["plan"]
    plan = make(world, fenced=True, local_disks="rebuild", reset_state=True).plan("cmp2")
    assert all(s["method"] == "evacuate" for s in plan["servers"]), plan
    assert world[0].calls == []  # a plan changes nothing


def test_a_recovery_fences_forces_down_evacuates_within_the_bound_and_verifies(world):
    cloud, clock, _ = world
    ids = [cloud.add("vm%d" % i, local=(), vols=("vol-%d" % i,)) for i in range(5)]
    report = make(world, fenced=True, concurrency=2).run("cmp2")
    assert report["result"] is True, report
    assert cloud.max_inflight == 2
    assert [c for c in cloud.calls if c[0] == "force_down"] == [("force_down", "cmp2", True)]
    assert cloud.svc["cmp2"]["status"] == "disabled"  # stays out
    assert all(s["phase"] == "evacuated" and s["dest"] == "cmp1" for s in report["servers"])
    assert {s["id"]: s["volumes"] for s in report["servers"]}[ids[3]] == ["vol-3"]
    assert report["fence_to_first_evacuation"] < 1
    # re-enabling waits for a heartbeat after the forced down
    with pytest.raises(InvalidInput, match="has not reported since it was forced down"):
        make(world).enable("cmp2")
    cloud.svc["cmp2"]["updated_at"] = stamp(clock.time() + 1)
    out = make(world).enable("cmp2")
    assert out["changed"] and not cloud.svc["cmp2"]["forced_down"]
    assert cloud.svc["cmp2"]["status"] == "enabled"


def test_servers_nova_leaves_stopped_are_started_again_and_stopped_ones_stay_stopped(world):
    cloud, clock, _ = world
    cloud.lands = "SHUTOFF"  # microversion >= 2.95
    running = cloud.add("running", local=())
    stopped = cloud.add("stopped", status="SHUTOFF", local=())
    report = make(world, fenced=True).run("cmp2")
    by = {s["id"]: s for s in report["servers"]}
    assert report["result"] is True, report
    assert ("start", running) in cloud.calls and ("start", stopped) not in cloud.calls
    assert "started again" in by[running]["comment"]
    assert cloud.servers[stopped]["status"] == "SHUTOFF"
    del clock


def test_an_evacuation_that_never_finishes_fails_with_the_reason(world):
    cloud = world[0]
    sid = cloud.add("stuck", local=())
    cloud.never.add(sid)
    report = make(world, fenced=True, timeout=10).run("cmp2")
    assert report["result"] is False and report["retcode"] == 1
    assert "not evacuated within 10s" in report["servers"][0]["comment"]
    assert "stays disabled and forced down" in report["comment"]


def test_a_resumed_run_adopts_evacuations_in_flight_and_never_asks_twice(world):
    cloud = world[0]
    sid = cloud.add("vm", local=())
    rec = make(world, fenced=True)

    def killed(record):
        rec._start(record, record["items"][0])  # pylint: disable=protected-access
        raise KeyboardInterrupt  # the salt-run dies with the evacuation in flight

    rec._evacuate = killed  # pylint: disable=protected-access
    with pytest.raises(KeyboardInterrupt):
        rec.run("cmp2")
    report = make(world, fenced=True).run("cmp2")
    assert report["result"] is True, report
    assert [c for c in cloud.calls if c[0] == "evacuate"] == [("evacuate", sid)]
    assert len([c for c in cloud.calls if c[0] == "force_down"]) == 1


def test_a_run_killed_between_asking_and_journaling_is_followed_not_asked_again(world):
    """Nova accepted the evacuation, the run died before the journal said so: the server is
    still 'pending' in the journal but rebuilding in Nova.  The resumed run follows it; it
    never resets it and asks a second time (that rebuilt it twice: 'already exists')."""
    cloud = world[0]
    sid = cloud.add("vm", local=())
    rec = make(world, fenced=True)

    def killed(record):
        cloud.evacuate(record["items"][0]["id"])  # asked; nothing journaled
        raise KeyboardInterrupt

    rec._evacuate = killed  # pylint: disable=protected-access
    with pytest.raises(KeyboardInterrupt):
        rec.run("cmp2")
    report = make(world, fenced=True).run("cmp2")
    assert report["result"] is True, report
    assert [c for c in cloud.calls if c[0] in ("evacuate", "reset")] == [("evacuate", sid)]
    assert cloud.servers[sid]["host"] == "cmp1"
