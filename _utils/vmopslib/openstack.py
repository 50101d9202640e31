"""OpenStack driver (openstacksdk): one cloud call per concept.

Servers, floating IPs and rebuild here; the operator functions (compute services, hosts,
migrations, Placement) are ``openstack_compute.py``, Cinder is ``openstack_volumes.py``.
"""

import logging
import re

from . import authcache, config
from .errors import CloudError, InvalidInput, NotFound, NotSupported
from .openstack_compute import ComputeOperations
from .openstack_volumes import VolumeOperations
from .provider import Provider, encode_user_data, scrub_user_data, shared_session, short_reason

try:
    import openstack
    import openstack.config
    import openstack.exceptions

    HAS_OPENSTACK = True
except ImportError:  # pragma: no cover - reported by the loader modules' __virtual__
    HAS_OPENSTACK = False

log = logging.getLogger(__name__)

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


API_TIMEOUT = 60  # seconds one cloud API request may take (profile key ``api_timeout``)


def connect(profile):
    """An openstacksdk Connection for a cloud profile.

    ``cloud``: a clouds.yaml entry (``client_config_file`` names the file, else
    openstacksdk's usual search: OS_CLIENT_CONFIG_FILE, ./clouds.yaml,
    ~/.config/openstack, /etc/openstack); or ``auth``: an auth block.
    ``api_timeout``: seconds one API request may take (default 60).
    ``token_cache``: a directory where the token and the version documents are kept
    between processes (:mod:`authcache`; Salt's adapters set ``<cachedir>/vmops/auth``).
    """
    if not HAS_OPENSTACK:
        raise NotSupported("openstacksdk is not installed")
    opts = {k: profile[k] for k in ("region_name", "interface") if profile.get(k)}
    # a cloud API that stalls must not stall the run (openstacksdk waits forever by default)
    opts["api_timeout"] = config.strict_int(
        profile.get("api_timeout", API_TIMEOUT), "api_timeout of cloud %s" % profile.get("name"), 1
    )
    try:
        if profile.get("auth"):
            conn = openstack.connect(
                auth=dict(profile["auth"]), auth_type=profile.get("auth_type", "password"), **opts
            )
        elif profile.get("client_config_file"):
            region = openstack.config.OpenStackConfig(
                config_files=[profile["client_config_file"]]
            ).get_one(cloud=profile.get("cloud", profile.get("name")), **opts)
            conn = openstack.connection.Connection(config=region)
        else:
            conn = openstack.connect(cloud=profile.get("cloud", profile.get("name")), **opts)
        # the token and version documents another process of this master got (authcache)
        return authcache.attach(conn, profile)
    except openstack.exceptions.SDKException as exc:
        # the sdk's messages name the cloud, never the password
        raise InvalidInput("cannot connect to cloud %r: %s" % (profile.get("name"), exc)) from exc


def _fault(server):
    fault = server.fault or {}
    if isinstance(fault, dict):
        return fault.get("message") or None
    return str(fault) or None


class OpenStackProvider(ComputeOperations, VolumeOperations, Provider):
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
                ),
                transient=exc.status_code in (500, 502, 503, 504),
            )
        if isinstance(exc, keystoneauth1.exceptions.ClientException):
            unavailable = (
                keystoneauth1.exceptions.ConnectionError,
                keystoneauth1.exceptions.RetriableConnectionFailure,
                keystoneauth1.exceptions.ServiceUnavailable,
                keystoneauth1.exceptions.BadGateway,
                keystoneauth1.exceptions.GatewayTimeout,
                keystoneauth1.exceptions.InternalServerError,
            )
            return CloudError(
                "cloud %s: %s failed: %s: %s"
                % (self.name, operation, type(exc).__name__, short_reason(exc)),
                transient=isinstance(exc, unavailable),
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
            self._conn = shared_session(self.profile, connect)
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

    def headroom(self):
        """From the compute limits (``GET /limits``: any project member may read them)."""
        limits = self.conn.compute.get_limits().absolute

        def free(most, used):
            return None if most is None or most < 0 else most - (used or 0)

        return {
            "instances": free(limits.instances, limits.instances_used),
            "cores": free(limits.total_cores, limits.total_cores_used),
            "ram_mb": free(limits.total_ram, limits.total_ram_used),
        }

    def flavor_size(self, flavor):
        found = self.conn.compute.find_flavor(flavor)
        if found is None:
            raise NotFound("no flavor %s on cloud %s" % (flavor, self.name))
        return {"vcpus": found.vcpus, "ram_mb": found.ram}

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

    def floating_ip_allocate(self, network=None):
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

    def floating_ip_release(self, address, force=False):
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
