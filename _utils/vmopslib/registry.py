"""The minions the pack expects: one JSON file per minion id on the master.

Whoever boots a VM through the pack (``vmops.create``, ``replace_vm``,
``rebuild_minion``, ``vmops.expect`` for a VM booted by hand) registers it
here first, with an expiry and a one-time nonce that the server carries in its
metadata (OpenStack) or tags (EC2) under ``vmops-nonce``.  The admission
decision (``admission.decide``) accepts a pending key only for a registration
that is still live, on a server that carries its nonce and was created after
it; auto-provisioning rules add entries when they admit a server.

Entry states (changed only through ``expect`` and the transition methods below:
``admit``, ``start_provisioning``, ``rearm``, ``finish_provisioning``, ``mark_failed``)::

    expected      a pending key may be accepted for it (once)
    preseeded     the pack handed the key over itself (replace_vm, rebuild):
                  no pending key is ever the VM's
    accepted      admitted; ``provision`` says whether the reactor highstates it
    provisioning  the start reaction's orchestration runs
    provisioned / failed
"""

import contextlib
import fcntl
import os
import secrets
import time

from . import config
from .errors import InvalidInput
from .store import DirectoryRecords

NONCE_KEY = "vmops-nonce"
STATES = ("expected", "preseeded", "accepted", "provisioning", "provisioned", "failed")
ADMITTED = ("accepted", "provisioning", "provisioned", "failed")


def new_nonce():
    return secrets.token_hex(16)


class Registry:
    """Registrations in a records object (see :mod:`store`): on a master, Salt's cache bank
    ``vmops/expected`` (``saltglue.registry``); given a directory, JSON files there.

    Transitions are read-modify-write under a per-minion ``flock`` in ``lockdir``: exact
    on one master.  On a shared store two masters may decide about one minion id at
    the same moment (both receive its key in a multi-master setup); each decision
    writes the same vouched key to its own master, and the last transition written wins.
    """

    def __init__(self, records, refusals=None, lockdir=None):
        if isinstance(records, str):
            lockdir = lockdir or records
            refusals = refusals or _Suffixed(records, ".refused")
            records = DirectoryRecords(records)
        if refusals is None or lockdir is None:
            raise ValueError("a registry needs a refusals bank and a lock directory")
        self.records, self.refusals, self.lockdir = records, refusals, lockdir

    def _key(self, name):
        return config.check_minion_id(name, "minion id")

    def _lockfile(self, name, suffix):
        os.makedirs(self.lockdir, mode=0o700, exist_ok=True)
        return os.path.join(self.lockdir, self._key(name) + suffix)

    def _read(self, records, name):
        try:
            entry = records.fetch(self._key(name))
        except (ValueError, TypeError):
            return None
        return entry if isinstance(entry, dict) and entry else None

    @contextlib.contextmanager
    def locked(self, name):
        """Serialise read-modify-write of one minion's entry across processes."""
        with open(self._lockfile(name, ".lock"), "a", encoding="utf-8") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def deciding(self, name):
        """Held while one admission decision about ``name`` runs; yields False when
        another one already runs (the reactor may dispatch two for one slow cloud)."""
        with open(self._lockfile(name, ".deciding"), "a", encoding="utf-8") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def get(self, name):
        return self._read(self.records, name)

    def save(self, entry):
        entry["updated"] = time.time()
        self.records.store(self._key(entry["minion"]), entry)
        return entry

    def expect(
        self,
        name,
        cloud,
        source,
        ttl,
        provision=True,
        level=None,
        state="expected",
        server_id=None,
        now=None,
    ):
        """Register ``name`` as expected on ``cloud``; returns the entry (with its nonce)."""
        if state not in ("expected", "preseeded"):
            raise ValueError("a registration starts as expected or preseeded, not %s" % state)
        now = time.time() if now is None else now
        entry = {
            "minion": config.check_minion_id(name, "minion id"),
            "cloud": cloud,
            "source": source,
            "nonce": new_nonce(),
            "registered": now,
            "expires": now + float(ttl),
            "state": state,
            "provision": bool(provision),
            "level": level,
            "server_id": server_id,
        }
        with self.locked(name):
            return self.save(entry)

    def update(self, name, **fields):
        """Change fields of an existing entry (None when there is none)."""
        with self.locked(name):
            entry = self.get(name)
            if entry is None:
                return None
            entry.update(fields)
            return self.save(entry)

    # ---------------------------------------------------------------- transitions
    # The only places an entry's state changes (besides ``expect``): each checks the
    # state it starts from, under the entry's lock.

    def admit(self, name, server_id, fingerprint, now=None, rule_entry=None):
        """expected -> accepted (a registration), or a new ``accepted`` entry for a server an
        auto-provisioning rule admits (``rule_entry``: its cloud, source, provision, level).

        Returns the entry, or None when the registration is no longer ``expected``.
        """
        now = time.time() if now is None else now
        with self.locked(name):
            entry = self.get(name)
            if rule_entry is not None:
                entry = dict(
                    rule_entry,
                    minion=config.check_minion_id(name, "minion id"),
                    registered=now,
                    expires=now,
                    nonce=None,
                )
            elif not entry or entry.get("state") != "expected":
                return None
            entry.update(
                state="accepted", server_id=server_id, fingerprint=fingerprint, accepted_at=now
            )
            return self.save(entry)

    def start_provisioning(self, name, now=None):
        """accepted (with ``provision``) -> provisioning; the entry, or None (not due)."""
        with self.locked(name):
            entry = self.get(name)
            if not entry or entry.get("state") != "accepted" or not entry.get("provision"):
                return None
            entry["state"] = "provisioning"
            entry["provision_started"] = time.time() if now is None else now
            return self.save(entry)

    def rearm(self, name, limit):
        """provisioning -> accepted again (its start event came before the minion answered);
        the number of re-arms so far, or None when ``limit`` is used up (nothing changed)."""
        with self.locked(name):
            entry = self.get(name)
            if not entry or entry.get("state") != "provisioning":
                return None
            rearms = entry.get("rearmed", 0) + 1
            if rearms > limit:
                return None
            entry.update(state="accepted", rearmed=rearms)
            self.save(entry)
            return rearms

    def finish_provisioning(self, name, ok, now=None):
        """provisioning (or accepted) -> provisioned / failed; the entry, or None."""
        with self.locked(name):
            entry = self.get(name)
            if not entry:
                return None
            entry.update(
                state="provisioned" if ok else "failed",
                provisioned_at=time.time() if now is None else now,
            )
            return self.save(entry)

    def mark_failed(self, name):
        """Any state -> failed (an admission undone); the entry, or None."""
        with self.locked(name):
            entry = self.get(name)
            if not entry:
                return None
            entry["state"] = "failed"
            return self.save(entry)

    def forget(self, name):
        with self.locked(name):
            return bool(self.records.flush(self._key(name)))

    def entries(self):
        out = []
        for key in self.records.keys():
            try:
                entry = self._read(self.records, key)
            except InvalidInput:  # not a minion id: not ours
                continue
            if entry:
                out.append(entry)
        return out

    # ---------------------------------------------------------------- refusals
    # A key refused for good is not looked at again for a while: the pending
    # minion retries its authentication every few seconds.

    def remember_refusal(self, name, fingerprint, reason, until):
        self.refusals.store(
            self._key(name), {"fingerprint": fingerprint, "reason": reason, "until": until}
        )

    def refusal(self, name, fingerprint, now=None):
        """The remembered reason ``fingerprint`` was refused for ``name``, while it holds."""
        memo = self._read(self.refusals, name)
        now = time.time() if now is None else now
        if memo and memo.get("fingerprint") == fingerprint and memo.get("until", 0) > now:
            return memo.get("reason")
        return None

    def clear_refusal(self, name):
        self.refusals.flush(self._key(name))


class _Suffixed(DirectoryRecords):
    """``<directory>/<key><suffix>`` JSON files (the refusal memos beside the entries)."""

    def __init__(self, directory, suffix):
        super().__init__(directory)
        self.suffix = suffix

    def where(self, key):
        return os.path.join(self.directory, key + self.suffix)

    def keys(self):
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        return sorted(n[: -len(self.suffix)] for n in names if n.endswith(self.suffix))


def is_live(entry, now=None):
    """A registration that a pending key may still be accepted for."""
    now = time.time() if now is None else now
    return bool(entry) and entry.get("state") == "expected" and now < entry.get("expires", 0)
