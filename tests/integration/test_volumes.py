"""Volumes through Salt: the execution module and the states on a VM's minion (it holds
the credentials in pillar), and the runner's ``vmops.show``, on Cinder and on EBS (moto)."""

import uuid

import pytest


@pytest.fixture
def volume_cleanup(synced, salt_cli, vm_minion):  # pylint: disable=unused-argument
    made = []
    yield made
    for cloud, name in made:
        salt_cli.run("vmops.volume_delete", name, "cloud=%s" % cloud, minion_tgt=vm_minion)


def _single(salt_cli, minion, state, *args):
    ret = salt_cli.run("state.single", state, *args, minion_tgt=minion)
    assert ret.returncode in (0, 1), ret
    (result,) = ret.data.values()
    return result


@pytest.mark.parametrize("cloud", ["local", "aws"])
def test_volume_lifecycle_through_a_minion_states_and_the_runner(
    synced, salt_cli, salt_run_cli, vm_minion, moto_cloud, ec2_image, cleanup, volume_cleanup, cloud
):
    del synced
    if cloud == "local":
        server = vm_minion
    else:
        server = "it-ec2-%s" % uuid.uuid4().hex[:6]
        cleanup.append(server)
        moto_cloud.client().run_instances(
            ImageId=ec2_image,
            InstanceType="t3.micro",
            MinCount=1,
            MaxCount=1,
            TagSpecifications=[
                {"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": server}]}
            ],
        )
    name = "it-vol-%s" % uuid.uuid4().hex[:6]
    volume_cleanup.append((cloud, name))
    ret = salt_cli.run(
        "vmops.volume_create", name, "size=1", "cloud=%s" % cloud, minion_tgt=vm_minion
    )
    assert ret.returncode == 0 and ret.data["status"] == "available", ret

    # the state works out the change first: test=True changes nothing
    planned = _single(
        salt_cli,
        vm_minion,
        "vmops.volume_attached",
        name,
        "server=%s" % server,
        "cloud=%s" % cloud,
        "test=True",
    )
    assert planned["result"] is None and planned["changes"], planned
    shown = salt_cli.run("vmops.volume_show", name, "cloud=%s" % cloud, minion_tgt=vm_minion)
    assert shown.data["status"] == "available"
    done = _single(
        salt_cli, vm_minion, "vmops.volume_attached", name, "server=%s" % server, "cloud=%s" % cloud
    )
    assert done["result"] is True and done["changes"]["attached"]["server"] == server, done
    again = _single(
        salt_cli, vm_minion, "vmops.volume_attached", name, "server=%s" % server, "cloud=%s" % cloud
    )
    assert again["result"] is True and again["changes"] == {}

    details = salt_run_cli.run("vmops.show", server, "cloud=%s" % cloud).data["volume_details"]
    assert name in [v["name"] for v in details], details
    # the same execution module on the master (credentials from the master's config)
    on_master = salt_run_cli.run("salt.cmd", "vmops.volumes", server, "cloud=%s" % cloud)
    assert on_master.returncode == 0, on_master
    assert name in [v["name"] for v in on_master.data], on_master.data

    # an unknown server, and deleting a volume still attached, are refused with the reason
    refused = salt_cli.run(
        "vmops.volume_attach", "no-such-%s" % server, name, "cloud=%s" % cloud, minion_tgt=vm_minion
    )
    assert "no server named" in refused.stdout + refused.stderr + str(refused.data)
    refused = salt_cli.run("vmops.volume_delete", name, "cloud=%s" % cloud, minion_tgt=vm_minion)
    assert "attached to %s" % server in str(refused.data), refused

    gone = _single(
        salt_cli, vm_minion, "vmops.volume_detached", name, "server=%s" % server, "cloud=%s" % cloud
    )
    assert gone["result"] is True and gone["changes"] == {"detached": {"server": server}}, gone
    ret = salt_cli.run("vmops.volume_delete", name, "cloud=%s" % cloud, minion_tgt=vm_minion)
    assert ret.returncode == 0 and ret.data["deleted"] is True, ret
