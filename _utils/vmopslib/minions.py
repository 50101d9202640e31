"""New VMs whose minions reach the master, and the cloud vouching for a minion's key.

Used by the runner (create, accept), and by replace_vm and the reactor.
"""

import datetime
import logging
import time

from . import config, identity, trust, userdata, waiting
from .errors import InvalidInput, VmopsError
from .registry import NONCE_KEY, is_live, new_nonce

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


def create_vm(conf, provider, name, overrides=None, events=None, wait=True,
              registry=None, provision=True, ttl=None):
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
        entry = registry.expect(name, provider.name, "vmops.create",
                                ttl or config.reactor(conf)["expect_ttl"], provision=provision,
                                level=settings.get("level"))
        spec, settings = vm_spec(conf, name, overrides, entry["nonce"], provider.profile)
        spec["metadata"] = dict(spec.get("metadata") or {}, **{NONCE_KEY: entry["nonce"]})
    started = time.monotonic()
    if events:
        events("create/%s/booting" % name, "booting %s on %s" % (name, provider.name),
               vm=name, flavor=spec.get("flavor"), image=spec.get("image"),
               expected=entry is not None)
    try:
        desc = provider.boot(spec, wait=wait, timeout=settings.get("boot_timeout", 600))
    except VmopsError:
        if entry is not None and not provider.servers_named(name):
            registry.forget(name)
        raise
    if entry is not None:
        registry.update(name, server_id=desc["id"])
    if events:
        events("create/%s/%s" % (name, "active" if wait else "requested"),
               "%s is %s on %s" % (name, desc["status"], desc.get("host") or provider.name),
               vm=name, server_id=desc["id"], duration=round(time.monotonic() - started, 2))
    return desc


def created_epoch(desc):
    """A server's creation time (ISO 8601 from the cloud) as seconds since the epoch, or None."""
    value = desc.get("created")
    if not value:
        return None
    try:
        when = datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.timestamp()


def _basis_problem(server, basis, now, skew):
    """Why ``server`` does not fit the registration or rule ``basis`` (None: it fits)."""
    created = created_epoch(server)
    if basis["kind"] == "registration":
        if (server.get("metadata") or {}).get(NONCE_KEY) != basis["nonce"]:
            return ("server %s (%s) does not carry the nonce of the registration %s made"
                    % (server["name"], server["id"], basis["source"]))
        if created is None or created < basis["registered"] - skew:
            return ("server %s (%s) was created at %s, before %s registered it"
                    % (server["name"], server["id"], server.get("created"), basis["source"]))
        return None
    # an auto-provisioning rule: the opt-in marker, and a server young enough
    wanted = basis.get("metadata") or {}
    have = server.get("metadata") or {}
    missing = sorted(k for k, v in wanted.items() if have.get(k) != str(v))
    if missing:
        return ("server %s (%s) does not carry the metadata rule %s asks for (%s)"
                % (server["name"], server["id"], basis["rule"], ", ".join(missing)))
    if created is None or created < now - basis["max_age"] - skew:
        return ("server %s (%s) was created at %s, more than rule %s's max_age (%ss) ago"
                % (server["name"], server["id"], server.get("created"), basis["rule"],
                   basis["max_age"]))
    return None


def vouch(provider, name, pub_pem, require_fingerprint=True, basis=None, now=None, skew=5):
    """Does the cloud vouch for ``pub_pem`` being the key of VM ``name``?

    Returns ``{"ok", "reason", "transient", "server", "fingerprint"}``.  The cloud
    vouches when exactly one server has that name, it is ACTIVE, it fits
    ``basis`` (a registration: carries its nonce and was created after it; an
    auto-provisioning rule: carries the rule's metadata and is younger than its
    max_age), and the first minion-key fingerprint line its console printed
    (cloud-init's, at first boot) equals the key's.  ``transient``: the answer may change by itself (the server is
    still building, its console shows no fingerprint yet).
    """
    now = time.time() if now is None else now
    finger = identity.fingerprint(pub_pem)
    out = {"ok": False, "server": None, "fingerprint": finger, "transient": False}
    servers = provider.servers_named(name)
    if not servers:
        out["reason"] = "no server named %s on cloud %s" % (name, provider.name)
        return out
    if len(servers) > 1:
        out["reason"] = "%d servers are named %s on cloud %s" % (len(servers), name, provider.name)
        return out
    server = out["server"] = servers[0]
    foreign = getattr(provider, "foreign_project", None)
    problem = foreign(server) if foreign is not None else None
    if problem:
        out["reason"] = problem
        return out
    if server["status"] != "ACTIVE":
        out["reason"] = "server %s (%s) is %s, not ACTIVE" % (name, server["id"], server["status"])
        out["transient"] = server["status"] == "BUILD"
        return out
    if basis:
        problem = _basis_problem(server, basis, now, skew)
        if problem:
            out["reason"] = problem
            return out
    try:
        printed = identity.console_fingerprints(provider.console_output(server["id"]))
    except VmopsError as exc:
        printed = []
        log.info("vmops: no console output for %s: %s", name, exc)
    if not printed:
        if require_fingerprint:
            out["reason"] = "server %s printed no minion key fingerprint on its console" % name
            out["transient"] = True
            return out
    elif printed[0] != finger:
        # the first fingerprint cloud-init printed at the server's first boot: a line printed
        # later (by a workload that echoes input to the console) does not override it
        out["reason"] = (
            "the pending key of %s (%s) is not the one server %s printed on its console (%s)"
            % (name, finger, server["id"], printed[0])
        )
        return out
    out["ok"] = True
    out["reason"] = "server %s (%s) is ACTIVE and its console shows this key" % (name, server["id"]) \
        if printed else "server %s (%s) is ACTIVE" % (name, server["id"])
    return out


def check_grain(grain_of, name, grain, expected):
    """The runbook's sanity check: ``grain_of(name, grain)`` must equal ``expected``."""
    value = grain_of(name, grain)
    if value != expected:
        raise VmopsError("sanity check failed: grain %s of %s is %r, expected %r"
                         % (grain, name, value, expected))
    return value


def wait_pending(keys, name, timeout):
    """Wait until ``name`` has a pending (or accepted) key; return the key status."""
    config.check_minion_id(name, "minion id")
    return waiting.wait_for(
        lambda: keys.status(name) in ("pending", "accepted") and keys.status(name),
        timeout, "the key of %s to arrive" % name,
    )


def registration_basis(entry):
    """What ``vouch`` checks a server against for a live registration."""
    return {"kind": "registration", "nonce": entry["nonce"], "registered": entry["registered"],
            "source": entry["source"]}


def accept_minion(provider, keys, name, events=None, require_fingerprint=True, wait=0,
                  registry=None):
    """Accept the pending key of ``name`` when the cloud vouches for it (exact id only).

    ``wait``: seconds to wait for the key to arrive, and for the cloud's evidence (the
    server ACTIVE, its console showing the key's fingerprint) when it lags.  When ``registry``
    holds a live registration of ``name``, the server must also carry its nonce
    and be younger than it; the registration is used up.
    """
    config.check_minion_id(name, "minion id")
    deadline = time.monotonic() + max(float(wait or 0), 0)
    if wait:
        wait_pending(keys, name, wait)
    entry = registry.get(name) if registry is not None else None
    live = is_live(entry) and entry.get("cloud") == provider.name
    while True:
        status = keys.status(name)
        if status == "accepted":
            return {"result": True, "accepted": False, "comment": "%s is already accepted" % name}
        if live:
            # a VM the pack booted prints its own public key with the registration's nonce:
            # that key is written as the id's, whatever else (a rogue's) is pending
            found = trust.registered_key(provider, name, entry)
            if found["pub"]:
                return trust.admit_registered(keys, registry, name, found, events)
            if not found["transient"]:
                raise InvalidInput("not accepting %s: %s" % (name, found["reason"]))
        pub = keys.pending_pub(name)
        if pub is None:
            raise InvalidInput("no pending key for minion %s (key status: %s)" % (name, status))
        verdict = vouch(provider, name, pub, require_fingerprint=require_fingerprint,
                        basis=registration_basis(entry) if live else None)
        # the evidence may lag behind the key (a server still building, a console that has
        # not shown the fingerprint yet: EC2's lags by minutes): look again until ``wait`` ends
        # for a registered VM a pending key that is not its own (a rogue's) is not the end:
        # the VM's console may show its own key in a moment
        if verdict["ok"] or (not verdict["transient"] and not live) or \
                time.monotonic() >= deadline:
            break
        time.sleep(min(2.0, max(deadline - time.monotonic(), 0.1)))
    base = {"minion": name, "fingerprint": verdict["fingerprint"],
            "server_id": (verdict["server"] or {}).get("id")}
    if not verdict["ok"]:
        if events:
            events("key/%s/refused" % name, "not accepting %s: %s" % (name, verdict["reason"]),
                   reason=verdict["reason"], action="pending", **base)
        raise InvalidInput("not accepting %s: %s" % (name, verdict["reason"]))
    if live:
        registry.update(name, state="accepted", server_id=base["server_id"],
                        fingerprint=base["fingerprint"], accepted_at=time.time())
    keys.accept(name)
    if events:
        events("key/%s/accepted" % name, "accepted %s: %s" % (name, verdict["reason"]),
               reason=verdict["reason"], **base)
    return dict(base, result=True, accepted=True, comment=verdict["reason"])


def rebuild_minion(conf, provider, keys, name, wait_minion, image=None, timeout=600, events=None,
                   registry=None):
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
    if old["status"] not in ("ACTIVE", "SHUTOFF", "running", "stopped"):
        raise InvalidInput("%s (%s) is %s: it is rebuilt only when ACTIVE or SHUTOFF; nothing was "
                           "changed" % (name, old["id"], old["status"]))
    nonce = new_nonce()
    if registry is not None:
        # the pack hands the key over itself: the reactor leaves the id alone meanwhile
        nonce = registry.expect(name, provider.name, "rebuild_minion",
                                config.reactor(conf)["expect_ttl"], provision=False,
                                state="preseeded", server_id=old["id"])["nonce"]
    spec, _ = vm_spec(conf, name, None, nonce, provider.profile)
    started = time.monotonic()

    def forget():
        if registry is not None:
            entry = registry.get(name)
            if entry and entry.get("nonce") == nonce:
                registry.forget(name)

    try:
        desc = provider.rebuild(old["id"], image=image or spec.get("image") or None,
                                user_data=spec["user_data"], timeout=timeout)
    except VmopsError as exc:
        forget()
        still = keys.accepted_pub(name) is not None
        raise type(exc)("%s; the key of %s was not touched%s" % (
            exc, name, " (its minion keeps it)" if still else "")) from exc
    if events:
        events("rebuild/%s/active" % name, "%s rebuilt, ACTIVE on %s" % (name, desc.get("host")),
               server_id=desc["id"])
    found = trust.wait_for_key(provider, old["id"], nonce, timeout)
    finger = identity.fingerprint(found["pub"])
    handed = trust.handover(keys, name, found["pub"], events=events, what="rebuild %s" % name)
    wait_minion(name, max(timeout - (time.monotonic() - started), 30))
    forget()
    took = round(time.monotonic() - started, 2)
    if events:
        events("rebuild/%s/answering" % name, "the rebuilt %s answers" % name, duration=took)
    return {"result": True, "vm": name, "server_id": desc["id"], "fixed_ips": desc["fixed_ips"],
            "fingerprint": finger, "duration": took,
            "comment": "%s rebuilt in place; %s; its minion answers" % (name, handed)}
