"""OpenStack operator functions: Nova's compute services, hosts and migrations, Placement,
server groups (the evacuation primitives).  A mixin of ``openstack.OpenStackProvider``
(one cloud call per concept; errors are translated by the driver, see ``provider.py``).
"""

import logging

from . import waiting
from .errors import CloudError, InvalidInput, NotFound

try:
    import openstack
    import openstack.exceptions
except ImportError:  # pragma: no cover - reported by the loader modules' __virtual__
    openstack = None

log = logging.getLogger(__name__)


class ComputeOperations:
    """Needs ``self.conn`` (an openstacksdk Connection), ``self.name`` and the driver's
    server lookups (``find_server``, ``_get_server``)."""

    # ------------------------------------------------------------------ compute services

    def _service(self, host, binary="nova-compute"):
        found = list(self.conn.compute.services(binary=binary, host=host))
        if not found:
            hosts = sorted(s.host for s in self.conn.compute.services(binary=binary))
            raise NotFound(
                "no %s service on host %r on cloud %s (hosts: %s)"
                % (binary, host, self.name, ", ".join(hosts) or "none")
            )
        return found[0]

    @staticmethod
    def _service_dict(svc):
        return {
            "host": svc.host,
            "binary": svc.binary,
            "status": svc.status,
            "state": svc.state,
            "forced_down": bool(svc.is_forced_down),
            "disabled_reason": svc.disabled_reason,
            "zone": svc.availability_zone,
            "updated_at": svc.updated_at,
        }

    def service_show(self, host, binary="nova-compute"):
        """Status (enabled/disabled), state (up/down), forced_down, reason of a compute service."""
        return self._service_dict(self._service(host, binary))

    def service_list(self, binary="nova-compute"):
        return [self._service_dict(s) for s in self.conn.compute.services(binary=binary)]

    def service_disable(self, host, reason, binary="nova-compute"):
        """Disable a compute service, so the scheduler places nothing there."""
        if not reason:
            raise InvalidInput("say why the service is disabled (reason=...); nothing was changed")
        svc = self._service(host, binary)
        # one explicit PUT (microversion 2.53): openstacksdk's disable_service sends only the
        # fields that changed, so giving a disabled service a new reason would send no status
        # and Nova refuses it ("No updates were requested")
        resp = self.conn.compute.put(
            "/os-services/%s" % svc.id,
            microversion="2.53",
            json={"status": "disabled", "disabled_reason": reason},
        )
        try:
            openstack.exceptions.raise_from_response(resp)
        except openstack.exceptions.HttpException as exc:
            raise CloudError(
                "cloud %s refused to disable %s on %s: %s" % (self.name, binary, host, exc)
            ) from exc
        return self.service_show(host, binary)

    def service_enable(self, host, binary="nova-compute"):
        svc = self._service(host, binary)
        self.conn.compute.enable_service(svc, host=host, binary=binary)
        return self.service_show(host, binary)

    def service_force_down(self, host, forced=True, binary="nova-compute"):
        """Mark a dead host's compute service down now (needed before evacuating it)."""
        svc = self._service(host, binary)
        self.conn.compute.update_service_forced_down(svc, host=host, binary=binary, forced=forced)
        return self.service_show(host, binary)

    # ------------------------------------------------------------------ hosts

    def host_servers(self, host):
        """Every server on compute host ``host``, across all projects."""
        self._service(host)
        # openstacksdk filters by compute_host (an unknown ``host=`` filter matches nothing)
        return [
            {
                "id": s.id,
                "name": s.name,
                "status": s.status,
                "host": s.compute_host,
                "task_state": s.task_state,
                "project_id": s.project_id,
            }
            for s in self.conn.compute.servers(all_projects=True, compute_host=host)
        ]

    def host_capacity(self, host):
        """vCPU, RAM and disk of ``host``: total, reserved, allocation ratio, capacity, used,
        free."""
        self._service(host)
        providers = list(self.conn.placement.resource_providers(name=host))
        if not providers:
            raise NotFound("placement has no resource provider for host %r" % host)
        rp = providers[0]
        usages = self.conn.placement.get("/resource_providers/%s/usages" % rp.id).json()["usages"]
        out = {"host": host}
        for inv in self.conn.placement.resource_provider_inventories(rp):
            capacity = int((inv.total - inv.reserved) * inv.allocation_ratio)
            used = usages.get(inv.resource_class, 0)
            out[inv.resource_class] = {
                "total": inv.total,
                "reserved": inv.reserved,
                "allocation_ratio": inv.allocation_ratio,
                "capacity": capacity,
                "used": used,
                "free": capacity - used,
            }
        return out

    def check_target_host(self, host, source=None):
        """Refuse a migration target that does not exist, is disabled or down, or is the source."""
        svc = self.service_show(host)
        if svc["status"] != "enabled":
            raise InvalidInput(
                "target host %s is disabled (%s); nothing was changed"
                % (host, svc["disabled_reason"] or "no reason given")
            )
        if svc["state"] != "up" or svc["forced_down"]:
            raise InvalidInput("target host %s is down; nothing was changed" % host)
        if source is not None and host == source:
            raise InvalidInput("the server already runs on %s; nothing was changed" % host)

    # ------------------------------------------------------------------ migrations

    def _migration_dict(self, mig):
        return {
            "id": mig.id,
            "type": mig.migration_type,
            "status": mig.status,
            "source": mig.source_compute,
            "dest": mig.dest_compute,
            "created": mig.created_at,
            "updated": mig.updated_at,
        }

    def migrations(self, name_or_id):
        """A server's migrations, newest first."""
        server = self.find_server(name_or_id)
        migs = [
            self._migration_dict(m) for m in self.conn.compute.migrations(instance_uuid=server.id)
        ]
        return sorted(migs, key=lambda m: (m["created"] or "", m["id"]), reverse=True)

    def _wait_migrated(self, server_id, source, timeout, status="ACTIVE"):
        def settled():
            server = self._get_server(server_id)
            if server is None:
                raise NotFound("server %s disappeared while migrating" % server_id)
            if server.task_state is None and server.status in (status, "ERROR"):
                return server
            return None

        server = waiting.wait_for(settled, timeout, "the migration of %s" % server_id)
        desc = self.describe(server)
        if desc["status"] == "ERROR" or desc["host"] == source:
            last = (self.migrations(server_id) or [{}])[0]
            raise CloudError(
                "migration of %s from %s did not move it (status %s, migration %s %s)%s"
                % (
                    desc["name"],
                    source,
                    desc["status"],
                    last.get("id"),
                    last.get("status"),
                    ": %s" % desc["fault"] if desc.get("fault") else "",
                )
            )
        return desc

    def live_migrate(self, name_or_id, host=None, block_migration="auto", wait=True, timeout=600):
        """Live-migrate a server (to ``host``, or where the scheduler says) and wait."""
        server = self.find_server(name_or_id)
        if server.status != "ACTIVE":
            raise InvalidInput(
                "server %s is %s: only an ACTIVE server can be live-migrated; nothing was changed"
                % (server.name, server.status)
            )
        source = server.compute_host
        if host:
            self.check_target_host(host, source)
        try:
            self.conn.compute.live_migrate_server(
                server, host=host, block_migration=block_migration
            )
        except openstack.exceptions.HttpException as exc:
            raise CloudError(
                "cloud %s refused to live-migrate %s: %s" % (self.name, server.name, exc)
            ) from exc
        if not wait:
            return self.describe(server.id)
        return self._wait_migrated(server.id, source, timeout)

    def cold_migrate(self, name_or_id, host=None, confirm=True, timeout=600):
        """Cold-migrate a server, wait for VERIFY_RESIZE, and (by default) confirm it."""
        server = self.find_server(name_or_id)
        source = server.compute_host
        if host:
            self.check_target_host(host, source)
        try:
            self.conn.compute.migrate_server(server, host=host)
        except openstack.exceptions.HttpException as exc:
            raise CloudError(
                "cloud %s refused to migrate %s: %s" % (self.name, server.name, exc)
            ) from exc
        desc = self._wait_migrated(server.id, source, timeout, status="VERIFY_RESIZE")
        if confirm:
            self.conn.compute.confirm_server_resize(server.id)
            desc = self.wait_for_status(server.id, "ACTIVE", timeout)
        return desc

    def _in_progress(self, server, migration_id=None):
        migs = list(self.conn.compute.server_migrations(server))
        if migration_id is not None:
            migs = [m for m in migs if str(m.id) == str(migration_id)]
        if not migs:
            raise InvalidInput(
                "server %s has no migration in progress%s; nothing was changed"
                % (server.name, " with id %s" % migration_id if migration_id else "")
            )
        return migs[0]

    def migration_abort(self, name_or_id, migration_id=None):
        server = self.find_server(name_or_id)
        mig = self._in_progress(server, migration_id)
        self.conn.compute.abort_server_migration(mig, server)
        return {"server": server.name, "migration": mig.id, "aborted": True}

    def migration_force_complete(self, name_or_id, migration_id=None):
        server = self.find_server(name_or_id)
        mig = self._in_progress(server, migration_id)
        self.conn.compute.force_complete_server_migration(mig, server)
        return {"server": server.name, "migration": mig.id, "force_completed": True}

    def reset_state(self, name_or_id, state="active"):
        """Reset a stuck server's state (``active`` or ``error``), as ``nova reset-state``."""
        if state not in ("active", "error"):
            raise InvalidInput("state must be 'active' or 'error', not %r" % state)
        server = self.find_server(name_or_id)
        self.conn.compute.reset_server_state(server, state)
        return self.describe(server.id)

    # ------------------------------------------------------------------ evacuation primitives
    # One cloud call each; the flow that uses them is ``evacuate.py``.

    has_compute_hosts = True

    @staticmethod
    def _needs(server):
        """What a server takes from a host in Placement's terms, from its embedded flavor."""
        flavor = server.flavor
        get = (
            (lambda key: getattr(flavor, key, None) or 0) if flavor is not None else (lambda key: 0)
        )
        swap = get("swap")
        swap_gb = -(-int(swap) // 1024) if swap and str(swap).isdigit() else 0
        boot_from_volume = (
            not getattr(server.image, "id", None) if server.image is not None else True
        )
        disk = (0 if boot_from_volume else int(get("disk"))) + int(get("ephemeral")) + swap_gb
        return {"VCPU": int(get("vcpus")), "MEMORY_MB": int(get("ram")), "DISK_GB": disk}

    @staticmethod
    def _local_disk(server):
        """What of a server lives on its host's disks (lost when it is evacuated):
        its root (booted from an image), ephemeral and swap disks."""
        flavor = server.flavor
        out = []
        if server.image is not None and getattr(server.image, "id", None):
            out.append("root disk (from image)")
        if flavor is not None and (getattr(flavor, "ephemeral", 0) or 0):
            out.append("ephemeral disk")
        if flavor is not None and str(getattr(flavor, "swap", "") or "0") not in ("", "0"):
            out.append("swap")
        return out

    def _state_dict(self, server):
        return {
            "id": server.id,
            "name": server.name,
            "status": server.status,
            "task_state": server.task_state,
            "vm_state": server.vm_state,
            "host": server.compute_host,
            "project_id": server.project_id,
            "locked": bool(server.is_locked),
            "metadata": dict(server.metadata or {}),
            "needs": self._needs(server),
            "local_disk": self._local_disk(server),
            "updated": server.updated_at,
            "fault": (server.fault or {}).get("message")
            if isinstance(server.fault, dict)
            else None,
        }

    def host_server_states(self, host):
        """Every server on ``host`` (all projects), with state, lock, metadata and needs."""
        return [
            self._state_dict(s)
            for s in self.conn.compute.servers(all_projects=True, compute_host=host)
        ]

    def server_states(self, changes_since):
        """Servers changed since ``changes_since`` (ISO time; all projects, deleted ones too)."""
        return [
            self._state_dict(s)
            for s in self.conn.compute.servers(all_projects=True, changes_since=changes_since)
        ]

    def server_state(self, server_id):
        server = self._get_server(server_id)
        return self._state_dict(server) if server is not None else None

    def host_migrations(self, host, changes_since):
        """Migrations from or to ``host`` changed since ``changes_since``."""
        return [
            dict(self._migration_dict(m), server_id=m.server_id)
            for m in self.conn.compute.migrations(host=host, changes_since=changes_since)
        ]

    def migration_progress(self, server_id):
        """The in-progress live migrations of a server, with memory and disk remaining."""
        return [
            {
                "id": m.id,
                "status": m.status,
                "memory_total": m.memory_total_bytes,
                "memory_remaining": m.memory_remaining_bytes,
                "disk_total": m.disk_total_bytes,
                "disk_remaining": m.disk_remaining_bytes,
            }
            for m in self.conn.compute.server_migrations(server_id)
        ]

    def placement_free(self, hosts=None):
        """Free capacity of resource providers, by provider name (a compute's host name):
        those of ``hosts`` (short or fully qualified names), or all.

        free = (total - reserved) * allocation_ratio - used, with ``max_unit`` (the
        largest amount one server may take there).
        """
        out = {}
        for rp in self.conn.placement.resource_providers():
            if hosts is not None and rp.name not in hosts and rp.name.split(".")[0] not in hosts:
                continue
            usages = self.conn.placement.get("/resource_providers/%s/usages" % rp.id).json()[
                "usages"
            ]
            res = {}
            for inv in self.conn.placement.resource_provider_inventories(rp):
                capacity = int((inv.total - inv.reserved) * inv.allocation_ratio)
                res[inv.resource_class] = {
                    "free": capacity - usages.get(inv.resource_class, 0),
                    "capacity": capacity,
                    "max_unit": inv.max_unit,
                }
            out[rp.name] = res
        return out

    def anti_affinity_groups(self):
        """Server groups with a hard anti-affinity policy: ``[{id, name, members}]``."""
        out = []
        for group in self.conn.compute.server_groups(all_projects=True):
            policy = getattr(group, "policy", None) or ",".join(group.policies or [])
            if policy == "anti-affinity":
                out.append(
                    {"id": group.id, "name": group.name, "members": list(group.member_ids or [])}
                )
        return out

    def _action(self, what, server_id, call, *args, **kwargs):
        try:
            return call(*args, **kwargs)
        except openstack.exceptions.HttpException as exc:
            raise CloudError(
                "cloud %s refused to %s server %s: %s" % (self.name, what, server_id, exc)
            ) from exc

    def start_live_migration(self, server_id, host=None):
        """Ask Nova to live-migrate (block migration: ``auto``); does not wait."""
        self._action(
            "live-migrate",
            server_id,
            self.conn.compute.live_migrate_server,
            server_id,
            host=host,
            block_migration="auto",
        )

    def start_cold_migration(self, server_id, host=None):
        self._action("migrate", server_id, self.conn.compute.migrate_server, server_id, host=host)

    def confirm_migration(self, server_id):
        self._action(
            "confirm the migration of",
            server_id,
            self.conn.compute.confirm_server_resize,
            server_id,
        )

    def shelve_offload(self, server_id):
        self._action(
            "shelve-offload", server_id, self.conn.compute.shelve_offload_server, server_id
        )

    def resume(self, server_id):
        self._action("resume", server_id, self.conn.compute.resume_server, server_id)

    def evacuate(self, server_id, host=None):
        """Ask Nova to rebuild a server of a dead host elsewhere (the scheduler picks the host
        unless ``host``); does not wait.  Nova refuses unless the source service is down."""
        server = self._get_server(server_id)
        return self._action(
            "evacuate", server_id, self.conn.compute.evacuate_server, server, host=host
        )

    def power_on(self, server_id):
        return self._action("start", server_id, self.conn.compute.start_server, server_id)

    def power_off(self, server_id):
        self._action("stop", server_id, self.conn.compute.stop_server, server_id)

    def reset_server_state(self, server_id, state="active"):
        self._action(
            "reset the state of", server_id, self.conn.compute.reset_server_state, server_id, state
        )

    def migration_abort_id(self, server_id, migration_id):
        self._action(
            "abort the migration of",
            server_id,
            self.conn.compute.abort_server_migration,
            migration_id,
            server_id,
        )

    def migration_force_complete_id(self, server_id, migration_id):
        self._action(
            "force-complete the migration of",
            server_id,
            self.conn.compute.force_complete_server_migration,
            migration_id,
            server_id,
        )
