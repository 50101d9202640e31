"""Volumes on both clouds, for real: the local OpenStack's Cinder (FakeLoggingVolumeDriver,
attached through Nova) and EBS on moto."""

import uuid

import pytest

from vmopslib.ec2 import EC2Provider
from vmopslib.errors import InvalidInput, NotFound


@pytest.fixture(params=["openstack", "ec2"])
def cloud(request, prov, moto_cloud, ec2_image, os_conn):
    """(provider, boot spec, cleanup list of server ids, cleanup list of volume ids)."""
    servers, volumes = [], []
    if request.param == "openstack":
        provider = prov
        spec = {"image": "fake-image", "flavor": "m1.fake", "networks": ["private"]}
    else:
        provider = EC2Provider(
            {
                "name": "aws",
                "driver": "ec2",
                "region_name": "us-east-1",
                "endpoint_url": moto_cloud.endpoint_url,
                "aws_access_key_id": "testing",
                "aws_secret_access_key": "testing",
            }
        )
        spec = {"image": ec2_image, "flavor": "t3.micro"}
    yield provider, spec, servers, volumes
    for server_id in servers:
        try:
            provider.delete(server_id, wait=True, timeout=120)
        except NotFound:
            pass
    for volume_id in volumes:
        vol = provider._volume_get(volume_id)  # pylint: disable=protected-access
        if vol is None:
            continue
        for att in vol["attachments"]:
            try:
                provider.volume_detach(att["server_id"], volume_id, timeout=60)
            except NotFound:
                pass
        provider.volume_delete(volume_id, timeout=60)
    del os_conn


def _name(kind):
    return "fn-%s-%s" % (kind, uuid.uuid4().hex[:6])


def test_create_attach_detach_delete_and_refusals(cloud):
    provider, spec, servers, volumes = cloud
    one = provider.boot(dict(spec, name=_name("vm")), timeout=120)
    two = provider.boot(dict(spec, name=_name("vm")), timeout=120)
    servers.extend([one["id"], two["id"]])
    vol = provider.volume_create(_name("data"), 2)
    volumes.append(vol["id"])
    assert vol["status"] == "available" and vol["size"] == 2 and vol["attachments"] == []

    planned = provider.volume_attach(one["id"], vol["name"], test=True)
    assert planned["changed"] and provider.volume_show(vol["id"])["status"] == "available"
    done = provider.volume_attach(one["id"], vol["name"])
    assert done["changed"] and done["device"]
    shown = provider.volume_show(vol["id"])
    assert shown["status"] == "in-use"
    assert shown["attachments"] == [{"server_id": one["id"], "device": done["device"]}]
    listed = {v["volume_id"]: v for v in provider.volumes(one["id"])}
    assert listed[vol["id"]]["device"] == done["device"] and listed[vol["id"]]["size"] == 2
    assert listed[vol["id"]]["root"] is False and listed[vol["id"]]["multiattach"] is False

    # already there: a no-op; elsewhere: refused before anything changes, naming where
    assert provider.volume_attach(one["id"], vol["id"])["changed"] is False
    with pytest.raises(InvalidInput, match="attached to %s.*never attached twice" % one["name"]):
        provider.volume_attach(two["id"], vol["id"])
    with pytest.raises(InvalidInput, match="attached to %s.*detach it first" % one["name"]):
        provider.volume_delete(vol["id"])
    assert provider.volume_show(vol["id"])["attachments"][0]["server_id"] == one["id"]

    gone = provider.volume_detach(one["id"], vol["id"])
    assert gone["changed"] and provider.volume_show(vol["id"])["status"] == "available"
    assert provider.volume_detach(one["id"], vol["id"])["changed"] is False
    moved = provider.volume_attach(two["id"], vol["id"])
    assert moved["changed"]
    provider.volume_detach(two["id"], vol["id"])
    assert provider.volume_delete(vol["id"])["deleted"] is True
    with pytest.raises(NotFound):
        provider.volume_show(vol["id"])


def test_bad_input_changes_nothing(cloud):
    provider, _, _, _ = cloud
    for size in ("abc", 0, "1.5", None):
        with pytest.raises(InvalidInput, match="whole number of GiB"):
            provider.volume_create(_name("bad"), size)
    with pytest.raises(InvalidInput, match="not a plain minion id"):
        provider.volume_create("data*", 1)
    with pytest.raises(NotFound, match="no volume 'fn-nosuch'"):
        provider.volume_show("fn-nosuch")


def test_boot_with_an_extra_volume_that_outlives_the_server(cloud):
    provider, spec, servers, volumes = cloud
    with pytest.raises(InvalidInput, match="volume size"):
        provider.boot(dict(spec, name=_name("vm"), volumes=[{"size": "big"}]))
    server = provider.boot(dict(spec, name=_name("vm"), volumes=[{"size": 1}]), timeout=180)
    servers.append(server["id"])
    extra = [v for v in provider.volumes(server["id"]) if not v["root"]]
    assert len(extra) == 1 and extra[0]["size"] == 1 and extra[0]["status"] == "in-use"
    volumes.append(extra[0]["volume_id"])
    provider.delete(server["id"], timeout=120)
    servers.remove(server["id"])
    after = provider.volume_show(extra[0]["volume_id"])  # data is never lost with the server
    assert after["status"] == "available" and after["attachments"] == []
