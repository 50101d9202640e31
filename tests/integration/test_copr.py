"""The Fedora Copr runbook as one command: ``orch.replace_vm`` with ``data_volumes: move``.

Real master, the local OpenStack (Cinder volumes) and moto's EC2 (EBS, Elastic IPs), the
test hypervisors' guests running real salt-minions.  The old server is a ``copr-*`` VM
whose highstate (``vmops_copr``) keeps its "services" in a file of its guest and logs
every run with the pack's pillar flag (``vmops:cutover``), so a test sees what ran where.
"""

import json
import os
import time
import uuid

import pytest

from tests.conftest import record
from tests.integration.conftest import orch_failures, read_journal

pytestmark = pytest.mark.usefixtures("synced")


def _orch(salt_run_cli, name, *items):
    pillar = ", ".join(("vm: %s" % name,) + items)
    t0 = time.monotonic()
    ret = salt_run_cli.run("state.orch", "orch.replace_vm", "pillar={%s}" % pillar)
    return ret, time.monotonic() - t0


def _guest_file(salt_cli, minion, rel):
    cachedir = salt_cli.run("config.get", "cachedir", minion_tgt=minion).data
    return salt_cli.run("file.read", "%s/%s" % (cachedir, rel), minion_tgt=minion).data


def _attachments(os_conn, volume_id):
    return [a["server_id"] for a in os_conn.block_storage.get_volume(volume_id).attachments]


@pytest.mark.parametrize("old_vm", ["copr"], indirect=True)
def test_copr_flow_on_openstack_moves_the_data_volumes_in_a_short_window(
    salt_run_cli, salt_cli, os_conn, old_vm, os_volumes, keys, salt_master
):
    name = old_vm["name"]
    vols = os_volumes(old_vm["id"])
    devices = {v.id: v.attachments[0]["device"] for v in vols}
    # the plan shows everything, the outage steps included, and changes nothing
    ret = salt_run_cli.run(
        "state.orch", "orch.replace_vm", "pillar={vm: %s, data_volumes: move}" % name, "test=True"
    )
    assert ret.returncode == 0, ret
    text = json.dumps(ret.data)
    assert "OUTAGE WINDOW" in text and all(v.name in text for v in vols), text
    assert "%s-old" % name in text
    assert [_attachments(os_conn, v.id) for v in vols] == [[old_vm["id"]]] * 2
    assert keys.state(name + "-old") is None

    ret, took = _orch(salt_run_cli, name, "data_volumes: move")
    assert ret.returncode == 0, orch_failures(ret)
    record("replace_vm with 2 data volumes (orch, OpenStack)", took)
    servers = list(os_conn.compute.servers(name="^%s$" % name))
    assert len(servers) == 1 and servers[0].id != old_vm["id"]
    new_id = servers[0].id
    assert os_conn.compute.find_server(old_vm["id"]) is None
    # every volume on the new server only, at its old device
    for vol in vols:
        now = os_conn.block_storage.get_volume(vol.id)
        assert [a["server_id"] for a in now.attachments] == [new_id], now.attachments
        assert now.attachments[0]["device"] == devices[vol.id]
    assert salt_run_cli.run("vmops.show", name).data["floating_ips"] == [old_vm["address"]]
    # the new minion answers under the old id; provisioned with services disabled, then
    # the cut-over started them; the old minion's id is gone with its server
    assert salt_cli.run("test.ping", minion_tgt=name).data is True
    log = _guest_file(salt_cli, name, "copr/events.log").split()
    assert log == [name, "pending", name, "done"], log
    assert _guest_file(salt_cli, name, "copr/service").strip() == "running"
    assert keys.state(name + "-old") is None
    journal = read_journal(salt_master, "replace", name)
    window = journal["window"]
    assert window["length"] > 0 and set(window["parts"]) == {
        "stop",
        "detach",
        "attach",
        "cutover",
        "flip",
    }, window
    assert journal["jobs"]["leaving_ok"] and journal["old_minion"]["answering"]
    record("outage window (OpenStack, 2 volumes)", window["length"])


def _ec2_old(moto_cloud, salt_run_cli, event_listener, salt_master, name):
    """A Copr-like instance: made by the pack (minion accepted), tagged, protected, with an
    IAM instance profile, two EBS data volumes and an Elastic IP."""
    ec2 = moto_cloud.client()
    ret = salt_run_cli.run("vmops.create", name, "cloud=aws")
    assert ret.returncode == 0, ret
    t0 = time.time()
    ret = salt_run_cli.run("vmops.accept_minion", name, "wait=60", "cloud=aws")
    assert ret.returncode == 0 and ret.data["accepted"], ret
    assert event_listener.wait_for_events(
        [(salt_master.id, "salt/minion/%s/start" % name)], after_time=t0, timeout=60
    ).found_all_events
    inst = ec2.describe_instances(Filters=[{"Name": "tag:Name", "Values": [name]}])["Reservations"][
        0
    ]["Instances"][0]
    iid, zone = inst["InstanceId"], inst["Placement"]["AvailabilityZone"]
    ec2.modify_instance_attribute(InstanceId=iid, DisableApiTermination={"Value": True})
    ec2.create_tags(
        Resources=[iid],
        Tags=[{"Key": "app", "Value": "copr"}, {"Key": "FedoraGroup", "Value": "copr"}],
    )
    vols = []
    for i, dev in enumerate(("/dev/sdf", "/dev/sdg")):
        vol = ec2.create_volume(
            Size=10 + i,
            AvailabilityZone=zone,
            TagSpecifications=[
                {"ResourceType": "volume", "Tags": [{"Key": "Name", "Value": "%s-d%d" % (name, i)}]}
            ],
        )
        ec2.attach_volume(VolumeId=vol["VolumeId"], InstanceId=iid, Device=dev)
        vols.append((vol["VolumeId"], dev))
    eip = ec2.allocate_address(Domain="vpc")
    ec2.associate_address(AllocationId=eip["AllocationId"], InstanceId=iid)
    return iid, vols, eip


def test_copr_flow_on_ec2_end_to_end(
    salt_run_cli, salt_cli, moto_cloud, keys, cleanup, event_listener, salt_master
):
    name = "copr-fe-%s" % uuid.uuid4().hex[:5]
    cleanup.extend([name, name + "-new", name + "-old"])
    ec2 = moto_cloud.client()
    old_id, vols, eip = _ec2_old(moto_cloud, salt_run_cli, event_listener, salt_master, name)
    keys_before = keys.listing()
    try:
        ret, took = _orch(
            salt_run_cli,
            name,
            "cloud: aws",
            "data_volumes: move",
            "flavor: t3a.xlarge",
            "root_size: 20",
            "encrypted: true",
            "keep_old: stop",
        )
        assert ret.returncode == 0, orch_failures(ret)
        record("replace_vm with 2 data volumes (orch, EC2)", took)
        found = {
            i["InstanceId"]: i
            for r in ec2.describe_instances()["Reservations"]
            for i in r["Instances"]
            if i["State"]["Name"] != "terminated"
        }
        tags = {
            iid: {t["Key"]: t["Value"] for t in i.get("Tags") or []} for iid, i in found.items()
        }
        (new_id,) = [iid for iid, t in tags.items() if t.get("Name") == name]
        assert new_id != old_id
        # names as the runbook ends: <vm> the new one, <vm>-old the old one (stopped,
        # still protected); every tag carried over
        assert tags[old_id]["Name"] == name + "-old"
        assert found[old_id]["State"]["Name"] in ("stopping", "stopped")
        for key in ("app", "FedoraGroup"):
            assert tags[new_id][key] == tags[old_id][key]
        protected = ec2.describe_instance_attribute(
            InstanceId=old_id, Attribute="disableApiTermination"
        )["DisableApiTermination"]["Value"]
        assert protected is True
        assert (
            ec2.describe_instance_attribute(InstanceId=new_id, Attribute="disableApiTermination")[
                "DisableApiTermination"
            ]["Value"]
            is True
        )
        new = found[new_id]
        assert new["InstanceType"] == "t3a.xlarge"
        assert sorted(g["GroupId"] for g in new["SecurityGroups"]) == sorted(
            g["GroupId"] for g in found[old_id]["SecurityGroups"]
        )
        # the root disk: the new size, encrypted
        data_devices = {dev for _, dev in vols}
        (root,) = [
            m["Ebs"]["VolumeId"]
            for m in new["BlockDeviceMappings"]
            if m["DeviceName"] not in data_devices
        ]
        root_vol = ec2.describe_volumes(VolumeIds=[root])["Volumes"][0]
        assert root_vol["Size"] == 20 and root_vol["Encrypted"] is True
        # the data volumes: on the new instance only, same devices
        for vid, dev in vols:
            atts = ec2.describe_volumes(VolumeIds=[vid])["Volumes"][0]["Attachments"]
            assert [(a["InstanceId"], a["Device"]) for a in atts] == [(new_id, dev)], atts
        # the Elastic IP: re-associated to the new instance
        addr = ec2.describe_addresses(AllocationIds=[eip["AllocationId"]])["Addresses"][0]
        assert addr["InstanceId"] == new_id
        # the new minion answers under the old id, its services started by the cut-over
        assert salt_cli.run("test.ping", minion_tgt=name).data is True
        log = _guest_file(salt_cli, name, "copr/events.log").split()
        assert log == [name, "pending", name, "done"], log
        # the old one's services were stopped through its minion (moved to <vm>-old)
        old_log = open(  # noqa: SIM115
            os.path.join(moto_cloud.vms_dir, old_id, "cache", "copr", "events.log"),
            encoding="utf-8",
        ).read()
        assert "%s-old leaving" % name in old_log, old_log
        assert set(keys.listing()["minions"]) >= set(keys_before["minions"])
        journal = read_journal(salt_master, "replace", name)
        assert journal["state"] == "done" and journal["window"]["length"] > 0
        record("outage window (EC2, 2 volumes)", journal["window"]["length"])
    finally:
        keys.delete(name + "-old")
