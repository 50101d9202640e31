"""The pack's configuration: the ``vmops`` key of master/minion config and pillar.

See ``pillar.example/vmops.sls`` for the documented layout.  Pillar wins over
config, key by key (a deep merge), so credentials can live in master config
and per-VM settings in pillar.
"""

import copy
import re

from .errors import InvalidInput

DRIVERS = ("openstack", "ec2")

# A minion id the pack will act on: a plain host-like name.  No glob (* ? [ ]),
# no list or compound matcher syntax (, @ : space), nothing a key.accept could widen.
_MINION_ID = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,251}[A-Za-z0-9])?$")

SECRET_WORDS = ("password", "secret", "token", "private_key", "credential", "priv")

DEFAULTS = {
    "default_cloud": None,
    "clouds": {},
    "master": {},
    "defaults": {
        "security_groups": [],
        "networks": [],
        "grains": {},
        "minion_config": {},
        "cloud_config": {},
        "boot_timeout": 600,
        "delete_timeout": 300,
    },
    "vms": {},
}


def deep_merge(base, override):
    """Return ``base`` updated by ``override``, recursing into dicts (lists are replaced)."""
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load(opts=None, pillar=None):
    """The effective ``vmops`` configuration from Salt's opts and pillar."""
    conf = deep_merge(DEFAULTS, (opts or {}).get("vmops") or {})
    return deep_merge(conf, (pillar or {}).get("vmops") or {})


def check_minion_id(name, what="VM name"):
    """Refuse anything that is not a plain minion id (globs, lists, compound matchers)."""
    if not isinstance(name, str) or not _MINION_ID.match(name):
        raise InvalidInput(
            "%s %r is not a plain minion id: use letters, digits, '.', '_' and '-' only "
            "(no glob, list or compound-matcher characters); nothing was changed" % (what, name)
        )
    return name


def cloud(conf, name=None):
    """The cloud profile ``name`` (default: ``default_cloud``, or the only one)."""
    clouds = conf.get("clouds") or {}
    name = name or None  # pillar.get gives '' for a missing key
    if name is None:
        name = conf.get("default_cloud")
        if name is None and len(clouds) == 1:
            name = next(iter(clouds))
    if name is None:
        raise InvalidInput(
            "no cloud given and no vmops:default_cloud configured (known clouds: %s)"
            % (", ".join(sorted(clouds)) or "none")
        )
    if name not in clouds:
        raise InvalidInput(
            "unknown cloud %r: configure it under vmops:clouds (known: %s)"
            % (name, ", ".join(sorted(clouds)) or "none")
        )
    profile = dict(clouds[name] or {})
    driver = profile.get("driver", "openstack")
    if driver not in DRIVERS:
        raise InvalidInput(
            "cloud %r: driver %r is not one of %s" % (name, driver, ", ".join(DRIVERS))
        )
    profile["driver"] = driver
    profile["name"] = name
    return profile


def vm(conf, name, overrides=None, profile=None):
    """Settings for VM ``name``.

    Layered: ``defaults``, the cloud profile's ``defaults``, ``vms:<name>``, ``overrides``.
    """
    check_minion_id(name)
    settings = deep_merge(conf.get("defaults") or {}, (profile or {}).get("defaults") or {})
    settings = deep_merge(settings, (conf.get("vms") or {}).get(name) or {})
    settings = deep_merge(settings, overrides or {})
    # the runbook's sanity grain: ``level: staging`` is both a grain and the expected value
    if settings.get("level") is not None:
        settings.setdefault("grains", {})["level"] = settings["level"]
    settings["name"] = name
    return settings


def redact(data):
    """A copy of ``data`` with every secret-looking value replaced by ``'********'``."""
    if isinstance(data, dict):
        return {
            k: (
                "********"
                if isinstance(k, str) and any(w in k.lower() for w in SECRET_WORDS) and v
                else redact(v)
            )
            for k, v in data.items()
        }
    if isinstance(data, (list, tuple)):
        return [redact(v) for v in data]
    return data
