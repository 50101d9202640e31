"""maintenance.py against the in-memory cloud of test_evacuate: the step machine's edges
(the real proof: tests/integration/test_rolling_maintenance.py)."""

import pytest

from tests.unit.fakeclock import Clock, stamp
from tests.unit.test_evacuate import FakeCloud
from vmopslib import evacuate, maintenance
from vmopslib.errors import InvalidInput
from vmopslib.store import JournalStore


class FakeHosts:
    """Each node's minion: a boot id that changes two polls after a reboot."""

    def __init__(self, cloud, clock):
        self.cloud, self.clock = cloud, clock
        self.boot = {h: "boot-%s-0" % h for h in cloud.svc}
        self.pending = {}
        self.calls = []
        self.fail = {}  # node -> summary: its maintenance fails
        self.stuck = set()  # nodes that never reboot

    def answers(self, node):
        return node not in self.pending

    def boot_id(self, node):
        if node in self.pending:
            self.pending[node] -= 1
            if self.pending[node] > 0:
                return None  # rebooting: the minion is silent
            del self.pending[node]
            self.boot[node] = self.boot[node][:-1] + str(int(self.boot[node][-1]) + 1)
            self.cloud.svc[node]["updated_at"] = stamp(self.clock.time() + 1)
        return self.boot[node]

    def reboot(self, node):
        self.calls.append(("reboot", node))
        if node not in self.stuck:
            self.pending[node] = 2

    def apply(self, node, action, pillar):
        self.calls.append(("apply", node, action, pillar))
        if node in self.fail:
            return False, self.fail[node]
        return True, "1 state(s) passed"


@pytest.fixture
def world(tmp_path):
    cloud, clock = FakeCloud(), Clock()
    for host in ("cmp1", "cmp2", "cmp3"):
        for i in range(2):
            cloud.add("%s-vm%d" % (host, i), host=host)
    return cloud, clock, FakeHosts(cloud, clock), tmp_path


def make(world, **opts):
    cloud, clock, hosts, tmp_path = world
    evac = evacuate.Evacuation(
        cloud,
        JournalStore(str(tmp_path / "evacuate"), "evacuation"),
        evacuate.options({}, {"poll_interval": 0, "settle_seconds": 0}),
        clock=clock,
        who="tester@test",
    )
    events = []
    run = maintenance.Maintenance(
        cloud,
        JournalStore(str(tmp_path / "maintenance"), "maintenance"),
        evac,
        hosts,
        maintenance.options({}, dict({"poll_interval": 1}, **opts)),
        events=lambda tag, message, **data: events.append((tag, data)),
        clock=clock,
        who="tester@test",
    )
    run.fired = events
    return run


NODES = ["cmp1", "cmp2", "cmp3"]


@pytest.mark.parametrize(
    "opts, match",
    [
        ({"batch": 0}, "batch must be"),
        ({"batch": "0%"}, "percentage"),
        ({"batch": 3}, "every node out at once"),
        ({"maintenance": {"salt": "x"}}, "maintenance must be one of"),
        ({"check": {"orch": "x"}}, "check runs on the node"),
        ({"reboot": "maybe"}, "reboot"),
        ({"reboot_timeout": "soon"}, "reboot_timeout"),
        ({"reason": " "}, "say why"),
        ({"bogus": 1}, "unknown maintenance option"),
    ],
)
def test_bad_input_is_refused_before_anything_changes(world, opts, match):
    cloud = world[0]
    with pytest.raises(InvalidInput, match=match):
        make(world, **opts).run(NODES)
    assert cloud.calls == []


@pytest.mark.parametrize(
    "nodes", [["cmp1", "cmp1"], ["cmp*"], [], ["cmp9"], ["cmp1\n"], "cmp1;cmp2"]
)
def test_bad_node_lists_are_refused(world, nodes):
    with pytest.raises(InvalidInput):
        make(world).run(nodes)
    assert world[0].calls == []


def test_plan_shows_every_node_and_the_capacity_each_batch_leaves(world):
    plan = make(world, reboot=True, maintenance={"sls": "compute.upgrade"}).plan(NODES)
    assert plan["result"] is True and plan["batches"] == [["cmp1"], ["cmp2"], ["cmp3"]]
    first = plan["nodes"][0]
    assert first["node"] == "cmp1" and first["servers"] == ["cmp1-vm0", "cmp1-vm1"]
    assert "maintain: state compute.upgrade" in first["steps"]
    assert set(first["free_while_out"]) == {"cmp2", "cmp3"}
    # batch 2 carries what batch 1 moved onto cmp2 as well
    assert len(plan["nodes"][1]["servers"]) >= 2
    assert world[0].calls == []


def test_plan_refuses_when_a_batch_does_not_fit(world):
    cloud = world[0]
    cloud.free_ram.update(cmp1=700, cmp2=700, cmp3=500)
    run = make(world, batch=1)
    plan = run.plan(NODES)
    assert plan["result"] is False and "do not fit" in plan["refusals"][0]
    with pytest.raises(InvalidInput, match="do not fit.*nothing was changed"):
        run.run(NODES)
    assert cloud.calls == []


def test_a_full_run_drains_maintains_reboots_and_enables_every_node(world):
    cloud, _, hosts, _ = world
    run = make(world, reboot=True, maintenance={"cmd": "apt-get -y upgrade"})
    report = run.run(NODES)
    assert report["result"] is True, report
    for node in report["nodes"]:
        assert node["done"] == list(maintenance.STEPS)
        assert node["boot_after"] != node["boot_before"]
    assert all(s["status"] == "enabled" for s in cloud.svc.values())
    assert [c[1] for c in hosts.calls if c[0] == "reboot"] == NODES
    # nodes in order: cmp1 disabled, enabled, then cmp2 ...
    order = [c for c in cloud.calls if c[0] in ("disable", "enable")]
    assert order.index(("enable", "cmp1")) < order.index(("disable", "cmp2"))
    tags = [t for t, _ in run.fired]
    assert "maintenance/cmp2/rebooted" in tags and tags[-1] == "maintenance/run/done"


def test_the_run_stops_at_the_first_failure_and_a_rerun_resumes_there(world):
    cloud, _, hosts, _ = world
    hosts.fail["cmp2"] = "package conflict"
    run = make(world, maintenance={"sls": "compute.upgrade"})
    report = run.run(NODES)
    assert report["result"] is False and report["retcode"] == 1
    assert report["stopped_at"]["node"] == "cmp2" and report["stopped_at"]["step"] == "maintain"
    assert "re-run the same command to resume at cmp2" in report["comment"]
    assert cloud.svc["cmp2"]["status"] == "disabled"  # the failing node stays out
    assert cloud.svc["cmp1"]["status"] == "enabled" and cloud.svc["cmp3"]["status"] == "enabled"
    assert ("disable", "cmp3") not in cloud.calls  # no further node was touched
    del hosts.fail["cmp2"]
    calls_before = len(cloud.calls)
    again = make(world, maintenance={"sls": "compute.upgrade"}).run(NODES)
    assert again["result"] is True, again
    assert again["run"] == report["run"]
    applied = [c[1] for c in hosts.calls if c[0] == "apply"]
    assert applied == ["cmp1", "cmp2", "cmp2", "cmp3"]  # cmp1 never maintained twice
    assert ("disable", "cmp1") not in cloud.calls[calls_before:]


def test_a_failure_in_a_batch_puts_its_untouched_nodes_back_in_service(world):
    cloud, _, hosts, _ = world
    for host in ("cmp1", "cmp2", "cmp3"):
        cloud.free_ram[host] = 100000
    cloud.svc["cmp4"] = dict(cloud.svc["cmp3"], host="cmp4")
    hosts.fail["cmp1"] = "broken"
    report = make(world, batch=2, maintenance={"sls": "x"}).run(NODES)
    assert report["stopped_at"]["node"] == "cmp1"
    assert cloud.svc["cmp1"]["status"] == "disabled"
    assert cloud.svc["cmp2"]["status"] == "enabled"
    assert "cmp2 enabled again" in report["comment"]


def test_a_node_someone_else_disabled_is_never_enabled_by_the_run(world):
    cloud = world[0]
    cloud.svc["cmp3"].update(status="disabled", disabled_reason="RMA ticket 42")
    report = make(world, batch=1).run(["cmp1", "cmp3"])
    assert report["result"] is True, report
    assert cloud.svc["cmp3"]["status"] == "disabled"
    assert cloud.svc["cmp3"]["disabled_reason"] == "RMA ticket 42"
    assert ("enable", "cmp3") not in cloud.calls


def test_a_reboot_is_a_new_boot_id_not_silence(world):
    cloud, _, hosts, _ = world
    hosts.stuck.add("cmp1")  # its minion keeps answering with the old boot id
    report = make(world, reboot=True, reboot_timeout=10).run(NODES)
    assert report["stopped_at"]["step"] == "reboot"
    assert "answers with the old one: it did not reboot" in report["comment"]
    assert cloud.svc["cmp1"]["status"] == "disabled"


def test_a_rebooted_node_needs_a_fresh_nova_compute_heartbeat(world):
    cloud, clock, hosts, _ = world
    boot_id = hosts.boot_id

    def no_heartbeat(node):  # boots, but nova-compute never reports again
        out = boot_id(node)
        cloud.svc[node]["updated_at"] = stamp(clock.time() - 3600)
        return out

    hosts.boot_id = no_heartbeat
    report = make(world, reboot=True, service_timeout=5).run(NODES)
    assert report["stopped_at"]["step"] == "reboot"
    assert "no heartbeat since the reboot" in report["comment"]


def test_migrate_back_returns_each_nodes_servers_after_its_maintenance(world):
    cloud = world[0]
    report = make(world, migrate_back=True).run(NODES)
    assert report["result"] is True, report
    for node in report["nodes"]:
        assert node["migrate_back"]["result"] is True, node
    # every server is home again
    assert {s["name"][:4]: s["host"] for s in cloud.servers.values()} == {
        "cmp1": "cmp1",
        "cmp2": "cmp2",
        "cmp3": "cmp3",
    }
    assert all(s["status"] == "enabled" for s in cloud.svc.values())


def test_a_failed_migrate_back_stops_the_run_with_the_node_enabled(world):
    cloud = world[0]
    run = make(world, migrate_back=True)
    real = run.evacuation.enable

    def enable(node, force=False, migrate_back=False):
        out = real(node, force=force, migrate_back=False)
        if migrate_back:
            out["migrate_back"] = {"result": False, "comment": "0 of 2 server(s) moved back"}
        return out

    run.evacuation.enable = enable
    report = run.run(NODES)
    stop = report["stopped_at"]
    assert (stop["node"], stop["step"], stop["batch"]) == ("cmp1", "enable", 1), report
    assert "cmp1 is enabled, but moving its servers back failed: 0 of 2" in stop["comment"]
    assert cloud.svc["cmp1"]["status"] == "enabled"
    assert "cmp1 is enabled (its servers were not all moved back)" in report["comment"]
    assert ("disable", "cmp2") not in cloud.calls


def test_a_node_without_an_answering_minion_is_refused_before_anything_changes(world):
    cloud, _, hosts, _ = world
    hosts.pending["cmp3"] = 99  # its minion is silent
    with pytest.raises(
        InvalidInput, match="the minion of cmp3 does not answer.*nothing was changed$"
    ):
        make(world).run(NODES)
    assert cloud.calls == []


def test_overlapping_runs_are_refused_node_by_node(world):
    from vmopslib.store import Locked

    first = make(world)
    held = first.store.lock("node-cmp2")  # a run over [cmp1, cmp2] is at work
    try:
        with pytest.raises(Locked, match="maintenance of node-cmp2 is already running"):
            make(world).run(["cmp2", "cmp3"])
    finally:
        held.release()
    assert world[0].calls == []


def test_a_cloud_that_fails_the_enable_stops_the_run_and_the_rerun_only_enables(world):
    """Nova answers 503 when cmp1 is put back in service: the run stops there (cmp1 drained,
    maintained, rebooted, still disabled: nothing is lost, capacity is only late); the
    re-run resumes at cmp1's enable, never drains, maintains or reboots it again."""
    from vmopslib.errors import CloudError  # pylint: disable=import-outside-toplevel

    cloud, _, hosts, _ = world
    real_enable = cloud.service_enable
    down = {"cmp1": 1}

    def flaky_enable(host):
        if down.get(host):
            down[host] -= 1
            raise CloudError("cloud local: service_enable failed: HTTP 503", transient=True)
        return real_enable(host)

    cloud.service_enable = flaky_enable
    report = make(world, maintenance={"sls": "compute.upgrade"}, reboot=True).run(NODES)
    assert report["result"] is False
    assert report["stopped_at"]["node"] == "cmp1" and report["stopped_at"]["step"] == "enable"
    assert "HTTP 503" in report["comment"] and cloud.svc["cmp1"]["status"] == "disabled"
    assert not cloud.host_server_states("cmp1")  # drained, and stays drained
    again = make(world, maintenance={"sls": "compute.upgrade"}, reboot=True).run(NODES)
    assert again["result"] is True, again
    cmp1 = [c[0] for c in hosts.calls if c[1] == "cmp1"]
    assert cmp1 == ["apply", "reboot"], cmp1  # once each, across both runs
    assert all(cloud.svc[n]["status"] == "enabled" for n in NODES)
