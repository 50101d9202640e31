"""evacuate-node with real daemons: a salt-master running the pack, VMs whose
minions answer, the local OpenStack's three computes, Nova doing the moves."""

import subprocess
import time

from tests.integration.conftest import orch_states, read_journal, wait_until

NODE = "cmp1"


def _minion_vm(salt_run_cli, cleanup, name):
    cleanup.append(name)
    ret = salt_run_cli.run(
        "vmops.create", name, "availability_zone=nova:%s" % NODE, "provision=False"
    )
    assert ret.returncode == 0, ret
    assert ret.data["host"] == NODE, ret.data
    ret = salt_run_cli.run("vmops.accept_minion", name, "wait=60")
    assert ret.returncode == 0 and ret.data["accepted"], ret
    return name


def _journal(salt_master, node):
    return read_journal(salt_master, "evacuate", node)


def test_orch_evacuates_a_mixed_node_and_minions_answer_from_their_new_host(
    salt_run_cli,
    salt_cli,
    os_conn,
    synced,
    vm_name,
    cleanup,
    plain_server,
    nodes_enabled,
    event_listener,
    salt_master,
):
    del synced
    minions = [_minion_vm(salt_run_cli, cleanup, "%s-m%d" % (vm_name, i)) for i in range(2)]
    others = {}
    for state in ("paused", "shutoff", "suspended", "error"):
        others[state] = plain_server("%s-%s" % (vm_name, state))
    os_conn.compute.pause_server(others["paused"])
    os_conn.compute.stop_server(others["shutoff"])
    os_conn.compute.suspend_server(others["suspended"])
    os_conn.compute.reset_server_state(others["error"], "error")
    want = {"paused": "PAUSED", "shutoff": "SHUTOFF", "suspended": "SUSPENDED", "error": "ERROR"}
    for state, server in others.items():
        wait_until(
            lambda s=server, w=want[state]: os_conn.compute.get_server(s.id).status == w,
            60,
            what="%s to be %s" % (server.name, want[state]),
        )

    # the plan first: test=True changes nothing and names every server's method
    pillar = 'pillar={node: %s, reason: "disk errors", options: {concurrency: 2}}' % NODE
    ret = salt_run_cli.run("state.orch", "orch.evacuate_node", pillar, "test=True")
    assert ret.returncode == 0, ret
    (plan,) = orch_states(ret).values()
    text = plan["comment"]
    assert "%s (SUSPENDED): SUSPENDED: Nova cannot move it" % others["suspended"].name in text
    assert "%s (SHUTOFF): cold migration" % others["shutoff"].name in text
    assert "%s (ACTIVE): live migration" % minions[0] in text
    assert [s.status for s in os_conn.compute.services(binary="nova-compute", host=NODE)] == [
        "enabled"
    ]

    t0 = time.time()
    ret = salt_run_cli.run("state.orch", "orch.evacuate_node", pillar)
    assert ret.returncode != 0  # two servers could not be moved: the orchestration says so
    (state,) = orch_states(ret).values()
    report = state["changes"]["return"]
    by = {s["name"]: s for s in report["servers"]}
    for name in minions:
        item = by[name]
        assert item["phase"] == "moved" and item["dest"] != NODE, item
        assert item["minion"] == "answers from %s" % item["dest"], item
        assert salt_cli.run("grains.get", "compute_host", minion_tgt=name).data == item["dest"]
        assert salt_cli.run("test.ping", minion_tgt=name).data is True
    for state_name in ("paused", "shutoff"):
        server = os_conn.compute.get_server(others[state_name].id)
        assert by[server.name]["phase"] == "moved"
        assert server.compute_host == by[server.name]["dest"] != NODE
        assert server.status == want[state_name]
    for state_name in ("suspended", "error"):
        server = os_conn.compute.get_server(others[state_name].id)
        assert by[server.name]["phase"] == "blocked" and server.compute_host == NODE
    left = {s.name for s in os_conn.compute.servers(all_projects=True, compute_host=NODE)}
    assert {others["suspended"].name, others["error"].name} <= left
    assert not left & set(minions) and not left & {others["paused"].name, others["shutoff"].name}
    (svc,) = os_conn.compute.services(binary="nova-compute", host=NODE)
    assert svc.status == "disabled" and svc.disabled_reason.endswith(": disk errors")
    assert "run=%s" % report["run"] in svc.disabled_reason
    done = event_listener.wait_for_events(
        [(salt_master.id, "vmops/evacuate/%s/done" % NODE)], after_time=t0, timeout=10
    )
    assert done.found_all_events

    # the node's maintenance ends: the pack re-enables what it disabled
    ret = salt_run_cli.run("vmops.enable_node", NODE)
    assert ret.returncode == 0 and ret.data["changed"], ret
    (svc,) = os_conn.compute.services(binary="nova-compute", host=NODE)
    assert svc.status == "enabled"


def test_killed_run_resumes_and_adopts_its_migration_and_a_second_run_is_refused(
    salt_run_cli, os_conn, synced, vm_name, plain_server, nodes_enabled, salt_master
):
    del synced
    held = plain_server(vm_name + "-a", metadata={"fakevm:migrate": "hang"})
    other = plain_server(vm_name + "-b")
    cmd = salt_run_cli.cmdline(
        "vmops.evacuate_node",
        NODE,
        "reason=kill test",
        "concurrency=1",
        "stall_seconds=0",
        "timeout=600",
    )
    first = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # noqa: S603
        start_new_session=True,
        env=dict(salt_run_cli.environ),
    )
    try:

        def in_flight():
            journal = _journal(salt_master, NODE)
            items = {i["id"]: i for i in (journal or {}).get("items", [])}
            return items.get(held.id, {}).get("phase") == "moving"

        wait_until(in_flight, 120, interval=0.2, what="the first run to start the held migration")
        second = salt_run_cli.run("vmops.evacuate_node", NODE, "reason=second")
        assert second.returncode != 0
        assert "already running (pid %d" % first.pid in second.data["comment"], second.data
    finally:
        first.kill()
        first.wait()
    assert os_conn.compute.get_server(held.id).task_state == "migrating"  # left to Nova

    ret = salt_run_cli.run(
        "vmops.evacuate_node",
        NODE,
        "reason=kill test",
        "stall_seconds=3",
        "on_timeout=force_complete",
    )
    assert ret.returncode == 0, ret
    report = ret.data
    by = {s["id"]: s for s in report["servers"]}
    assert by[held.id]["phase"] == "moved" and by[held.id]["attempts"] == 1, by[held.id]
    assert "force-completed" in by[held.id]["comment"]
    assert by[other.id]["phase"] == "moved"
    migs = list(os_conn.compute.migrations(server_id=held.id))
    assert len([m for m in migs if m.server_id == held.id]) == 1  # never started twice
    assert _journal(salt_master, NODE)["resumed"] == 1
    assert all(os_conn.compute.get_server(s.id).compute_host != NODE for s in (held, other))


def test_glob_node_and_ec2_are_refused_clearly(salt_run_cli, synced):
    del synced
    ret = salt_run_cli.run("vmops.evacuate_node", "cmp*", "reason=x")
    assert ret.returncode != 0 and "not a plain host name" in ret.data["comment"]
    ret = salt_run_cli.run("vmops.evacuate_node", "cmp1", "reason=x", "cloud=aws")
    assert ret.returncode != 0 and "no compute hosts to evacuate" in ret.data["comment"]


def test_the_module_plans_from_a_minion_holding_credentials(salt_cli, vm_minion):
    """``salt-call vmops.evacuate_node`` on a minion with credentials: the same core (the plan
    here; a VM draining its own host is not a test to run), and the same refusals."""
    ret = salt_cli.run("vmops.evacuate_node", NODE, "test=True", minion_tgt=vm_minion)
    assert ret.returncode == 0, ret
    plan = ret.data
    assert plan["test"] is True and plan["node"] == NODE and plan["service"]["status"] == "enabled"
    assert set(plan["targets"]) <= {"cmp2", "cmp3"} and plan["capacity"]["fits"] is True
    ret = salt_cli.run("vmops.evacuate_node", "cmp*", "reason=x", minion_tgt=vm_minion)
    assert "not a plain host name" in str(ret.data) + ret.stdout, ret
