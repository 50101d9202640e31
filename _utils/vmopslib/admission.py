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
from . import events as tags
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
                log.warning(
                    "vmops: more than %d admission decisions in a minute: "
                    "pending keys wait (vmops:reactor:max_decisions_per_minute)",
                    per_minute,
                )
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
                events(
                    tags.key("_invalid_", "refused"),
                    "not accepting %r: %s" % (minion_id, exc),
                    minion=minion_id,
                    reason=str(exc),
                    action="pending",
                    transient=False,
                )
            return False
        entry = registry.get(minion_id) or {}  # one read per event: this is the hot path
        if entry.get("state") == "preseeded" and time.time() < entry.get("expires", 0):
            return False  # replace_vm / rebuild_minion hand this id's key over themselves
        if not _may_be_admitted(conf, entry, minion_id):
            # nothing could admit it: no decision, no cloud call, no budget used
            if audit.allow("unexpected:" + minion_id, 60, AUDITS_PER_MINUTE):
                events(
                    tags.key(minion_id, "refused"),
                    "%s is not expected: no registration, and no auto-provisioning rule "
                    "matches that id: no decision made" % minion_id,
                    minion=minion_id,
                    action="pending",
                    transient=False,
                    reason="not expected",
                )
            return False
        pub = data.get("pub")
        if pub and registry.refusal(minion_id, identity.fingerprint(pub), now):
            return False
        # a VM the pack registered does not queue behind a flood of ids that merely match a
        # rule's pattern: only the per-id interval applies to it
        budget = (
            0 if entry.get("state") == "expected" else int(settings["max_decisions_per_minute"])
        )
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
            return False  # cheap look first: most start events are other minions'
        entry = registry.start_provisioning(minion_id, now)
        if entry is None:
            return False
        events(
            tags.provision(minion_id, "started"),
            "%s started: checking and highstating it" % minion_id,
            minion=minion_id,
            source=entry.get("source"),
        )
        return True
    return False


class _Refusal(Exception):
    pass


class Admission:
    """One place for the accept decision: the reactor's and the operator's.

    ``provider_for(cloud)`` gives the provider of a cloud profile.  The reactor calls
    :meth:`decide` (a registration or an auto-provisioning rule must vouch; refusals
    are remembered, and rejected with ``on_refused: reject``).  The operator's
    ``vmops.accept_minion`` calls :meth:`accept` with ``operator`` set to its cloud's
    provider: a live registration on that cloud vouches as for the reactor; else
    exactly one server of that name on that cloud and its console's fingerprint do
    (rules are the reactor's business); it waits for lagging evidence and raises
    when refused.  Both refuse an id the pack hands over itself (``preseeded``),
    take a denied key the cloud vouches for in place of a rogue's pending one, and
    check after accepting that the key did not change under them.
    """

    def __init__(
        self,
        conf,
        keys,
        registry,
        provider_for,
        events=None,
        now=None,
        operator=None,
        require_fingerprint=None,
    ):
        self.conf = conf or {}
        self.settings = config.reactor(self.conf)
        if require_fingerprint is not None:
            self.settings["require_fingerprint"] = bool(require_fingerprint)
        self.keys = keys
        self.registry = registry
        self.operator = operator
        self.provider_for = (lambda cloud: operator) if operator is not None else provider_for
        self.events = events if events is not None else (lambda tag, message, **data: None)
        self.now = time.time() if now is None else now
        self._named = {}  # name -> the servers _basis listed, for vouch

    # ------------------------------------------------------------------ entry points

    def decide(self, name):
        """The reactor's decision about ``name``'s keys; ``{"result", "accepted", "reason",
        "action", ...}`` with ``result`` False for a refusal."""
        config.check_minion_id(name, "minion id")
        with self.registry.deciding(name) as mine:
            if not mine:
                return {
                    "result": True,
                    "accepted": False,
                    "minion": name,
                    "action": None,
                    "transient": True,
                    "reason": "another decision about %s is running" % name,
                }
            return self._decide(name)

    def accept(self, name, wait=0):
        """The operator's accept of ``name``: waits up to ``wait`` seconds for a key and for
        the cloud's evidence; raises InvalidInput with the reason when refused."""
        config.check_minion_id(name, "minion id")
        deadline = time.monotonic() + max(float(wait or 0), 0)
        while True:
            self.now = time.time()
            status = self.keys.status(name)
            if status == "accepted":
                return {
                    "result": True,
                    "accepted": False,
                    "minion": name,
                    "comment": "%s is already accepted" % name,
                }
            if status is None and not self.keys.denied_pubs(name) and not self._live(name):
                if time.monotonic() >= deadline:
                    raise InvalidInput(
                        "no pending key for minion %s (key status: %s)" % (name, status)
                    )
                time.sleep(min(1.0, max(deadline - time.monotonic(), 0.1)))
                continue
            ret = self.decide(name)
            if ret.get("accepted"):
                return dict(ret, comment=ret["reason"])
            # the evidence may lag behind the key (EC2's console by minutes), and for a
            # registered VM a rogue's pending key is not the end: look again until ``wait`` ends
            again = ret.get("transient") or self._live(name)
            if self.keys.status(name) == "accepted" and ret.get("action") is None:
                return {
                    "result": True,
                    "accepted": False,
                    "minion": name,
                    "comment": "%s is already accepted" % name,
                }
            if not again or time.monotonic() >= deadline:
                raise InvalidInput("not accepting %s: %s" % (name, ret.get("reason")))
            time.sleep(min(2.0, max(deadline - time.monotonic(), 0.1)))

    # ------------------------------------------------------------------ the decision

    def _live(self, name):
        entry = self.registry.get(name)
        if not is_live(entry, self.now):
            return None
        if self.operator is not None and entry.get("cloud") != self.operator.name:
            return None  # registered on another cloud than the one the operator named
        return entry

    def _decide(self, name):
        status = self.keys.status(name)
        # keys Salt denied for this id: another key is pending or accepted under it.  Read
        # from the master's key store, never from event data (minions can fire events).
        denied = [
            pub
            for pub in self.keys.denied_pubs(name)
            if not self.registry.refusal(name, identity.fingerprint(pub), self.now)
        ][:5]
        if status == "accepted":
            for pub in denied:
                self._refuse(
                    _out(name, pub),
                    "a different key is already accepted for %s: the "
                    "pack never replaces an accepted key this way" % name,
                    False,
                    pending=False,
                )
            return {
                "result": True,
                "accepted": False,
                "minion": name,
                "action": None,
                "reason": "the key of %s is accepted: nothing to decide" % name,
            }
        entry = self._live(name)
        if entry:
            # a VM the pack booted prints its own key with the registration's nonce: that key is
            # written as the id's, however many other keys (rogues') are pending or denied
            try:
                found = trust.registered_key(
                    self.provider_for(entry["cloud"]),
                    name,
                    entry,
                    self.now,
                    self.settings["clock_skew"],
                )
            except VmopsError as exc:
                found = {"pub": None, "transient": True, "reason": "cannot ask the cloud: %s" % exc}
            if found["pub"]:
                admitted = trust.admit_registered(
                    self.keys, self.registry, name, found, self.events, self.now
                )
                if admitted:
                    return admitted
            elif not found["transient"]:
                out = {
                    "minion": name,
                    "fingerprint": None,
                    "server_id": (found.get("server") or {}).get("id"),
                    "basis": "registration by %s" % entry.get("source"),
                }
                # no key to remember or reject: it is the server that does not fit
                return self._refuse(out, found["reason"], False, remember=False)
        last = None
        if status == "pending":
            last = self._decide_key(name, self.keys.pending_pub(name), pending=True)
            if last["accepted"]:
                return last
        # A host that claimed the id first holds it pending, and Salt denies the real VM's
        # key: when the cloud vouches for a denied key, it takes the id.
        for pub in denied:
            last = self._decide_key(name, pub, pending=False)
            if last["accepted"]:
                return last
        return last or {
            "result": True,
            "accepted": False,
            "minion": name,
            "action": None,
            "transient": bool(entry),
            "reason": "the key of %s is %s: nothing to decide" % (name, status or "gone"),
        }

    def _basis(self, name):
        """(basis for vouch, provider, registration-or-rule) or raise _Refusal."""
        entry = self.registry.get(name)
        expired_note = ""
        if entry and entry.get("state") == "expected":
            if self._live(name):
                return (trust.registration_basis(entry), self.provider_for(entry["cloud"]), entry)
            expired_note = " (its registration by %s expired)" % entry.get("source")
        if entry and entry.get("state") == "preseeded" and self.now < entry.get("expires", 0):
            raise _Refusal(
                "the key of %s is being handed over by %s itself: a pending key for %s "
                "is not the VM's" % (name, entry.get("source"), name)
            )
        if self.operator is not None:
            # the operator's own call: exactly one server of that name on the named cloud
            return {"kind": "operator"}, self.operator, None
        found = []
        seen = {}  # cloud -> (provider, servers of that name): one lookup per cloud
        for rule in config.autoprovision_rules(self.conf):
            if not rule["minion_id"].fullmatch(name):
                continue
            if rule["cloud"] not in seen:
                prov = self.provider_for(rule["cloud"])
                seen[rule["cloud"]] = (prov, prov.servers_named(name, brief=True))
            prov, servers = seen[rule["cloud"]]
            marked = [
                s
                for s in servers
                if all((s.get("metadata") or {}).get(k) == v for k, v in rule["metadata"].items())
            ]
            if marked:
                found.append((rule, prov, marked))
        if not found:
            raise _Refusal(
                "%s is not expected: no live registration%s, and no auto-provisioning "
                "rule matches a server of that name" % (name, expired_note)
            )
        clouds = sorted({prov.name for _, prov, _ in found})
        if len(clouds) > 1:
            raise _Refusal(
                "servers named %s ask for auto-provisioning on several clouds (%s)"
                % (name, ", ".join(clouds))
            )
        rule, prov, marked = found[0]
        self._named[name] = seen[rule["cloud"]][1]  # vouch looks at these, not a new list
        if (
            entry
            and entry.get("state") in ADMITTED
            and entry.get("server_id") in {s["id"] for s in marked}
        ):
            raise _Refusal(
                "server %s (%s) was admitted once already (%s): forget it "
                "(salt-run vmops.forget %s) to admit a new key for it"
                % (name, entry["server_id"], entry.get("source"), name)
            )
        basis = {
            "kind": "rule",
            "rule": rule["rule"],
            "metadata": rule["metadata"],
            "max_age": rule["max_age"],
        }
        return basis, prov, rule

    def _decide_key(self, name, pub, pending):
        """Vouch for one key of ``name`` (the pending one, or one Salt denied) and accept it."""
        out = _out(name, pub)
        remembered = self.registry.refusal(name, out["fingerprint"], self.now)
        if remembered:
            return _refused(out, "refused recently: %s" % remembered, "pending", False)
        transient = False
        try:
            basis, prov, source = self._basis(name)
            out["basis"] = {
                "registration": lambda: "registration by %s" % source["source"],
                "rule": lambda: "auto-provisioning rule %s" % basis["rule"],
                "operator": lambda: "the operator's accept",
            }[basis["kind"]]()
            verdict = trust.vouch(
                prov,
                name,
                pub,
                require_fingerprint=self.settings["require_fingerprint"],
                basis=basis if basis["kind"] != "operator" else None,
                now=self.now,
                skew=self.settings["clock_skew"],
                servers=self._named.pop(name, None),
            )
            out["server_id"] = (verdict["server"] or {}).get("id")
            if not verdict["ok"]:
                transient = verdict["transient"]
                raise _Refusal(verdict["reason"])
        except _Refusal as exc:
            return self._refuse(out, str(exc), transient, pending)
        except VmopsError as exc:  # the cloud did not answer: try again later
            return self._refuse(out, "cannot ask the cloud: %s" % exc, True, pending)
        # admitted: recorded before the key is accepted (the minion's start event follows)
        entry = None
        if basis["kind"] == "registration":
            entry = self.registry.admit(name, out["server_id"], out["fingerprint"], self.now)
            if entry is None:
                return self._refuse(
                    out,
                    "the registration of %s was used or withdrawn meanwhile" % name,
                    True,
                    pending,
                )
        elif basis["kind"] == "rule":
            entry = self.registry.admit(
                name,
                out["server_id"],
                out["fingerprint"],
                self.now,
                rule_entry={
                    "cloud": prov.name,
                    "source": "autoprovision:%s" % basis["rule"],
                    "provision": source["provision"],
                    "level": source["level"],
                    "orchestration": source.get("orchestration"),
                },
            )
        reason = "%s: %s" % (out["basis"], verdict["reason"])
        if not pending:
            reason += "; it replaces a pending key the cloud does not vouch for"
        try:
            # exactly the key the cloud vouched for, never "whatever is pending now" (a key
            # that changed while it was being checked is not accepted), read back and
            # re-asserted: Salt's key store deletes a record before it writes the new one,
            # and a minion authenticating in that moment writes its key as pending
            self.keys.preseed(name, pub, rotate=False)
        except VmopsError as exc:  # it keeps being replaced: undo
            self.keys.delete(name, rotate=False)
            if entry is not None:
                self.registry.mark_failed(name)
            return self._refuse(out, str(exc), False, pending=False)
        self.registry.clear_refusal(name)
        provision = bool(entry and entry.get("provision"))
        self.events(
            tags.key(name, "accepted"),
            "accepted %s (%s)" % (name, reason),
            reason=reason,
            provision=provision,
            **out,
        )
        return dict(
            out, result=True, accepted=True, action="accepted", reason=reason, provision=provision
        )

    def _refuse(self, out, reason, transient, pending=True, remember=True):
        """Audit a refusal.  The reactor remembers a pending key refused for good (and rejects
        it if so set); the operator's refusal changes nothing."""
        action = "pending" if pending else "denied"
        if remember and not transient and self.operator is None:
            self.registry.remember_refusal(
                out["minion"],
                out["fingerprint"],
                reason,
                self.now + self.settings["refused_backoff"],
            )
            if pending and self.settings["on_refused"] == "reject":
                self.keys.reject(out["minion"])
                action = "rejected"
        self.events(
            tags.key(out["minion"], "refused"),
            "not accepting %s (%s): %s" % (out["minion"], action, reason),
            reason=reason,
            action=action,
            transient=transient,
            **out,
        )
        return _refused(out, reason, action, transient)


def _refused(out, reason, action, transient):
    return dict(
        out, result=False, accepted=False, action=action, transient=transient, reason=reason
    )


def _out(name, pub):
    return {
        "minion": name,
        "fingerprint": identity.fingerprint(pub),
        "server_id": None,
        "basis": None,
    }


def decide(conf, keys, registry, provider_for, name, events, now=None):
    """The reactor's decision (``vmops.admit_minion``): see :class:`Admission`."""
    return Admission(conf, keys, registry, provider_for, events, now).decide(name)


def accept(conf, provider, keys, registry, name, events=None, wait=0, require_fingerprint=True):
    """The operator's accept (``vmops.accept_minion``) of ``name`` on ``provider``'s cloud:
    see :class:`Admission`.  ``registry`` None: nothing is registered."""
    if registry is None:
        import tempfile  # pylint: disable=import-outside-toplevel

        from .registry import Registry  # pylint: disable=import-outside-toplevel

        registry = Registry(tempfile.mkdtemp(prefix="vmops-registry-"))
    return Admission(
        conf,
        keys,
        registry,
        None,
        events,
        operator=provider,
        require_fingerprint=require_fingerprint,
    ).accept(name, wait)


# ---------------------------------------------------------------------- provisioning


def provision_check(conf, registry, name, wait_minion, grain_of):
    """The start reaction's first step: the minion answers and its sanity grain is right."""
    settings = config.reactor(conf)
    entry = registry.get(config.check_minion_id(name, "minion id"))
    if not entry or entry.get("state") != "provisioning":
        raise InvalidInput(
            "%s is not being provisioned by the reactor (state %s)"
            % (name, (entry or {}).get("state"))
        )
    try:
        wait_minion(name, settings["minion_timeout"])
    except VmopsError:
        # a start event for a minion that does not answer: early, or forged (any minion can
        # fire salt/minion/<id>/start): re-arm for its real start, a few times at most
        rearms = registry.rearm(name, REARM_LIMIT)
        if rearms is not None:
            raise VmopsError(
                "%s did not answer after its start event (an early or forged "
                "start): provisioning waits for its real start (%d of %d)"
                % (name, rearms, REARM_LIMIT)
            ) from None
        raise
    grain = config.sanity_grain(conf)
    expected = entry.get("level")
    if expected is None:
        return {
            "result": True,
            "minion": name,
            "comment": "%s answers (no %s expected)" % (name, grain),
        }
    value = minions.check_grain(grain_of, name, grain, expected)
    return {
        "result": True,
        "minion": name,
        grain: value,
        "comment": "%s answers; %s is %r" % (name, grain, value),
    }


REARM_LIMIT = 3


def provision_orchestration(conf, registry, name):
    """The orchestration that provisions ``name`` (its auto-provisioning rule's, else
    ``vmops:reactor:provision_orchestration``), or None: the runner
    ``vmops.provision_minion`` does it."""
    entry = registry.get(config.check_minion_id(name, "minion id")) or {}
    return entry.get("orchestration") or config.reactor(conf).get("provision_orchestration")


def provision_done(registry, name, result, events, now=None):
    """The start reaction's last step: record the outcome and fire ``vmops/provision/<id>/done``."""
    now = time.time() if now is None else now
    entry = registry.get(config.check_minion_id(name, "minion id")) or {}
    if not result and entry.get("state") == "accepted" and entry.get("rearmed"):
        comment = (
            "%s did not answer after a start event: provisioning is re-armed for its "
            "real start" % name
        )
        events(
            tags.provision(name, "rearmed"),
            comment,
            minion=name,
            state="accepted",
            rearmed=entry["rearmed"],
        )
        return {
            "result": True,
            "minion": name,
            "provisioned": False,
            "state": "accepted",
            "comment": comment,
        }
    state = "provisioned" if result else "failed"
    if entry:
        registry.finish_provisioning(name, result, now)
    took = round(now - entry["accepted_at"], 2) if entry.get("accepted_at") else None
    comment = (
        "%s is highstated" % name
        if result
        else "provisioning %s failed: see the orchestration's return" % name
    )
    events(
        tags.provision(name, "done"),
        comment,
        minion=name,
        result=bool(result),
        state=state,
        source=entry.get("source"),
        server_id=entry.get("server_id"),
        seconds_since_accept=took,
    )
    return {
        "result": True,
        "minion": name,
        "provisioned": bool(result),
        "state": state,
        "comment": comment,
    }
