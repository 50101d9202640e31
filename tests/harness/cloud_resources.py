#!/usr/bin/python3
"""Idempotently create the base resources of the local test cloud.

Flavors m1.fake, m1.small and lightspeed (the runbook's bigger flavor), image
fake-image (1 MiB raw), security group ``frontend``, external flat network
``public`` 203.0.113.0/24 (TEST-NET-3: nothing is plugged, no packet leaves),
shared tenant network ``private`` 198.51.100.0/24, and router1 between them.

Usage: OS_CLIENT_CONFIG_FILE=<base>/clouds.yaml python3 cloud_resources.py
"""

import os

import openstack

conn = openstack.connect(cloud=os.environ.get("OS_CLOUD", "local-admin"))

for name, ram, vcpus, disk in (
    ("m1.fake", 128, 1, 1),
    ("m1.small", 2048, 1, 20),
    ("lightspeed", 4096, 2, 20),
):
    if not conn.compute.find_flavor(name):
        conn.compute.create_flavor(name=name, ram=ram, vcpus=vcpus, disk=disk)

if not conn.image.find_image("fake-image"):
    conn.create_image(
        "fake-image",
        data=b"\0" * 1024 * 1024,
        disk_format="raw",
        container_format="bare",
        visibility="public",
        wait=True,
    )

if not conn.network.find_security_group("frontend", project_id=conn.current_project_id):
    sg = conn.network.create_security_group(name="frontend", description="web front ends")
    conn.network.create_security_group_rule(
        security_group_id=sg.id,
        direction="ingress",
        protocol="tcp",
        port_range_min=80,
        port_range_max=80,
        remote_ip_prefix="0.0.0.0/0",
    )

public = conn.network.find_network("public")
if not public:
    public = conn.network.create_network(
        name="public",
        is_router_external=True,
        is_shared=False,
        provider_network_type="flat",
        provider_physical_network="public",
    )
if not conn.network.find_subnet("public-subnet"):
    conn.network.create_subnet(
        network_id=public.id,
        name="public-subnet",
        ip_version=4,
        cidr="203.0.113.0/24",
        gateway_ip="203.0.113.1",
        is_dhcp_enabled=False,
        allocation_pools=[{"start": "203.0.113.10", "end": "203.0.113.250"}],
    )

private = conn.network.find_network("private")
if not private:
    private = conn.network.create_network(name="private", is_shared=True)
psub = conn.network.find_subnet("private-subnet")
if not psub:
    psub = conn.network.create_subnet(
        network_id=private.id, name="private-subnet", ip_version=4, cidr="198.51.100.0/24"
    )

router = conn.network.find_router("router1")
if not router:
    router = conn.network.create_router(
        name="router1", external_gateway_info={"network_id": public.id}
    )
if not list(conn.network.ports(device_id=router.id, device_owner="network:router_interface")):
    conn.network.add_interface_to_router(router, subnet_id=psub.id)
print("base resources ok: flavors, fake-image, frontend group, public/private, router1")
