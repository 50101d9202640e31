"""
Runner of saltext-vmops: cloud operations driven from the salt master.

Configuration: the ``vmops`` key of the master config (and of the master's own
pillar); see ``pillar.example/vmops.sls``.  Every function fires ``vmops/...``
events on the master bus and, when it fails, returns ``result: False`` with the
reason and sets the job's retcode, so orchestration stops there.

:depends: openstacksdk (OpenStack clouds), boto3 (EC2)
"""

import logging
import os
import sys
import time

try:
    import vmopslib  # noqa: F401  (only: is the core importable as it is?)
except ImportError:  # synced from the state tree: the core sits in <extension_modules>/utils
    _ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.extend(os.path.join(_ROOT, sub) for sub in ("utils", "_utils"))
    import vmopslib  # noqa: F401  pylint: disable=ungrouped-imports


from vmopslib import admission, config, evacuate, minions, replace, saltglue
from vmopslib import events as tags
from vmopslib.errors import InvalidInput, NotSupported
from vmopslib.registry import NONCE_KEY, is_live

log = logging.getLogger(__name__)

__virtualname__ = "vmops"


def __virtual__():
    return saltglue.loader_virtual(__virtualname__, "runner")


def _pillar():
    return globals().get("__pillar__") or {}


def _events():
    return saltglue.Events(__opts__, globals().get("__jid_event__"))


def _run(fn, *args, **kwargs):
    return saltglue.run_runner(__context__, fn, *args, **kwargs)


def _registry():
    return saltglue.registry(__opts__)


def _grain(minion_id, grain):
    return saltglue.minion_grain(__opts__, minion_id, grain)


def _wait_for_minion(minion_id, timeout):
    return saltglue.wait_minion(__opts__, minion_id, timeout)


def show(name, cloud=None):
    """
    Describe the server ``name`` (or id): status, host, flavor, image, key pair,
    security groups, networks and fixed IPs, floating IPs, metadata, and its
    volumes (``volume_details``: device, size, type, bootable/root, multi-attach).

    - ``cloud``: the ``vmops:clouds`` profile to act on (default: ``vmops:default_cloud``).

    CLI Example:

    .. code-block:: bash

        salt-run vmops.show app2
        salt-run vmops.show app2 cloud=aws
    """

    def _show():
        _, prov = saltglue.provider(__opts__, _pillar(), cloud)
        desc = prov.describe(name)
        try:
            desc["volume_details"] = prov.volumes(desc["id"])
        except NotSupported as exc:  # e.g. a cloud without a volume service
            desc["volume_details"] = str(exc)
        return desc

    return _run(_show)


def create(name, cloud=None, wait=True, provision=True, **overrides):
    """
    Boot a new VM ``name`` whose user-data installs a salt-minion pointed at this
    master (settings: ``vmops:defaults``, then ``vmops:vms:<name>``, then the
    keyword overrides, e.g. ``flavor=lightspeed``).  Refuses a name that is not a
    plain minion id or that a server already has.

    The VM is registered as expected first (its server carries the
    registration's nonce), so its key, which arrives pending, is accepted either
    by ``vmops.accept_minion`` or, when the admission reactor runs, by the
    reactor; with ``provision=True`` the reactor then also checks and
    highstates it (``orch.provision_minion``).

    - ``cloud``: the ``vmops:clouds`` profile to act on (default: ``vmops:default_cloud``).
    - ``wait``: wait until the cloud finished (default True); False returns once it was asked.

    CLI Example:

    .. code-block:: bash

        salt-run vmops.create app2 flavor=lightspeed
        salt-run vmops.create app3 provision=False
    """
    overrides = {k: v for k, v in overrides.items() if not k.startswith("__")}

    def _create():
        conf, prov = saltglue.provider(__opts__, _pillar(), cloud)
        return minions.create_vm(
            conf,
            prov,
            name,
            overrides,
            events=_events(),
            wait=wait,
            registry=_registry(),
            provision=_bool(provision),
        )

    return _run(_create)


def accept_minion(name, cloud=None, require_fingerprint=True, wait=0):
    """
    Accept the pending key of minion ``name`` only when the cloud vouches for it:
    exactly one server has that name, it is ACTIVE, and the minion-key
    fingerprint on its console matches the pending key.  Accepts that exact id,
    never a glob.  Fires ``vmops/key/<name>/accepted`` or ``.../refused``.
    ``wait``: seconds to wait for the key to arrive pending first.

    - ``require_fingerprint``: refuse unless the cloud's console shows the key's
      fingerprint (default True).

    - ``cloud``: the ``vmops:clouds`` profile to act on (default: ``vmops:default_cloud``).

    CLI Example:

    .. code-block:: bash

        salt-run vmops.accept_minion app2
        salt-run vmops.accept_minion app2 wait=120
    """

    def _accept():
        conf, prov = saltglue.provider(__opts__, _pillar(), cloud)
        return admission.accept(
            conf,
            prov,
            saltglue.MasterKeys(__opts__),
            _registry(),
            name,
            events=_events(),
            require_fingerprint=require_fingerprint,
            wait=int(wait),
        )

    return _run(_accept)


def wait_minion(name, timeout=120):
    """
    Wait until minion ``name`` answers ``test.ping`` (targeted by exact id).

    - ``timeout``: seconds to wait before giving up (the cloud call itself is not undone).

    CLI Example:

    .. code-block:: bash

        salt-run vmops.wait_minion app2 timeout=300
    """

    def _wait():
        started = time.monotonic()
        saltglue.wait_minion(__opts__, name, int(timeout))
        took = round(time.monotonic() - started, 2)
        _events()(tags.minion(name), "%s answers" % name, duration=took)
        return {"result": True, "minion": name, "waited": took}

    return _run(_wait)


def check_grain(name, expected, grain=None):
    """
    The runbook's sanity check: fail unless grain ``grain`` of minion ``name``
    equals ``expected`` (e.g. ``level`` is ``staging``).

    name
        the minion id (exact, never a glob)
    expected
        the value the grain must have
    grain
        the grain to read; default: ``vmops:sanity_grain`` (``level``)

    CLI Example:

    .. code-block:: bash

        salt-run vmops.check_grain app2 staging
        salt-run vmops.check_grain app2 staging grain=role
    """

    def _check():
        conf = saltglue.settings(__opts__, _pillar())
        use = grain or config.sanity_grain(conf)
        value = minions.check_grain(_grain, name, use, expected)
        return {"result": True, "minion": name, "grain": use, "value": value}

    return _run(_check)


def delete(name, cloud=None, wait=True):
    """
    Delete the server ``name`` (or id) and wait until it is gone.  The minion
    key stays: delete it with ``salt-key -d`` when the VM is not coming back.

    - ``cloud``: the ``vmops:clouds`` profile to act on (default: ``vmops:default_cloud``).

    - ``wait``: wait until the cloud finished (default True); False returns once it was asked.

    CLI Example:

    .. code-block:: bash

        salt-run vmops.delete app2-old
    """

    def _delete():
        _, prov = saltglue.provider(__opts__, _pillar(), cloud)
        desc = prov.delete(name, wait=wait)
        _events()(
            tags.delete(desc["name"]),
            "deleted %s (%s)" % (desc["name"], desc["id"]),
            server_id=desc["id"],
        )
        return desc

    return _run(_delete)


def flip_floating_ip(address, server, fixed_ip=None, cloud=None):
    """
    Move floating IP (or Elastic IP) ``address`` to ``server`` (name or id), in
    one re-association so the address is never unassigned in between, then
    verify it.  A no-op when it already points there.  ``fixed_ip`` picks one
    of the server's addresses (or a port id) when it has several.

    - ``cloud``: the ``vmops:clouds`` profile to act on (default: ``vmops:default_cloud``).

    CLI Example:

    .. code-block:: bash

        salt-run vmops.flip_floating_ip 203.0.113.7 app2
    """

    def _flip():
        _, prov = saltglue.provider(__opts__, _pillar(), cloud)
        ret = prov.flip_floating_ip(address, server, fixed_ip=fixed_ip)
        _events()(
            tags.ip(address, ret["changed"]),
            ret["comment"],
            **ret,
        )
        ret["result"] = True
        return ret

    return _run(_flip)


def rebuild_minion(name, image=None, cloud=None, timeout=300):
    """
    Rebuild VM ``name`` in place (same server, same IPs) from ``image`` (default:
    the configured image, else its current one) with a new minion identity: the
    rebuilt VM makes its own key (none is in its user-data) and prints it on its
    console with this run's nonce; that key becomes ``name``'s accepted key in
    place, and the master's AES key rotates before anything is sent to it.  A
    rebuild the cloud refuses leaves the minion and its key untouched.  Waits
    until the new minion answers; ``orch.rebuild_minion`` then highstates it.

    - ``timeout``: seconds to wait before giving up (the cloud call itself is not undone).

    - ``cloud``: the ``vmops:clouds`` profile to act on (default: ``vmops:default_cloud``).

    CLI Example:

    .. code-block:: bash

        salt-run vmops.rebuild_minion app2 image=Ubuntu-22.04
    """

    def _rebuild():
        conf, prov = saltglue.provider(__opts__, _pillar(), cloud)
        return minions.rebuild_minion(
            conf,
            prov,
            saltglue.MasterKeys(__opts__),
            name,
            _wait_for_minion,
            image=image,
            timeout=int(timeout),
            events=_events(),
            registry=_registry(),
        )

    return _run(_rebuild)


def _replacement(cloud, token):
    return saltglue.replacement(__opts__, _pillar(), cloud, token, _events())


def replace_vm(
    name,
    step="plan",
    cloud=None,
    token=None,
    test=False,
    keep_old="delete",
    keep_failed=False,
    timeout=300,
    network=None,
    fip_network=None,
    highstate_timeout=3600,
    naming=None,
    data_volumes=None,
    keep_days=2,
    pre_detach=None,
    cutover_state=None,
    root_size=None,
    encrypted=None,
    **overrides,
):
    """
    One step of replacing VM ``name`` with a new one of the same name, without
    downtime.  ``orch.replace_vm`` runs the steps in order (with highstate and
    deploy between ``sanity`` and ``checked``, and ``rollback`` on failure):

    - ``plan``: validate, capture the old server and its floating IPs, take the
      lock (or resume an interrupted run).  ``test=True`` only returns the plan.
      Overrides (``flavor=``, ``image=``...) change the new VM's spec;
      ``keep_old`` is ``delete`` (default), ``stop`` or ``rename`` (to
      ``<name>-old``); ``keep_failed=True`` keeps a failed new VM, stopped, as
      ``<name>-failed``.
    - ``boot``: boot the new VM (no key in its user-data: it makes its own and
      prints it on its console with the run's nonce); never boots twice.
    - ``wait``: the identity hand-over (the console's key becomes ``name``'s,
      in place; the master's AES key rotates, so the old minion runs no job
      meant for the new one), then the new minion answers.
    - ``sanity``: its ``level`` grain.
    - ``highstate``: the new VM's highstate (queued behind a state run still going),
      its return read from the master's job cache: a master restarted meanwhile
      or a killed run does not lose it; a resumed run waits for the same job.
    - ``cutover`` (only with data volumes to move): the outage window: the old
      server's services stop (through its minion, moved to ``<name>-old``), each
      data volume is detached and attached to the new server at the same device,
      the new server's cut-over state runs, the IPs move, the health gate closes it;
      a failure before the gate rolls back to the old server.
    - ``checked``: the new VM passed highstate and deploy.
    - ``smoke``: a temporary floating IP on the new VM, released after.
    - ``flip``: the old VM's floating IPs move to the new one.
    - ``retire``: the old VM is deleted, stopped or renamed.
    - ``rollback``: before ``checked`` only: the old key comes back first, then
      the new VM goes, and the old minion answers again.
    - ``abandon``: give up an unfinished run (not while it runs): nothing in the
      cloud or among the keys changes, both servers stay, the journal ends and
      says where each server, floating IP and the id's key are.
    - ``status``: the journal's summary.

    ``token`` ties the steps of one run together (the orchestration passes it).

    - ``cloud``: the ``vmops:clouds`` profile to act on (default: ``vmops:default_cloud``).
    - ``timeout``: seconds to wait before giving up (the cloud call itself is not undone).
    - ``network``: the external network the smoke test's temporary floating IP
      comes from (default: the only one).
    - ``highstate_timeout``: seconds the highstate may take (default 3600).
    - ``fip_network``: on a multi-homed new VM, the network whose port carries the
      floating IPs (default: the network they are on at the old VM); decided at
      ``checked``, so an impossible choice rolls back instead of stopping the flip.

    - ``naming``: ``same`` (the new server has the old one's name; the OpenStack
      default) or ``suffix`` (``<name>-new`` until the cut-over, then ``<name>-old``
      and ``<name>``; the EC2 default, as the Copr runbook does).
    - ``data_volumes``: ``none`` (default), ``move`` (every non-root volume), a list
      of volume names or ids, or ``{tag: {key: value}}``: the volumes moved in the
      outage window.  The new server's highstate then runs with pillar
      ``vmops:cutover: pending`` (services disabled); see the README.
    - ``pre_detach``: an SLS the old server runs to stop its services and unmount
      (default: its highstate with ``vmops:cutover: leaving``).
    - ``cutover_state``: an SLS the new server runs to mount and start its services
      (default: its highstate with ``vmops:cutover: done``).
    - ``keep_days``: with ``keep_old=stop``, how long the stopped old server is kept
      (reported; default 2).
    - ``root_size``, ``encrypted``: the new server's root disk (EC2: GiB, and
      encryption with the account's default KMS key); default: the old one's.
    - ``step``: the step to run (see above); ``status`` shows the journal.

    CLI Example:

    .. code-block:: bash

        salt-run vmops.replace_vm app2 step=plan test=True flavor=lightspeed
        salt-run vmops.replace_vm app2 step=status
    """
    overrides = {k: v for k, v in overrides.items() if not k.startswith("__")}

    def _step():
        return saltglue.replace_step(
            __opts__,
            _pillar(),
            _events(),
            name,
            step,
            cloud=cloud,
            token=token,
            test=test,
            options={
                "keep_old": keep_old,
                "keep_failed": keep_failed,
                "fip_network": fip_network,
                "naming": naming,
                "data_volumes": data_volumes,
                "keep_days": keep_days,
                "pre_detach": pre_detach,
                "cutover_state": cutover_state,
                "root_size": root_size,
                "encrypted": encrypted,
            },
            overrides=overrides,
            timeout=timeout,
            network=network,
            highstate_timeout=highstate_timeout,
        )

    return _run(_step)


ROTATE_PASSED = (
    "flavor",
    "image",
    "key_name",
    "security_groups",
    "networks",
    "metadata",
    "keep_old",
    "keep_failed",
    "deploy",
    "smoke",
    "timeout",
    "fip_network",
    "naming",
    "data_volumes",
    "pre_detach",
    "cutover_state",
    "keep_days",
    "root_size",
    "encrypted",
)


def rotate(
    target=None,
    tgt_type="glob",
    vms=None,
    batch=1,
    max_failures=0,
    cloud=None,
    run=None,
    test=False,
    **options,
):
    """
    Replace every VM of a role with a new one, batch by batch: each VM by the whole
    ``orch.replace_vm`` (plan, hand-over, highstate, deploy, health gate, flip,
    retire), ``batch`` at once, the next batch only after every replacement of the
    batch is done.  A failed replacement rolls itself back; past ``max_failures``
    (default 0) no further batch starts, and the report says which VMs are done,
    rolled back, failed and not touched.  Re-running the same command resumes the
    run (its id and journal): a VM it replaced is never replaced again.

    - ``target``, ``tgt_type``: a Salt target (glob, grain, list, nodegroup,
      compound...), matched on the master from its keys and grains cache; or
    - ``vms``: an explicit list of VM names.
      A matched minion the cloud has no server for (or several) is reported, not
      rotated.
    - ``batch``: VMs replaced at once, a number or a percentage ("25%").
    - ``max_failures``: failed replacements tolerated before the run stops (default 0).
    - ``run``: an id for a new run (default: made up); a re-run without it resumes
      the unfinished run over the same VMs.
    - ``test=True``: the plan, batch by batch, with each VM's own replacement plan
      and the extra servers (cores, RAM) at the peak against the free quota; refused
      (nothing changes) when any VM's plan or the quota would not hold.
    - Anything ``orch.replace_vm`` takes (``image``, ``flavor``, ``deploy``,
      ``keep_old``, ``data_volumes``, ``naming``...) applies to every VM.

    Events ``vmops/rotate/<run>/...``; each VM's replacement fires its own
    ``vmops/replace/<vm>/...``.

    - ``cloud``: the ``vmops:clouds`` profile to act on (default: ``vmops:default_cloud``).

    CLI Example:

    .. code-block:: bash

        salt-run vmops.rotate target='G@role:app' tgt_type=compound batch=2 test=True
        salt-run vmops.rotate vms='[app1, app2, app3]' batch=50%
    """
    from vmopslib import rotate as rot  # pylint: disable=import-outside-toplevel

    passed = {k: v for k, v in options.items() if not k.startswith("__")}
    unknown = sorted(set(passed) - set(ROTATE_PASSED))

    def _rotate():
        if unknown:
            raise InvalidInput(
                "unknown option(s) %s (rotate takes %s and replace_vm's %s); nothing was "
                "changed"
                % (
                    ", ".join(unknown),
                    "target, tgt_type, vms, batch, max_failures, run, test",
                    ", ".join(ROTATE_PASSED),
                )
            )
        conf, prov = saltglue.provider(__opts__, _pillar(), cloud)
        journal = replace.Journal(saltglue.journal_store(__opts__, "replace", "replacement"))
        spec = {
            k: passed[k]
            for k in ("flavor", "image", "key_name", "security_groups", "networks", "metadata")
            if passed.get(k)
        }
        plan_opts = {k: passed[k] for k in replace.PLAN_OPTIONS if passed.get(k) not in (None, "")}

        def check(vm):
            rep = _replacement(cloud, None)
            ret = rep.plan(vm, spec, plan_opts, test=True)
            return ret.get("comment")

        def launch(vm):
            pillar = dict(passed, vm=vm, cloud=prov.name)
            code, tail = saltglue.orchestrate(__opts__, "orch.replace_vm", pillar)
            return None if code == 0 else "orch.replace_vm exited %s" % code

        def outcome(vm):
            record = journal.load(vm)
            if not record:
                return None
            return dict(replace.Replacement.summary(record), failed=record.get("failed"))

        rotation = rot.Rotation(
            prov,
            saltglue.journal_store(__opts__, "rotate", "rotation"),
            lambda tgt, kind: saltglue.match_minions(__opts__, tgt, kind),
            check,
            launch,
            outcome,
            events=_events(),
            options={
                "target": target,
                "tgt_type": tgt_type,
                "vms": vms,
                "batch": batch,
                "max_failures": max_failures,
                "flavor": passed.get("flavor"),
            },
        )
        if _bool(test):
            plan = rotation.plan(test=True)
            plan.pop("_items", None)
            if plan["problems"]:
                plan["result"] = False
            return _with_retcode(plan)
        return _with_retcode(rotation.run(run))

    return _run(_rotate)


def _bool(value):
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "no", "0", "off", "")
    return bool(value)


# ---------------------------------------------------------------------- compute hosts


def _evacuation(cloud, options, verify=True):
    conf, prov = saltglue.provider(__opts__, _pillar(), cloud)
    opts = evacuate.options(conf, {k: v for k, v in options.items() if not k.startswith("__")})
    store = saltglue.journal_store(__opts__, "evacuate", "evacuation")
    verify_minions = (lambda pairs: saltglue.minions_on_hosts(__opts__, pairs)) if verify else None
    return evacuate.Evacuation(prov, store, opts, events=_events(), verify_minions=verify_minions)


def _with_retcode(ret):
    if ret.get("result") is False:
        __context__["retcode"] = 1
        ret["retcode"] = 1
    return ret


def evacuate_node(node, reason=None, cloud=None, test=False, verify_minions=True, **options):
    """
    Drain compute host ``node``: disable its nova-compute (reason: ``reason``,
    stamped with the run id, who and when; a node someone else disabled keeps
    their reason), then move every server off it by what Nova allows for its
    state, verified one by one.  The node stays disabled; ``vmops.enable_node``
    re-enables it.

    - ``node``: exactly one nova-compute host, matched exactly (no glob, no
      substring: ``cmp1`` never means ``cmp10``); refused when it is the only
      enabled host.
    - ``test=True``: the plan (each server's method, the capacity before and
      after, what would be refused); nothing changes.
    - Methods: ACTIVE and PAUSED: live migration (block migration: ``auto``);
      SHUTOFF: cold migration, confirmed; VERIFY_RESIZE: confirmed first;
      SHELVED: shelve-offloaded.  SUSPENDED, RESCUED, ERROR, locked or busy
      servers are reported, not moved, unless ``suspended=resume_and_live_migrate``,
      ``on_error=reset_and_cold_migrate``, ``locked=move``.  Server metadata
      ``vmops:evacuate=skip`` leaves a server where it is; ``=stop`` stops it.
    - Before anything changes, Placement's free vCPU, RAM and disk on the other
      enabled hosts (same availability zone unless ``zone=any``; only ``target``
      when given) must hold the servers; otherwise refused with the numbers,
      unless ``force=True``.  Members of one anti-affinity group never move at once.
    - ``concurrency`` (default 1): migrations in flight from the node at once,
      counting ones other actors run there.  ``retries`` (2): a failed
      migration is tried again.  A live migration that makes no progress for
      ``stall_seconds`` (120) or passes its deadline (``timeout``, default 800 s
      per GiB of RAM, as Nova's) is handled by ``on_timeout``: ``abort``
      (default), ``force_complete`` or ``wait``.  ``stop_on_failure=True``
      starts no new migration after a server failed for good.
    - Each move is verified: the host changed, the migration record says
      ``completed`` (live) or ``confirmed`` (cold), the state is as before, and
      (``verify_minions``) the server's minion, when the master knows it,
      answers and its ``compute_host`` grain, when it has one, names the new host.
    - Resumable: a journal per node; a killed run re-run continues (migrations
      it started are adopted, never started twice); a second run on the same
      node is refused.  Events ``vmops/evacuate/<node>/...``.

    The report lists every server (method, source, destination, attempts,
    duration, result) and what is left on the node; ``result`` is False (and
    the retcode 1) when any server failed or was left behind.

    - ``cloud``: the ``vmops:clouds`` profile to act on (default: ``vmops:default_cloud``).

    CLI Example:

    .. code-block:: bash

        salt-run vmops.evacuate_node cmp1 reason='disk errors'
        salt-run vmops.evacuate_node cmp1 test=True
        salt-run vmops.evacuate_node cmp1 reason='kernel update' concurrency=2 \
            on_timeout=force_complete
    """

    def _evacuate():
        evac = _evacuation(cloud, options, verify=_bool(verify_minions))
        if _bool(test):
            return evac.plan(node)
        return _with_retcode(evac.run(node, reason))

    return _run(_evacuate)


def rolling_maintenance(
    nodes,
    batch=None,
    maintenance=None,
    reboot=None,
    check=None,
    migrate_back=None,
    reason=None,
    cloud=None,
    test=False,
    evacuation=None,
    **options,
):
    """
    Maintain compute hosts ``nodes`` batch by batch: for each node, evacuate it,
    run the maintenance on its own minion (minion id = the host's name),
    optionally reboot it, gate its health, enable it again.  Stops at the first
    failure (the failing node stays disabled, every other node is back in
    service); re-running the same command resumes there and never repeats a
    finished node's steps.

    - ``nodes``: compute hosts, in order (a list, or "cmp1,cmp2").
    - ``batch``: nodes out at once (a number, or a percentage such as "50%";
      default 1).  The nodes of a batch are disabled together, drained one
      after another, rebooted together.  The plan refuses when the servers of a
      batch, with everything moved by earlier batches, do not fit on the other
      enabled hosts (Placement's numbers), unless ``force=True``.
    - ``maintenance``: ``{sls: compute.upgrade}``, ``{cmd: "apt-get -y upgrade"}``
      or ``{orch: orch.my_node_upgrade}`` (run from the master with pillar
      ``node``); none: skipped.  A state gets pillar ``vmops:maintenance: <run>``.
    - ``reboot``: reboot through the minion (``system.reboot``) and wait for the
      minion to answer with a new boot id (``vmops.boot_id``; ``reboot_timeout``,
      900 s), then for nova-compute to be ``up`` with a heartbeat newer than the
      reboot and its resource provider in Placement (``service_timeout``, 300 s).
    - ``check``: ``{sls: ...}`` or ``{cmd: ...}`` that must pass on the node
      before it is enabled (the gate also wants nova-compute up and the minion
      answering).
    - ``migrate_back``: move the node's servers back once it is enabled.
    - ``reason``: goes into the disabled reason (default "rolling maintenance").
    - ``evacuation``: evacuation options for every node (``{concurrency: 2, ...}``;
      see ``vmops.evacuate_node``; default ``vmops:evacuate``).
    - A node someone else disabled is maintained but never re-enabled by the run.
    - ``test=True``: the whole plan, node by node, with the free capacity each
      batch leaves; nothing changes.

    Settings may also come from ``vmops:maintenance`` (config or pillar).
    Events ``vmops/maintenance/<node>/<step>`` and ``vmops/maintenance/run/...``.

    - ``cloud``: the ``vmops:clouds`` profile to act on (default: ``vmops:default_cloud``).

    CLI Example:

    .. code-block:: bash

        salt-run vmops.rolling_maintenance nodes='[cmp1, cmp2, cmp3]' test=True
        salt-run vmops.rolling_maintenance nodes='[cmp1, cmp2, cmp3]' \
            maintenance='{sls: compute.upgrade}' reboot=True
    """

    def _maintain():
        from vmopslib import maintenance as maint  # pylint: disable=import-outside-toplevel

        conf, prov = saltglue.provider(__opts__, _pillar(), cloud)
        overrides = {
            "batch": batch,
            "maintenance": maintenance,
            "reboot": reboot,
            "check": check,
            "migrate_back": migrate_back,
            "reason": reason,
        }
        overrides.update({k: v for k, v in options.items() if not k.startswith("__")})
        mopts = maint.options(conf, overrides)
        if evacuation is not None and not isinstance(evacuation, dict):
            raise InvalidInput("evacuation: a mapping of evacuation options; nothing was changed")
        evac_opts = evacuate.options(conf, evacuation or {})
        evac = evacuate.Evacuation(
            prov,
            saltglue.journal_store(__opts__, "evacuate", "evacuation"),
            evac_opts,
            events=_events(),
            verify_minions=lambda pairs: saltglue.minions_on_hosts(__opts__, pairs),
        )
        run = maint.Maintenance(
            prov,
            saltglue.journal_store(__opts__, "maintenance", "maintenance"),
            evac,
            saltglue.NodeMinions(__opts__),
            mopts,
            events=_events(),
        )
        if _bool(test):
            return run.plan(nodes)
        return _with_retcode(run.run(nodes))

    return _run(_maintain)


def enable_node(node, cloud=None, force=False, migrate_back=False, **options):
    """
    Re-enable compute host ``node`` after an evacuation.  Only a node the pack
    disabled (its reason starts with ``vmops-evacuate``) is enabled, unless
    ``force=True``: someone else's maintenance is not ended by surprise.
    ``migrate_back=True`` then moves the servers the last evacuation moved off
    it back (live or cold, each verified).

    - ``cloud``: the ``vmops:clouds`` profile to act on (default: ``vmops:default_cloud``).

    CLI Example:

    .. code-block:: bash

        salt-run vmops.enable_node cmp1
        salt-run vmops.enable_node cmp1 migrate_back=True
    """

    def _enable():
        evac = _evacuation(cloud, options, verify=False)
        recovered = _recovery(cloud, {}).enable(node)  # a recovered (forced down) node first
        out = evac.enable(node, force=_bool(force), migrate_back=_bool(migrate_back))
        if recovered:
            out["comment"] = "%s; %s" % (recovered["comment"], out["comment"])
            out["changed"] = True
        return _with_retcode(out)

    return _run(_enable)


def _recovery(cloud, options):
    from vmopslib import recover  # pylint: disable=import-outside-toplevel

    conf, prov = saltglue.provider(__opts__, _pillar(), cloud)
    opts = recover.options(conf, {k: v for k, v in options.items() if not k.startswith("__")})
    return recover.Recovery(
        prov,
        saltglue.journal_store(__opts__, "recover", "recovery"),
        opts,
        node_answers=lambda node: saltglue.minion_answers(__opts__, node, timeout=5),
        verify_minions=_minions_back,
        events=_events(),
    )


def _minions_back(pairs, timeout=180):
    """minions_on_hosts, asked again while an evacuated guest's minion is still starting."""
    deadline = time.time() + timeout
    while True:
        out = saltglue.minions_on_hosts(__opts__, pairs)
        late = [n for n, why in out.items() if why and "did not answer" in why]
        if not late or time.time() > deadline:
            return out
        time.sleep(3)


def recover_node(node, fenced=None, fence=None, cloud=None, test=False, **options):
    """
    Recover dead compute host ``node``: fence it, force its nova-compute down,
    evacuate (rebuild elsewhere) its servers, verify each.

    - Refused, with nothing changed, unless the node's nova-compute is ``down``
      (Nova evacuates nothing else) and its own minion (id = host name) does not
      answer, and unless its servers fit on the other enabled hosts (Placement's
      numbers; ``force=True`` goes on anyway).
    - Fencing: the node must be proven off before anything moves: ``fence``
      (``{cmd: "ipmitool -H {node}-ipmi ... chassis power off"}``, run on the
      master, ``{node}`` replaced by the host name, exit 0 = off) or the
      operator's ``fenced=True``.  Then the service is forced down and
      disabled, and the evacuations start at once (no fixed wait).
    - Volume-backed servers are evacuated; servers with local disks (root from
      an image, ephemeral, swap: rebuilt from the image, their data lost) only
      with ``local_disks=rebuild``.  Busy servers or states Nova cannot
      evacuate (not ACTIVE/SHUTOFF/ERROR) are reported, or reset to error first
      with ``reset_state=True``.  ``concurrency`` (2) evacuations at a time;
      ``timeout`` (600 s) per server.
    - Each is verified: on another host, ACTIVE again when it was (servers
      Nova leaves SHUTOFF from microversion 2.95 are started, and the report
      says so), its volumes ``in-use``, its minion (when the master knows it)
      answering from the new host.
    - The node stays disabled and forced down; ``vmops.enable_node`` brings it
      back once it heartbeats again.  Re-running resumes (evacuations in flight
      are adopted, never asked for twice).  ``test=True``: the plan.
    - Events ``vmops/recover/<node>/...``; the report has
      ``fence_to_first_evacuation`` (seconds).

    - ``cloud``: the ``vmops:clouds`` profile to act on (default: ``vmops:default_cloud``).

    CLI Example:

    .. code-block:: bash

        salt-run vmops.recover_node cmp2 test=True
        salt-run vmops.recover_node cmp2 fenced=True
        salt-run vmops.recover_node cmp2 \\
            fence='{cmd: "ipmitool -I lanplus -H {node}-ipmi chassis power off"}'
    """

    def _recover():
        overrides = dict(options)
        overrides.update({"fenced": fenced, "fence": fence})
        rec = _recovery(cloud, overrides)
        if _bool(test):
            return rec.plan(node)
        return _with_retcode(rec.run(node))

    return _run(_recover)


# ---------------------------------------------------------------------- admission


def expect(name, cloud=None, ttl=None, provision=True, level=None):
    """
    Register ``name`` as a VM about to boot outside the pack (by hand, by a
    template), so that the admission reactor may accept its minion's key.
    Returns the one-time nonce: boot the server with metadata (EC2: a tag)
    ``vmops-nonce=<nonce>`` within ``ttl`` seconds (default
    ``vmops:reactor:expect_ttl``), and have cloud-init print the minion key's
    fingerprint on the console (the pack's user-data does).  ``provision``:
    the reactor highstates the new minion; ``level``: the sanity grain it must
    have.

    - ``cloud``: the ``vmops:clouds`` profile to act on (default: ``vmops:default_cloud``).

    CLI Example:

    .. code-block:: bash

        salt-run vmops.expect app4 level=staging
    """

    def _expect():
        conf, prov = saltglue.provider(__opts__, _pillar(), cloud)
        entry = _registry().expect(
            name,
            prov.name,
            "vmops.expect",
            ttl or config.reactor(conf)["expect_ttl"],
            provision=_bool(provision),
            level=level,
        )
        _events()(
            tags.expect(name),
            "%s is expected on %s until %s"
            % (
                name,
                prov.name,
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry["expires"])),
            ),
            minion=name,
            cloud=prov.name,
            expires=entry["expires"],
        )
        return {
            "result": True,
            "minion": name,
            "cloud": prov.name,
            "expires": entry["expires"],
            "metadata": {NONCE_KEY: entry["nonce"]},
            "comment": "boot %s on %s with metadata %s=<this nonce>" % (name, prov.name, NONCE_KEY),
        }

    return _run(_expect)


def expected(name=None):
    """
    The admission registry: the minions the pack expects or has admitted, with
    their state (expected, preseeded, accepted, provisioning, provisioned,
    failed), source and expiry.  Nonces are not shown.

    - ``name``: the server's name (or id).

    CLI Example:

    .. code-block:: bash

        salt-run vmops.expected
        salt-run vmops.expected app2
    """

    def _list():
        reg = _registry()
        entries = [reg.get(name)] if name else reg.entries()
        out = {}
        for entry in filter(None, entries):
            shown = {k: v for k, v in entry.items() if k != "nonce"}
            shown["live"] = is_live(entry)
            out[entry["minion"]] = shown
        return {"result": True, "expected": out}

    return _run(_list)


def forget(name):
    """
    Remove ``name`` from the admission registry (and forget refusals of its
    keys): a pending key for it is then accepted only by a new registration or
    an auto-provisioning rule.

    CLI Example:

    .. code-block:: bash

        salt-run vmops.forget app4
    """

    def _forget():
        reg = _registry()
        gone = reg.forget(name)
        reg.clear_refusal(name)
        return {"result": True, "minion": name, "forgotten": gone}

    return _run(_forget)


def admit_minion(name):
    """
    The admission reactor's decision on the pending key of ``name``: accepted
    (that exact id) only when the cloud vouches for it, through a live
    registration (``vmops.create``, ``vmops.expect``) or an auto-provisioning
    rule (``vmops:autoprovision``), and the server's console shows the key's
    fingerprint.  Otherwise the key stays pending or is rejected
    (``vmops:reactor:on_refused``).  Either way ``vmops/key/<name>/accepted``
    or ``.../refused`` says why.

    CLI Example:

    .. code-block:: bash

        salt-run vmops.admit_minion web-7f3a
    """

    def _admit():
        conf = saltglue.settings(__opts__, _pillar())
        ret = admission.decide(
            conf,
            saltglue.MasterKeys(__opts__),
            _registry(),
            lambda cloud: saltglue.provider(__opts__, _pillar(), cloud)[1],
            name,
            _events(),
        )
        if not ret["result"]:
            __context__["retcode"] = 1
            ret["retcode"] = 1
        return ret

    return _run(_admit)


def provision_minion(name, highstate_timeout=3600):
    """
    Provision the minion ``name`` the admission reactor accepted, in this one runner:
    what ``orch.provision_minion`` does (the minion answers and has its sanity grain,
    its highstate, the outcome recorded and ``vmops/provision/<name>/done`` fired),
    without an orchestration's state machinery: the reactor's default for a minion's
    start (an auto-provisioning rule's ``orchestration``, or
    ``vmops:reactor:provision_orchestration``, names an orchestration to run
    instead).  The highstate is waited for in the master's job cache.

    - ``name``: the minion id.
    - ``highstate_timeout``: seconds the highstate may take (default 3600).

    CLI Example:

    .. code-block:: bash

        salt-run vmops.provision_minion web-7f3a
    """

    def _provision():
        ret = saltglue.provision_minion(__opts__, _pillar(), _events(), name, highstate_timeout)
        if ret.get("result") is False:
            __context__["retcode"] = 1
            ret["retcode"] = 1
        return ret

    return _run(_provision)


def provision(name, step="check", result=True):
    """
    A step of ``orch.provision_minion``, which the reactor starts when a minion
    it admitted (with ``provision``) starts: ``check`` waits for the minion and
    checks its sanity grain (``vmops:reactor:sanity_grain``, default ``level``)
    against the registration or rule; ``done`` records the outcome
    (``result``) and fires ``vmops/provision/<name>/done``.

    - ``name``: the minion id (the server's name).
    - ``step``: the step to run (see above); ``status`` shows the journal.

    CLI Example:

    .. code-block:: bash

        salt-run vmops.provision web-7f3a step=check
        salt-run vmops.provision web-7f3a step=done result=True
    """

    return _run(saltglue.provision_step, __opts__, _pillar(), _events(), name, step, _bool(result))
