"""The execution module, runner and states with real daemons and the local OpenStack."""

import json
import time

import pytest

from tests.conftest import VMOPS_HOME
from tests.integration.conftest import orch_states

pytestmark = pytest.mark.usefixtures("synced")


def test_module_on_a_minion_that_holds_credentials(salt_cli, vm_minion, os_conn):
    ret = salt_cli.run("vmops.server_show", vm_minion, minion_tgt=vm_minion)
    assert ret.returncode == 0, ret
    desc = ret.data
    assert desc["name"] == vm_minion and desc["status"] == "ACTIVE"
    assert "password" not in json.dumps(desc) and "secret" not in json.dumps(desc)
    ret = salt_cli.run("vmops.host_servers", desc["host"], minion_tgt=vm_minion)
    assert desc["id"] in [s["id"] for s in ret.data]
    ret = salt_cli.run("vmops.service_show", "cmp9", minion_tgt=vm_minion)
    assert ret.returncode != 0
    assert "no nova-compute service on host 'cmp9'" in str(ret.data)
    # salt-call on the VM itself, as an operator logged into it would
    server_dir = VMOPS_HOME / "vms" / desc["id"]
    salt_call = VMOPS_HOME / "venv" / "bin" / "salt-call"
    cmd = "%s -c %s --out=json --log-level=quiet vmops.service_list" % (
        salt_call,
        server_dir / "etc" / "salt",
    )
    ret = salt_cli.run("cmd.run", cmd, minion_tgt=vm_minion)
    assert ret.returncode == 0, ret
    services = json.loads(ret.data)["local"]
    assert {s["host"] for s in services} >= {"cmp1", "cmp2", "cmp3"}


def test_flip_runner_moves_the_ip_and_fires_events(
    salt_run_cli, vm_minion, vm_name, os_conn, event_listener, salt_master, cleanup
):
    other = vm_name + "-b"
    cleanup.append(other)
    assert salt_run_cli.run("vmops.create", other).returncode == 0
    public = os_conn.network.find_network("public")
    fip = os_conn.network.create_ip(floating_network_id=public.id)
    try:
        address = fip.floating_ip_address
        t0 = time.time()
        ret = salt_run_cli.run("vmops.flip_floating_ip", address, vm_minion)
        assert ret.returncode == 0, ret
        assert ret.data["changed"] is True and ret.data["server"] == vm_minion
        ret = salt_run_cli.run("vmops.flip_floating_ip", address, other)
        assert ret.data["changed"] is True and ret.data["old"]["server_id"]
        events = event_listener.wait_for_events(
            [(salt_master.id, "vmops/ip/%s/flipped" % address)], after_time=t0, timeout=30
        )
        assert events.found_all_events
        ret = salt_run_cli.run("vmops.flip_floating_ip", address, other)
        assert ret.data["changed"] is False
        assert salt_run_cli.run("vmops.show", other).data["floating_ips"] == [address]
        bad = salt_run_cli.run("vmops.flip_floating_ip", "203.0.113.254", other)
        assert bad.returncode != 0 and "is not allocated" in bad.data["comment"]
    finally:
        os_conn.network.delete_ip(fip)


def test_states_test_mode_then_apply(salt_run_cli, vm_name, os_conn, cleanup):
    cleanup.append(vm_name)
    public = os_conn.network.find_network("public")
    fip = os_conn.network.create_ip(floating_network_id=public.id)
    pillar = "pillar={vm: %s, address: %s, host: cmp3}" % (vm_name, fip.floating_ip_address)
    try:
        ret = salt_run_cli.run("state.orch", "vmops_test.states", pillar, "test=True")
        assert ret.returncode == 0, ret
        states = orch_states(ret)
        assert all(s["result"] is None for s in states.values()), states
        comments = " | ".join(s["comment"] for s in states.values())
        assert "would be booted" in comments and "would be disabled" in comments
        # test=True changed nothing
        assert not list(os_conn.compute.servers(name="^%s$" % vm_name))
        assert (
            next(os_conn.compute.services(host="cmp3", binary="nova-compute")).status == "enabled"
        )

        ret = salt_run_cli.run("state.orch", "vmops_test.states", pillar)
        assert ret.returncode == 0, ret
        states = orch_states(ret)
        assert all(s["result"] is True and s["changes"] for s in states.values()), states
        assert os_conn.network.get_ip(fip.id).port_id
        svc = next(os_conn.compute.services(host="cmp3", binary="nova-compute"))
        assert svc.status == "disabled" and svc.disabled_reason == "integration test maintenance"

        ret = salt_run_cli.run("state.orch", "vmops_test.states", pillar)
        assert ret.returncode == 0, ret
        assert not any(s["changes"] for s in orch_states(ret).values()), orch_states(ret)
    finally:
        ret = salt_run_cli.run(
            "state.orch", "vmops_test.states_cleanup", "pillar={vm: %s, host: cmp3}" % vm_name
        )
        os_conn.network.delete_ip(fip)
    assert ret.returncode == 0, ret
    assert not list(os_conn.compute.servers(name="^%s$" % vm_name))
