"""
Execution module of saltext-vmops: one call per cloud concept, on OpenStack
(openstacksdk) and EC2 (boto3).

Works with ``salt-call`` on any minion that holds cloud credentials, and on the
master from runners and orchestration.  Configuration is the ``vmops`` key,
looked up with ``config.get`` (minion config, grains, pillar, master config);
see ``pillar.example/vmops.sls``.  Credentials never appear in a return value.

:depends: openstacksdk (OpenStack clouds), boto3 (EC2)

Each function calls the provider operation of the same name, except the server
functions, which call the core's server verbs: ``server_show`` -> ``describe``,
``server_list`` -> ``servers_named``, ``server_boot`` -> ``boot``,
``server_delete`` -> ``delete``, ``server_rebuild`` -> ``rebuild``.
"""

import logging
import os
import sys

try:
    import vmopslib  # noqa: F401  (only: is the core importable as it is?)
except ImportError:  # synced from the state tree: the core sits in <extension_modules>/utils
    _ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.extend(os.path.join(_ROOT, sub) for sub in ("utils", "_utils"))
    import vmopslib  # noqa: F401  pylint: disable=ungrouped-imports

from vmopslib import admission, evacuate, minions, saltglue
from vmopslib.errors import VmopsError

log = logging.getLogger(__name__)

__virtualname__ = "vmops"


def __virtual__():
    return saltglue.loader_virtual(__virtualname__, "module")


def _conf():
    return {
        "vmops": __salt__["config.get"]("vmops", default={}, merge="recurse"),
        "cachedir": __opts__.get("cachedir"),
    }


def _provider(cloud):
    return saltglue.provider(_conf(), None, cloud)


def _call(cloud, call):
    """Run ``call(provider)`` (one provider operation, called by its name so a grep finds
    it); pack errors become Salt exceptions."""
    return saltglue.run_module(lambda: call(_provider(cloud)[1]))


def server_show(name, cloud=None):
    """
    Describe the server ``name`` (or id): status, compute host, flavor, image,
    key pair, security groups, networks and fixed IPs, floating IPs, volumes,
    metadata, creation time.  Two servers with that name are an error: give the id.

    - ``cloud``: the ``vmops:clouds`` profile to act on (default: ``vmops:default_cloud``).

    CLI Example:

    .. code-block:: bash

        salt-call vmops.server_show app2
    """
    return _call(cloud, lambda prov: prov.describe(name))


def server_list(name, cloud=None):
    """
    Every server called ``name`` (none, one, or several during a replacement).

    - ``cloud``: the ``vmops:clouds`` profile to act on (default: ``vmops:default_cloud``).

    CLI Example:

    .. code-block:: bash

        salt-call vmops.server_list app2
    """
    return _call(cloud, lambda prov: prov.servers_named(name))


def server_create(name, cloud=None, wait=True, **overrides):
    """
    Boot VM ``name`` with the pack's user-data (a salt-minion pointed at the
    configured master) from ``vmops:defaults`` and ``vmops:vms:<name>``, with
    keyword overrides (``flavor``, ``image``, ``networks``...), and wait until
    it is ACTIVE.  A server that goes to ERROR fails with Nova's fault message.

    Unlike the runner's ``vmops.create``, this does not register the VM for
    admission: the expected-minion registry lives on the master (its cache
    dir), and a minion calling this cannot write it.  Its key is then accepted
    by ``salt-run vmops.accept_minion`` (the console fingerprint), or by the
    reactor when an auto-provisioning rule matches; for the reactor's
    registration path, boot from the master (``salt-run vmops.create``).

    name
        the VM's name, which is also its minion id (a plain id, never a glob)
    cloud
        a ``vmops:clouds`` profile (default: ``vmops:default_cloud``)
    wait
        wait until ACTIVE (default True)
    overrides
        ``flavor``, ``image``, ``networks``, ``security_groups``, ``key_name``,
        ``metadata``, ``availability_zone``, ``volumes``, ``grains``, ``level``,
        ``minion_config``, ``cloud_config``: over ``vmops:defaults`` and
        ``vmops:vms:<name>``

    - ``cloud``: the ``vmops:clouds`` profile to act on (default: ``vmops:default_cloud``).
    - ``wait``: wait until the cloud finished (default True); False returns once it was asked.

    CLI Example:

    .. code-block:: bash

        salt-call vmops.server_create app2 flavor=lightspeed
    """
    overrides = {k: v for k, v in overrides.items() if not k.startswith("__")}

    def _create():
        conf, prov = _provider(cloud)
        return minions.create_vm(conf, prov, name, overrides, wait=wait)

    return saltglue.run_module(_create)


def server_boot(
    name,
    image,
    flavor,
    networks=None,
    security_groups=None,
    key_name=None,
    metadata=None,
    user_data=None,
    availability_zone=None,
    wait=True,
    timeout=600,
    cloud=None,
):
    """
    Boot a server from an explicit spec (no pack user-data) and wait until it
    is ACTIVE, with back-off; ERROR fails with the cloud's fault message.
    An unknown image, flavor, network, key pair or security group is refused
    before anything is created.

    - ``name``: the new server's name.
    - ``security_groups``: names or ids of security groups.
    - ``key_name``: a key pair the cloud knows.
    - ``metadata``: a mapping of server metadata (OpenStack) / tags (EC2).
    - ``user_data``: user-data passed as is (size checked per cloud first).
    - ``availability_zone``: a zone, or ``zone:host`` to pin a host (admin).
    - ``timeout``: seconds to wait before giving up (the cloud call itself is not undone).

    - ``image``: image name or id (EC2: AMI).
    - ``flavor``: flavor name or id (EC2: instance type).
    - ``networks``: network names or ids (EC2: subnets).
    - ``wait``: wait until the cloud finished (default True); False returns once it was asked.
    - ``cloud``: the ``vmops:clouds`` profile to act on (default: ``vmops:default_cloud``).

    CLI Example:

    .. code-block:: bash

        salt-call vmops.server_boot web1 image=Ubuntu-22.04 flavor=m1.small networks='[private]'
    """
    spec = {
        "name": name,
        "image": image,
        "flavor": flavor,
        "networks": networks,
        "security_groups": security_groups,
        "key_name": key_name,
        "metadata": metadata,
        "user_data": user_data,
        "availability_zone": availability_zone,
    }
    return _call(cloud, lambda prov: prov.boot(spec, wait=wait, timeout=int(timeout)))


def server_delete(name, cloud=None, wait=True):
    """
    Delete the server ``name`` (or id) and wait until it is gone.

    - ``cloud``: the ``vmops:clouds`` profile to act on (default: ``vmops:default_cloud``).

    - ``wait``: wait until the cloud finished (default True); False returns once it was asked.

    CLI Example:

    .. code-block:: bash

        salt-call vmops.server_delete app2-old
    """
    return _call(cloud, lambda prov: prov.delete(name, wait=wait))


def server_rebuild(name, image=None, user_data=None, timeout=600, cloud=None):
    """
    Rebuild a server in place (same id, ports and IPs) from ``image`` (default:
    its current image) with new ``user_data``, and wait until it is ACTIVE.

    - ``name``: the server's name (or id).
    - ``timeout``: seconds to wait before giving up (the cloud call itself is not undone).
    - ``cloud``: the ``vmops:clouds`` profile to act on (default: ``vmops:default_cloud``).

    CLI Example:

    .. code-block:: bash

        salt-call vmops.server_rebuild app2 image=Ubuntu-22.04
    """
    return _call(
        cloud,
        lambda prov: prov.rebuild(name, image=image, user_data=user_data, timeout=int(timeout)),
    )


def console_output(name, cloud=None):
    """
    The console output of server ``name`` (or id).

    - ``cloud``: the ``vmops:clouds`` profile to act on (default: ``vmops:default_cloud``).

    CLI Example:

    .. code-block:: bash

        salt-call vmops.console_output app2
    """
    return _call(cloud, lambda prov: prov.console_output(name))


def flip_floating_ip(address, server, fixed_ip=None, test=False, cloud=None):
    """
    Move floating IP ``address`` to ``server`` (name or id) in one
    re-association, so it is never unassigned in between, and verify it.
    A no-op when it already points there; ``test=True`` only says what it would do.

    - ``fixed_ip``: on a server with several ports, the fixed IP to point the address
      at (default: its only one).
    - ``cloud``: the ``vmops:clouds`` profile to act on (default: ``vmops:default_cloud``).

    CLI Example:

    .. code-block:: bash

        salt-call vmops.flip_floating_ip 203.0.113.7 app2
    """
    return _call(
        cloud, lambda prov: prov.flip_floating_ip(address, server, fixed_ip=fixed_ip, test=test)
    )


def floating_ip_allocate(network=None, cloud=None):
    """
    Allocate a floating IP (e.g. to smoke-test a new VM before the flip) from
    ``network`` (default: the cloud's only external network).

    - ``cloud``: the ``vmops:clouds`` profile to act on (default: ``vmops:default_cloud``).

    CLI Example:

    .. code-block:: bash

        salt-call vmops.floating_ip_allocate network=public
    """
    return _call(cloud, lambda prov: prov.floating_ip_allocate(network))


def floating_ip_release(address, force=False, cloud=None):
    """
    Release floating IP ``address``.  One that still points at a server is
    refused unless ``force=True``.

    - ``cloud``: the ``vmops:clouds`` profile to act on (default: ``vmops:default_cloud``).

    CLI Example:

    .. code-block:: bash

        salt-call vmops.floating_ip_release 203.0.113.99
    """
    return _call(cloud, lambda prov: prov.floating_ip_release(address, force=force))


def service_show(host, cloud=None):
    """
    The nova-compute service of ``host``: status (enabled/disabled), state
    (up/down), forced_down, disabled reason.

    - ``cloud``: the ``vmops:clouds`` profile to act on (default: ``vmops:default_cloud``).

    CLI Example:

    .. code-block:: bash

        salt-call vmops.service_show cmp1
    """
    return _call(cloud, lambda prov: prov.service_show(host))


def service_list(cloud=None):
    """
    Every nova-compute service with its status and state.

    - ``cloud``: the ``vmops:clouds`` profile to act on (default: ``vmops:default_cloud``).

    CLI Example:

    .. code-block:: bash

        salt-call vmops.service_list
    """
    return _call(cloud, lambda prov: prov.service_list())


def service_disable(host, reason, cloud=None):
    """
    Disable the nova-compute service of ``host`` with a reason, so the
    scheduler places nothing new there.

    - ``cloud``: the ``vmops:clouds`` profile to act on (default: ``vmops:default_cloud``).

    - ``reason``: why (stored as the service's disabled reason).

    CLI Example:

    .. code-block:: bash

        salt-call vmops.service_disable cmp1 reason="disk replacement, T1234"
    """
    return _call(cloud, lambda prov: prov.service_disable(host, reason))


def service_enable(host, cloud=None):
    """
    Enable the nova-compute service of ``host`` again.

    - ``cloud``: the ``vmops:clouds`` profile to act on (default: ``vmops:default_cloud``).

    CLI Example:

    .. code-block:: bash

        salt-call vmops.service_enable cmp1
    """
    return _call(cloud, lambda prov: prov.service_enable(host))


def service_force_down(host, forced=True, cloud=None):
    """
    Mark the nova-compute service of a dead ``host`` down at once (``forced=False``
    clears it), as needed before evacuating its servers.

    - ``cloud``: the ``vmops:clouds`` profile to act on (default: ``vmops:default_cloud``).

    CLI Example:

    .. code-block:: bash

        salt-call vmops.service_force_down cmp3
    """
    return _call(cloud, lambda prov: prov.service_force_down(host, forced=forced))


def host_servers(host, cloud=None):
    """
    Every server on compute host ``host``, across all projects.

    - ``cloud``: the ``vmops:clouds`` profile to act on (default: ``vmops:default_cloud``).

    CLI Example:

    .. code-block:: bash

        salt-call vmops.host_servers cmp1
    """
    return _call(cloud, lambda prov: prov.host_servers(host))


def boot_id():
    """
    This host's boot id (``/proc/sys/kernel/random/boot_id``): it changes with
    every boot, so a rolling maintenance knows a node really rebooted (not
    only that its minion was silent for a while).  The minion config
    ``vmops: {boot_id_file: <path>}`` reads another file (containers, tests).
    No cloud credentials needed.

    CLI Example:

    .. code-block:: bash

        salt cmp1 vmops.boot_id
    """
    path = (__opts__.get("vmops") or {}).get("boot_id_file") or "/proc/sys/kernel/random/boot_id"
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read().strip()
    except OSError as exc:
        return saltglue.raise_salt(VmopsError("cannot read the boot id from %s: %s" % (path, exc)))


def host_capacity(host, cloud=None):
    """
    vCPU, RAM and disk of compute host ``host`` from placement: total,
    reserved, allocation ratio, capacity, used and free.

    - ``cloud``: the ``vmops:clouds`` profile to act on (default: ``vmops:default_cloud``).

    CLI Example:

    .. code-block:: bash

        salt-call vmops.host_capacity cmp2
    """
    return _call(cloud, lambda prov: prov.host_capacity(host))


def _evacuation(cloud, options):
    conf, prov = _provider(cloud)
    opts = evacuate.options(conf, {k: v for k, v in options.items() if not k.startswith("__")})
    store = saltglue.journal_store(__opts__, "evacuate", "evacuation")

    def fire(tag, message, **data):
        try:
            __salt__["event.send"]("vmops/" + tag, dict(data, message=message))
        except Exception:  # pylint: disable=broad-except
            log.debug("vmops: could not send %s", tag)

    return evacuate.Evacuation(prov, store, opts, events=fire)


def evacuate_node(node, reason=None, test=False, cloud=None, **options):
    """
    Drain compute host ``node``: disable its nova-compute with ``reason``, then
    move every server off it by what Nova allows for its state, each verified
    (host changed, migration record completed/confirmed, state as before).
    The same core as the runner ``vmops.evacuate_node`` (see its documentation
    for every option: ``concurrency``, ``retries``, ``on_timeout``,
    ``stall_seconds``, ``timeout``, ``force``, ``target``, ``zone``,
    ``suspended``, ``on_error``, ``locked``, ``stop_on_failure``), without the
    master-side check of the moved servers' minions.  ``test=True`` returns the
    plan and changes nothing.  The journal lives in this minion's cachedir.
    Raises when any server failed or was left behind (the report is in the
    error message's first line and in ``vmops/evacuate/<node>/done``).

    - ``cloud``: the ``vmops:clouds`` profile to act on (default: ``vmops:default_cloud``).

    CLI Example:

    .. code-block:: bash

        salt-call vmops.evacuate_node cmp1 reason='disk errors'
        salt-call vmops.evacuate_node cmp1 test=True
    """

    def _evacuate():
        evac = _evacuation(cloud, options)
        if str(test).lower() in ("true", "1", "yes"):
            return evac.plan(node)
        report = evac.run(node, reason)
        if not report["result"]:
            __context__["retcode"] = 1
        return report

    return saltglue.run_module(_evacuate)


def enable_node(node, force=False, migrate_back=False, cloud=None, **options):
    """
    Re-enable compute host ``node``, only when the pack disabled it (reason
    ``vmops-evacuate ...``) unless ``force=True``; ``migrate_back=True`` moves
    the servers its last evacuation (from this minion) moved off it back.

    - ``cloud``: the ``vmops:clouds`` profile to act on (default: ``vmops:default_cloud``).

    CLI Example:

    .. code-block:: bash

        salt-call vmops.enable_node cmp1
    """
    truthy = ("true", "1", "yes")
    return saltglue.run_module(
        lambda: _evacuation(cloud, options).enable(
            node,
            force=str(force).lower() in truthy,
            migrate_back=str(migrate_back).lower() in truthy,
        )
    )


def live_migrate(name, host=None, block_migration="auto", wait=True, timeout=600, cloud=None):
    """
    Live-migrate server ``name`` (to ``host``, or where the scheduler says) and
    wait until it runs on its new host.  A target host that does not exist, is
    disabled or down is refused before anything changes.

    - ``block_migration``: ``auto`` (default: Nova decides), True or False.
    - ``timeout``: seconds to wait before giving up (the cloud call itself is not undone).
    - ``cloud``: the ``vmops:clouds`` profile to act on (default: ``vmops:default_cloud``).

    - ``wait``: wait until the cloud finished (default True); False returns once it was asked.

    CLI Example:

    .. code-block:: bash

        salt-call vmops.live_migrate app2 host=cmp2
    """
    return _call(
        cloud,
        lambda prov: prov.live_migrate(
            name, host=host, block_migration=block_migration, wait=wait, timeout=int(timeout)
        ),
    )


def cold_migrate(name, host=None, confirm=True, timeout=600, cloud=None):
    """
    Cold-migrate server ``name`` and (by default) confirm the migration.

    - ``timeout``: seconds to wait before giving up (the cloud call itself is not undone).
    - ``cloud``: the ``vmops:clouds`` profile to act on (default: ``vmops:default_cloud``).

    - ``host``: the target host (default: the scheduler picks one).
    - ``confirm``: confirm the resize once the server is VERIFY_RESIZE (default True).

    CLI Example:

    .. code-block:: bash

        salt-call vmops.cold_migrate app2 host=cmp3
    """
    return _call(
        cloud,
        lambda prov: prov.cold_migrate(name, host=host, confirm=confirm, timeout=int(timeout)),
    )


def migrations(name, cloud=None):
    """
    The migrations of server ``name``, newest first.

    - ``cloud``: the ``vmops:clouds`` profile to act on (default: ``vmops:default_cloud``).

    CLI Example:

    .. code-block:: bash

        salt-call vmops.migrations app2
    """
    return _call(cloud, lambda prov: prov.migrations(name))


def migration_abort(name, migration_id=None, cloud=None):
    """
    Abort the live migration of server ``name`` that is in progress.

    - ``migration_id``: the in-progress migration (default: the server's only one).
    - ``cloud``: the ``vmops:clouds`` profile to act on (default: ``vmops:default_cloud``).

    CLI Example:

    .. code-block:: bash

        salt-call vmops.migration_abort app2
    """
    return _call(cloud, lambda prov: prov.migration_abort(name, migration_id))


def migration_force_complete(name, migration_id=None, cloud=None):
    """
    Force the live migration of server ``name`` that is in progress to complete.

    - ``migration_id``: the in-progress migration (default: the server's only one).
    - ``cloud``: the ``vmops:clouds`` profile to act on (default: ``vmops:default_cloud``).

    CLI Example:

    .. code-block:: bash

        salt-call vmops.migration_force_complete app2
    """
    return _call(cloud, lambda prov: prov.migration_force_complete(name, migration_id))


def reset_state(name, state="active", cloud=None):
    """
    Reset the state of a stuck server to ``active`` or ``error`` (``nova reset-state``).

    - ``name``: the server's name (or id).
    - ``cloud``: the ``vmops:clouds`` profile to act on (default: ``vmops:default_cloud``).

    - ``state``: ``active`` (default) or ``error``.

    CLI Example:

    .. code-block:: bash

        salt-call vmops.reset_state app2 state=active
    """
    return _call(cloud, lambda prov: prov.reset_state(name, state))


def volumes(name, cloud=None):
    """
    The volumes attached to server ``name``: volume id and name, device, size
    (GiB), type, status, bootable, root disk, multi-attach, encrypted.
    OpenStack: Cinder; EC2: EBS.

    - ``cloud``: the ``vmops:clouds`` profile to act on (default: ``vmops:default_cloud``).

    CLI Example:

    .. code-block:: bash

        salt-call vmops.volumes app2
    """
    return _call(cloud, lambda prov: prov.volumes(name))


def volume_show(volume, cloud=None):
    """
    Describe ``volume`` (name or id): size, type, status, bootable,
    multi-attach, encrypted, availability zone, and where it is attached.

    - ``cloud``: the ``vmops:clouds`` profile to act on (default: ``vmops:default_cloud``).

    CLI Example:

    .. code-block:: bash

        salt-call vmops.volume_show data-app2
    """
    return _call(cloud, lambda prov: prov.volume_show(volume))


def volume_create(
    name, size, volume_type=None, availability_zone=None, wait=True, timeout=300, cloud=None
):
    """
    Create an empty volume ``name`` of ``size`` GiB (``volume_type``,
    ``availability_zone`` optional; EC2 default: the profile's
    ``availability_zone``, else the region's first) and wait until it is
    ``available``.

    - ``timeout``: seconds to wait before giving up (the cloud call itself is not undone).
    - ``cloud``: the ``vmops:clouds`` profile to act on (default: ``vmops:default_cloud``).

    - ``wait``: wait until the cloud finished (default True); False returns once it was asked.

    CLI Example:

    .. code-block:: bash

        salt-call vmops.volume_create data-app2 size=50 volume_type=ssd
    """
    return _call(
        cloud,
        lambda prov: prov.volume_create(
            name,
            size,
            volume_type=volume_type,
            availability_zone=availability_zone,
            wait=wait,
            timeout=int(timeout),
        ),
    )


def volume_attach(name, volume, device=None, timeout=300, test=False, cloud=None):
    """
    Attach ``volume`` to server ``name`` (at ``device``, else where the cloud
    says) and wait until it is ``in-use`` there.  A volume attached elsewhere
    (and not multi-attach) is refused before any change, naming the server it
    is attached to; one already attached to ``name`` is a no-op.
    ``test=True`` says what would happen.

    - ``timeout``: seconds to wait before giving up (the cloud call itself is not undone).

    - ``cloud``: the ``vmops:clouds`` profile to act on (default: ``vmops:default_cloud``).

    CLI Example:

    .. code-block:: bash

        salt-call vmops.volume_attach app2 data-app2
        salt-call vmops.volume_attach app2 data-app2 device=/dev/vdc
    """
    return _call(
        cloud,
        lambda prov: prov.volume_attach(
            name, volume, device=device, timeout=int(timeout), test=test
        ),
    )


def volume_detach(name, volume, timeout=300, test=False, cloud=None):
    """
    Detach ``volume`` from server ``name`` and wait until it is ``available``
    (a no-op when it is not attached there).  One still ``detaching`` after
    ``timeout`` seconds is a clear error; a server's root disk is refused.

    - ``test``: True: say what would change, change nothing.
    - ``cloud``: the ``vmops:clouds`` profile to act on (default: ``vmops:default_cloud``).

    CLI Example:

    .. code-block:: bash

        salt-call vmops.volume_detach app2 data-app2
    """
    return _call(
        cloud, lambda prov: prov.volume_detach(name, volume, timeout=int(timeout), test=test)
    )


def volume_delete(volume, wait=True, timeout=300, cloud=None):
    """
    Delete ``volume`` (name or id); one still attached is refused (detach it
    first).

    - ``wait``: wait until the cloud finished (default True); False returns once it was asked.
    - ``timeout``: seconds to wait before giving up (the cloud call itself is not undone).
    - ``cloud``: the ``vmops:clouds`` profile to act on (default: ``vmops:default_cloud``).

    CLI Example:

    .. code-block:: bash

        salt-call vmops.volume_delete data-app2-old
    """
    return _call(cloud, lambda prov: prov.volume_delete(volume, wait=wait, timeout=int(timeout)))


def provision_orchestration(name):
    """
    For the pack's reactor (``reactor/minion_start.sls``), on the master: the
    orchestration that provisions the admitted minion ``name`` (its
    auto-provisioning rule's ``orchestration``, else
    ``vmops:reactor:provision_orchestration``), or an empty string: the runner
    ``vmops.provision_minion`` does it (no orchestration per minion: cheaper when
    a burst of minions starts at once).

    - ``name``: the minion id.

    CLI Example:

    .. code-block:: bash

        salt-call vmops.provision_orchestration web-7f3a
    """
    conf = saltglue.settings(_conf())
    try:
        return admission.provision_orchestration(conf, saltglue.registry(__opts__), name) or ""
    except Exception as exc:  # pylint: disable=broad-except
        log.error("vmops: the provisioning orchestration of %s: %s", name, exc)
        return ""


def reactor_gate(tag, data):
    """
    For the pack's reactor SLS files, on the master: should this event be acted
    on?  Cheap (no cloud call), so ``salt/auth``, which fires on every
    authentication attempt, cannot flood the master with decisions.
    ``salt/auth`` (``act: pend``): yes for a plain minion id that was not
    decided on in the last ``vmops:reactor:retry_interval`` seconds (ids with
    glob or matcher characters are audited and never handed on).
    ``salt/minion/<id>/start``: yes, once, for a minion the reactor admitted
    for provisioning.

    - ``tag``: the event's tag.
    - ``data``: the event's data.

    CLI Example:

    .. code-block:: bash

        salt-call vmops.reactor_gate salt/minion/app2/start '{"id": "app2"}'
    """
    conf = saltglue.settings(_conf())
    try:
        return admission.gate(
            conf, saltglue.registry(__opts__), tag, data or {}, saltglue.Events(__opts__)
        )
    except Exception as exc:  # pylint: disable=broad-except
        # a reactor render must not die on it; the event is simply not acted on
        log.error("vmops: reactor gate for %s failed: %s", tag, exc)
        return False
