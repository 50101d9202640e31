"""The provider interface: what the pack asks of a cloud, and the logic shared by every cloud.

A driver (``openstack.OpenStackProvider``, ``ec2.EC2Provider``) implements the
small ``_``-prefixed primitives, one cloud call each; everything built from
them (waiting for a state, refusing bad input, verifying a floating IP moved)
lives here once.

Servers are described as plain dicts (JSON-serialisable, never holding
user-data or credentials)::

    {"id", "name", "status", "host", "flavor", "image", "key_name",
     "security_groups", "networks", "fixed_ips", "floating_ips", "volumes",
     "metadata", "created", "fault", "cloud", "driver"}

``status`` uses Nova's words on every cloud: BUILD, ACTIVE, SHUTOFF, ERROR,
DELETED (EC2 states are mapped).
"""

import base64
import logging

from . import waiting
from .config import check_minion_id
from .errors import Ambiguous, CloudError, InvalidInput, NotFound, NotSupported

log = logging.getLogger(__name__)

SPEC_KEYS = (
    "name", "image", "flavor", "key_name", "security_groups", "networks",
    "metadata", "availability_zone", "user_data",
)


def get_provider(profile):
    """The driver for a cloud profile (see ``config.cloud``)."""
    driver = profile["driver"]
    if driver == "openstack":
        from .openstack import OpenStackProvider  # pylint: disable=import-outside-toplevel

        return OpenStackProvider(profile)
    if driver == "ec2":
        from .ec2 import EC2Provider  # pylint: disable=import-outside-toplevel

        return EC2Provider(profile)
    raise InvalidInput("unknown driver %r" % driver)


class Provider:
    """Base class of the cloud drivers."""

    driver = None
    #: compute hosts the pack can drain (OpenStack); EC2 has none
    has_compute_hosts = False

    def __init__(self, profile):
        self.profile = profile
        self.name = profile.get("name")

    # ------------------------------------------------------------------ primitives
    # Each is one cloud concept; drivers implement them.

    def _servers_named(self, name):
        """Native server objects whose name is exactly ``name`` (not deleted)."""
        raise NotImplementedError

    def _get_server(self, server_id):
        """The native server with this id, or None."""
        raise NotImplementedError

    def _looks_like_id(self, value):
        raise NotImplementedError

    def _describe(self, server):
        """A native server as the plain dict described in the module docstring."""
        raise NotImplementedError

    def _status(self, server):
        """(status, fault message or None) of a native server, in Nova's words."""
        raise NotImplementedError

    def _create_server(self, spec):
        """Ask the cloud for a server; return its id without waiting."""
        raise NotImplementedError

    def _delete_server(self, server_id):
        raise NotImplementedError

    def _check_spec(self, spec):
        """Raise InvalidInput/NotFound for an image, flavor, network... the cloud lacks."""

    def _stop_server(self, server_id):
        raise NotImplementedError

    def _rename_server(self, server_id, new_name):
        raise NotImplementedError

    def stop(self, name_or_id, timeout=300):
        """Power a server off and wait until it is SHUTOFF."""
        desc = self.describe(self.find_server(name_or_id))
        if desc["status"] == "SHUTOFF":
            return desc
        self._stop_server(desc["id"])
        return self.wait_for_status(desc["id"], "SHUTOFF", timeout)

    def rename(self, name_or_id, new_name):
        desc = self.describe(self.find_server(name_or_id))
        self._rename_server(desc["id"], new_name)
        desc["name"] = new_name
        return desc

    def console_output(self, name_or_id):
        raise NotSupported("%s: console output is not supported" % self.driver)

    def flip_ip(self, address, server, fixed_ip=None, test=False):
        raise NotSupported("%s: floating IPs are not supported" % self.driver)

    # ------------------------------------------------------------------ shared logic

    def find_server(self, name_or_id):
        """The one server called ``name_or_id`` (or with that id).

        Two servers with the same name (e.g. during a replacement) are an
        :class:`Ambiguous` error listing their ids.
        """
        if not name_or_id or not isinstance(name_or_id, str):
            raise InvalidInput("a server name or id is required")
        if self._looks_like_id(name_or_id):
            server = self._get_server(name_or_id)
            if server is not None:
                return server
        found = self._servers_named(name_or_id)
        if not found:
            raise NotFound("no server named %r on cloud %s" % (name_or_id, self.name))
        if len(found) > 1:
            ids = sorted(self._describe(s)["id"] for s in found)
            raise Ambiguous(
                "%d servers are named %r on cloud %s (%s): give the id of the one you mean"
                % (len(found), name_or_id, self.name, ", ".join(ids))
            )
        return found[0]

    def servers_named(self, name):
        """Descriptions of every server called ``name`` (none, one, or several)."""
        return [self.describe(s) for s in self._servers_named(name)]

    def describe(self, server):
        """Describe a server given by name, id, or native object."""
        if isinstance(server, str):
            server = self.find_server(server)
        desc = self._describe(server)
        desc["cloud"] = self.name
        desc["driver"] = self.driver
        return desc

    def boot(self, spec, wait=True, timeout=600):
        """Boot a server from ``spec`` and (by default) wait until it is ACTIVE.

        ``spec`` holds SPEC_KEYS; ``user_data`` is text (encoded here).
        A server that goes to ERROR raises :class:`CloudError` with the cloud's
        fault message; the server is left for inspection.
        """
        spec = {k: v for k, v in spec.items() if k in SPEC_KEYS and v not in (None, "", [], {})}
        for key in ("name", "image", "flavor"):
            if not spec.get(key):
                raise InvalidInput("cannot boot a server without %s; nothing was changed" % key)
        check_minion_id(spec["name"], "server name")
        self._check_spec(spec)
        if spec.get("user_data") is not None and not isinstance(spec["user_data"], bytes):
            spec["user_data"] = spec["user_data"].encode()
        server_id = self._create_server(spec)
        log.info("vmops: %s asked to boot %s (%s)", self.name, spec["name"], server_id)
        if not wait:
            return self.describe(self._get_server(server_id))
        return self.wait_for_status(server_id, "ACTIVE", timeout)

    def wait_for_status(self, server_id, status, timeout=600):
        """Wait until the server reaches ``status``; ERROR raises with the fault."""

        def probe():
            server = self._get_server(server_id)
            if server is None:
                if status == "DELETED":
                    return {"id": server_id, "status": "DELETED"}
                raise NotFound("server %s disappeared while waiting for %s" % (server_id, status))
            current, fault = self._status(server)
            if current == status:
                return self.describe(server)
            if current == "ERROR" and status != "ERROR":
                raise CloudError(
                    "server %s went to ERROR: %s" % (server_id, fault or "no fault message")
                )
            return None

        return waiting.wait_for(probe, timeout, "server %s to be %s" % (server_id, status))

    def delete(self, name_or_id, wait=True, timeout=300):
        """Delete a server and (by default) wait until it is gone."""
        desc = self.describe(self.find_server(name_or_id))
        self._delete_server(desc["id"])
        log.info("vmops: %s asked to delete %s (%s)", self.name, desc["name"], desc["id"])
        if wait:
            self.wait_for_status(desc["id"], "DELETED", timeout)
        desc["status"] = "DELETED" if wait else "DELETING"
        return desc


# Operations only some clouds have (compute services, migrations... are OpenStack's).
# A driver without one answers with a clear NotSupported rather than an AttributeError.
OPTIONAL_OPERATIONS = (
    "allocate_ip", "release_ip", "rebuild", "service_show", "services", "service_disable",
    "service_enable", "service_force_down", "host_servers", "host_capacity", "migrations",
    "live_migrate", "cold_migrate", "abort_migration", "force_complete_migration",
    "reset_state", "volumes", "attach_volume", "detach_volume",
    # evacuation primitives (evacuate.py)
    "host_server_states", "server_states", "server_state", "host_migrations",
    "migration_progress", "placement_free", "anti_affinity_groups", "start_live_migration",
    "start_cold_migration", "confirm_migration", "shelve_offload", "resume", "power_off",
    "reset_server_state", "abort_migration_id", "force_complete_migration_id",
)


def _not_supported(operation):
    def method(self, *args, **kwargs):  # pylint: disable=unused-argument
        raise NotSupported(
            "cloud %s (%s driver) does not support %s" % (self.name, self.driver, operation)
        )

    method.__name__ = operation
    return method


for _operation in OPTIONAL_OPERATIONS:
    setattr(Provider, _operation, _not_supported(_operation))


def encode_user_data(user_data):
    """User-data as the base64 text the compute APIs take."""
    if isinstance(user_data, str):
        user_data = user_data.encode()
    return base64.b64encode(user_data).decode()
