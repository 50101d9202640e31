"""Rolling maintenance with real daemons: the master runs the pack, each compute host has
its own minion (id = host name), Nova moves the servers, the run stops at a failure and a
re-run finishes it."""

import os

from tests.integration.conftest import orch_states, read_journal

NODES = ["cmp1", "cmp2", "cmp3"]
PILLAR = (
    "pillar={nodes: [cmp1, cmp2, cmp3], batch: 1, reason: 'it rolling', "
    "maintenance: {sls: vmops_test.maintenance}, check: {cmd: 'true'}, reboot: true}"
)


def _services(os_conn):
    return {s.host: s for s in os_conn.compute.services(binary="nova-compute")}


def test_rolling_maintenance_stops_at_the_failing_node_and_a_rerun_finishes(
    salt_run_cli,
    salt_cli,
    salt_master,
    os_conn,
    plain_server,
    nodes_enabled,
    compute_minions,
    vm_name,
):
    servers = {host: plain_server("%s-%s" % (vm_name, host), host) for host in NODES}
    plan = salt_run_cli.run("vmops.rolling_maintenance", "nodes=[cmp1, cmp2, cmp3]", "test=True")
    assert plan.returncode == 0 and plan.data["result"] is True, plan
    assert [n["node"] for n in plan.data["nodes"]] == NODES
    assert servers["cmp1"].name in plan.data["nodes"][0]["servers"]
    assert _services(os_conn)["cmp1"].status == "enabled"  # the plan changed nothing

    marker = os.path.join(compute_minions["cmp2"].config["cachedir"], "vmops-test-fail-maintenance")
    with open(marker, "w", encoding="utf-8") as fh:
        fh.write("fail\n")
    try:
        ret = salt_run_cli.run("state.orch", "orch.rolling_maintenance", PILLAR)
    finally:
        os.unlink(marker)
    assert ret.returncode != 0, ret
    report = next(iter(orch_states(ret).values()))["changes"]["return"]
    assert report["stopped_at"]["node"] == "cmp2", report
    assert report["stopped_at"]["step"] == "maintain", report
    assert "the upgrade broke on cmp2" in report["comment"], report["comment"]
    svcs = _services(os_conn)
    assert svcs["cmp2"].status == "disabled" and "vmops-evacuate" in svcs["cmp2"].disabled_reason
    assert svcs["cmp1"].status == "enabled" and svcs["cmp3"].status == "enabled"
    assert not [s for s in os_conn.compute.servers(all_projects=True, host="cmp2")]
    first = read_journal(salt_master, "maintenance", "cmp1_cmp2_cmp3")
    assert first["nodes"]["cmp1"]["done"] == ["evacuate", "maintain", "reboot", "gate", "enable"]
    assert first["nodes"]["cmp3"]["done"] == []

    again = salt_run_cli.run("state.orch", "orch.rolling_maintenance", PILLAR)
    assert again.returncode == 0, again
    final = read_journal(salt_master, "maintenance", "cmp1_cmp2_cmp3")
    assert final["state"] == "done" and final["run"] == first["run"]
    assert final["nodes"]["cmp1"]["durations"] == first["nodes"]["cmp1"]["durations"]  # not redone
    assert all(s.status == "enabled" for s in _services(os_conn).values())
    for node in NODES:  # each node really went down and came back: a new boot id
        done = final["nodes"][node]
        assert done["boot_after"] and done["boot_after"] != done["boot_before"], done
    assert salt_cli.run("test.ping", minion_tgt="cmp2").data is True
    for server in servers.values():
        assert os_conn.compute.get_server(server.id).status == "ACTIVE"
