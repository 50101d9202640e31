"""evacuate-node against the real local OpenStack (three nova-computes, Placement).

The test hypervisor fails or holds live migrations on request (server metadata
``fakevm:migrate``: fail, fail-once, hang), so failures, retries, abort and
force-complete run for real in Nova.
"""

import uuid

import pytest

from vmopslib import evacuate
from vmopslib.errors import InvalidInput
from vmopslib.store import JournalStore

NODE = "cmp1"


@pytest.fixture
def store(tmp_path):
    return JournalStore(str(tmp_path / "evacuate"), what="evacuation")


@pytest.fixture
def restore_services(prov):
    yield
    for host in ("cmp1", "cmp2", "cmp3"):
        prov.service_enable(host)


@pytest.fixture
def on_node(boot):
    def _boot(server_name, host=NODE, **spec):
        return boot(server_name, availability_zone="nova:%s" % host, **spec)

    return _boot


def evac(prov, store, **opts):
    return evacuate.Evacuation(prov, store, evacuate.options({}, opts), who="functional@test")


@pytest.fixture
def hog(os_conn):
    """Fill hosts' RAM in Placement with an allocation no instance owns (Nova leaves it alone)."""
    consumers = []

    def _hog(hosts, leave_mb):
        rps = {rp.name: rp.id for rp in os_conn.placement.resource_providers()}
        for host in hosts:
            usages = os_conn.placement.get("/resource_providers/%s/usages" % rps[host]).json()
            inv = os_conn.placement.get(
                "/resource_providers/%s/inventories/MEMORY_MB" % rps[host], microversion="1.28"
            ).json()
            cap = int((inv["total"] - inv["reserved"]) * inv["allocation_ratio"])
            left = cap - usages["usages"].get("MEMORY_MB", 0) - leave_mb
            while left > 0:  # one allocation may take at most max_unit
                chunk = min(left, inv["max_unit"])
                consumer = str(uuid.uuid4())
                body = {
                    "allocations": {rps[host]: {"resources": {"MEMORY_MB": chunk}}},
                    "project_id": os_conn.current_project_id,
                    "user_id": os_conn.current_user_id,
                    "consumer_generation": None,
                }
                resp = os_conn.placement.put(
                    "/allocations/%s" % consumer, json=body, microversion="1.28"
                )
                assert resp.status_code == 204, resp.text
                consumers.append(consumer)
                left -= chunk

    yield _hog
    for consumer in consumers:
        os_conn.placement.delete("/allocations/%s" % consumer, microversion="1.28")


def _mine(report, names):
    return {s["name"]: s for s in report["servers"] if s["name"] in names}


def test_mixed_node_drained_live_cold_and_reported(
    prov, os_conn, on_node, name, store, restore_services
):
    names = {
        state: "%s-%s" % (name, state.lower())
        for state in ("ACTIVE", "ACTIVE2", "PAUSED", "SHUTOFF", "SUSPENDED", "ERROR")
    }
    ids = {state: on_node(n)["id"] for state, n in names.items()}
    os_conn.compute.pause_server(ids["PAUSED"])
    os_conn.compute.stop_server(ids["SHUTOFF"])
    os_conn.compute.suspend_server(ids["SUSPENDED"])
    os_conn.compute.reset_server_state(ids["ERROR"], "error")
    for state in ("PAUSED", "SHUTOFF", "SUSPENDED", "ERROR"):
        prov.wait_for_status(ids[state], state, 60)

    plan = evac(prov, store).plan(NODE)
    assert prov.service_show(NODE)["status"] == "enabled"  # the plan changed nothing
    planned = {s["name"]: s["method"] for s in plan["servers"] if s["name"] in names.values()}
    assert planned == {
        names["ACTIVE"]: "live",
        names["ACTIVE2"]: "live",
        names["PAUSED"]: "live",
        names["SHUTOFF"]: "cold",
        names["SUSPENDED"]: "blocked",
        names["ERROR"]: "blocked",
    }

    report = evac(prov, store, concurrency=2).run(NODE, "functional: disk errors")
    mine = _mine(report, set(names.values()))
    for state in ("ACTIVE", "ACTIVE2", "PAUSED", "SHUTOFF"):
        item = mine[names[state]]
        assert item["phase"] == "moved", item
        server = prov.describe(ids[state])
        assert server["host"] == item["dest"] != NODE
        assert server["status"] == state.rstrip("2")  # the state it had
    assert prov.migrations(ids["SHUTOFF"])[0]["status"] == "confirmed"
    assert prov.migrations(ids["ACTIVE"])[0]["status"] == "completed"
    for state in ("SUSPENDED", "ERROR"):
        assert mine[names[state]]["phase"] == "blocked"
        assert state in mine[names[state]]["comment"]
        assert prov.describe(ids[state])["host"] == NODE
    assert report["result"] is False  # two servers were left behind, and it says so
    remaining = {s["name"] for s in report["remaining"]}
    assert {names["SUSPENDED"], names["ERROR"]} <= remaining
    assert not remaining & {names[s] for s in ("ACTIVE", "ACTIVE2", "PAUSED", "SHUTOFF")}
    service = prov.service_show(NODE)
    assert service["status"] == "disabled"
    assert service["disabled_reason"].startswith("vmops-evacuate run=%s" % report["run"])
    assert service["disabled_reason"].endswith("functional: disk errors")

    enabled = evac(prov, store).enable(NODE)
    assert enabled["changed"] and prov.service_show(NODE)["status"] == "enabled"


def test_capacity_refused_with_numbers_before_anything_moves(
    prov, on_node, name, store, hog, restore_services
):
    ids = [on_node("%s-%d" % (name, i))["id"] for i in range(2)]
    hog(["cmp2", "cmp3"], leave_mb=32)  # m1.fake needs 64 MB of RAM
    with pytest.raises(InvalidInput) as err:
        evac(prov, store).run(NODE, "functional: capacity")
    message = str(err.value)
    assert "do not fit on cmp2, cmp3" in message and "MEMORY_MB" in message
    assert "cmp2: " in message and "nothing was changed" in message
    assert prov.service_show(NODE)["status"] == "enabled"
    assert all(prov.describe(i)["host"] == NODE for i in ids)
    assert all(prov.migrations(i) == [] for i in ids)
    plan = evac(prov, store).plan(NODE)
    assert plan["result"] is False and not plan["capacity"]["fits"]
    # force: it goes on, Nova's scheduler finds no room, each server is reported and stays
    report = evac(prov, store, force=True, retries=0).run(NODE, "functional: capacity, forced")
    assert report["warnings"] and report["result"] is False
    mine = [s for s in report["servers"] if s["id"] in ids]
    assert [s["phase"] for s in mine] == ["failed", "failed"]
    assert all(
        prov.describe(i)["host"] == NODE and prov.describe(i)["status"] == "ACTIVE" for i in ids
    )


def test_failed_and_stuck_migrations(prov, on_node, name, store, restore_services):
    flaky = on_node(name + "-flaky", metadata={"fakevm:migrate": "fail-once"})
    broken = on_node(name + "-broken", metadata={"fakevm:migrate": "fail"})
    stuck = on_node(name + "-stuck", metadata={"fakevm:migrate": "hang"})
    report = evac(prov, store, concurrency=3, retries=1, stall_seconds=3, on_timeout="abort").run(
        NODE, "functional: failures"
    )
    mine = _mine(report, {flaky["name"], broken["name"], stuck["name"]})
    assert mine[flaky["name"]]["phase"] == "moved" and mine[flaky["name"]]["attempts"] == 2
    assert mine[broken["name"]]["phase"] == "failed" and mine[broken["name"]]["attempts"] == 2
    assert mine[stuck["name"]]["phase"] == "failed"
    assert "no progress" in mine[stuck["name"]]["comment"]
    assert prov.migrations(stuck["id"])[0]["status"] == "cancelled"  # aborted for real
    for server in (broken, stuck):
        desc = prov.describe(server["id"])
        assert desc["host"] == NODE and desc["status"] == "ACTIVE"
    assert report["result"] is False

    # the stuck one again, force-completed this time: it moves
    report = evac(prov, store, stall_seconds=3, on_timeout="force_complete").run(
        NODE, "functional: force-complete"
    )
    item = _mine(report, {stuck["name"]})[stuck["name"]]
    assert item["phase"] == "moved" and "force-completed" in item["comment"], item
    assert prov.describe(stuck["id"])["host"] != NODE


def test_target_host_and_someone_elses_reason(prov, on_node, name, store, restore_services):
    server = on_node(name)
    prov.service_disable(NODE, "RMA ticket 42")
    report = evac(prov, store, target="cmp3").run(NODE, "functional: target")
    assert _mine(report, {name})[name]["dest"] == "cmp3"
    assert prov.describe(server["id"])["host"] == "cmp3"
    assert prov.service_show(NODE)["disabled_reason"] == "RMA ticket 42"
    assert report["prior_reason"] == "RMA ticket 42"
    with pytest.raises(InvalidInput, match="disabled by someone else"):
        evac(prov, store).enable(NODE)
    assert prov.service_show(NODE)["status"] == "disabled"


def test_bad_node_names_change_nothing(prov, store):
    for bad in ("cmp*", "cmp", "cmp1,cmp2"):
        with pytest.raises(Exception) as err:
            evac(prov, store).run(bad, "x")
        assert "nothing was changed" in str(err.value)
    assert prov.service_show(NODE)["status"] == "enabled"


def test_a_server_with_a_volume_keeps_it_and_an_invalid_token_is_survived(
    prov, os_conn, on_node, name, store, restore_services
):
    """A data volume stays attached through the live migration, and the run outlives its
    keystone token: mid-run the token the run holds stops being valid (Nova answers 401, as
    for an expired token) and keystoneauth re-authenticates and retries."""
    with_volume = on_node(name + "-vol")
    plain = on_node(name + "-plain")
    vol = prov.volume_create(name + "-data", 1)
    try:
        prov.volume_attach(with_volume["id"], vol["id"])
        state = {}

        def spoil_token_once(tag, message, **data):  # pylint: disable=unused-argument
            if tag.endswith("/started") and not state:
                auth_ref = os_conn.session.auth.get_auth_ref(os_conn.session)
                state["token"] = auth_ref.auth_token
                auth_ref._auth_token = "gAAAA-no-longer-valid"  # pylint: disable=protected-access

        ev = evac(prov, store, concurrency=2)
        ev.events = spoil_token_once
        report = ev.run(NODE, "functional: volume and token")
        assert state["token"]
        assert os_conn.session.get_token() not in (state["token"], "gAAAA-no-longer-valid")
        mine = _mine(report, {with_volume["name"], plain["name"]})
        assert all(item["phase"] == "moved" for item in mine.values()), mine
        assert prov.describe(with_volume["id"])["host"] != NODE
        attached = prov.volume_show(vol["id"])
        assert attached["status"] == "in-use"
        assert attached["attachments"][0]["server_id"] == with_volume["id"]
    finally:
        prov.volume_detach(with_volume["id"], vol["id"])
        prov.volume_delete(vol["id"])


def test_anti_affinity_group_with_no_free_host_is_refused(prov, os_conn, name, store, boot):
    """A hard anti-affinity group with a member on every host: evacuating one host would
    break it, so the run is refused before anything changes."""
    group = os_conn.compute.create_server_group(name=name, policy="anti-affinity")
    try:
        image = os_conn.image.find_image("fake-image")
        flavor = os_conn.compute.find_flavor("m1.fake")
        net = os_conn.network.find_network("private")
        members = []
        for host in ("cmp1", "cmp2", "cmp3"):
            server = os_conn.compute.create_server(
                name="%s-%s" % (name, host),
                image_id=image.id,
                flavor_id=flavor.id,
                networks=[{"uuid": net.id}],
                availability_zone="nova:%s" % host,
                scheduler_hints={"group": group.id},
            )
            members.append(os_conn.compute.wait_for_server(server, wait=120))
        with pytest.raises(InvalidInput, match="anti-affinity group %s.*no" % name):
            evac(prov, store).run(NODE, "functional: anti-affinity")
        assert prov.service_show(NODE)["status"] == "enabled"
        assert prov.describe(members[0].id)["host"] == NODE
        assert prov.migrations(members[0].id) == []
    finally:
        for server in os_conn.compute.servers(name="^%s-cmp" % name):
            os_conn.compute.delete_server(server)
            os_conn.compute.wait_for_delete(server, wait=120)
        os_conn.compute.delete_server_group(group)


def test_enable_node_moves_the_servers_back(prov, on_node, name, store, restore_services):
    live = on_node(name + "-live")
    report = evac(prov, store).run(NODE, "functional: and back")
    assert _mine(report, {live["name"]})[live["name"]]["phase"] == "moved"
    out = evac(prov, store).enable(NODE, migrate_back=True)
    assert out["changed"] and out["migrate_back"]["result"] is True, out
    back = {s["name"]: s for s in out["migrate_back"]["servers"]}
    assert back[live["name"]]["phase"] == "moved"
    assert prov.describe(live["id"])["host"] == NODE
    assert prov.service_show(NODE)["status"] == "enabled"
