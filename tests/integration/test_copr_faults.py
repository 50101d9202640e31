"""The Copr flow under faults: the outage window never loses a volume, an IP or a service.

Local OpenStack with Cinder; the faulty cloud (the same cloud through the fault injector)
where a fault is injected.  Each test: a ``copr-*`` VM in service with two data volumes
and a floating IP, then ``orch.replace_vm`` with ``data_volumes: move``.
"""

import signal
import subprocess
import time

import pytest

from tests.integration.conftest import orch_failures, read_journal, wait_until
from tests.integration.test_copr import _attachments, _guest_file, _orch

pytestmark = pytest.mark.usefixtures("synced")


def _old_serves_with_its_volumes(salt_cli, salt_run_cli, os_conn, keys, old_vm, vols):
    """After a rollback: the old server alone, with its IP, its volumes (only there), its
    minion under its own id again, its services running; no <vm>-old key left."""
    name = old_vm["name"]
    servers = list(os_conn.compute.servers(name="^%s" % name))
    assert [s.id for s in servers] == [old_vm["id"]], [(s.name, s.id) for s in servers]
    assert salt_run_cli.run("vmops.show", name).data["floating_ips"] == [old_vm["address"]]
    for vol in vols:
        assert _attachments(os_conn, vol.id) == [old_vm["id"]]

    def answers():
        return salt_cli.run("--timeout=5", "test.ping", minion_tgt=name).data is True

    wait_until(answers, 90, interval=2, what="the old minion to answer as %s again" % name)
    assert keys.state(name + "-old") is None
    assert _guest_file(salt_cli, name, "copr/service").strip() == "running"


def _refuse_stop(salt_cli, name):
    cachedir = salt_cli.run("config.get", "cachedir", minion_tgt=name).data
    assert salt_cli.run("file.mkdir", "%s/copr" % cachedir, minion_tgt=name).returncode == 0
    assert salt_cli.run("file.touch", "%s/copr/refuse-stop" % cachedir, minion_tgt=name).data


@pytest.mark.parametrize("old_vm", ["copr"], indirect=True)
def test_services_that_refuse_to_stop_detach_nothing_and_roll_back(
    salt_run_cli,
    salt_cli,
    os_conn,
    old_vm,
    os_volumes,
    keys,
    salt_master,
):
    vols = os_volumes(old_vm["id"])
    _refuse_stop(salt_cli, old_vm["name"])
    ret, _ = _orch(salt_run_cli, old_vm["name"], "data_volumes: move")
    assert ret.returncode != 0
    failed = orch_failures(ret)
    assert "cutover" in failed and "refuses to stop" in str(failed["cutover"]), failed
    journal = read_journal(salt_master, "replace", old_vm["name"])
    assert journal["state"] == "rolled_back"
    assert not (journal["window"].get("volumes") or {}), journal["window"]  # none detached
    _old_serves_with_its_volumes(salt_cli, salt_run_cli, os_conn, keys, old_vm, vols)


@pytest.mark.parametrize("old_vm", ["copr"], indirect=True)
def test_an_attach_that_fails_puts_the_volumes_back_and_starts_the_services(
    salt_run_cli,
    salt_cli,
    os_conn,
    old_vm,
    os_volumes,
    keys,
    faults,
    salt_master,
):
    vols = os_volumes(old_vm["id"])
    # the first attachment the run asks for (to the new server) fails
    faults.inject("compute", "POST", r"/os-volume_attachments$", status=500, count=1)
    ret, _ = _orch(salt_run_cli, old_vm["name"], "data_volumes: move", "cloud: faulty")
    assert ret.returncode != 0
    assert "cutover" in orch_failures(ret), orch_failures(ret)
    journal = read_journal(salt_master, "replace", old_vm["name"])
    assert journal["state"] == "rolled_back" and journal["window"]["undone"]
    _old_serves_with_its_volumes(salt_cli, salt_run_cli, os_conn, keys, old_vm, vols)
    log = _guest_file(salt_cli, old_vm["name"], "copr/events.log").split()
    assert log[-4:] == ["%s-old" % old_vm["name"], "leaving", "%s-old" % old_vm["name"], "back"]


@pytest.mark.parametrize("old_vm", ["copr"], indirect=True)
def test_a_run_killed_inside_the_window_resumes_without_detaching_twice(
    salt_run_cli,
    salt_cli,
    os_conn,
    old_vm,
    os_volumes,
    keys,
    faults,
    salt_master,
):
    vols = os_volumes(old_vm["id"])
    first_dev = sorted(vols, key=lambda v: v.attachments[0]["device"])
    second = first_dev[1].id
    # the second volume's detach is held 6 s by the proxy, then carried out: the run is
    # killed while it waits for it
    faults.inject("compute", "DELETE", r"/os-volume_attachments/%s" % second, "delay", seconds=6)
    cmd = salt_run_cli.cmdline(
        "state.orch",
        "orch.replace_vm",
        "pillar={vm: %s, data_volumes: move, cloud: faulty}" % old_vm["name"],
    )
    first = subprocess.Popen(  # noqa: S603
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=dict(salt_run_cli.environ),
    )
    try:
        wait_until(
            lambda: faults.requests("compute", "DELETE", second),
            300,
            interval=0.1,
            what="the second volume's detach to be asked for",
        )
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    journal = read_journal(salt_master, "replace", old_vm["name"])
    assert journal["state"] == "cutting" and not journal["window"].get("end")
    time.sleep(1)
    ret, _ = _orch(salt_run_cli, old_vm["name"], "data_volumes: move", "cloud: faulty")
    assert ret.returncode == 0, orch_failures(ret)
    servers = list(os_conn.compute.servers(name="^%s$" % old_vm["name"]))
    assert len(servers) == 1 and servers[0].id != old_vm["id"]
    for vol in vols:
        assert _attachments(os_conn, vol.id) == [servers[0].id]
        detaches = faults.requests("compute", "DELETE", r"os-volume_attachments/%s" % vol.id)
        assert len(detaches) == 1, detaches  # never detached twice
        attaches = [
            r
            for r in faults.requests("compute", "POST", r"/os-volume_attachments$")
            if servers[0].id in r[2]
        ]
    assert len(attaches) == 2, attaches
    journal = read_journal(salt_master, "replace", old_vm["name"])
    assert journal["state"] == "done" and journal["resumed"]
    assert salt_cli.run("test.ping", minion_tgt=old_vm["name"]).data is True
    assert keys.state(old_vm["name"] + "-old") is None
