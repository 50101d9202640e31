"""``salt-run state.orch orch.create_vm``: boot, cloud-verified accept, sanity grain, highstate."""

import pytest

from tests.integration.conftest import orch_failures, orch_states

pytestmark = pytest.mark.usefixtures("synced")


def test_create_vm_orchestration(salt_run_cli, salt_cli, keys, vm_name, cleanup):
    cleanup.append(vm_name)
    ret = salt_run_cli.run(
        "state.orch", "orch.create_vm", "pillar={vm: %s, overrides: {level: staging}}" % vm_name
    )
    assert ret.returncode == 0, orch_failures(ret)
    states = orch_states(ret)
    assert len(states) == 5, states
    assert all(s["result"] is True for s in states.values()), states
    assert keys.state(vm_name) == "minions"
    cachedir = salt_cli.run("config.get", "cachedir", minion_tgt=vm_name).data
    marker = salt_cli.run("file.read", "%s/highstate/marker.txt" % cachedir, minion_tgt=vm_name)
    assert marker.data.strip() == "highstate of %s at level staging" % vm_name


def test_create_vm_wrong_level_stops_before_highstate(salt_run_cli, salt_cli, vm_name, cleanup):
    cleanup.append(vm_name)
    # the VM's grain says staging, the operator expects production: no highstate
    ret = salt_run_cli.run(
        "state.orch",
        "orch.create_vm",
        "pillar={vm: %s, overrides: {level: staging}, expect_level: production}" % vm_name,
    )
    assert ret.returncode != 0, ret
    states = orch_states(ret)
    failed = [s for s in states.values() if s["result"] is False]
    assert any(
        "level of %s is 'staging', expected 'production'" % vm_name in str(s.get("changes"))
        for s in failed
    ), states
    highstate = [s for k, s in states.items() if "highstate" in k]
    assert highstate and highstate[0]["result"] is False, highstate
    assert "requisite failed" in highstate[0]["comment"].lower(), highstate
    cachedir = salt_cli.run("config.get", "cachedir", minion_tgt=vm_name).data
    marker = salt_cli.run(
        "file.file_exists", "%s/highstate/marker.txt" % cachedir, minion_tgt=vm_name
    )
    assert marker.data is False


@pytest.mark.parametrize("bad", ["app*", "*", "[ab]pp2", "L@app1,app2", "app2 app3"])
def test_create_vm_refuses_non_minion_ids(salt_run_cli, os_conn, bad):
    ret = salt_run_cli.run("vmops.create", bad)
    assert ret.returncode != 0
    assert ret.data["result"] is False
    assert "not a plain minion id" in ret.data["comment"]
    assert bad not in {s.name for s in os_conn.compute.servers()}
