"""Admission of new minions by the reactor: accept only what the cloud vouches for.

``salt/auth`` fires on every authentication attempt, so the reactor asks
:func:`gate` (cheap, no cloud call, in the reactor's own process) whether a
decision is due, and only then hands the minion id to :func:`decide` (the
``vmops.admit_minion`` runner), which looks at the cloud:

* a live registration (``registry``) of that id: exactly one server of that
  name, ACTIVE, carrying the registration's nonce, created after it;
* else an auto-provisioning rule (``vmops:autoprovision``) whose opt-in
  metadata the server carries, whose ``minion_id`` pattern the id matches,
  and whose ``max_age`` the server is younger than; a server is admitted once;
* and in both cases the key fingerprint the server printed on its console
  equals the pending key's.

Accepted by exact id (never a glob); refusals fire an audit event with the
reason and leave the key pending or reject it (``vmops:reactor:on_refused``).
On ``salt/minion/<id>/start`` of a minion admitted with ``provision`` set,
:func:`gate` answers yes once, and the reactor starts ``orch.provision_minion``
(sanity grain, highstate, result event).
"""

import collections
import logging
import time

from . import config, identity, minions, trust
from .errors import InvalidInput, VmopsError
from .registry import ADMITTED, is_live

log = logging.getLogger(__name__)


class Throttle:
    """At most one decision per id per ``interval``, and ``per_minute`` decisions overall.

    Bounded: the per-id table keeps the ``max_ids`` most recent ids (a flood of new ids
    evicts the oldest, it does not grow the table).
    """

    def __init__(self, max_ids=4096):
        self.last = collections.OrderedDict()
        self.recent = collections.deque()
        self.warned = 0.0
        self.max_ids = max_ids

    def allow(self, key, interval, per_minute, now=None):
        now = time.monotonic() if now is None else now
        while self.recent and self.recent[0] <= now - 60:
            self.recent.popleft()
        if now - self.last.get(key, -1e9) < interval:
            return False
        if per_minute and len(self.recent) >= per_minute:
            if now - self.warned > 60:
                self.warned = now
                log.warning("vmops: more than %d admission decisions in a minute: "
                            "pending keys wait (vmops:reactor:max_decisions_per_minute)",
                            per_minute)
            return False
        self.last[key] = now
        self.last.move_to_end(key)
        while len(self.last) > self.max_ids:
            self.last.popitem(last=False)
        if per_minute:
            self.recent.append(now)  # only budgeted calls use up the budget
        return True


# One per process: the reactor renders its SLS files in a single process.  Decisions and
# audit events have separate throttles: junk never uses up the decision budget.
THROTTLE = Throttle()
AUDIT = Throttle(max_ids=256)
AUDITS_PER_MINUTE = 10  # refusal audits for ids no decision is made for: each id once a minute


def _may_be_admitted(conf, entry, minion_id):
    """Could a decision admit this id at all?  Cheap: its registry entry and the rules' patterns.

    Without a registry entry and with no auto-provisioning rule whose ``minion_id`` matches,
    :func:`decide` can only refuse ("not expected"): the gate drops such ids without one.
    """
    if entry:
        return True
    return any(rule["minion_id"].fullmatch(minion_id) for rule in config.autoprovision_rules(conf))


def _event_id(tag, data):
    """The minion id of a ``salt/auth`` or ``salt/minion/<id>/start`` event."""
    minion_id = (data or {}).get("id")
    return minion_id if isinstance(minion_id, str) else None


def gate(conf, registry, tag, data, events, throttle=THROTTLE, now=None, audit=AUDIT):
    """Should the reactor act on this event?  Cheap: no cloud call.

    ``salt/auth`` with ``act: pend`` (or ``denied``: a second key for a pending
    id, see :func:`decide`): yes when the id is a plain minion id, no
    decision about it ran in the last ``retry_interval`` seconds, the overall
    budget allows it, and this very key was not refused for good recently.
    ``salt/minion/<id>/start``: yes, once, for a minion admitted with
    ``provision`` (the entry moves to ``provisioning``).
    """
    settings = config.reactor(conf)
    minion_id = _event_id(tag, data)
    if tag == "salt/auth":
        if data.get("act") not in ("pend", "denied") or minion_id is None:
            return False
        try:
            config.check_minion_id(minion_id, "minion id")
        except InvalidInput as exc:
            # audited (each id once a minute, AUDITS_PER_MINUTE in all, whatever the flood),
            # never handed on: any key call with it could match other keys
            if audit.allow("invalid:" + repr(minion_id), 60, AUDITS_PER_MINUTE):
                events("key/_invalid_/refused", "not accepting %r: %s" % (minion_id, exc),
                       minion=minion_id, reason=str(exc), action="pending", transient=False)
            return False
        entry = registry.get(minion_id) or {}  # one read per event: this is the hot path
        if entry.get("state") == "preseeded" and time.time() < entry.get("expires", 0):
            return False  # replace_vm / rebuild_minion hand this id's key over themselves
        if not _may_be_admitted(conf, entry, minion_id):
            # nothing could admit it: no decision, no cloud call, no budget used
            if audit.allow("unexpected:" + minion_id, 60, AUDITS_PER_MINUTE):
                events("key/%s/refused" % minion_id,
                       "%s is not expected: no registration, and no auto-provisioning rule "
                       "matches that id: no decision made" % minion_id, minion=minion_id,
                       action="pending", transient=False, reason="not expected")
            return False
        pub = data.get("pub")
        if pub and registry.refusal(minion_id, identity.fingerprint(pub), now):
            return False
        # a VM the pack registered does not queue behind a flood of ids that merely match a
        # rule's pattern: only the per-id interval applies to it
        budget = 0 if entry.get("state") == "expected" else int(settings["max_decisions_per_minute"])
        return throttle.allow(minion_id, settings["retry_interval"], budget)
    if tag.startswith("salt/minion/") and tag.endswith("/start"):
        if minion_id is None or tag != "salt/minion/%s/start" % minion_id:
            return False
        try:
            config.check_minion_id(minion_id, "minion id")
        except InvalidInput:
            return False
        entry = registry.get(minion_id)
        if not entry or entry.get("state") != "accepted" or not entry.get("provision"):
            return False
        with registry.locked(minion_id):
            entry = registry.get(minion_id)
            if not entry or entry.get("state") != "accepted":
                return False
            entry["state"] = "provisioning"
            entry["provision_started"] = time.time() if now is None else now
            registry.save(entry)
        events("provision/%s/started" % minion_id,
               "%s started: checking and highstating it" % minion_id,
               minion=minion_id, source=entry.get("source"))
        return True
    return False


def _basis(conf, registry, provider_for, name, now):
    """(basis for vouch, provider, entry-or-rule) or raise _Refusal."""
    entry = registry.get(name)
    expired_note = ""
    if entry and entry.get("state") == "expected":
        if is_live(entry, now):
            return minions.registration_basis(entry), provider_for(entry["cloud"]), entry
        expired_note = " (its registration by %s expired)" % entry.get("source")
    if entry and entry.get("state") == "preseeded" and now < entry.get("expires", 0):
        raise _Refusal("the key of %s was handed over by %s itself: a pending key for %s is not "
                       "the VM's" % (name, entry.get("source"), name))
    found = []
    seen = {}  # cloud -> (provider, servers of that name): one lookup per cloud
    for rule in config.autoprovision_rules(conf):
        if not rule["minion_id"].fullmatch(name):
            continue
        if rule["cloud"] not in seen:
            prov = provider_for(rule["cloud"])
            seen[rule["cloud"]] = (prov, prov.servers_named(name))
        prov, servers = seen[rule["cloud"]]
        marked = [s for s in servers
                  if all((s.get("metadata") or {}).get(k) == v for k, v in rule["metadata"].items())]
        if marked:
            found.append((rule, prov, marked))
    if not found:
        raise _Refusal("%s is not expected: no live registration%s, and no auto-provisioning rule "
                       "matches a server of that name" % (name, expired_note))
    clouds = sorted({prov.name for _, prov, _ in found})
    if len(clouds) > 1:
        raise _Refusal("servers named %s ask for auto-provisioning on several clouds (%s)"
                       % (name, ", ".join(clouds)))
    rule, prov, marked = found[0]
    if entry and entry.get("state") in ADMITTED and entry.get("server_id") in {s["id"] for s in marked}:
        raise _Refusal("server %s (%s) was admitted once already (%s): forget it "
                       "(salt-run vmops.forget %s) to admit a new key for it"
                       % (name, entry["server_id"], entry.get("source"), name))
    basis = {"kind": "rule", "rule": rule["rule"], "metadata": rule["metadata"],
             "max_age": rule["max_age"]}
    return basis, prov, rule


class _Refusal(Exception):
    pass


def decide(conf, keys, registry, provider_for, name, events, now=None):
    """Accept the pending key of ``name`` when the cloud vouches for it; else refuse and say why.

    ``provider_for(cloud)`` gives the provider of a cloud profile.  Returns
    ``{"result", "accepted", "minion", "reason", "action", ...}``; ``result`` is
    False for a refusal.
    """
    config.check_minion_id(name, "minion id")
    with registry.deciding(name) as mine:
        if not mine:
            return {"result": True, "accepted": False, "minion": name, "action": None,
                    "reason": "another decision about %s is running" % name}
        return _decide(conf, keys, registry, provider_for, name, events, now)


def _decide(conf, keys, registry, provider_for, name, events, now):
    settings = config.reactor(conf)
    now = time.time() if now is None else now
    status = keys.status(name)
    # keys Salt denied for this id: another key is pending or accepted under it.  Read
    # from the master's key store, never from event data (minions can fire events).
    denied = [pub for pub in keys.denied_pubs(name)
              if not registry.refusal(name, identity.fingerprint(pub), now)][:5]
    if status == "accepted":
        for pub in denied:
            _refuse(settings, keys, registry, events, _out(name, pub),
                    "a different key is already accepted for %s: the reactor never replaces an "
                    "accepted key" % name, False, now, pending=False)
        return {"result": True, "accepted": False, "minion": name, "action": None,
                "reason": "the key of %s is accepted: nothing to decide" % name}
    entry = registry.get(name)
    if is_live(entry, now):
        # a VM the pack booted prints its own key with the registration's nonce: that key is
        # written as the id's, however many other keys (rogues') are pending or denied
        try:
            found = trust.registered_key(provider_for(entry["cloud"]), name, entry, now,
                                         settings["clock_skew"])
        except VmopsError as exc:
            found = {"pub": None, "transient": True, "reason": "cannot ask the cloud: %s" % exc}
        if found["pub"]:
            return trust.admit_registered(keys, registry, name, found, events)
        if not found["transient"]:
            out = {"minion": name, "fingerprint": None, "basis": "registration by %s"
                   % entry.get("source"), "server_id": (found.get("server") or {}).get("id")}
            events("key/%s/refused" % name, "not accepting %s: %s" % (name, found["reason"]),
                   reason=found["reason"], action="pending", transient=False, **out)
            return dict(out, result=False, accepted=False, action="pending", transient=False,
                        reason=found["reason"])
    last = None
    if status == "pending":
        last = _decide_key(settings, conf, keys, registry, provider_for, name, events, now,
                           keys.pending_pub(name), pending=True)
        if last["accepted"]:
            return last
    # A host that claimed the id first holds it pending, and Salt denies the real VM's
    # key: when the cloud vouches for a denied key, it takes the id.
    for pub in denied:
        last = _decide_key(settings, conf, keys, registry, provider_for, name, events, now, pub,
                           pending=False)
        if last["accepted"]:
            return last
    return last or {"result": True, "accepted": False, "minion": name, "action": None,
                    "reason": "the key of %s is %s: nothing to decide" % (name, status or "gone")}


def _out(name, pub):
    return {"minion": name, "fingerprint": identity.fingerprint(pub), "server_id": None,
            "basis": None}


def _decide_key(settings, conf, keys, registry, provider_for, name, events, now, pub, pending):
    """Vouch for one key of ``name`` (the pending one, or one Salt denied) and accept it."""
    out = _out(name, pub)
    remembered = registry.refusal(name, out["fingerprint"], now)
    if remembered:
        return dict(out, result=False, accepted=False, action="pending",
                    reason="refused recently: %s" % remembered)
    transient = False
    try:
        basis, prov, source = _basis(conf, registry, provider_for, name, now)
        out["basis"] = ("registration by %s" % source["source"] if basis["kind"] == "registration"
                        else "auto-provisioning rule %s" % basis["rule"])
        verdict = minions.vouch(prov, name, pub, require_fingerprint=settings["require_fingerprint"],
                                basis=basis, now=now, skew=settings["clock_skew"])
        out["server_id"] = (verdict["server"] or {}).get("id")
        if not verdict["ok"]:
            transient = verdict["transient"]
            raise _Refusal(verdict["reason"])
    except _Refusal as exc:
        return _refuse(settings, keys, registry, events, out, str(exc), transient, now, pending)
    except VmopsError as exc:  # the cloud did not answer: try again later
        return _refuse(settings, keys, registry, events, out, "cannot ask the cloud: %s" % exc,
                       True, now, pending)
    # admitted: record it before the key is accepted (the minion's start event follows)
    with registry.locked(name):
        entry = registry.get(name) if basis["kind"] == "registration" else None
        if entry is None:
            entry = {"minion": name, "cloud": prov.name, "source": "autoprovision:%s" % basis["rule"],
                     "registered": now, "expires": now, "nonce": None,
                     "provision": source["provision"], "level": source["level"]}
        entry.update(state="accepted", server_id=out["server_id"], fingerprint=out["fingerprint"],
                     accepted_at=now)
        registry.save(entry)
    reason = "%s: %s" % (out["basis"], verdict["reason"])
    if pending:
        keys.accept(name)
    else:
        # in place of the other host's pending key, which goes (with the denied ones)
        keys.preseed(name, pub, rotate=False)
        reason += "; it replaces a pending key the cloud does not vouch for"
    if keys.accepted_pub(name) != pub:  # the key changed under us: undo
        keys.delete(name, rotate=False)
        registry.update(name, state="failed")
        return _refuse(settings, keys, registry, events, out,
                       "the key of %s changed while it was being checked" % name, False, now,
                       pending=False)
    registry.clear_refusal(name)
    events("key/%s/accepted" % name, "accepted %s (%s)" % (name, reason), reason=reason,
           provision=entry["provision"], **out)
    return dict(out, result=True, accepted=True, action="accepted", reason=reason,
                provision=entry["provision"])


def _refuse(settings, keys, registry, events, out, reason, transient, now, pending=True):
    """Audit a refusal; a pending key refused for good is remembered, and rejected if so set."""
    action = "pending" if pending else "denied"
    if not transient:
        registry.remember_refusal(out["minion"], out["fingerprint"], reason,
                                  now + settings["refused_backoff"])
        if pending and settings["on_refused"] == "reject":
            keys.reject(out["minion"])
            action = "rejected"
    events("key/%s/refused" % out["minion"],
           "not accepting %s (%s): %s" % (out["minion"], action, reason),
           reason=reason, action=action, transient=transient, **out)
    return dict(out, result=False, accepted=False, action=action, transient=transient,
                reason=reason)


# ---------------------------------------------------------------------- provisioning


def provision_check(conf, registry, name, wait_minion, grain_of):
    """The start reaction's first step: the minion answers and its sanity grain is right."""
    settings = config.reactor(conf)
    entry = registry.get(config.check_minion_id(name, "minion id"))
    if not entry or entry.get("state") != "provisioning":
        raise InvalidInput("%s is not being provisioned by the reactor (state %s)"
                           % (name, (entry or {}).get("state")))
    try:
        wait_minion(name, settings["minion_timeout"])
    except VmopsError:
        # a start event for a minion that does not answer: early, or forged (any minion can
        # fire salt/minion/<id>/start): re-arm for its real start, a few times at most
        rearms = entry.get("rearmed", 0) + 1
        if rearms <= REARM_LIMIT:
            registry.update(name, state="accepted", rearmed=rearms)
            raise VmopsError("%s did not answer after its start event (an early or forged "
                             "start): provisioning waits for its real start (%d of %d)"
                             % (name, rearms, REARM_LIMIT)) from None
        raise
    grain = settings["sanity_grain"]
    expected = entry.get("level")
    if expected is None:
        return {"result": True, "minion": name, "comment": "%s answers (no %s expected)"
                % (name, grain)}
    value = minions.check_grain(grain_of, name, grain, expected)
    return {"result": True, "minion": name, grain: value,
            "comment": "%s answers; %s is %r" % (name, grain, value)}


REARM_LIMIT = 3


def provision_done(registry, name, result, events, now=None):
    """The start reaction's last step: record the outcome and fire ``vmops/provision/<id>/done``."""
    now = time.time() if now is None else now
    entry = registry.get(config.check_minion_id(name, "minion id")) or {}
    if not result and entry.get("state") == "accepted" and entry.get("rearmed"):
        comment = ("%s did not answer after a start event: provisioning is re-armed for its "
                   "real start" % name)
        events("provision/%s/rearmed" % name, comment, minion=name, state="accepted",
               rearmed=entry["rearmed"])
        return {"result": True, "minion": name, "provisioned": False, "state": "accepted",
                "comment": comment}
    state = "provisioned" if result else "failed"
    if entry:
        registry.update(name, state=state, provisioned_at=now)
    took = round(now - entry["accepted_at"], 2) if entry.get("accepted_at") else None
    comment = ("%s is highstated" % name if result
               else "provisioning %s failed: see the orchestration's return" % name)
    events("provision/%s/done" % name, comment, minion=name, result=bool(result), state=state,
           source=entry.get("source"), server_id=entry.get("server_id"),
           seconds_since_accept=took)
    return {"result": True, "minion": name, "provisioned": bool(result), "state": state,
            "comment": comment}
