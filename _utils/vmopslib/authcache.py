"""A cloud token and the API version documents, kept between the pack's processes.

Every Salt process that talks to OpenStack (a ``salt-run``, each step of a
rotation's child orchestrations, every reactor decision) would otherwise start
with a password authentication (Keystone hashes the password: CPU on the cloud)
and a version discovery per service: ~0.5 s of round trips before its first real
request.  The master keeps them instead, as openstackclient's ``cache.auth``
does, in ``<cachedir>/vmops/auth/`` (profile key ``token_cache``: another
directory, or ``false`` for none).

What is kept and how:

* one file per identity (auth URL, user, project, domain, region, interface:
  never the password), mode 0600 in a 0700 directory, written to a temporary
  name and renamed: the token and its catalog as keystoneauth's own
  ``get_auth_state`` gives them, and the version documents of each endpoint;
* a token is reused only while it has more than ``MIN_LIFE`` seconds left;
  one the cloud refuses (revoked, the password changed: HTTP 401) makes
  keystoneauth authenticate again, and the file is rewritten with the new token;
* the version documents are kept ``DISCOVERY_TTL`` seconds;
* nothing here is logged, returned or put in an event.  Whoever can read the
  directory can read the master's keys and its clouds.yaml already.
"""

import hashlib
import json
import logging
import os
import tempfile
import time

log = logging.getLogger(__name__)

MIN_LIFE = 300  # seconds a cached token must still be valid for to be reused
DISCOVERY_TTL = 3600


def _identity(conn, profile):
    """What names the identity (no secret): the file's name is its hash."""
    auth = dict(conn.config.config.get("auth") or {})
    keep = {
        k: v
        for k, v in auth.items()
        if "password" not in k and "secret" not in k and "token" not in k
    }
    keep["_region"] = conn.config.get_region_name()
    keep["_interface"] = conn.config.config.get("interface")
    keep["_profile"] = profile.get("name")
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _read(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def _write(path, data):
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".auth-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:  # mkstemp: mode 0600
            json.dump(data, handle)
        os.replace(tmp, path)
    except OSError as exc:
        log.debug("vmops: the token cache %s cannot be written: %s", directory, exc)
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _forget(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def attach(conn, profile):
    """Reuse (and keep up to date) the token and version documents of ``conn``'s identity.

    Does nothing when ``profile`` has no ``token_cache`` directory or its auth plugin
    cannot export its state (not a keystoneauth identity plugin).
    """
    directory = profile.get("token_cache")
    if not directory:
        return conn
    session = conn.session
    auth = session.auth
    if not (hasattr(auth, "get_auth_state") and hasattr(auth, "set_auth_state")):
        return conn
    try:
        from keystoneauth1 import discover  # pylint: disable=import-outside-toplevel
    except ImportError:  # pragma: no cover
        return conn
    path = os.path.join(str(directory), _identity(conn, profile) + ".json")
    saved = _read(path) or {}
    now = time.time()
    if saved.get("state"):
        try:
            auth.set_auth_state(saved["state"])
            if auth.auth_ref is None or auth.auth_ref.will_expire_soon(MIN_LIFE):
                auth.set_auth_state(None)
        except Exception:  # pylint: disable=broad-except
            auth.set_auth_state(None)  # unreadable: authenticate as usual
    # version documents older than DISCOVERY_TTL are fetched again, and kept with a new time
    fresh = bool(saved.get("discovery")) and now - saved.get("discovered_at", 0) < DISCOVERY_TTL
    discovered_at = saved["discovered_at"] if fresh else now
    if fresh:
        for url, data in saved["discovery"].items():
            if url not in session._discovery_cache:  # pylint: disable=protected-access
                disc = discover.Discover.__new__(discover.Discover)
                disc._url, disc._data = url, data  # pylint: disable=protected-access
                session._discovery_cache[url] = disc  # pylint: disable=protected-access
    known = {"ref": auth.auth_ref, "urls": set(session._discovery_cache)}  # pylint: disable=protected-access

    def save():
        cache = session._discovery_cache  # pylint: disable=protected-access
        _write(
            path,
            {
                "state": auth.get_auth_state(),
                "discovery": {
                    url: disc._data  # pylint: disable=protected-access
                    for url, disc in cache.items()
                    if isinstance(getattr(disc, "_data", None), list)
                },
                "discovered_at": discovered_at,
            },
        )
        known["ref"], known["urls"] = auth.auth_ref, set(cache)

    get_access = auth.get_access
    invalidate = auth.invalidate

    def get_access_kept(sess, **kwargs):
        ref = get_access(sess, **kwargs)
        cache = session._discovery_cache  # pylint: disable=protected-access
        if ref is not known["ref"] or len(cache) != len(known["urls"]):
            save()
        return ref

    def invalidate_kept():
        _forget(path)  # refused by the cloud: no other process should try it again
        known["ref"] = None
        return invalidate()

    auth.get_access = get_access_kept
    auth.invalidate = invalidate_kept
    return conn
