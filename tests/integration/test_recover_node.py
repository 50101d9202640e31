"""Dead-host recovery with real daemons: a compute host of the local cloud loses power (its
nova-compute and its guests' minions die at once), the pack fences it, forces it down,
evacuates its servers (a minion VM and a server with a data volume), verifies them, and
brings the host back only once it reports again."""

import subprocess

import pytest

from tests.conftest import HARNESS
from tests.integration.conftest import background, orch_states, read_journal, wait_until

NODE = "cmp2"


def _cloud(*args):
    subprocess.run(["bash", str(HARNESS / "cloud.sh"), *args], check=True, timeout=120)


def _service(os_conn):
    (svc,) = list(os_conn.compute.services(binary="nova-compute", host=NODE))
    return svc


@pytest.fixture
def dead_node(os_conn):
    """NODE after a power loss, once Nova sees its service down; back in service afterwards."""

    def kill():
        _cloud("compute-kill", NODE)
        wait_until(lambda: _service(os_conn).state == "down", 90, what="%s down" % NODE)

    yield kill
    _cloud("compute-start", NODE)
    svc = _service(os_conn)
    if svc.is_forced_down:
        os_conn.compute.update_service_forced_down(
            svc, host=NODE, binary="nova-compute", forced=False
        )
    if _service(os_conn).status == "disabled":
        os_conn.compute.enable_service(_service(os_conn), host=NODE, binary="nova-compute")
    wait_until(lambda: _service(os_conn).state == "up", 90, what="%s up again" % NODE)


def _minion_vm(salt_run_cli, cleanup, name):
    cleanup.append(name)
    ret = salt_run_cli.run(
        "vmops.create", name, "availability_zone=nova:%s" % NODE, "provision=False"
    )
    assert ret.returncode == 0 and ret.data["host"] == NODE, ret
    ret = salt_run_cli.run("vmops.accept_minion", name, "wait=60")
    assert ret.returncode == 0 and ret.data["accepted"], ret
    return name


def test_a_live_host_is_refused_even_when_called_fenced(
    synced, salt_run_cli, os_conn, plain_server, vm_name
):
    server = plain_server(vm_name, NODE)
    ret = salt_run_cli.run("vmops.recover_node", NODE, "fenced=True", "local_disks=rebuild")
    assert ret.returncode != 0, ret
    assert "Nova evacuates only from a host whose service is down" in ret.data["comment"]
    assert os_conn.compute.get_server(server.id).compute_host == NODE
    assert not _service(os_conn).is_forced_down


def test_a_dead_host_is_fenced_and_its_servers_come_back_elsewhere_with_their_volume(
    synced, salt_run_cli, salt_cli, salt_master, os_conn, plain_server, dead_node, cleanup, vm_name
):
    minion = _minion_vm(salt_run_cli, cleanup, vm_name + "-m")
    data = plain_server(vm_name + "-d", NODE)
    local = plain_server(vm_name + "-l", NODE)
    vol = os_conn.block_storage.create_volume(size=1, name=vm_name + "-vol")
    os_conn.block_storage.wait_for_status(vol, "available", wait=60)
    try:
        os_conn.compute.create_volume_attachment(data, volume_id=vol.id)
        wait_until(
            lambda: os_conn.block_storage.get_volume(vol.id).status == "in-use", 60, what="attached"
        )
        dead_node()
        # not fenced: refused, nothing moves
        ret = salt_run_cli.run("vmops.recover_node", NODE, "local_disks=rebuild")
        assert ret.returncode != 0, ret
        assert "no proof that %s is off" % NODE in ret.data["comment"], ret.data
        assert "nothing was changed" in ret.data["comment"]
        assert not _service(os_conn).is_forced_down and _service(os_conn).status == "enabled"
        assert os_conn.compute.get_server(data.id).compute_host == NODE
        # the plan: the local-disk servers need the opt-in, the fence proof is missing
        ret = salt_run_cli.run(
            "state.orch", "orch.recover_node", "pillar={node: %s}" % NODE, "test=True"
        )
        (plan,) = orch_states(ret).values()
        assert plan["result"] is False, plan  # test=True: the plan is the state's name
        assert "no proof that %s is off" % NODE in plan["name"], plan
        assert "their data is lost; local_disks=rebuild goes ahead" in plan["name"], plan
        assert not _service(os_conn).is_forced_down  # the plan changed nothing

        # the fence action is the harness's power switch: it must succeed before anything moves
        fence = "{cmd: 'bash %s compute-kill {node}'}" % (HARNESS / "cloud.sh")
        pillar = "pillar={node: %s, fence: %s, options: {concurrency: 2}}" % (NODE, fence)
        ret = salt_run_cli.run("state.orch", "orch.recover_node", pillar)
        (state,) = orch_states(ret).values()
        report = state["changes"]["return"]
        by = {s["name"]: s for s in report["servers"]}
        # without local_disks=rebuild the image-backed servers stay, reported: the run fails
        assert ret.returncode != 0 and report["result"] is False, report
        assert by[local.name]["phase"] == "blocked", by
        assert report["fenced"]["how"].startswith("fence command succeeded"), report
        svc = _service(os_conn)
        assert svc.is_forced_down and svc.status == "disabled"

        # with the opt-in; the salt-run is killed while an evacuation is in flight
        args = ("vmops.recover_node", NODE, "fenced=True", "local_disks=rebuild", "concurrency=1")
        first = background(salt_run_cli, *args)

        def evacuating():
            journal = read_journal(salt_master, "recover", NODE) or {}
            return journal.get("state") == "running" and any(
                i.get("phase") == "evacuating" for i in journal.get("items", [])
            )

        try:
            wait_until(evacuating, 120, interval=0.1, what="an evacuation in flight")
        finally:
            first.kill()
            first.wait()
        killed = read_journal(salt_master, "recover", NODE)
        ret = salt_run_cli.run(*args)
        assert ret.returncode == 0, ret
        report = ret.data
        assert report["run"] == killed["run"], report  # resumed, not started over
        assert report["fence_to_first_evacuation"] < 10, report
        by = {s["name"]: s for s in report["servers"]}
        for name in (minion, data.name, local.name):
            assert by[name]["phase"] == "evacuated" and by[name]["dest"] not in (None, NODE), by
            server = os_conn.compute.get_server(by[name]["id"])
            assert server.status == "ACTIVE" and server.compute_host == by[name]["dest"]
            evacuations = [
                m
                for m in os_conn.compute.migrations(instance_uuid=server.id)
                if m.migration_type == "evacuation"
            ]
            assert len(evacuations) == 1, (name, evacuations)  # never asked twice
        assert by[data.name]["volumes"] == [vol.id], by[data.name]
        assert os_conn.block_storage.get_volume(vol.id).attachments[0]["server_id"] == data.id
        assert by[minion]["minion"] == "answers from %s" % by[minion]["dest"], by[minion]
        assert salt_cli.run("test.ping", minion_tgt=minion).data is True

        # the node stays out until it reports again
        ret = salt_run_cli.run("vmops.enable_node", NODE)
        assert ret.returncode != 0 and "has not reported since it was forced down" in str(ret.data)
        assert _service(os_conn).is_forced_down
        _cloud("compute-start", NODE)
        wait_until(
            lambda: salt_run_cli.run("vmops.enable_node", NODE).returncode == 0,
            90,
            interval=5,
            what="enable_node to take %s back" % NODE,
        )
        svc = _service(os_conn)
        assert not svc.is_forced_down and svc.status == "enabled"
    finally:
        # the server goes first (a detach from an evacuated server can fail and leave the
        # volume in-use until then): the volume never outlives the test
        try:
            os_conn.compute.delete_server(data)
            os_conn.compute.wait_for_delete(data, wait=120)
        except Exception:  # pylint: disable=broad-except
            pass
        try:
            os_conn.block_storage.wait_for_status(vol, "available", wait=60)
            os_conn.block_storage.delete_volume(vol)
        except Exception:  # pylint: disable=broad-except
            pass
