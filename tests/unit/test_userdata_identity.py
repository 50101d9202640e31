import pytest
import yaml

from tests.harness import fakevm
from vmopslib import identity, userdata
from vmopslib.errors import InvalidInput


def test_user_data_is_cloud_config_for_the_salt_minion_module():
    tag = "0123456789abcdef0123456789abcdef"
    text = userdata.render(
        "app2",
        {"address": "salt.example.com", "port": 4506},
        grains={"level": "staging"},
        minion_config={"hash_type": "sha256"},
        tag=tag,
        cloud_config={"packages": ["htop"], "runcmd": ["echo hi"]},
    )
    assert text.startswith("#cloud-config\n")
    doc = yaml.safe_load(text)
    conf = doc["salt_minion"]["conf"]
    assert conf == {
        "rejected_retry": True,
        "hash_type": "sha256",
        "master": "salt.example.com",
        "master_port": 4506,
        "id": "app2",
    }
    assert doc["salt_minion"]["grains"] == {"level": "staging"}
    # the VM makes its own key: no key material at all in what the cloud keeps
    assert "public_key" not in doc["salt_minion"] and "private_key" not in doc["salt_minion"]
    assert "PRIVATE KEY" not in text and "BEGIN" not in text
    assert doc["packages"] == ["htop"]
    assert doc["runcmd"][0] == "echo hi"
    assert identity.FINGERPRINT_LINE in doc["runcmd"][1]
    assert identity.PUBKEY_MARKER + tag + "]" in doc["runcmd"][2]


def test_user_data_refuses_key_material_from_cloud_config():
    with pytest.raises(InvalidInput, match="private_key"):
        userdata.render(
            "app2",
            {"address": "m"},
            cloud_config={"salt_minion": {"private_key": "-----BEGIN RSA..."}},
        )


def test_the_console_public_key_is_read_back_whole_lines_first_tagged_only():
    import base64

    tag, other_tag = "ab" * 16, "cd" * 16
    mine, rogue = identity.generate_keypair(bits=1024)[0], identity.generate_keypair(bits=1024)[0]

    def line(t, pem, prefix=""):
        return "%s%s%s]: %s" % (
            prefix,
            identity.PUBKEY_MARKER,
            t,
            base64.b64encode(pem.encode()).decode(),
        )

    console = "\n".join(
        [
            line(other_tag, rogue),  # another run's tag
            "GET /?q=" + line(tag, rogue) + " HTTP/1.1",  # echoed inside a line
            line(tag, mine, "[   12.345] cloud-init[812]: "),  # cloud-init's
            line(tag, rogue),  # printed later
        ]
    )
    assert identity.console_pubkey(console, tag) == mine
    assert identity.console_pubkey(console, "ef" * 16) is None
    assert identity.console_pubkey(line(tag, "not a key"), tag) is None


def test_the_test_hypervisor_prints_the_key_the_way_the_pack_reads_it(tmp_path, monkeypatch):
    import base64

    tag = "12" * 16
    pub = identity.generate_keypair(bits=1024)[0]
    cmd = identity.print_pubkey_cmd(tag)
    match = fakevm._PUBKEY_TAG.search(cmd)  # pylint: disable=protected-access
    assert match and match.group(1) == tag
    printed = "%s%s]: %s" % (fakevm.PUBKEY_MARKER, tag, base64.b64encode(pub.encode()).decode())
    assert identity.console_pubkey(printed, tag) == pub


def test_user_data_cannot_override_the_id_or_master():
    doc = yaml.safe_load(
        userdata.render("app2", {"address": "m"}, minion_config={"id": "evil", "master": "x"})
    )
    assert doc["salt_minion"]["conf"]["id"] == "app2"
    assert doc["salt_minion"]["conf"]["master"] == "m"


def test_user_data_needs_the_master_address():
    with pytest.raises(InvalidInput, match="vmops:master:address"):
        userdata.render("app2", {})


def test_fingerprint_matches_salt_key_and_the_test_hypervisor():
    salt_crypt = pytest.importorskip("salt.utils.crypt")
    pub, _ = identity.generate_keypair()
    assert identity.fingerprint(pub) == salt_crypt.pem_finger(key=_body(pub))
    assert identity.fingerprint(pub) == fakevm.key_fingerprint(pub)


def _body(pem):
    lines = [line for line in pem.splitlines(True) if line.strip()][1:-1]
    return "".join(lines)


def test_console_fingerprints_are_found_in_order():
    a, b = "aa:" * 31 + "aa", "bb:" * 31 + "bb"
    console = "boot\n%s%s\nnoise\n%s%s\n" % (
        identity.FINGERPRINT_LINE,
        a,
        identity.FINGERPRINT_LINE,
        b,
    )
    assert identity.console_fingerprints(console) == [a, b]
    assert identity.console_fingerprints("FAKE CONSOLE OUTPUT") == []


def test_the_test_hypervisor_reads_what_the_pack_writes():
    text = userdata.render("app2", {"address": "127.0.0.1"}, grains={"level": "x"})
    for encoded in (text, __import__("base64").b64encode(text.encode()).decode()):
        cfg = fakevm.parse_cloud_config(encoded)
        assert cfg["salt_minion"]["conf"]["id"] == "app2"
    assert fakevm.parse_cloud_config("#!/bin/sh\necho hi") is None


def test_console_fingerprints_are_whole_lines_only():
    from vmopslib import identity

    fp = "ab:" * 31 + "cd"
    other = "12:" * 31 + "34"
    console = "\n".join(
        [
            "[   12.345] cloud-init[812]: " + identity.FINGERPRINT_LINE + fp,
            "GET /?q=" + identity.FINGERPRINT_LINE + other + " HTTP/1.1",  # echoed by a workload
            identity.FINGERPRINT_LINE + other + " trailing words",
            identity.FINGERPRINT_LINE + other,  # printed later
        ]
    )
    assert identity.console_fingerprints(console) == [fp, other]


def test_accept_minion_waits_for_a_console_that_lags(monkeypatch):
    from vmopslib import identity

    pub, _ = identity.generate_keypair(bits=1024)

    class Keys:
        accepted = False

        def status(self, name):
            return "accepted" if self.accepted else "pending"

        def pending_pub(self, name):
            return pub

        def accept(self, name):
            self.accepted = True

        def preseed(self, name, key, rotate=True, settle=1.5):
            assert key == pub
            self.accepted = True

        def accepted_pub(self, name):
            return pub if self.accepted else None

        def denied_pubs(self, name):
            return []

    class Cloud:
        name = "lagging"
        looks = 0

        def servers_named(self, name, brief=False):
            return [{"id": "s1", "name": name, "status": "ACTIVE", "metadata": {}}]

        def console_output(self, server_id):
            self.looks += 1  # the fingerprint shows up on the third look
            return identity.FINGERPRINT_LINE + identity.fingerprint(pub) if self.looks >= 3 else ""

    from vmopslib import admission

    monkeypatch.setattr(admission.time, "sleep", lambda seconds: None)
    cloud, keys = Cloud(), Keys()
    out = admission.accept({}, cloud, keys, None, "app5", wait=30)
    assert out["accepted"] and keys.accepted and cloud.looks == 3
    # without a wait budget it looks once and refuses (nothing accepted)
    cloud, keys = Cloud(), Keys()
    with pytest.raises(Exception, match="printed no minion key fingerprint"):
        admission.accept({}, cloud, keys, None, "app5")
    assert not keys.accepted


def test_ec2_creation_time_survives_a_stop_and_start():
    import datetime

    from vmopslib.ec2 import _created

    launched = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    restarted = datetime.datetime(2026, 6, 1, tzinfo=datetime.timezone.utc)
    server = {
        "LaunchTime": restarted,  # AWS resets it on start
        "NetworkInterfaces": [{"Attachment": {"DeviceIndex": 0, "AttachTime": launched}}],
    }
    assert _created(server) == launched.isoformat()
    assert _created({"LaunchTime": restarted}) == restarted.isoformat()


def test_a_cloud_error_that_echoes_the_user_data_is_scrubbed():
    from vmopslib.errors import CloudError
    from vmopslib.provider import encode_user_data, scrub_user_data

    text = "#cloud-config\nsecret: %s\n" % ("y" * 5000)
    echoed = CloudError(
        "400: Invalid input for field/attribute user_data. Value: %s is too long"
        % encode_user_data(text)
    )
    out = scrub_user_data(echoed, text.encode())
    assert isinstance(out, CloudError)
    assert "<user-data, %d bytes>" % len(text) in str(out) and "eXl5" not in str(out)
    # an echo the pack cannot match exactly (re-encoded, cut) is cut all the same
    other = scrub_user_data(CloudError("Value: %s" % ("QUJD" * 100)), None)
    assert "QUJD" not in str(other) and "<400 base64 characters>" in str(other)


def test_user_data_over_the_cloud_limit_is_refused_before_anything(monkeypatch):
    from vmopslib.ec2 import EC2Provider
    from vmopslib.openstack import OpenStackProvider

    for cls, size, words in (
        (OpenStackProvider, 50000, "65535 base64 encoded"),
        (EC2Provider, 17000, "16384 bytes"),
    ):
        prov = cls.__new__(cls)
        prov.name = "c"
        prov.check_user_data(b"x" * 1000)
        with pytest.raises(InvalidInput, match=words):
            prov.check_user_data(b"x" * size)


def test_ec2_console_output_is_decoded_only_when_it_is_base64():
    import base64

    from vmopslib.ec2 import decode_console

    text = "ci-info: x\nci-info: salt-minion public key [abcd1234]: QUJDRA==\nfinished.\n"
    assert decode_console(base64.b64encode(text.encode()).decode()) == text  # AWS
    assert decode_console(text) == text  # emulators
    assert decode_console("QUJD\nRA==\nQUJD") == "QUJD\nRA==\nQUJD"  # not valid base64 as a whole
