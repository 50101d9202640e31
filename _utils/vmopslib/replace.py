"""Replace a VM with a new one of the same name, without downtime: the step machine.

The WebPlatform runbook, made safe and resumable.  Steps, each idempotent:

1. ``plan``: validate (a plain minion id, exactly one server of that name, a
   flavor and image the cloud has), capture the old server's spec and floating
   IPs, take the lock (the journal), or resume a run whose owner died.
2. ``boot``: boot the new VM with the old spec, the same name and the run's
   nonce (metadata, and the tag its console prints its key with), wait until
   ACTIVE.  No key material in its user-data: the VM makes its own key.  Never
   boots twice: a server of that name and nonce created after the run started
   is adopted.  The old minion keeps the id meanwhile.
3. ``wait``: the identity hand-over (``trust.py``: the key the new server printed
   on its console becomes the id's accepted key, in place; the master's AES key
   rotates, so the old minion's session ends before any job is sent to the id),
   then the new minion answers.  4. ``sanity``: its ``level`` grain.
   (highstate and deploy run as Salt states between these and ``checked``.)
   With data volumes to move (``data_volumes``, the Copr flow, ``cutover.py``): the old
   minion moves to ``<name>-old`` first, the highstate runs with ``vmops:cutover:
   pending``, and step ``cutover`` is the outage window (services stop on the old
   server, the volumes move, the cut-over state, the IPs move, a health gate).
5. ``checked``: the new VM passed its checks; from here on the run only goes forward.
6. ``smoke`` (optional): a temporary floating IP on the new VM, released after.
7. ``flip``: every floating IP of the old VM moves to the new one, verified.
8. ``retire``: the old VM is deleted, stopped, or renamed ``<name>-old``.
``rollback`` (any failure before ``checked``): the old key comes back first (and
the AES key rotates again, ending the new minion's session), then the new VM goes
(or is kept, renamed ``<name>-failed``; a cleanup that fails is reported, it does
not stop the rollback), and the old minion answers again.

The journal (JSON, one file per VM, no private key ever) records the state,
the owner (process id and start time: a dead owner's run may be resumed),
the old spec, and every step with its duration.
"""

import concurrent.futures
import logging
import os
import time
import uuid

from . import config, identity, trust, userdata
from . import events as tags
from .cutover import NAMING, CutoverMixin, check_data_volumes
from .errors import InvalidInput, VmopsError
from .provider import SPEC_KEYS
from .registry import NONCE_KEY, new_nonce
from .store import JournalStore

log = logging.getLogger(__name__)

STATES = (
    "planned",
    "booting",
    "booted",
    "answering",
    "sane",
    "cutting",
    "checked",
    "flipped",
    "done",
    "rolled_back",
    "abandoned",
)
TERMINAL = ("done", "rolled_back", "abandoned")
# The steps of a run, in order: the one list (orch.replace_vm runs them through the
# runner; the deploy is a Salt state there, recorded by the runner's deploy step).
STEPS = (
    "plan",
    "boot",
    "wait",
    "sanity",
    "highstate",
    "deploy",
    "cutover",
    "checked",
    "smoke",
    "flip",
    "retire",
)
# What ``salt-run vmops.replace_vm step=...`` accepts (deploy: recorded as passed; the
# orchestration runs it as a Salt state just before).
RUNNER_STEPS = STEPS + ("rollback", "abandon", "status")
KEEP_OLD = ("delete", "stop", "rename")
# the options of a replacement's plan besides the new VM's spec (runner, state, rotation)
PLAN_OPTIONS = (
    "keep_old",
    "keep_failed",
    "fip_network",
    "naming",
    "data_volumes",
    "keep_days",
    "pre_detach",
    "cutover_state",
    "root_size",
    "encrypted",
)
# what the new VM takes from the old one (the name is the same; user-data and volumes are new)
SPEC_FROM_OLD = tuple(k for k in SPEC_KEYS if k not in ("name", "user_data", "volumes", "extras"))


def _proc_start(pid):
    try:
        with open("/proc/%d/stat" % pid, encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def current_owner(token=None):
    pid = os.getpid()
    return {
        "pid": pid,
        "start": _proc_start(pid),
        "token": token or uuid.uuid4().hex,
        "since": time.time(),
    }


def owner_alive(owner):
    return bool(owner) and _proc_start(owner.get("pid", -1)) == owner.get("start") is not None


class Journal:
    """One record per VM in a :class:`store.JournalStore` (Salt's cache on a master; a
    directory of JSON files when given a path), and a real lock per VM.

    The lock is taken by ``plan`` and held by the process that runs the replacement (the
    ``salt-run`` of the orchestration) until the run ends (done or rolled back) or the
    process dies; any step run from another process takes it too, so two processes never
    act on one VM at once.  A killed run's lock goes with its process: a re-run resumes.
    """

    _held = {}  # (store, vm) -> held lock, for this process

    def __init__(self, store):
        self.store = (
            store if isinstance(store, JournalStore) else JournalStore(store, "replacement")
        )

    def _id(self):
        return self.store.lockdir

    def load(self, name):
        return self.store.load(config.check_minion_id(name))

    def save(self, record):
        self.store.save(config.check_minion_id(record["vm"]), record)

    def lock(self, name):
        """Hold the VM's lock in this process (refused when another process holds it)."""
        key = (self._id(), config.check_minion_id(name))
        if key not in self._held:
            self._held[key] = self.store.lock(name)
        return self._held[key]

    def unlock(self, name):
        held = self._held.pop((self._id(), name), None)
        if held is not None:
            held.release()


# flip targets read ahead, by (vm, new server id): one process runs an orchestration's steps
_EARLY_TARGETS = {}
_BACKGROUND = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="vmops-ahead")


def concurrently(*calls):
    """Call each of ``calls`` (independent reads) in a thread of its own; their results in
    order.  Every call ends before this returns; the first failure, in the calls' order,
    is raised (as if they had run one after another)."""
    if len(calls) < 2:
        return [call() for call in calls]
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(call) for call in calls]
    return [future.result() for future in futures]


class Replacement(CutoverMixin):
    """The steps of one VM's replacement.  ``minion`` offers ``wait(id, timeout)``,
    ``grain(id, grain)``, ``run_state(...)``, ``answers(id, timeout)`` and
    ``call(id, fun, arg, kwarg, timeout)``; ``keys`` is a MasterKeys."""

    STATES = STATES

    def __init__(
        self, conf, provider, keys, journal, minion, events=None, token=None, registry=None
    ):
        self.registry = registry
        self.conf = conf
        self.provider = provider
        self.keys = keys
        self.journal = journal
        self.minion = minion
        self.events = events or (lambda tag, message, **data: None)
        self.token = token

    # ------------------------------------------------------------------ journal helpers

    def _load(self, name, need_owner=True, forward=True):
        record = self.journal.load(name)
        if record is None or record["state"] in TERMINAL:
            raise InvalidInput(
                "no replacement of %s is in progress: run the plan step first" % name
            )
        self.journal.lock(name)  # no other process acts on this VM while this step runs
        if need_owner and self.token and record["owner"].get("token") != self.token:
            raise InvalidInput(
                "the replacement of %s belongs to another run (pid %s); nothing was changed"
                % (name, record["owner"].get("pid"))
            )
        if forward and record.get("rolling_back"):
            # a rollback was interrupted (killed run, master restart) after it may have
            # removed the new server: the run never goes forward again, it rolls back
            raise VmopsError(
                "a rollback of this replacement of %s started at %s (after %s failed) and was "
                "interrupted: it is finished now instead of going forward"
                % (
                    name,
                    time.strftime("%H:%M:%S", time.localtime(record["rolling_back"]["since"])),
                    (record.get("failed") or {}).get("step", "a step"),
                )
            )
        return record

    def _step(self, record, step, started, comment, state=None):
        took = round(time.monotonic() - started, 2)
        if state:
            record["state"] = state
        record["steps"].append(
            {"step": step, "result": True, "duration": took, "comment": comment, "at": time.time()}
        )
        self.journal.save(record)
        if record["state"] in TERMINAL:
            self.journal.unlock(record["vm"])
        return self._report(record, step, comment, duration=took)

    def _skip(self, record, step, why):
        return self._report(record, step, why, skipped=True)

    def _report(self, record, step, comment, **extra):
        """The step's event on the bus, and its return."""
        self.events(
            tags.replace(record["vm"], step),
            "%s: %s" % (step, comment),
            step=step,
            state=record["state"],
            **extra,
        )
        return dict(
            extra,
            result=True,
            vm=record["vm"],
            step=step,
            state=record["state"],
            comment=comment,
        )

    def fail(self, name, step, exc):
        """Record a failed step in the journal (the rollback names it)."""
        record = self.journal.load(name)
        if (
            record is not None
            and record["state"] not in TERMINAL
            and (not self.token or record["owner"].get("token") == self.token)
        ):
            record["steps"].append(
                {"step": step, "result": False, "comment": str(exc), "at": time.time()}
            )
            if not record.get("rolling_back"):  # the first failure is what is rolled back
                record["failed"] = {"step": step, "reason": str(exc)}
            self.journal.save(record)
        self.events(
            tags.replace(name, step), "%s failed: %s" % (step, exc), step=step, result=False
        )

    # ------------------------------------------------------------------ 1. plan

    def plan(self, name, overrides=None, options=None, test=False):
        config.check_minion_id(name)
        started = time.monotonic()
        overrides = dict(overrides or {})
        options = dict(options or {})
        keep_old = options.get("keep_old", "delete")
        if keep_old not in KEEP_OLD:
            raise InvalidInput(
                "keep_old must be one of %s, not %r" % (", ".join(KEEP_OLD), keep_old)
            )
        # every option checked before the lock, the journal or the cloud
        keep_failed = config.strict_bool(options.get("keep_failed", False), "keep_failed")
        fip_network = config.optional_name(options.get("fip_network"), "fip_network")
        naming = (
            options.get("naming")
            or self.provider.profile.get("naming")
            or getattr(self.provider, "DEFAULT_NAMING", "same")
        )
        if naming not in NAMING:
            raise InvalidInput("naming must be one of %s, not %r" % (", ".join(NAMING), naming))
        data_volumes = check_data_volumes(options.get("data_volumes"))
        keep_days = config.strict_int(options.get("keep_days", 2), "keep_days", minimum=0)
        window_opts = {
            key: config.optional_name(options.get(key), key)
            for key in ("pre_detach", "cutover_state")
        }
        root = {}
        if options.get("root_size") not in (None, ""):
            root["size"] = config.strict_int(options["root_size"], "root_size")
        if options.get("encrypted") not in (None, ""):
            root["encrypted"] = config.strict_bool(options["encrypted"], "encrypted")
        if not test:
            # the real lock first: from here no other process can plan or step this VM
            self.journal.lock(name)
        record = self.journal.load(name)
        if record is not None and record["state"] not in TERMINAL:
            if owner_alive(record["owner"]) and record["owner"].get("token") != self.token:
                raise InvalidInput(
                    "a replacement of %s is already running (pid %s, state %s, since %s); "
                    "nothing was changed"
                    % (
                        name,
                        record["owner"]["pid"],
                        record["state"],
                        time.strftime("%H:%M:%S", time.localtime(record["owner"]["since"])),
                    )
                )
            if test:
                return dict(
                    self.summary(record),
                    resumable=True,
                    comment="an interrupted replacement of %s would be resumed at state %s"
                    % (name, record["state"]),
                )
            record["owner"] = current_owner(self.token)
            record.setdefault("resumed", []).append(time.time())
            return self._step(
                record,
                "plan",
                started,
                (
                    "resuming the interrupted rollback (the run does not go forward)"
                    if record.get("rolling_back")
                    else "resuming the interrupted replacement at state %s" % record["state"]
                ),
            )
        cleaned = self._leftover(record, test)
        # (test=True: the leftover is still there, and is not the old server)
        old = self._the_old_server(name, ignore=(record or {}).get("leftover") if test else None)
        # the cloud reads that do not depend on each other, at once (one plan is ~15
        # requests: read one after another they were half its time)
        spec, extras, (volumes, moves), _ = concurrently(
            lambda: self._new_spec(name, old, overrides),
            lambda: dict(self.provider.extras(old["id"]) or {}),
            lambda: self._plan_volumes(old, data_volumes),
            lambda: self._plan_naming(name, naming, False),
        )
        if root:
            if "root_volume" not in extras:
                raise InvalidInput(
                    "root_size/encrypted: the root disk of %s on cloud %s is not a volume the "
                    "pack can size or encrypt; nothing was changed" % (name, self.provider.name)
                )
            extras["root_volume"] = dict(extras["root_volume"], **root)
            if root.get("size", extras["root_volume"]["size"]) < extras["root_volume"]["size"]:
                raise InvalidInput("root_size cannot shrink the root disk; nothing was changed")
        if extras:
            spec["extras"] = extras
        if moves:
            self._plan_naming(name, "same", True)  # the old minion's id in the window is free
        # resolved once, here, and frozen in the journal: a pillar change between steps
        # does not change the new VM after its plan was shown
        resolved = config.vm(self.conf, name, overrides, self.provider.profile)
        grain = config.sanity_grain(self.conf)
        level = resolved.get("level")
        if level is None:  # nothing configured: the new VM carries on the old one's value
            level = self._old_grain(name, grain)
        settings = {
            "grains": dict(resolved.get("grains") or {}),
            "minion_config": resolved.get("minion_config"),
            "cloud_config": resolved.get("cloud_config"),
            "sanity_grain": grain,
        }
        if level is not None:
            settings["grains"][grain] = level
        steps = list(STEPS) if moves else [s for s in STEPS if s != "cutover"]
        plan = {
            "vm": name,
            "cloud": self.provider.name,
            "old": old,
            "spec": spec,
            "floating_ips": old["floating_ips"],
            "keep_old": keep_old,
            "keep_failed": keep_failed,
            "fip_network": fip_network,
            "naming": naming,
            "data_volumes": volumes,
            "moves": moves,
            "window_opts": window_opts,
            "keep_days": keep_days,
            "level": level,
            "settings": settings,
            "overrides": overrides,
            "steps": steps,
        }
        described = self._describe_plan(plan)
        if cleaned:
            described = "%s; %s" % (cleaned, described)
        if test:
            plan["comment"] = described
            return plan
        record = dict(
            plan,
            state="planned",
            owner=current_owner(self.token),
            new={},
            old_pub=self.keys.accepted_pub(name),
            started=time.time(),
            steps=[],
        )
        return dict(self._step(record, "plan", started, described), plan=plan)

    def _old_grain(self, name, grain):
        try:
            return self.minion.grain(name, grain) or None
        except VmopsError:
            return None

    def _the_old_server(self, name, ignore=None):
        found = [s for s in self.provider.servers_named(name) if s["id"] != ignore]
        if not found:
            raise InvalidInput(
                "no server named %s on cloud %s: nothing to replace" % (name, self.provider.name)
            )
        if len(found) > 1:
            raise InvalidInput(
                "%d servers are named %s on cloud %s (%s): resolve that before replacing it"
                % (len(found), name, self.provider.name, ", ".join(s["id"] for s in found))
            )
        return found[0]

    def _new_spec(self, name, old, overrides):
        settings = config.vm(self.conf, name, None, self.provider.profile)
        spec = {k: old.get(k) for k in SPEC_FROM_OLD}
        spec["networks"] = list(old.get("networks") or {}) or settings.get("networks")
        for key in SPEC_FROM_OLD:  # configured per-VM settings, then the run's overrides
            configured = ((self.conf.get("vms") or {}).get(name) or {}).get(key)
            if configured not in (None, "", [], {}):
                spec[key] = configured
            if overrides.get(key) not in (None, "", [], {}):
                spec[key] = overrides[key]
        spec["name"] = name
        self.provider.resolve_spec(spec)  # refuses what the cloud does not have
        return spec

    @staticmethod
    def _describe_plan(plan):
        spec = plan["spec"]
        text = Replacement._describe_basic(plan)
        if plan.get("naming") == "suffix":
            text += (
                "; the new server is %s-new until the cut-over, then %s (the old one %s-old)"
                % (
                    plan["vm"],
                    plan["vm"],
                    plan["vm"],
                )
            )
        root = (spec.get("extras") or {}).get("root_volume")
        if root:
            text += "; root disk %s GiB%s" % (
                root["size"],
                " encrypted" if root.get("encrypted") else "",
            )
        if plan.get("moves"):
            text += (
                "; the old minion becomes %s-old; the new one is provisioned with "
                "vmops:cutover=pending; OUTAGE WINDOW: stop the old server's services (%s), "
                "detach and attach %s, the new server's cut-over (%s), move the IPs, health gate"
                % (
                    plan["vm"],
                    (plan.get("window_opts") or {}).get("pre_detach")
                    or "highstate with vmops:cutover=leaving",
                    ", ".join(
                        "%s (%s, %s GiB)"
                        % (v.get("name") or v["volume_id"], v["device"], v["size"])
                        for v in plan["moves"]
                    ),
                    (plan.get("window_opts") or {}).get("cutover_state")
                    or "highstate with vmops:cutover=done",
                )
            )
        stays = [v for v in plan.get("data_volumes") or [] if v["action"].startswith("stays")]
        if stays:
            text += "; staying with the old server: %s" % ", ".join(
                v.get("name") or v["volume_id"] for v in stays
            )
        return text

    @staticmethod
    def _describe_basic(plan):
        old, spec = plan["old"], plan["spec"]
        return (
            "replace %s (%s, %s on %s) with a new %s from image %s; then wait for its minion, "
            "check %s=%s, highstate, deploy, move %s, and %s the old server"
            % (
                plan["vm"],
                old["id"],
                old["flavor"],
                old.get("host") or plan["cloud"],
                spec["flavor"],
                spec["image"],
                (plan.get("settings") or {}).get("sanity_grain", "level"),
                plan.get("level") or "(not checked)",
                ", ".join(plan["floating_ips"]) or "no floating IP",
                plan["keep_old"],
            )
        )

    # ------------------------------------------------------------------ 2. boot

    def boot(self, name, timeout=600):
        record = self._load(name)
        started = time.monotonic()
        if STATES.index(record["state"]) >= STATES.index("booted"):
            return self._skip(record, "boot", "already booted: %s" % record["new"]["id"])
        if record["state"] == "booting":
            adopted = self._adopt(record)
            if adopted:
                desc = self.provider.wait_for_status(adopted, "ACTIVE", timeout)
                record["new"] = {"id": desc["id"], "host": desc.get("host")}
                return self._step(
                    record,
                    "boot",
                    started,
                    "adopted the new server %s booted before the interruption" % desc["id"],
                    state="booted",
                )
        record["state"] = "booting"
        if self.registry is not None:
            # the new server carries the registration's nonce: the pack knows it as its own,
            # and the reactor leaves the id alone (the pack hands its key over itself)
            entry = self.registry.expect(
                name,
                self.provider.name,
                "replace_vm",
                config.reactor(self.conf)["expect_ttl"],
                provision=False,
                state="preseeded",
            )
            record["nonce"] = entry["nonce"]
        else:
            record["nonce"] = new_nonce()
        self.journal.save(record)
        # No key changes hands here: the old minion keeps its id (and serves) until the new
        # VM has shown its own key on its console (see wait/_handover).
        settings = record["settings"]  # frozen at plan
        grains = dict(settings.get("grains") or {})
        spec = dict(record["spec"])
        spec["name"] = self._boot_name(record)
        spec["metadata"] = dict(spec.get("metadata") or {}, **{NONCE_KEY: record["nonce"]})
        spec["user_data"] = userdata.render(
            name,
            self.conf.get("master"),
            grains=grains,
            minion_config=settings.get("minion_config"),
            tag=record["nonce"],
            cloud_config=settings.get("cloud_config"),
        )
        desc = self.provider.boot(spec, wait=False)
        record["new"] = {"id": desc["id"]}
        self.journal.save(record)
        desc = self.provider.wait_for_status(desc["id"], "ACTIVE", timeout)
        record["new"]["host"] = desc.get("host")
        return self._step(
            record,
            "boot",
            started,
            "new %s (%s) is ACTIVE on %s" % (name, desc["id"], desc.get("host")),
            state="booted",
        )

    def _adopt(self, record):
        """A server of this name, not the old one, created after the run started."""
        if record["new"].get("id") and self.provider.exists(record["new"]["id"]):
            return record["new"]["id"]
        others = [
            s
            for s in self.provider.servers_named(self._boot_name(record))
            if s["id"] != record["old"]["id"]
        ]
        if record.get("nonce"):  # only the server this run booted carries its nonce
            others = [
                s for s in others if (s.get("metadata") or {}).get(NONCE_KEY) == record["nonce"]
            ]
        if len(others) > 1:
            raise InvalidInput(
                "%d new servers named %s exist (%s): delete the extra ones"
                % (len(others), record["vm"], ", ".join(s["id"] for s in others))
            )
        return others[0]["id"] if others else None

    # ------------------------------------------------------------------ 3-5. checks

    def wait(self, name, timeout=300):
        record = self._load(name)
        started = time.monotonic()
        if STATES.index(record["state"]) < STATES.index("booted"):
            raise InvalidInput("the new %s is not booted yet (state %s)" % (name, record["state"]))
        if record["floating_ips"] and record["new"].get("id"):
            # where each IP goes is decided at ``checked``; it reads the cloud only, so it is
            # read now, while the new minion starts (``checked`` reads again if this failed)
            key = (name, record["new"]["id"])
            _EARLY_TARGETS[key] = _BACKGROUND.submit(self._flip_targets, dict(record))
        handed = self._handover(record, timeout)
        if record.get("old_minion", {}).get("comment"):
            handed = "%s; %s" % (record["old_minion"]["comment"], handed)
        self.minion.wait(name, max(timeout - (time.monotonic() - started), 1))
        comment = "%s; the new minion %s answers" % (handed, name)
        # A run interrupted after this point may have left its highstate or deploy running
        # on the new minion; a second one would be refused ("The function state.highstate
        # is running as PID ..."), or a deploy would run twice at once: wait for them first.
        idle = getattr(self.minion, "idle", None)
        if idle is not None:
            waited = idle(name, max(timeout - (time.monotonic() - started), 1))
            if waited:
                comment += "; waited for %s left running by an interrupted run" % ", ".join(waited)
        state = (
            record["state"]
            if STATES.index(record["state"]) > STATES.index("answering")
            else "answering"
        )
        return self._step(record, "wait", started, comment, state=state)

    def _handover(self, record, timeout):
        """The identity hand-over: the new VM's own key (from its console) becomes the id's.

        Idempotent (a resumed run finds it done).  Until it, the old minion keeps the id;
        after it (the master's AES key rotated), no job to the id reaches the old VM.
        """
        name = record["vm"]
        if record.get("moves") and not record.get("handed_over"):
            # the old server's part comes later (its services stop in the outage window):
            # its minion moves to <vm>-old before the new server takes <vm>
            self._move_old_minion(record, timeout)
        if (
            record.get("new_pub")
            and record.get("handed_over")
            and (self.keys.accepted_pub(name) or "").strip() == record["new_pub"].strip()
            and not self.keys.rotation_pending()
        ):
            return "the key of %s is already the new VM's (%s)" % (name, record["new_fingerprint"])
        if not record.get("nonce"):
            raise InvalidInput(
                "the replacement of %s has no nonce: its new VM's key cannot be "
                "told from another's" % name
            )
        if not record.get("new_pub"):
            found = trust.wait_for_key(
                self.provider, record["new"]["id"], record["nonce"], timeout, nonce=record["nonce"]
            )
            record["new_pub"] = found["pub"]  # a public key: the journal may hold it
            record["new_fingerprint"] = identity.fingerprint(found["pub"])
            self.journal.save(record)
        # a run killed inside the hand-over resumes with a forced rotation: it may have
        # written the new key and died before asking for the rotation
        resumed = bool(record.get("handover_started"))
        record["handover_started"] = time.time()
        self.journal.save(record)
        comment = trust.handover(
            self.keys,
            name,
            record["new_pub"],
            events=self.events,
            what="replace %s" % name,
            force_rotation=resumed,
        )
        record["handed_over"] = time.time()
        self.journal.save(record)
        self.events(tags.replace(name, "key"), comment, fingerprint=record["new_fingerprint"])
        return comment

    def sanity(self, name):
        record = self._load(name)
        started = time.monotonic()
        expected = record.get("level")
        grain = record["settings"]["sanity_grain"]
        if not expected:
            return self._skip(record, "sanity", "no %s configured for %s" % (grain, name))
        value = self.minion.grain(name, grain)
        if value != expected:
            raise VmopsError(
                "sanity check failed: grain %s of the new %s is %r, expected %r"
                % (grain, name, value, expected)
            )
        state = record["state"] if STATES.index(record["state"]) > STATES.index("sane") else "sane"
        return self._step(record, "sanity", started, "%s is %s" % (grain, value), state=state)

    def highstate(self, name, timeout=3600):
        """The new VM's highstate, waited for in the master's job cache (``minion.run_state``):
        a master restarted meanwhile or a killed run does not lose its result, and a
        resumed run waits for the job it started instead of publishing a second one."""
        record = self._load(name)
        started = time.monotonic()
        if STATES.index(record["state"]) < STATES.index("answering"):
            raise InvalidInput(
                "the new %s has not answered yet (state %s)" % (name, record["state"])
            )
        jobs = record.setdefault("jobs", {})
        if STATES.index(record["state"]) >= STATES.index("checked") or jobs.get("highstate_ok"):
            return self._skip(
                record, "highstate", "already passed (job %s)" % jobs.get("highstate")
            )

        def journal(jid):
            jobs["highstate"] = jid
            self.journal.save(record)

        extra = {"pillar": {"vmops": {"cutover": "pending"}}} if record.get("moves") else {}
        jid, failures, count = self.minion.run_state(
            name, "state.highstate", timeout, jobs.get("highstate"), journal, **extra
        )
        if failures:
            raise VmopsError(
                "the highstate of the new %s failed (job %s): %s"
                % (name, jid, "; ".join(failures[:5]))
            )
        jobs["highstate"], jobs["highstate_ok"] = jid, True
        return self._step(
            record,
            "highstate",
            started,
            "highstate passed on the new %s (job %s, %d states)" % (name, jid, count),
        )

    def passed(self, name, step):
        """Record that a step the orchestration ran as Salt states (``deploy``) passed, with
        its duration (since the step before it ended), so the journal's report lists every
        step."""
        if step != "deploy":
            raise InvalidInput("only deploy is recorded this way, not %r" % step)
        record = self._load(name)
        if STATES.index(record["state"]) < STATES.index("answering"):
            raise InvalidInput(
                "the new %s has not answered yet (state %s)" % (name, record["state"])
            )
        ends = [s["at"] for s in record.get("steps", []) if s.get("result") and s.get("at")]
        took = round(time.time() - ends[-1], 2) if ends else None
        record["steps"].append(
            {
                "step": step,
                "result": True,
                "duration": took,
                "comment": "%s passed" % step,
                "at": time.time(),
            }
        )
        self.journal.save(record)
        return self._report(record, step, "%s passed on the new %s" % (step, name), duration=took)

    def checked(self, name):
        record = self._load(name)
        started = time.monotonic()
        if STATES.index(record["state"]) >= STATES.index("checked"):
            return self._skip(record, "checked", "already past its checks")
        if STATES.index(record["state"]) < STATES.index("answering"):
            raise InvalidInput(
                "the new %s has not answered yet (state %s)" % (name, record["state"])
            )
        # the last moment a rollback is still possible: where each floating IP will point
        # on the new VM is decided here, so a flip can never be stuck with nowhere to go
        record["flip_to"] = self._early_targets(record) or self._flip_targets(record)
        return self._step(
            record,
            "checked",
            started,
            "the new %s passed its checks: the run only goes forward now" % name,
            state="checked",
        )

    @staticmethod
    def _early_targets(record):
        """The flip targets the wait step read while the minion started (None: read now)."""
        future = _EARLY_TARGETS.pop((record["vm"], record["new"].get("id")), None)
        if future is None:
            return None
        try:
            return future.result(timeout=30)
        except Exception:  # pylint: disable=broad-except
            return None  # whatever failed there fails (or not) again, here, in the open

    def _flip_targets(self, record):
        """``{address: fixed IP on the new VM}`` for every floating IP of the plan: the new
        VM's address on the network the IP's old port is on (or on ``fip_network``), checked
        with a dry-run of the flip.  A multi-homed new VM the choice cannot be made for
        fails the checks (the run rolls back; nothing was cut over)."""
        name, new_id = record["vm"], record["new"]["id"]
        new_nets = self.provider.describe(new_id).get("networks") or {}
        old_nets = record["old"].get("networks") or {}
        pinned = record.get("fip_network")
        if pinned and pinned not in new_nets:
            raise VmopsError(
                "fip_network %s: the new %s has no address on it (it has %s)"
                % (pinned, name, ", ".join(sorted(new_nets)) or "none")
            )
        targets = {}
        for addr in record["floating_ips"]:
            net = pinned
            if not net:
                now = self.provider.floating_ip_show(addr).get("fixed_ip")
                net = next((n for n, ips in old_nets.items() if now in ips), None)
            on_net = [ip for ip in new_nets.get(net) or [] if ":" not in ip]
            fixed = on_net[0] if len(on_net) == 1 else None
            try:
                probe = self.provider.flip_floating_ip(addr, new_id, fixed, test=True)
            except InvalidInput as exc:
                raise VmopsError(
                    "floating IP %s cannot be pointed at the new %s (%s): set fip_network to "
                    "the network whose port should carry it" % (addr, name, exc)
                ) from exc
            targets[addr] = probe["new"].get("fixed_ip")
        return targets

    def smoke(self, name, network=None):
        """A temporary floating IP on the new VM (a reachable address to test), then released."""
        record = self._load(name)
        started = time.monotonic()
        tmp = self.provider.floating_ip_allocate(network)
        try:
            moved = self.provider.flip_floating_ip(tmp["address"], record["new"]["id"])
        finally:
            self.provider.floating_ip_release(tmp["address"], force=True)
        return self._step(
            record,
            "smoke",
            started,
            "temporary %s reached the new VM (%s), released"
            % (tmp["address"], moved["new"]["fixed_ip"]),
        )

    # ------------------------------------------------------------------ 7-8. cut-over

    def flip(self, name):
        record = self._load(name)
        started = time.monotonic()
        if STATES.index(record["state"]) < STATES.index("checked"):
            raise InvalidInput(
                "the new %s has not passed its checks: the floating IPs stay "
                "(state %s)" % (name, record["state"])
            )
        if STATES.index(record["state"]) >= STATES.index("flipped"):
            return self._skip(record, "flip", "already flipped")
        moved, left = self._flip_ips(record)
        record["floating_ips"] = moved
        comment = "%s now point at the new %s" % (", ".join(moved) or "no floating IP", name)
        if left:
            comment += "; not taken: %s" % ", ".join(left)
        return self._step(record, "flip", started, comment, state="flipped")

    def _flip_ips(self, record):
        """Every floating IP the old server holds now (an address added since the plan moves
        too) and every one the plan captured (unless someone moved it to a third server
        meanwhile: left there) to the new server: ``(moved, left)``."""
        old_id, new_id = record["old"]["id"], record["new"]["id"]
        try:
            now = self.provider.describe(old_id)["floating_ips"]
        except VmopsError:
            now = []
        moved, left = [], []
        for addr in list(dict.fromkeys(list(record["floating_ips"]) + list(now))):
            fixed = (record.get("flip_to") or {}).get(addr)
            # one call: it is read, and moved only when it is still the old (or new) VM's
            done = self.provider.flip_floating_ip(addr, new_id, fixed, only_from=(old_id,))
            if done.get("left"):
                where = done["old"]["server_id"]
                left.append("%s (moved to %s by someone else; left there)" % (addr, where))
                continue
            moved.append(done["address"])
        return moved, left

    def retire(self, name):
        record = self._load(name)
        started = time.monotonic()
        if record["state"] != "flipped":
            raise InvalidInput(
                "the old %s is retired only after the flip (state %s)" % (name, record["state"])
            )
        old_id, how = record["old"]["id"], record["keep_old"]
        self._new_serves(record)
        renamed = self._final_names(record)
        if how == "delete":
            self.provider.delete_id(old_id)  # lifts termination protection first (EC2)
            comment = "deleted the old server %s (it is gone)" % old_id
        elif not self.provider.exists(old_id):
            comment = "the old server %s is already gone" % old_id
        elif how == "stop":
            self.provider.stop(old_id)
            self.provider.rename(old_id, "%s-old" % name)
            record["keep_until"] = time.time() + 86400 * record.get("keep_days", 2)
            comment = "stopped the old server %s, renamed %s-old, kept until %s" % (
                old_id,
                name,
                time.strftime("%Y-%m-%d %H:%M", time.localtime(record["keep_until"])),
            )
        else:
            self.provider.rename(old_id, "%s-old" % name)
            comment = "renamed the old server %s to %s-old" % (old_id, name)
        moved = (record.get("old_minion") or {}).get("id")
        if moved and how == "delete":
            self.keys.delete(moved, rotate=False)  # its server is gone
            comment += "; the key of %s is deleted" % moved
        if renamed:
            comment = "%s; %s" % (renamed, comment)
        if (record.get("window") or {}).get("length") is not None:
            comment += "; the outage window lasted %.1f s" % record["window"]["length"]
        result = self._step(record, "retire", started, comment, state="done")
        result["summary"] = self.summary(record)
        return result

    def _new_serves(self, record):
        """The old server goes only when the new one exists, is ACTIVE and holds the IPs."""
        name = record["vm"]
        try:
            new = self.provider.describe(record["new"]["id"])
        except VmopsError as exc:
            raise InvalidInput(
                "the new %s (%s) cannot be seen (%s): the old server is kept; "
                "nothing was changed" % (name, record["new"]["id"], exc)
            ) from exc
        missing = sorted(set(record["floating_ips"]) - set(new["floating_ips"]))
        if new["status"] != "ACTIVE" or missing:
            raise InvalidInput(
                "the new %s (%s) is %s%s: the old server %s is kept until it serves; nothing "
                "was changed"
                % (
                    name,
                    new["id"],
                    new["status"],
                    " and does not hold %s" % ", ".join(missing) if missing else "",
                    record["old"]["id"],
                )
            )

    # ------------------------------------------------------------------ rollback

    def rollback(self, name, timeout=300):
        """Undo a replacement that failed before its checks passed."""
        record = self._load(name, forward=False)
        started = time.monotonic()
        if STATES.index(record["state"]) >= STATES.index("checked"):
            raise InvalidInput(
                "the new %s passed its checks (state %s): finish the run instead "
                "of rolling back" % (name, record["state"])
            )
        failed = record.get("failed") or {
            "step": "unknown",
            "reason": "a step after %s failed" % record["state"],
        }
        # journaled before anything is undone: a rollback cut short (killed, the master
        # restarted) is finished by the next run, which never goes forward from here
        if not record.get("rolling_back"):
            record["rolling_back"] = {"since": time.time()}
            self.journal.save(record)
        # inside the outage window: IPs, volumes and services back on the old server first
        notes = self._undo_window(record, timeout)
        # the identity next: whatever else goes wrong below, the old minion gets its id back
        try:
            notes.append(
                trust.restore(
                    self.keys,
                    name,
                    record.get("old_pub"),
                    force_rotation=bool(record.get("handover_started")),
                )
            )
        except VmopsError as exc:
            notes.append("the old key could NOT be restored: %s" % exc)
            self.events(
                tags.replace(name, "rollback"),
                "rollback: the old key of %s could not be restored: %s" % (name, exc),
                result=False,
            )
        try:
            returned = self._return_old_minion(record, timeout)
            if returned:
                notes.append(returned)
        except VmopsError as exc:
            notes.append("the old minion could NOT be moved back: %s" % exc)
        what = "never booted"
        try:
            new_id = (
                self._adopt(record) if record["state"] == "booting" else record["new"].get("id")
            )
        except VmopsError as exc:
            new_id, what = None, "not looked for (%s)" % exc
        if new_id:
            what = self._remove_new(record, new_id)
        if self.registry is not None and record.get("nonce"):
            try:
                entry = self.registry.get(name)
                if entry and entry.get("nonce") == record["nonce"]:
                    self.registry.forget(name)
            except OSError as exc:
                notes.append("its registration stays: %s" % exc)
        answered = True
        if record.get("old_pub"):
            try:
                self.minion.wait(name, timeout)
            except VmopsError:
                answered = False
        record["rolled_back_from"] = failed
        result = self._step(
            record,
            "rollback",
            started,
            "rolled back after %s failed (%s): %s; new VM %s; the old %s (%s) keeps serving with "
            "its floating IPs%s"
            % (
                failed["step"],
                failed["reason"],
                "; ".join(notes),
                what,
                name,
                record["old"]["id"],
                "" if answered else "; its minion has NOT answered yet",
            ),
            state="rolled_back",
        )
        result["summary"] = self.summary(record)
        return result

    retry_pause = 1.0  # seconds before a removal the cloud refused with a 5xx is asked again

    def _remove_new(self, record, new_id, tries=3):
        """Delete the failed new VM (or keep it stopped as ``<vm>-failed``); never raises.

        A cloud that answers 5xx or drops the connection is asked again (a delete is safe
        to repeat: whether the server is still there is read first).  What still could not
        be removed is recorded as the run's ``leftover``: the next plan of this VM removes
        it before anything else (or refuses)."""
        name = record["vm"]
        for attempt in range(tries):
            try:
                done = self._remove_once(name, new_id, record.get("keep_failed"))
                record.pop("leftover", None)
                return done
            except VmopsError as exc:
                if getattr(exc, "transient", False) and attempt + 1 < tries:
                    time.sleep(self.retry_pause * 2**attempt)
                    continue
                record["leftover"] = new_id
                self.events(
                    tags.replace(name, "rollback"),
                    "rollback: the new server %s could not be removed: %s" % (new_id, exc),
                    result=False,
                )
                return (
                    "%s NOT removed (%s): the next run for %s removes it first, or delete it "
                    "by hand" % (new_id, exc, name)
                )
        raise AssertionError("unreachable")

    def _remove_once(self, name, new_id, keep_failed):
        if not self.provider.exists(new_id):
            return "%s already gone" % new_id
        if keep_failed:
            kept = "%s-failed" % name
            try:  # a server in ERROR may refuse to stop: it is renamed all the same
                self.provider.stop(new_id)
            except VmopsError as exc:
                log.warning("vmops: could not stop the failed new %s (%s): %s", name, new_id, exc)
            self.provider.rename(new_id, kept)
            return "%s kept as %s" % (new_id, kept)
        self.provider.delete(new_id)
        return "%s deleted" % new_id

    def _leftover(self, record, test):
        """Before a new plan: the server a rolled-back run could not remove goes first."""
        new_id = (record or {}).get("leftover")
        if not new_id:
            return None
        if test:
            return "first removes the server %s a rolled-back run left" % new_id
        what = self._remove_new(record, new_id)
        if record.get("leftover"):
            self.journal.save(record)
            raise InvalidInput(
                "the new server %s a rolled-back replacement of %s left cannot be removed "
                "yet: %s; nothing else was changed" % (new_id, record["vm"], what)
            )
        return "removed what a rolled-back run left: %s" % what

    # ------------------------------------------------------------------ abandon

    def abandon(self, name):
        """Give up an unfinished replacement: nothing in the cloud or among the keys is
        touched, both servers stay, the journal ends (``abandoned``) and its lock goes.  The
        report says where everything is, so the operator can finish by hand."""
        record = self._load(name, need_owner=False, forward=False)
        started = time.monotonic()
        if owner_alive(record["owner"]) and record["owner"].get("pid") != os.getpid():
            raise InvalidInput(
                "the replacement of %s is running (pid %s, state %s): stop that run first; "
                "nothing was changed" % (name, record["owner"].get("pid"), record["state"])
            )
        where = []
        for which in ("old", "new"):
            sid = (record.get(which) or {}).get("id")
            if not sid:
                where.append("no %s server" % which)
                continue
            try:
                desc = self.provider.describe(sid)
                where.append(
                    "%s server %s %s, floating IPs %s"
                    % (which, sid, desc["status"], ", ".join(desc["floating_ips"]) or "none")
                )
            except VmopsError as exc:
                where.append("%s server %s: %s" % (which, sid, exc))
        holder = (
            "still the old VM's"
            if self.keys.accepted_pub(name) == record.get("old_pub")
            else "no longer the old VM's (handed over to the new one)"
        )
        record["abandoned_at"] = record["state"]
        return self._step(
            record,
            "abandon",
            started,
            "abandoned at state %s, nothing changed: %s; the accepted key of %s is %s"
            % (record["state"], "; ".join(where), name, holder),
            state="abandoned",
        )

    # ------------------------------------------------------------------ report

    @staticmethod
    def summary(record):
        return {
            "vm": record["vm"],
            "state": record["state"],
            "old": record["old"]["id"],
            "new": (record.get("new") or {}).get("id"),
            "floating_ips": record["floating_ips"],
            "steps": [
                (s["step"], s["result"], s.get("duration"), s["comment"])
                for s in record.get("steps", [])
            ],
            "total": round(sum(s.get("duration") or 0 for s in record.get("steps", [])), 2),
            "window": {
                k: v
                for k, v in (record.get("window") or {}).items()
                if k in ("start", "end", "length", "parts", "ops", "undone")
            }
            or None,
        }
