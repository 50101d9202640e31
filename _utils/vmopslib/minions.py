"""New VMs and their minions: create (with the pack's user-data), rebuild in place, and
the operator's accept (the decision itself is ``admission.Admission``; the cloud's
evidence and the key hand-over are ``trust``)."""

import logging
import time

from . import config, identity, trust, userdata
from . import events as tags
from .errors import InvalidInput, VmopsError
from .registry import NONCE_KEY, new_nonce

log = logging.getLogger(__name__)


def vm_spec(conf, name, overrides=None, tag=None, profile=None):
    """(boot spec, settings) for a new VM ``name`` with the pack's user-data.

    ``tag``: the registration's nonce the VM prints its minion's public key with.
    """
    settings = config.vm(conf, name, overrides, profile)
    text = userdata.render(
        name,
        conf.get("master"),
        grains=settings.get("grains"),
        minion_config=settings.get("minion_config"),
        tag=tag,
        cloud_config=settings.get("cloud_config"),
    )
    spec = {
        "name": name,
        "image": settings.get("image"),
        "flavor": settings.get("flavor"),
        "key_name": settings.get("key_name"),
        "security_groups": settings.get("security_groups"),
        "networks": settings.get("networks"),
        "metadata": settings.get("metadata"),
        "availability_zone": settings.get("availability_zone"),
        "volumes": settings.get("volumes"),
        "user_data": text,
    }
    return spec, settings


def create_vm(
    conf,
    provider,
    name,
    overrides=None,
    events=None,
    wait=True,
    registry=None,
    provision=True,
    ttl=None,
):
    """Boot VM ``name`` from its settings, with user-data that installs its minion.

    ``registry``: register the VM as expected first (its server carries the
    registration's nonce), so that the admission reactor may accept its key;
    ``provision``: the reactor then highstates it too.
    """
    spec, settings = vm_spec(conf, name, overrides, None, provider.profile)  # validates first
    existing = provider.servers_named(name)
    if existing:
        raise InvalidInput(
            "a server named %s already exists on cloud %s (%s); nothing was changed"
            % (name, provider.name, ", ".join(s["id"] for s in existing))
        )
    entry = None
    if registry is not None:
        entry = registry.expect(
            name,
            provider.name,
            "vmops.create",
            ttl or config.reactor(conf)["expect_ttl"],
            provision=provision,
            level=settings.get("level"),
        )
        spec, settings = vm_spec(conf, name, overrides, entry["nonce"], provider.profile)
        spec["metadata"] = dict(spec.get("metadata") or {}, **{NONCE_KEY: entry["nonce"]})
    started = time.monotonic()
    if events:
        events(
            tags.create(name, "booting"),
            "booting %s on %s" % (name, provider.name),
            vm=name,
            flavor=spec.get("flavor"),
            image=spec.get("image"),
            expected=entry is not None,
        )
    try:
        desc = provider.boot(spec, wait=wait, timeout=settings.get("boot_timeout", 600))
    except VmopsError:
        if entry is not None and not provider.servers_named(name):
            registry.forget(name)
        raise
    if entry is not None:
        registry.update(name, server_id=desc["id"])
    if events:
        events(
            tags.create(name, "active" if wait else "requested"),
            "%s is %s on %s" % (name, desc["status"], desc.get("host") or provider.name),
            vm=name,
            server_id=desc["id"],
            duration=round(time.monotonic() - started, 2),
        )
    return desc


def check_grain(grain_of, name, grain, expected):
    """The runbook's sanity check: ``grain_of(name, grain)`` must equal ``expected``."""
    value = grain_of(name, grain)
    if value != expected:
        raise VmopsError(
            "sanity check failed: grain %s of %s is %r, expected %r"
            % (grain, name, value, expected)
        )
    return value


def rebuild_minion(
    conf, provider, keys, name, wait_minion, image=None, timeout=600, events=None, registry=None
):
    """Rebuild VM ``name`` in place (same server, ports and IPs) with a new minion identity.

    The rebuilt VM makes its own key and prints it on its console with this run's
    nonce; that key becomes the accepted key of ``name`` (``trust.handover``: the
    master's AES key rotates, so nothing holding the old key's session runs a job
    after it).  Until then the old key stays: a rebuild the cloud refuses (a bad
    image, a quota, a 5xx) leaves the running VM and its minion as they were.
    Waits until the new minion answers.
    """
    config.check_minion_id(name)
    old = provider.describe(provider.find_server(name))
    if old["status"] not in ("ACTIVE", "SHUTOFF"):  # every driver speaks Nova's words
        raise InvalidInput(
            "%s (%s) is %s: it is rebuilt only when ACTIVE or SHUTOFF; nothing was "
            "changed" % (name, old["id"], old["status"])
        )
    nonce = new_nonce()
    if registry is not None:
        # the pack hands the key over itself: the reactor leaves the id alone meanwhile
        nonce = registry.expect(
            name,
            provider.name,
            "rebuild_minion",
            config.reactor(conf)["expect_ttl"],
            provision=False,
            state="preseeded",
            server_id=old["id"],
        )["nonce"]
    spec, _ = vm_spec(conf, name, None, nonce, provider.profile)
    started = time.monotonic()

    def forget():
        if registry is not None:
            entry = registry.get(name)
            if entry and entry.get("nonce") == nonce:
                registry.forget(name)

    try:
        desc = provider.rebuild(
            old["id"],
            image=image or spec.get("image") or None,
            user_data=spec["user_data"],
            timeout=timeout,
        )
    except VmopsError as exc:
        forget()
        still = keys.accepted_pub(name) is not None
        raise type(exc)(
            "%s; the key of %s was not touched%s"
            % (exc, name, " (its minion keeps it)" if still else "")
        ) from exc
    if events:
        events(
            tags.rebuild(name, "active"),
            "%s rebuilt, ACTIVE on %s" % (name, desc.get("host")),
            server_id=desc["id"],
        )
    found = trust.wait_for_key(provider, old["id"], nonce, timeout)
    finger = identity.fingerprint(found["pub"])
    handed = trust.handover(keys, name, found["pub"], events=events, what="rebuild %s" % name)
    wait_minion(name, max(timeout - (time.monotonic() - started), 30))
    forget()
    took = round(time.monotonic() - started, 2)
    if events:
        events(tags.rebuild(name, "answering"), "the rebuilt %s answers" % name, duration=took)
    return {
        "result": True,
        "vm": name,
        "server_id": desc["id"],
        "fixed_ips": desc["fixed_ips"],
        "fingerprint": finger,
        "duration": took,
        "comment": "%s rebuilt in place; %s; its minion answers" % (name, handed),
    }
