"""The shared volume logic's edge cases (the real proof: tests/functional/test_volumes.py)."""

import pytest

from vmopslib import provider as provider_mod
from vmopslib.errors import InvalidInput, Timeout


class Stuck(provider_mod.Provider):
    """A cloud whose detach never finishes (the volume stays ``detaching``)."""

    driver = "stuck"

    def __init__(self):
        super().__init__({"name": "stuck"})
        self.vol = {
            "id": "v1",
            "name": "data",
            "size": 1,
            "type": None,
            "status": "in-use",
            "bootable": False,
            "multiattach": False,
            "encrypted": False,
            "availability_zone": None,
            "attachments": [{"server_id": "s1", "device": "/dev/vdb"}],
        }
        self.calls = []

    def _looks_like_id(self, value):
        return value == "s1"

    def exists(self, server_id):
        return self._get_server(server_id) is not None

    def _get_server(self, server_id):
        return {"id": server_id} if server_id == "s1" else None

    def _describe(self, server):
        return {"id": server["id"], "name": "app2"}

    def _volume_find(self, name_or_id):
        return dict(self.vol) if name_or_id in ("v1", "data") else None

    def _volume_get(self, volume_id):
        return dict(self.vol)

    def _volume_detach(self, server_id, volume_id):
        self.calls.append(("detach", server_id, volume_id))
        self.vol["status"] = "detaching"


# a fake that implements only the primitives these tests reach (a real driver must have all)
Stuck.__abstractmethods__ = frozenset()


def test_a_driver_missing_a_primitive_fails_when_it_is_built():
    class Half(provider_mod.Provider):
        driver = "half"

        def _get_server(self, server_id):
            return None

    with pytest.raises(TypeError, match="abstract"):
        Half({"name": "half"})


def test_an_operation_another_driver_offers_is_not_supported_here():
    from vmopslib.errors import NotSupported

    cloud = Stuck()
    with pytest.raises(
        NotSupported, match="cloud stuck \\(stuck\\) does not support service_disable"
    ):
        cloud.service_disable("cmp1", reason="x")
    with pytest.raises(AttributeError):
        cloud.no_such_operation()


def test_a_detach_that_sticks_is_a_clear_timeout():
    cloud = Stuck()
    with pytest.raises(Timeout, match="volume v1 is still detaching after 1s.*volume service"):
        cloud.volume_detach("s1", "data", timeout=1)
    assert cloud.calls == [("detach", "s1", "v1")]


def test_test_mode_changes_nothing():
    cloud = Stuck()
    out = cloud.volume_detach("s1", "data", test=True)
    assert out["changed"] and "would be detached" in out["comment"] and cloud.calls == []


@pytest.mark.parametrize(
    "volumes, match",
    [
        ("big", "must be a list"),
        ([{"size": 0}], "whole number of GiB"),
        ([{"size": 1, "delete_on_termination": "yes"}], "true or false"),
        ([{"size": 1, "colour": "red"}], "unknown volume setting"),
    ],
)
def test_boot_volumes_are_checked_first(volumes, match):
    with pytest.raises(InvalidInput, match=match):
        provider_mod.check_boot_volumes(volumes)


def test_boot_volumes_outlive_their_server_by_default():
    assert provider_mod.check_boot_volumes([{"size": "2"}]) == [
        {"size": 2, "delete_on_termination": False}
    ]


def test_an_openstack_cloud_without_a_volume_service_says_so():
    """The local cloud has Cinder now; a cloud whose catalog lacks it must still answer clearly."""
    from vmopslib.errors import NotSupported
    from vmopslib.openstack import OpenStackProvider

    class Conn:
        @staticmethod
        def has_service(service_type):  # pylint: disable=unused-argument
            return False

    prov = OpenStackProvider({"name": "novol", "driver": "openstack"}, conn=Conn())
    for call in (
        lambda: prov.volume_show("v1"),
        lambda: prov.volume_create("v1", 1),
        lambda: prov._server_volumes("s1"),
    ):  # pylint: disable=protected-access
        with pytest.raises(NotSupported, match="cloud novol has no volume service"):
            call()


class Ips(Stuck):
    """A cloud with one floating IP, and a re-association that may not stick."""

    def __init__(self, sticks=True):
        super().__init__()
        self.ip = {
            "address": "203.0.113.7",
            "port_id": "p-old",
            "fixed_ip": "10.0.0.5",
            "server_id": "old",
        }
        self.sticks, self.calls = sticks, []

    def _ip_find(self, address):
        return dict(self.ip)

    def _ip_target(self, ip, server, fixed_ip=None):
        return {
            "server_id": server,
            "name": server,
            "port_id": "p-" + server,
            "fixed_ip": "10.0.0.9",
        }

    def _ip_associate(self, ip, target):
        self.calls.append(("associate", target["port_id"]))
        if self.sticks:
            self.ip.update(
                port_id=target["port_id"],
                fixed_ip=target["fixed_ip"],
                server_id=target["server_id"],
            )


def test_the_flip_is_written_once_for_every_cloud():
    from vmopslib.errors import CloudError

    cloud = Ips()
    plan = cloud.flip_floating_ip("203.0.113.7", "new", test=True)
    assert plan["changed"] and "would be moved to new (10.0.0.9)" in plan["comment"]
    assert cloud.calls == []
    done = cloud.flip_floating_ip("203.0.113.7", "new")
    assert done["old"] == {"port_id": "p-old", "fixed_ip": "10.0.0.5", "server_id": "old"}
    assert done["new"]["server_id"] == "new" and cloud.calls == [("associate", "p-new")]
    again = cloud.flip_floating_ip("203.0.113.7", "new")
    assert again["changed"] is False and "already points at new" in again["comment"]
    with pytest.raises(CloudError, match="was moved but points at p-old, not p-new"):
        Ips(sticks=False).flip_floating_ip("203.0.113.7", "new")


def test_a_flip_only_from_the_old_server_leaves_an_ip_someone_else_took():
    cloud = Ips()
    cloud.ip["server_id"] = "third"
    left = cloud.flip_floating_ip("203.0.113.7", "new", only_from=("old",))
    assert left["left"] is True and left["changed"] is False and cloud.calls == []
    assert left["old"] == {"server_id": "third"}
    cloud.ip["server_id"] = "old"
    done = cloud.flip_floating_ip("203.0.113.7", "new", only_from=("old",))
    assert done["changed"] and cloud.calls == [("associate", "p-new")]
