"""The core library against the real local OpenStack (no Salt daemons)."""

import uuid

import pytest

from vmopslib.openstack import OpenStackProvider


@pytest.fixture(scope="session")
def profile(local_cloud):
    return {
        "name": "local",
        "driver": "openstack",
        "cloud": local_cloud["cloud"],
        "client_config_file": local_cloud["clouds_yaml"],
    }


@pytest.fixture(scope="session")
def prov(profile, os_conn):
    return OpenStackProvider(profile, conn=os_conn)


@pytest.fixture
def name():
    return "fn-%s" % uuid.uuid4().hex[:6]


@pytest.fixture
def boot(prov, os_conn):
    """Boot plain test servers (no minion); everything booted is deleted afterwards."""
    made = []

    def _boot(server_name, wait=True, **spec):
        spec = dict(
            {
                "name": server_name,
                "image": "fake-image",
                "flavor": "m1.fake",
                "networks": ["private"],
            },
            **spec,
        )
        desc = prov.boot(spec, wait=wait, timeout=120)
        made.append(desc["id"])
        return desc

    yield _boot
    for server_id in made:
        os_conn.compute.delete_server(server_id, ignore_missing=True)
    for server_id in made:
        server = os_conn.compute.find_server(server_id)
        if server is not None:
            os_conn.compute.wait_for_delete(server, wait=120)


@pytest.fixture
def fips(os_conn):
    made = []
    yield made
    for fip_id in made:
        os_conn.network.delete_ip(fip_id, ignore_missing=True)
