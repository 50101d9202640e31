import pytest

from vmopslib.errors import InvalidInput, NotFound


@pytest.fixture
def restore_services(prov):
    yield
    for host in ("cmp1", "cmp2", "cmp3"):
        prov.service_enable(host)


def test_service_disable_enable_and_the_scheduler_avoids_it(prov, boot, name, restore_services):
    shown = prov.service_show("cmp1")
    assert shown["state"] == "up" and shown["status"] == "enabled"
    off = prov.service_disable("cmp1", "functional test: disk replacement")
    assert off["status"] == "disabled"
    assert off["disabled_reason"] == "functional test: disk replacement"
    hosts = [boot("%s-%d" % (name, i))["host"] for i in range(4)]
    assert "cmp1" not in hosts, hosts
    assert prov.service_enable("cmp1")["status"] == "enabled"
    assert {s["host"] for s in prov.service_list()} >= {"cmp1", "cmp2", "cmp3"}


def test_service_bad_input(prov):
    with pytest.raises(NotFound, match="no nova-compute service on host 'cmp9'.*cmp1, cmp2, cmp3"):
        prov.service_show("cmp9")
    with pytest.raises(InvalidInput, match="say why"):
        prov.service_disable("cmp1", "")


def test_host_servers_and_capacity(prov, boot, name):
    desc = boot(name)
    listed = prov.host_servers(desc["host"])
    assert desc["id"] in {s["id"] for s in listed}
    cap = prov.host_capacity(desc["host"])
    assert cap["VCPU"]["total"] == 1000 and cap["VCPU"]["used"] >= 1
    assert cap["MEMORY_MB"]["free"] == cap["MEMORY_MB"]["capacity"] - cap["MEMORY_MB"]["used"]
    assert cap["DISK_GB"]["allocation_ratio"] > 0
    with pytest.raises(NotFound, match="cmp9"):
        prov.host_servers("cmp9")


def _other(host):
    return {"cmp1": "cmp2", "cmp2": "cmp3", "cmp3": "cmp1"}[host]


def test_live_migration_changes_the_host(prov, boot, name):
    desc = boot(name)
    target = _other(desc["host"])
    moved = prov.live_migrate(name, host=target, timeout=120)
    assert moved["host"] == target and moved["status"] == "ACTIVE"
    migs = prov.migrations(name)
    assert migs[0]["type"] == "live-migration" and migs[0]["status"] == "completed"
    assert (migs[0]["source"], migs[0]["dest"]) == (desc["host"], target)
    # and once more, letting the scheduler choose
    again = prov.live_migrate(name, timeout=120)
    assert again["host"] != target


def test_cold_migration_is_confirmed(prov, boot, name):
    desc = boot(name)
    target = _other(desc["host"])
    moved = prov.cold_migrate(name, host=target, timeout=120)
    assert moved["host"] == target and moved["status"] == "ACTIVE"
    assert prov.migrations(name)[0]["status"] == "confirmed"


def test_migration_bad_input_changes_nothing(prov, boot, name, restore_services):
    desc = boot(name)
    with pytest.raises(NotFound, match="no nova-compute service on host 'cmp9'"):
        prov.live_migrate(name, host="cmp9")
    with pytest.raises(InvalidInput, match="already runs on"):
        prov.live_migrate(name, host=desc["host"])
    target = _other(desc["host"])
    prov.service_disable(target, "functional test")
    with pytest.raises(InvalidInput, match="target host %s is disabled" % target):
        prov.live_migrate(name, host=target)
    with pytest.raises(InvalidInput, match="target host %s is disabled" % target):
        prov.cold_migrate(name, host=target)
    with pytest.raises(InvalidInput, match="no migration in progress"):
        prov.migration_abort(name)
    with pytest.raises(InvalidInput, match="no migration in progress"):
        prov.migration_force_complete(name)
    assert prov.describe(name)["host"] == desc["host"]
    assert prov.migrations(name) == []


def test_force_down_marks_a_dead_host_down_and_back(prov):
    try:
        down = prov.service_force_down("cmp3")
        assert down["forced_down"] is True and down["state"] == "down"
    finally:
        back = prov.service_force_down("cmp3", forced=False)
    assert back["forced_down"] is False
    with pytest.raises(NotFound, match="cmp9"):
        prov.service_force_down("cmp9")


def test_a_disabled_service_gets_a_new_reason(prov, restore_services):
    prov.service_disable("cmp2", "first reason")
    again = prov.service_disable("cmp2", "second reason")
    assert again["status"] == "disabled" and again["disabled_reason"] == "second reason"
