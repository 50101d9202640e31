import threading
import time

import pytest

from vmopslib.errors import InvalidInput, NotFound


def test_flip_moves_the_address_without_ever_unassigning_it(prov, boot, name, os_conn, fips):
    a = boot(name + "a")
    b = boot(name + "b")
    tmp = prov.floating_ip_allocate()
    fips.append(tmp["id"])
    first = prov.flip_floating_ip(tmp["address"], a["id"])
    assert first["changed"] and first["new"]["server_id"] == a["id"]
    assert first["old"]["port_id"] is None

    seen, stop = [], threading.Event()

    def poll():  # a watcher on the address, as a client of the service would see it
        while not stop.is_set():
            seen.append(os_conn.network.get_ip(tmp["id"]).port_id)
            time.sleep(0.02)

    watcher = threading.Thread(target=poll)
    watcher.start()
    time.sleep(0.3)
    moved = prov.flip_floating_ip(tmp["address"], name + "b")
    time.sleep(0.3)
    stop.set()
    watcher.join()
    port_a, port_b = first["new"]["port_id"], moved["new"]["port_id"]
    assert moved["changed"] and moved["old"]["server_id"] == a["id"]
    assert moved["new"]["server_id"] == b["id"] and moved["new"]["fixed_ip"] in b["fixed_ips"]
    assert None not in seen, "the address was unassigned during the flip"
    assert set(seen) == {port_a, port_b} and seen[0] == port_a and seen[-1] == port_b
    assert prov.describe(b["id"])["floating_ips"] == [tmp["address"]]
    assert prov.describe(a["id"])["floating_ips"] == []
    again = prov.flip_floating_ip(tmp["address"], b["id"])
    assert again["changed"] is False and "already points at" in again["comment"]


def test_flip_bad_input(prov, boot, name, os_conn, fips):
    a = boot(name)
    with pytest.raises(NotFound, match="floating IP 203.0.113.254 is not allocated"):
        prov.flip_floating_ip("203.0.113.254", a["id"])
    tmp = prov.floating_ip_allocate()
    fips.append(tmp["id"])
    with pytest.raises(NotFound, match="no server named 'no-such-server'"):
        prov.flip_floating_ip(tmp["address"], "no-such-server")
    with pytest.raises(InvalidInput, match="no port with fixed IP"):
        prov.flip_floating_ip(tmp["address"], a["id"], fixed_ip="10.9.9.9")
    assert os_conn.network.get_ip(tmp["id"]).port_id is None  # nothing changed


def test_a_floating_ip_of_another_project_is_refused(prov, boot, name, fips, local_cloud):
    from vmopslib.openstack import connect  # pylint: disable=import-outside-toplevel

    a = boot(name)
    demo = connect(
        {"name": "demo", "cloud": "local-demo", "client_config_file": local_cloud["clouds_yaml"]}
    )
    public = demo.network.find_network("public")
    foreign = demo.network.create_ip(floating_network_id=public.id)
    fips.append(foreign.id)
    with pytest.raises(InvalidInput, match="belongs to project"):
        prov.flip_floating_ip(foreign.floating_ip_address, a["id"])


def test_release_refuses_an_address_in_use(prov, boot, name, fips):
    a = boot(name)
    tmp = prov.floating_ip_allocate()
    fips.append(tmp["id"])
    prov.flip_floating_ip(tmp["address"], a["id"])
    with pytest.raises(InvalidInput, match="still points at port"):
        prov.floating_ip_release(tmp["address"])
    assert prov.floating_ip_release(tmp["address"], force=True)["released"] is True
    with pytest.raises(InvalidInput, match="'private' is not an external network"):
        prov.floating_ip_allocate(network="private")
