"""What the loader modules share: config lookup, error mapping, events, master keys.

Imports Salt lazily, so the rest of vmopslib stays usable (and testable) alone.
"""

import logging
import os
import time

from . import config
from .errors import InvalidInput, VmopsError

log = logging.getLogger(__name__)

EVENT_PREFIX = "vmops"


def loader_virtual(virtualname, kind):
    """``__virtual__`` of the loader modules: the name, or (False, why) without a cloud library."""
    from . import ec2, openstack  # pylint: disable=import-outside-toplevel

    if openstack.HAS_OPENSTACK or ec2.HAS_BOTO3:
        return virtualname
    return (False, "the vmops %s needs openstacksdk (OpenStack) or boto3 (EC2)" % kind)


def settings(opts, pillar=None):
    """The effective ``vmops`` configuration (config, then pillar)."""
    return config.load(opts, pillar)


def provider(opts, pillar=None, cloud=None):
    """(configuration, provider) for the cloud profile ``cloud`` (default cloud if None)."""
    from .clouds import get_provider  # pylint: disable=import-outside-toplevel

    conf = settings(opts, pillar)
    profile = config.cloud(conf, cloud)
    if "token_cache" not in profile and opts.get("cachedir"):
        profile["token_cache"] = os.path.join(opts["cachedir"], "vmops", "auth")
    return conf, get_provider(profile)


class CacheRecords:
    """Records in one bank of Salt's cache subsystem (``salt.cache``): see :mod:`store`."""

    def __init__(self, cache, bank, shared):
        self.cache, self.bank, self.shared = cache, bank, shared

    def where(self, key):
        return "%s cache, bank %s, key %s" % (self.cache.driver, self.bank, key)

    def fetch(self, key):
        import salt.exceptions  # pylint: disable=import-outside-toplevel

        try:
            data = self.cache.fetch(self.bank, key)
        except salt.exceptions.SaltCacheError as exc:
            raise VmopsError("the store cannot be read (%s): %s" % (self.where(key), exc)) from None
        except Exception as exc:  # pylint: disable=broad-except
            # localfs hands msgpack's own error up for a truncated or garbled file
            raise ValueError("%s: %s" % (type(exc).__name__, exc)) from None
        return data if data not in (None, {}) else None

    def store(self, key, record):
        import salt.utils.json  # pylint: disable=import-outside-toplevel

        # plain JSON types only, so every driver stores what the next reader gets back
        self.cache.store(
            self.bank, key, salt.utils.json.loads(salt.utils.json.dumps(record, default=str))
        )

    def flush(self, key):
        return bool(self.cache.flush(self.bank, key))

    def keys(self):
        return sorted(k for k in (self.cache.list(self.bank) or []) if isinstance(k, str))


def store_settings(opts):
    """``vmops:store`` of the master (or minion) config: the cache driver and lease time."""
    raw = ((opts.get("vmops") or {}).get("store")) or {}
    if not isinstance(raw, dict):
        raise InvalidInput("vmops:store must be a mapping (driver, lease_seconds)")
    driver = raw.get("driver") or opts.get("cache") or "localfs"
    lease = config.strict_int(raw.get("lease_seconds", 60), "vmops:store:lease_seconds", 5)
    return {"driver": str(driver), "lease_seconds": lease}


def _bank(opts, name, cache=None):
    import salt.cache  # pylint: disable=import-outside-toplevel

    conf = store_settings(opts)
    cache = cache or salt.cache.factory(opts, driver=conf["driver"])
    return CacheRecords(cache, "vmops/" + name, shared=conf["driver"] != "localfs"), conf


def journal_store(opts, kind, what):
    """The store of ``kind`` journals ("replace", "evacuate") on this master or minion."""
    from .store import JournalStore  # pylint: disable=import-outside-toplevel

    records, conf = _bank(opts, kind)
    leases = _bank(opts, "leases/" + kind, records.cache)[0] if records.shared else None
    return JournalStore(
        records,
        what=what,
        lockdir=os.path.join(opts["cachedir"], "vmops", "locks", kind),
        leases=leases,
        lease_seconds=conf["lease_seconds"],
    )


def registry(opts):
    """The master's registry of expected minions (bank ``vmops/expected``)."""
    from .registry import Registry  # pylint: disable=import-outside-toplevel

    records, _ = _bank(opts, "expected")
    refusals, _ = _bank(opts, "refused", records.cache)
    return Registry(
        records, refusals, lockdir=os.path.join(opts["cachedir"], "vmops", "locks", "expected")
    )


def raise_salt(exc):
    """Re-raise a pack error as the Salt exception an execution module should raise."""
    import salt.exceptions  # pylint: disable=import-outside-toplevel

    if isinstance(exc, InvalidInput):
        raise salt.exceptions.SaltInvocationError(str(exc)) from exc
    raise salt.exceptions.CommandExecutionError(str(exc)) from exc


def run_module(fn, *args, **kwargs):
    """Call core function ``fn``; pack errors become Salt exceptions."""
    try:
        return fn(*args, **kwargs)
    except VmopsError as exc:
        raise_salt(exc)


def run_runner(context, fn, *args, **kwargs):
    """Call core function ``fn`` for a runner: failures set the job's retcode.

    Returns ``fn``'s dict, or ``{"result": False, "comment": <why>, "retcode": 1}``
    on a pack error.  ``__context__["retcode"] = 1`` makes orchestration see the
    failure; the ``retcode`` key makes the ``salt-run`` command exit non-zero.
    """
    try:
        return fn(*args, **kwargs)
    except VmopsError as exc:
        context["retcode"] = 1
        log.error("vmops: %s", exc)
        return {"result": False, "comment": str(exc), "error": type(exc).__name__, "retcode": 1}


class Events:
    """Fires ``vmops/...`` events on the master bus, and progress for ``salt-run``."""

    def __init__(self, opts, jid_event=None):
        self.opts = opts
        self.jid_event = jid_event

    def fire(self, tag, data):
        import salt.utils.event  # pylint: disable=import-outside-toplevel

        data = config.redact(dict(data))
        full = "/".join((EVENT_PREFIX, tag.strip("/")))
        try:
            with salt.utils.event.get_master_event(
                self.opts, self.opts["sock_dir"], listen=False
            ) as bus:
                bus.fire_event(data, full)
        except Exception as exc:  # pylint: disable=broad-except
            log.warning("vmops: could not fire %s: %s", full, exc)
        if self.jid_event is not None and data.get("message"):
            try:
                self.jid_event.fire_event({"message": data["message"]}, "progress")
            except Exception:  # pylint: disable=broad-except
                pass

    def __call__(self, tag, message, **data):
        data["message"] = message
        self.fire(tag, data)


# seconds a key record the pack wrote must stay as written before it is trusted to hold
SETTLE = 1.5


class MasterKeys:
    """The master's minion keys, touched by exact id only (never by glob).

    Salt 3008 keeps keys in a cache bank (``keys.cache_driver``, files under
    pki_dir by default); this goes through the same API as ``key.gen_accept``.
    """

    _STATES = {
        "accepted": "minions",
        "pending": "minions_pre",
        "rejected": "minions_rejected",
        "denied": "minions_denied",
    }

    def __init__(self, opts):
        import salt.cache  # pylint: disable=import-outside-toplevel
        import salt.key  # pylint: disable=import-outside-toplevel

        self.opts = opts
        self.key = salt.key.Key(opts)
        self.cache = salt.cache.Cache(opts, driver=opts.get("keys.cache_driver", "localfs_key"))

    def status(self, minion_id):
        """'accepted', 'pending', 'rejected', 'denied' or None."""
        config.check_minion_id(minion_id, "minion id")
        keys = self.key.list_keys()
        for name, state in self._STATES.items():
            if minion_id in keys.get(state, []):
                return name
        return None

    def _pub(self, minion_id, state):
        config.check_minion_id(minion_id, "minion id")
        record = self.cache.fetch("keys", minion_id) or {}
        return record.get("pub") if record.get("state") == state else None

    def pending_pub(self, minion_id):
        """The public key a pending minion presented, or None."""
        return self._pub(minion_id, "pending")

    def accepted_pub(self, minion_id):
        return self._pub(minion_id, "accepted")

    def denied_pubs(self, minion_id):
        """Keys the master denied for ``minion_id`` (another key held the id)."""
        config.check_minion_id(minion_id, "minion id")
        return list(self.cache.fetch("denied_keys", minion_id) or [])

    def accept(self, minion_id):
        """Accept exactly ``minion_id``'s pending key."""
        config.check_minion_id(minion_id, "minion id")
        return self.key.accept(match_dict={"minions_pre": [minion_id]})

    def reject(self, minion_id):
        config.check_minion_id(minion_id, "minion id")
        return self.key.reject(match_dict={"minions_pre": [minion_id]})

    def delete(self, minion_id, rotate=True):
        """Delete every key (accepted, pending, rejected, denied) of ``minion_id``.

        ``rotate``: as ``salt-key -d`` does, have the master rotate its AES key, so
        that a minion still connected with that id loses its session (every minion
        then re-authenticates).  Not needed when the minion is known to be gone.
        """
        config.check_minion_id(minion_id, "minion id")
        keys = self.key.list_keys()
        found = {
            state: [minion_id]
            for state in self._STATES.values()
            if minion_id in keys.get(state, [])
        }
        if not found:
            return False
        if rotate:
            self.key.delete_key(match_dict=found)
        else:
            self.cache.flush("keys", minion_id)
            self.cache.flush("denied_keys", minion_id)
            self.key.event.fire_event(
                {"result": True, "act": "delete", "id": minion_id}, "salt/key"
            )
        return True

    # ------------------------------------------------------------ handing an id over

    def _dropfile(self):
        return os.path.join(self.opts["cachedir"], ".dfn")

    def rotation_pending(self):
        """True while an AES key rotation the master was asked for has not happened."""
        return os.path.exists(self._dropfile())

    def request_rotation(self):
        """Ask the master to rotate its AES key (as ``salt-key -d`` does), also with
        ``rotate_aes_key: False``: every session made with the old key ends."""
        import salt.crypt  # pylint: disable=import-outside-toplevel

        salt.crypt.dropfile(self.opts["cachedir"], self.opts.get("user"), self.opts.get("id", ""))

    def wait_rotated(self, timeout=None, hold=None, settle=SETTLE):
        """Wait until a requested rotation has happened; seconds waited.

        The master's maintenance process rotates within ``loop_interval`` seconds.
        ``hold``: ``{minion id: public key}`` just written (``preseed(settle=0)``): while
        the rotation is awaited, each is read back and re-asserted if lost, as
        :meth:`assert_key` does, and the wait lasts at least until each has held for
        ``settle`` seconds since it was last written: the settle costs nothing when the
        rotation takes longer.
        """
        from . import waiting  # pylint: disable=import-outside-toplevel

        started = time.monotonic()
        if timeout is None:
            timeout = 2 * int(self.opts.get("loop_interval", 60)) + 15
        held = {
            name: {"pub": pub, "written": started, "lost": 0} for name, pub in (hold or {}).items()
        }

        def done():
            now = time.monotonic()
            for name, entry in held.items():
                if self._lost(name, entry["pub"], entry["lost"]):
                    entry["lost"] += 1
                    entry["written"] = now
            return (
                all(now - entry["written"] >= settle for entry in held.values())
                and not self.rotation_pending()
            )

        waiting.wait_for(
            done,
            timeout,
            "the master to rotate its AES key (it does so every loop_interval, "
            "%ss; is its maintenance process running?)" % self.opts.get("loop_interval", 60),
            interval=0.2,
        )
        return time.monotonic() - started

    def _lost(self, minion_id, pub, lost, tries=5):
        """True (after storing ``pub`` again) when the key record of ``minion_id`` is not
        ``pub`` accepted any more; an error once it was lost more than ``tries`` times."""
        record = self.cache.fetch("keys", minion_id) or {}
        if record.get("state") == "accepted" and (record.get("pub") or "").strip() == pub.strip():
            return False
        if lost >= tries:
            raise VmopsError(
                "the key of %s keeps being replaced (now %s): another "
                "process writes it" % (minion_id, record.get("state"))
            )
        log.warning(
            "vmops: the key of %s was overwritten (%s) right after it was stored: storing it again",
            minion_id,
            record.get("state"),
        )
        self.cache.store("keys", minion_id, {"pub": pub, "state": "accepted"})
        return True

    def assert_key(self, minion_id, pub, settle=SETTLE, tries=5):
        """Make sure ``pub`` is (and stays, for ``settle`` seconds) the accepted key of
        ``minion_id``.

        Salt's auth handler reads and writes the key record without a lock: a minion
        authenticating while the record was absent can write its pending key over
        the one just stored.  Read back, and re-assert what was lost.
        """
        deadline = time.monotonic() + settle
        lost = 0
        while True:
            if self._lost(minion_id, pub, lost, tries):
                lost += 1
                deadline = time.monotonic() + settle
            if time.monotonic() >= deadline:
                return lost
            time.sleep(0.25)

    def preseed(self, minion_id, pub, rotate=True, settle=SETTLE):
        """Make ``pub`` the accepted key of ``minion_id``.

        The record is overwritten, not deleted first by the pack; Salt's key store
        (``localfs_key``) still removes the old file before it renames the new one in,
        and a minion authenticating in that moment writes its key as pending: so the
        write is read back and re-asserted until it holds (:meth:`assert_key`).
        ``settle=0``: read back once (the caller holds it, see :meth:`wait_rotated`).
        Denied keys go.  ``rotate``: when another key was accepted, ask the
        master to rotate its AES key so the minion holding it loses its session
        (see :meth:`wait_rotated`).  Returns True when a rotation was requested.
        """
        config.check_minion_id(minion_id, "minion id")
        previous = self.cache.fetch("keys", minion_id) or {}
        self.cache.store("keys", minion_id, {"pub": pub, "state": "accepted"})
        self.cache.flush("denied_keys", minion_id)
        self.key.event.fire_event({"result": True, "act": "accept", "id": minion_id}, "salt/key")
        self.assert_key(minion_id, pub, settle)
        if (
            rotate
            and previous.get("state") == "accepted"
            and (previous.get("pub") or "").strip() != pub.strip()
        ):
            self.request_rotation()
            return True
        return False


def local_client(opts):
    """A LocalClient for the master's own jobs, also from a runner the reactor started.

    The reactor stamps its jobs with ``user: Reactor`` in its opts, and a
    LocalClient built from those opts looks for a ``.Reactor_key`` that does not
    exist, so the master refuses its publications ("Authentication error").
    The key of the user this process runs as is the right one.
    """
    import salt.client  # pylint: disable=import-outside-toplevel
    import salt.utils.user  # pylint: disable=import-outside-toplevel

    user = opts.get("user") or "root"
    if not os.path.exists(os.path.join(opts["cachedir"], ".%s_key" % user)):
        opts = dict(opts, user=salt.utils.user.get_user())
    return salt.client.get_local_client(mopts=opts)


def minion_answers(opts, minion_id, timeout=2):
    """True when ``minion_id`` answers test.ping now (targeted by exact id, as a list).

    Short timeouts: a minion that is still starting misses the publish, and the
    next ping (not a long wait on this one) is what finds it.
    """

    config.check_minion_id(minion_id, "minion id")
    with local_client(opts) as client:
        ret = client.cmd(
            [minion_id], "test.ping", tgt_type="list", timeout=timeout, gather_job_timeout=timeout
        )
    return ret.get(minion_id) is True


def minion_call(opts, minion_id, fun, arg=(), kwarg=None, timeout=60):
    """The return of ``fun`` on one minion (exact id); VmopsError when it does not answer.
    (A custom function must be synced to the minion first: ``saltutil.sync_modules``.)"""
    config.check_minion_id(minion_id, "minion id")
    with local_client(opts) as client:
        ret = client.cmd(
            [minion_id], fun, list(arg), tgt_type="list", kwarg=kwarg or {}, timeout=timeout
        )
    if minion_id not in ret:
        raise VmopsError("minion %s did not answer %s" % (minion_id, fun))
    return ret[minion_id]


def minion_grain(opts, minion_id, grain, timeout=10):
    """The value of ``grain`` on ``minion_id`` (VmopsError when the minion does not answer)."""
    config.check_minion_id(minion_id, "minion id")
    with local_client(opts) as client:
        ret = client.cmd(
            [minion_id],
            "grains.get",
            [grain],
            tgt_type="list",
            timeout=timeout,
            gather_job_timeout=timeout,
        )
    if minion_id not in ret:
        raise VmopsError("minion %s did not answer grains.get %s" % (minion_id, grain))
    return ret[minion_id]


def wait_minion(opts, minion_id, timeout):
    """Wait until ``minion_id`` answers; raise Timeout when it does not."""
    from . import waiting  # pylint: disable=import-outside-toplevel

    # a minion still starting misses the ping's publish: a short ping, soon again
    return waiting.wait_for(
        lambda: minion_answers(opts, minion_id, timeout=1),
        timeout,
        "minion %s to answer" % minion_id,
        interval=0.25,
    )


def minions_on_hosts(opts, pairs, grain="compute_host", timeout=20):
    """Check moved servers' minions: ``pairs`` of (minion id, host it should run on).

    Only ids whose key the master has accepted are asked (a server's name is its
    minion id); each must answer, and when it has ``grain`` the grain must name
    the host.  Returns {id: None (fine) or why not}; ids the master does not
    know are left out.
    """
    accepted = set(MasterKeys(opts).key.list_keys().get("minions", []))  # one listing for all
    known = [
        (name, host)
        for name, host in pairs
        if config.check_minion_id(name, "minion id") and name in accepted
    ]
    if not known:
        return {}
    ids = [name for name, _ in known]
    with local_client(opts) as client:
        client.cmd(ids, "saltutil.refresh_grains", tgt_type="list", timeout=timeout)
        ret = client.cmd(ids, "grains.get", [grain], tgt_type="list", timeout=timeout)
    out = {}
    for name, host in known:
        if name not in ret:
            out[name] = "did not answer within %ss" % timeout
        elif ret[name] not in ("", None) and ret[name] != host:
            out[name] = "says (grain %s) it runs on %s, not %s" % (grain, ret[name], host)
        else:
            out[name] = None
    return out


def minion_jobs(opts, minion_id, timeout=10):
    """The jobs running on ``minion_id`` now, as ``fun (jid)`` strings; None when it did not
    answer."""
    config.check_minion_id(minion_id, "minion id")
    with local_client(opts) as client:
        ret = client.cmd([minion_id], "saltutil.running", tgt_type="list", timeout=timeout)
    if minion_id not in ret or not isinstance(ret[minion_id], list):
        return None
    return ["%s (%s)" % (job.get("fun"), job.get("jid")) for job in ret[minion_id]]


def wait_minion_idle(opts, minion_id, timeout):
    """Wait until ``minion_id`` runs no job; return the jobs seen running (empty: none)."""
    from . import waiting  # pylint: disable=import-outside-toplevel

    seen = []

    def idle():
        jobs = minion_jobs(opts, minion_id)
        if jobs is None:
            return False
        for job in jobs:
            if job not in seen:
                seen.append(job)
        return not jobs

    waiting.wait_for(idle, timeout, "the jobs running on %s to finish" % minion_id, interval=1)
    return seen


class NodeMinions:
    """The node-side operations of a rolling maintenance, through each node's own minion
    (minion id = the compute host's name): see ``maintenance.Maintenance``."""

    def __init__(self, opts, timeout=1800):
        self.opts = opts
        self.timeout = timeout

    def answers(self, node):
        return minion_answers(self.opts, node, timeout=5)

    def boot_id(self, node):
        try:
            with local_client(self.opts) as client:
                ret = client.cmd([node], "vmops.boot_id", tgt_type="list", timeout=5)
        except Exception:  # pylint: disable=broad-except
            return None
        value = (ret or {}).get(node)
        return value if isinstance(value, str) and value.strip() else None

    def reboot(self, node):
        # the job never returns (the host goes down under it): fire and forget
        with local_client(self.opts) as client:
            jid = client.cmd_async([node], "system.reboot", tgt_type="list")
        if not jid:
            raise VmopsError("the reboot of %s could not be sent to its minion" % node)

    def apply(self, node, action, pillar):
        """(ok, summary) of a state, command or orchestration for ``node``."""
        kind, name = next(iter(action.items()))
        if kind == "orch":
            import salt.runner  # pylint: disable=import-outside-toplevel

            runner = salt.runner.RunnerClient(self.opts)
            ret = runner.cmd(
                "state.orchestrate",
                [name],
                kwarg={"pillar": dict(pillar, node=node)},
                print_event=False,
                full_return=True,
            )
            data = (ret or {}).get("return", ret) if isinstance(ret, dict) else ret
            ok = (ret or {}).get("retcode", 1) == 0 if isinstance(ret, dict) else False
            return ok, _state_summary(data)
        if kind == "cmd":
            with local_client(self.opts) as client:
                ret = client.cmd(
                    [node], "cmd.run_all", [name], tgt_type="list", timeout=self.timeout
                )
            out = (ret or {}).get(node)
            if not isinstance(out, dict):
                return False, "no answer from its minion"
            tail = (out.get("stderr") or out.get("stdout") or "").strip()[-300:]
            return out.get("retcode") == 0, "exit %s%s" % (
                out.get("retcode"),
                ": " + tail if tail else "",
            )
        with local_client(self.opts) as client:
            ret = client.cmd(
                [node],
                "state.apply",
                [name],
                tgt_type="list",
                kwarg={"pillar": pillar, "queue": True},
                timeout=self.timeout,
            )
        out = (ret or {}).get(node)
        if not isinstance(out, dict) or not out:
            return False, "no state result (%s)" % (str(out)[:300] if out else "no answer")
        failed = [
            "%s: %s" % (_state_name(k), v.get("comment") or "failed")
            for k, v in out.items()
            if isinstance(v, dict) and v.get("result") is False
        ]
        if failed or not all(isinstance(v, dict) for v in out.values()):
            return False, "; ".join(str(f)[:200] for f in failed[:3]) or str(out)[:300]
        return True, "%d state(s) passed" % len(out)


def _state_name(key):
    """``pkg_|-nova_|-nova-compute_|-installed`` -> ``nova-compute``."""
    parts = str(key).split("_|-")
    return parts[2] if len(parts) >= 3 else str(key)


def _state_summary(data):
    if isinstance(data, dict):
        data = data.get("data", data)
    text = str(data)
    return text[:300]


def job_return(opts, jid, minion_id, returners=None):
    """``minion_id``'s return for job ``jid`` from the master's job cache (``{"return",
    "retcode", "success"}``), or None while there is none.  Read from the cache, not the
    event bus: a return that arrived while this process could not hear the master (the
    master restarted) is still found."""
    import salt.loader  # pylint: disable=import-outside-toplevel

    if returners is None:
        returners = salt.loader.returners(opts, {})
    cache = opts.get("master_job_cache") or "local_cache"
    return (returners["%s.get_jid" % cache](jid) or {}).get(minion_id)


def run_state_job(
    opts, minion_id, fun, arg=(), kwarg=None, timeout=1800, jid=None, on_jid=None, silent_limit=120
):
    """Run state function ``fun`` (``state.highstate``, ``state.sls``) on one minion and
    wait for its return in the master's job cache: ``(jid, return)``.

    Robust to what an orchestration's ``salt.state`` is not: the master restarting while
    the job runs (the return lands in the new master's job cache), and this process being
    killed (``jid`` given: that job is waited for, not published again; ``on_jid`` is
    called with a new jid before any wait, so the caller can journal it).  While there is
    no return, the minion is asked every ~10 s whether it still runs the job; one that no
    longer does, twice, with still no return means the return was lost: an error; one that
    does not answer for ``silent_limit`` seconds (a VM that died) is an error too, long
    before ``timeout``.
    """
    import salt.exceptions  # pylint: disable=import-outside-toplevel
    import salt.loader  # pylint: disable=import-outside-toplevel

    from . import waiting  # pylint: disable=import-outside-toplevel

    config.check_minion_id(minion_id, "minion id")
    deadline = time.monotonic() + timeout
    if not jid:
        while True:
            try:
                with local_client(opts) as client:
                    pub = client.run_job(
                        [minion_id], fun, list(arg), tgt_type="list", kwarg=kwarg or {}
                    )
            except salt.exceptions.SaltClientError as exc:
                pub, why = None, exc
            else:
                why = "no job id"
            if pub and pub.get("jid"):
                jid = pub["jid"]
                break
            # {}: the master is down, or it targets no such minion (Salt says both alike)
            if MasterKeys(opts).status(minion_id) != "accepted":
                raise VmopsError(
                    "%s was not sent: the key of %s is not accepted" % (fun, minion_id)
                )
            if time.monotonic() > deadline:
                raise VmopsError("%s could not be published to %s: %s" % (fun, minion_id, why))
            time.sleep(2)  # the master is restarting: publish once it is back
        if on_jid is not None:
            on_jid(jid)
    returners = salt.loader.returners(opts, {})
    gone = {"count": 0, "asked": time.monotonic(), "silent_since": None}

    def finished():
        ret = job_return(opts, jid, minion_id, returners)
        if ret is not None:
            return ret
        if time.monotonic() - gone["asked"] >= 10:
            gone["asked"] = time.monotonic()
            try:
                with local_client(opts) as client:
                    found = client.cmd(
                        [minion_id], "saltutil.find_job", [jid], tgt_type="list", timeout=5
                    )
            except salt.exceptions.SaltClientError:
                found = {}
            if minion_id not in found:
                # silent: the master restarting, the minion reconnecting, or the VM gone
                now = time.monotonic()
                gone["silent_since"] = gone["silent_since"] or now
                if now - gone["silent_since"] > silent_limit:
                    raise VmopsError(
                        "%s stopped answering while it ran %s (job %s): silent for %ds"
                        % (minion_id, fun, jid, now - gone["silent_since"])
                    )
                return None
            gone["silent_since"] = None
            if not found[minion_id]:
                gone["count"] += 1  # it answered: the job is not running there
                ret = job_return(opts, jid, minion_id, returners)
                if ret is None and gone["count"] >= 2:
                    raise VmopsError(
                        "%s (job %s) no longer runs on %s and its return never reached "
                        "the master" % (fun, jid, minion_id)
                    )
            else:
                gone["count"] = 0
        return None

    ret = waiting.wait_for(
        finished,
        max(deadline - time.monotonic(), 1),
        "%s (job %s) on %s" % (fun, jid, minion_id),
        interval=0.25,  # a read of the job cache on the master's disk: cheap
    )
    return jid, ret


def state_failures(ret):
    """The names and comments of the states that failed in a state function's return, or
    the reason the run did not happen at all; empty when it passed."""
    data = ret.get("return")
    if isinstance(data, list):  # a render error, "The function ... is running as PID ..."
        return [str(x) for x in data] or ["no states ran"]
    if not isinstance(data, dict):
        return [str(data)]
    failed = [
        "%s: %s" % (_state_name(key), str(state.get("comment"))[:300])
        for key, state in data.items()
        if isinstance(state, dict) and state.get("result") is False
    ]
    if not failed and ret.get("retcode") not in (None, 0):
        failed = ["retcode %s" % ret.get("retcode")]
    return failed


def match_minions(opts, target, tgt_type="glob"):
    """The accepted minion ids a Salt target matches, on the master, from its keys and its
    grains/pillar cache (no ping: a minion that is down is matched too)."""
    import salt.utils.minions  # pylint: disable=import-outside-toplevel

    found = salt.utils.minions.CkMinions(opts).check_minions(target, tgt_type)
    return sorted(found.get("minions") or [])


def orchestrate(opts, sls, pillar, timeout=7200):
    """Run ``salt-run state.orch <sls> pillar=<pillar>`` as a process of its own (its own
    locks, its own job), wait for it: ``(exit code, the tail of what it printed)``."""
    import json  # pylint: disable=import-outside-toplevel
    import subprocess  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel

    cmd = [
        sys.executable,
        "-c",
        "import salt.scripts; salt.scripts.salt_run()",
        "-c",
        os.path.dirname(opts["conf_file"]),
        "--out=json",
        "--log-level=quiet",
        "state.orch",
        sls,
        "pillar=%s" % json.dumps(pillar),
    ]
    try:
        proc = subprocess.run(  # noqa: S603
            cmd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise VmopsError("%s did not end within %ss" % (sls, timeout)) from exc
    return proc.returncode, (proc.stdout or "")[-4000:] + (proc.stderr or "")[-1000:]


# ---------------------------------------------------------------------- replacements
# One place builds a replacement and runs its steps: the runner (vmops.replace_vm) and the
# orchestration's state (vmops.replace_step, which saves a runner client per step) both
# call replace_step.


def run_state(opts, minion_id, fun, timeout, jid, on_jid, arg=(), pillar=None):
    """(jid, failures, number of states) of state function ``fun`` on ``minion_id``, waited
    for in the master's job cache; ``queue``: behind a state run still going."""
    kwarg = {"queue": True}
    if pillar:
        kwarg["pillar"] = pillar
    jid, ret = run_state_job(
        opts, minion_id, fun, arg, kwarg=kwarg, timeout=timeout, jid=jid, on_jid=on_jid
    )
    data = ret.get("return")
    return jid, state_failures(ret), len(data) if isinstance(data, dict) else 0


def replacement(opts, pillar, cloud, token, events):
    """A ``replace.Replacement`` wired to this master."""
    import types  # pylint: disable=import-outside-toplevel

    from . import replace  # pylint: disable=import-outside-toplevel

    conf, prov = provider(opts, pillar, cloud)
    ops = types.SimpleNamespace(
        wait=lambda minion_id, timeout: wait_minion(opts, minion_id, timeout),
        grain=lambda minion_id, grain: minion_grain(opts, minion_id, grain),
        idle=lambda minion_id, timeout: wait_minion_idle(opts, minion_id, timeout),
        run_state=lambda *args, **kwargs: run_state(opts, *args, **kwargs),
        answers=lambda minion_id, timeout: minion_answers(opts, minion_id, timeout),
        call=lambda minion_id, fun, arg, kwarg, timeout: minion_call(
            opts, minion_id, fun, arg, kwarg, timeout
        ),
    )
    journal = replace.Journal(journal_store(opts, "replace", "replacement"))
    return replace.Replacement(
        conf,
        prov,
        MasterKeys(opts),
        journal,
        ops,
        events=events,
        token=token,
        registry=registry(opts),
    )


def replace_step(
    opts,
    pillar,
    events,
    name,
    step,
    cloud=None,
    token=None,
    test=False,
    options=None,
    overrides=None,
    timeout=300,
    network=None,
    highstate_timeout=3600,
):
    """One step of the replacement of ``name`` (see ``vmops.replace_vm``): its report.
    Raises the pack's errors (a failed step is journaled first)."""
    from . import replace  # pylint: disable=import-outside-toplevel

    if step not in replace.RUNNER_STEPS:
        raise InvalidInput("step must be one of %s" % ", ".join(replace.RUNNER_STEPS))
    timeout_s = config.strict_int(timeout, "timeout")
    highstate_timeout_s = config.strict_int(highstate_timeout, "highstate_timeout")
    rep = replacement(opts, pillar, cloud, token, events)
    calls = {
        "plan": lambda: rep.plan(name, overrides or {}, options or {}, test=test),
        "boot": lambda: rep.boot(name, timeout=max(timeout_s, 600)),
        "wait": lambda: rep.wait(name, timeout=timeout_s),
        "sanity": lambda: rep.sanity(name),
        "highstate": lambda: rep.highstate(name, timeout=highstate_timeout_s),
        "deploy": lambda: rep.passed(name, "deploy"),
        "cutover": lambda: rep.cutover(name, timeout=timeout_s, state_timeout=highstate_timeout_s),
        "checked": lambda: rep.checked(name),
        "smoke": lambda: rep.smoke(name, network),
        "flip": lambda: rep.flip(name),
        "retire": lambda: rep.retire(name),
        "rollback": lambda: rep.rollback(name, timeout=timeout_s),
        "abandon": lambda: rep.abandon(name),
        "status": lambda: (
            dict(rep.summary(rep.journal.load(name) or {}), result=True)
            if rep.journal.load(name)
            else {"result": True, "vm": name, "state": None}
        ),
    }
    try:
        return calls[step]()
    except VmopsError as exc:
        if step not in ("plan", "rollback", "abandon", "status"):
            rep.fail(name, step, exc)
        raise


def provision_step(opts, pillar, events, name, step, result=True):
    """A step of provisioning the admitted minion ``name`` (``check`` or ``done``): what the
    runner ``vmops.provision`` and the state ``vmops.provision_step`` both run."""
    from . import admission  # pylint: disable=import-outside-toplevel

    conf = settings(opts, pillar)
    if step == "check":
        # one publish answers both questions: the first grains.get the minion answers says
        # it is up and what its sanity grain is (every publish reaches every minion)
        grain, seen = config.sanity_grain(conf), {}

        def answers(minion_id):
            try:
                seen[minion_id] = minion_grain(opts, minion_id, grain, timeout=1)
            except VmopsError:
                return False
            return True

        def wait(minion_id, timeout):
            from . import waiting  # pylint: disable=import-outside-toplevel

            waiting.wait_for(lambda: answers(minion_id), timeout, "minion %s to answer" % minion_id)

        def grain_of(minion_id, which):
            if which == grain and minion_id in seen:
                return seen[minion_id]
            return minion_grain(opts, minion_id, which)

        return admission.provision_check(conf, registry(opts), name, wait, grain_of)
    if step == "done":
        return admission.provision_done(
            registry(opts), name, config.strict_bool(result, "result"), events
        )
    raise InvalidInput("step must be check or done, not %r" % (step,))


def provision_minion(opts, pillar, events, name, highstate_timeout=3600):
    """``orch.provision_minion`` in one call: check, highstate (job cache), done."""
    try:
        checked = provision_step(opts, pillar, events, name, "check")
        jid, failures, count = run_state(
            opts, name, "state.highstate", highstate_timeout, None, None
        )
    except VmopsError as exc:
        done = provision_step(opts, pillar, events, name, "done", False)
        return dict(done, result=False, comment="%s; %s" % (exc, done.get("comment")))
    ok = not failures
    done = provision_step(opts, pillar, events, name, "done", ok)
    comment = "%s; highstate %s (job %s, %d states)%s" % (
        checked.get("comment"),
        "passed" if ok else "failed",
        jid,
        count,
        "" if ok else ": " + "; ".join(failures[:5]),
    )
    return dict(done, result=ok, jid=jid, comment=comment)
