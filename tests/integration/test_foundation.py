"""Foundation: a VM booted with the pack's user-data runs a minion that reaches the real master.

(a) OpenStack: boot, key arrives pending, the pack accepts it (the cloud vouches),
    ``test.version`` answers.  (b) The same on EC2 through moto.  (c) A live
    migration keeps the minion, whose ``compute_host`` grain follows the server.
"""

import time

import pytest

from tests.conftest import record
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.usefixtures("synced")


def _boot_accept_answer(salt_run_cli, salt_cli, keys, name, cloud, label, events, master):
    t0 = time.monotonic()
    ret = salt_run_cli.run("vmops.create", name, "cloud=%s" % cloud)
    assert ret.returncode == 0, ret
    assert ret.data["status"] == "ACTIVE", ret.data
    assert ret.data["name"] == name
    t_active = time.monotonic()

    # the minion's key arrives pending: nothing (not the harness) accepted it
    wait_until(lambda: keys.state(name) == "minions_pre", 60, what="%s pending" % name)
    t_pending = time.monotonic()
    assert keys.state(name) == "minions_pre"

    t_accept = time.time()
    ret = salt_run_cli.run("vmops.accept_minion", name, "cloud=%s" % cloud)
    assert ret.returncode == 0, ret
    assert ret.data["accepted"] is True, ret.data
    assert keys.state(name) == "minions"
    # the minion re-authenticates and announces itself
    started = events.wait_for_events(
        [(master.id, "salt/minion/%s/start" % name)], after_time=t_accept, timeout=60
    )
    assert started.found_all_events, started

    def answers():
        r = salt_cli.run("--timeout=10", "test.version", minion_tgt=name)
        return r.returncode == 0 and r.data

    version = wait_until(answers, 60, interval=1, what="%s to answer test.version" % name)
    t_answer = time.monotonic()
    assert version.startswith("3008"), version
    record("%s: boot to ACTIVE" % label, t_active - t0)
    record("%s: ACTIVE to key pending" % label, t_pending - t_active)
    record("%s: boot to minion answering (incl. accept)" % label, t_answer - t0)
    return ret.data


def test_openstack_vm_minion_reaches_master(
    salt_run_cli, salt_cli, keys, vm_name, cleanup, event_listener, salt_master
):
    cleanup.append(vm_name)
    accepted = _boot_accept_answer(
        salt_run_cli, salt_cli, keys, vm_name, "local", "openstack", event_listener, salt_master
    )
    # the key accepted is the one of this server (accept_minion compared the fingerprint
    # on its console), and the minion runs where the cloud says the server runs
    shown = salt_run_cli.run("vmops.show", vm_name)
    assert shown.returncode == 0
    ret = salt_cli.run("grains.item", "level", "compute_host", minion_tgt=vm_name)
    assert ret.data["compute_host"] == shown.data["host"]
    assert accepted["server_id"] == shown.data["id"]


def test_ec2_vm_minion_reaches_master(
    salt_run_cli, salt_cli, keys, vm_name, cleanup, moto_cloud, event_listener, salt_master
):
    cleanup.append(vm_name)
    accepted = _boot_accept_answer(
        salt_run_cli, salt_cli, keys, vm_name, "aws", "ec2 (moto)", event_listener, salt_master
    )
    assert accepted["server_id"].startswith("i-")
    # terminating the instance takes its minion away
    ret = salt_run_cli.run("vmops.delete", vm_name, "cloud=aws")
    assert ret.returncode == 0, ret

    def gone():
        r = salt_cli.run("--timeout=5", "test.ping", minion_tgt=vm_name)
        return r.data is not True

    wait_until(gone, 30, what="the terminated instance's minion to stop answering")
    assert not moto_cloud.errors, moto_cloud.errors


def test_live_migration_keeps_minion(
    salt_run_cli, salt_cli, keys, vm_name, cleanup, os_conn, event_listener, salt_master
):
    cleanup.append(vm_name)
    _boot_accept_answer(
        salt_run_cli,
        salt_cli,
        keys,
        vm_name,
        "local",
        "openstack (migration)",
        event_listener,
        salt_master,
    )
    server = next(os_conn.compute.servers(name="^%s$" % vm_name))
    server = os_conn.compute.get_server(server.id)
    source = server.compute_host
    target = {"cmp1": "cmp2", "cmp2": "cmp3", "cmp3": "cmp1"}[source]
    t0 = time.monotonic()
    os_conn.compute.live_migrate_server(server, host=target, block_migration="auto")

    def moved():
        s = os_conn.compute.get_server(server.id)
        return s.compute_host == target and s.status == "ACTIVE" and not s.task_state

    wait_until(moved, 120, what="live migration to %s" % target)
    record("live migration (host switched)", time.monotonic() - t0)

    ret = salt_cli.run("saltutil.refresh_grains", minion_tgt=vm_name)
    assert ret.returncode == 0, ret
    ret = salt_cli.run("grains.get", "compute_host", minion_tgt=vm_name)
    assert ret.returncode == 0, ret
    assert ret.data == target
    ret = salt_cli.run("test.version", minion_tgt=vm_name)
    assert ret.returncode == 0 and ret.data.startswith("3008")
