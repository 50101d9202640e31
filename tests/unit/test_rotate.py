"""The rotation's decisions (orch.rotate): selection, batches, capacity, stop on failure,
resume.  The real thing (replacements by orch.replace_vm on the local cloud, by real
daemons) is tests/integration/test_rotate.py."""

import threading

import pytest

from vmopslib.errors import InvalidInput
from vmopslib.rotate import Rotation, batch_size, run_key
from vmopslib.store import JournalStore


class Cloud:
    name = "local"

    def __init__(self, names, quota=None):
        self.servers = {n: [{"id": "old-" + n, "flavor": "m1.small"}] for n in names}
        self.quota = quota or {"instances": 100, "cores": 100, "ram_mb": 100000}

    def servers_named(self, name, brief=False):
        return self.servers.get(name, [])

    def flavor_size(self, flavor):
        return {"vcpus": 1, "ram_mb": 512}

    def headroom(self):
        return dict(self.quota)


class World:
    """Replacements that end as told (``fail``: VM -> rolled_back | failed), journals as
    replace_vm keeps them."""

    def __init__(self, tmp_path, names, fail=None, quota=None, matched=None):
        self.cloud = Cloud(names, quota)
        self.store = JournalStore(str(tmp_path / "rotate"), "rotation")
        self.fail = dict(fail or {})
        self.launched, self.events, self.journals = [], [], {}
        self.matched = matched if matched is not None else list(names)
        self.running, self.peak = 0, 0
        self.lock = threading.Lock()

    def launch(self, vm):
        with self.lock:
            self.launched.append(vm)
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            old = self.cloud.servers[vm][0]["id"]
            state = self.fail.get(vm, "done")
            steps = [("highstate", False, 1, "highstate failed")] if state != "done" else []
            self.journals[vm] = {"old": old, "new": "new-" + vm, "state": state, "steps": steps}
            if state == "done":
                self.cloud.servers[vm] = [{"id": "new-" + vm, "flavor": "m1.small"}]
        finally:
            with self.lock:
                self.running -= 1

    def rotation(self, **options):
        return Rotation(
            self.cloud,
            self.store,
            lambda tgt, kind: list(self.matched),
            lambda vm: "would replace %s" % vm,
            self.launch,
            self.journals.get,
            events=lambda tag, msg, **data: self.events.append((tag, data)),
            options=options,
        )


def test_batch_sizes():
    assert batch_size(2, 10) == 2
    assert batch_size("25%", 10) == 3  # rounded up: never a batch of nothing
    assert batch_size("1%", 3) == 1
    for bad in (0, "0%", "150%", "two", True, -1, "2.5"):
        with pytest.raises(InvalidInput, match="nothing was changed"):
            batch_size(bad, 10)


def test_the_plan_shows_batches_the_unknown_and_the_peak(tmp_path):
    world = World(tmp_path, ["app1", "app2", "app3"], matched=["app1", "app2", "app3", "db9"])
    plan = world.rotation(target="app*", batch=2).plan()
    assert plan["result"] is None and plan["batches"] == [["app1", "app2"], ["app3"]]
    assert "no server named db9" in plan["unknown"]["db9"]
    assert plan["capacity"]["peak"] == {"servers": 2, "cores": 2, "ram_mb": 1024}
    assert "not rotated" in plan["comment"] and "db9" in plan["comment"]
    assert not world.launched and world.store.load(plan["key"]) is None


def test_a_quota_that_cannot_hold_the_peak_is_refused_before_anything(tmp_path):
    world = World(tmp_path, ["a1", "a2", "a3"], quota={"instances": 1, "cores": 8})
    rotation = world.rotation(vms=["a1", "a2", "a3"], batch=2)
    assert "instances: 2 needed at the peak, 1 free" in rotation.plan()["comment"]
    with pytest.raises(InvalidInput, match="quota will not hold 2 extra"):
        rotation.run()
    assert not world.launched
    assert world.rotation(vms=["a1", "a2", "a3"], batch=1).plan()["problems"] == []


def test_a_vm_whose_own_plan_is_refused_refuses_the_whole_run(tmp_path):
    world = World(tmp_path, ["a1", "a2"])
    rotation = world.rotation(vms="a1,a2")

    def check(vm):
        if vm == "a2":
            raise InvalidInput("flavor nope: no such flavor")
        return "ok"

    rotation.check = check
    with pytest.raises(InvalidInput, match="a2: flavor nope"):
        rotation.run()
    assert not world.launched


def test_batches_run_together_and_in_order(tmp_path):
    names = ["v%d" % i for i in range(5)]
    world = World(tmp_path, names)
    report = world.rotation(vms=names, batch=2).run()
    assert report["result"] is True and report["done"] == names
    assert world.launched[:2] == sorted(world.launched[:2]) and set(world.launched[:2]) == {
        "v0",
        "v1",
    }
    assert world.peak <= 2
    whats = [tag.split("/")[-1] for tag, _ in world.events]
    assert whats.count("batch") == 3 and whats[-1] == "done"


def test_the_first_failure_stops_the_run_and_a_rerun_resumes(tmp_path):
    names = ["v1", "v2", "v3", "v4"]
    world = World(tmp_path, names, fail={"v2": "rolled_back"})
    report = world.rotation(vms=names, batch=2).run()
    assert report["result"] is False and report["state"] == "stopped"
    assert report["done"] == ["v1"] and report["rolled_back"] == ["v2"]
    assert report["untouched"] == ["v3", "v4"]
    assert "highstate failed" in report["vms"]["v2"]["comment"]
    assert "re-run the same command to resume" in report["comment"]
    run = report["run"]
    # fixed, re-run: v1 is not replaced again, v2 is retried, the rest follow
    world.fail.clear()
    world.launched.clear()
    again = world.rotation(vms=names, batch=2).run()
    assert again["result"] is True and again["run"] == run
    assert sorted(world.launched) == ["v2", "v3", "v4"]
    assert any(tag.endswith("/resume") for tag, _ in world.events)


def test_max_failures_lets_later_batches_run(tmp_path):
    names = ["v1", "v2", "v3"]
    world = World(tmp_path, names, fail={"v1": "failed"})
    report = world.rotation(vms=names, batch=1, max_failures=1).run()
    assert report["done"] == ["v2", "v3"] and report["failed"] == ["v1"]
    assert report["result"] is False and report["state"] == "partial"


def test_a_run_killed_after_a_replacement_finished_does_not_replace_it_again(tmp_path):
    names = ["v1", "v2"]
    world = World(tmp_path, names)
    rotation = world.rotation(vms=names, batch=1)
    plan = rotation.plan()
    # the journal as a killed run leaves it: v1 "running", its replacement in fact done
    record = {
        "key": plan["key"],
        "run": "r1",
        "cloud": "local",
        "started": 0,
        "state": "running",
        "batches": plan["batches"],
        "options": {"max_failures": 0},
        "vms": {
            n: {"state": "pending", "old": "old-" + n, "batch": i + 1} for i, n in enumerate(names)
        },
    }
    record["vms"]["v1"]["state"] = "running"
    world.store.save(plan["key"], record)
    world.journals["v1"] = {"old": "old-v1", "new": "new-v1", "state": "done", "steps": []}
    report = rotation.run()
    assert report["result"] is True and world.launched == ["v2"]


def test_a_target_matching_nothing_is_a_clear_error(tmp_path):
    world = World(tmp_path, [], matched=[])
    with pytest.raises(InvalidInput, match="matches no minion"):
        world.rotation(target="G@role:nothing", tgt_type="compound").plan()
    with pytest.raises(InvalidInput, match="either target"):
        world.rotation().plan()
    with pytest.raises(InvalidInput, match="tgt_type"):
        world.rotation(target="x", tgt_type="bogus")


def test_the_run_key_is_the_selection():
    assert run_key("c", ["b", "a"]) == run_key("c", ["a", "b"]) != run_key("d", ["a", "b"])


def test_ec2_headroom_is_max_instances_less_the_instances_that_exist():
    """moto in-process (the real thing, moto's server, is in the integration tier)."""
    boto3 = pytest.importorskip("boto3")
    moto = pytest.importorskip("moto")
    from vmopslib.ec2 import EC2Provider

    with moto.mock_aws():
        client = boto3.client("ec2", region_name="us-east-1")
        image = client.describe_images()["Images"][0]["ImageId"]
        client.run_instances(ImageId=image, MinCount=3, MaxCount=3, InstanceType="t3.micro")
        prov = EC2Provider({"name": "aws", "driver": "ec2", "region_name": "us-east-1"}, client)
        assert prov.headroom() == {"instances": 17, "cores": None, "ram_mb": None}
        assert prov.flavor_size("t3.micro") == {"vcpus": 2, "ram_mb": 1024}
