"""
States of saltext-vmops, built on the ``vmops`` execution module.

Each state works out what would change first, honours ``test=True`` (result
``None`` and what it would do), and reports changes the Salt way.  In an
orchestration they run on the master, which needs the pack synced
(``salt-run saltutil.sync_all``) or pip-installed.

.. code-block:: yaml

    app2:
      vmops.server_present:
        - flavor: lightspeed

    173.236.254.224:
      vmops.floating_ip_associated:
        - server: app2

    cmp1:
      vmops.compute_service_disabled:
        - reason: disk replacement, T1234

    data-app2:
      vmops.volume_attached:
        - server: app2
        - device: /dev/vdb
"""

import os
import sys

from salt.exceptions import CommandExecutionError, SaltInvocationError

try:
    import vmopslib  # noqa: F401  (only: is the core importable as it is?)
except ImportError:  # synced from the state tree: the core sits in <extension_modules>/utils
    _ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.extend(os.path.join(_ROOT, sub) for sub in ("utils", "_utils"))
    import vmopslib  # noqa: F401  pylint: disable=ungrouped-imports

from vmopslib import replace, saltglue  # pylint: disable=wrong-import-position
from vmopslib.errors import VmopsError  # pylint: disable=wrong-import-position

__virtualname__ = "vmops"


def __virtual__():
    if "vmops.server_show" in __salt__:
        return __virtualname__
    return (False, "the vmops execution module is not loaded (openstacksdk or boto3 missing?)")


def _ret(name):
    return {"name": name, "changes": {}, "result": True, "comment": ""}


def _fail(ret, exc):
    ret.update(result=False, comment=str(exc), changes={})
    return ret


def _converge(ret, fn, changes, *args, **kwargs):
    """Ask ``fn(..., test=True)`` what would change; under ``test=True`` say so, else do it.

    ``changes(plan_or_done)`` gives the state's changes from the function's answer.
    """
    plan = fn(*args, test=True, **kwargs)
    if not plan["changed"]:
        ret["comment"] = plan["comment"]
        return ret
    if __opts__["test"]:
        ret.update(result=None, comment=plan["comment"], changes=changes(plan))
        return ret
    done = fn(*args, **kwargs)
    ret.update(comment=done["comment"], changes=changes(done))
    return ret


def server_present(name, cloud=None, **settings):
    """
    A server called ``name`` exists.  When it does not, it is booted with the
    pack's user-data (its minion points at the configured master) from
    ``vmops:defaults``, ``vmops:vms:<name>`` and the given settings (``flavor``,
    ``image``, ``networks``...).  An existing server is left as it is: replacing
    it is ``orch.replace_vm``'s job.  Two servers with that name fail.

    - ``cloud``: the ``vmops:clouds`` profile to act on (default: ``vmops:default_cloud``).
    """
    ret = _ret(name)
    settings = {k: v for k, v in settings.items() if not k.startswith("__")}
    try:
        found = __salt__["vmops.server_list"](name, cloud=cloud)
        if len(found) > 1:
            ret.update(
                result=False,
                comment="%d servers are named %s (%s): resolve that first"
                % (len(found), name, ", ".join(s["id"] for s in found)),
            )
            return ret
        if found:
            ret["comment"] = "server %s exists (%s on %s)" % (
                name,
                found[0]["status"],
                found[0].get("host") or found[0].get("cloud"),
            )
            return ret
        if __opts__["test"]:
            ret.update(
                result=None,
                comment="server %s would be booted" % name,
                changes={"old": None, "new": dict(settings, name=name)},
            )
            return ret
        desc = __salt__["vmops.server_create"](name, cloud=cloud, **settings)
    except (CommandExecutionError, SaltInvocationError) as exc:
        return _fail(ret, exc)
    ret["comment"] = "server %s booted (%s on %s)" % (name, desc["status"], desc.get("host"))
    ret["changes"] = {
        "old": None,
        "new": {
            "id": desc["id"],
            "status": desc["status"],
            "host": desc.get("host"),
            "flavor": desc.get("flavor"),
        },
    }
    return ret


def server_absent(name, cloud=None):
    """
    No server called ``name`` exists: delete it (and wait until it is gone).
    Two servers with that name fail rather than delete the wrong one.

    - ``cloud``: the ``vmops:clouds`` profile to act on (default: ``vmops:default_cloud``).
    """
    ret = _ret(name)
    try:
        found = __salt__["vmops.server_list"](name, cloud=cloud)
        if not found:
            ret["comment"] = "server %s is already absent" % name
            return ret
        if len(found) > 1:
            ret.update(
                result=False,
                comment="%d servers are named %s (%s): delete by id"
                % (len(found), name, ", ".join(s["id"] for s in found)),
            )
            return ret
        old = {"id": found[0]["id"], "status": found[0]["status"]}
        if __opts__["test"]:
            ret.update(
                result=None,
                comment="server %s (%s) would be deleted" % (name, old["id"]),
                changes={"old": old, "new": None},
            )
            return ret
        __salt__["vmops.server_delete"](found[0]["id"], cloud=cloud)
    except (CommandExecutionError, SaltInvocationError) as exc:
        return _fail(ret, exc)
    ret.update(
        comment="server %s (%s) deleted" % (name, old["id"]), changes={"old": old, "new": None}
    )
    return ret


def floating_ip_associated(name, server, fixed_ip=None, cloud=None):
    """
    Floating IP (or Elastic IP) ``name`` points at ``server`` (name or id),
    moved there in one re-association so it is never unassigned in between.

    - ``fixed_ip``: on a server with several ports, the fixed IP to point the address
      at (default: its only one).
    - ``cloud``: the ``vmops:clouds`` profile to act on (default: ``vmops:default_cloud``).
    """
    ret = _ret(name)
    try:
        if __opts__["test"] and not __salt__["vmops.server_list"](server, cloud=cloud):
            # e.g. a server_present before this state would boot it
            ret.update(
                result=None,
                comment="%s would be moved to %s, which does not exist yet" % (name, server),
                changes={"new": {"server": server}},
            )
            return ret
        return _converge(
            ret,
            __salt__["vmops.flip_floating_ip"],
            lambda out: {"old": out["old"], "new": out["new"]},
            name,
            server,
            fixed_ip=fixed_ip,
            cloud=cloud,
        )
    except (CommandExecutionError, SaltInvocationError) as exc:
        return _fail(ret, exc)


def volume_attached(name, server, device=None, timeout=300, cloud=None):
    """
    Volume ``name`` (name or id) is attached to ``server``.  A volume attached
    elsewhere fails before any change, naming where it is (a volume is never
    attached twice); waits until it is in-use there.

    - ``device``: the device name to attach at (default: the cloud's next free one).
    - ``timeout``: seconds to wait before giving up (the cloud call itself is not undone).
    - ``cloud``: the ``vmops:clouds`` profile to act on (default: ``vmops:default_cloud``).
    """
    ret = _ret(name)
    try:
        return _converge(
            ret,
            __salt__["vmops.volume_attach"],
            lambda out: {"attached": {"server": out["server"], "device": out.get("device")}},
            server,
            name,
            device=device,
            timeout=timeout,
            cloud=cloud,
        )
    except (CommandExecutionError, SaltInvocationError) as exc:
        return _fail(ret, exc)


def volume_detached(name, server, timeout=300, cloud=None):
    """
    Volume ``name`` (name or id) is not attached to ``server``; detaches it and
    waits until it is available.

    - ``timeout``: seconds to wait before giving up (the cloud call itself is not undone).
    - ``cloud``: the ``vmops:clouds`` profile to act on (default: ``vmops:default_cloud``).
    """
    ret = _ret(name)
    try:
        return _converge(
            ret,
            __salt__["vmops.volume_detach"],
            lambda out: {"detached": {"server": out["server"]}},
            server,
            name,
            timeout=timeout,
            cloud=cloud,
        )
    except (CommandExecutionError, SaltInvocationError) as exc:
        return _fail(ret, exc)


def _service_state(name, cloud, want, reason=None):
    ret = _ret(name)
    try:
        svc = __salt__["vmops.service_show"](name, cloud=cloud)
        old = {"status": svc["status"], "disabled_reason": svc["disabled_reason"]}
        if svc["status"] == want and (want == "enabled" or svc["disabled_reason"] == reason):
            ret["comment"] = "nova-compute on %s is already %s" % (name, want)
            return ret
        new = {"status": want, "disabled_reason": reason}
        if __opts__["test"]:
            ret.update(
                result=None,
                comment="nova-compute on %s would be %s" % (name, want),
                changes={"old": old, "new": new},
            )
            return ret
        if want == "enabled":
            svc = __salt__["vmops.service_enable"](name, cloud=cloud)
        else:
            svc = __salt__["vmops.service_disable"](name, reason, cloud=cloud)
    except (CommandExecutionError, SaltInvocationError) as exc:
        return _fail(ret, exc)
    ret.update(
        comment="nova-compute on %s is now %s" % (name, want),
        changes={
            "old": old,
            "new": {"status": svc["status"], "disabled_reason": svc["disabled_reason"]},
        },
    )
    return ret


def compute_service_enabled(name, cloud=None):
    """
    The nova-compute service of host ``name`` is enabled (the scheduler may place servers there).

    - ``cloud``: the ``vmops:clouds`` profile to act on (default: ``vmops:default_cloud``).
    """
    return _service_state(name, cloud, "enabled")


def compute_service_disabled(name, reason, cloud=None):
    """
    The nova-compute service of host ``name`` is disabled with ``reason`` (the
    scheduler places nothing new there; its servers keep running).

    - ``cloud``: the ``vmops:clouds`` profile to act on (default: ``vmops:default_cloud``).
    """
    return _service_state(name, cloud, "disabled", reason)


def replace_step(name, vm, cloud=None, token=None, **params):
    """
    One step (``name``: plan, boot, wait, sanity, highstate, deploy, cutover, checked,
    smoke, flip, retire, rollback) of replacing VM ``vm``, for orchestration on the
    master: what ``orch.replace_vm`` runs, the same as ``salt.runner`` with
    ``vmops.replace_vm`` (see its documentation for the steps and ``params``), in the
    orchestration's own process (no runner client per step).  ``changes`` carry the
    step's report under ``return``, as ``salt.runner`` does.

    - ``cloud``: the ``vmops:clouds`` profile to act on (default: ``vmops:default_cloud``).
    - ``token``: ties the steps of one run together (``orch.replace_vm`` makes one).

    .. code-block:: yaml

        boot:
          vmops.replace_step:
            - vm: app2
            - token: {{ token }}
    """
    ret = _ret(name)
    params = {k: v for k, v in params.items() if not k.startswith("__")}
    if __opts__.get("test"):
        ret.update(result=None, comment="step %s of replacing %s would run" % (name, vm))
        return ret
    options = {k: params.pop(k) for k in replace.PLAN_OPTIONS if k in params}
    kwargs = {k: params.pop(k) for k in ("timeout", "network", "highstate_timeout") if k in params}
    return _step_ret(
        ret,
        "step %s of replacing %s" % (name, vm),
        lambda: saltglue.replace_step(
            __opts__,
            __pillar__,
            saltglue.Events(__opts__),
            vm,
            name,
            cloud=cloud,
            token=token,
            options=options,
            overrides=params,
            **kwargs,
        ),
    )


def _step_ret(ret, what, call):
    """A state's return for one step of a core flow (``call()``): its report under
    ``changes:return``, as a ``salt.runner`` state carries a runner's (a pack error
    as the runner's failure report)."""
    try:
        report = call()
    except VmopsError as exc:
        failed = {"result": False, "comment": str(exc), "error": type(exc).__name__}
        ret.update(result=False, comment=str(exc), changes={"return": failed})
        return ret
    ret["comment"] = report.get("comment") or what
    ret["changes"] = {"return": report}
    if report.get("result") is False:
        ret["result"] = False
    return ret


def provision_step(name, minion, result=True):
    """
    A step (``name``: ``check`` or ``done``) of provisioning the minion ``minion`` the
    admission reactor accepted: what ``orch.provision_minion`` runs, the same as
    ``salt.runner`` with ``vmops.provision`` (see its documentation), in the
    orchestration's own process (no runner client per step).  ``check`` waits for the
    minion and checks its sanity grain; ``done`` records ``result`` and fires
    ``vmops/provision/<minion>/done``.

    .. code-block:: yaml

        check_minion:
          vmops.provision_step:
            - name: check
            - minion: web-7f3a
    """
    ret = _ret(name)
    if __opts__.get("test"):
        ret.update(result=None, comment="step %s of provisioning %s would run" % (name, minion))
        return ret
    return _step_ret(
        ret,
        "step %s of provisioning %s" % (name, minion),
        lambda: saltglue.provision_step(
            __opts__, __pillar__, saltglue.Events(__opts__), minion, name, result
        ),
    )
