import pytest

from vmopslib import config
from vmopslib.errors import InvalidInput


@pytest.mark.parametrize("name", ["app2", "db1-masterdb", "web.example.com", "a", "x_1"])
def test_plain_minion_ids_pass(name):
    assert config.check_minion_id(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "app*",
        "*",
        "[ab]pp2",
        "app?",
        "L@app1,app2",
        "G@level:staging",
        "app2 app3",
        "app1,app2",
        "",
        "-app",
        "app-",
        None,
        7,
        "a" * 300,
    ],
)
def test_globs_lists_and_compound_matchers_are_refused(name):
    with pytest.raises(InvalidInput, match="not a plain minion id"):
        config.check_minion_id(name)


def test_pillar_wins_key_by_key():
    opts = {
        "vmops": {
            "clouds": {"c": {"driver": "openstack", "cloud": "c", "auth": {"password": "x"}}},
            "defaults": {"flavor": "small", "grains": {"a": 1}},
        }
    }
    pillar = {"vmops": {"defaults": {"grains": {"b": 2}}}}
    conf = config.load(opts, pillar)
    assert conf["defaults"]["flavor"] == "small"
    assert conf["defaults"]["grains"] == {"a": 1, "b": 2}
    assert conf["clouds"]["c"]["auth"]["password"] == "x"


def test_vm_settings_layering_and_level_grain():
    conf = config.load(
        {
            "vmops": {
                "defaults": {"flavor": "small", "image": "img"},
                "vms": {"app2": {"flavor": "lightspeed", "level": "staging"}},
            }
        }
    )
    profile = {"defaults": {"image": "cloud-img", "networks": ["n1"]}}
    settings = config.vm(conf, "app2", {"networks": ["n2"]}, profile)
    assert settings["flavor"] == "lightspeed"
    assert settings["image"] == "cloud-img"
    assert settings["networks"] == ["n2"]
    assert settings["grains"]["level"] == "staging"


def test_cloud_selection_errors_are_clear():
    conf = config.load({"vmops": {"clouds": {"a": {}, "b": {"driver": "ec2"}}}})
    with pytest.raises(InvalidInput, match="no cloud given"):
        config.cloud(conf)
    with pytest.raises(InvalidInput, match="unknown cloud 'c'"):
        config.cloud(conf, "c")
    assert config.cloud(conf, "b")["driver"] == "ec2"
    assert config.cloud(conf, "a")["driver"] == "openstack"
    with pytest.raises(InvalidInput, match="driver 'gce'"):
        config.cloud(config.load({"vmops": {"clouds": {"g": {"driver": "gce"}}}}), "g")


def test_only_cloud_is_the_default():
    conf = config.load({"vmops": {"clouds": {"only": {}}}})
    assert config.cloud(conf)["name"] == "only"
    assert config.cloud(conf, "")["name"] == "only"  # pillar.get gives '' for a missing key


def test_redact_hides_secrets_at_any_depth():
    data = {
        "auth": {"username": "ops", "password": "s3cret"},
        "aws_secret_access_key": "k",
        "private_key": "-----BEGIN",
        "list": [{"token": "t"}],
        "name": "app2",
    }
    red = config.redact(data)
    assert "s3cret" not in repr(red) and "-----BEGIN" not in repr(red)
    assert red["auth"]["username"] == "ops" and red["name"] == "app2"
    assert red["list"][0]["token"] == "********"


def test_minion_ids_with_a_trailing_newline_or_too_long_are_refused():
    from vmopslib.config import check_minion_id
    from vmopslib.errors import InvalidInput

    for bad in ("app2\n", "app2\n\n", "a" * 241):
        with pytest.raises(InvalidInput, match="not a plain minion id"):
            check_minion_id(bad)
    assert check_minion_id("a" * 240) == "a" * 240


def test_strict_types_refuse_truthy_strings_and_junk():
    from vmopslib.config import strict_bool, strict_int
    from vmopslib.errors import InvalidInput

    assert strict_bool("false", "keep_failed") is False and strict_bool("True", "x") is True
    with pytest.raises(InvalidInput, match="keep_failed must be true or false"):
        strict_bool("maybe", "keep_failed")
    assert strict_int("30", "timeout") == 30
    for bad in ("abc", "1.5", 0, None):
        with pytest.raises(InvalidInput, match="timeout must be"):
            strict_int(bad, "timeout")


@pytest.mark.parametrize("pattern", [None, "", ".*", ".+"])
def test_an_autoprovision_rule_must_say_which_ids_it_admits(pattern):
    rule = {"metadata": {"vmops-autoprovision": "web"}}
    if pattern is not None:
        rule["minion_id"] = pattern
    with pytest.raises(InvalidInput, match="vmops:autoprovision:web: minion_id .* is required"):
        config.autoprovision_rules({"autoprovision": {"web": rule}})


def test_one_sanity_grain_for_every_check():
    from vmopslib import config as cfg

    assert cfg.sanity_grain({}) == "level"
    assert cfg.sanity_grain({"reactor": {"sanity_grain": "tier"}}) == "tier"  # older configs
    assert cfg.sanity_grain({"sanity_grain": "role", "reactor": {"sanity_grain": "x"}}) == "role"
    with pytest.raises(InvalidInput):
        cfg.sanity_grain({"sanity_grain": "a b"})
    settings = cfg.vm({"sanity_grain": "role", "vms": {"app2": {"level": "web"}}}, "app2")
    assert settings["grains"] == {"role": "web"}


def test_a_bad_api_timeout_is_refused_before_connecting():
    from vmopslib import openstack as vos  # pylint: disable=import-outside-toplevel

    with pytest.raises(InvalidInput, match="api_timeout of cloud c"):
        vos.connect({"name": "c", "cloud": "nowhere", "api_timeout": "soon"})
    with pytest.raises(InvalidInput, match="api_timeout of cloud c"):
        vos.connect({"name": "c", "cloud": "nowhere", "api_timeout": 0})
