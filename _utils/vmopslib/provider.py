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

import abc
import base64
import functools
import logging
import re
import threading
import time

from . import waiting
from .config import check_minion_id
from .errors import Ambiguous, CloudError, InvalidInput, NotFound, NotSupported, Timeout, VmopsError

log = logging.getLogger(__name__)

SPEC_KEYS = (
    "name",
    "image",
    "flavor",
    "key_name",
    "security_groups",
    "networks",
    "metadata",
    "availability_zone",
    "user_data",
    "volumes",
    # what one driver captures beyond the common keys (EC2: root volume, IAM instance
    # profile, IPv6, termination protection), given back to the same driver at boot
    "extras",
)


_CALLS = threading.local()  # how deep in driver methods this thread is

#: Driver methods that read, or set a state to a value (the same call twice gives the same
#: result): retried on a transient cloud error (see ``Provider.retry_policy``).  Creating,
#: deleting, attaching, migrating, evacuating are not: a boot the cloud may have done is
#: adopted by the flow that asked for it (its journal), never asked for twice blindly.
IDEMPOTENT = frozenset(
    (
        "_get_server",
        "_servers_named",
        "_describe",
        "describe",
        "find_server",
        "servers_named",
        "volumes",
        "volume_show",
        "_status",
        "_check_spec",
        "_server_fips",
        "console_output",
        "find_fip",
        "_ip_find",
        "_ip_target",
        "_volume_find",
        "_volume_get",
        "_server_volumes",
        "foreign_project",
        "service_show",
        "service_list",
        "service_disable",
        "service_enable",
        "service_force_down",
        "host_servers",
        "host_capacity",
        "host_server_states",
        "server_states",
        "server_state",
        "host_migrations",
        "migration_progress",
        "migrations",
        "placement_free",
        "anti_affinity_groups",
        "headroom",
        "flavor_size",
    )
)


def _translating(fn):
    """Run a driver method; a cloud library's exception leaves the driver as the pack's error.

    Translated at the boundary only: inside the driver (a method calling a helper) the
    cloud library's own exceptions still flow, so driver code that catches them (a volume
    that is gone -> None) keeps working.
    """

    idempotent = fn.__name__ in IDEMPOTENT

    def once(self, args, kwargs, depth):
        _CALLS.depth = depth + 1
        try:
            return fn(self, *args, **kwargs)
        except VmopsError:
            raise
        except Exception as exc:  # pylint: disable=broad-except
            if depth:
                raise  # an inner call: the driver method that called it may handle it
            err = self.translate_error(exc, fn.__name__.lstrip("_"))
            if err is None:
                raise  # not the cloud's: a bug, shown as one
            raise err from None
        finally:
            _CALLS.depth = depth

    @functools.wraps(fn)
    def method(self, *args, **kwargs):
        depth = getattr(_CALLS, "depth", 0)
        if depth or not idempotent:
            return once(self, args, kwargs, depth)
        attempts, delay = self.retry_policy()
        for attempt in range(1, attempts + 1):
            try:
                return once(self, args, kwargs, depth)
            except CloudError as err:
                if not err.transient or attempt == attempts:
                    raise
                log.warning(
                    "vmops: %s (attempt %d of %d); again in %.1fs", err, attempt, attempts, delay
                )
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        raise AssertionError("unreachable")  # pragma: no cover

    method.translating = True
    return method


_URL_SECRETS = re.compile(
    r"(https?://)[^/@\s]+@|([?&](?:X-Amz-[A-Za-z-]+|Signature|token|"
    r"AWSAccessKeyId|password)=)[^&\s]+",
    re.IGNORECASE,
)


def short_reason(text, limit=300):
    """A cloud error's words, short and without credentials in URLs."""
    text = " ".join(str(text).split())
    text = _URL_SECRETS.sub(lambda m: (m.group(1) or m.group(2)) + "***", text)
    return text if len(text) <= limit else text[:limit] + "..."


# One cloud session per (thread, cloud profile), reused across the steps of a run: every
# step of an orchestration is a runner call in the same salt-run process, and a fresh
# openstacksdk connection pays a token and the services' version discovery (~0.4 s on the
# local cloud) before its first request.  Per thread (the reactor's runner pool shares a
# process): a session is never shared between threads it was not made in.  A session
# older than SESSION_TTL is made again (keystoneauth renews tokens itself meanwhile).
SESSION_TTL = 600
_SESSIONS = {}
_SESSIONS_LOCK = threading.Lock()


def shared_session(profile, factory, clock=time):
    """``factory(profile)``, or the one this thread made for the same profile recently."""
    import json  # pylint: disable=import-outside-toplevel

    key = (threading.get_ident(), json.dumps(profile, sort_keys=True, default=str))
    now = clock.monotonic()
    with _SESSIONS_LOCK:
        for old in [k for k, (_, made) in _SESSIONS.items() if now - made > SESSION_TTL]:
            del _SESSIONS[old]
        if key in _SESSIONS:
            return _SESSIONS[key][0]
    session = factory(profile)
    with _SESSIONS_LOCK:
        _SESSIONS[key] = (session, now)
    return session


def forget_sessions():
    """Drop every shared session (tests; a process that changed its clouds)."""
    with _SESSIONS_LOCK:
        _SESSIONS.clear()


class Provider(abc.ABC):
    """The driver contract, and the logic shared by every cloud.

    A driver implements the abstract ``_``-prefixed primitives (one cloud call each; a
    driver that lacks one fails when it is built, not halfway through a run) and may
    offer more operations (Nova's services, migrations, Placement...).  An operation
    another driver offers and this one does not raises NotSupported naming the cloud
    (:meth:`__getattr__`): a new OpenStack-only operation needs no list kept in step.
    Flows call public methods only.

    Cloud errors are translated once per driver: every method a driver defines is
    wrapped so that its cloud library's exceptions (an HTTP 503, a refused
    connection, a resource that is gone) leave it as the pack's NotFound or
    CloudError, naming the cloud and the operation, via the driver's
    :meth:`translate_error`.  Callers (flows, the reactor's decision) handle
    VmopsError only: a cloud that misbehaves gives an audit event and a retcode,
    not a traceback.
    """

    driver = None
    #: compute hosts the pack can drain (OpenStack); EC2 has none
    has_compute_hosts = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # the driver's own methods, and those of its mixins (openstack_compute.py...)
        owners = [cls] + [
            b
            for b in cls.__mro__[1:]
            if b is not object and not issubclass(b, Provider) and b is not abc.ABC
        ]
        for owner in owners:
            for attr, value in list(vars(owner).items()):
                if owner is not cls and attr in vars(cls):
                    continue  # overridden by the driver itself
                if (
                    callable(value)
                    and not attr.startswith("__")
                    and not isinstance(value, (staticmethod, classmethod, type))
                    and not getattr(value, "translating", False)
                    and attr != "translate_error"
                ):
                    setattr(cls, attr, _translating(value))

    def translate_error(self, exc, operation):  # pylint: disable=unused-argument
        """The pack's error for a cloud library's exception ``exc`` (None: not a cloud error)."""
        return None

    def __init__(self, profile):
        self.profile = profile
        self.name = profile.get("name")

    def retry_policy(self):
        """(attempts, first delay) for idempotent calls on a transient cloud error: profile
        keys ``retries`` (default 2: three attempts) and ``retry_delay`` (default 0.5 s,
        doubled each time, at most 5 s)."""
        try:
            retries = int(self.profile.get("retries", 2))
            delay = float(self.profile.get("retry_delay", 0.5))
        except (TypeError, ValueError):
            raise InvalidInput(
                "cloud %s: retries must be a whole number and retry_delay seconds" % self.name
            ) from None
        return max(1, retries + 1), max(0.0, delay)

    def __getattr__(self, operation):
        # only reached when normal lookup fails: an operation of another driver
        if operation.startswith("_"):
            raise AttributeError(operation)
        from .clouds import operations  # pylint: disable=import-outside-toplevel

        if operation not in operations():
            raise AttributeError("%s has no operation %r" % (type(self).__name__, operation))
        name, driver = self.__dict__.get("name"), type(self).driver

        def not_supported(*args, **kwargs):  # pylint: disable=unused-argument
            raise NotSupported("cloud %s (%s) does not support %s" % (name, driver, operation))

        return not_supported

    # ------------------------------------------------------------------ public lookups

    def exists(self, server_id):
        """True when a server with this id exists (and is not deleted)."""
        return self._get_server(server_id) is not None

    def resolve_spec(self, spec):
        """A copy of ``spec`` with the cloud's ids resolved; raises NotFound for what the
        cloud does not have (nothing is changed either way)."""
        resolved = dict(spec)
        self._check_spec(resolved)
        return resolved

    # ------------------------------------------------------------------ primitives
    # Each is one cloud concept; drivers implement them.

    @abc.abstractmethod
    def _servers_named(self, name):
        """Native server objects whose name is exactly ``name`` (not deleted)."""
        raise NotImplementedError

    @abc.abstractmethod
    def _get_server(self, server_id):
        """The native server with this id, or None."""
        raise NotImplementedError

    @abc.abstractmethod
    def _looks_like_id(self, value):
        raise NotImplementedError

    @abc.abstractmethod
    def _describe(self, server):
        """A native server as the plain dict described in the module docstring."""
        raise NotImplementedError

    @abc.abstractmethod
    def _status(self, server):
        """(status, fault message or None) of a native server, in Nova's words."""
        raise NotImplementedError

    @abc.abstractmethod
    def _create_server(self, spec):
        """Ask the cloud for a server; return its id without waiting."""
        raise NotImplementedError

    @abc.abstractmethod
    def _delete_server(self, server_id):
        raise NotImplementedError

    @abc.abstractmethod
    def _check_spec(self, spec):
        """Raise InvalidInput/NotFound for an image, flavor, network... the cloud lacks;
        record the resolved ids in ``spec`` (``resolve_spec`` gives callers a copy)."""

    @abc.abstractmethod
    def _stop_server(self, server_id):
        raise NotImplementedError

    @abc.abstractmethod
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

    def extras(self, server_id):
        """What this driver needs to boot a copy of the server beyond the common spec keys
        (EC2: root volume, IAM instance profile, IPv6, termination protection; nothing on
        OpenStack), given back to it at boot as the spec's ``extras``."""
        return self._extras(server_id)

    def _extras(self, server_id):  # pylint: disable=unused-argument
        return {}

    # ------------------------------------------------------------------ quota

    def headroom(self):
        """What the project (account) may still start: ``{"instances", "cores", "ram_mb"}``,
        each a number, or None where the cloud sets no limit or does not say."""
        return {"instances": None, "cores": None, "ram_mb": None}

    def flavor_size(self, flavor):  # pylint: disable=unused-argument
        """``{"vcpus", "ram_mb"}`` of a flavor (instance type); NotFound when unknown
        (None each when the driver cannot tell)."""
        return {"vcpus": None, "ram_mb": None}

    @abc.abstractmethod
    def console_output(self, name_or_id):
        """The server's console log (text)."""

    def foreign_project(self, server):  # pylint: disable=unused-argument
        """None, or why a server (described) belongs to a tenant that may not vouch for keys."""
        return None

    # ------------------------------------------------------------------ IP primitives
    # A floating IP (Neutron) or an Elastic IP (EC2) as a dict: {"address", "server_id",
    # "fixed_ip", "port_id" (Neutron only), "native"}; a target: {"server_id", "name",
    # "fixed_ip", "port_id" (Neutron only), "native"}.

    IP_WORD = "floating IP"

    @abc.abstractmethod
    def _ip_find(self, address):
        """The IP dict of ``address``; NotFound when it is not allocated here."""

    @abc.abstractmethod
    def _ip_target(self, ip, server, fixed_ip=None):
        """Where ``ip`` should point on ``server`` (which port / private IP); InvalidInput
        when it cannot (another project, no such fixed IP, several to choose from)."""

    @abc.abstractmethod
    def _ip_associate(self, ip, target):
        """Re-associate ``ip`` with ``target`` in one call (never unassigned in between)."""

    def floating_ip_show(self, address):
        """Where floating / Elastic IP ``address`` points now: ``{"address", "server_id",
        "fixed_ip"}`` (``server_id`` None when it points nowhere); NotFound when it is not
        allocated here."""
        ip = self._ip_find(address)
        return {
            "address": address,
            "server_id": ip.get("server_id"),
            "fixed_ip": ip.get("fixed_ip"),
        }

    def flip_floating_ip(self, address, server, fixed_ip=None, test=False, only_from=None):
        """Point floating / Elastic IP ``address`` at ``server`` in one re-association.

        The address moves straight from where it points to the target (Neutron and EC2
        re-associate in one update), so it is never unassigned in between; then the
        cloud is read again to verify.  A no-op when it already points there.
        ``test``: say what would happen, change nothing.
        ``only_from``: server ids the IP may be taken from (or from nowhere); pointing at
        another server it is left there (``left`` True, nothing changed).
        """
        ip = self._ip_find(address)
        if only_from is not None and ip.get("server_id") not in (None, server, *only_from):
            return {
                "address": address,
                "left": True,
                "changed": False,
                "old": {"server_id": ip.get("server_id")},
                "comment": "%s points at %s: left there" % (address, ip.get("server_id")),
            }
        target = self._ip_target(ip, server, fixed_ip)
        keys = (
            ("port_id", "fixed_ip", "server_id") if "port_id" in ip else ("server_id", "fixed_ip")
        )
        old = {k: ip.get(k) for k in keys}
        new = {k: target.get(k) for k in keys}
        result = {"address": address, "server": target["name"], "old": old, "new": new}
        where = " (%s)" % target["fixed_ip"] if "port_id" in ip else ""
        if old == new:
            result.update(
                changed=False, comment="%s already points at %s" % (address, target["name"])
            )
            return result
        if test:
            result.update(
                changed=True, comment="%s would be moved to %s%s" % (address, target["name"], where)
            )
            return result
        self._ip_associate(ip, target)
        check = self._ip_find(address)
        if check.get("port_id", check["server_id"]) != target.get("port_id", target["server_id"]):
            raise CloudError(
                "%s %s was moved but points at %s, not %s"
                % (
                    self.IP_WORD,
                    address,
                    check.get("port_id", check["server_id"]),
                    target.get("port_id", target["server_id"]),
                )
            )
        result.update(
            changed=True, comment="%s now points at %s%s" % (address, target["name"], where)
        )
        return result

    # ------------------------------------------------------------------ volume primitives
    # Volumes are described as plain dicts:
    #   {"id", "name", "size" (GiB), "type", "status" (available, in-use, creating,
    #    attaching, detaching, deleting, error...), "bootable", "multiattach", "encrypted",
    #    "availability_zone", "attachments": [{"server_id", "device"}]}

    @abc.abstractmethod
    def _volume_find(self, name_or_id):
        """The volume dict of ``name_or_id``, or None (Ambiguous when a name is not unique)."""
        raise NotImplementedError

    @abc.abstractmethod
    def _volume_get(self, volume_id):
        """The volume dict by id, or None when it is gone."""
        raise NotImplementedError

    @abc.abstractmethod
    def _server_volumes(self, server_id):
        """Volume dicts of the volumes attached to a server (root included)."""
        raise NotImplementedError

    @abc.abstractmethod
    def _volume_create(self, name, size, volume_type=None, availability_zone=None):
        raise NotImplementedError

    @abc.abstractmethod
    def _volume_attach(self, server_id, volume_id, device=None):
        raise NotImplementedError

    @abc.abstractmethod
    def _volume_detach(self, server_id, volume_id):
        raise NotImplementedError

    @abc.abstractmethod
    def _volume_delete(self, volume_id):
        raise NotImplementedError

    def _volume_zone_ok(self, server, volume):  # pylint: disable=unused-argument
        """None, or why ``volume`` cannot be attached to the native ``server`` (e.g. its zone)."""
        return None

    # ------------------------------------------------------------------ volumes (shared logic)

    def _volume(self, name_or_id):
        if not name_or_id or not isinstance(name_or_id, str):
            raise InvalidInput("a volume name or id is required; nothing was changed")
        vol = self._volume_find(name_or_id)
        if vol is None:
            raise NotFound("no volume %r on cloud %s" % (name_or_id, self.name))
        return vol

    def _server_names(self, server_ids):
        names = []
        for server_id in server_ids:
            server = self._get_server(server_id)
            names.append(
                "%s (%s)" % (self._describe(server)["name"], server_id)
                if server is not None
                else server_id
            )
        return names

    def _wait_volume(self, volume_id, want, timeout, what):
        last = {}

        def probe():
            vol = self._volume_get(volume_id)
            last["vol"] = vol
            if want == "gone":
                return vol is None or vol["status"] == "deleted"
            if vol is None:
                raise NotFound(
                    "volume %s disappeared while waiting for it to be %s" % (volume_id, want)
                )
            if vol["status"].startswith("error"):
                raise CloudError("volume %s went to %s while %s" % (volume_id, vol["status"], what))
            return vol if want(vol) else None

        try:
            return waiting.wait_for(probe, timeout, "volume %s %s" % (volume_id, what))
        except Timeout:
            status = (last.get("vol") or {}).get("status")
            raise Timeout(
                "volume %s is still %s after %ss %s: the cloud did not finish it (look at the "
                "volume service; reset its state only once the backend agrees)"
                % (volume_id, status, timeout, what)
            ) from None

    def volume_show(self, name_or_id):
        """Describe a volume: size, type, status, bootable, multi-attach, attachments."""
        return self._volume(name_or_id)

    def volume_settle(self, name_or_id, timeout=300):
        """Wait until a volume is neither attaching nor detaching (a request sent by a run
        that was killed before it saw the answer is let finish, never sent twice)."""
        vol = self._volume(name_or_id)
        if vol["status"] in ("available", "in-use"):
            return vol
        return self._wait_volume(
            vol["id"],
            lambda v: v["status"] in ("available", "in-use"),
            timeout,
            "to finish %s" % vol["status"],
        )

    def volumes(self, name_or_id):
        """The volumes attached to a server: device, size, type, bootable/root, multi-attach."""
        server = self.describe(self.find_server(name_or_id))
        out = []
        for vol in self._server_volumes(server["id"]):
            device = next(
                (a["device"] for a in vol["attachments"] if a["server_id"] == server["id"]), None
            )
            out.append(
                {
                    "volume_id": vol["id"],
                    "name": vol["name"],
                    "device": device,
                    "size": vol["size"],
                    "type": vol["type"],
                    "status": vol["status"],
                    "bootable": vol["bootable"],
                    "root": bool(vol.get("root")),
                    "multiattach": vol["multiattach"],
                    "encrypted": vol["encrypted"],
                    "tags": vol.get("tags") or {},
                }
            )
        return sorted(out, key=lambda v: (v["device"] or "", v["volume_id"]))

    def volume_create(
        self, name, size, volume_type=None, availability_zone=None, wait=True, timeout=300
    ):
        """Create an empty volume of ``size`` GiB and (by default) wait until it is available."""
        check_minion_id(name, "volume name")
        try:
            size = int(str(size).strip())
            if size < 1:
                raise ValueError
        except (TypeError, ValueError):
            raise InvalidInput(
                "size must be a whole number of GiB (at least 1), not %r; "
                "nothing was changed" % (size,)
            ) from None
        volume_id = self._volume_create(name, size, volume_type, availability_zone)
        log.info("vmops: %s asked to create volume %s (%s)", self.name, name, volume_id)
        if not wait:
            return self._volume_get(volume_id)
        return self._wait_volume(
            volume_id, lambda v: v["status"] == "available", timeout, "to become available"
        )

    def volume_attach(self, name_or_id, volume, device=None, timeout=300, test=False):
        """Attach a volume to a server and wait until it is in-use there.

        A volume attached elsewhere (and not multi-attach) is refused before any
        change, naming where it is attached; one already attached here is a no-op.
        """
        server = self.find_server(name_or_id)
        desc = self._describe(server)
        vol = self._volume(volume)
        where = [a["server_id"] for a in vol["attachments"]]
        result = {
            "server": desc["name"],
            "server_id": desc["id"],
            "volume_id": vol["id"],
            "volume": vol["name"],
        }
        if desc["id"] in where:
            dev = next(a["device"] for a in vol["attachments"] if a["server_id"] == desc["id"])
            return dict(
                result,
                changed=False,
                device=dev,
                comment="volume %s is already attached to %s at %s" % (volume, desc["name"], dev),
            )
        if where and not vol["multiattach"]:
            raise InvalidInput(
                "volume %s is attached to %s: detach it there first (a volume is never attached "
                "twice); nothing was changed" % (volume, ", ".join(self._server_names(where)))
            )
        if vol["status"] not in ("available", "in-use"):
            raise InvalidInput(
                "volume %s is %s, not available; nothing was changed" % (volume, vol["status"])
            )
        why = self._volume_zone_ok(server, vol)
        if why:
            raise InvalidInput("%s; nothing was changed" % why)
        if test:
            return dict(
                result,
                changed=True,
                device=device,
                comment="volume %s would be attached to %s" % (volume, desc["name"]),
            )
        self._volume_attach(desc["id"], vol["id"], device)
        done = self._wait_volume(
            vol["id"],
            lambda v: (
                v["status"] == "in-use"
                and any(a["server_id"] == desc["id"] for a in v["attachments"])
            ),
            timeout,
            "to be attached to %s" % desc["name"],
        )
        dev = next(a["device"] for a in done["attachments"] if a["server_id"] == desc["id"])
        return dict(
            result,
            changed=True,
            device=dev,
            attached=True,
            comment="volume %s attached to %s at %s" % (volume, desc["name"], dev),
        )

    def volume_detach(self, name_or_id, volume, timeout=300, test=False):
        """Detach a volume from a server and wait until it is available; a no-op when it is
        not attached there.  A volume stuck in ``detaching`` past ``timeout`` is an error."""
        server = self.find_server(name_or_id)
        desc = self._describe(server)
        vol = self._volume(volume)
        result = {
            "server": desc["name"],
            "server_id": desc["id"],
            "volume_id": vol["id"],
            "volume": vol["name"],
        }
        if not any(a["server_id"] == desc["id"] for a in vol["attachments"]):
            return dict(
                result,
                changed=False,
                comment="volume %s is not attached to %s" % (volume, desc["name"]),
            )
        if vol.get("root") and desc["id"] in [a["server_id"] for a in vol["attachments"]]:
            raise InvalidInput(
                "volume %s is the root disk of %s: it cannot be detached; "
                "nothing was changed" % (volume, desc["name"])
            )
        if test:
            return dict(
                result,
                changed=True,
                comment="volume %s would be detached from %s" % (volume, desc["name"]),
            )
        self._volume_detach(desc["id"], vol["id"])
        self._wait_volume(
            vol["id"],
            lambda v: (
                not any(a["server_id"] == desc["id"] for a in v["attachments"])
                and v["status"] in ("available", "in-use")
            ),
            timeout,
            "to be detached from %s" % desc["name"],
        )
        return dict(
            result,
            changed=True,
            detached=True,
            comment="volume %s detached from %s" % (volume, desc["name"]),
        )

    def volume_delete(self, name_or_id, wait=True, timeout=300):
        """Delete a volume; one still attached is refused (detach it first)."""
        vol = self._volume(name_or_id)
        if vol["attachments"]:
            raise InvalidInput(
                "volume %s is attached to %s: detach it first; nothing was changed"
                % (
                    name_or_id,
                    ", ".join(self._server_names([a["server_id"] for a in vol["attachments"]])),
                )
            )
        self._volume_delete(vol["id"])
        if wait:
            self._wait_volume(vol["id"], "gone", timeout, "to be deleted")
        return {"volume_id": vol["id"], "volume": vol["name"], "deleted": True}

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

    def servers_named(self, name, brief=False):
        """Descriptions of every server called ``name`` (none, one, or several).

        ``brief``: the compute API's own description only (a driver's further reads, such
        as Neutron's floating IPs, skipped): for checks that need no addresses, such as
        an admission decision (one request instead of three per server)."""
        servers = self._servers_named(name)
        if brief:
            return [Provider.describe(self, s) for s in servers]
        return [self.describe(s) for s in servers]

    # the most user-data the cloud takes, in bytes (None: no limit known)
    USER_DATA_MAX = None
    USER_DATA_MAX_ENCODED = None

    def check_user_data(self, user_data):
        """Refuse user-data the cloud would refuse, before anything changes (and before the
        cloud can echo it back in an error)."""
        if not user_data:
            return
        size = len(user_data)
        encoded = len(encode_user_data(user_data))
        if (self.USER_DATA_MAX and size > self.USER_DATA_MAX) or (
            self.USER_DATA_MAX_ENCODED and encoded > self.USER_DATA_MAX_ENCODED
        ):
            raise InvalidInput(
                "the user-data is %d bytes (%d base64 encoded); cloud %s takes at most %s: "
                "trim cloud_config; nothing was changed"
                % (
                    size,
                    encoded,
                    self.name,
                    "%d bytes" % self.USER_DATA_MAX
                    if self.USER_DATA_MAX
                    else "%d base64 encoded" % self.USER_DATA_MAX_ENCODED,
                )
            )

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
        if spec.get("volumes"):
            spec["volumes"] = check_boot_volumes(spec["volumes"])
        if spec.get("user_data") is not None and not isinstance(spec["user_data"], bytes):
            spec["user_data"] = spec["user_data"].encode()
        self.check_user_data(spec.get("user_data"))
        self._check_spec(spec)
        try:
            server_id = self._create_server(spec)
        except VmopsError as exc:
            raise scrub_user_data(exc, spec.get("user_data")) from None
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

    def delete_id(self, server_id, wait=True, timeout=300):
        """Delete the server ``server_id`` without looking it up first (a flow that knows
        its id: one request, then the wait until it is gone; a server gone already is
        fine)."""
        try:
            self._delete_server(server_id)
        except VmopsError:
            if self.exists(server_id):
                raise
            return  # gone already (a cloud may refuse to touch a terminated instance)
        log.info("vmops: %s asked to delete %s", self.name, server_id)
        if wait:
            self.wait_for_status(server_id, "DELETED", timeout)

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
_LONG_BASE64 = re.compile(r"[A-Za-z0-9+/=]{120,}")


def scrub_user_data(exc, user_data):
    """``exc`` with the user-data (as given, or base64 encoded) cut out of its message.

    Clouds echo a refused value (Nova's 400 for oversized user-data quotes all of it):
    it must not reach the journal, the event bus or the log.
    """
    message = str(exc)
    if user_data:
        raw = user_data.decode("utf-8", "replace") if isinstance(user_data, bytes) else user_data
        for text in (encode_user_data(user_data), raw):
            if text and text in message:
                message = message.replace(text, "<user-data, %d bytes>" % len(raw))
    message = _LONG_BASE64.sub(lambda m: "<%d base64 characters>" % len(m.group(0)), message)
    if len(message) > 2000:
        message = message[:2000] + "... (%d characters cut)" % (len(message) - 2000)
    return type(exc)(message)


def encode_user_data(user_data):
    """User-data as the base64 text the compute APIs take."""
    if isinstance(user_data, str):
        user_data = user_data.encode()
    return base64.b64encode(user_data).decode()


def check_boot_volumes(volumes):
    """Extra volumes for a new server: ``[{size: 10, device: /dev/vdb, type: ...,
    delete_on_termination: false}]``, checked before anything changes.  Data volumes
    outlive their server by default (nothing is lost when it is deleted)."""
    if not isinstance(volumes, list):
        raise InvalidInput(
            "volumes must be a list of {size: <GiB>, device, type, "
            "delete_on_termination}; nothing was changed"
        )
    out = []
    for vol in volumes:
        if not isinstance(vol, dict):
            raise InvalidInput("each volume must be a mapping with a size; nothing was changed")
        unknown = set(vol) - {"size", "device", "type", "delete_on_termination"}
        if unknown:
            raise InvalidInput(
                "unknown volume setting(s) %s; nothing was changed" % ", ".join(sorted(unknown))
            )
        try:
            size = int(str(vol.get("size")).strip())
            if size < 1:
                raise ValueError
        except (TypeError, ValueError):
            raise InvalidInput(
                "volume size must be a whole number of GiB, not %r; nothing was "
                "changed" % (vol.get("size"),)
            ) from None
        delete = vol.get("delete_on_termination", False)
        if not isinstance(delete, bool):
            raise InvalidInput(
                "delete_on_termination must be true or false, not %r; nothing "
                "was changed" % (delete,)
            )
        out.append(dict(vol, size=size, delete_on_termination=delete))
    return out
