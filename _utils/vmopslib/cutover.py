"""The Copr flow inside a replacement: data volumes moved in a short outage window.

Mixed into :class:`replace.Replacement`.  What it adds, each part journaled so a killed
run resumes where it was:

* the plan's choice of data volumes (``data_volumes``: ``none``, ``move``, a list of names
  or ids, or ``{tag: {key: value}}``) and naming (``same``, or ``suffix``: the new server is
  ``<vm>-new`` until the cut-over, then the names become ``<vm>-old`` and ``<vm>``);
* the old minion moved to the id ``<vm>-old`` with a key of its own before the new server
  takes ``<vm>`` (so its services can still be stopped, and started again on a rollback),
  and back on a rollback; an old minion that does not answer at all is left, and the
  report says so (its services cannot be stopped by the pack);
* the outage window (step ``cutover``): the old server's services stop (its highstate with
  pillar ``vmops:cutover: leaving``, or the ``pre_detach`` SLS), each data volume is
  detached and attached to the new server at the same device, the new server's cut-over
  state runs (its highstate with ``vmops:cutover: done``, or ``cutover_state``), the
  floating/Elastic IPs move, and the health gate (the new minion answers, the IPs and
  volumes are on the new server) closes the window.  Its start, end, length and the time
  of each part are journaled.  A failure before the gate rolls back to the old server:
  volumes back, services started (highstate with ``vmops:cutover: back``), IPs back.
"""

import concurrent.futures
import threading
import time

from . import config, identity
from . import events as tags
from .errors import InvalidInput, VmopsError

NAMING = ("same", "suffix")
PILLAR_FLAG = "cutover"  # vmops:cutover: pending | leaving | done | back


def check_data_volumes(value):
    """``none`` | ``move`` | a list of names/ids | ``{"tag": {key: value}}``."""
    if value in (None, "", False, "none"):
        return "none"
    if value == "move" or value is True:
        return "move"
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return list(value)
    if (
        isinstance(value, dict)
        and set(value) == {"tag"}
        and isinstance(value["tag"], dict)
        and value["tag"]
    ):
        return {"tag": {str(k): str(v) for k, v in value["tag"].items()}}
    raise InvalidInput(
        "data_volumes must be none, move, a list of volume names or ids, or "
        "{tag: {key: value}}, not %r; nothing was changed" % (value,)
    )


def pillar(flag):
    return {"vmops": {PILLAR_FLAG: flag}}


class CutoverMixin:
    """The data-volume and naming parts of a replacement (see the module's docstring)."""

    # ------------------------------------------------------------------ plan

    def _plan_volumes(self, old, choice):
        """Every non-root volume of the old server, with what happens to it."""
        try:
            every = self.provider.volumes(old["id"])
            vols = [v for v in every if not v["root"]]
        except VmopsError as exc:
            if choice == "none":
                return [], []
            raise InvalidInput(
                "the volumes of %s cannot be listed (%s); nothing was changed" % (old["name"], exc)
            ) from exc
        if choice == "move":
            chosen = vols
        elif isinstance(choice, dict):
            want = choice["tag"]
            chosen = [
                v
                for v in vols
                if all((v.get("tags") or {}).get(k) == val for k, val in want.items())
            ]
        elif isinstance(choice, list):
            known = {v["volume_id"]: v for v in vols}
            known.update({v["name"]: v for v in vols if v.get("name")})
            roots = [
                c for c in choice for v in every if v["root"] and c in (v["volume_id"], v["name"])
            ]
            if roots:
                raise InvalidInput(
                    "data_volumes: %s is the root disk of %s: it stays with its server; "
                    "nothing was changed" % (", ".join(roots), old["name"])
                )
            missing = [c for c in choice if c not in known]
            if missing:
                raise InvalidInput(
                    "data_volumes: %s %s not attached to %s (its data volumes: %s); nothing "
                    "was changed"
                    % (
                        ", ".join(missing),
                        "is" if len(missing) == 1 else "are",
                        old["name"],
                        ", ".join(v.get("name") or v["volume_id"] for v in vols) or "none",
                    )
                )
            chosen = list({known[c]["volume_id"]: known[c] for c in choice}.values())
        else:
            chosen = []
        multi = [v.get("name") or v["volume_id"] for v in chosen if v["multiattach"]]
        if multi:
            raise InvalidInput(
                "data_volumes: %s %s multi-attach: moving shared volumes is not supported "
                "(a volume is never attached to two servers by the pack); nothing was changed"
                % (", ".join(multi), "is" if len(multi) == 1 else "are")
            )
        ids = {v["volume_id"] for v in chosen}
        listing = [
            {
                "volume_id": v["volume_id"],
                "name": v.get("name"),
                "device": v["device"],
                "size": v["size"],
                "action": (
                    "moves to the new server in the outage window"
                    if v["volume_id"] in ids
                    else "stays with the old server"
                ),
            }
            for v in vols
        ]
        moves = [
            {k: v[k] for k in ("volume_id", "name", "device", "size")}
            for v in vols
            if v["volume_id"] in ids
        ]
        return listing, moves

    def _plan_naming(self, name, naming, window):
        """Refuse what would collide: a server already named <vm>-new / <vm>-old, or a key
        for <vm>-old (the old minion's id during the window)."""
        if naming == "suffix":
            for suffix in ("new", "old"):
                taken = self.provider.servers_named("%s-%s" % (name, suffix))
                if taken:
                    raise InvalidInput(
                        "a server named %s-%s exists (%s): naming=suffix needs that name; "
                        "nothing was changed" % (name, suffix, ", ".join(s["id"] for s in taken))
                    )
        if window:
            old_id = config.check_minion_id("%s-old" % name, "minion id")
            if self.keys.status(old_id):
                raise InvalidInput(
                    "a key for %s exists (%s): the old server's minion takes that id during "
                    "the outage window; delete it first; nothing was changed"
                    % (old_id, self.keys.status(old_id))
                )

    @staticmethod
    def _boot_name(record):
        return "%s-new" % record["vm"] if record.get("naming") == "suffix" else record["vm"]

    # ------------------------------------------------------------------ state jobs

    def _state_job(self, record, key, minion_id, sls, flag, timeout):
        """Run a highstate (``sls`` None) or ``state.sls sls`` on ``minion_id`` with pillar
        ``vmops:cutover: flag``; its jid is journaled under ``jobs[key]`` (a resumed run
        waits for the same job).  Raises with the failed states."""
        jobs = record.setdefault("jobs", {})
        if jobs.get(key + "_ok"):
            return jobs[key]

        def journal(jid):
            jobs[key] = jid
            self.journal.save(record)

        fun, arg = ("state.sls", [sls]) if sls else ("state.highstate", [])
        extra = {"pillar": pillar(flag)}
        if arg:
            extra["arg"] = arg
        jid, failures, _count = self.minion.run_state(
            minion_id, fun, timeout, jobs.get(key), journal, **extra
        )
        if failures:
            raise VmopsError(
                "%s on %s failed (job %s): %s"
                % (sls or "the highstate", minion_id, jid, "; ".join(failures[:5]))
            )
        jobs[key], jobs[key + "_ok"] = jid, True
        self.journal.save(record)
        return jid

    # ------------------------------------------------------------------ the old minion

    def _move_old_minion(self, record, timeout):
        """Before the new server takes ``<vm>``: the old minion becomes ``<vm>-old`` with a
        key of its own (made on it; the master accepts the public key its own job returned,
        i.e. vouched for by the old id's accepted key).  Idempotent; journaled per phase."""
        name = record["vm"]
        moved = record.setdefault("old_minion", {})
        if moved.get("answering") or moved.get("unreachable"):
            return moved.get("comment")
        old_id = "%s-old" % name
        if not moved.get("pub"):
            if not self.minion.answers(name, 10):
                moved.update(
                    unreachable=True,
                    comment="the old minion %s does not answer: it is left as it is (its "
                    "services cannot be stopped, nor started again, by the pack)" % name,
                )
                self.journal.save(record)
                self.events(tags.replace(name, "old_minion"), moved["comment"], id=None)
                return moved["comment"]
            # the pack's guest module, as this master has it (an older copy may be there)
            self.minion.call(name, "saltutil.sync_modules", [], {}, 60)
            staged = self.minion.call(name, "vmops_minion.reidentify", [old_id], {}, 60)
            if not isinstance(staged, dict) or "BEGIN PUBLIC KEY" not in str(staged.get("pub")):
                raise VmopsError(
                    "the old minion %s could not make a key for %s: %s" % (name, old_id, staged)
                )
            moved.update(
                id=old_id, pub=staged["pub"], fingerprint=identity.fingerprint(staged["pub"])
            )
            self.journal.save(record)
        if not moved.get("committed"):
            # the key first: the minion restarting under the new id is accepted at once
            self.keys.preseed(old_id, moved["pub"], rotate=False)
            if self.minion.answers(name, 10):
                self.minion.call(name, "vmops_minion.reidentify", [old_id], {"commit": True}, 60)
            moved["committed"] = time.time()
            self.journal.save(record)
        self.minion.wait(old_id, timeout)
        moved["answering"] = time.time()
        moved["comment"] = "the old minion moved to %s (key %s)" % (old_id, moved["fingerprint"])
        self.journal.save(record)
        self.events(
            tags.replace(name, "old_minion"),
            moved["comment"],
            id=old_id,
            fingerprint=moved["fingerprint"],
        )
        return moved["comment"]

    def _return_old_minion(self, record, timeout):
        """Rollback: the old minion goes back to ``<vm>`` with its original key (the master
        accepted it again just before); the ``<vm>-old`` key goes."""
        name = record["vm"]
        moved = record.get("old_minion") or {}
        old_id = moved.get("id")
        if not old_id or not moved.get("committed"):
            if old_id:
                self.keys.delete(old_id, rotate=False)
            return None
        if self.minion.answers(old_id, 10):
            back = self.minion.call(old_id, "vmops_minion.reidentify", [name], {}, 60)
            if (back or {}).get("pub", "").strip() != (record.get("old_pub") or "").strip():
                raise VmopsError(
                    "the old minion %s does not hold the original key of %s any more; it was "
                    "left as %s" % (old_id, name, old_id)
                )
            self.minion.call(old_id, "vmops_minion.reidentify", [name], {"commit": True}, 60)
        self.keys.delete(old_id, rotate=False)
        moved["returned"] = time.time()
        self.journal.save(record)
        return "the old minion is %s again" % name

    # ------------------------------------------------------------------ the window

    def cutover(self, name, timeout=300, state_timeout=3600):
        """The outage window: stop the old server's services, move the data volumes, run
        the cut-over state on the new server, move the IPs, health gate."""
        record = self._load(name)
        started = time.monotonic()
        if not record.get("moves"):
            return self._skip(record, "cutover", "no data volume to move: no outage window")
        states = self.STATES
        if states.index(record["state"]) >= states.index("checked"):
            return self._skip(record, "cutover", "the outage window is closed already")
        if states.index(record["state"]) < states.index("answering"):
            raise InvalidInput(
                "the new %s has not answered yet (state %s)" % (name, record["state"])
            )
        win = record.setdefault("window", {})
        parts = win.setdefault("parts", {})
        old_id, new_id = record["old"]["id"], record["new"]["id"]
        if not win.get("start"):
            # decided before anything stops: where each IP goes on the new server
            record["flip_to"] = self._flip_targets(record)
            win["start"] = time.time()
            record["state"] = "cutting"
            self.journal.save(record)
            self._window_event(record, "open", "the outage window opened")
        else:
            self._window_event(record, "resumed", "the outage window is resumed")

        def timed(part, fn):
            t0 = time.monotonic()
            out = fn()
            parts[part] = round(parts.get(part, 0) + time.monotonic() - t0, 2)
            self.journal.save(record)
            return out

        notes = []
        opts = record.get("window_opts") or {}
        old_minion = (record.get("old_minion") or {}).get("id")
        if (record.get("old_minion") or {}).get("answering"):
            timed(
                "stop",
                lambda: self._state_job(
                    record, "leaving", old_minion, opts.get("pre_detach"), "leaving", state_timeout
                ),
            )
        else:
            notes.append("the old server's services were not stopped (its minion is gone)")
        moved = win.setdefault("volumes", {})
        asked = win.setdefault("asked", {})
        ops = win.setdefault("ops", {})
        pending = [v for v in record["moves"] if moved.get(v["volume_id"]) != "attached"]
        where = {
            v["volume_id"]: self._volume_servers(
                v["volume_id"],
                moved.get(v["volume_id"]),
                asked.get(v["volume_id"]),
                old_id,
                new_id,
                timeout,
            )
            for v in pending
        }
        # every detach at once (each waited until available), then every attach: the
        # window holds the slowest of each, not their sum
        detach = [v for v in pending if old_id in where[v["volume_id"]]]
        for v in detach:
            # journaled before the request: a run killed while it is in flight does not
            # send it a second time (see _volume_servers)
            moved[v["volume_id"]], asked[v["volume_id"]] = "detaching", time.time()
        self.journal.save(record)
        timed(
            "detach",
            lambda: self._all_at_once(
                record,
                "detach",
                [
                    (v, lambda v=v: self.provider.volume_detach(old_id, v["volume_id"], timeout))
                    for v in detach
                ],
                "detached",
                ops,
            ),
        )
        for v in pending:
            moved[v["volume_id"]] = "detached"
        attach = [v for v in pending if new_id not in where[v["volume_id"]]]
        for v in attach:
            moved[v["volume_id"]], asked[v["volume_id"]] = "attaching", time.time()
        self.journal.save(record)
        timed(
            "attach",
            lambda: self._all_at_once(
                record,
                "attach",
                [
                    (
                        v,
                        lambda v=v: self.provider.volume_attach(
                            new_id, v["volume_id"], v["device"], timeout
                        ),
                    )
                    for v in attach
                ],
                "attached",
                ops,
            ),
        )
        for v in pending:
            moved[v["volume_id"]] = "attached"
        self.journal.save(record)
        timed(
            "cutover",
            lambda: self._state_job(
                record, "cutover", name, opts.get("cutover_state"), "done", state_timeout
            ),
        )
        moved_ips, left = timed("flip", lambda: self._flip_ips(record))
        record["floating_ips"] = moved_ips
        if left:
            notes.append("not taken: %s" % ", ".join(left))
        self._health_gate(record)
        win["end"] = time.time()
        win["length"] = round(win["end"] - win["start"], 2)
        comment = "outage window %.1f s (%s): %d volume(s) on the new %s, %s moved%s" % (
            win["length"],
            ", ".join("%s %.1f s" % (k, v) for k, v in parts.items()),
            len(record["moves"]),
            name,
            ", ".join(moved_ips) or "no IP",
            "; " + "; ".join(notes) if notes else "",
        )
        self._window_event(record, "closed", comment, length=win["length"], parts=dict(parts))
        return self._step(record, "cutover", started, comment, state="flipped")

    def _all_at_once(self, record, what, calls, done, ops):
        """Run ``calls`` ([(volume, fn)]) in threads; each one's time adds to ``ops[what]``
        and its volume's phase becomes ``done`` as it ends; the first error is raised after
        all ended (the journal then says which finished)."""
        if not calls:
            return
        moved = record["window"]["volumes"]
        lock = threading.Lock()
        errors = []

        def one(vol, fn):
            t0 = time.monotonic()
            try:
                fn()
            except VmopsError as exc:
                errors.append(exc)
                return
            with lock:
                ops[what] = round(ops.get(what, 0) + time.monotonic() - t0, 2)
                moved[vol["volume_id"]] = done
                finished.append(vol["volume_id"])

        finished = []
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(calls)) as pool:
            for future in [pool.submit(one, vol, fn) for vol, fn in calls]:
                future.result()
        self.journal.save(record)
        for vid in finished:  # from this thread only: one event connection
            self._window_event(record, done, "volume %s %s" % (vid, done), volume=vid)
        if errors:
            raise errors[0]

    inflight_grace = 30.0  # seconds a request a killed run sent is given to show in the cloud

    def _volume_servers(self, vid, phase, asked, old_id, new_id, timeout):
        """The servers volume ``vid`` is attached to, once settled.  A detach (attach) that a
        killed run sent may still be on its way: until ``inflight_grace`` seconds after it was
        sent, the volume still on the old server (still free) is watched, not asked again."""
        grace_until = (asked or 0) + self.inflight_grace
        while True:
            info = self.provider.volume_settle(vid, timeout)
            where = [a["server_id"] for a in info["attachments"]]
            waiting = (phase == "detaching" and old_id in where) or (
                phase == "attaching" and new_id not in where and not where
            )
            if not waiting or time.time() >= grace_until:
                return where
            time.sleep(1)

    def _window_event(self, record, phase, message, **data):
        self.events(tags.replace(record["vm"], "window"), message, phase=phase, **data)

    def _health_gate(self, record):
        """The window closes only when the new minion answers, holds every moved volume and
        every IP: from here the run only goes forward."""
        name, new_id = record["vm"], record["new"]["id"]
        self.minion.wait(name, 60)
        for vol in record["moves"]:
            where = [
                a["server_id"] for a in self.provider.volume_show(vol["volume_id"])["attachments"]
            ]
            if where != [new_id]:
                raise VmopsError(
                    "health gate: volume %s is attached to %s, not only to the new %s"
                    % (vol["volume_id"], where or "nothing", name)
                )
        have = set(self.provider.describe(new_id)["floating_ips"])
        missing = sorted(set(record["floating_ips"]) - have)
        if missing:
            raise VmopsError("health gate: the new %s does not hold %s" % (name, missing))

    def _undo_window(self, record, timeout):
        """Rollback inside the window: IPs, volumes and services back on the old server."""
        win = record.get("window") or {}
        if not win.get("start") or win.get("end"):
            return []
        old_id, new_id = record["old"]["id"], record["new"]["id"]
        notes = []
        for addr in record.get("floating_ips") or []:
            try:
                now = self.provider.floating_ip_show(addr).get("server_id")
                if now == new_id:
                    self.provider.flip_floating_ip(addr, old_id)
                    notes.append("%s back on the old server" % addr)
            except VmopsError as exc:
                notes.append("%s could NOT be moved back: %s" % (addr, exc))
        for vol in record.get("moves") or []:
            vid = vol["volume_id"]
            try:
                where = [a["server_id"] for a in self.provider.volume_show(vid)["attachments"]]
                if new_id in where:
                    self.provider.volume_detach(new_id, vid, timeout)
                    where = [w for w in where if w != new_id]
                if old_id not in where:
                    self.provider.volume_attach(old_id, vid, vol["device"], timeout)
                    notes.append("volume %s back on the old server" % vid)
            except VmopsError as exc:
                notes.append("volume %s could NOT be put back: %s" % (vid, exc))
        old_minion = (record.get("old_minion") or {}).get("id")
        if (record.get("old_minion") or {}).get("answering"):
            jobs = record.setdefault("jobs", {})
            jobs.pop("back", None)  # a rollback run again starts its services again
            jobs.pop("back_ok", None)
            try:
                self._state_job(record, "back", old_minion, None, "back", 3600)
                notes.append("the old server's services started again")
            except VmopsError as exc:
                notes.append("the old server's services could NOT be started: %s" % exc)
        win["undone"] = time.time()
        self.journal.save(record)
        self._window_event(record, "undone", "; ".join(notes) or "nothing to undo")
        return notes

    # ------------------------------------------------------------------ names

    def _final_names(self, record):
        """naming=suffix: the old server becomes <vm>-old and the new one <vm> (idempotent)."""
        if record.get("naming") != "suffix":
            return None
        name = record["vm"]
        old_id, new_id = record["old"]["id"], record["new"]["id"]
        if self.provider.exists(old_id):
            self.provider.rename(old_id, "%s-old" % name)
        self.provider.rename(new_id, name)
        return "renamed: %s-old (%s), %s (%s)" % (name, old_id, name, new_id)
