import base64

import pytest

from vmopslib.errors import Ambiguous, CloudError, InvalidInput, NotFound


def test_boot_describe_delete(prov, boot, name, os_conn):
    desc = boot(name, metadata={"role": "app"}, security_groups=["default", "frontend"])
    assert desc["status"] == "ACTIVE"
    assert desc["name"] == name and desc["host"] in ("cmp1", "cmp2", "cmp3")
    assert desc["flavor"] == "m1.fake"
    assert desc["image"] == os_conn.image.find_image("fake-image").id
    assert desc["security_groups"] == ["default", "frontend"]
    assert list(desc["networks"]) == ["private"] and desc["fixed_ips"]
    assert desc["metadata"] == {"role": "app"}
    assert desc["created"] and desc["floating_ips"] == [] and desc["volumes"] == []
    assert prov.describe(desc["id"])["name"] == name
    gone = prov.delete(name)
    assert gone["status"] == "DELETED"
    with pytest.raises(NotFound, match="no server named '%s'" % name):
        prov.find_server(name)


def test_two_servers_with_one_name_are_ambiguous(prov, boot, name):
    a = boot(name)
    b = boot(name)
    with pytest.raises(Ambiguous) as err:
        prov.find_server(name)
    assert "2 servers are named %r" % name in str(err.value)
    assert a["id"] in str(err.value) and b["id"] in str(err.value)
    assert prov.describe(b["id"])["id"] == b["id"]
    assert {s["id"] for s in prov.servers_named(name)} == {a["id"], b["id"]}


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("flavor", "no-such-flavor", "flavor 'no-such-flavor' does not exist"),
        ("image", "no-such-image", "image 'no-such-image' does not exist"),
        ("networks", ["no-such-net"], "network 'no-such-net' does not exist"),
        ("security_groups", ["no-such-sg"], "security group 'no-such-sg' does not exist"),
        ("key_name", "no-such-key", "key pair 'no-such-key' does not exist"),
    ],
)
def test_bad_boot_input_is_refused_before_anything_changes(
    prov, name, os_conn, field, value, message
):
    spec = {"name": name, "image": "fake-image", "flavor": "m1.fake", "networks": ["private"]}
    spec[field] = value
    with pytest.raises(NotFound, match=message):
        prov.boot(spec)
    assert prov.servers_named(name) == []


def test_boot_refuses_a_glob_name(prov):
    with pytest.raises(InvalidInput, match="not a plain minion id"):
        prov.boot({"name": "app*", "image": "fake-image", "flavor": "m1.fake"})


def test_a_server_that_goes_to_error_fails_with_novas_fault(prov, boot, name, os_conn):
    flavor = os_conn.compute.find_flavor("fn-huge") or os_conn.compute.create_flavor(
        name="fn-huge", ram=100 * 1024 * 1024, vcpus=1, disk=1
    )
    assert flavor
    with pytest.raises(CloudError, match="went to ERROR: No valid host was found"):
        boot(name, flavor="fn-huge")


def test_rebuild_keeps_the_server_and_its_ips_with_new_user_data(prov, boot, name, os_conn):
    desc = boot(name, user_data="#cloud-config\n# first\n")
    rebuilt = prov.rebuild(name, user_data="#cloud-config\n# second\n")
    assert rebuilt["id"] == desc["id"] and rebuilt["status"] == "ACTIVE"
    assert rebuilt["fixed_ips"] == desc["fixed_ips"]
    raw = os_conn.compute.get(
        "/servers/%s" % desc["id"], headers={"OpenStack-API-Version": "compute 2.3"}
    ).json()["server"]
    assert base64.b64decode(raw["OS-EXT-SRV-ATTR:user_data"]).decode().endswith("# second\n")


def test_reset_state(prov, boot, name):
    boot(name)
    assert prov.reset_state(name, "error")["status"] == "ERROR"
    assert prov.reset_state(name, "active")["status"] == "ACTIVE"
    with pytest.raises(InvalidInput, match="state must be 'active' or 'error'"):
        prov.reset_state(name, "stopped")


def test_another_projects_server_never_vouches_for_a_key(local_cloud, prov, name):
    """With all_projects, a tenant could name a server after a minion id: it must not vouch."""
    from vmopslib import identity, trust
    from vmopslib.openstack import OpenStackProvider

    demo = OpenStackProvider(
        {
            "name": "local-demo",
            "driver": "openstack",
            "cloud": "local-demo",
            "client_config_file": local_cloud["clouds_yaml"],
        }
    )
    desc = demo.boot(
        {"name": name, "image": "fake-image", "flavor": "m1.fake", "networks": ["private"]},
        timeout=120,
    )
    try:
        admin_all = OpenStackProvider(
            {
                "name": "local",
                "driver": "openstack",
                "cloud": local_cloud["cloud"],
                "all_projects": True,
                "client_config_file": local_cloud["clouds_yaml"],
            }
        )
        pub, _ = identity.generate_keypair(bits=1024)
        verdict = trust.vouch(admin_all, name, pub, require_fingerprint=False)
        assert not verdict["ok"] and "belongs to project" in verdict["reason"], verdict
        trusting = OpenStackProvider(
            {
                "name": "local",
                "driver": "openstack",
                "cloud": local_cloud["cloud"],
                "all_projects": True,
                "vouch_projects": [desc["project_id"]],
                "client_config_file": local_cloud["clouds_yaml"],
            }
        )
        assert trust.vouch(trusting, name, pub, require_fingerprint=False)["ok"]
    finally:
        demo.delete(desc["id"], timeout=120)
    del prov


def test_headroom_follows_the_project_quota(prov, boot, name, os_conn):
    """The compute limits a rotation's plan checks its peak against: one more server (and
    its flavor's cores and RAM) in use is one less free."""
    assert prov.headroom() == {"instances": None, "cores": None, "ram_mb": None}  # unlimited
    project = os_conn.current_project_id
    used = os_conn.compute.get_limits().absolute
    os_conn.set_compute_quotas(
        project,
        instances=used.instances_used + 50,
        cores=used.total_cores_used + 100,
        ram=used.total_ram_used + 100000,
    )
    try:
        before = prov.headroom()
        assert all(isinstance(before[k], int) for k in ("instances", "cores", "ram_mb")), before
        boot(name)
        after = prov.headroom()
        size = prov.flavor_size("m1.fake")
        assert after["instances"] == before["instances"] - 1
        assert after["cores"] == before["cores"] - size["vcpus"]
        assert after["ram_mb"] == before["ram_mb"] - size["ram_mb"]
    finally:
        os_conn.set_compute_quotas(project, instances=-1, cores=-1, ram=-1)
