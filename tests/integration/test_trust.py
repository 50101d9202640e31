"""The identity hand-over, tried as an attacker would (issue: trust, hardened).

Real master, local OpenStack, minions started by the test hypervisor from the
servers' user-data.  Each test is one row of the attack table in the README.
"""

import base64
import os
import pathlib
import time
import uuid

import pytest

from tests.conftest import VMOPS_HOME, record
from tests.harness import fakevm
from tests.integration.conftest import orch_failures, wait_until
from tests.integration.test_replace_vm import _replace

pytestmark = pytest.mark.usefixtures("synced")


def _mark(server_id, what):
    path = os.path.join(str(VMOPS_HOME / "vms"), server_id, "cache", what, "marker.txt")
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read().strip()
    except FileNotFoundError:
        return None


# a deploy command with a side effect on the guest that runs it (the test hypervisor gives
# each guest's minion VMOPS_GUEST_DIR, its own disk); an old minion that still held the
# id's session would run it too: nothing stops a command that needs no file from the master
DEPLOY_CMD = "sh -c 'echo deployed > $VMOPS_GUEST_DIR/deploy-cmd.txt'"


def _ran(guest, what="deploy-cmd.txt"):
    return os.path.exists(os.path.join(str(VMOPS_HOME / "vms"), guest, what))


def _user_data(os_conn, server_id):
    """What a cloud admin (or the metadata service) serves of the server's user-data."""
    server = os_conn.compute.get_server(server_id)
    assert server.user_data, "the admin API did not return the user-data"
    return base64.b64decode(server.user_data).decode()


def test_user_data_gets_an_attacker_nothing_and_the_old_vm_runs_no_job_after_the_handover(
    salt_run_cli, salt_cli, os_conn, old_vm, keys
):
    """Stolen user-data: no key in it; a minion started from it is refused.  The old VM,
    kept running (keep_old: rename) and retrying its authentication all along, runs
    neither the highstate nor the deploy meant for the new one."""
    name = old_vm["name"]
    ret, _ = _replace(salt_run_cli, name, "keep_old: rename", 'deploy: {cmd: "%s"}' % DEPLOY_CMD)
    assert ret.returncode == 0, orch_failures(ret)
    new_id = salt_run_cli.run("vmops.show", name).data["id"]
    assert new_id != old_vm["id"]
    # the side effects are the new VM's only
    assert _ran(new_id) and not _ran(old_vm["id"])
    assert _mark(new_id, "highstate") == "highstate of %s at level staging" % name
    assert _mark(old_vm["id"], "highstate") is None
    assert fakevm.minion_pid(old_vm["id"]), "the old VM's minion should still run (renamed)"

    # the user-data, as the admin API serves it: no key material at all
    text = _user_data(os_conn, new_id)
    assert "PRIVATE KEY" not in text and "BEGIN" not in text and "public_key" not in text

    # an attacker starts a minion from the stolen user-data elsewhere: it makes its own key,
    # the master refuses it, and a job to the id runs on the new VM only
    thief = "thief-%s" % uuid.uuid4().hex[:8]
    try:
        fakevm.boot(thief, text, name=name)
        wait_until(
            lambda: name in keys.listing().get("minions_denied", []),
            60,
            what="the thief's key to be denied",
        )
        ret = salt_cli.run("cmd.run", DEPLOY_CMD.replace("deploy-cmd", "after"), minion_tgt=name)
        assert ret.returncode == 0, ret
        assert _ran(new_id, "after.txt") and not _ran(thief, "after.txt")
        assert not _ran(old_vm["id"], "after.txt")
        assert keys.state(name) == "minions"
    finally:
        fakevm.destroy(thief)
    # the accepted key is the one the new server printed on its console
    accepted = keys.cli.run("-p", name).data["minions"][name]
    console = os_conn.compute.get_server_console_output(new_id)["output"]
    assert base64.b64encode(accepted.encode()).decode() in console


def test_a_rebuild_the_cloud_refuses_keeps_the_minion_and_its_key(
    salt_run_cli, salt_cli, salt_key_cli, vm_minion
):
    old_pub = salt_key_cli.run("-p", vm_minion).data["minions"][vm_minion]
    ret = salt_run_cli.run("vmops.rebuild_minion", vm_minion, "image=no-such-image")
    assert ret.returncode != 0 and "no-such-image" in ret.data["comment"], ret
    assert "the key of %s was not touched" % vm_minion in ret.data["comment"], ret
    assert salt_key_cli.run("-p", vm_minion).data["minions"][vm_minion] == old_pub
    assert salt_cli.run("--timeout=10", "test.ping", minion_tgt=vm_minion).data is True


def test_oversized_user_data_is_refused_without_echoing_it(
    salt_run_cli, vm_name, cleanup, os_conn, salt_master
):
    cleanup.append(vm_name)
    blob = "x" * 70000  # Nova takes at most 65535 bytes of (base64) user-data
    t0 = time.time()
    ret = salt_run_cli.run(
        "vmops.create",
        vm_name,
        "cloud_config={write_files: [{path: /etc/blob, content: %s}]}" % blob,
    )
    assert ret.returncode != 0, str(ret)[:500]
    comment = ret.data["comment"] if isinstance(ret.data, dict) else str(ret.data)
    assert "xxxxxxxxxx" not in comment and len(comment) < 2000, comment[:300]
    assert "takes at most 65535 base64 encoded" in comment and "nothing was changed" in comment
    assert not list(os_conn.compute.servers(name="^%s$" % vm_name))
    assert time.time() - t0 < 120
    # nothing of the kind anywhere: not in the journals, not in the master's debug log
    # (keystoneauth and botocore log request bodies at debug: user-data holds no key now)
    cachedir = pathlib.Path(salt_master.config["cachedir"]) / "vmops"
    records = [p for p in cachedir.rglob("*") if p.is_file()]
    for stored in records:
        assert b"PRIVATE KEY" not in stored.read_bytes(), stored
    log = pathlib.Path(salt_master.config["log_file"])
    if not log.is_absolute():
        log = pathlib.Path(salt_master.config["root_dir"]) / log
    assert "PRIVATE KEY" not in log.read_text(errors="replace")


def test_handovers_hold_twenty_times_in_a_row_with_the_old_minion_hammering(
    salt_run_cli, salt_cli, old_vm, keys
):
    """Each replacement's old minion keeps authenticating through the handover (it retries
    every second or two once refused): the key record is overwritten in place, never left
    empty, so no retry can plant a pending key; every run ends with the new VM's key."""
    name = old_vm["name"]
    runs = int(os.environ.get("VMOPS_HANDOVER_RUNS", "20"))
    took = []
    for run in range(runs):
        t0 = time.monotonic()
        ret, _ = _replace(salt_run_cli, name)
        assert ret.returncode == 0, (run, orch_failures(ret))
        took.append(time.monotonic() - t0)
        new_id = salt_run_cli.run("vmops.show", name).data["id"]
        accepted = keys.cli.run("-p", name).data["minions"][name]
        assert base64.b64encode(accepted.encode()).decode() in fakevm.console(new_id), run
        assert salt_cli.run("--timeout=10", "test.ping", minion_tgt=name).data is True, run
    record("replace_vm, %d in a row: slowest" % runs, max(took))
    record("replace_vm, %d in a row: mean" % runs, sum(took) / len(took))


def test_on_ec2_the_user_data_holds_no_key_and_the_console_key_is_the_one_accepted(
    salt_run_cli, salt_cli, moto_cloud, keys, vm_name, cleanup
):
    """EC2 principals with DescribeInstanceAttribute (AWS's read-only policy has it) read
    user-data: there is no key in it.  The instance's console key is accepted; a rebuild,
    which EC2 cannot do, is refused without touching the key."""
    cleanup.append(vm_name)
    ret = salt_run_cli.run("vmops.create", vm_name, "cloud=aws")
    assert ret.returncode == 0, ret
    instance_id = ret.data["id"]
    ec2 = moto_cloud.client()
    attr = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
    text = base64.b64decode(attr["UserData"]["Value"]).decode()
    assert "salt_minion" in text and "PRIVATE KEY" not in text and "BEGIN" not in text
    ret = salt_run_cli.run("vmops.accept_minion", vm_name, "cloud=aws", "wait=90")
    assert ret.returncode == 0 and ret.data["accepted"], ret
    assert "registration by vmops.create" in ret.data["comment"], ret.data
    accepted = keys.cli.run("-p", vm_name).data["minions"][vm_name]
    assert base64.b64encode(accepted.encode()).decode() in fakevm.console(instance_id)
    wait_until(
        lambda: salt_cli.run("--timeout=5", "test.ping", minion_tgt=vm_name).data is True,
        60,
        interval=2,
        what="the EC2 minion to answer",
    )
    ret = salt_run_cli.run("vmops.rebuild_minion", vm_name, "cloud=aws")
    assert ret.returncode != 0, ret
    assert keys.cli.run("-p", vm_name).data["minions"][vm_name] == accepted
