"""Evacuate a compute node: drain every server off it, safely, fast, and provably.

The runbooks' "disable nova-compute, live-migrate everything off" as one
resumable run:

1. validate (exactly one nova-compute service on that exact host, not the
   only enabled one) and plan each server by what Nova allows for its state;
   refuse with the numbers when Placement says the servers will not fit on the
   other enabled hosts (before anything changes);
2. disable the node with a reason that carries the run's id, who and when
   (a node someone else disabled keeps their reason), then list its servers
   again (all projects) and re-check, so nothing the scheduler placed while we
   looked is missed;
3. move them with a real bound on migrations in flight (counting the ones
   other actors run on the node), never two members of one anti-affinity group
   at once; poll every in-flight server with one list call per tick; verify
   each move (host changed, migration record ``completed``/``confirmed``,
   state as before); retry a failed migration a few times; watch for stuck
   live migrations (per-server deadline from its RAM, and a no-progress
   watchdog) and abort or force-complete them;
4. list the node once more and move late arrivals; report every server
   (method, source, destination, duration, result) and what is left.

A journal per node records the run; an ``flock`` makes it one run per node at
a time.  A killed run resumes from the journal (migrations it had started are
adopted, never started twice) and the node stays disabled.
"""

import getpass
import logging
import re
import socket
import time
import uuid

from . import config
from . import events as tags
from .errors import CloudError, InvalidInput, NotFound, NotSupported, VmopsError

log = logging.getLogger(__name__)

REASON_PREFIX = "vmops-evacuate"
_HOST = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,253}[A-Za-z0-9])?\Z")
_RUN = re.compile(r"run=([0-9a-f]+)")

MOVING_TASKS = (
    "migrating",
    "resize_prep",
    "resize_migrating",
    "resize_migrated",
    "resize_finish",
    "resize_confirming",
    "shelving_offloading",
)

DEFAULTS = {
    "concurrency": 1,  # migrations in flight from the node at once (others' included)
    "retries": 2,  # a failed migration is tried again this many times
    "on_timeout": "abort",  # stuck live migration: abort | force_complete | wait
    "stall_seconds": 120,  # no progress in memory/disk remaining for this long: stuck
    "timeout": None,  # seconds per server (default: timeout_per_gib x RAM GiB, min 2 GiB)
    "timeout_per_gib": 800,  # Nova's own live_migration_completion_timeout
    "poll_interval": 0.5,  # first poll, then back-off while nothing changes
    "max_poll_interval": 2.0,
    "stop_on_failure": False,  # true: no new migration after a server failed for good
    "force": False,  # true: go on when the capacity check says it will not fit
    "target": None,  # a host to move everything to (default: the scheduler picks)
    "zone": "same",  # same: targets in the node's availability zone; any: all
    "suspended": "report",  # report | resume_and_live_migrate
    "on_error": "report",  # report | reset_and_cold_migrate
    "locked": "report",  # report | move (an admin may move a locked server)
    "sweeps": 2,  # extra listings of the node at the end (late arrivals)
    "settle_seconds": 30,  # how long a sweep waits for servers busy with another task
}
CHOICES = {
    "on_timeout": ("abort", "force_complete", "wait"),
    "zone": ("same", "any"),
    "suspended": ("report", "resume_and_live_migrate"),
    "on_error": ("report", "reset_and_cold_migrate"),
    "locked": ("report", "move"),
}
MOVE_METHODS = ("live", "cold", "confirm", "resume_live", "reset_cold")
OPT_OUT_KEY = "vmops:evacuate"


def _number(value, what, minimum=0, integer=False):
    try:
        number = int(value) if integer else float(value)
        if integer and str(value).strip() != str(number):
            raise ValueError
    except (TypeError, ValueError):
        raise InvalidInput(
            "%s must be a%s number, not %r; nothing was changed"
            % (what, "n integer" if integer else "", value)
        ) from None
    if number < minimum:
        raise InvalidInput(
            "%s must be at least %s, not %r; nothing was changed" % (what, minimum, value)
        )
    return number


def options(conf=None, overrides=None):
    """The evacuation settings: defaults, ``vmops:evacuate``, then ``overrides``, checked."""
    out = dict(DEFAULTS)
    out.update((conf or {}).get("evacuate") or {})
    out.update({k: v for k, v in (overrides or {}).items() if v is not None})
    unknown = sorted(set(out) - set(DEFAULTS))
    if unknown:
        raise InvalidInput(
            "unknown evacuation option(s) %s (known: %s); nothing was changed"
            % (", ".join(unknown), ", ".join(sorted(DEFAULTS)))
        )
    out["concurrency"] = _number(out["concurrency"], "concurrency", 1, integer=True)
    out["retries"] = _number(out["retries"], "retries", 0, integer=True)
    out["sweeps"] = _number(out["sweeps"], "sweeps", 0, integer=True)
    for key in (
        "stall_seconds",
        "timeout_per_gib",
        "poll_interval",
        "max_poll_interval",
        "settle_seconds",
    ):
        out[key] = _number(out[key], key, 0)
    if out["timeout"] not in (None, ""):
        out["timeout"] = _number(out["timeout"], "timeout", 1)
    else:
        out["timeout"] = None
    for key in ("stop_on_failure", "force"):
        out[key] = config.strict_bool(out[key], key)
    for key, allowed in CHOICES.items():
        if out[key] not in allowed:
            raise InvalidInput(
                "%s must be one of %s, not %r; nothing was changed"
                % (key, ", ".join(allowed), out[key])
            )
    if out["target"] not in (None, ""):
        check_host(out["target"], "target host")
    else:
        out["target"] = None
    return out


def check_host(host, what="node"):
    """A plain host name: no glob, list or regular-expression characters."""
    if not isinstance(host, str) or not _HOST.match(host):
        raise InvalidInput(
            "%s %r is not a plain host name (letters, digits, '.', '_', '-'; no glob, list or "
            "pattern): name exactly one compute host; nothing was changed" % (what, host)
        )
    return host


def classify(server, opts):
    """(method, comment) for one server on the node, by what Nova allows in its state.

    Methods: live, cold, confirm, offload, stop, resume_live, reset_cold (moves);
    skip (the owner opted out); blocked (cannot be moved as it is).
    """
    status = server["status"]
    opt_out = (server.get("metadata") or {}).get(OPT_OUT_KEY)
    if opt_out == "skip":
        return "skip", "its owner opted out (metadata %s=skip)" % OPT_OUT_KEY
    if server.get("task_state"):
        return "blocked", (
            "busy with task %s (another actor is working on it): wait for it "
            "to finish and re-run" % server["task_state"]
        )
    if server.get("locked") and opts["locked"] == "report":
        return "blocked", "locked by its owner: unlock it, or re-run with locked=move"
    if opt_out == "stop":
        if status == "SHUTOFF":
            return (
                "skip",
                "its owner asked for it to be stopped (metadata %s=stop): it is" % OPT_OUT_KEY,
            )
        if status == "ACTIVE":
            return (
                "stop",
                "its owner asked for it to be stopped, not moved (metadata %s=stop)" % OPT_OUT_KEY,
            )
    if status in ("ACTIVE", "PAUSED"):
        return "live", "live migration (block migration decided by Nova)"
    if status == "SHUTOFF":
        return "cold", "cold migration, then confirm"
    if status == "VERIFY_RESIZE":
        return "confirm", "confirm its pending resize, then move it"
    if status == "SHELVED":
        return "offload", "shelve-offload (frees the node)"
    if status == "SUSPENDED":
        if opts["suspended"] == "resume_and_live_migrate":
            return "resume_live", "resume, then live migration (suspended=resume_and_live_migrate)"
        return "blocked", (
            "SUSPENDED: Nova cannot move it; resume it, or re-run with "
            "suspended=resume_and_live_migrate"
        )
    if status == "RESCUED":
        return "blocked", "RESCUED: Nova cannot move it; unrescue it first"
    if status == "ERROR":
        if opts["on_error"] == "reset_and_cold_migrate":
            return (
                "reset_cold",
                "reset to active, then cold migration (on_error=reset_and_cold_migrate)",
            )
        return "blocked", (
            "ERROR: not moved; look at its fault, then reset_state it or re-run with "
            "on_error=reset_and_cold_migrate"
        )
    return "blocked", "%s: Nova cannot move a server in this state; wait or act on it" % status


def _gib(mb):
    return max(2.0, (mb or 0) / 1024.0)


def fit(servers, hosts):
    """Place ``servers`` (each with ``needs``) on ``hosts`` ({host: {class: {free, max_unit}}}).

    First-fit decreasing onto the host with the most free RAM (spreading, as the
    scheduler's default weighers do).  Returns (placements, unplaced, left) where
    ``left`` is every host's free capacity afterwards.
    """
    left = {h: {rc: dict(v) for rc, v in res.items()} for h, res in hosts.items()}
    placements, unplaced = {}, []
    order = sorted(
        servers,
        key=lambda s: (
            s["needs"].get("MEMORY_MB", 0),
            s["needs"].get("VCPU", 0),
            s["needs"].get("DISK_GB", 0),
        ),
        reverse=True,
    )
    for server in order:
        best = None
        for host in sorted(left):
            res = left[host]
            ok = all(
                amount <= 0
                or (
                    rc in res
                    and res[rc]["free"] >= amount
                    and (res[rc].get("max_unit") or amount) >= amount
                )
                for rc, amount in server["needs"].items()
            )
            if ok and (
                best is None
                or res.get("MEMORY_MB", {}).get("free", 0)
                > left[best].get("MEMORY_MB", {}).get("free", 0)
            ):
                best = host
        if best is None:
            unplaced.append(server)
            continue
        placements[server["id"]] = best
        for rc, amount in server["needs"].items():
            if rc in left[best]:
                left[best][rc]["free"] -= amount
    return placements, unplaced, left


def free_by_host(provider, hosts):
    """Placement's free capacity of ``hosts``, keyed by the compute host's name (a resource
    provider may carry the fully qualified one)."""
    out = {}
    for rp_name, res in provider.placement_free(sorted(hosts)).items():
        for host in hosts:
            if rp_name == host or rp_name.split(".")[0] == host:
                out[host] = res
    return out


def _free_summary(hosts):
    return {h: {rc: v["free"] for rc, v in sorted(res.items())} for h, res in sorted(hosts.items())}


class Evacuation:
    """One node's evacuation.  ``provider`` is an OpenStack driver (``has_compute_hosts``);
    ``store`` a :class:`store.JournalStore`; ``events(tag, message, **data)``;
    ``verify_minions(list of (minion id, host))`` -> {id: None (fine) or why not}, or None."""

    def __init__(
        self, provider, store, opts, events=None, verify_minions=None, clock=time, who=None
    ):
        if not getattr(provider, "has_compute_hosts", False):
            raise NotSupported(
                "cloud %s (%s driver) has no compute hosts to evacuate: evacuate_node and "
                "enable_node are for OpenStack clouds (on EC2, AWS moves instances off "
                "retiring hardware itself: stop and start them)" % (provider.name, provider.driver)
            )
        self.provider = provider
        self.store = store
        self.opts = opts
        self.events = events or (lambda tag, message, **data: None)
        self.verify_minions = verify_minions
        self.clock = clock
        self.who = who or "%s@%s" % (getpass.getuser(), socket.gethostname())
        self._states = {}

    # ------------------------------------------------------------------ validation

    def _services(self, node):
        check_host(node)
        services = self.provider.service_list()
        hosts = sorted(s["host"] for s in services)
        mine = [s for s in services if s["host"] == node]
        if not mine:
            raise NotFound(
                "no nova-compute service on host %r on cloud %s (hosts: %s); nothing "
                "was changed" % (node, self.provider.name, ", ".join(hosts) or "none")
            )
        if len(mine) > 1:
            raise InvalidInput(
                "%d nova-compute services are on host %r: nothing was changed" % (len(mine), node)
            )
        return mine[0], services

    def _targets(self, node, service, services):
        """The hosts the servers may go to: enabled, up, not the node (same zone by default)."""
        usable = [
            s
            for s in services
            if s["host"] != node
            and s["status"] == "enabled"
            and s["state"] == "up"
            and not s["forced_down"]
        ]
        if not usable:
            raise InvalidInput(
                "%s is the only enabled nova-compute host that is up on cloud %s: there is "
                "nowhere to move its servers; nothing was changed" % (node, self.provider.name)
            )
        if self.opts["zone"] == "same":
            usable = [s for s in usable if s["zone"] == service["zone"]] or []
            if not usable:
                raise InvalidInput(
                    "no other enabled host is up in %s's availability zone %s "
                    "(zone=any allows the others); nothing was changed" % (node, service["zone"])
                )
        if self.opts["target"]:
            chosen = [s for s in usable if s["host"] == self.opts["target"]]
            if not chosen:
                raise InvalidInput(
                    "target host %s is not an enabled, up compute host other than "
                    "%s (usable: %s); nothing was changed"
                    % (self.opts["target"], node, ", ".join(s["host"] for s in usable))
                )
            usable = chosen
        return sorted(s["host"] for s in usable)

    def _capacity(self, node, targets, items):
        """Placement's free capacity on the targets vs. what the movable servers need."""
        hosts = free_by_host(self.provider, targets)
        moving = [i for i in items if i["method"] in MOVE_METHODS]
        _, unplaced, left = fit(moving, hosts)
        need = {}
        for item in moving:
            for rc, amount in item["needs"].items():
                need[rc] = need.get(rc, 0) + amount
        out = {
            "fits": not unplaced,
            "need": need,
            "free_before": _free_summary(hosts),
            "free_after": _free_summary(left),
            "unplaced": [i["name"] for i in unplaced],
        }
        if unplaced:
            largest = {
                rc: max((res.get(rc, {}).get("free", 0) for res in hosts.values()), default=0)
                for rc in ("VCPU", "MEMORY_MB", "DISK_GB")
            }
            short = []
            for item in unplaced:
                over = [
                    "%s %s > %s" % (rc, amount, largest.get(rc, 0))
                    for rc, amount in sorted(item["needs"].items())
                    if amount > 0 and amount > largest.get(rc, 0)
                ]
                short.append(
                    "%s (needs %s%s)"
                    % (
                        item["name"],
                        ", ".join("%s %s" % kv for kv in sorted(item["needs"].items())),
                        "; " + ", ".join(over) if over else "; no single host has all of it left",
                    )
                )
            totals = {
                rc: sum(res.get(rc, {}).get("free", 0) for res in hosts.values())
                for rc in sorted(need)
            }
            out["comment"] = (
                "the servers on %s do not fit on %s: they need %s in all, the targets have %s "
                "free (%s); cannot place %s"
                % (
                    node,
                    ", ".join(targets) or "no host",
                    ", ".join("%s %s" % kv for kv in sorted(need.items())),
                    ", ".join("%s %s" % kv for kv in totals.items()),
                    "; ".join(
                        "%s: %s" % (h, ", ".join("%s %s" % kv for kv in res.items()))
                        for h, res in out["free_before"].items()
                    ),
                    "; ".join(short),
                )
            )
        return out

    def _groups(self, items, targets):
        """Anti-affinity: members of one group never move at once, and must have somewhere to go."""
        moving = {i["id"]: i for i in items if i["method"] in MOVE_METHODS}
        problems = []
        if not moving:
            return problems
        for group in self.provider.anti_affinity_groups():
            here = [m for m in group["members"] if m in moving]
            if not here:
                continue
            for member in here:
                moving[member]["group"] = group["id"]
            taken = set()
            for member in group["members"]:
                if member in moving:
                    continue
                state = self.provider.server_state(member)
                if state and state["host"]:
                    taken.add(state["host"])
            room = [h for h in targets if h not in taken]
            if len(room) < len(here):
                problems.append(
                    "anti-affinity group %s (%s): %d member(s) on the node but only %d target "
                    "host(s) without a member (%s)"
                    % (group["name"], group["id"], len(here), len(room), ", ".join(room) or "none")
                )
        return problems

    def _items(self, node, servers, known=None):
        known = known or {}
        items = []
        for server in sorted(servers, key=lambda s: (s["name"] or "", s["id"])):
            if server["id"] in known:
                continue
            self._states[server["id"]] = server
            method, comment = classify(server, self.opts)
            items.append(
                {
                    "id": server["id"],
                    "name": server["name"],
                    "project_id": server["project_id"],
                    "status": server["status"],
                    "method": method,
                    "plan": comment,
                    "phase": {"skip": "skipped", "blocked": "blocked"}.get(method, "pending"),
                    "source": node,
                    "dest": None,
                    "attempts": 0,
                    "needs": server["needs"],
                    "comment": comment if method in ("skip", "blocked") else None,
                    "duration": None,
                    "migration_id": None,
                    "group": None,
                }
            )
        return items

    # ------------------------------------------------------------------ plan

    def servers_on(self, node):
        """The servers on ``node`` as an evacuation would handle them (method, needs, plan)."""
        return self._items(node, self.provider.host_server_states(node))

    def plan(self, node):
        """What a run would do, changing nothing (``test=True``)."""
        service, services = self._services(node)
        targets = self._targets(node, service, services)
        items = self._items(node, self.provider.host_server_states(node))
        capacity = self._capacity(node, targets, items)
        groups = self._groups(items, targets)
        holder = self.store.is_locked(node)
        moves = [i for i in items if i["method"] in MOVE_METHODS]
        comment = "%s: %d server(s); %d to move to %s; %d left as they are" % (
            node,
            len(items),
            len(moves),
            ", ".join(targets),
            len(items) - len(moves),
        )
        refused = []
        if not capacity["fits"]:
            refused.append(capacity["comment"])
        refused.extend(groups)
        if holder:
            refused.append("an evacuation of %s is already running (%s)" % (node, holder))
        return {
            # True: it would go ahead (Salt counts a function's result None as a failure)
            "result": not refused or self.opts["force"],
            "test": True,
            "node": node,
            "service": service,
            "targets": targets,
            "disable": (service["status"] == "enabled"),
            "servers": [
                {k: i[k] for k in ("id", "name", "project_id", "status", "method", "plan", "needs")}
                for i in items
            ],
            "capacity": capacity,
            "anti_affinity": groups,
            "refusals": refused,
            "options": self.opts,
            "comment": comment + ("; would be refused: " + "; ".join(refused) if refused else ""),
        }

    # ------------------------------------------------------------------ run

    def _fire(self, record, what, message, **data):
        self.events(tags.evacuation(record["node"], what), message, run=record["run"], **data)

    def _fire_server(self, record, name, what, message, **data):
        self.events(
            tags.evacuated_server(record["node"], name, what), message, run=record["run"], **data
        )

    def _save(self, record):
        record["updated"] = time.time()
        self.store.save(record.get("key") or record["node"], record)

    def run(self, node, reason):
        """Evacuate ``node``; returns the report (``result`` False when anything failed or was
        left behind).  Resumes an interrupted run of the same node."""
        if not reason or not isinstance(reason, str) or not reason.strip():
            raise InvalidInput("say why the node is evacuated (reason=...); nothing was changed")
        service, services = self._services(node)
        targets = self._targets(node, service, services)
        lock = self.store.lock(node)
        try:
            return self._run_locked(node, reason.strip(), targets)
        finally:
            lock.release()

    def _run_locked(self, node, reason, targets):
        record = self.store.load(node)
        resuming = bool(record and record.get("state") in ("running", "interrupted"))
        if resuming:
            record["resumed"] = record.get("resumed", 0) + 1
            self._fire(
                record,
                "resume",
                "resuming run %s of %s (%d server(s) recorded)"
                % (record["run"], node, len(record["items"])),
            )
        else:
            record = {
                "node": node,
                "run": uuid.uuid4().hex[:12],
                "reason": reason,
                "who": self.who,
                "started": time.time(),
                "state": "planning",
                "items": [],
                "disabled_by_us": False,
                "prior_reason": None,
                "options": self.opts,
            }
            # a first look, before any change: refuse what cannot work
            first = self._items(node, self.provider.host_server_states(node))
            self._refuse_if_bad(record, node, targets, first)
        record["targets"] = targets
        self._disable(record)
        # look again now that nothing new can land here; check again when there is more to move
        known = {i["id"]: i for i in record["items"]}
        fresh = self._items(node, self.provider.host_server_states(node), known)
        if not resuming:
            checked = {i["id"]: i for i in first if i["method"] in MOVE_METHODS}
            if [i for i in fresh if i["method"] in MOVE_METHODS and i["id"] not in checked]:
                try:
                    self._refuse_if_bad(record, node, targets, fresh)
                except InvalidInput:
                    self._undo_disable(record)
                    raise
            else:
                for item in fresh:
                    item["group"] = checked.get(item["id"], {}).get("group")
        elif fresh:
            self._groups(fresh, targets)
        for item in record["items"]:
            if item["phase"] == "verifying":
                item["phase"] = "moving"
        for item in record["items"]:
            self._states.setdefault(item["id"], {"id": item["id"], "host": item["source"]})
        record["items"].extend(fresh)
        record["state"] = "running"
        self._save(record)
        self._fire(
            record,
            "plan",
            "%s: %d server(s) to handle, concurrency %d"
            % (node, len(record["items"]), self.opts["concurrency"]),
            servers=[{k: i[k] for k in ("id", "name", "method")} for i in record["items"]],
        )
        try:
            self._execute(record)
            for _ in range(int(self.opts["sweeps"])):
                if not self._sweep(record):
                    break
                self._execute(record)
        except KeyboardInterrupt:
            self._interrupted(record)
            raise
        return self._finish(record)

    def _refuse_if_bad(self, record, node, targets, items):
        capacity = self._capacity(node, targets, items)
        record["capacity"] = capacity
        problems = self._groups(items, targets)
        if not capacity["fits"]:
            problems.insert(0, capacity["comment"])
        if problems and not self.opts["force"]:
            self.events(tags.evacuation(node, "refused"), "; ".join(problems), problems=problems)
            raise InvalidInput(
                "%s; nothing was changed (force=True goes on anyway)" % "; ".join(problems)
            )
        if problems:
            record.setdefault("warnings", []).extend(problems)

    def _disable(self, record):
        node = record["node"]
        current = self.provider.service_show(node)
        ours = "%s run=%s" % (REASON_PREFIX, record["run"])
        reason = current.get("disabled_reason") or ""
        if current["status"] == "disabled" and reason.startswith(ours):
            return
        if current["status"] == "disabled" and not reason.startswith(REASON_PREFIX):
            # someone else's maintenance: keep their reason, never re-enable it ourselves
            if not record["disabled_by_us"]:
                record["prior_reason"] = reason or "(no reason given)"
            self._fire(
                record,
                "disabled",
                "%s was already disabled by someone else (%s): left as "
                "it is" % (node, reason or "no reason given"),
                reason=reason,
                ours=False,
            )
            return
        text = "%s by %s at %s: %s" % (
            ours,
            self.who,
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            record["reason"],
        )
        self.provider.service_disable(node, text[:255])
        record["disabled_by_us"] = True
        record["disabled_reason"] = text[:255]
        self._save(record)
        self._fire(record, "disabled", "%s disabled: %s" % (node, text), reason=text, ours=True)

    def _undo_disable(self, record):
        if record["disabled_by_us"]:
            self.provider.service_enable(record["node"])
            record["disabled_by_us"] = False
            self._fire(
                record,
                "enabled",
                "%s enabled again: the run was refused before anything moved" % record["node"],
            )

    # ------------------------------------------------------------------ execution

    def _deadline(self, item):
        if self.opts["timeout"]:
            return self.opts["timeout"]
        return self.opts["timeout_per_gib"] * _gib(item["needs"].get("MEMORY_MB"))

    def _start(self, record, item):
        prov, sid = self.provider, item["id"]
        target = item.get("target") or self.opts["target"]
        item["attempts"] += 1
        item["started"] = time.time()
        item["samples"] = []
        item.pop("aborted", None)
        item.pop("uncertain", None)
        method = item["method"]
        if method == "live":
            prov.start_live_migration(sid, host=target)
        elif method in ("cold", "reset_cold"):
            if method == "reset_cold" and item["attempts"] == 1:
                prov.reset_server_state(sid, "active")
            prov.start_cold_migration(sid, host=target)
        elif method == "confirm":
            prov.confirm_migration(sid)
        elif method == "offload":
            prov.shelve_offload(sid)
        elif method == "stop":
            prov.power_off(sid)
        elif method == "resume_live":
            prov.resume(sid)
        item["phase"] = "moving"
        self._fire_server(
            record,
            item["name"],
            "started",
            "%s: %s (attempt %d)" % (item["name"], item["plan"], item["attempts"]),
            server=sid,
            method=method,
            attempt=item["attempts"],
        )

    def _uncertain(self, record, item, exc):
        item["phase"] = "moving"
        item["uncertain"] = str(exc)
        self._fire_server(
            record,
            item["name"],
            "started",
            "%s: %s (attempt %d): the cloud's answer did not come (%s); following what Nova does"
            % (item["name"], item["plan"], item["attempts"], exc),
            server=item["id"],
            method=item["method"],
            attempt=item["attempts"],
        )

    def _busy_others(self, record):
        ours = {i["id"] for i in record["items"] if i["phase"] in ("moving", "confirming")}
        return sum(
            1
            for sid, s in self._states.items()
            if sid not in ours
            and s.get("host") == record["node"]
            and s.get("task_state") in MOVING_TASKS
        )

    def _elsewhere(self, record, item):
        """Another actor moved (or deleted) a server before we started it: noticed, not fought."""
        state = self._states.get(item["id"]) or {}
        if "status" not in state or item["phase"] != "pending" or item["attempts"]:
            return False
        if state["status"] in ("DELETED", "SOFT_DELETED"):
            item.update(phase="gone", comment="deleted by someone else before it was moved")
        elif state.get("host") != record["node"]:
            item.update(
                phase="elsewhere",
                dest=state.get("host"),
                comment="moved off the node by someone else (now on %s)"
                % (state.get("host") or "no host"),
            )
        else:
            return False
        self._fire_server(
            record,
            item["name"],
            item["phase"],
            item["comment"],
            server=item["id"],
        )
        return True

    def _eligible(self, record, item):
        if item["phase"] != "pending" or self._elsewhere(record, item):
            return False
        if (self._states.get(item["id"]) or {}).get("task_state") and not item["attempts"]:
            return False  # another actor is busy with it: wait until it settles
        if item.get("group"):
            return not any(
                o["group"] == item["group"] and o["phase"] in ("moving", "confirming")
                for o in record["items"]
            )
        return True

    def _execute(self, record):
        opts = self.opts
        # the first listing looks back to the run's start (a resumed run missed those changes);
        # later ones only since the previous listing (the states are merged), with a margin for
        # clock skew between this host and Nova
        since = record["started"] - 300
        interval = opts["poll_interval"]
        stopped = False
        waiting_since = None
        # settled on another host: their migration records are read in batches (at least 4, or
        # every 10 s): the next migration does not wait for it, its slot is free once settled
        awaiting = []
        while True:
            moving = [i for i in record["items"] if i["phase"] in ("moving", "confirming")]
            if not stopped:
                for item in record["items"]:
                    if len(moving) + self._busy_others(record) >= opts["concurrency"]:
                        break
                    if not self._eligible(record, item):
                        continue
                    try:
                        self._start(record, item)
                    except CloudError as exc:
                        if not exc.transient:
                            self._failed(record, item, "the cloud refused to start it: %s" % exc)
                        else:
                            # a 5xx or a lost answer: Nova may or may not have started it.
                            # Never asked again blindly: the next listing says (migrating:
                            # followed; untouched: an attempt that did not start, retried)
                            self._uncertain(record, item, exc)
                            moving.append(item)
                            continue
                    except VmopsError as exc:
                        self._failed(record, item, "the cloud refused to start it: %s" % exc)
                        stopped = stopped or opts["stop_on_failure"]
                        continue
                    moving.append(item)
                self._save(record)
            if not moving and awaiting:
                self._verify_records(record, awaiting)
                awaiting = []
                continue
            if not moving:
                blocked = [i for i in record["items"] if self._eligible(record, i)]
                if stopped or not blocked or not self._busy_others(record):
                    break
                # the node's migration slots are taken by other actors: wait for them (bounded)
                waiting_since = waiting_since or time.time()
                if time.time() - waiting_since > (opts["timeout"] or 2 * opts["timeout_per_gib"]):
                    for item in blocked:
                        self._failed(
                            record,
                            item,
                            "not started: other actors' migrations on the node did not finish",
                        )
                    break
            else:
                waiting_since = None
            self.clock.sleep(interval)
            listed_at = time.time()
            for state in self.provider.server_states(
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since))
            ):
                self._states[state["id"]] = state
            since = listed_at - 30
            changed = False
            for item in moving:
                outcome = self._evaluate(record, item)
                if outcome:
                    changed = True
                if outcome == "verify":
                    item["phase"] = "verifying"
                    item.setdefault("settled", time.time())
                    awaiting.append(item)
                elif outcome == "failed" and opts["stop_on_failure"]:
                    stopped = True
            if awaiting and (
                len(awaiting) >= max(opts["concurrency"], 4)
                or time.time() - min(i["settled"] for i in awaiting) > 10
            ):
                self._verify_records(record, awaiting)
                awaiting = []
            self._save(record)
            interval = (
                opts["poll_interval"] if changed else min(interval * 1.5, opts["max_poll_interval"])
            )

    def _evaluate(self, record, item):
        """Look at one in-flight server in the latest listing; act; say what changed."""
        state = self._states.get(item["id"])
        now = time.time()
        if state is None or "status" not in state:
            return None
        if state["status"] in ("DELETED", "SOFT_DELETED"):
            item["phase"] = "gone"
            item["comment"] = "deleted by someone else while it was being moved"
            item["duration"] = round(now - item["started"], 2)
            self._fire_server(record, item["name"], "gone", item["comment"], server=item["id"])
            return "gone"
        busy = state.get("task_state")
        method = item["method"]
        if not busy:
            if state["status"] == "ERROR":
                return self._failed(record, item, "went to ERROR while it was being moved")
            if method == "stop":
                if state["status"] == "SHUTOFF":
                    return self._done(
                        record, item, "stopped on the node, as its owner asked", phase="stopped"
                    )
                return None
            if method == "offload":
                if state["status"] == "SHELVED_OFFLOADED":
                    return self._done(
                        record, item, "shelve-offloaded (no longer on any host)", phase="offloaded"
                    )
                return None
            if method == "resume_live":
                if state["status"] == "ACTIVE":
                    item.update(method="live", phase="pending", plan="live migration (resumed)")
                    item["attempts"] = 0
                    return "resumed"
                return None
            if method == "confirm":
                if state["status"] != "VERIFY_RESIZE":
                    if state["host"] != record["node"]:
                        return self._done(
                            record,
                            item,
                            "resize confirmed; it runs on %s" % state["host"],
                            phase="moved",
                            dest=state["host"],
                        )
                    replan, comment = classify(state, self.opts)
                    item.update(
                        method=replan,
                        plan="resize confirmed, then " + comment,
                        phase="pending"
                        if replan in MOVE_METHODS
                        else {"skip": "skipped"}.get(replan, "blocked"),
                        status=state["status"],
                    )
                    if item["phase"] == "blocked":
                        item["comment"] = comment
                    return "replanned"
                return None
            # live / cold / reset_cold
            if state["host"] != record["node"]:
                if method in ("cold", "reset_cold") and state["status"] == "VERIFY_RESIZE":
                    if item["phase"] != "confirming":
                        self.provider.confirm_migration(item["id"])
                        item["phase"] = "confirming"
                        item["dest"] = state["host"]
                        return "confirming"
                    return None
                item["dest"] = state["host"]
                return "verify"
            # settled on the node again: the migration failed (or we aborted it)
            return self._retry_or_fail(record, item, state)
        # still busy: deadline and stuck-migration watchdog
        if method == "live" and busy == "migrating":
            return self._watch(record, item, now)
        if now - item["started"] > self._deadline(item) and not item.get("timed_out"):
            item["timed_out"] = True
            self._fire_server(
                record,
                item["name"],
                "slow",
                "%s: still %s after %ds" % (item["name"], busy, now - item["started"]),
                server=item["id"],
            )
        return None

    def _watch(self, record, item, now):
        opts = self.opts
        if item.get("aborted") or item.get("forced"):
            return None
        elapsed = now - item["started"]
        stalled = None
        step = max(opts["stall_seconds"] / 3.0, 1.0)
        if opts["stall_seconds"] and elapsed >= step and now - item.get("probed", 0) >= step:
            item["probed"] = now
            progress = self.provider.migration_progress(item["id"])
            mig = progress[0] if progress else None
            if mig is not None:
                item["migration_id"] = mig["id"]
            if mig is None or mig["status"] != "running" or not mig["memory_total"]:
                # queued behind another migration (Nova runs one per source host by
                # default) or not copying yet: no progress to judge
                item["samples"] = []
            else:
                remaining = (mig["memory_remaining"] or 0) + (mig["disk_remaining"] or 0)
                item["samples"] = (item.get("samples") or [])[-3:] + [remaining]
                samples = item["samples"]
                if len(samples) >= 4 and min(samples[-3:]) >= samples[-4]:
                    stalled = "no progress for %ds (%d bytes still to copy)" % (step * 3, remaining)
        if stalled is None and elapsed > self._deadline(item):
            stalled = "not finished after %ds (its deadline)" % elapsed
        if stalled is None:
            return None
        action = opts["on_timeout"]
        mig_id = item.get("migration_id")
        if mig_id is None:
            progress = self.provider.migration_progress(item["id"])
            mig_id = progress[0]["id"] if progress else None
        if action == "wait" or mig_id is None:
            if not item.get("stall_reported"):
                item["stall_reported"] = True
                self._fire_server(
                    record,
                    item["name"],
                    "stuck",
                    "%s: %s; waiting" % (item["name"], stalled),
                    server=item["id"],
                )
            return None
        try:
            if action == "abort":
                self.provider.migration_abort_id(item["id"], mig_id)
                item["aborted"] = stalled
            else:
                self.provider.migration_force_complete_id(item["id"], mig_id)
                item["forced"] = stalled
        except VmopsError as exc:
            item["stall_reported"] = True
            self._fire_server(
                record,
                item["name"],
                "stuck",
                "%s: %s; %s failed: %s" % (item["name"], stalled, action, exc),
                server=item["id"],
            )
            return None
        self._fire_server(
            record,
            item["name"],
            "aborted" if action == "abort" else "force_completed",
            "%s: %s; %s migration %s" % (item["name"], stalled, action.replace("_", "-"), mig_id),
            server=item["id"],
            migration=mig_id,
        )
        return action

    def _retry_or_fail(self, record, item, state):
        last = self._last_migration(record, item)
        why = "the migration did not move it (migration %s: %s)" % (
            last.get("id") if last else "?",
            last.get("status") if last else "no record",
        )
        if item.get("uncertain") and not last:
            why = (
                "the cloud did not answer the request (%s) and nothing started"
                % (item["uncertain"])
            )
        if item.get("aborted"):
            return self._failed(
                record,
                item,
                "aborted: %s; it runs on %s as before" % (item["aborted"], state["host"]),
            )
        if item["attempts"] <= self.opts["retries"]:
            item["phase"] = "pending"
            item["comment"] = why
            self._fire_server(
                record,
                item["name"],
                "retry",
                "%s: %s; trying again (%d of %d)"
                % (item["name"], why, item["attempts"] + 1, self.opts["retries"] + 1),
                server=item["id"],
            )
            return "retry"
        return self._failed(
            record,
            item,
            "%s after %d attempt(s); it stays on %s" % (why, item["attempts"], state["host"]),
        )

    def _last_migration(self, record, item):
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(item["started"] - 60))
        migs = [
            m
            for m in self.provider.host_migrations(record["node"], since)
            if m["server_id"] == item["id"]
        ]
        migs.sort(key=lambda m: (m["created"] or "", m["id"]))
        return migs[-1] if migs else None

    def _verify_records(self, record, items):
        """A move is done only when Nova's migration record says so (status proves nothing)."""
        since = time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime(min(i["started"] for i in items) - 60)
        )
        migs = self.provider.host_migrations(record["node"], since)
        for item in items:
            mine = sorted(
                (m for m in migs if m["server_id"] == item["id"]),
                key=lambda m: (m["created"] or "", m["id"]),
            )
            last = mine[-1] if mine else {}
            state = self._states[item["id"]]
            wanted = "completed" if item["method"] == "live" else "confirmed"
            if (
                last.get("status") == wanted
                and state["status"] == item["status"]
                or (last.get("status") == wanted and item["method"] == "reset_cold")
            ):
                item["migration_id"] = last.get("id")
                note = " (force-completed: %s)" % item["forced"] if item.get("forced") else ""
                self._done(
                    record,
                    item,
                    "%s migration to %s, migration %s %s%s"
                    % (
                        "live" if item["method"] == "live" else "cold",
                        state["host"],
                        last.get("id"),
                        wanted,
                        note,
                    ),
                    phase="moved",
                    dest=state["host"],
                )
            elif last.get("status") in ("error", "failed", "cancelled"):
                self._failed(
                    record,
                    item,
                    "it moved to %s but migration %s says %s"
                    % (state["host"], last.get("id"), last.get("status")),
                )
            else:
                # post-migration clean-up still running on the source: look again next tick
                item["phase"] = "moving"
            item.pop("settled", None)

    def _done(self, record, item, comment, phase, dest=None):
        item["phase"] = phase
        item["dest"] = dest or item.get("dest")
        item["comment"] = comment
        item["duration"] = round(time.time() - item["started"], 2)
        self._fire_server(
            record,
            item["name"],
            phase,
            "%s: %s (%.1fs)" % (item["name"], comment, item["duration"]),
            server=item["id"],
            dest=item["dest"],
            duration=item["duration"],
        )
        return phase

    def _failed(self, record, item, comment):
        item["phase"] = "failed"
        item["comment"] = comment
        item["duration"] = round(time.time() - item.get("started", time.time()), 2)
        self._fire_server(
            record,
            item["name"],
            "failed",
            "%s: %s" % (item["name"], comment),
            server=item["id"],
        )
        return "failed"

    def _sweep(self, record):
        """List the node again; plan servers that arrived or became movable.  True: more to do."""
        node = record["node"]
        deadline = time.time() + self.opts["settle_seconds"]
        while True:
            servers = self.provider.host_server_states(node)
            by_item = {i["id"]: i for i in record["items"]}
            busy = [
                s
                for s in servers
                if s["task_state"] and by_item.get(s["id"], {}).get("phase") in (None, "blocked")
            ]
            if not busy or time.time() >= deadline:
                break
            self.clock.sleep(min(2.0, max(deadline - time.time(), 0)))
        more = False
        for server in servers:
            self._states[server["id"]] = server
            item = by_item.get(server["id"])
            if item is None:
                new = self._items(node, [server])
                record["items"].extend(new)
                self._fire_server(
                    record,
                    server["name"],
                    "arrived",
                    "%s arrived on %s during the run: %s" % (server["name"], node, new[0]["plan"]),
                    server=server["id"],
                )
                more = more or new[0]["phase"] == "pending"
            elif item["phase"] == "blocked" and item["plan"].startswith("busy"):
                method, comment = classify(server, self.opts)
                if method in MOVE_METHODS or method in ("offload", "stop"):
                    item.update(
                        method=method,
                        plan=comment,
                        phase="pending",
                        comment=None,
                        status=server["status"],
                    )
                    more = True
                else:
                    item["comment"] = comment
        self._save(record)
        return more

    def _interrupted(self, record):
        record["state"] = "interrupted"
        moving = [
            i["name"]
            for i in record["items"]
            if i["phase"] in ("moving", "confirming", "verifying")
        ]
        self._save(record)
        self._fire(
            record,
            "interrupted",
            "interrupted: %d migration(s) in flight are left to Nova "
            "(%s); %s stays disabled; re-run to resume"
            % (len(moving), ", ".join(moving) or "none", record["node"]),
            moving=moving,
        )

    # ------------------------------------------------------------------ report

    def _finish(self, record):
        node = record["node"]
        moved = [i for i in record["items"] if i["phase"] == "moved"]
        if self.verify_minions and moved:
            checks = self.verify_minions(
                [
                    (i["name"], i["dest"])
                    for i in moved
                    if self._states.get(i["id"], {}).get("status") == "ACTIVE"
                ]
            )
            for item in moved:
                if item["name"] in (checks or {}):
                    why = checks[item["name"]]
                    item["minion"] = "answers from %s" % item["dest"] if why is None else why
                    if why is not None:
                        item["phase"] = "failed"
                        item["comment"] += "; but its minion %s" % why
        for item in record["items"]:
            busy = (self._states.get(item["id"]) or {}).get("task_state")
            if item["phase"] == "pending" and busy:
                item["comment"] = (
                    "not started: another actor is busy with it (task %s); "
                    "re-run when it is done" % busy
                )
            elif item["phase"] == "pending" and not item.get("comment"):
                item["comment"] = "not started (stop_on_failure: an earlier server failed)"
        remaining = self.provider.host_server_states(node)
        counts = {}
        for item in record["items"]:
            counts[item["phase"]] = counts.get(item["phase"], 0) + 1
        bad = [i for i in record["items"] if i["phase"] in ("failed", "blocked", "pending")]
        left = [
            s
            for s in remaining
            if not any(
                i["id"] == s["id"] and i["phase"] in ("skipped", "stopped") for i in record["items"]
            )
        ]
        service = self.provider.service_show(node)
        record.update(state="done" if not bad and not left else "failed", finished=time.time())
        result = not bad and not left
        took = round(record["finished"] - record["started"], 2)
        comment = "%s: %s in %.1fs; %d server(s) left on it%s; %s %s" % (
            node,
            ", ".join("%d %s" % (n, p) for p, n in sorted(counts.items())) or "no servers",
            took,
            len(remaining),
            " (%s)"
            % ", ".join(
                "%s: %s"
                % (
                    s["name"],
                    next(
                        (i["comment"] for i in record["items"] if i["id"] == s["id"]),
                        "arrived late",
                    ),
                )
                for s in remaining
            )
            if remaining
            else "",
            node,
            "stays disabled (%s)" % service["disabled_reason"]
            if service["status"] == "disabled"
            else "is ENABLED (someone re-enabled it)",
        )
        self._save(record)
        self._fire(record, "done", comment, result=result, counts=counts)
        report = {
            "result": result,
            "node": node,
            "run": record["run"],
            "comment": comment,
            "duration": took,
            "counts": counts,
            "service": service,
            "disabled_by_us": record["disabled_by_us"],
            "prior_reason": record["prior_reason"],
            "servers": [
                {
                    k: i.get(k)
                    for k in (
                        "id",
                        "name",
                        "project_id",
                        "status",
                        "method",
                        "phase",
                        "source",
                        "dest",
                        "attempts",
                        "duration",
                        "migration_id",
                        "comment",
                        "minion",
                    )
                }
                for i in record["items"]
            ],
            "remaining": [
                {"id": s["id"], "name": s["name"], "status": s["status"]} for s in remaining
            ],
            "warnings": record.get("warnings", []),
        }
        if not result:
            report["retcode"] = 1
        return report

    # ------------------------------------------------------------------ enable

    def enable(self, node, force=False, migrate_back=False):
        """Re-enable ``node`` when the pack disabled it (or ``force``); optionally move back the
        servers the last evacuation moved off it."""
        service, _ = self._services(node)
        holder = self.store.is_locked(node)
        if holder:
            raise InvalidInput(
                "an evacuation of %s is running (%s): let it finish (or stop it) "
                "first; nothing was changed" % (node, holder)
            )
        reason = service.get("disabled_reason") or ""
        out = {"result": True, "node": node, "prior_reason": reason or None}
        if service["status"] == "enabled":
            out.update(changed=False, comment="%s is already enabled" % node, service=service)
        elif not reason.startswith(REASON_PREFIX) and not force:
            raise InvalidInput(
                "%s was disabled by someone else (reason: %s): the pack re-enables only nodes "
                "it disabled; force=True enables it anyway; nothing was changed"
                % (node, reason or "none given")
            )
        else:
            out["service"] = self.provider.service_enable(node)
            out.update(changed=True, comment="%s enabled (was disabled: %s)" % (node, reason))
            self.events(tags.evacuation(node, "enabled"), out["comment"], reason=reason)
        if migrate_back:
            out["migrate_back"] = self._migrate_back(node)
            if not out["migrate_back"]["result"]:
                out["result"] = False
                out["retcode"] = 1
        return out

    def _migrate_back(self, node):
        last = self.store.load(node)
        if not last:
            return {
                "result": True,
                "comment": "no evacuation of %s is recorded" % node,
                "servers": [],
            }
        lock = self.store.lock(node)
        try:
            wanted = [i for i in last["items"] if i["phase"] == "moved"]
            record = {
                "node": node,
                "key": node + ".back",
                "run": last["run"] + "-back",
                "started": time.time(),
                "items": [],
                "state": "running",
                "reason": "migrate back",
                "disabled_by_us": False,
                "prior_reason": None,
            }
            for old in wanted:
                state = self.provider.server_state(old["id"])
                if state is None or state["host"] in (None, node):
                    continue
                method, comment = classify(state, self.opts)
                if method not in ("live", "cold"):
                    continue
                self._states[state["id"]] = state
                record["items"].append(
                    {
                        "id": state["id"],
                        "name": state["name"],
                        "project_id": state["project_id"],
                        "status": state["status"],
                        "method": method,
                        "plan": comment + " back to " + node,
                        "phase": "pending",
                        "source": state["host"],
                        "dest": None,
                        "attempts": 0,
                        "needs": state["needs"],
                        "comment": None,
                        "duration": None,
                        "migration_id": None,
                        "group": None,
                        "target": node,
                    }
                )
            self._execute_back(record)
            failed = [i for i in record["items"] if i["phase"] != "moved"]
            return {
                "result": not failed,
                "servers": [
                    {
                        k: i.get(k)
                        for k in (
                            "id",
                            "name",
                            "method",
                            "phase",
                            "source",
                            "dest",
                            "duration",
                            "comment",
                        )
                    }
                    for i in record["items"]
                ],
                "comment": "%d of %d server(s) moved back to %s"
                % (len(record["items"]) - len(failed), len(record["items"]), node),
            }
        finally:
            lock.release()

    def _execute_back(self, record):
        # each server leaves its own host: the executor's "node" is per item here
        for item in record["items"]:
            sub = dict(record, node=item["source"], items=[item], key=record["key"])
            self._execute(sub)
