"""The identity hand-over and the one admission decision, against fakes (the real proofs
are tests/integration/test_trust.py and test_reactor.py)."""

import base64

import pytest

from tests.unit.test_admission import NOW, Events, FakeCloud, FakeKeys
from vmopslib import admission, identity, replace, saltglue, trust
from vmopslib.errors import CloudError, InvalidInput
from vmopslib.registry import NONCE_KEY, Registry

KEY_A = identity.generate_keypair(bits=1024)[0]
KEY_R = identity.generate_keypair(bits=1024)[0]


def _console_key(tag, pem):
    return "%s%s]: %s\n" % (identity.PUBKEY_MARKER, tag, base64.b64encode(pem.encode()).decode())


# ------------------------------------------------------------------ the operator's accept


def test_the_operator_accept_refuses_an_id_the_pack_hands_over_itself(tmp_path):
    cloud, keys, registry = FakeCloud(), FakeKeys(), Registry(str(tmp_path))
    registry.expect("app2", "local", "replace_vm", 600, state="preseeded", now=NOW)
    cloud.add("app2", console_key=KEY_R)
    keys.keys["app2"] = ("pending", KEY_R)
    adm = admission.Admission({}, keys, registry, None, Events(), now=NOW + 5, operator=cloud)
    with pytest.raises(InvalidInput, match="handed over by replace_vm itself"):
        adm.accept("app2")
    assert keys.calls == []


def test_the_operator_accept_takes_the_vouched_denied_key_over_a_rogues_pending_one(tmp_path):
    cloud, keys, registry = FakeCloud(), FakeKeys(), Registry(str(tmp_path))
    cloud.add("app2", console_key=KEY_A)
    keys.keys["app2"] = ("pending", KEY_R)
    keys.denied["app2"] = [KEY_A]
    events = Events()
    out = admission.Admission({}, keys, registry, None, events, now=NOW, operator=cloud).accept(
        "app2"
    )
    assert out["accepted"] and "replaces a pending key" in out["reason"]
    assert keys.keys["app2"] == ("accepted", KEY_A) and keys.calls == [("preseed", "app2")]
    assert events[-1][0] == "key/app2/accepted"
    # an operator's refusal is not remembered: the reactor may still decide later
    assert registry.refusal("app2", identity.fingerprint(KEY_R), NOW) is None


def test_a_registered_vm_console_key_wins_over_any_number_of_rogue_keys(tmp_path):
    cloud, keys, registry = FakeCloud(), FakeKeys(), Registry(str(tmp_path))
    entry = registry.expect("app2", "local", "vmops.create", 600, now=NOW - 5)
    sid = cloud.add("app2", metadata={NONCE_KEY: entry["nonce"]})
    cloud.consoles[sid] = _console_key(entry["nonce"], KEY_A)
    keys.keys["app2"] = ("pending", KEY_R)
    keys.denied["app2"] = [identity.generate_keypair(bits=1024)[0] for _ in range(5)]
    out = admission.decide({}, keys, registry, lambda cloud_name: cloud, "app2", Events(), now=NOW)
    assert out["accepted"], out
    assert keys.keys["app2"] == ("accepted", KEY_A) and not keys.denied.get("app2")
    assert registry.get("app2")["state"] == "accepted"
    # the registration is used up: a second decision changes nothing
    keys.keys["app2"] = ("pending", KEY_R)
    again = admission.decide(
        {}, keys, registry, lambda cloud_name: cloud, "app2", Events(), now=NOW + 1
    )
    assert not again["accepted"]


# ------------------------------------------------------------------ registry transitions


def test_registry_transitions_check_where_they_start(tmp_path):
    registry = Registry(str(tmp_path))
    registry.expect("app2", "local", "vmops.create", 600, provision=True, now=NOW)
    assert registry.start_provisioning("app2") is None  # not admitted yet
    assert registry.admit("app2", "srv", "fp", NOW)["state"] == "accepted"
    assert registry.admit("app2", "srv2", "fp2", NOW) is None  # used up
    assert registry.start_provisioning("app2")["state"] == "provisioning"
    assert registry.start_provisioning("app2") is None  # once
    assert registry.rearm("app2", limit=1) == 1
    assert registry.get("app2")["state"] == "accepted"
    registry.start_provisioning("app2")
    assert registry.rearm("app2", limit=1) is None  # limit used up
    assert registry.finish_provisioning("app2", False)["state"] == "failed"


# ------------------------------------------------------------------ keys in place


class FakeCache:
    def __init__(self):
        self.banks = {"keys": {}, "denied_keys": {}}
        self.stores = 0
        self.hijack = 0  # how many reads see someone else's pending key

    def fetch(self, bank, key):
        if bank == "keys" and self.hijack and self.stores:  # right after our write
            self.hijack -= 1
            self.banks["keys"][key] = {"state": "pending", "pub": KEY_R}
        return self.banks[bank].get(key)

    def store(self, bank, key, data):
        self.stores += 1
        self.banks[bank][key] = data

    def flush(self, bank, key):
        self.banks[bank].pop(key, None)


def _keys(tmp_path, cache):
    keys = saltglue.MasterKeys.__new__(saltglue.MasterKeys)
    keys.opts = {"cachedir": str(tmp_path), "loop_interval": 1, "id": "m", "user": None}
    keys.cache = cache

    class Key:
        class event:  # noqa: N801
            @staticmethod
            def fire_event(data, tag):
                pass

    keys.key = Key
    return keys


def test_a_key_written_over_by_an_authenticating_minion_is_asserted_again(tmp_path, monkeypatch):
    monkeypatch.setattr(saltglue.time, "sleep", lambda s: None)
    cache = FakeCache()
    cache.banks["keys"]["app2"] = {"state": "accepted", "pub": KEY_R}
    keys = _keys(tmp_path, cache)
    monkeypatch.setattr(keys, "request_rotation", lambda: open(keys._dropfile(), "w").close())
    cache.hijack = 1  # the auth handler writes its pending key right after ours
    assert keys.preseed("app2", KEY_A, rotate=True) is True
    assert cache.banks["keys"]["app2"] == {"state": "accepted", "pub": KEY_A}
    assert keys.rotation_pending()


def test_the_handover_waits_for_the_rotation_it_asked_for(tmp_path, monkeypatch):
    cache = FakeCache()
    cache.banks["keys"]["app2"] = {"state": "accepted", "pub": KEY_R}
    keys = _keys(tmp_path, cache)
    monkeypatch.setattr(keys, "assert_key", lambda *a, **k: 0)
    with pytest.raises(Exception, match="rotate its AES key"):
        trust.handover(keys, "app2", KEY_A, timeout=0.3)  # nobody rotates: the wait fails
    looks = []

    def pending():  # the master's maintenance loop removes the drop file on its third look
        looks.append(1)
        return len(looks) < 3

    monkeypatch.setattr(keys, "rotation_pending", pending)
    assert "rotated its AES key" in trust.handover(keys, "app2", KEY_A, timeout=5)
    assert len(looks) == 3


def test_the_key_is_held_while_the_rotation_is_awaited_and_settles_within_that_wait(
    tmp_path, monkeypatch
):
    """The hand-over writes the key, then waits for the rotation: the settle (the key read
    back, re-asserted when an authenticating minion wrote over it) happens during that wait
    instead of before and after it."""
    clock = {"now": 0.0}  # (saltglue.time is the time module: the waits use this clock)
    monkeypatch.setattr(saltglue.time, "monotonic", lambda: clock["now"])
    monkeypatch.setattr(
        saltglue.time, "sleep", lambda s: clock.__setitem__("now", clock["now"] + s)
    )
    cache = FakeCache()
    cache.banks["keys"]["app2"] = {"state": "accepted", "pub": KEY_R}
    keys = _keys(tmp_path, cache)
    rotated_at = 3.0
    monkeypatch.setattr(keys, "request_rotation", lambda: None)
    monkeypatch.setattr(keys, "rotation_pending", lambda: clock["now"] < rotated_at)
    cache.hijack = 1  # the auth handler writes its pending key over ours once
    comment = trust.handover(keys, "app2", KEY_A, timeout=30)
    assert cache.banks["keys"]["app2"] == {"state": "accepted", "pub": KEY_A}
    assert "rotated its AES key" in comment
    # one wait of ~the rotation's length, not rotation + 2 settles (3 + 1.5 + 1.5)
    assert rotated_at <= clock["now"] < rotated_at + 1.0
    # a rotation faster than the settle: the wait lasts the settle after the last write
    clock["now"], rotated_at = 100.0, 100.2
    cache.banks["keys"]["app2"] = {"state": "accepted", "pub": KEY_R}
    trust.handover(keys, "app2", KEY_A, timeout=30)
    assert 101.5 <= clock["now"] < 102.5


# ------------------------------------------------------------------ rollback order


class RollbackCloud:
    name, driver, profile = "fake", "openstack", {}

    def __init__(self, log):
        self.log = log

    def exists(self, server_id):
        return self._get_server(server_id) is not None

    def _get_server(self, server_id):
        return {"id": server_id}

    def delete(self, server_id):
        self.log.append("delete %s" % server_id)
        raise CloudError("503 Service Unavailable")

    def servers_named(self, name, brief=False):
        return []


class RollbackKeys:
    def __init__(self, log):
        self.log = log
        self.accepted = KEY_A

    def accepted_pub(self, name):
        return self.accepted

    def rotation_pending(self):
        return False

    def preseed(self, name, pub, rotate=True, settle=1.5):
        self.log.append("old key back")
        self.accepted = pub
        return True

    def wait_rotated(self, timeout=None, hold=None):
        self.log.append("rotated")
        return 0.0

    def assert_key(self, name, pub, settle=1.5):
        return 0


class Minion:
    def __init__(self, log):
        self.log = log

    def wait(self, name, timeout):
        self.log.append("old minion answers")


def _journal(tmp_path, state, **extra):
    """A replacement's journal at ``state`` (old VM "old", new VM "new", old key KEY_R)."""
    journal = replace.Journal(str(tmp_path))
    record = {
        "vm": "app2",
        "state": state,
        "old": {"id": "old"},
        "new": {"id": "new"},
        "floating_ips": [],
        "keep_old": "delete",
        "steps": [],
        "old_pub": KEY_R,
        "owner": replace.current_owner("tok"),
        "nonce": "ab" * 16,
    }
    record.update(extra)
    journal.save(record)
    return journal


def test_a_rollback_restores_the_identity_first_and_finishes_when_the_cloud_fails(tmp_path):
    log = []
    journal = _journal(tmp_path, "answering")
    rep = replace.Replacement(
        {}, RollbackCloud(log), RollbackKeys(log), journal, Minion(log), token="tok"
    )
    out = rep.rollback("app2")
    assert log == ["old key back", "rotated", "delete new", "old minion answers"]
    assert out["state"] == "rolled_back" and "NOT removed" in out["comment"]
    assert "503" in out["comment"]


def test_no_server_created_before_its_registration_vouches(tmp_path):
    cloud, registry = FakeCloud(), Registry(str(tmp_path))
    entry = registry.expect("app2", "local", "vmops.create", 600, now=NOW)
    sid = cloud.add("app2", created=NOW - 3600, metadata={NONCE_KEY: entry["nonce"]})
    cloud.consoles[sid] = _console_key(entry["nonce"], KEY_A)
    found = trust.registered_key(cloud, "app2", entry, NOW + 5)
    assert found["pub"] is None and not found["transient"] and "before" in found["reason"]


class ResumeKeys:
    """The key store of a run killed between writing the new key and asking for the rotation."""

    def __init__(self, accepted):
        self.accepted, self.calls = accepted, []

    def accepted_pub(self, name):
        return self.accepted

    def rotation_pending(self):
        return False

    def preseed(self, name, pub, rotate=True, settle=1.5):
        self.calls.append("preseed")
        self.accepted = pub

    def request_rotation(self):
        self.calls.append("rotate")

    def wait_rotated(self, timeout=None, hold=None):
        self.calls.append("waited")
        return 0.0

    def assert_key(self, name, pub, settle=1.5):
        return 0


def test_a_handover_resumed_after_a_kill_rotates_even_though_the_key_is_already_new():
    keys = ResumeKeys(KEY_A)
    assert "already" in trust.handover(keys, "app2", KEY_A)  # nothing says it was cut short
    assert keys.calls == []
    trust.handover(keys, "app2", KEY_A, force_rotation=True)  # the journal says it was
    assert keys.calls == ["rotate", "waited"]


def test_a_replacement_killed_inside_the_handover_resumes_with_a_rotation(tmp_path):
    journal = _journal(
        tmp_path,
        "booted",
        new_pub=KEY_A,
        new_fingerprint=identity.fingerprint(KEY_A),
        handover_started=1.0,
    )
    keys = ResumeKeys(KEY_A)  # the new key was written, the rotation never asked for

    class Answering:
        def wait(self, name, timeout):
            pass

    rep = replace.Replacement({}, None, keys, journal, Answering(), token="tok")
    rep.wait("app2")
    assert keys.calls == ["rotate", "waited"]
    assert journal.load("app2")["handed_over"]
    journal.unlock("app2")
