"""Whose key is a minion id's: the one the cloud shows, handed over in one move.

Every path that gives a minion id a new key goes through here: ``replace_vm``,
``rebuild_minion``, ``vmops.accept_minion`` and ``orch.create_vm`` (a VM the pack
registered), and the admission reactor for registered VMs.

The new VM makes its own key pair (no private key is in its user-data); the
pack's user-data makes it print the public key on its console, tagged with the
run's nonce (``identity.print_pubkey_cmd``).  :func:`wait_for_key` reads it back
through the cloud's API from the one server the run booted (by id: during a
replacement two servers carry the name), after checking that server's state,
project and nonce.  :func:`handover` then makes it the accepted key of the id:

* the key record is overwritten in place, never deleted first: Salt's auth
  handler writes a pending key only for an id with no record at all, so a minion
  authenticating at that instant (the old VM's, the new VM's, a rogue's) cannot
  take the id in a gap; the write is read back and re-asserted;
* denied and pending keys of the id go: any number of rogue keys is irrelevant,
  the pack writes the key it wants rather than accepting what is pending;
* the master's AES key is rotated and the handover waits until it has been: a
  minion that held the id's session before (the old VM's) cannot decrypt the
  next publication, so no job meant for the new VM (its highstate, the deploy)
  can run on the old one.  The wait is at most the master's ``loop_interval``.

What someone holding the user-data gets: the master's address, the grains, a
used-up nonce.  Nothing that authenticates.
"""

import datetime
import logging
import time

from . import config, identity, waiting
from . import events as tags
from .errors import InvalidInput, Timeout, VmopsError
from .registry import NONCE_KEY

log = logging.getLogger(__name__)


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
            return "server %s (%s) does not carry the nonce of the registration %s made" % (
                server["name"],
                server["id"],
                basis["source"],
            )
        if created is None or created < basis["registered"] - skew:
            return "server %s (%s) was created at %s, before %s registered it" % (
                server["name"],
                server["id"],
                server.get("created"),
                basis["source"],
            )
        return None
    # an auto-provisioning rule: the opt-in marker, and a server young enough
    wanted = basis.get("metadata") or {}
    have = server.get("metadata") or {}
    missing = sorted(k for k, v in wanted.items() if have.get(k) != str(v))
    if missing:
        return "server %s (%s) does not carry the metadata rule %s asks for (%s)" % (
            server["name"],
            server["id"],
            basis["rule"],
            ", ".join(missing),
        )
    if created is None or created < now - basis["max_age"] - skew:
        return "server %s (%s) was created at %s, more than rule %s's max_age (%ss) ago" % (
            server["name"],
            server["id"],
            server.get("created"),
            basis["rule"],
            basis["max_age"],
        )
    return None


def vouch(
    provider, name, pub_pem, require_fingerprint=True, basis=None, now=None, skew=5, servers=None
):
    """Does the cloud vouch for ``pub_pem`` being the key of VM ``name``?

    Returns ``{"ok", "reason", "transient", "server", "fingerprint"}``.  The cloud
    vouches when exactly one server has that name, it is ACTIVE, it fits
    ``basis`` (a registration: carries its nonce and was created after it; an
    auto-provisioning rule: carries the rule's metadata and is younger than its
    max_age), and the first minion-key fingerprint line its console printed
    (cloud-init's, at first boot) equals the key's.  ``transient``: the answer may change by
    itself (the server is still building, its console shows no fingerprint yet).
    ``servers``: the servers named ``name`` the caller listed a moment ago (not again).
    """
    now = time.time() if now is None else now
    finger = identity.fingerprint(pub_pem)
    out = {"ok": False, "server": None, "fingerprint": finger, "transient": False}
    if servers is None:
        servers = provider.servers_named(name, brief=True)
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
    unread = None
    try:
        printed = identity.console_fingerprints(provider.console_output(server["id"]))
    except VmopsError as exc:
        printed, unread = [], exc
        log.info("vmops: no console output for %s: %s", name, exc)
    if not printed:
        if require_fingerprint:
            # the audit tells a cloud that cannot answer from a console without the key
            out["reason"] = (
                "the console of server %s cannot be read (%s)" % (name, unread)
                if unread is not None
                else "server %s printed no minion key fingerprint on its console" % name
            )
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
    out["reason"] = (
        "server %s (%s) is ACTIVE and its console shows this key" % (name, server["id"])
        if printed
        else "server %s (%s) is ACTIVE" % (name, server["id"])
    )
    return out


def registration_basis(entry):
    """What ``vouch`` checks a server against for a live registration."""
    return {
        "kind": "registration",
        "nonce": entry["nonce"],
        "registered": entry["registered"],
        "source": entry["source"],
    }


def key_evidence(provider, server_id, tag, nonce=None, server=None):
    """What the cloud says now about the key of server ``server_id``.

    Returns ``{"pub", "reason", "transient", "server"}``: ``pub`` (PEM) when the server
    is ACTIVE, of a project this master trusts, carries ``nonce`` in its metadata
    (when given) and its console printed a public key with ``tag``.  ``server``: its
    description, when the caller has just listed it.
    """
    out = {"pub": None, "transient": False, "server": server}
    if server is None:
        try:
            server = out["server"] = provider.describe(server_id)
        except VmopsError as exc:
            out.update(reason="server %s cannot be seen: %s" % (server_id, exc), transient=True)
            return out
    foreign = getattr(provider, "foreign_project", None)
    problem = foreign(server) if foreign is not None else None
    if problem:
        out["reason"] = problem
        return out
    if nonce and (server.get("metadata") or {}).get(NONCE_KEY) != nonce:
        out["reason"] = "server %s (%s) does not carry this run's nonce" % (
            server.get("name"),
            server_id,
        )
        return out
    if server["status"] != "ACTIVE":
        out["reason"] = "server %s (%s) is %s, not ACTIVE" % (
            server.get("name"),
            server_id,
            server["status"],
        )
        out["transient"] = server["status"] in ("BUILD", "REBUILD", "pending")
        return out
    try:
        text = provider.console_output(server_id)
    except VmopsError as exc:
        out.update(
            reason="no console output for server %s yet (%s)" % (server_id, exc), transient=True
        )
        return out
    pub = identity.console_pubkey(text, tag)
    if pub is None:
        out.update(
            reason="server %s (%s) has not printed its minion's public key on its console "
            "yet" % (server.get("name"), server_id),
            transient=True,
        )
        return out
    out.update(
        pub=pub,
        reason="server %s (%s) is ACTIVE and its console shows the key %s"
        % (server.get("name"), server_id, identity.fingerprint(pub)),
    )
    return out


def registered_key(provider, name, entry, now=None, skew=5):
    """The key evidence for a VM the pack registered (``entry``: its live registration).

    The one server named ``name`` that carries the registration's nonce, created after
    the registration, and the public key its console printed with that nonce.  Same
    answer shape as :func:`key_evidence`; ``transient`` also when the console shows no
    tagged key (a VM booted by hand with other user-data: the caller may fall back to
    the fingerprint check of the pending key).
    """
    now = time.time() if now is None else now
    nonce = entry["nonce"]
    named = provider.servers_named(name, brief=True)
    if len(named) > 1:  # which one is the VM is not for the pack to guess
        return {
            "pub": None,
            "server": None,
            "transient": False,
            "reason": "%d servers are named %s on cloud %s" % (len(named), name, provider.name),
        }
    servers = [s for s in named if (s.get("metadata") or {}).get(NONCE_KEY) == nonce]
    if not servers:
        return {
            "pub": None,
            "server": None,
            "transient": not named,
            "reason": "no server named %s yet" % name
            if not named
            else "server %s (%s) does not carry the nonce of the registration %s made"
            % (name, named[0]["id"], entry.get("source")),
        }
    created = created_epoch(servers[0])
    if created is None or created < entry["registered"] - skew:
        return {
            "pub": None,
            "server": servers[0],
            "transient": False,
            "reason": "server %s (%s) was created at %s, before %s registered it"
            % (name, servers[0]["id"], servers[0].get("created"), entry.get("source")),
        }
    return key_evidence(provider, servers[0]["id"], nonce, nonce, server=servers[0])


def wait_for_key(provider, server_id, tag, timeout, nonce=None, interval=0.5):
    """The public key server ``server_id`` printed with ``tag``; waits for it up to ``timeout``.

    Raises InvalidInput when the cloud will not vouch (wrong project or nonce, server in
    ERROR), Timeout when the evidence did not show in time.
    """
    started = time.monotonic()
    deadline = started + float(timeout)
    while True:
        found = key_evidence(provider, server_id, tag, nonce)
        if found["pub"]:
            return found
        if not found["transient"]:
            raise InvalidInput(
                "the cloud does not vouch for a key of server %s: %s" % (server_id, found["reason"])
            )
        if time.monotonic() >= deadline:
            raise Timeout(
                "no key evidence from server %s within %ss: %s"
                % (server_id, timeout, found["reason"])
            )
        # a fifth of the time waited so far (the key shows ~0.3 s after ACTIVE here, ~30 s
        # on a real cloud): found soon after it shows, without reading the console in a loop
        pause = min(max(interval, (time.monotonic() - started) * waiting.SHARE), 5.0)
        time.sleep(min(pause, max(deadline - time.monotonic(), 0.1)))


def handover(keys, name, pub, timeout=None, events=None, what="handover", force_rotation=False):
    """Make ``pub`` the accepted key of ``name``; the id's earlier session ends for certain.

    ``keys`` is a MasterKeys.  Idempotent: with ``pub`` accepted already it only makes
    sure the AES rotation it asked for has happened.  ``force_rotation``: rotate even
    then (a run killed between writing the key and asking for the rotation resumes with
    this set: the key it finds is already the new one).  Returns a comment.
    """
    config.check_minion_id(name, "minion id")
    finger = identity.fingerprint(pub)
    before = keys.accepted_pub(name)
    same = before is not None and before.strip() == pub.strip()
    if same and not keys.rotation_pending() and not force_rotation:
        return "the key of %s is already %s" % (name, finger)
    if not same:
        keys.preseed(name, pub, settle=0)  # held while the rotation is awaited
    if force_rotation:
        keys.request_rotation()
    if events:
        events(
            tags.key(name, "handover"),
            "%s: the key of %s is now %s; ending the id's earlier "
            "sessions (AES key rotation)" % (what, name, finger),
            minion=name,
            fingerprint=finger,
        )
    # the key is read back (re-asserted if lost) while the rotation is awaited, and the
    # wait lasts until it held for a settle time: the two waits overlap
    waited = keys.wait_rotated(timeout, hold={name: pub})
    keys.assert_key(name, pub, settle=0)  # still ours after the rotation
    return "the key of %s is now %s; the master rotated its AES key (%.1fs)" % (
        name,
        finger,
        waited,
    )


def restore(keys, name, old_pub, timeout=None, force_rotation=False):
    """Give ``name`` its old key back (a rollback): first thing, before any cleanup."""
    if old_pub:
        return handover(
            keys, name, old_pub, timeout, what="rollback", force_rotation=force_rotation
        )
    keys.delete(name, rotate=False)
    keys.request_rotation()  # whoever held the id's session (the new VM) loses it
    keys.wait_rotated(timeout)
    return "the key of %s is deleted (it had none before)" % name


def admit_registered(keys, registry, name, found, events=None, now=None):
    """Accept the key a registered VM printed on its console (:func:`registered_key`).

    Written as the id's accepted key whatever is pending or denied (rogues' keys go);
    no key was accepted before, so no session needs ending.  The registration records
    the admission first (the minion's start event follows).
    """
    pub, server = found["pub"], found["server"]
    finger = identity.fingerprint(pub)
    entry = registry.admit(name, server["id"], finger, now)
    if entry is None:  # used or withdrawn by another decision meanwhile
        return None
    keys.preseed(name, pub, rotate=False)
    registry.clear_refusal(name)
    base = {"minion": name, "fingerprint": finger, "server_id": server["id"]}
    reason = "registration by %s: %s" % (entry.get("source"), found["reason"])
    if events:
        events(
            tags.key(name, "accepted"),
            "accepted %s (%s)" % (name, reason),
            reason=reason,
            provision=entry.get("provision"),
            **base,
        )
    return dict(
        base,
        result=True,
        accepted=True,
        action="accepted",
        reason=reason,
        comment=reason,
        provision=entry.get("provision"),
    )
