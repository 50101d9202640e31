"""``salt-run state.orch orch.rebuild_minion``: same server, same IPs, a new minion key."""

import pytest

from vmopslib import identity

pytestmark = pytest.mark.usefixtures("synced")


def test_rebuild_minion_answers_with_a_new_key(
    salt_run_cli, salt_cli, salt_key_cli, vm_minion, os_conn
):
    before = salt_run_cli.run("vmops.show", vm_minion).data
    old_pub = salt_key_cli.run("-p", vm_minion).data["minions"][vm_minion]
    ret = salt_run_cli.run("state.orch", "orch.rebuild_minion", "pillar={vm: %s}" % vm_minion)
    assert ret.returncode == 0, ret
    states = next(iter(ret.data["data"].values()))
    assert all(s["result"] is True for s in states.values()), states
    after = salt_run_cli.run("vmops.show", vm_minion).data
    assert after["id"] == before["id"] and after["fixed_ips"] == before["fixed_ips"]
    new_pub = salt_key_cli.run("-p", vm_minion).data["minions"][vm_minion]
    assert new_pub != old_pub
    # the key the master holds is the one the rebuilt server printed on its console
    # (in the minion's `key.finger` form; Salt 3008's `salt-key -f` hashes the whole PEM)
    console = os_conn.compute.get_server_console_output(before["id"])["output"]
    assert identity.console_fingerprints(console) == [identity.fingerprint(new_pub)]
    assert salt_cli.run("test.ping", minion_tgt=vm_minion).data is True
    cachedir = salt_cli.run("config.get", "cachedir", minion_tgt=vm_minion).data
    assert (
        salt_cli.run(
            "file.file_exists", "%s/highstate/marker.txt" % cachedir, minion_tgt=vm_minion
        ).data
        is True
    )


def test_rebuild_minion_refuses_bad_input(salt_run_cli):
    ret = salt_run_cli.run("vmops.rebuild_minion", "app*")
    assert ret.returncode != 0 and "not a plain minion id" in ret.data["comment"]
    ret = salt_run_cli.run("vmops.rebuild_minion", "no-such-vm")
    assert ret.returncode != 0 and "no server named 'no-such-vm'" in ret.data["comment"]
