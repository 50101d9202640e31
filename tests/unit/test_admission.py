"""The admission decision's edge cases, against a fake cloud and fake master keys.

The real thing (a master running the reactor, the local cloud, real minions)
is tests/integration/test_reactor.py; this covers every refusal reason.
"""

import datetime

import pytest

from vmopslib import admission, config, identity
from vmopslib.errors import InvalidInput, VmopsError
from vmopslib.registry import NONCE_KEY, Registry

NOW = 1_800_000_000.0
KEY_A = identity.generate_keypair()[0]
KEY_B = identity.generate_keypair()[0]


def iso(epoch):
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


class FakeCloud:
    def __init__(self, name="local"):
        self.name = name
        self.servers = []
        self.consoles = {}

    def add(self, name, status="ACTIVE", created=NOW, metadata=None, console_key=None):
        sid = "srv-%d" % len(self.servers)
        self.servers.append(
            {
                "id": sid,
                "name": name,
                "status": status,
                "created": iso(created),
                "metadata": dict(metadata or {}),
            }
        )
        if console_key:
            self.consoles[sid] = "boot\n%s%s\n" % (
                identity.FINGERPRINT_LINE,
                identity.fingerprint(console_key),
            )
        return sid

    def servers_named(self, name, brief=False):
        return [dict(s) for s in self.servers if s["name"] == name]

    def console_output(self, server_id):
        return self.consoles.get(server_id, "")


class FakeKeys:
    def __init__(self):
        self.keys = {}  # id -> (state, pub)
        self.denied = {}  # id -> [pub]: keys Salt denied because another one held the id
        self.calls = []

    def status(self, minion_id):
        return self.keys.get(minion_id, (None,))[0]

    def pending_pub(self, minion_id):
        state, pub = self.keys.get(minion_id, (None, None))
        return pub if state == "pending" else None

    def accepted_pub(self, minion_id):
        state, pub = self.keys.get(minion_id, (None, None))
        return pub if state == "accepted" else None

    def accept(self, minion_id):
        self.calls.append(("accept", minion_id))
        self.keys[minion_id] = ("accepted", self.keys[minion_id][1])

    def reject(self, minion_id):
        self.calls.append(("reject", minion_id))
        self.keys[minion_id] = ("rejected", self.keys[minion_id][1])

    def delete(self, minion_id, rotate=True):
        self.calls.append(("delete", minion_id))
        self.keys.pop(minion_id, None)
        self.denied.pop(minion_id, None)

    def denied_pubs(self, minion_id):
        return list(self.denied.get(minion_id, []))

    def preseed(self, minion_id, pub, rotate=True, settle=1.5):
        self.calls.append(("preseed", minion_id))
        self.denied.pop(minion_id, None)
        self.keys[minion_id] = ("accepted", pub)


class Events(list):
    def __call__(self, tag, message, **data):
        self.append((tag, message, data))


@pytest.fixture
def world(tmp_path):
    class World:
        cloud = FakeCloud()
        aws = FakeCloud("aws")
        keys = FakeKeys()
        registry = Registry(str(tmp_path / "expected"))
        events = Events()
        conf = {
            "default_cloud": "local",
            "clouds": {"local": {}, "aws": {}},
            "reactor": {},
            "autoprovision": {},
        }

        def decide(self, name, now=NOW + 10):
            clouds = {"local": self.cloud, "aws": self.aws, None: self.cloud}
            return admission.decide(
                self.conf, self.keys, self.registry, clouds.__getitem__, name, self.events, now=now
            )

    return World()


def _register(world, name, now=NOW - 5, **kw):
    return world.registry.expect(name, "local", "vmops.create", 600, now=now, **kw)


def test_registered_vm_with_nonce_and_console_key_is_accepted_once(world):
    entry = _register(world, "app2", level="staging")
    world.cloud.add("app2", metadata={NONCE_KEY: entry["nonce"]}, console_key=KEY_A)
    world.keys.keys["app2"] = ("pending", KEY_A)
    ret = world.decide("app2")
    assert ret["accepted"] and ret["action"] == "accepted", ret
    assert world.keys.calls == [("preseed", "app2")]  # exactly the vouched key
    assert world.registry.get("app2")["state"] == "accepted"
    assert world.events[-1][0] == "key/app2/accepted"
    # the registration is used up: a new pending key for the same id is refused
    world.keys.keys["app2"] = ("pending", KEY_B)
    ret = world.decide("app2")
    assert not ret["accepted"] and "not expected" in ret["reason"], ret


@pytest.mark.parametrize(
    "case, reason",
    [
        ("no-server", "no server named app2"),
        ("wrong-nonce", "does not carry the nonce"),
        ("created-before", "before vmops.create registered it"),
        ("other-key-on-console", "is not the one server"),
        ("two-servers", "2 servers are named app2"),
        ("expired", "expired"),
    ],
)
def test_registration_refusals_name_the_reason(world, case, reason):
    entry = _register(world, "app2")
    nonce = entry["nonce"] if case != "wrong-nonce" else "0" * 32
    created = NOW - 3600 if case == "created-before" else NOW
    if case != "no-server":
        world.cloud.add(
            "app2",
            created=created,
            metadata={NONCE_KEY: nonce},
            console_key=KEY_B if case == "other-key-on-console" else KEY_A,
        )
    if case == "two-servers":
        world.cloud.add("app2", metadata={NONCE_KEY: nonce}, console_key=KEY_A)
    world.keys.keys["app2"] = ("pending", KEY_A)
    ret = world.decide("app2", now=NOW + (700 if case == "expired" else 10))
    assert ret["result"] is False and not ret["accepted"], ret
    assert reason in ret["reason"], ret
    assert ret["action"] == "pending" and ("accept", "app2") not in world.keys.calls
    tag, _, data = world.events[-1]
    assert tag == "key/app2/refused" and reason in data["reason"]


def test_a_vm_still_booting_stays_pending_even_when_refusals_reject(world):
    world.conf["reactor"] = {"on_refused": "reject"}
    entry = _register(world, "app2")
    sid = world.cloud.add("app2", status="BUILD", metadata={NONCE_KEY: entry["nonce"]})
    world.keys.keys["app2"] = ("pending", KEY_A)
    ret = world.decide("app2")
    assert ret["transient"] and ret["action"] == "pending", ret
    # ACTIVE, but cloud-init has not printed the fingerprint yet: still transient
    world.cloud.servers[0]["status"] = "ACTIVE"
    ret = world.decide("app2")
    assert ret["transient"] and "no minion key fingerprint" in ret["reason"], ret
    assert world.keys.calls == []
    world.cloud.consoles[sid] = identity.FINGERPRINT_LINE + identity.fingerprint(KEY_A)
    assert world.decide("app2")["accepted"]


def test_definitive_refusal_rejects_when_configured_and_is_remembered(world):
    world.conf["reactor"] = {"on_refused": "reject"}
    world.keys.keys["rogue"] = ("pending", KEY_A)
    ret = world.decide("rogue")
    assert ret["action"] == "rejected" and "not expected" in ret["reason"], ret
    assert world.keys.calls == [("reject", "rogue")]
    # remembered: the gate drops the same key's next attempts without a runner
    assert world.registry.refusal("rogue", identity.fingerprint(KEY_A), NOW + 20)
    assert not admission.gate(
        world.conf,
        world.registry,
        "salt/auth",
        {"act": "pend", "id": "rogue", "pub": KEY_A},
        world.events,
        throttle=admission.Throttle(),
        now=NOW + 20,
    )


def test_preseeded_ids_never_take_a_pending_key(world):
    world.registry.expect(
        "app2", "local", "replace_vm", 600, state="preseeded", provision=False, now=NOW
    )
    world.cloud.add("app2", console_key=KEY_A)
    world.keys.keys["app2"] = ("pending", KEY_A)
    ret = world.decide("app2")
    assert "handed over by replace_vm" in ret["reason"], ret


def _rules(world):
    world.conf["autoprovision"] = {
        "web": {
            "cloud": "local",
            "metadata": {"vmops-autoprovision": "web"},
            "minion_id": "web-[0-9a-f]+",
            "max_age": 600,
            "level": "staging",
        },
        "ec2web": {
            "cloud": "aws",
            "metadata": {"vmops-autoprovision": "web"},
            "minion_id": "ec2web-[0-9a-f]+",
            "max_age": 600,
        },
    }


def test_auto_provisioning_rule_admits_a_marked_young_server_once(world):
    _rules(world)
    sid = world.cloud.add("web-1a", metadata={"vmops-autoprovision": "web"}, console_key=KEY_A)
    world.keys.keys["web-1a"] = ("pending", KEY_A)
    ret = world.decide("web-1a")
    assert ret["accepted"] and "auto-provisioning rule web" in ret["reason"], ret
    entry = world.registry.get("web-1a")
    assert entry["source"] == "autoprovision:web" and entry["server_id"] == sid
    assert entry["provision"] is True and entry["level"] == "staging"
    # the same server does not get a second key in
    world.keys.keys["web-1a"] = ("pending", KEY_B)
    world.cloud.consoles[sid] += identity.FINGERPRINT_LINE + identity.fingerprint(KEY_B) + "\n"
    ret = world.decide("web-1a")
    assert "admitted once already" in ret["reason"], ret


@pytest.mark.parametrize(
    "case, reason",
    [
        ("no-marker", "no auto-provisioning rule matches"),
        ("wrong-marker", "no auto-provisioning rule matches"),
        ("too-old", "max_age"),
        ("id-pattern", "no auto-provisioning rule matches"),
    ],
)
def test_auto_provisioning_refusals(world, case, reason):
    _rules(world)
    name = "db-1" if case == "id-pattern" else "web-2b"
    metadata = {"no-marker": {}, "wrong-marker": {"vmops-autoprovision": "db"}}.get(
        case, {"vmops-autoprovision": "web"}
    )
    world.cloud.add(
        name, metadata=metadata, console_key=KEY_A, created=NOW - 3600 if case == "too-old" else NOW
    )
    world.keys.keys[name] = ("pending", KEY_A)
    ret = world.decide(name)
    assert not ret["accepted"] and reason in ret["reason"], ret


def test_auto_provisioning_on_two_clouds_at_once_is_ambiguous(world):
    _rules(world)
    world.conf["autoprovision"]["ec2web"]["minion_id"] = "web-[0-9a-z]+"  # both rules match
    world.cloud.add("web-3c", metadata={"vmops-autoprovision": "web"}, console_key=KEY_A)
    world.aws.add("web-3c", metadata={"vmops-autoprovision": "web"}, console_key=KEY_A)
    world.keys.keys["web-3c"] = ("pending", KEY_A)
    ret = world.decide("web-3c")
    assert "several clouds (aws, local)" in ret["reason"], ret


@pytest.mark.parametrize("bad", ["*", "app*", "[ab]pp2", "app?", "a,b", "L@app2", "app 2"])
def test_gate_drops_and_audits_ids_with_matcher_characters(world, bad):
    throttle, audit = admission.Throttle(), admission.Throttle()
    data = {"act": "pend", "id": bad, "pub": KEY_A}
    assert (
        admission.gate(
            world.conf,
            world.registry,
            "salt/auth",
            data,
            world.events,
            throttle=throttle,
            now=NOW,
            audit=audit,
        )
        is False
    )
    assert world.events[-1][0] == "key/_invalid_/refused" and world.events[-1][2]["minion"] == bad
    # audited once, not on every retry
    admission.gate(
        world.conf, world.registry, "salt/auth", data, world.events, throttle=throttle, audit=audit
    )
    assert len(world.events) == 1
    with pytest.raises(InvalidInput):
        world.decide(bad)


def test_gate_throttles_per_id_and_overall():
    throttle = admission.Throttle()
    assert throttle.allow("a", 3, 0, now=100)
    assert not throttle.allow("a", 3, 0, now=101)
    assert throttle.allow("a", 3, 0, now=103.5)
    budget = admission.Throttle()
    allowed = [budget.allow("m%d" % i, 3, 5, now=200 + i / 10) for i in range(10)]
    assert allowed == [True] * 5 + [False] * 5
    assert budget.allow("late", 3, 5, now=261)


def test_gate_only_lets_pending_auth_and_admitted_starts_through(world):
    def gate(tag, data):
        return admission.gate(
            world.conf, world.registry, tag, data, world.events, throttle=admission.Throttle()
        )

    assert not gate("salt/auth", {"act": "accept", "id": "app2"})
    assert not gate("salt/auth", {"act": "reject", "id": "app2"})
    # an id nothing could admit (no registration, no rule) gets no decision at all
    assert not gate("salt/auth", {"act": "pend", "id": "app2", "pub": KEY_A})
    _register(world, "app2")
    _register(world, "app3")
    assert gate("salt/auth", {"act": "pend", "id": "app2", "pub": KEY_A})
    # a key Salt denied because another one holds the id pending: a decision too
    assert gate("salt/auth", {"act": "denied", "id": "app3", "pub": KEY_B})
    # start: only a minion admitted with provisioning, only once, only its own start tag
    assert not gate("salt/minion/app2/start", {"id": "app2"})
    world.registry.update("app2", state="accepted")
    assert not gate("salt/minion/app3/start", {"id": "app2"})
    assert gate("salt/minion/app2/start", {"id": "app2"})
    assert world.registry.get("app2")["state"] == "provisioning"
    assert not gate("salt/minion/app2/start", {"id": "app2"})
    _register(world, "app4", provision=False)
    world.registry.update("app4", state="accepted")
    assert not gate("salt/minion/app4/start", {"id": "app4"})


def test_a_key_that_changes_during_the_decision_is_never_the_one_accepted(world):
    entry = _register(world, "app2")
    world.cloud.add("app2", metadata={NONCE_KEY: entry["nonce"]}, console_key=KEY_A)
    world.keys.keys["app2"] = ("pending", KEY_A)
    real_preseed = world.keys.preseed

    def swap_then_write(minion_id, pub, rotate=True):
        world.keys.keys[minion_id] = ("pending", KEY_B)  # a rogue's key lands meanwhile
        real_preseed(minion_id, pub, rotate)

    world.keys.preseed = swap_then_write
    ret = world.decide("app2")
    assert ret["accepted"], ret
    assert world.keys.keys["app2"] == ("accepted", KEY_A)  # the vouched key, not the rogue's


def test_a_key_store_that_keeps_replacing_the_key_undoes_the_admission(world):
    entry = _register(world, "app2")
    world.cloud.add("app2", metadata={NONCE_KEY: entry["nonce"]}, console_key=KEY_A)
    world.keys.keys["app2"] = ("pending", KEY_A)

    def keeps_losing(minion_id, pub, rotate=True):
        raise VmopsError("the key of app2 keeps being replaced (now pending)")

    world.keys.preseed = keeps_losing
    ret = world.decide("app2")
    assert not ret["accepted"] and "keeps being replaced" in ret["reason"], ret
    assert world.keys.status("app2") is None
    assert world.registry.get("app2")["state"] == "failed"


def test_bad_reactor_settings_and_rules_are_clear_errors():
    with pytest.raises(Exception, match="on_refused must be"):
        config.reactor({"reactor": {"on_refused": "delete"}})
    with pytest.raises(Exception, match="opt-in marker"):
        config.autoprovision_rules({"autoprovision": {"web": {"cloud": "local"}}})
    with pytest.raises(Exception, match="not a regular expression"):
        config.autoprovision_rules(
            {"autoprovision": {"web": {"metadata": {"a": 1}, "minion_id": "("}}}
        )


def test_only_one_decision_per_id_runs_at_a_time(world):
    entry = _register(world, "app2")
    world.cloud.add("app2", metadata={NONCE_KEY: entry["nonce"]}, console_key=KEY_A)
    world.keys.keys["app2"] = ("pending", KEY_A)
    with world.registry.deciding("app2") as mine:
        assert mine
        ret = world.decide("app2")
    assert ret["action"] is None and "another decision" in ret["reason"], ret
    assert world.keys.calls == [] and world.events == []
    assert world.decide("app2")["accepted"]


def test_a_rogue_holding_the_id_pending_does_not_block_the_vouched_vm(world):
    entry = _register(world, "app2")
    world.keys.keys["app2"] = ("pending", KEY_B)  # the rogue came first
    ret = world.decide("app2")
    assert not ret["accepted"] and "no server named app2" in ret["reason"]
    # the real VM boots; Salt denies its key (another one is pending under its id)
    world.cloud.add("app2", metadata={NONCE_KEY: entry["nonce"]}, console_key=KEY_A)
    world.keys.denied["app2"] = [KEY_A]
    ret = world.decide("app2")
    assert ret["accepted"] and "replaces a pending key" in ret["reason"], ret
    assert world.keys.keys["app2"] == ("accepted", KEY_A)
    assert ("preseed", "app2") in world.keys.calls and ("accept", "app2") not in world.keys.calls


def test_a_denied_key_never_replaces_an_accepted_one(world):
    entry = _register(world, "app2")
    world.cloud.add("app2", metadata={NONCE_KEY: entry["nonce"]}, console_key=KEY_A)
    world.keys.keys["app2"] = ("accepted", KEY_A)
    world.keys.denied["app2"] = [KEY_B]
    ret = world.decide("app2")
    assert not ret["accepted"] and world.keys.keys["app2"] == ("accepted", KEY_A)
    tag, _, data = world.events[-1]
    assert tag == "key/app2/refused" and "already accepted" in data["reason"]
    assert data["action"] == "denied" and world.keys.calls == []
    # remembered: the rogue's next attempts cost nothing
    assert world.registry.refusal("app2", identity.fingerprint(KEY_B), NOW + 20)


def test_a_flood_of_junk_costs_nothing_and_a_registered_vm_still_gets_its_decision(world):
    """500 auth events for ids nothing could admit, then 200 for ids that merely match a rule:
    the decision budget goes to the rule-matching ones only, the audit stays capped,
    the per-id table stays bounded, and a VM the pack registered is decided at once."""
    _rules(world)
    world.conf["reactor"] = {"max_decisions_per_minute": 50}
    throttle, audit = admission.Throttle(max_ids=128), admission.Throttle()

    def gate(minion_id, now):
        return admission.gate(
            world.conf,
            world.registry,
            "salt/auth",
            {"act": "pend", "id": minion_id, "pub": KEY_A},
            world.events,
            throttle=throttle,
            now=now,
            audit=audit,
        )

    assert not any(gate("junk-%04d" % i, NOW) for i in range(500))
    assert not any(gate(bad, NOW) for bad in ("*", "app*", "[x]y") * 100)
    # no decision budget used; the audit is capped too
    assert len(world.events) <= admission.AUDITS_PER_MINUTE and not throttle.recent
    passed = sum(gate("web-%04x" % i, NOW) for i in range(200))
    assert passed == 50  # the budget caps what merely matches a rule's pattern...
    assert len(throttle.last) <= 128  # ...and the table stays bounded
    _register(world, "app9")
    assert gate("app9", NOW)  # ...but a registered VM is not starved by it


def test_a_start_before_the_minion_answers_rearms_provisioning(world):
    """Any minion can fire salt/minion/<id>/start: an early or forged start must not use up
    the admission's provisioning."""
    _register(world, "app2", level="staging")
    world.registry.update("app2", state="provisioning")

    def silent(name, timeout):
        raise VmopsError("minion %s did not answer" % name)

    with pytest.raises(VmopsError, match="early or forged start"):
        admission.provision_check(world.conf, world.registry, "app2", silent, None)
    assert world.registry.get("app2")["state"] == "accepted"
    out = admission.provision_done(world.registry, "app2", False, world.events)
    assert out["state"] == "accepted" and world.events[-1][0] == "provision/app2/rearmed"
    # the real start later provisions it
    assert admission.gate(
        world.conf,
        world.registry,
        "salt/minion/app2/start",
        {"id": "app2"},
        world.events,
        throttle=admission.Throttle(),
    )
    assert world.registry.get("app2")["state"] == "provisioning"
    # re-armed a few times at most, then it counts as failed
    world.registry.update("app2", rearmed=admission.REARM_LIMIT)
    with pytest.raises(VmopsError):
        admission.provision_check(world.conf, world.registry, "app2", silent, None)
    assert (
        admission.provision_done(world.registry, "app2", False, world.events)["state"] == "failed"
    )


def test_a_rule_or_the_reactor_setting_names_the_provisioning_orchestration(world):
    """Provisioning is the runner vmops.provision_minion unless the admitting rule (or
    vmops:reactor:provision_orchestration) names an orchestration; a bad name is refused."""
    _rules(world)
    world.conf["autoprovision"]["web"]["orchestration"] = "orch.provision_minion"
    world.cloud.add("web-1a", metadata={"vmops-autoprovision": "web"}, console_key=KEY_A)
    world.keys.keys["web-1a"] = ("pending", KEY_A)
    assert world.decide("web-1a")["accepted"]
    lookup = admission.provision_orchestration
    assert lookup(world.conf, world.registry, "web-1a") == "orch.provision_minion"
    assert lookup(world.conf, world.registry, "other") is None  # the runner
    world.conf["reactor"]["provision_orchestration"] = "orch.mine"
    assert lookup(world.conf, world.registry, "other") == "orch.mine"
    world.conf["autoprovision"]["web"]["orchestration"] = ["not", "a", "name"]
    with pytest.raises(InvalidInput, match="web:orchestration"):
        config.autoprovision_rules(world.conf)
