"""``salt-run state.orch orch.replace_vm pillar='{vm: ...}'`` end to end.

Real master, local OpenStack, minions started by the test hypervisor.  The old
VM is made the way the runbook's VMs are: booted with the pack's user-data, its
key accepted, a floating IP pointing at it.
"""

import json
import subprocess
import time

import pytest

from tests.conftest import record
from tests.integration.conftest import orch_failures, orch_states, read_journal, wait_until

pytestmark = pytest.mark.usefixtures("synced")


def _servers(os_conn, name):
    return list(os_conn.compute.servers(name="^%s$" % name))


def _old_still_serves(os_conn, salt_cli, old_vm):
    """The old VM is the only one of its name, has its IP, and its minion answers again."""
    servers = _servers(os_conn, old_vm["name"])
    assert [s.id for s in servers] == [old_vm["id"]]
    port = os_conn.network.get_ip(old_vm["fip"]).port_id
    assert port and os_conn.network.get_port(port).device_id == old_vm["id"]

    def answers():
        r = salt_cli.run("--timeout=5", "test.ping", minion_tgt=old_vm["name"])
        return r.data is True

    wait_until(answers, 90, interval=2, what="the old minion to answer again")
    grains = salt_cli.run("grains.item", "compute_host", minion_tgt=old_vm["name"]).data
    assert grains["compute_host"] == os_conn.compute.get_server(old_vm["id"]).compute_host


def _replace(salt_run_cli, name, *pillar_items):
    pillar = ", ".join(("vm: %s" % name,) + pillar_items)
    t0 = time.monotonic()
    ret = salt_run_cli.run("state.orch", "orch.replace_vm", "pillar={%s}" % pillar)
    return ret, time.monotonic() - t0


def test_replace_vm_success(
    salt_run_cli, salt_cli, os_conn, old_vm, keys, event_listener, salt_master
):
    t0 = time.time()
    ret, took = _replace(salt_run_cli, old_vm["name"], "flavor: m1.small", "smoke: true")
    assert ret.returncode == 0, orch_failures(ret)
    record("replace_vm end to end (orch)", took)
    states = orch_states(ret)
    assert all(s["result"] is True for k, s in states.items() if "rollback" not in k), (
        orch_failures(ret)
    )
    # exactly one VM of that name: the new one, with the new flavor and the IP
    servers = _servers(os_conn, old_vm["name"])
    assert len(servers) == 1 and servers[0].id != old_vm["id"]
    new = salt_run_cli.run("vmops.show", old_vm["name"]).data
    assert new["flavor"] == "m1.small" and new["floating_ips"] == [old_vm["address"]]
    assert os_conn.compute.find_server(old_vm["id"]) is None
    # the new minion answers, highstate applied, the level it was built with
    cachedir = salt_cli.run("config.get", "cachedir", minion_tgt=old_vm["name"]).data
    marker = salt_cli.run(
        "file.read", "%s/highstate/marker.txt" % cachedir, minion_tgt=old_vm["name"]
    ).data
    assert marker.strip() == "highstate of %s at level staging" % old_vm["name"]
    assert salt_cli.run("grains.get", "compute_host", minion_tgt=old_vm["name"]).data == new["host"]
    # the summary lists every step, and the bus heard them
    status = salt_run_cli.run("vmops.replace_vm", old_vm["name"], "step=status").data
    assert status["state"] == "done"
    steps = [s[0] for s in status["steps"]]
    assert steps == [
        "plan",
        "boot",
        "wait",
        "sanity",
        "highstate",
        "checked",
        "smoke",
        "flip",
        "retire",
    ], steps
    assert status["steps"][4][2] is not None  # the highstate's duration is reported too
    assert "released" in status["steps"][6][3]
    events = event_listener.get_events(
        [(salt_master.id, "vmops/replace/%s/*" % old_vm["name"])], after_time=t0
    )
    assert {e.tag.rsplit("/", 1)[1] for e in events} >= {"plan", "key", "boot", "flip", "retire"}
    assert not any("BEGIN RSA PRIVATE KEY" in json.dumps(e.data) for e in events)
    assert keys.state(old_vm["name"]) == "minions"


@pytest.mark.parametrize("old_vm", ["it-hsfail"], indirect=True)
def test_failed_highstate_rolls_back(salt_run_cli, salt_cli, os_conn, old_vm):
    ret, _ = _replace(salt_run_cli, old_vm["name"], "timeout: 60")
    assert ret.returncode != 0
    states = orch_states(ret)
    highstate = [s for k, s in states.items() if "_|-highstate_|-" in k][0]
    assert highstate["result"] is False
    flip = [s for k, s in states.items() if "flip_floating_ips" in k][0]
    assert flip["result"] is False and "requisite" in flip["comment"].lower()
    rollback = [s for k, s in states.items() if "_|-rollback_|-" in k][0]
    assert rollback["result"] is True, rollback
    assert "rolled back after" in json.dumps(rollback["changes"])
    _old_still_serves(os_conn, salt_cli, old_vm)


def test_new_vm_in_error_rolls_back(salt_run_cli, salt_cli, os_conn, old_vm):
    if not os_conn.compute.find_flavor("fn-huge"):
        os_conn.compute.create_flavor(name="fn-huge", ram=100 * 1024 * 1024, vcpus=1, disk=1)
    ret, _ = _replace(salt_run_cli, old_vm["name"], "flavor: fn-huge")
    assert ret.returncode != 0
    why = orch_failures(ret)
    assert "No valid host" in json.dumps(why["boot"]), why
    _old_still_serves(os_conn, salt_cli, old_vm)


def test_new_minion_never_shows_up_rolls_back(salt_run_cli, salt_cli, os_conn, old_vm):
    ret, _ = _replace(
        salt_run_cli,
        old_vm["name"],
        "metadata: {fakevm: broken-image}",
        "timeout: 20",
        "keep_failed: true",
    )
    assert ret.returncode != 0
    why = orch_failures(ret)
    # the broken image never starts a minion: its key never shows on the console, so the
    # hand-over (the first thing the wait step does) times out and the old VM keeps its id
    assert "no key evidence from server" in json.dumps(why["wait_minion"]), why
    assert '"error": "Timeout"' in json.dumps(why["wait_minion"]), why
    _old_still_serves(os_conn, salt_cli, old_vm)
    # keep_failed: the broken new VM is kept, stopped, for debugging
    kept = _servers(os_conn, old_vm["name"] + "-failed")
    assert len(kept) == 1 and kept[0].status == "SHUTOFF"


def test_test_mode_prints_the_plan_and_changes_nothing(salt_run_cli, os_conn, old_vm):
    ret = salt_run_cli.run(
        "state.orch",
        "orch.replace_vm",
        "pillar={vm: %s, flavor: m1.small}" % old_vm["name"],
        "test=True",
    )
    assert ret.returncode == 0, ret
    (state,) = orch_states(ret).values()
    assert "PLAN: replace %s (%s" % (old_vm["name"], old_vm["id"]) in state["comment"]
    assert "new m1.small" in state["comment"] and old_vm["address"] in state["comment"]
    assert [s.id for s in _servers(os_conn, old_vm["name"])] == [old_vm["id"]]
    status = salt_run_cli.run("vmops.replace_vm", old_vm["name"], "step=status").data
    assert status["state"] is None


@pytest.mark.parametrize("bad", ["app*", "*", "[ab]pp2"])
def test_glob_names_are_refused_before_any_change(salt_run_cli, bad):
    ret = salt_run_cli.run("state.orch", "orch.replace_vm", "pillar={vm: '%s'}" % bad)
    assert ret.returncode != 0
    why = orch_failures(ret)
    assert "not a plain minion id" in json.dumps(why["plan"]), why
    ret = salt_run_cli.run("state.orch", "orch.replace_vm", "pillar={vm: '%s'}" % bad, "test=True")
    assert ret.returncode != 0
    assert "not a plain minion id" in json.dumps(orch_states(ret))


SLOW_DEPLOY = "deploy: {cmd: 'sleep 15'}"  # keeps a run in progress long enough to meet it


def _background_replace(salt_run_cli, name, *pillar_items):
    pillar = ", ".join(("vm: %s" % name,) + pillar_items)
    cmd = salt_run_cli.cmdline("state.orch", "orch.replace_vm", "pillar={%s}" % pillar)
    return subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # noqa: S603
        start_new_session=True,
        env=dict(salt_run_cli.environ),
    )


def _journal_state(salt_run_cli, name):
    return salt_run_cli.run("vmops.replace_vm", name, "step=status").data.get("state")


def _journal_file_state(salt_master, name):
    """The journal's state read straight from the master's cache (fast enough to poll)."""
    return (read_journal(salt_master, "replace", name) or {}).get("state")


def test_a_concurrent_run_is_refused(salt_run_cli, os_conn, old_vm, salt_master):
    first = _background_replace(salt_run_cli, old_vm["name"], SLOW_DEPLOY)
    try:
        wait_until(
            lambda: _journal_file_state(salt_master, old_vm["name"]) == "sane",
            60,
            interval=0.1,
            what="the first run to reach its deploy step",
        )
        ret, _ = _replace(salt_run_cli, old_vm["name"])
        assert ret.returncode != 0
        why = orch_failures(ret)
        assert "is already running" in json.dumps(why["plan"]), why
        assert first.wait(600) == 0, first.stdout.read()[-3000:]
    finally:
        if first.poll() is None:
            first.kill()
    assert len(_servers(os_conn, old_vm["name"])) == 1
    assert _journal_state(salt_run_cli, old_vm["name"]) == "done"


@pytest.mark.parametrize("old_vm", ["it-slowhs"], indirect=True)  # an 8 s highstate
def test_killed_run_resumes_with_exactly_one_vm(
    salt_run_cli, salt_cli, os_conn, old_vm, salt_master
):
    """Killed while its highstate runs on the new minion: the re-run waits for that
    highstate (never fails on "state.highstate is running") and adopts the booted VM."""
    first = _background_replace(salt_run_cli, old_vm["name"])

    def highstate_running():
        if _journal_file_state(salt_master, old_vm["name"]) != "sane":
            return False
        jobs = salt_cli.run("saltutil.running", minion_tgt=old_vm["name"]).data
        return isinstance(jobs, list) and any(j.get("fun") == "state.highstate" for j in jobs)

    try:
        wait_until(
            highstate_running,
            120,
            interval=0.2,
            what="the first run's highstate to run on the new VM",
        )
    finally:
        first.kill()  # the whole salt-run, mid-way (its highstate still runs on the minion)
        first.wait()
    servers = _servers(os_conn, old_vm["name"])
    assert len(servers) == 2  # old + new, nothing cleaned up
    (booted,) = [s.id for s in servers if s.id != old_vm["id"]]
    ret, _ = _replace(salt_run_cli, old_vm["name"])
    assert ret.returncode == 0, orch_failures(ret)
    # the resumed run finished with the VM the killed one booted: no second boot
    servers = _servers(os_conn, old_vm["name"])
    assert [s.id for s in servers] == [booted]
    assert salt_run_cli.run("vmops.show", old_vm["name"]).data["floating_ips"] == [
        old_vm["address"]
    ]
    status = salt_run_cli.run("vmops.replace_vm", old_vm["name"], "step=status").data
    assert status["state"] == "done" and status["new"] == booted, status
    assert [s[0] for s in status["steps"]].count("boot") == 1, status["steps"]
    waits = [s for s in status["steps"] if s[0] == "wait"]
    assert "waited for state.highstate" in json.dumps(waits), waits  # it met the collision
    assert salt_cli.run("test.ping", minion_tgt=old_vm["name"]).data is True
