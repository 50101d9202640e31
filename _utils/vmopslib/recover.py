"""Recover a dead compute host: fence it, force it down, evacuate its servers, verify.

The Ops Guide's "compute node failure" as one resumable run::

    check     nova-compute of the node is down (Nova evacuates nothing else), its own
              minion does not answer (a host that answers is not dead), the servers are
              classified and fit on the other enabled hosts (Placement's numbers)
    fence     proof that the node is off: a fence action run from the master (pillar
              ``fence: {cmd: "ipmitool ... chassis power off"}``, exit 0 = off) or the
              operator's ``fenced: true``; without it nothing moves: two copies of a VM
              writing to one volume is the worst outcome here
    down      forced_down (Nova may evacuate at once; no waiting for heartbeats) and
              disabled (the scheduler places nothing there when it comes back)
    evacuate  every evacuable server, ``concurrency`` at a time; volume-backed servers
              go by default, servers with local disks (rebuilt from their image: their
              data is lost) only with ``local_disks: rebuild``; busy or un-evacuable
              servers are reported (``reset_state: true`` resets them to error first)
    verify    each: on another host, ACTIVE again when it was (from microversion 2.95
              Nova leaves evacuated servers SHUTOFF: started again, and said so), its
              volumes attached, its minion (when the master knows it) answering there

The node stays disabled and forced down: when the host comes back, nova-compute
destroys its local copy of every evacuated server.  ``enable`` (``vmops.enable_node``)
brings it back only when no recovery runs or left servers behind, and only once its
nova-compute is heartbeating again.
"""

import getpass
import logging
import shlex
import socket
import subprocess
import time
import uuid

from . import config
from . import events as tags
from .errors import InvalidInput, VmopsError
from .evacuate import REASON_PREFIX, check_host, fit, free_by_host
from .maintenance import heartbeat_epoch

log = logging.getLogger(__name__)

EVACUABLE = ("ACTIVE", "SHUTOFF", "ERROR")  # Nova's vm_states active, stopped, error
DEFAULTS = {
    "fenced": False,  # the operator's word that the node is off
    "fence": None,  # {cmd: "..."}: run on the master; exit 0 = the node is off
    "fence_timeout": 120,
    "local_disks": "report",  # report | rebuild
    "reset_state": False,
    "concurrency": 2,
    "timeout": 600,  # per server: from the evacuate call to verified
    "poll_interval": 2,
    "force": False,  # go on although the capacity check fails
}


def options(conf=None, overrides=None):
    """The recovery settings: defaults, ``vmops:recover``, then ``overrides``, checked."""
    out = dict(DEFAULTS)
    out.update((conf or {}).get("recover") or {})
    out.update({k: v for k, v in (overrides or {}).items() if v is not None})
    unknown = sorted(set(out) - set(DEFAULTS))
    if unknown:
        raise InvalidInput(
            "unknown recovery option(s) %s (known: %s); nothing was changed"
            % (", ".join(unknown), ", ".join(sorted(DEFAULTS)))
        )
    for key in ("fenced", "reset_state", "force"):
        out[key] = config.strict_bool(out[key], key)
    out["concurrency"] = config.strict_int(out["concurrency"], "concurrency", 1)
    for key in ("timeout", "poll_interval", "fence_timeout"):
        try:
            out[key] = float(out[key])
            if out[key] <= 0:
                raise ValueError
        except (TypeError, ValueError):
            raise InvalidInput(
                "%s must be a positive number of seconds, not %r; nothing was changed"
                % (key, out[key])
            ) from None
    if out["local_disks"] not in ("report", "rebuild"):
        raise InvalidInput(
            "local_disks must be report or rebuild, not %r; nothing was changed"
            % (out["local_disks"],)
        )
    fence = out["fence"]
    if fence not in (None, "", {}):
        if not isinstance(fence, dict) or set(fence) != {"cmd"} or not str(fence["cmd"]).strip():
            raise InvalidInput(
                "fence must be {cmd: <command run on the master; exit 0 = the node is off>}, "
                "not %r; nothing was changed" % (fence,)
            )
    else:
        out["fence"] = None
    return out


def run_fence(action, node, timeout):
    """(ok, summary) of the fence command, ``{node}`` replaced by the node's name."""
    command = str(action["cmd"]).replace("{node}", shlex.quote(node))
    try:
        proc = subprocess.run(
            command,
            shell=True,  # an operator's command line from the master's pillar
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False, "the fence command did not finish within %ds" % timeout
    tail = (proc.stderr or proc.stdout or "").strip()[-300:]
    return proc.returncode == 0, "exit %d%s" % (proc.returncode, ": " + tail if tail else "")


class Recovery:
    """One dead node's recovery.

    ``provider`` an OpenStack driver; ``store`` a :class:`store.JournalStore`;
    ``fence(action, node)`` -> (ok, summary); ``node_answers(node)`` -> bool (its own
    minion answers); ``verify_minions(list of (minion id, host))`` -> {id: None or why}.
    """

    def __init__(
        self,
        provider,
        store,
        opts,
        fence=None,
        node_answers=None,
        verify_minions=None,
        events=None,
        clock=time,
        who=None,
    ):
        self.provider, self.store, self.opts = provider, store, opts
        self.fence = fence or (lambda action, node: run_fence(action, node, opts["fence_timeout"]))
        self.node_answers = node_answers or (lambda node: False)
        self.verify_minions = verify_minions
        self.events = events or (lambda tag, message, **data: None)
        self.clock = clock
        self.who = who or "%s@%s" % (getpass.getuser(), socket.gethostname())

    # ------------------------------------------------------------------ checks

    def _fire(self, node, what, message, **data):
        self.events(tags.recovery(node, what), message, **data)

    def classify(self, server):
        """(method, comment): ``evacuate`` or ``blocked``."""
        status, task = server["status"], server.get("task_state")
        if task and not self.opts["reset_state"]:
            return "blocked", (
                "busy with task %s when the host died: reset_state=True resets it to error "
                "and evacuates it" % task
            )
        if status not in EVACUABLE and not self.opts["reset_state"]:
            return "blocked", (
                "%s: Nova evacuates ACTIVE, SHUTOFF and ERROR servers only; reset_state=True "
                "resets it to error first" % status
            )
        local = server.get("local_disk") or []
        if local and self.opts["local_disks"] != "rebuild":
            return "blocked", (
                "on the host's own disks (%s): an evacuation rebuilds them from the image and "
                "their data is lost; local_disks=rebuild goes ahead" % ", ".join(local)
            )
        comment = "evacuate"
        if local:
            comment += " (local %s rebuilt from the image: data lost, as asked)" % ", ".join(local)
        if task or status not in EVACUABLE:
            comment = "reset to error, then " + comment
        return "evacuate", comment

    def _targets(self, node):
        return sorted(
            s["host"]
            for s in self.provider.service_list()
            if s["host"] != node
            and s["status"] == "enabled"
            and s["state"] == "up"
            and not s["forced_down"]
        )

    def _check(self, node, resuming=False):
        """(service, items, capacity, refusals): everything decided before anything changes."""
        check_host(node)
        service = self.provider.service_show(node)
        refusals = []
        ours = (service.get("disabled_reason") or "").startswith(REASON_PREFIX)
        if service["state"] != "down" and not (resuming and service["forced_down"] and ours):
            refusals.append(
                "nova-compute of %s is %s (last heartbeat %s): Nova evacuates only from a host "
                "whose service is down; a host that still reports is not dead"
                % (node, service["state"], service.get("updated_at"))
            )
        if self.node_answers(node):
            refusals.append(
                "the minion of %s answers: the host is running; fence it (power it off) first"
                % node
            )
        targets = self._targets(node)
        if not targets:
            refusals.append("no other enabled compute host is up: nowhere to evacuate to")
        items = []
        for server in sorted(
            self.provider.host_server_states(node), key=lambda s: (s["name"] or "", s["id"])
        ):
            method, comment = self.classify(server)
            items.append(
                {
                    "id": server["id"],
                    "name": server["name"],
                    "status": server["status"],
                    "task_state": server.get("task_state"),
                    "method": method,
                    "plan": comment,
                    "needs": server["needs"],
                    "local_disk": server.get("local_disk") or [],
                    "phase": "pending" if method == "evacuate" else "blocked",
                    "dest": None,
                    "comment": None if method == "evacuate" else comment,
                }
            )
        moving = [i for i in items if i["method"] == "evacuate"]
        _, unplaced, left = fit(moving, free_by_host(self.provider, targets))
        capacity = {
            "fits": not unplaced,
            "unplaced": [i["name"] for i in unplaced],
            "free_after": {
                h: {rc: v["free"] for rc, v in sorted(r.items())} for h, r in sorted(left.items())
            },
        }
        if unplaced:
            refusals.append(
                "%s do not fit on %s (Placement's free capacity)"
                % (", ".join(capacity["unplaced"]), ", ".join(targets) or "no host")
            )
        return service, items, capacity, refusals

    def _fencing(self):
        if self.opts["fenced"]:
            return "the operator says it is off (fenced=True)"
        if self.opts["fence"]:
            return "fence command: %s" % self.opts["fence"]["cmd"]
        return None

    def plan(self, node):
        """What a run would do (``test=True``); nothing changes, no fence action runs."""
        service, items, capacity, refusals = self._check(node)
        if not self._fencing():
            refusals.append("no proof that %s is off: give fence={cmd: ...} or fenced=True" % node)
        holder = self.store.is_locked(node)
        if holder:
            refusals.append("a recovery of %s is already running (%s)" % (node, holder))
        evac = [i for i in items if i["method"] == "evacuate"]
        return {
            "result": not [r for r in refusals if not (self.opts["force"] and "do not fit" in r)],
            "test": True,
            "node": node,
            "service": service,
            "fencing": self._fencing(),
            "servers": [
                {k: i[k] for k in ("id", "name", "status", "method", "plan", "local_disk")}
                for i in items
            ],
            "capacity": capacity,
            "refusals": refusals,
            "comment": "%s: %d server(s), %d to evacuate, %d reported%s"
            % (
                node,
                len(items),
                len(evac),
                len(items) - len(evac),
                "; would be refused: " + "; ".join(refusals) if refusals else "",
            ),
        }

    # ------------------------------------------------------------------ run

    def _save(self, record):
        record["updated"] = self.clock.time()
        self.store.save(record["node"], record)

    def run(self, node):
        """Recover ``node``; the report (``result`` False when a server was not recovered)."""
        check_host(node)
        lock = self.store.lock(node)
        try:
            record = self.store.load(node)
            resuming = bool(record and record.get("state") == "running")
            service, items, capacity, refusals = self._check(node, resuming)
            if not resuming:
                if not capacity["fits"] and self.opts["force"]:
                    refusals = [r for r in refusals if "do not fit" not in r]
                if not self._fencing():
                    refusals.append(
                        "no proof that %s is off: give fence={cmd: ...} (run from the master) "
                        "or fenced=True" % node
                    )
                if refusals:
                    self._fire(node, "refused", "; ".join(refusals), problems=refusals)
                    raise InvalidInput("%s; nothing was changed" % "; ".join(refusals))
                record = {
                    "node": node,
                    "run": uuid.uuid4().hex[:12],
                    "who": self.who,
                    "started": self.clock.time(),
                    "state": "running",
                    "items": items,
                    "options": self.opts,
                }
                self._save(record)
            else:
                known = {i["id"] for i in record["items"]}
                record["items"].extend(i for i in items if i["id"] not in known)
                record["resumed"] = record.get("resumed", 0) + 1
            if not record.get("fenced"):
                self._fence(record)
            self._force_down(record, service)
            self._evacuate(record)
            self._verify(record)
            return self._finish(record)
        finally:
            lock.release()

    def _fence(self, record):
        node = record["node"]
        if self.opts["fenced"]:
            how = "the operator says it is off (fenced=True)"
        else:
            ok, summary = self.fence(self.opts["fence"], node)
            if not ok:
                record["state"] = "refused"
                self._save(record)
                self._fire(
                    node, "refused", "the fence action failed: %s" % summary, run=record["run"]
                )
                raise InvalidInput(
                    "the fence action for %s failed (%s): not proven off, nothing was moved"
                    % (node, summary)
                )
            how = "fence command succeeded (%s)" % summary
        record["fenced"] = {"how": how, "at": self.clock.time()}
        self._save(record)
        self._fire(node, "fenced", "%s is off: %s" % (node, how), run=record["run"], how=how)

    def _force_down(self, record, service):
        node = record["node"]
        if not service["forced_down"]:
            self.provider.service_force_down(node, True)
        reason = service.get("disabled_reason") or ""
        if service["status"] == "enabled" or not reason.startswith(REASON_PREFIX):
            if service["status"] == "disabled" and reason:
                record["prior_reason"] = reason
            text = "%s run=%s recover by %s at %s: host dead, fenced" % (
                REASON_PREFIX,
                record["run"],
                self.who,
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            )
            self.provider.service_disable(node, text[:255])
        record["forced_down_at"] = record.get("forced_down_at") or self.clock.time()
        self._save(record)
        self._fire(node, "forced_down", "%s forced down and disabled" % node, run=record["run"])

    def _evacuate(self, record):
        todo = [i for i in record["items"] if i["phase"] in ("pending", "evacuating")]
        inflight = [i for i in todo if i["phase"] == "evacuating"]  # adopted on resume
        pending = [i for i in todo if i["phase"] == "pending"]
        while pending or inflight:
            while pending and len(inflight) < self.opts["concurrency"]:
                item = pending.pop(0)
                self._start(record, item)
                if item["phase"] == "evacuating":
                    inflight.append(item)
            self.clock.sleep(self.opts["poll_interval"])
            for item in list(inflight):
                if self._settled(record, item):
                    inflight.remove(item)

    def _start(self, record, item):
        state = self.provider.server_state(item["id"])
        if state is None:
            item.update(phase="gone", comment="deleted meanwhile")
            self._save(record)
            return
        if state["host"] not in (None, record["node"]) or str(
            state.get("task_state") or ""
        ).startswith("rebuild"):
            # already on its way (or there): an evacuation asked by a run killed before it
            # could journal it.  Followed, never asked twice (a second one, after a reset,
            # rebuilds it over the first: "Instance ... already exists")
            item.update(phase="evacuating", started=self.clock.time(), adopted=True)
            self._save(record)
            self._fire(
                record["node"],
                "evacuating",
                "%s: the evacuation of %s was already under way: followed"
                % (record["node"], item["name"]),
                run=record["run"],
                server=item["name"],
            )
            return
        try:
            if item["method"] == "evacuate" and (
                state.get("task_state") or state["status"] not in EVACUABLE
            ):
                self.provider.reset_server_state(item["id"], "error")
            self.provider.evacuate(item["id"])
        except VmopsError as exc:
            item.update(phase="failed", comment="Nova refused the evacuation: %s" % exc)
            self._save(record)
            self._fire(
                record["node"], "failed", item["comment"], run=record["run"], server=item["name"]
            )
            return
        item.update(phase="evacuating", started=self.clock.time())
        self._save(record)
        self._fire(
            record["node"],
            "evacuating",
            "%s: evacuation of %s asked for" % (record["node"], item["name"]),
            run=record["run"],
            server=item["name"],
        )

    def _settled(self, record, item):
        node = record["node"]
        state = self.provider.server_state(item["id"])
        elapsed = self.clock.time() - item["started"]
        if state is None:
            item.update(phase="gone", comment="deleted during its evacuation")
        elif (
            state["host"] not in (None, node)
            and not state.get("task_state")
            and state["status"] in ("ACTIVE", "SHUTOFF")
        ):
            item.update(phase="evacuated", dest=state["host"], duration=round(elapsed, 2))
            if item["status"] == "ACTIVE" and state["status"] == "SHUTOFF":
                # Nova >= 2.95 leaves an evacuated server stopped: it was running, start it
                self.provider.power_on(item["id"])
                item["restarted"] = True
                item["comment"] = "evacuated stopped (Nova >= 2.95): started again"
        elif state["status"] == "ERROR" and not state.get("task_state"):
            item.update(
                phase="failed",
                comment="the evacuation failed: %s" % (state.get("fault") or "ERROR"),
            )
        elif elapsed > self.opts["timeout"]:
            item.update(
                phase="failed",
                comment="not evacuated within %ds (status %s, task %s, host %s)"
                % (self.opts["timeout"], state["status"], state.get("task_state"), state["host"]),
            )
        else:
            return False
        self._save(record)
        what = "evacuated" if item["phase"] == "evacuated" else "failed"
        self._fire(
            node,
            what,
            "%s: %s %s%s"
            % (node, item["name"], item["phase"], " to %s" % item["dest"] if item["dest"] else ""),
            run=record["run"],
            server=item["name"],
            dest=item["dest"],
        )
        return True

    def _verify(self, record):
        done = [i for i in record["items"] if i["phase"] == "evacuated" and not i.get("verified")]
        deadline = self.clock.time() + self.opts["timeout"]
        for item in done:
            if item.get("restarted"):
                while True:
                    state = self.provider.server_state(item["id"])
                    if state and state["status"] == "ACTIVE":
                        break
                    if self.clock.time() > deadline:
                        item.update(phase="failed", comment="evacuated but did not start again")
                        break
                    self.clock.sleep(self.opts["poll_interval"])
            try:
                vols = self.provider.volumes(item["id"])
            except Exception as exc:  # pylint: disable=broad-except
                vols, item["comment"] = [], "volumes not checked: %s" % exc
            item["volumes"] = [v["volume_id"] for v in vols]
            bad = [v["volume_id"] for v in vols if v["status"] != "in-use"]
            if bad:
                item.update(
                    phase="failed", comment="volumes not attached again: %s" % ", ".join(bad)
                )
        if self.verify_minions:
            pairs = [(i["name"], i["dest"]) for i in done if i["phase"] == "evacuated"]
            checks = self.verify_minions(pairs) if pairs else {}
            for item in done:
                if item["name"] in (checks or {}):
                    why = checks[item["name"]]
                    item["minion"] = "answers from %s" % item["dest"] if why is None else why
                    if why is not None:
                        item.update(phase="failed", comment="evacuated, but its minion %s" % why)
        for item in done:
            item["verified"] = item["phase"] == "evacuated"
        self._save(record)

    def _finish(self, record):
        node = record["node"]
        counts = {}
        for item in record["items"]:
            counts[item["phase"]] = counts.get(item["phase"], 0) + 1
        bad = [i for i in record["items"] if i["phase"] in ("failed", "blocked", "pending")]
        took = round(self.clock.time() - record["started"], 2)
        fenced_to_first = None
        starts = [i["started"] for i in record["items"] if i.get("started")]
        if starts and record.get("fenced"):
            fenced_to_first = round(min(starts) - record["fenced"]["at"], 2)
        record.update(state="done" if not bad else "failed", finished=self.clock.time())
        self._save(record)
        comment = (
            "%s: %s in %.1fs; %s stays disabled and forced down (salt-run vmops.enable_node %s "
            "once the host is repaired and its nova-compute reports again)"
            % (
                node,
                ", ".join("%d %s" % (n, p) for p, n in sorted(counts.items())) or "no servers",
                took,
                node,
                node,
            )
        )
        if bad:
            comment += "; not recovered: " + "; ".join(
                "%s: %s" % (i["name"], i["comment"]) for i in bad
            )
        self._fire(node, "done", comment, run=record["run"], result=not bad, counts=counts)
        out = {
            "result": not bad,
            "node": node,
            "run": record["run"],
            "comment": comment,
            "duration": took,
            "fenced": record.get("fenced"),
            "fence_to_first_evacuation": fenced_to_first,
            "counts": counts,
            "servers": [
                {
                    k: i.get(k)
                    for k in (
                        "id",
                        "name",
                        "status",
                        "method",
                        "phase",
                        "dest",
                        "duration",
                        "volumes",
                        "minion",
                        "comment",
                    )
                }
                for i in record["items"]
            ],
        }
        if bad:
            out["retcode"] = 1
        return out

    # ------------------------------------------------------------------ back in service

    def enable(self, node, max_silence=60):
        """Unset forced_down and enable ``node`` once its nova-compute heartbeats again, when no
        recovery of it runs or left servers behind.  None when the node was not recovered."""
        service = self.provider.service_show(node)
        if not service["forced_down"]:
            return None
        holder = self.store.is_locked(node)
        if holder:
            raise InvalidInput(
                "a recovery of %s is running (%s): nothing was changed" % (node, holder)
            )
        record = self.store.load(node) or {}
        left = [
            i["name"] for i in record.get("items", []) if i["phase"] in ("pending", "evacuating")
        ]
        if left:
            raise InvalidInput(
                "the recovery of %s has not finished with %s: re-run vmops.recover_node %s "
                "first; nothing was changed" % (node, ", ".join(left), node)
            )
        since = max(record.get("forced_down_at") or 0, self.clock.time() - max_silence)
        if heartbeat_epoch(service.get("updated_at")) <= since:
            raise InvalidInput(
                "nova-compute of %s has not reported since it was forced down (last heartbeat "
                "%s): repair and start the host first; it stays forced down"
                % (node, service.get("updated_at"))
            )
        self.provider.service_force_down(node, False)
        reason = service.get("disabled_reason") or ""
        enabled = False
        if service["status"] == "disabled" and reason.startswith(REASON_PREFIX):
            self.provider.service_enable(node)
            enabled = True
        comment = "%s: forced_down unset%s" % (
            node,
            " and enabled" if enabled else "; it stays disabled (%s)" % (reason or "no reason"),
        )
        self._fire(node, "enabled", comment)
        return {
            "result": True,
            "node": node,
            "changed": True,
            "comment": comment,
            "service": self.provider.service_show(node),
        }
