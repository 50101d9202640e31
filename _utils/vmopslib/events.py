"""Every event the pack fires on the master bus: the catalogue, and one function per tag.

Tags are ``vmops/<kind>/<subject>/<what>``; code builds them only through the
functions here (``saltglue.Events`` adds the ``vmops/`` prefix), so a grep for a
function finds every place that fires it, and a typo in ``what`` fails at once
instead of firing a tag nobody listens to.  Every event's data has ``message``
(one line for people) besides the keys listed.  README "Events" is this table.
"""

# (tag pattern, when it fires, data keys besides ``message``)
CATALOGUE = (
    (
        "vmops/create/<vm>/booting",
        "vmops.create asks the cloud for a VM",
        "vm, flavor, image, expected",
    ),
    (
        "vmops/create/<vm>/active",
        "the new VM is ACTIVE (requested: wait=False)",
        "vm, server_id, duration",
    ),
    (
        "vmops/create/<vm>/requested",
        "the boot was asked for, not waited for",
        "vm, server_id, duration",
    ),
    ("vmops/delete/<vm>/done", "vmops.delete removed a server", "server_id"),
    (
        "vmops/expect/<minion>",
        "vmops.expect registered a VM booted by hand",
        "minion, cloud, expires",
    ),
    (
        "vmops/ip/<address>/flipped",
        "a floating / Elastic IP moved (unchanged: it was there)",
        "address, changed, old, new, comment",
    ),
    (
        "vmops/ip/<address>/unchanged",
        "the IP already pointed at the server",
        "address, changed, old, new, comment",
    ),
    ("vmops/minion/<minion>/answering", "vmops.wait_minion: the minion answers", "duration"),
    (
        "vmops/key/<minion>/accepted",
        "a key was accepted (reactor, operator, registration)",
        "minion, fingerprint, server_id, basis, reason, provision",
    ),
    (
        "vmops/key/<minion>/refused",
        "a key was not accepted, and why (<minion> is _invalid_ for ids that are not plain)",
        "minion, fingerprint, server_id, reason, action, transient",
    ),
    (
        "vmops/key/<minion>/handover",
        "replace/rebuild: the new VM's own key becomes the id's; the AES rotation follows",
        "minion, fingerprint",
    ),
    (
        "vmops/provision/<minion>/started",
        "the reactor starts provisioning (vmops.provision_minion, or the orchestration)",
        "minion, source",
    ),
    (
        "vmops/provision/<minion>/rearmed",
        "a start event came before the minion answered",
        "minion, state, rearmed",
    ),
    (
        "vmops/provision/<minion>/done",
        "provisioning ended",
        "minion, result, state, source, server_id, seconds_since_accept",
    ),
    ("vmops/rebuild/<vm>/active", "the rebuilt server is ACTIVE", "server_id"),
    ("vmops/rebuild/<vm>/answering", "the rebuilt VM's minion answers", "duration"),
    (
        "vmops/replace/<vm>/<step>",
        "a replacement step ended (plan, boot, wait, sanity, highstate, deploy, cutover, "
        "checked, smoke, flip, retire, rollback, abandon) or failed (result False)",
        "step, duration, state, skipped, result",
    ),
    ("vmops/replace/<vm>/key", "the identity hand-over of a replacement is done", "fingerprint"),
    (
        "vmops/replace/<vm>/window",
        "a replacement's outage window (data volumes moving) opened, made progress, closed",
        "phase, volume, length (seconds, when closed), parts",
    ),
    (
        "vmops/replace/<vm>/old_minion",
        "the old server's minion moved to <vm>-old (or back, or could not be reached)",
        "id, fingerprint, comment",
    ),
    (
        "vmops/evacuate/<node>/<what>",
        "an evacuation: plan, resume, disabled, enabled, refused, interrupted, done",
        "run, and per event: reason, problems, result, counts",
    ),
    (
        "vmops/evacuate/<node>/server/<server>/<what>",
        "one server of an evacuation: started, "
        "moving, confirming, verifying, moved, stopped, offloaded, elsewhere, gone, slow, stuck, "
        "aborted, force_completed, retry, failed, arrived",
        "run, server, method, attempt, migration",
    ),
    (
        "vmops/maintenance/<node>/<what>",
        "a rolling maintenance, per node: disabled, evacuated, maintained, rebooting, rebooted, "
        "gated, enabled, migrated_back, left_disabled, failed; <node> = run: plan, resume, "
        "refused, done",
        "run, node, batch, step, duration, and per event: boot_id, result, comment",
    ),
    (
        "vmops/rotate/<run>/<what>",
        "a rotation (orch.rotate): plan, resume, batch (a batch starts), vm (one VM's "
        "replacement ended: outcome done, rolled_back or failed), stopped, done; refused "
        "(<run> = new unless given)",
        "run, and per event: batches, batch, vms, vm, state, new, duration, outcome, result, "
        "problems",
    ),
    (
        "vmops/recover/<node>/<what>",
        "a dead host's recovery: refused, fenced, forced_down, evacuating, evacuated, failed "
        "(per server), done, enabled",
        "run, and per event: problems, how, server, dest, result, counts",
    ),
)

STEPS = (
    "plan",
    "boot",
    "wait",
    "sanity",
    "checked",
    "smoke",
    "flip",
    "retire",
    "rollback",
    "abandon",
    "key",
    "highstate",
    "deploy",
    "cutover",
    "window",
    "old_minion",
)
EVACUATION = ("plan", "resume", "disabled", "enabled", "refused", "interrupted", "done")
MAINTENANCE = (
    "plan",
    "resume",
    "refused",
    "disabled",
    "evacuated",
    "maintained",
    "rebooting",
    "rebooted",
    "gated",
    "enabled",
    "migrated_back",
    "left_disabled",
    "failed",
    "done",
)
RECOVERY = (
    "refused",
    "fenced",
    "forced_down",
    "evacuating",
    "evacuated",
    "failed",
    "done",
    "enabled",
)
ROTATE = ("refused", "plan", "resume", "batch", "vm", "stopped", "done")
EVACUATED_SERVER = (
    "started",
    "pending",
    "moving",
    "confirming",
    "verifying",
    "moved",
    "stopped",
    "offloaded",
    "elsewhere",
    "gone",
    "slow",
    "stuck",
    "aborted",
    "force_completed",
    "retry",
    "failed",
    "arrived",
    "live",
    "blocked",
)


def _tag(kind, subject, what, allowed):
    if what not in allowed:
        raise ValueError(
            "no %s event %r in the catalogue (events.py): %s" % (kind, what, ", ".join(allowed))
        )
    return "%s/%s/%s" % (kind, subject, what)


def create(vm, what):
    return _tag("create", vm, what, ("booting", "active", "requested"))


def delete(vm):
    return _tag("delete", vm, "done", ("done",))


def expect(minion):
    return "expect/%s" % minion


def ip(address, changed):
    return "ip/%s/%s" % (address, "flipped" if changed else "unchanged")


def minion(name, what="answering"):
    return _tag("minion", name, what, ("answering",))


def key(name, what):
    return _tag("key", name, what, ("accepted", "refused", "handover"))


def provision(name, what):
    return _tag("provision", name, what, ("started", "rearmed", "done"))


def rebuild(vm, what):
    return _tag("rebuild", vm, what, ("active", "answering"))


def replace(vm, step):
    return _tag("replace", vm, step, STEPS)


def evacuation(node, what):
    return _tag("evacuate", node, what, EVACUATION)


def maintenance(node, what):
    """``node`` is a compute host, or ``run`` for the run's own plan/resume/done."""
    return _tag("maintenance", node, what, MAINTENANCE)


def recovery(node, what):
    return _tag("recover", node, what, RECOVERY)


def rotate(run, what):
    return _tag("rotate", run, what, ROTATE)


def evacuated_server(node, server, what):
    if what not in EVACUATED_SERVER:
        raise ValueError("no evacuated-server event %r in the catalogue (events.py)" % what)
    return "evacuate/%s/server/%s/%s" % (node, server, what)
