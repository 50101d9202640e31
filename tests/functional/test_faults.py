"""The core under cloud faults: every request of a flow goes through the fault injector
(tests/harness/faultproxy.py) in front of the local cloud's APIs; the tests make the cloud
answer 503, reset the connection or stall, and check that the pack says so plainly and
leaves nothing half done."""

import json
import time

import pytest
import yaml

from vmopslib.errors import CloudError, NotFound, VmopsError
from vmopslib.openstack import OpenStackProvider


@pytest.fixture
def proxy(fault_proxy):
    return fault_proxy


@pytest.fixture
def faulty(proxy):
    """A provider whose every request goes through the injector (a fresh session each test)."""
    proxy.clear()
    return OpenStackProvider(
        {
            "name": "faulty",
            "driver": "openstack",
            "cloud": "faulty",
            "client_config_file": proxy.clouds_yaml,
        }
    )


def test_every_request_goes_through_the_injector(faulty, proxy):
    assert faulty.service_list()
    services = {r[0] for r in proxy.requests()}
    assert {"identity", "compute"} <= services, proxy.requests()


def test_a_503_on_boot_is_a_clear_error_and_leaves_no_server(faulty, proxy, name, os_conn):
    faulty.service_list()  # authenticated first
    proxy.inject("compute", "POST", r"/servers$", status=503, count=-1)
    with pytest.raises(CloudError) as err:
        faulty.boot(
            {"name": name, "image": "fake-image", "flavor": "m1.fake", "networks": ["private"]}
        )
    text = str(err.value)
    assert "faulty" in text and "503" in text, text
    assert "X-Auth-Token" not in text and "gAAAA" not in text  # no token in the message
    assert not list(os_conn.compute.servers(name="^%s$" % name))
    assert len(proxy.requests("compute", "POST", r"/servers$")) >= 1


def test_a_flip_the_cloud_refuses_leaves_the_address_where_it_was(
    faulty, proxy, prov, boot, name, os_conn, fips
):
    a = boot(name + "a")
    b = boot(name + "b")
    fip = prov.floating_ip_allocate()
    fips.append(fip["id"])
    prov.flip_floating_ip(fip["address"], a["id"])
    proxy.inject("network", "PUT", r"/floatingips/", status=503, count=-1)
    with pytest.raises(VmopsError):
        faulty.flip_floating_ip(fip["address"], b["id"])
    assert [r[3] for r in proxy.requests("network", "PUT", r"/floatingips/")] == ["status"]
    assert os_conn.network.get_ip(fip["id"]).port_id is not None  # never dangles
    assert prov.describe(a["id"])["floating_ips"] == [fip["address"]]
    proxy.clear()
    moved = faulty.flip_floating_ip(fip["address"], b["id"])  # the cloud is back: it moves
    assert moved["changed"] and prov.describe(b["id"])["floating_ips"] == [fip["address"]]


def test_a_connection_reset_by_keystone_is_a_cloud_error_not_a_traceback(faulty, proxy):
    proxy.inject("identity", "POST", r"/auth/tokens", action="reset", count=-1)
    with pytest.raises(CloudError) as err:
        faulty.service_list()
    assert "faulty" in str(err.value)
    assert "reset" in [r[3] for r in proxy.requests("identity", "POST")]


def test_placement_down_refuses_an_evacuation_before_anything_changes(
    faulty, proxy, os_conn, tmp_path
):
    from vmopslib import evacuate  # pylint: disable=import-outside-toplevel
    from vmopslib.store import JournalStore  # pylint: disable=import-outside-toplevel

    faulty.service_list()
    proxy.inject("placement", None, r"/resource_providers", status=503, count=-1)
    evac = evacuate.Evacuation(
        faulty,
        JournalStore(str(tmp_path), "evacuation"),
        evacuate.options({}, {}),
    )
    t0 = time.monotonic()
    with pytest.raises(CloudError):
        evac.run("cmp1", "fault test")
    assert time.monotonic() - t0 < 60
    assert "status" in [r[3] for r in proxy.requests("placement")]
    (svc,) = list(os_conn.compute.services(binary="nova-compute", host="cmp1"))
    assert svc.status == "enabled"  # nothing was disabled
    assert not proxy.requests("compute", "PUT")


def test_a_cloud_api_that_hangs_fails_the_call_within_api_timeout(proxy):
    faulty = OpenStackProvider(
        {
            "name": "faulty",
            "driver": "openstack",
            "cloud": "faulty",
            "client_config_file": proxy.clouds_yaml,
            "api_timeout": 3,
            "retries": 0,
        }
    )
    faulty.service_list()
    proxy.clear()
    proxy.inject("compute", "GET", r"/os-services", action="hang", seconds=30, count=-1)
    t0 = time.monotonic()
    with pytest.raises(CloudError) as err:
        faulty.service_list()
    took = time.monotonic() - t0
    assert took < 15, took  # not the 30 s the API hangs, not forever
    assert "faulty" in str(err.value)


def test_a_read_the_cloud_fails_once_is_retried_and_a_boot_is_not(faulty, proxy, boot, name):
    server = boot(name)
    proxy.inject("compute", "GET", r"/servers/%s$" % server["id"], status=503, count=1)
    assert faulty.describe(server["id"])["id"] == server["id"]
    statuses = [r[3] for r in proxy.requests("compute", "GET", r"/servers/%s$" % server["id"])]
    assert statuses[:2] == ["status", 200], statuses  # failed once, asked again, answered
    posts = len(proxy.requests("compute", "POST", r"/servers$"))
    proxy.inject("compute", "POST", r"/servers$", status=503, count=1)
    with pytest.raises(CloudError):
        faulty.boot(
            {
                "name": name + "b",
                "image": "fake-image",
                "flavor": "m1.fake",
                "networks": ["private"],
            }
        )
    assert len(proxy.requests("compute", "POST", r"/servers$")) == posts + 1  # never blindly again


def test_a_token_revoked_mid_run_is_renewed_and_the_call_goes_through(faulty, proxy, os_conn):
    """A token that stops being valid mid-run (expired, revoked): the next API to check it
    answers 401 and the client authenticates again, once, instead of failing the step."""
    faulty.service_list()  # authenticated; Nova has validated (and cached) the token
    token = faulty.conn.session.get_token()
    # revoked for real in keystone (an expiry looks the same to the services)
    os_conn.session.delete(
        "/auth/tokens",
        headers={"X-Subject-Token": token},
        endpoint_filter={"service_type": "identity", "interface": "public"},
    )
    before = len(proxy.requests())
    # Neutron has not seen this token: it asks keystone, which says revoked
    with pytest.raises(NotFound, match="not allocated"):
        faulty.floating_ip_show("203.0.113.254")
    after = proxy.requests()[before:]
    network = [r[3] for r in after if r[0] == "network" and "floatingips" in r[2]]
    assert network == [401, 200], after
    assert [r[1] for r in after if r[0] == "identity"] == ["POST"], after  # once, then on
    assert faulty.conn.session.get_token() != token


@pytest.fixture
def enabled_again(prov):
    yield
    for host in ("cmp1", "cmp2", "cmp3"):
        prov.service_enable(host)


def test_an_evacuation_whose_migrate_answer_is_lost_never_asks_twice(
    faulty, proxy, boot, name, prov, tmp_path, enabled_again
):
    """Nova starts the live migration, the answer never arrives; another server's migrate
    gets a 503.  The lost one is found migrating and followed (one migration, not two);
    the refused one is asked again (Nova did nothing); the node ends empty."""
    from vmopslib import evacuate  # pylint: disable=import-outside-toplevel
    from vmopslib.store import JournalStore  # pylint: disable=import-outside-toplevel

    lost = boot(name + "-lost", availability_zone="nova:cmp1")
    refused = boot(name + "-refused", availability_zone="nova:cmp1")
    faulty.service_list()
    proxy.inject("compute", "POST", r"/servers/%s/action" % lost["id"], action="lost")
    proxy.inject("compute", "POST", r"/servers/%s/action" % refused["id"], status=503)
    evac = evacuate.Evacuation(
        faulty,
        JournalStore(str(tmp_path), "evacuation"),
        evacuate.options({}, {"concurrency": 2, "retries": 1}),
        who="functional@faults",
    )
    report = evac.run("cmp1", "fault test")
    mine = {s["name"]: s for s in report["servers"] if s["name"].startswith(name)}
    assert {n: s["phase"] for n, s in mine.items()} == {
        lost["name"]: "moved",
        refused["name"]: "moved",
    }, json.dumps(mine, default=str)[:4000]
    assert len(prov.migrations(lost["id"])) == 1, prov.migrations(lost["id"])
    assert len(prov.migrations(refused["id"])) == 1  # the 503 never reached Nova
    for server in (lost, refused):
        assert prov.describe(server["id"])["host"] != "cmp1"


def test_a_token_kept_between_processes_is_reused_and_one_the_cloud_refuses_is_replaced(
    proxy, os_conn, tmp_path
):
    """``token_cache`` (authcache): a second connection of the same identity (another salt
    process of the master) makes no password authentication and no version discovery; the
    file is private; a kept token keystone revoked costs one 401 and is replaced for all."""
    proxy.clear()
    profile = {
        "name": "faulty",
        "driver": "openstack",
        "cloud": "faulty",
        "client_config_file": proxy.clouds_yaml,
        "token_cache": str(tmp_path / "auth"),
    }

    def fresh():
        return OpenStackProvider(dict(profile))  # its own connection, as a new process has

    fresh().service_list()
    assert [r[1] for r in proxy.requests("identity")].count("POST") == 1
    (kept,) = (tmp_path / "auth").iterdir()
    assert oct(kept.stat().st_mode & 0o777) == "0o600"
    assert oct((tmp_path / "auth").stat().st_mode & 0o777) == "0o700"
    with open(proxy.clouds_yaml, encoding="utf-8") as fh:
        password = yaml.safe_load(fh)["clouds"]["faulty"]["auth"]["password"]
    assert password not in kept.read_text()
    before = len(proxy.requests())
    second = fresh()
    second.service_list()
    after = proxy.requests()[before:]
    assert [r for r in after if r[0] == "identity"] == [], after  # no token, no discovery
    assert [r[2] for r in after if r[0] == "compute"] == [
        "/v2.1/os-services?binary=nova-compute"
    ], after
    # revoked in keystone: the next process's first call gets a 401, authenticates, goes on
    os_conn.session.delete(
        "/auth/tokens",
        headers={"X-Subject-Token": second.conn.session.get_token()},
        endpoint_filter={"service_type": "identity", "interface": "public"},
    )
    before = len(proxy.requests())
    with pytest.raises(NotFound, match="not allocated"):
        fresh().floating_ip_show("203.0.113.254")
    after = proxy.requests()[before:]
    assert [r[3] for r in after if r[0] == "network" and "floatingips" in r[2]] == [401, 200]
    assert [r[1] for r in after if r[0] == "identity"] == ["POST"], after
    before = len(proxy.requests())
    fresh().service_list()  # the renewed token was kept for the next one
    assert [r for r in proxy.requests()[before:] if r[0] == "identity"] == []
