"""OpenStack driver (openstacksdk): one cloud call per concept."""

import logging
import re

from . import waiting
from .errors import Ambiguous, CloudError, InvalidInput, NotFound, NotSupported
from .provider import Provider, encode_user_data, scrub_user_data, short_reason

try:
    import openstack
    import openstack.config
    import openstack.exceptions

    HAS_OPENSTACK = True
except ImportError:  # pragma: no cover - reported by the loader modules' __virtual__
    HAS_OPENSTACK = False

log = logging.getLogger(__name__)

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def connect(profile):
    """An openstacksdk Connection for a cloud profile.

    ``cloud``: a clouds.yaml entry (``client_config_file`` names the file, else
    openstacksdk's usual search: OS_CLIENT_CONFIG_FILE, ./clouds.yaml,
    ~/.config/openstack, /etc/openstack); or ``auth``: an auth block.
    """
    if not HAS_OPENSTACK:
        raise NotSupported("openstacksdk is not installed")
    opts = {k: profile[k] for k in ("region_name", "interface") if profile.get(k)}
    try:
        if profile.get("auth"):
            return openstack.connect(
                auth=dict(profile["auth"]), auth_type=profile.get("auth_type", "password"), **opts
            )
        cloud = profile.get("cloud", profile.get("name"))
        if profile.get("client_config_file"):
            region = openstack.config.OpenStackConfig(
                config_files=[profile["client_config_file"]]
            ).get_one(cloud=cloud, **opts)
            return openstack.connection.Connection(config=region)
        return openstack.connect(cloud=cloud, **opts)
    except openstack.exceptions.SDKException as exc:
        # the sdk's messages name the cloud, never the password
        raise InvalidInput("cannot connect to cloud %r: %s" % (profile.get("name"), exc)) from exc


def _fault(server):
    fault = server.fault or {}
    if isinstance(fault, dict):
        return fault.get("message") or None
    return str(fault) or None


class OpenStackProvider(Provider):
    driver = "openstack"
    USER_DATA_MAX_ENCODED = 65535  # Nova's limit, on the base64 text

    def translate_error(self, exc, operation):
        """openstacksdk / keystoneauth exceptions as the pack's errors (see Provider)."""
        if not HAS_OPENSTACK:
            return None
        import keystoneauth1.exceptions  # pylint: disable=import-outside-toplevel

        if isinstance(exc, openstack.exceptions.NotFoundException):
            return NotFound(
                "cloud %s: %s: not found (%s)"
                % (self.name, operation, short_reason(exc.details or exc))
            )
        if isinstance(exc, openstack.exceptions.HttpException):
            return CloudError(
                "cloud %s: %s failed: HTTP %s %s"
                % (
                    self.name,
                    operation,
                    exc.status_code,
                    short_reason(exc.details or exc.message or exc),
                )
            )
        if isinstance(exc, keystoneauth1.exceptions.ClientException):
            return CloudError(
                "cloud %s: %s failed: %s: %s"
                % (self.name, operation, type(exc).__name__, short_reason(exc))
            )
        if isinstance(exc, openstack.exceptions.SDKException):
            return CloudError("cloud %s: %s failed: %s" % (self.name, operation, short_reason(exc)))
        return None

    def __init__(self, profile, conn=None):
        super().__init__(profile)
        self._conn = conn
        self.all_projects = bool(profile.get("all_projects", False))

    @property
    def conn(self):
        if self._conn is None:
            self._conn = connect(self.profile)
        return self._conn

    # ------------------------------------------------------------------ servers

    def _looks_like_id(self, value):
        return bool(_UUID.match(value))

    def _get_server(self, server_id):
        try:
            return self.conn.compute.get_server(server_id)
        except openstack.exceptions.NotFoundException:
            return None

    def _servers_named(self, name):
        query = {"name": "^%s$" % re.escape(name)}
        if self.all_projects:
            query["all_projects"] = True
        return [s for s in self.conn.compute.servers(**query) if s.name == name]

    def _status(self, server):
        return server.status, _fault(server)

    def _describe(self, server):
        networks, fixed, floating = {}, [], []
        for net, addrs in (server.addresses or {}).items():
            for addr in addrs:
                if addr.get("OS-EXT-IPS:type") == "floating":
                    floating.append(addr["addr"])
                else:
                    networks.setdefault(net, []).append(addr["addr"])
                    fixed.append(addr["addr"])
        flavor = server.flavor
        flavor_name = None
        if flavor is not None:
            flavor_name = (
                getattr(flavor, "original_name", None) or getattr(flavor, "name", None) or flavor.id
            )
        image = server.image
        return {
            "id": server.id,
            "name": server.name,
            "status": server.status,
            "host": server.compute_host,
            "flavor": flavor_name,
            "image": getattr(image, "id", None) if image else None,
            "key_name": server.key_name,
            "security_groups": sorted({g["name"] for g in server.security_groups or []}),
            "networks": networks,
            "fixed_ips": fixed,
            "floating_ips": floating,
            "volumes": [v["id"] for v in server.attached_volumes or []],
            "metadata": dict(server.metadata or {}),
            "availability_zone": server.availability_zone,
            "created": server.created_at,
            "fault": _fault(server),
            "task_state": server.task_state,
            "project_id": server.project_id,
        }

    def describe(self, server):
        desc = super().describe(server)
        # Neutron is the authority on floating IPs (Nova's view lags by a second or two)
        desc["floating_ips"] = sorted(
            ip.floating_ip_address for ip in self._server_fips(desc["id"])
        )
        return desc

    def _server_fips(self, server_id):
        fips = []
        for port in self.conn.network.ports(device_id=server_id):
            fips.extend(self.conn.network.ips(port_id=port.id))
        return fips

    def _check_spec(self, spec):
        """Resolve names to ids, refusing what the cloud does not have."""
        conn = self.conn
        image = conn.image.find_image(spec["image"])
        if image is None:
            raise NotFound("image %r does not exist on cloud %s" % (spec["image"], self.name))
        spec["_image_id"] = image.id
        flavor = conn.compute.find_flavor(spec["flavor"])
        if flavor is None:
            raise NotFound("flavor %r does not exist on cloud %s" % (spec["flavor"], self.name))
        spec["_flavor_id"] = flavor.id
        nets = []
        for net in spec.get("networks") or []:
            found = conn.network.find_network(net)
            if found is None:
                raise NotFound("network %r does not exist on cloud %s" % (net, self.name))
            nets.append({"uuid": found.id})
        spec["_networks"] = nets or "auto"
        if spec.get("key_name") and conn.compute.find_keypair(spec["key_name"]) is None:
            raise NotFound("key pair %r does not exist on cloud %s" % (spec["key_name"], self.name))
        for group in spec.get("security_groups") or []:
            if conn.network.find_security_group(group, project_id=conn.current_project_id) is None:
                raise NotFound("security group %r does not exist on cloud %s" % (group, self.name))

    def _create_server(self, spec):
        kwargs = {
            "name": spec["name"],
            "image_id": spec["_image_id"],
            "flavor_id": spec["_flavor_id"],
            "networks": spec["_networks"],
        }
        if spec.get("key_name"):
            kwargs["key_name"] = spec["key_name"]
        if spec.get("security_groups"):
            kwargs["security_groups"] = [{"name": g} for g in spec["security_groups"]]
        if spec.get("metadata"):
            kwargs["metadata"] = {str(k): str(v) for k, v in spec["metadata"].items()}
        if spec.get("availability_zone"):
            kwargs["availability_zone"] = spec["availability_zone"]
        if spec.get("user_data"):
            kwargs["user_data"] = encode_user_data(spec["user_data"])
        if spec.get("volumes"):
            # the image as the root disk, then each extra volume, created empty by Nova
            kwargs["block_device_mapping"] = [
                {
                    "boot_index": 0,
                    "uuid": spec["_image_id"],
                    "source_type": "image",
                    "destination_type": "local",
                    "delete_on_termination": True,
                }
            ] + [
                dict(
                    {
                        "boot_index": -1,
                        "source_type": "blank",
                        "destination_type": "volume",
                        "volume_size": vol["size"],
                        "delete_on_termination": vol["delete_on_termination"],
                    },
                    **({"device_name": vol["device"]} if vol.get("device") else {}),
                    **({"volume_type": vol["type"]} if vol.get("type") else {}),
                )
                for vol in spec["volumes"]
            ]
        try:
            return self.conn.compute.create_server(**kwargs).id
        except openstack.exceptions.HttpException as exc:
            raise CloudError(
                "cloud %s refused to boot %s: %s" % (self.name, spec["name"], exc)
            ) from exc

    def _delete_server(self, server_id):
        self.conn.compute.delete_server(server_id, ignore_missing=True)

    def _stop_server(self, server_id):
        self.conn.compute.stop_server(server_id)

    def _rename_server(self, server_id, new_name):
        self.conn.compute.update_server(server_id, name=new_name)

    def foreign_project(self, server):
        """A server of another project never vouches for a minion key (with ``all_projects``,
        a tenant could otherwise name a server after a minion id): only the profile's own
        project, or those listed in ``vouch_projects``."""
        allowed = self.profile.get("vouch_projects") or [self.conn.current_project_id]
        if server.get("project_id") and server["project_id"] not in allowed:
            return (
                "server %s (%s) belongs to project %s, not to one this master trusts for "
                "minion keys (%s)"
                % (server["name"], server["id"], server["project_id"], ", ".join(allowed))
            )
        return None

    def console_output(self, name_or_id):
        server = self.find_server(name_or_id)
        return self.conn.compute.get_server_console_output(server).get("output") or ""

    # ------------------------------------------------------------------ floating IPs

    def find_fip(self, address):
        found = list(self.conn.network.ips(floating_ip_address=address))
        if not found:
            raise NotFound(
                "floating IP %s is not allocated on cloud %s (or not visible to this project)"
                % (address, self.name)
            )
        return found[0]

    def _target_port(self, server_id, fip, fixed_ip=None):
        """The port (and fixed IP) of the server that the floating IP should point at."""
        ports = list(self.conn.network.ports(device_id=server_id))
        candidates = []
        for port in ports:
            for ip in port.fixed_ips or []:
                if ":" not in ip["ip_address"]:  # floating IPs are IPv4
                    candidates.append((port, ip["ip_address"], ip["subnet_id"]))
        if fixed_ip is not None:
            for port, addr, _ in candidates:
                if addr == fixed_ip or port.id == fixed_ip:
                    return port, addr
            raise InvalidInput(
                "server %s has no port with fixed IP (or port id) %s; nothing was changed"
                % (server_id, fixed_ip)
            )
        if not candidates:
            raise InvalidInput("server %s has no IPv4 port to point a floating IP at" % server_id)
        if len(candidates) > 1:
            routed = self._subnets_routed_to(fip.floating_network_id)
            candidates = [c for c in candidates if c[2] in routed] or candidates
        if len({(c[0].id, c[1]) for c in candidates}) > 1:
            raise InvalidInput(
                "server %s has several fixed IPs (%s): say which one with fixed_ip; nothing "
                "was changed" % (server_id, ", ".join(c[1] for c in candidates))
            )
        return candidates[0][0], candidates[0][1]

    def _subnets_routed_to(self, external_network_id):
        subnets = set()
        for router in self.conn.network.routers():
            gateway = router.external_gateway_info or {}
            if gateway.get("network_id") != external_network_id:
                continue
            for port in self.conn.network.ports(
                device_id=router.id, device_owner="network:router_interface"
            ):
                subnets.update(ip["subnet_id"] for ip in port.fixed_ips or [])
        return subnets

    def _port_server(self, port_id):
        if not port_id:
            return None
        port = self.conn.network.find_port(port_id)
        return port.device_id if port is not None else None

    def _ip_find(self, address):
        fip = self.find_fip(address)
        return {
            "address": address,
            "port_id": fip.port_id,
            "fixed_ip": fip.fixed_ip_address,
            "server_id": self._port_server(fip.port_id),
            "native": fip,
        }

    def _ip_target(self, ip, server, fixed_ip=None):
        fip, target = ip["native"], self.find_server(server)
        if fip.project_id and target.project_id and fip.project_id != target.project_id:
            raise InvalidInput(
                "floating IP %s belongs to project %s but server %s to project %s; "
                "nothing was changed"
                % (ip["address"], fip.project_id, target.name, target.project_id)
            )
        port, fixed = self._target_port(target.id, fip, fixed_ip)
        return {
            "server_id": target.id,
            "name": target.name,
            "port_id": port.id,
            "fixed_ip": fixed,
            "native": port,
        }

    def _ip_associate(self, ip, target):
        self.conn.network.update_ip(
            ip["native"], port_id=target["port_id"], fixed_ip_address=target["fixed_ip"]
        )

    def allocate_ip(self, network=None):
        """Allocate a floating IP from ``network`` (default: the only external network)."""
        if network:
            net = self.conn.network.find_network(network)
            if net is None or not net.is_router_external:
                raise InvalidInput(
                    "%r is not an external network on cloud %s" % (network, self.name)
                )
        else:
            nets = list(self.conn.network.networks(is_router_external=True))
            if len(nets) != 1:
                raise InvalidInput(
                    "cloud %s has %d external networks (%s): say which one with network="
                    % (self.name, len(nets), ", ".join(n.name for n in nets))
                )
            net = nets[0]
        fip = self.conn.network.create_ip(floating_network_id=net.id)
        return {"address": fip.floating_ip_address, "id": fip.id, "network": net.name}

    def release_ip(self, address, force=False):
        """Release floating IP ``address``; one still pointing at a server needs ``force``."""
        fip = self.find_fip(address)
        if fip.port_id and not force:
            raise InvalidInput(
                "floating IP %s still points at port %s: release it with force=True, or move "
                "it first; nothing was changed" % (address, fip.port_id)
            )
        self.conn.network.delete_ip(fip)
        return {"address": address, "released": True}

    # ------------------------------------------------------------------ rebuild

    def rebuild(self, name_or_id, image=None, user_data=None, timeout=600):
        """Rebuild a server in place (same id, ports and IPs) from ``image`` with new user-data."""
        server = self.find_server(name_or_id)
        image_id = server.image.id if image is None else None
        if image is not None:
            found = self.conn.image.find_image(image)
            if found is None:
                raise NotFound("image %r does not exist on cloud %s" % (image, self.name))
            image_id = found.id
        kwargs = {}
        if user_data is not None:
            self.check_user_data(user_data)
            kwargs["user_data"] = encode_user_data(user_data)
        try:
            self.conn.compute.rebuild_server(server, image_id, **kwargs)
        except openstack.exceptions.HttpException as exc:
            raise scrub_user_data(
                CloudError("cloud %s refused to rebuild %s: %s" % (self.name, server.name, exc)),
                user_data,
            ) from None
        return self.wait_for_status(server.id, "ACTIVE", timeout)

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

    def services(self, binary="nova-compute"):
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

    def abort_migration(self, name_or_id, migration_id=None):
        server = self.find_server(name_or_id)
        mig = self._in_progress(server, migration_id)
        self.conn.compute.abort_server_migration(mig, server)
        return {"server": server.name, "migration": mig.id, "aborted": True}

    def force_complete_migration(self, name_or_id, migration_id=None):
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

    # ------------------------------------------------------------------ volumes (Cinder)

    def _volume_service(self):
        if not any(self.conn.has_service(t) for t in ("block-storage", "volumev3", "volume")):
            raise NotSupported(
                "cloud %s has no volume service (no block-storage endpoint in its catalog): "
                "volumes cannot be listed, attached or detached there" % self.name
            )

    @staticmethod
    def _volume_dict(vol):
        return {
            "id": vol.id,
            "name": vol.name,
            "size": vol.size,
            "type": vol.volume_type,
            "status": vol.status,
            "bootable": bool(vol.is_bootable),
            "multiattach": bool(vol.is_multiattach),
            "encrypted": bool(vol.is_encrypted),
            "availability_zone": vol.availability_zone,
            "attachments": [
                {"server_id": a.get("server_id"), "device": a.get("device")}
                for a in vol.attachments or []
            ],
        }

    def _volume_find(self, name_or_id):
        self._volume_service()
        if _UUID.match(name_or_id):
            found = self._volume_get(name_or_id)
            if found is not None:
                return found
        vols = [
            v
            for v in self.conn.block_storage.volumes(
                all_projects=self.all_projects, name=name_or_id
            )
            if v.name == name_or_id
        ]
        if len(vols) > 1:
            raise Ambiguous(
                "%d volumes are named %r on cloud %s (%s): give the id"
                % (len(vols), name_or_id, self.name, ", ".join(v.id for v in vols))
            )
        return self._volume_dict(vols[0]) if vols else None

    def _volume_get(self, volume_id):
        try:
            return self._volume_dict(self.conn.block_storage.get_volume(volume_id))
        except openstack.exceptions.NotFoundException:
            return None

    def _server_volumes(self, server_id):
        self._volume_service()
        server = self._get_server(server_id)
        root = server.root_device_name if server is not None else None
        out = []
        for att in self.conn.compute.volume_attachments(server_id):
            vol = self._volume_get(att.volume_id)
            if vol is not None:
                vol["root"] = bool(root) and att.device == root
                out.append(vol)
        return out

    def _volume_create(self, name, size, volume_type=None, availability_zone=None):
        self._volume_service()
        kwargs = {"name": name, "size": size}
        if volume_type:
            kwargs["volume_type"] = volume_type
        if availability_zone:
            kwargs["availability_zone"] = availability_zone
        try:
            return self.conn.block_storage.create_volume(**kwargs).id
        except openstack.exceptions.HttpException as exc:
            raise CloudError(
                "cloud %s refused to create volume %s: %s" % (self.name, name, exc)
            ) from exc

    def _volume_attach(self, server_id, volume_id, device=None):
        kwargs = {"device": device} if device else {}
        try:
            self.conn.compute.create_volume_attachment(server_id, volume=volume_id, **kwargs)
        except openstack.exceptions.HttpException as exc:
            raise CloudError(
                "cloud %s refused to attach volume %s to %s: %s"
                % (self.name, volume_id, server_id, exc)
            ) from exc

    def _volume_detach(self, server_id, volume_id):
        try:
            self.conn.compute.delete_volume_attachment(server_id, volume_id, ignore_missing=False)
        except openstack.exceptions.HttpException as exc:
            raise CloudError(
                "cloud %s refused to detach volume %s from %s: %s"
                % (self.name, volume_id, server_id, exc)
            ) from exc

    def _volume_delete(self, volume_id):
        try:
            self.conn.block_storage.delete_volume(volume_id, ignore_missing=True)
        except openstack.exceptions.HttpException as exc:
            raise CloudError(
                "cloud %s refused to delete volume %s: %s" % (self.name, volume_id, exc)
            ) from exc

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
            "updated": server.updated_at,
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

    def power_off(self, server_id):
        self._action("stop", server_id, self.conn.compute.stop_server, server_id)

    def reset_server_state(self, server_id, state="active"):
        self._action(
            "reset the state of", server_id, self.conn.compute.reset_server_state, server_id, state
        )

    def abort_migration_id(self, server_id, migration_id):
        self._action(
            "abort the migration of",
            server_id,
            self.conn.compute.abort_server_migration,
            migration_id,
            server_id,
        )

    def force_complete_migration_id(self, server_id, migration_id):
        self._action(
            "force-complete the migration of",
            server_id,
            self.conn.compute.force_complete_server_migration,
            migration_id,
            server_id,
        )
