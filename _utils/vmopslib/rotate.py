"""Rotate a whole role onto new VMs, batch by batch (``orch.rotate``, ``vmops.rotate``).

Every VM a Salt target matches (or an explicit list) is replaced with the full
``orch.replace_vm`` flow (plan, hand-over, highstate, deploy, health gate, flip,
retire), ``batch`` of them at once; the next batch starts only when every
replacement of the batch ended ``done``.  A failed replacement rolls itself back
(as ``replace_vm`` does) and, past ``max_failures`` (default 0), no further batch
starts.

Before anything changes the plan checks everything it can: the selection (a minion
the cloud has no server for is reported, never guessed; one with several servers
too), every VM's own replacement plan (``replace_vm``'s validation, run as
``test=True``), and the capacity: at the peak each replacement of a batch holds one
extra server until its old one is retired, so the batch's flavors must fit in the
project's free quota (instances, cores, RAM; EC2: instances).

The run has an id and a journal (one record per selection): re-running the same
command resumes an unfinished run, and a VM already replaced by it is never
replaced again; a VM whose replacement was interrupted resumes through
``replace_vm``'s own journal.

Parts the caller gives (the runner: ``saltglue``):

* ``match(target, tgt_type)``: the minion ids a Salt target matches (on the master,
  from its keys and grains cache: no ping);
* ``check(vm)``: the VM's replacement plan with ``test=True`` (its comment), raising
  :class:`InvalidInput` when it would be refused;
* ``launch(vm)``: run one whole replacement and return when it ended (the runner:
  a ``salt-run state.orch orch.replace_vm`` of its own);
* ``outcome(vm)``: the replacement's journal summary (``replace.Replacement.summary``),
  or None.
"""

import concurrent.futures
import hashlib
import math
import time
import uuid

from . import config
from . import events as tags
from .errors import InvalidInput, VmopsError

# a VM's state in the run's journal
VM_STATES = ("pending", "running", "done", "rolled_back", "failed", "skipped")
FINISHED = ("done", "rolled_back", "failed", "skipped")
RESUMABLE = ("running", "stopped", "partial")
TGT_TYPES = ("glob", "pcre", "list", "grain", "grain_pcre", "pillar", "nodegroup", "compound")


def batch_size(batch, count):
    """``batch`` (a number, or a percentage of ``count`` as "25%") as a number >= 1."""
    if isinstance(batch, str) and batch.strip().endswith("%"):
        try:
            pct = float(batch.strip()[:-1])
        except ValueError:
            pct = -1
        if not 0 < pct <= 100:
            raise InvalidInput(
                "batch %r: a percentage between 0 and 100; nothing was changed" % batch
            )
        return max(1, int(math.ceil(count * pct / 100.0)))
    try:
        if isinstance(batch, bool):
            raise ValueError
        size = int(batch)
        if size < 1 or str(size) != str(batch).strip():
            raise ValueError
    except (TypeError, ValueError):
        raise InvalidInput(
            "batch must be a number of VMs (at least 1) or a percentage such as '25%%', "
            "not %r; nothing was changed" % (batch,)
        ) from None
    return size


def run_key(cloud, names):
    """The journal key of a rotation over ``names`` on ``cloud``: the same selection is
    the same run (a re-run resumes it)."""
    digest = hashlib.sha256(("%s:%s" % (cloud, ",".join(sorted(names)))).encode()).hexdigest()
    return "rotate-%s" % digest[:16]


class Rotation:
    """One rotation's plan and run; see the module's docstring."""

    def __init__(
        self,
        provider,
        store,
        match,
        check,
        launch,
        outcome,
        events=None,
        options=None,
        clock=time,
    ):
        self.provider = provider
        self.store = store
        self.match = match
        self.check = check
        self.launch = launch
        self.outcome = outcome
        self.events = events or (lambda *a, **k: None)
        self.opts = self.options(options or {})
        self.clock = clock

    @staticmethod
    def options(given):
        opts = {
            "target": given.get("target"),
            "tgt_type": given.get("tgt_type") or "glob",
            "vms": given.get("vms"),
            "batch": given.get("batch", 1),
            "max_failures": given.get("max_failures", 0),
            "flavor": given.get("flavor"),
        }
        if opts["tgt_type"] not in TGT_TYPES:
            raise InvalidInput(
                "tgt_type must be one of %s, not %r; nothing was changed"
                % (", ".join(TGT_TYPES), opts["tgt_type"])
            )
        if (opts["target"] in (None, "")) == (opts["vms"] in (None, "", [])):
            raise InvalidInput(
                "give either target (a Salt target, e.g. 'G@role:app' with tgt_type=compound) "
                "or vms (a list of VM names); nothing was changed"
            )
        opts["max_failures"] = config.strict_int(opts["max_failures"], "max_failures", 0)
        return opts

    # ------------------------------------------------------------------ selection

    def names(self):
        """The VM names the selection gives (sorted, no duplicates); nothing asked of the
        cloud yet."""
        if self.opts["vms"] not in (None, "", []):
            names = self.opts["vms"]
            if isinstance(names, str):
                names = [n.strip() for n in names.split(",") if n.strip()]
            if not isinstance(names, (list, tuple)):
                raise InvalidInput("vms: a list of VM names; nothing was changed")
        else:
            names = self.match(self.opts["target"], self.opts["tgt_type"])
        names = sorted(set(names))
        for name in names:
            config.check_minion_id(name, "VM name")
        if not names:
            raise InvalidInput(
                "the target %r (%s) matches no minion; nothing was changed"
                % (self.opts["target"] or self.opts["vms"], self.opts["tgt_type"])
            )
        return names

    def select(self, names=None):
        """``(vms, unknown)``: the VMs to rotate, in order, each with its one server;
        and the minions the cloud cannot vouch for, with why."""
        vms, unknown = [], {}
        for name in names or self.names():
            servers = self.provider.servers_named(name)
            if not servers:
                unknown[name] = "no server named %s on cloud %s" % (name, self.provider.name)
            elif len(servers) > 1:
                unknown[name] = "%d servers named %s on cloud %s (%s): which one is %s?" % (
                    len(servers),
                    name,
                    self.provider.name,
                    ", ".join(s["id"] for s in servers),
                    name,
                )
            else:
                vms.append({"vm": name, "old": servers[0]["id"], "flavor": servers[0]["flavor"]})
        return vms, unknown

    # ------------------------------------------------------------------ plan

    def _capacity(self, groups):
        """The peak of extra servers (and their cores and RAM) against the free quota."""
        sizes = {}
        for group in groups:
            for item in group:
                flavor = self.opts["flavor"] or item["flavor"]
                if flavor and flavor not in sizes:
                    sizes[flavor] = self.provider.flavor_size(flavor)
        peak = {"servers": 0, "cores": 0, "ram_mb": 0}
        for group in groups:
            need = {"servers": len(group), "cores": 0, "ram_mb": 0}
            for item in group:
                size = sizes.get(self.opts["flavor"] or item["flavor"]) or {}
                need["cores"] += size.get("vcpus") or 0
                need["ram_mb"] += size.get("ram_mb") or 0
            for key, value in need.items():
                peak[key] = max(peak[key], value)
        free = self.provider.headroom()
        short = []
        for key, word in (("instances", "servers"), ("cores", "cores"), ("ram_mb", "ram_mb")):
            have = free.get(key)
            if have is not None and peak[word] > have:
                short.append("%s: %d needed at the peak, %d free" % (key, peak[word], have))
        return {"peak": peak, "free": free, "short": short}

    def plan(self, test=True, names=None):
        """The whole rotation, batch by batch; ``problems`` (refused) when any check fails."""
        names = names or self.names()
        vms, unknown = self.select(names)
        problems, comments = [], {}

        def checked(item):
            try:
                return item["vm"], self.check(item["vm"]), None
            except InvalidInput as exc:
                return item["vm"], None, "%s: %s" % (item["vm"], exc)

        # every VM's own plan, a few at once (each is a handful of cloud reads)
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(vms) or 1)) as pool:
            for vm, comment, problem in pool.map(checked, vms):
                comments[vm] = comment
                if problem:
                    problems.append(problem)
        size = batch_size(self.opts["batch"], max(len(vms), 1))
        groups = [vms[i : i + size] for i in range(0, len(vms), size)]
        capacity = self._capacity(groups) if vms else None
        if capacity and capacity["short"]:
            problems.append(
                "the cloud's quota will not hold %d extra server(s) at once (%s): a smaller "
                "batch, or more quota" % (capacity["peak"]["servers"], "; ".join(capacity["short"]))
            )
        if not vms:
            problems.append(
                "none of the matched minions is a server on cloud %s" % self.provider.name
            )
        batches = [[i["vm"] for i in g] for g in groups]
        lines = ["batch %d: %s" % (n, ", ".join(b)) for n, b in enumerate(batches, 1)]
        comment = "%s %d VM(s) on cloud %s in %d batch(es) of up to %d%s" % (
            "would rotate" if test else "rotating",
            len(vms),
            self.provider.name,
            len(batches),
            size,
            " (max_failures %d)" % self.opts["max_failures"] if self.opts["max_failures"] else "",
        )
        if capacity:
            comment += "; at the peak %d extra server(s), %d cores, %d MB RAM" % (
                capacity["peak"]["servers"],
                capacity["peak"]["cores"],
                capacity["peak"]["ram_mb"],
            )
        if unknown:
            comment += "; not rotated (the cloud cannot vouch): %s" % "; ".join(
                "%s (%s)" % (k, v) for k, v in unknown.items()
            )
        comment += ": " + "; ".join(lines)
        if problems:
            comment = "refused: %s; nothing was changed" % "; ".join(problems)
        return {
            "result": None if test and not problems else not problems,
            "comment": comment,
            "cloud": self.provider.name,
            "batches": batches,
            "vms": {i["vm"]: {"server": i["old"], "plan": comments.get(i["vm"])} for i in vms},
            "unknown": unknown,
            "capacity": capacity,
            "problems": problems,
            "key": run_key(self.provider.name, names),
            "_items": vms,
        }

    # ------------------------------------------------------------------ run

    def _fire(self, record, what, message, **data):
        self.events(tags.rotate(record["run"], what), message, run=record["run"], **data)

    def _save(self, record):
        self.store.save(record["key"], record)

    def run(self, run_id=None):
        """Rotate; the report (``result`` False: it stopped)."""
        names = self.names()
        key = run_key(self.provider.name, names)
        held = self.store.lock(key)
        try:
            record = self.store.load(key)
            if record and record.get("state") in RESUMABLE:
                if run_id and run_id != record["run"]:
                    raise InvalidInput(
                        "run %s is unfinished over the same VMs: resume it (run=%s or no run=) "
                        "or abandon it first; nothing was changed" % (record["run"], record["run"])
                    )
                record["state"] = "running"
                record["resumed"] = record.get("resumed", 0) + 1
                self._save(record)
                self._fire(
                    record,
                    "resume",
                    "resuming rotation %s: %s done, %s left"
                    % (
                        record["run"],
                        sum(1 for v in record["vms"].values() if v["state"] == "done"),
                        sum(1 for v in record["vms"].values() if v["state"] not in FINISHED),
                    ),
                )
            else:
                plan = self.plan(test=False, names=names)
                if plan["problems"]:
                    self.events(
                        tags.rotate(run_id or "new", "refused"),
                        plan["comment"],
                        problems=plan["problems"],
                    )
                    raise InvalidInput(plan["comment"])
                record = {
                    "key": plan["key"],
                    "run": run_id or uuid.uuid4().hex[:12],
                    "cloud": plan["cloud"],
                    "started": self.clock.time(),
                    "state": "running",
                    "batches": plan["batches"],
                    "options": {k: v for k, v in self.opts.items() if k != "vms"},
                    "unknown": plan["unknown"],
                    "vms": {
                        i["vm"]: {"state": "pending", "old": i["old"], "batch": n}
                        for n, g in enumerate(plan["batches"], 1)
                        for i in plan["_items"]
                        if i["vm"] in g
                    },
                }
                self._save(record)
                self._fire(record, "plan", plan["comment"], batches=plan["batches"])
            return self._run_locked(record)
        finally:
            held.release()

    def _one(self, record, vm):
        entry = record["vms"][vm]
        started = self.clock.time()
        summary = self.outcome(vm) or {}
        if not (summary.get("old") == entry["old"] and summary.get("state") == "done"):
            # (a run killed after this VM's replacement finished must not replace it again)
            try:
                launched = self.launch(vm)
            except VmopsError as exc:
                launched = str(exc)
            summary = self.outcome(vm) or {}
        else:
            launched = None
        mine = summary.get("old") == entry["old"]
        state = summary.get("state") if mine else None
        if state == "done":
            result = "done"
        elif state == "rolled_back":
            result = "rolled_back"
        else:
            result = "failed"
        steps = (summary.get("steps") or []) if mine else []
        failed = [s for s in steps if s[1] is False]
        if summary.get("failed") and mine:
            comment = "%(step)s failed: %(reason)s" % summary["failed"]
        elif failed:
            comment = "%s failed: %s" % (failed[0][0], failed[0][3])
        else:
            comment = launched or "replace_vm ended in state %s" % (state or "unknown")
        if result != "done" and steps and steps[-1][0] == "rollback":
            comment += "; %s" % steps[-1][3]
        return {
            "state": result,
            "new": summary.get("new") if mine else None,
            "duration": round(self.clock.time() - started, 2),
            "replace_state": state,
            "comment": comment
            if result != "done"
            else "replaced: %s -> %s"
            % (
                entry["old"],
                summary.get("new"),
            ),
            "floating_ips": summary.get("floating_ips") if mine else None,
        }

    def _run_locked(self, record):
        failures = 0  # in this try: a VM that failed before is tried again in its batch
        for number, group in enumerate(record["batches"], 1):
            todo = [vm for vm in group if record["vms"][vm]["state"] not in ("done", "skipped")]
            if not todo:
                continue
            # a VM that failed in an earlier try of this run is tried again on resume
            self._fire(
                record,
                "batch",
                "batch %d of %d: replacing %s" % (number, len(record["batches"]), ", ".join(todo)),
                batch=number,
                vms=todo,
            )
            for vm in todo:
                record["vms"][vm].update(state="running", started=self.clock.time())
            self._save(record)
            with concurrent.futures.ThreadPoolExecutor(max_workers=len(todo)) as pool:
                futures = {pool.submit(self._one, record, vm): vm for vm in todo}
                for future in concurrent.futures.as_completed(futures):
                    vm = futures[future]
                    try:
                        outcome = future.result()
                    except Exception as exc:  # pylint: disable=broad-except
                        outcome = {
                            "state": "failed",
                            "comment": "%s: %s" % (type(exc).__name__, exc),
                        }
                    record["vms"][vm].update(outcome)
                    self._save(record)
                    what = {"done": "done", "rolled_back": "rolled_back"}.get(
                        outcome["state"], "failed"
                    )
                    self._fire(
                        record,
                        "vm",
                        "%s: %s" % (vm, outcome["comment"]),
                        vm=vm,
                        state=outcome["state"],
                        batch=number,
                        new=outcome.get("new"),
                        duration=outcome.get("duration"),
                        outcome=what,
                    )
            failed_now = [vm for vm in todo if record["vms"][vm]["state"] != "done"]
            failures += len(failed_now)
            if failed_now and failures > record["options"]["max_failures"]:
                record.update(state="stopped", stopped_at=number)
                self._save(record)
                report = self.report(record)
                self._fire(record, "stopped", report["comment"], result=False)
                return report
        # every batch ran; failures within max_failures leave the run "partial": a re-run
        # retries the VMs that failed (and only those)
        record.update(state="done" if failures == 0 else "partial", finished=self.clock.time())
        self._save(record)
        report = self.report(record)
        self._fire(
            record, "done" if not failures else "stopped", report["comment"], result=not failures
        )
        return report

    def report(self, record):
        by_state = {}
        for vm, entry in record["vms"].items():
            by_state.setdefault(entry["state"], []).append(vm)
        untouched = by_state.get("pending", [])
        parts = []
        for state, word in (
            ("done", "replaced"),
            ("rolled_back", "rolled back"),
            ("failed", "failed (see its replace_vm status)"),
            ("running", "interrupted"),
        ):
            if by_state.get(state):
                parts.append("%s: %s" % (word, ", ".join(sorted(by_state[state]))))
        if untouched:
            parts.append("not touched: %s" % ", ".join(sorted(untouched)))
        ok = record["state"] == "done"
        took = round((record.get("finished") or self.clock.time()) - record["started"], 2)
        comment = "rotation %s %s after %.1f s; %s" % (
            record["run"],
            "finished" if ok else "stopped",
            took,
            "; ".join(parts),
        )
        if not ok:
            comment += "; re-run the same command to resume (done VMs are not replaced again)"
        if record.get("unknown"):
            comment += "; not rotated (unknown to the cloud): %s" % ", ".join(record["unknown"])
        return {
            "result": ok,
            "comment": comment,
            "run": record["run"],
            "state": record["state"],
            "cloud": record["cloud"],
            "batches": record["batches"],
            "vms": record["vms"],
            "done": sorted(by_state.get("done", [])),
            "rolled_back": sorted(by_state.get("rolled_back", [])),
            "failed": sorted(by_state.get("failed", [])),
            "untouched": sorted(untouched),
            "unknown": record.get("unknown") or {},
            "total": took,
        }

    def status(self, names):
        record = self.store.load(run_key(self.provider.name, names))
        return self.report(record) if record else None
