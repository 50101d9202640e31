"""``orch.replace_vm`` under cloud faults, end to end (real master, minions, local cloud).

The replacement runs on the cloud profile ``faulty``: the same local cloud, reached through
the fault injector (tests/harness/faultproxy.py).  Each scenario makes one step's cloud call
fail, then checks the invariants the README promises, and finishes (or abandons) the run:

- one server per name (or the two of an unfinished run, both known to its journal);
- every floating IP on an ACTIVE server whose minion answers;
- no volume attached twice;
- the id's accepted key is the key of the VM that answers to it;
- the journal says where the run is, and a re-run goes on from there.
"""

import json
import os
import subprocess
import time

import pytest
import salt.utils.files

from tests.conftest import record as record_timing
from tests.harness import fakevm
from tests.integration.conftest import (
    background,
    orch_failures,
    orch_states,
    read_journal,
    wait_until,
)

pytestmark = pytest.mark.usefixtures("synced")


def _replace(salt_run_cli, name, *items):
    pillar = ", ".join(("vm: %s" % name, "cloud: faulty", "timeout: 60") + items)
    return salt_run_cli.run("state.orch", "orch.replace_vm", "pillar={%s}" % pillar)


def _servers(os_conn, name):
    return list(os_conn.compute.servers(name="^%s$" % name))


def _accepted_pub(salt_master, name):
    path = os.path.join(salt_master.config["pki_dir"], "minions", name)
    with salt.utils.files.fopen(path) as fh:
        return fh.read().strip()


def _vm_pub(server_id):
    path = os.path.join(fakevm.vm_dir(server_id), "etc", "salt", "pki", "minion", "minion.pub")
    with salt.utils.files.fopen(path) as fh:
        return fh.read().strip()


def _invariants(os_conn, salt_cli, salt_master, old_vm, holder, servers):
    """The promises, read from the cloud, the master's keys and the minions themselves.

    ``holder``: the server the floating IP and the id's key must be on; ``servers``: the ids
    that may carry the name (the old one and, for an unfinished run, the new one)."""
    name = old_vm["name"]
    found = _servers(os_conn, name)
    assert sorted(s.id for s in found) == sorted(servers), [(s.id, s.status) for s in found]
    port = os_conn.network.get_ip(old_vm["fip"]).port_id
    assert port and os_conn.network.get_port(port).device_id == holder, "the IP dangles"
    assert os_conn.compute.get_server(holder).status == "ACTIVE"
    assert _accepted_pub(salt_master, name) == _vm_pub(holder), "the id's key is not the holder's"

    def answers():
        return salt_cli.run("--timeout=5", "test.ping", minion_tgt=name).data is True

    wait_until(answers, 90, interval=2, what="%s to answer" % name)
    for volume in os_conn.block_storage.volumes():
        assert len(volume.attachments or []) <= 1 or volume.is_multiattach, volume


def _journal(salt_master, name):
    return read_journal(salt_master, "replace", name) or {}


def test_a_boot_whose_answer_is_lost_is_found_by_its_nonce_and_removed(
    salt_run_cli, salt_cli, salt_master, os_conn, old_vm, faults
):
    """Nova creates the server, the answer never arrives: the run cannot know the new
    server's id.  It is never booted twice; the rollback finds it by the run's nonce."""
    faults.inject("compute", "POST", r"/servers$", action="lost")
    ret = _replace(salt_run_cli, old_vm["name"])
    assert ret.returncode != 0
    why = orch_failures(ret)
    assert "compute" in json.dumps(why["boot"]) or "onnection" in json.dumps(why["boot"]), why
    assert len(faults.requests("compute", "POST", r"/servers$")) == 1  # one boot, not retried
    rollback = [s for k, s in orch_states(ret).items() if "_|-rollback_|-" in k][0]
    assert rollback["result"] is True and "deleted" in json.dumps(rollback["changes"]), rollback
    _invariants(os_conn, salt_cli, salt_master, old_vm, old_vm["id"], [old_vm["id"]])
    assert _journal(salt_master, old_vm["name"])["state"] == "rolled_back"


def test_a_flip_the_cloud_refuses_stops_the_run_and_a_re_run_finishes_it(
    salt_run_cli, salt_cli, salt_master, os_conn, old_vm, faults
):
    """Past the checks there is no way back, only forward: the old VM keeps the IP (it
    serves), the new one holds the id; the re-run only flips and retires."""
    faults.inject("network", "PUT", r"/floatingips/", status=503, count=-1)
    ret = _replace(salt_run_cli, old_vm["name"])
    assert ret.returncode != 0
    why = orch_failures(ret)
    assert "503" in json.dumps(why["flip_floating_ips"]), why
    assert "rollback" not in why, why  # past the checks: no rollback
    record = _journal(salt_master, old_vm["name"])
    assert record["state"] == "checked", record["state"]
    new_id = record["new"]["id"]
    port = os_conn.network.get_ip(old_vm["fip"]).port_id
    assert os_conn.network.get_port(port).device_id == old_vm["id"]  # still where it was
    assert _accepted_pub(salt_master, old_vm["name"]) == _vm_pub(new_id)
    faults.clear()
    ret = _replace(salt_run_cli, old_vm["name"])
    assert ret.returncode == 0, orch_failures(ret)
    _invariants(os_conn, salt_cli, salt_master, old_vm, new_id, [new_id])
    status = salt_run_cli.run("vmops.replace_vm", old_vm["name"], "step=status").data
    assert [s[0] for s in status["steps"]].count("boot") == 1, status["steps"]


def test_a_delete_of_the_old_vm_the_cloud_refuses_keeps_it_until_a_re_run(
    salt_run_cli, salt_cli, salt_master, os_conn, old_vm, faults
):
    faults.inject("compute", "DELETE", r"/servers/%s" % old_vm["id"], status=503, count=-1)
    ret = _replace(salt_run_cli, old_vm["name"])
    assert ret.returncode != 0
    assert "503" in json.dumps(orch_failures(ret)["retire_old_vm"])
    record = _journal(salt_master, old_vm["name"])
    new_id = record["new"]["id"]
    assert record["state"] == "flipped"
    _invariants(os_conn, salt_cli, salt_master, old_vm, new_id, [old_vm["id"], new_id])
    faults.clear()
    ret = _replace(salt_run_cli, old_vm["name"])
    assert ret.returncode == 0, orch_failures(ret)
    _invariants(os_conn, salt_cli, salt_master, old_vm, new_id, [new_id])


@pytest.mark.parametrize("old_vm", ["it-hsfail"], indirect=True)  # its highstate fails
def test_a_rollback_the_cloud_refuses_gives_the_id_back_and_the_next_run_cleans_up(
    salt_run_cli, salt_cli, salt_master, os_conn, old_vm, faults
):
    """The rollback itself under a fault: the old key comes back first whatever the cloud
    says; the new server that could not be deleted is recorded, and the next run removes
    it before anything else."""
    faults.inject("compute", "DELETE", r"/servers/", status=503, count=-1)
    ret = _replace(salt_run_cli, old_vm["name"])
    assert ret.returncode != 0
    rollback = [s for k, s in orch_states(ret).items() if "_|-rollback_|-" in k][0]
    text = json.dumps(rollback["changes"])
    assert "NOT removed" in text and "the next run for" in text, rollback
    record = _journal(salt_master, old_vm["name"])
    left = record["leftover"]
    assert record["state"] == "rolled_back" and left != old_vm["id"]
    # both servers, the old one serving with its IP and its key
    _invariants(os_conn, salt_cli, salt_master, old_vm, old_vm["id"], [old_vm["id"], left])
    # the cloud still refuses: the next run says so and changes nothing
    ret = salt_run_cli.run("vmops.replace_vm", old_vm["name"], "cloud=faulty")
    assert ret.returncode != 0 and "cannot be removed yet" in ret.stdout, ret.stdout[-2000:]
    faults.clear()
    ret = salt_run_cli.run("vmops.replace_vm", old_vm["name"], "cloud=faulty", "test=True")
    assert "first removes the server %s" % left in ret.data["comment"], ret.data
    assert ret.returncode == 0
    ret = salt_run_cli.run("vmops.replace_vm", old_vm["name"], "cloud=faulty")
    assert ret.returncode == 0 and "removed what a rolled-back run left" in ret.data["comment"]
    ret = salt_run_cli.run("vmops.replace_vm", old_vm["name"], "step=abandon")
    assert ret.returncode == 0 and ret.data["state"] == "abandoned", ret.data
    assert "the accepted key of %s is still the old VM's" % old_vm["name"] in ret.data["comment"]
    _invariants(os_conn, salt_cli, salt_master, old_vm, old_vm["id"], [old_vm["id"]])


@pytest.mark.parametrize("old_vm", ["it-slowhs"], indirect=True)  # an 8 s highstate
def test_the_master_restarted_mid_replacement_then_the_run_re_started(
    salt_run_cli, salt_cli, salt_master, os_conn, old_vm
):
    """``systemctl restart salt-master`` while the new VM's highstate runs.  The highstate's
    return is read from the master's job cache, so the restart does not turn a good
    highstate into a failure (and a rollback of a healthy VM); the run finishes, or, if
    the operator stopped it, the run started again resumes and waits for the same job."""
    name = old_vm["name"]
    first = background(salt_run_cli, "state.orch", "orch.replace_vm", "pillar={vm: %s}" % name)
    try:
        wait_until(
            lambda: _journal(salt_master, name).get("jobs", {}).get("highstate"),
            120,
            interval=0.2,
            what="the new VM's highstate to be published",
        )
        with salt_master.stopped():
            time.sleep(5)
        t0 = time.monotonic()
        try:
            first.wait(180)
        except subprocess.TimeoutExpired:
            pass
        finished = first.poll() is not None
        record_timing(
            "master restarted mid-highstate: the run %s after"
            % ("finished by itself" if finished else "was stopped"),
            time.monotonic() - t0,
        )
    finally:
        if first.poll() is None:
            first.kill()  # the operator's Ctrl-C
            first.wait()
    record = _journal(salt_master, name)
    jid = record["jobs"]["highstate"]
    if not finished or record["state"] != "done":
        assert record["state"] != "rolled_back", record["steps"][-3:]
        ret = _replace(salt_run_cli, name)  # started again: it resumes
        assert ret.returncode == 0, json.dumps(orch_failures(ret), default=str)[:3000]
        record = _journal(salt_master, name)
    assert record["state"] == "done", record["steps"][-3:]
    assert record["jobs"]["highstate"] == jid  # one highstate job, its return not lost
    highstates = [x for x in record["steps"] if x["step"] == "highstate" and x["result"]]
    assert len(highstates) == 1, record["steps"]
    assert not any(x["step"] == "rollback" for x in record["steps"])
    _invariants(os_conn, salt_cli, salt_master, old_vm, record["new"]["id"], [record["new"]["id"]])


def test_two_runs_started_together_one_replaces_the_other_changes_nothing(
    salt_run_cli, salt_cli, salt_master, os_conn, old_vm
):
    name = old_vm["name"]
    cmd = ("state.orch", "orch.replace_vm", "pillar={vm: %s}" % name)
    runs = [
        subprocess.Popen(  # noqa: S603
            salt_run_cli.cmdline(*cmd),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=dict(salt_run_cli.environ),
        )
        for _ in range(2)
    ]
    outs = [json.loads(run.communicate(timeout=600)[0] or "{}") for run in runs]
    codes = sorted(run.returncode for run in runs)
    assert codes[0] == 0 and codes[1] != 0, codes
    refused = json.dumps(outs[[run.returncode for run in runs].index(codes[1])])
    assert "is already running" in refused, refused[-2000:]
    record = _journal(salt_master, name)
    assert record["state"] == "done" and len(record["steps"]) == len(
        [x for x in record["steps"] if x["result"]]
    )
    assert [x["step"] for x in record["steps"]].count("boot") == 1
    _invariants(os_conn, salt_cli, salt_master, old_vm, record["new"]["id"], [record["new"]["id"]])
