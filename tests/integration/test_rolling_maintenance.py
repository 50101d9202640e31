"""Rolling maintenance with real daemons: the master runs the pack, each compute host has
its own minion (id = host name), Nova moves the servers, a reboot is a new boot id.  One run
over the three computes: it stops at a failing node with the rest in service, the re-run is
killed while a node reboots, the next one finishes without repeating anything."""

import os

from tests.integration.conftest import background, orch_states, read_journal, wait_until

NODES = ["cmp1", "cmp2", "cmp3"]
KEY = "cmp1_cmp2_cmp3"
PILLAR = (
    "pillar={nodes: [cmp1, cmp2, cmp3], batch: 1, reason: 'it rolling', "
    "maintenance: {sls: vmops_test.maintenance}, check: {cmd: 'true'}, reboot: true}"
)


def _services(os_conn):
    return {s.host: s for s in os_conn.compute.services(binary="nova-compute")}


def _reboots(path):
    try:
        with open(path, encoding="utf-8") as fh:
            return sum(1 for line in fh if " rebooting " in line)
    except FileNotFoundError:
        return 0


def test_rolling_maintenance_stops_at_a_failure_survives_a_kill_and_finishes(
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
    assert set(plan.data["nodes"][0]["free_while_out"]) == {"cmp2", "cmp3"}
    assert _services(os_conn)["cmp1"].status == "enabled"  # the plan changed nothing
    logs = {
        h: os.path.join(os.path.dirname(f.config["conf_file"]), "reboot.log")
        for h, f in compute_minions.items()
    }
    before = {h: _reboots(p) for h, p in logs.items()}

    # 1. cmp2's maintenance fails: the run stops there, cmp2 out, cmp1 and cmp3 in service
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
    assert not list(os_conn.compute.servers(all_projects=True, compute_host="cmp2"))
    first = read_journal(salt_master, "maintenance", KEY)
    assert first["nodes"]["cmp1"]["done"] == ["evacuate", "maintain", "reboot", "gate", "enable"]
    assert first["nodes"]["cmp3"]["done"] == []

    # 2. the re-run is killed while cmp2 reboots
    second = background(salt_run_cli, "state.orch", "orch.rolling_maintenance", PILLAR)

    def rebooting_cmp2():
        journal = read_journal(salt_master, "maintenance", KEY) or {}
        return bool(((journal.get("nodes") or {}).get("cmp2") or {}).get("reboot_requested"))

    try:
        wait_until(rebooting_cmp2, 300, interval=0.2, what="cmp2 to be rebooting")
    finally:
        second.kill()  # the salt-run dies while cmp2 reboots
        second.wait()
    killed = read_journal(salt_master, "maintenance", KEY)
    assert "reboot" not in killed["nodes"]["cmp2"]["done"]

    # 3. the next run resumes at cmp2's reboot and finishes
    again = salt_run_cli.run("state.orch", "orch.rolling_maintenance", PILLAR)
    assert again.returncode == 0, again
    final = read_journal(salt_master, "maintenance", KEY)
    assert final["state"] == "done" and final["run"] == first["run"], final
    assert final["resumed"] == 2
    assert final["nodes"]["cmp1"]["durations"] == first["nodes"]["cmp1"]["durations"]  # not redone
    assert all(s.status == "enabled" for s in _services(os_conn).values())
    for node in NODES:  # each node really went down and came back: a new boot id
        done = final["nodes"][node]
        assert done["boot_after"] and done["boot_after"] != done["boot_before"], done
    # one reboot per node: the resumed run waited for cmp2's, it did not ask again
    assert {h: _reboots(p) - before[h] for h, p in logs.items()} == {h: 1 for h in NODES}
    assert salt_cli.run("test.ping", minion_tgt="cmp2").data is True
    for server in servers.values():
        assert os_conn.compute.get_server(server.id).status == "ACTIVE"
