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
# \Z, not $: "$" also matches before a trailing newline ("app2\n").  At most 240 characters,
# so "<id>-failed.json" and the like still fit a file name (255 bytes).
_MINION_ID = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,238}[A-Za-z0-9])?\Z")

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


REACTOR_DEFAULTS = {
    # what happens to a key the cloud does not vouch for: stays pending, or is rejected
    # (only refusals that cannot change by themselves; a VM still booting stays pending)
    "on_refused": "pending",
    "expect_ttl": 3600,  # seconds a registration stays usable
    "retry_interval": 3,  # at most one decision per minion id per this many seconds
    "refused_backoff": 300,  # a key refused for good is not looked at again for this long
    "max_decisions_per_minute": 120,
    "require_fingerprint": True,  # the server's console must show the key's fingerprint
    "clock_skew": 5,  # seconds of slack between the master's clock and the cloud's
    "sanity_grain": None,  # deprecated here: vmops:sanity_grain (config.sanity_grain)
    "minion_timeout": 120,  # provisioning: seconds for the new minion to answer
    # provisioning by this orchestration (e.g. orch.provision_minion, or one of your own
    # ending the same way) instead of the runner vmops.provision_minion
    "provision_orchestration": None,
}


def reactor(conf):
    """The admission reactor's settings (``vmops:reactor``), checked."""
    out = dict(REACTOR_DEFAULTS)
    out.update((conf or {}).get("reactor") or {})
    if out["on_refused"] not in ("pending", "reject"):
        raise InvalidInput(
            "vmops:reactor:on_refused must be 'pending' or 'reject', not %r" % out["on_refused"]
        )
    for key in (
        "expect_ttl",
        "retry_interval",
        "refused_backoff",
        "max_decisions_per_minute",
        "clock_skew",
        "minion_timeout",
    ):
        try:
            out[key] = float(out[key])
        except (TypeError, ValueError):
            raise InvalidInput(
                "vmops:reactor:%s must be a number, not %r" % (key, out[key])
            ) from None
        if out[key] < 0:
            raise InvalidInput("vmops:reactor:%s must not be negative" % key)
    return out


def autoprovision_rules(conf):
    """The auto-provisioning rules (``vmops:autoprovision``), checked, sorted by name.

    A rule admits a server booted outside the pack when the server carries all of
    the rule's ``metadata`` (OpenStack metadata, EC2 tags): the opt-in marker.
    """
    rules = (conf or {}).get("autoprovision") or {}
    if not isinstance(rules, dict):
        raise InvalidInput("vmops:autoprovision must map rule names to rules")
    out = []
    for name in sorted(rules):
        rule = dict(rules[name] or {})
        where = "vmops:autoprovision:%s" % name
        metadata = rule.get("metadata")
        if not isinstance(metadata, dict) or not metadata:
            raise InvalidInput(
                "%s: metadata (the opt-in marker a server must carry) is required" % where
            )
        pattern = rule.get("minion_id")
        if not isinstance(pattern, str) or not pattern.strip() or pattern.strip() in (".*", ".+"):
            # a rule must say which ids it is for: without one, any server carrying the
            # opt-in marker could claim any id (the master's own, another role's...)
            raise InvalidInput(
                "%s: minion_id (a regular expression the ids it admits must "
                "match in full, e.g. 'web-[0-9a-z]+') is required" % where
            )
        try:
            compiled = re.compile(pattern)
        except (re.error, TypeError) as exc:
            raise InvalidInput(
                "%s: minion_id %r is not a regular expression: %s" % (where, pattern, exc)
            ) from None
        try:
            max_age = float(rule.get("max_age", 3600))
        except (TypeError, ValueError):
            raise InvalidInput("%s: max_age must be a number of seconds" % where) from None
        out.append(
            {
                "rule": name,
                "cloud": rule.get("cloud"),
                "metadata": {str(k): str(v) for k, v in metadata.items()},
                "minion_id": compiled,
                "max_age": max_age,
                "level": rule.get("level"),
                "provision": bool(rule.get("highstate", True)),
                # provisioning by this orchestration instead of vmops.provision_minion
                "orchestration": optional_name(
                    rule.get("orchestration"), "%s:orchestration" % where
                ),
            }
        )
    return out


def check_minion_id(name, what="VM name"):
    """Refuse anything that is not a plain minion id (globs, lists, compound matchers)."""
    if not isinstance(name, str) or not _MINION_ID.match(name):
        raise InvalidInput(
            "%s %r is not a plain minion id: use letters, digits, '.', '_' and '-' only, at "
            "most 240 characters (no glob, list or compound-matcher characters); nothing was "
            "changed" % (what, name)
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


def sanity_grain(conf):
    """The grain the runbook's sanity check reads (``vmops:sanity_grain``, default ``level``;
    ``vmops:reactor:sanity_grain`` is read too, for configurations written before).

    One setting for the replacement's sanity step, ``orch.create_vm``'s check and the
    reactor's provisioning check; a VM's ``level`` setting is that grain's value.
    """
    conf = conf or {}
    grain = conf.get("sanity_grain") or (conf.get("reactor") or {}).get("sanity_grain") or "level"
    if not isinstance(grain, str) or not re.fullmatch(r"[A-Za-z0-9_.:-]+", grain):
        raise InvalidInput("vmops:sanity_grain must be a grain name, not %r" % (grain,))
    return grain


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
        settings.setdefault("grains", {})[sanity_grain(conf)] = settings["level"]
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


def strict_bool(value, what):
    """A setting that must be true or false: ``"false"`` is false (not a truthy string), and
    anything else that is not a boolean is refused before any change."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "1"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "no", "off", "0", ""):
        return False
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise InvalidInput("%s must be true or false, not %r; nothing was changed" % (what, value))


def strict_int(value, what, minimum=1):
    """A whole number setting (seconds, counts), refused with a clear error otherwise."""
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        raise InvalidInput(
            "%s must be a whole number, not %r; nothing was changed" % (what, value)
        ) from None
    if number < minimum:
        raise InvalidInput(
            "%s must be at least %d, not %r; nothing was changed" % (what, minimum, value)
        )
    return number


def optional_name(value, what):
    """A name setting (a network, a profile) or None; anything but a non-empty string is
    refused before any change."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not value.strip() or "\n" in value:
        raise InvalidInput("%s must be a name, not %r; nothing was changed" % (what, value))
    return value.strip()
