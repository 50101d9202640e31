"""Rolling maintenance of compute hosts: the Ops Guide's checklist, node by node, as one run.

For each batch of nodes, in order (the nodes of a batch are disabled together
first, so none of them receives another's servers)::

    evacuate   drain the node (evacuate.Evacuation, with the same options)
    maintain   the maintenance on the node's own minion: a state, a command or an
               orchestration (none: skipped)
    reboot     optional: through the node's minion; done when the minion answers with
               a NEW boot id (not when it was silent for a while) and nova-compute
               reports ``up`` with a heartbeat newer than the reboot and its resource
               provider is in Placement
    gate       nova-compute up (not forced down), the minion answers, the check state
               passes (optional)
    enable     re-enable the node, only when this run disabled it; optionally move
               its servers back (``migrate_back``)

The run stops at the first failure: the failing node stays disabled, every
other node is back in service (nodes of the batch the run had disabled but not
yet touched are re-enabled), and the report says where it stopped.  A re-run
with the same nodes resumes there and never repeats a finished node's steps.
The journal (bank ``vmops/maintenance``) and a lock per node list make it one
run at a time.  Each node is gated here, step by step: not Salt's ``batch``
with ``failhard``, which has a long history of going on after a failure.
"""

import getpass
import hashlib
import logging
import socket
import time
import uuid
from datetime import datetime, timezone

from . import config
from . import events as tags
from .errors import InvalidInput, VmopsError
from .evacuate import MOVE_METHODS, REASON_PREFIX, check_host, fit, free_by_host

log = logging.getLogger(__name__)

STEPS = ("evacuate", "maintain", "reboot", "gate", "enable")

DEFAULTS = {
    "batch": 1,
    "reboot": False,
    "maintenance": None,  # {sls: x} | {cmd: x} | {orch: x}
    "check": None,  # {sls: x} | {cmd: x}: must pass before the node is enabled again
    "migrate_back": False,
    "reason": "rolling maintenance",
    "reboot_timeout": 900,  # the reboot request until the new boot id answers
    "service_timeout": 300,  # the minion is back until nova-compute is up with a new heartbeat
    "poll_interval": 2,
    "force": False,  # go on although the capacity check fails
}
ACTIONS = ("sls", "cmd", "orch")


def _action(value, what):
    if value in (None, "", False):
        return None
    if isinstance(value, str):
        value = {"sls": value}
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in ACTIONS:
        raise InvalidInput(
            "%s must be one of {sls: <state>}, {cmd: <command>}, {orch: <orchestration>} "
            "(or a state name), not %r; nothing was changed" % (what, value)
        )
    kind, target = next(iter(value.items()))
    if not isinstance(target, str) or not target.strip():
        raise InvalidInput("%s: %s needs a name; nothing was changed" % (what, kind))
    return {kind: target.strip()}


def options(conf=None, overrides=None):
    """The maintenance settings: defaults, ``vmops:maintenance``, then ``overrides``, checked."""
    out = dict(DEFAULTS)
    out.update((conf or {}).get("maintenance") or {})
    out.update({k: v for k, v in (overrides or {}).items() if v is not None})
    unknown = sorted(set(out) - set(DEFAULTS))
    if unknown:
        raise InvalidInput(
            "unknown maintenance option(s) %s (known: %s; evacuation options go under "
            "evacuate:); nothing was changed" % (", ".join(unknown), ", ".join(sorted(DEFAULTS)))
        )
    for key in ("reboot", "migrate_back", "force"):
        out[key] = config.strict_bool(out[key], key)
    for key in ("reboot_timeout", "service_timeout", "poll_interval"):
        try:
            out[key] = float(out[key])
        except (TypeError, ValueError):
            raise InvalidInput(
                "%s must be a number of seconds, not %r; nothing was changed" % (key, out[key])
            ) from None
        if out[key] <= 0:
            raise InvalidInput("%s must be positive; nothing was changed" % key)
    out["maintenance"] = _action(out["maintenance"], "maintenance")
    out["check"] = _action(out["check"], "check")
    if out["check"] and "orch" in out["check"]:
        raise InvalidInput("check runs on the node: {sls: ...} or {cmd: ...}; nothing was changed")
    if not isinstance(out["reason"], str) or not out["reason"].strip():
        raise InvalidInput("say why the nodes are maintained (reason=...); nothing was changed")
    return out


def batches(nodes, batch):
    """``nodes`` (a list of plain host names, no duplicates) cut into batches of ``batch``
    (a number, or a percentage of the nodes as "34%")."""
    if isinstance(nodes, str):
        nodes = [n.strip() for n in nodes.split(",") if n.strip()]
    if not isinstance(nodes, (list, tuple)) or not nodes:
        raise InvalidInput("nodes: give a list of compute hosts; nothing was changed")
    for node in nodes:
        check_host(node)
    dupes = sorted({n for n in nodes if list(nodes).count(n) > 1})
    if dupes:
        raise InvalidInput("nodes listed twice: %s; nothing was changed" % ", ".join(dupes))
    size = batch
    if isinstance(batch, str) and batch.strip().endswith("%"):
        try:
            pct = float(batch.strip()[:-1])
        except ValueError:
            pct = -1
        if not 0 < pct <= 100:
            raise InvalidInput("batch %r: a percentage between 0 and 100" % batch)
        size = max(1, int(len(nodes) * pct / 100.0))
    try:
        size = int(size)
        if isinstance(batch, bool) or size < 1:
            raise ValueError
    except (TypeError, ValueError):
        raise InvalidInput(
            "batch must be a number of nodes (at least 1) or a percentage, not %r; nothing "
            "was changed" % (batch,)
        ) from None
    if size >= len(nodes) and len(nodes) > 1:
        raise InvalidInput(
            "batch %s takes every node out at once: nowhere would be left for their servers; "
            "nothing was changed" % batch
        )
    nodes = list(nodes)
    return [nodes[i : i + size] for i in range(0, len(nodes), size)]


def run_key(nodes):
    joined = "_".join(nodes)
    if len(joined) <= 120:
        return joined
    return "nodes-" + hashlib.sha256(",".join(nodes).encode()).hexdigest()[:16]


def heartbeat_epoch(stamp):
    """Nova's ``updated_at`` ("2026-11-26T03:30:12.000000", UTC) as seconds."""
    if not stamp:
        return 0.0
    text = str(stamp).replace("Z", "")
    for fmt in ("%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=timezone.utc).timestamp()
        except ValueError:
            continue
    return 0.0


class StepFailed(VmopsError):
    def __init__(self, step, comment):
        super().__init__(comment)
        self.step = step


class Maintenance:
    """A rolling maintenance over some compute hosts.

    ``provider`` an OpenStack driver; ``store`` a :class:`store.JournalStore` for the runs;
    ``evacuation`` an :class:`evacuate.Evacuation` (its options are the ones every
    node is drained with); ``host`` the node-side operations, given by the Salt edge::

        host.answers(node) -> bool
        host.boot_id(node) -> str or None (None: the minion does not answer)
        host.apply(node, {"sls"|"cmd"|"orch": name}, pillar) -> (ok, summary)
        host.reboot(node)    asks for the reboot, returns at once
    """

    def __init__(self, provider, store, evacuation, host, opts, events=None, clock=time, who=None):
        self.provider = provider
        self.store = store
        self.evacuation = evacuation
        self.host = host
        self.opts = opts
        self.events = events or (lambda tag, message, **data: None)
        self.clock = clock
        self.who = who or "%s@%s" % (getpass.getuser(), socket.gethostname())

    # ------------------------------------------------------------------ plan

    def _fire(self, record, subject, what, message, **data):
        self.events(tags.maintenance(subject, what), message, run=record["run"], **data)

    def _check_nodes(self, nodes):
        services = self.provider.service_list()
        by_host = {}
        for svc in services:
            by_host.setdefault(svc["host"], []).append(svc)
        missing = [n for n in nodes if n not in by_host]
        if missing:
            raise InvalidInput(
                "no nova-compute service on %s (hosts: %s); nothing was changed"
                % (", ".join(missing), ", ".join(sorted(by_host)))
            )
        double = [n for n in nodes if len(by_host[n]) > 1]
        if double:
            raise InvalidInput(
                "several nova-compute services on %s; nothing was changed" % ", ".join(double)
            )
        return {h: v[0] for h, v in by_host.items()}

    def plan(self, nodes, batch=None):
        """The whole run, node by node, with the capacity each step leaves (``test=True``)."""
        groups = batches(nodes, self.opts["batch"] if batch is None else batch)
        services = self._check_nodes([n for g in groups for n in g])
        usable = {
            h
            for h, s in services.items()
            if s["status"] == "enabled" and s["state"] == "up" and not s["forced_down"]
        }
        names = [n for g in groups for n in g]
        free = free_by_host(self.provider, usable | set(names))
        where = {}  # server id -> (host, needs, name) as the run moves them
        for node in names:
            for item in self.evacuation.servers_on(node):
                if item["method"] in MOVE_METHODS:
                    where[item["id"]] = (node, item["needs"], item["name"])
        steps, refusals = [], []
        for number, group in enumerate(groups, 1):
            targets = sorted(h for h in usable if h not in group and h in free)
            moving = [
                {"id": sid, "name": name, "needs": needs}
                for sid, (host, needs, name) in where.items()
                if host in group
            ]
            placements, unplaced, left = fit(moving, {t: free[t] for t in targets})
            if unplaced:
                refusals.append(
                    "batch %d (%s): %s do not fit on %s"
                    % (
                        number,
                        ", ".join(group),
                        ", ".join(s["name"] for s in unplaced),
                        ", ".join(targets) or "no other enabled host",
                    )
                )
            origins = {sid: host for sid, (host, _, _) in where.items()}
            for server in moving:
                dest = placements.get(server["id"])
                if dest is None:
                    continue
                origin = origins[server["id"]]
                for rc, amount in server["needs"].items():
                    if rc in free.get(origin, {}):
                        free[origin][rc]["free"] += amount
                where[server["id"]] = (dest, server["needs"], server["name"])
            for target in targets:
                free[target] = left[target]
            if self.opts["migrate_back"]:
                for server in moving:
                    dest = placements.get(server["id"])
                    origin = origins[server["id"]]
                    if dest is None:
                        continue
                    for rc, amount in server["needs"].items():
                        free[dest][rc]["free"] += amount
                        if rc in free.get(origin, {}):
                            free[origin][rc]["free"] -= amount
                    where[server["id"]] = (origin, server["needs"], server["name"])
            for node in group:
                service = services[node]
                steps.append(
                    {
                        "batch": number,
                        "node": node,
                        "servers": sorted(s["name"] for s in moving if origins[s["id"]] == node),
                        "steps": [
                            "evacuate (%d server(s) from the batch to %s)"
                            % (len(moving), ", ".join(targets))
                            if node == group[0]
                            else "evacuate (with %s)" % group[0],
                            "maintain: %s" % self._describe(self.opts["maintenance"]),
                            "reboot, wait for a new boot id and nova-compute up"
                            if self.opts["reboot"]
                            else "reboot: no",
                            "gate: nova-compute up, minion answers%s"
                            % (
                                ", check %s" % self._describe(self.opts["check"])
                                if self.opts["check"]
                                else ""
                            ),
                            "enable%s" % (" and migrate back" if self.opts["migrate_back"] else "")
                            if service["status"] == "enabled"
                            else "stays disabled (someone else disabled it: %s)"
                            % (service.get("disabled_reason") or "no reason"),
                        ],
                        "free_while_out": {
                            h: {rc: v["free"] for rc, v in sorted(res.items())}
                            for h, res in sorted(left.items())
                        },
                    }
                )
        holders = [n for n in names if self.evacuation.store.is_locked(n)]
        if holders:
            refusals.append("an evacuation is running on %s" % ", ".join(holders))
        return {
            # force=True overrides a capacity refusal only, as run() does
            "result": not [r for r in refusals if not (self.opts["force"] and "do not fit" in r)],
            "test": True,
            "batches": groups,
            "nodes": steps,
            "refusals": refusals,
            "options": self.opts,
            "comment": "%d node(s) in %d batch(es)%s"
            % (
                len(names),
                len(groups),
                "; would be refused: " + "; ".join(refusals) if refusals else "",
            ),
        }

    @staticmethod
    def _describe(action):
        if not action:
            return "none"
        kind, name = next(iter(action.items()))
        return "%s %s" % ({"sls": "state", "cmd": "command", "orch": "orchestration"}[kind], name)

    # ------------------------------------------------------------------ run

    def _save(self, record):
        record["updated"] = self.clock.time()
        self.store.save(record["key"], record)

    def run(self, nodes, batch=None):
        """Maintain ``nodes``; the report (``result`` False: it stopped at a node)."""
        groups = batches(nodes, self.opts["batch"] if batch is None else batch)
        names = [n for g in groups for n in g]
        self._check_nodes(names)
        key = run_key(names)
        held = [self.store.lock(key)]
        try:
            # one run per node too: a run over [cmp2, cmp3] must not start while one over
            # [cmp1, cmp2] is at cmp2 (their journals differ, their nodes do not)
            for name in names:
                held.append(self.store.lock("node-" + name))
            record = self.store.load(key)
            if record and record.get("state") in ("running", "failed"):
                record["resumed"] = record.get("resumed", 0) + 1
                record["state"] = "running"
                self._fire(
                    record,
                    "run",
                    "resume",
                    "resuming maintenance run %s of %s" % (record["run"], ", ".join(names)),
                )
            else:
                plan = self.plan(names, batch)
                silent = [n for n in names if not self.host.answers(n)]
                if silent:
                    # every node's minion runs its maintenance and passes its gate: a node
                    # without one would be drained and then left out of service
                    plan["refusals"].insert(
                        0,
                        "the minion of %s does not answer (minion id = host name): the "
                        "maintenance, reboot and health gate run through it" % ", ".join(silent),
                    )
                blocking = [r for r in plan["refusals"] if "do not fit" not in r]
                if blocking or (plan["refusals"] and not self.opts["force"]):
                    self.events(
                        tags.maintenance("run", "refused"),
                        "; ".join(plan["refusals"]),
                        problems=plan["refusals"],
                    )
                    raise InvalidInput(
                        "%s; nothing was changed%s"
                        % (
                            "; ".join(plan["refusals"]),
                            "" if blocking else " (force=True goes on anyway)",
                        )
                    )
                record = {
                    "key": key,
                    "run": uuid.uuid4().hex[:12],
                    "who": self.who,
                    "reason": self.opts["reason"].strip(),
                    "batches": groups,
                    "options": self.opts,
                    "started": self.clock.time(),
                    "state": "running",
                    "nodes": {n: {"done": [], "disabled_by_us": False} for n in names},
                    "stopped_at": None,
                }
                self._save(record)
                self._fire(
                    record,
                    "run",
                    "plan",
                    "maintenance of %s in %d batch(es)" % (", ".join(names), len(groups)),
                    batches=groups,
                )
            return self._run_locked(record)
        finally:
            for lock in reversed(held):
                lock.release()

    def _run_locked(self, record):
        for number, group in enumerate(record["batches"], 1):
            todo = [n for n in group if "enable" not in record["nodes"][n]["done"]]
            if not todo:
                continue
            for node in todo:
                self._disable(record, node, number)
            # step by step across the batch: its nodes drain one after another, reboot together
            for step in STEPS:
                if step == "reboot" and self.opts["reboot"]:
                    for node in todo:
                        if "reboot" not in record["nodes"][node]["done"]:
                            try:
                                self._reboot_request(record, node, number)
                            except VmopsError as exc:
                                return self._stop(record, node, number, step, str(exc))
                for node in todo:
                    if step in record["nodes"][node]["done"]:
                        continue
                    try:
                        self._step(record, node, number, step)
                    except VmopsError as exc:
                        return self._stop(record, node, number, step, str(exc))
        record.update(state="done", finished=self.clock.time(), stopped_at=None)
        self._save(record)
        report = self._report(record, True)
        self._fire(record, "run", "done", report["comment"], result=True)
        return report

    def _disable(self, record, node, number):
        """Disable ``node`` for the run (unless someone else disabled it: then it stays theirs)."""
        state = record["nodes"][node]
        if state["disabled_by_us"] or state["done"]:
            return
        service = self.provider.service_show(node)
        reason = service.get("disabled_reason") or ""
        if service["status"] == "disabled" and not reason.startswith(REASON_PREFIX):
            state["prior_reason"] = reason or "(no reason given)"
            self._save(record)
            self._fire(
                record,
                node,
                "disabled",
                "%s was already disabled by someone else (%s): it stays disabled after the "
                "maintenance" % (node, reason or "no reason given"),
                node=node,
                batch=number,
                ours=False,
            )
            return
        text = "%s run=%s maintenance by %s at %s: %s" % (
            REASON_PREFIX,
            record["run"],
            self.who,
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            record["reason"],
        )
        self.provider.service_disable(node, text[:255])
        state["disabled_by_us"] = True
        self._save(record)
        self._fire(
            record,
            node,
            "disabled",
            "%s disabled: %s" % (node, text),
            node=node,
            batch=number,
            ours=True,
        )

    def _mark(self, record, node, step, number, what, message, started, **data):
        record["nodes"][node]["done"].append(step)
        took = round(self.clock.time() - started, 2)
        record["nodes"][node].setdefault("durations", {})[step] = took
        self._save(record)
        self._fire(
            record, node, what, message, node=node, batch=number, step=step, duration=took, **data
        )

    def _step(self, record, node, number, step):
        state = record["nodes"][node]
        if step == "evacuate":
            t0 = self.clock.time()
            report = self.evacuation.run(
                node, "%s (maintenance run %s)" % (record["reason"], record["run"])
            )
            state["evacuation"] = {"run": report.get("run"), "comment": report.get("comment")}
            if not report.get("result"):
                raise StepFailed("evacuate", "evacuation failed: %s" % report.get("comment"))
            if not state["disabled_by_us"] and not state.get("prior_reason"):
                state["disabled_by_us"] = True  # the evacuation disabled it for this run
            self._mark(record, node, "evacuate", number, "evacuated", report["comment"], t0)
        elif step == "maintain":
            t0 = self.clock.time()
            action = self.opts["maintenance"]
            if action:
                ok, summary = self.host.apply(
                    node, action, {"vmops": {"maintenance": record["run"]}}
                )
                if not ok:
                    raise StepFailed(
                        "maintain",
                        "the maintenance (%s) failed on %s: %s"
                        % (self._describe(action), node, summary),
                    )
                message = "%s: %s passed" % (node, self._describe(action))
            else:
                message = "%s: no maintenance configured" % node
            self._mark(record, node, "maintain", number, "maintained", message, t0)
        elif step == "reboot":
            t0 = self.clock.time()
            if self.opts["reboot"]:
                boot = self._reboot(record, node, number)
                message = "%s rebooted (boot id %s) and nova-compute is up" % (node, boot)
            else:
                boot, message = None, "%s: no reboot asked for" % node
            self._mark(record, node, "reboot", number, "rebooted", message, t0, boot_id=boot)
        elif step == "gate":
            t0 = self.clock.time()
            self._gate(node)
            self._mark(
                record, node, "gate", number, "gated", "%s passed its health gate" % node, t0
            )
        else:
            self._enable(record, node, number, self.clock.time())

    def _reboot_request(self, record, node, number):
        state = record["nodes"][node]
        if not state.get("boot_before"):
            boot = self.host.boot_id(node)
            if not boot:
                raise StepFailed(
                    "reboot", "the minion of %s does not answer with its boot id" % node
                )
            state["boot_before"] = boot
            self._save(record)
        if not state.get("reboot_requested"):
            self.host.reboot(node)
            state["reboot_requested"] = self.clock.time()
            self._save(record)
            self._fire(
                record,
                node,
                "rebooting",
                "%s asked to reboot" % node,
                node=node,
                batch=number,
                boot_id=state["boot_before"],
            )

    def _reboot(self, record, node, number):
        state = record["nodes"][node]
        self._reboot_request(record, node, number)  # a no-op unless resumed before the request
        deadline = self.clock.time() + self.opts["reboot_timeout"]
        boot = None
        while True:
            boot = self.host.boot_id(node)
            if boot and boot != state["boot_before"]:
                break
            if self.clock.time() > deadline:
                raise StepFailed(
                    "reboot",
                    "%s did not come back with a new boot id within %ds (%s)"
                    % (
                        node,
                        self.opts["reboot_timeout"],
                        "its minion answers with the old one: it did not reboot"
                        if boot
                        else "its minion does not answer",
                    ),
                )
            self.clock.sleep(self.opts["poll_interval"])
        # a heartbeat newer than the moment the new boot answered is the rebooted
        # nova-compute's own (one before could still be the old process's last)
        state["boot_after"], state["boot_seen"] = boot, self.clock.time()
        self._save(record)
        self._wait_service(node, since=state["boot_seen"])
        return boot

    def _wait_service(self, node, since):
        deadline = self.clock.time() + self.opts["service_timeout"]
        while True:
            why = self._service_not_back(node, since)
            if why is None:
                return
            if self.clock.time() > deadline:
                raise StepFailed(
                    "reboot",
                    "nova-compute of %s is not back within %ds: %s"
                    % (node, self.opts["service_timeout"], why),
                )
            self.clock.sleep(self.opts["poll_interval"])

    def _service_not_back(self, node, since):
        service = self.provider.service_show(node)
        if service["state"] != "up" or service["forced_down"]:
            return "its state is %s%s" % (
                service["state"],
                " (forced down)" if service["forced_down"] else "",
            )
        if since and heartbeat_epoch(service.get("updated_at")) <= since:
            return "no heartbeat since the reboot (last %s)" % service.get("updated_at")
        if not self.provider.placement_free([node]):
            return "its resource provider is not in Placement"
        return None

    def _gate(self, node):
        why = self._service_not_back(node, None)
        if why:
            raise StepFailed("gate", "nova-compute of %s is not healthy: %s" % (node, why))
        # a minion that just (re)connected can miss one publish: ask again for a while
        deadline = self.clock.time() + min(60.0, self.opts["service_timeout"])
        while not self.host.answers(node):
            if self.clock.time() > deadline:
                raise StepFailed("gate", "the minion of %s does not answer" % node)
            self.clock.sleep(self.opts["poll_interval"])
        check = self.opts["check"]
        if check:
            ok, summary = self.host.apply(node, check, {})
            if not ok:
                raise StepFailed(
                    "gate",
                    "the check (%s) failed on %s: %s" % (self._describe(check), node, summary),
                )

    def _enable(self, record, node, number, t0):
        state = record["nodes"][node]
        if not state["disabled_by_us"]:
            message = "%s stays disabled: someone else disabled it (%s)" % (
                node,
                state.get("prior_reason"),
            )
            self._mark(record, node, "enable", number, "left_disabled", message, t0)
            return
        out = self.evacuation.enable(node, migrate_back=self.opts["migrate_back"])
        state["enabled"] = out.get("comment")
        if self.opts["migrate_back"]:
            back = out.get("migrate_back") or {}
            state["migrate_back"] = back
            self._fire(
                record,
                node,
                "migrated_back",
                back.get("comment", ""),
                node=node,
                batch=number,
                result=back.get("result"),
            )
            if not back.get("result", True):
                raise StepFailed(
                    "enable",
                    "%s is enabled, but moving its servers back failed: %s"
                    % (node, back.get("comment")),
                )
        self._mark(record, node, "enable", number, "enabled", out.get("comment", ""), t0)

    def _stop(self, record, node, number, step, comment):
        # every other node of the batch that the run disabled and has not started: back in service
        released = []
        for other in record["batches"][number - 1]:
            st = record["nodes"][other]
            if other == node or "enable" in st["done"] or not st["disabled_by_us"]:
                continue
            try:
                self.evacuation.enable(other)
                # back in service: a resume drains it again from the start
                st.update(disabled_by_us=False, done=[], boot_before=None, reboot_requested=None)
                released.append(other)
            except VmopsError as exc:
                log.warning("vmops: could not re-enable %s: %s", other, exc)
        record.update(
            state="failed",
            stopped_at={"node": node, "step": step, "batch": number, "comment": comment},
        )
        self._save(record)
        self._fire(
            record, node, "failed", comment, node=node, batch=number, step=step, result=False
        )
        report = self._report(record, False)
        if released:
            report["comment"] += (
                "; %s enabled again (its maintenance not done: a re-run starts it over)"
                % ", ".join(released)
            )
        self._fire(record, "run", "done", report["comment"], result=False)
        return report

    def _report(self, record, result):
        took = round(self.clock.time() - record["started"], 2)
        nodes = []
        for group in record["batches"]:
            for node in group:
                st = record["nodes"][node]
                nodes.append(
                    {
                        "node": node,
                        "done": list(st["done"]),
                        "durations": st.get("durations", {}),
                        "disabled_by_us": st["disabled_by_us"],
                        "prior_reason": st.get("prior_reason"),
                        "boot_before": st.get("boot_before"),
                        "boot_after": st.get("boot_after"),
                        "evacuation": st.get("evacuation"),
                        "migrate_back": st.get("migrate_back"),
                    }
                )
        finished = [n["node"] for n in nodes if "enable" in n["done"]]
        if result:
            comment = "maintenance run %s: %d node(s) done in %.1fs (%s)" % (
                record["run"],
                len(finished),
                took,
                ", ".join(finished),
            )
        else:
            stop = record["stopped_at"]
            comment = (
                "maintenance run %s stopped at %s, step %s (batch %d): %s; %s %s; "
                "done: %s; re-run the same command to resume at %s"
                % (
                    record["run"],
                    stop["node"],
                    stop["step"],
                    stop["batch"],
                    stop["comment"],
                    stop["node"],
                    "is enabled (its servers were not all moved back)"
                    if record["nodes"][stop["node"]].get("enabled")
                    else "stays disabled",
                    ", ".join(finished) or "none",
                    stop["node"],
                )
            )
        out = {
            "result": result,
            "run": record["run"],
            "comment": comment,
            "duration": took,
            "batches": record["batches"],
            "nodes": nodes,
            "stopped_at": record.get("stopped_at"),
        }
        if not result:
            out["retcode"] = 1
        return out
