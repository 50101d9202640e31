"""Where the pack keeps its state: run journals and registrations, one record per key.

Records live in a *records* object with four calls (``fetch``, ``store``,
``flush``, ``keys``) bound to one bank.  Two kinds exist:

* :class:`DirectoryRecords`: one JSON file per key in a directory (no Salt
  needed: unit tests, tools);
* ``saltglue.CacheRecords``: Salt's own cache subsystem (``salt.cache``), the
  driver named by ``vmops:store:driver`` in the master config, by default the
  master's ``cache`` (``localfs``).  Pick a shared driver (``consul``,
  ``etcd``, ``redis``, ``mysql``) and every master of a multi-master or HA
  installation sees the same journals and registrations.

Locks (one run per key) are two layers:

* an ``flock`` on ``<lockdir>/<key>.lock``, held by the running process for
  the whole run: the kernel drops it when that process dies (killed
  ``salt-run``, master restart), so a re-run resumes instead of waiting for a
  stale owner, and two processes of one master can never both hold it;
* on a *shared* store, also a lease record in the store (owner, token,
  heartbeat), taken with Fischer's algorithm: read (free, or stale), write our
  token, wait ``settle`` seconds, read back; only the writer whose token is
  still there holds it.  Salt's cache API has no atomic create, and this is
  exact as long as any master's read-then-write of a lease takes less than
  ``settle`` (default 1 s; the write is one request).  A thread renews the
  heartbeat every ``lease_seconds / 3``; a master that died leaves a lease
  that others take over after ``lease_seconds`` without a heartbeat.

What each store guarantees (README, "Where state lives"): a reader never
sees half a record (``localfs`` and these JSON files write a temporary file
and rename it; the shared drivers write one value per request); a record is
never silently read as empty when it is corrupt (a clear error naming it).
"""

import errno
import fcntl
import json
import os
import socket
import threading
import time
import uuid

from .errors import InvalidInput


class Locked(InvalidInput):
    """Another live process holds the lock: nothing was changed."""


def corrupt(what, key, where, exc):
    return InvalidInput(
        "the journal of the %s of %s (%s) is not a valid record (%s): move it aside to start over; "
        "nothing was changed" % (what, key, where, exc)
    )


class DirectoryRecords:
    """``<directory>/<key>.json``, written to a unique temporary name and renamed."""

    shared = False

    def __init__(self, directory):
        self.directory = directory

    def where(self, key):
        return os.path.join(self.directory, "%s.json" % key)

    def fetch(self, key):
        """The record (any JSON value), or None; ValueError when it is not JSON."""
        try:
            with open(self.where(key), encoding="utf-8") as fh:
                text = fh.read()
        except FileNotFoundError:
            return None
        return json.loads(text)

    def store(self, key, record):
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        path = self.where(key)
        tmp = "%s.%d.%s.tmp" % (path, os.getpid(), uuid.uuid4().hex[:8])
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(record, fh, indent=1, sort_keys=True, default=str)
        os.replace(tmp, path)

    def flush(self, key):
        try:
            os.unlink(self.where(key))
        except FileNotFoundError:
            return False
        return True

    def keys(self):
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        return sorted(n[: -len(".json")] for n in names if n.endswith(".json"))


class RunLock:
    """An exclusive, non-blocking lock that dies with its process."""

    def __init__(self, path):
        self.path = path
        self._fd = None

    def acquire(self):
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.read(fd, 200).decode("utf-8", "replace").strip()
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                return holder or "another process"
            raise
        os.ftruncate(fd, 0)
        os.write(
            fd, ("pid %d since %s" % (os.getpid(), time.strftime("%Y-%m-%d %H:%M:%S"))).encode()
        )
        self._fd = fd
        return None

    def release(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @property
    def held(self):
        return self._fd is not None


class Lease:
    """A lock record in a shared store (Fischer's algorithm, with a heartbeat thread)."""

    def __init__(self, records, key, owner, lease_seconds=60.0, settle=1.0):
        self.records, self.key, self.owner = records, key, owner
        self.lease_seconds, self.settle = float(lease_seconds), float(settle)
        self.token = None
        self._stop = threading.Event()
        self._thread = None

    def holder(self, now=None):
        """Who holds a live lease on the key (None: free or stale)."""
        now = time.time() if now is None else now
        try:
            cur = self.records.fetch(self.key)
        except ValueError:
            return None
        if not isinstance(cur, dict) or now - float(cur.get("heartbeat", 0)) >= self.lease_seconds:
            return None
        if cur.get("host") == socket.gethostname() and not _alive(cur.get("pid")):
            return None  # a run of this master that died: its flock went with it, so does this
        return cur.get("owner") or "another master"

    def acquire(self):
        """None when taken, else who holds it."""
        holder = self.holder()
        if holder is not None:
            return holder
        token = uuid.uuid4().hex
        now = time.time()
        self.records.store(
            self.key,
            {
                "owner": self.owner,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "token": token,
                "since": now,
                "heartbeat": now,
            },
        )
        time.sleep(self.settle)
        back = self.records.fetch(self.key)
        if not isinstance(back, dict) or back.get("token") != token:
            return (back or {}).get("owner") or "another master"
        self.token = token
        self._thread = threading.Thread(target=self._renew, name="vmops-lease", daemon=True)
        self._thread.start()
        return None

    def _renew(self):
        while not self._stop.wait(self.lease_seconds / 3.0):
            cur = self.records.fetch(self.key)
            if not isinstance(cur, dict) or cur.get("token") != self.token:
                return  # taken over (we were silent past the lease): the run's next step sees it
            cur["heartbeat"] = time.time()
            self.records.store(self.key, cur)

    def release(self):
        self._stop.set()
        if self.token is None:
            return
        try:
            cur = self.records.fetch(self.key)
            if isinstance(cur, dict) and cur.get("token") == self.token:
                self.records.flush(self.key)
        finally:
            self.token = None


class HeldLock:
    """The local flock and, on a shared store, the lease: released together."""

    def __init__(self, local, lease=None):
        self.local, self.lease = local, lease

    def release(self):
        if self.lease is not None:
            self.lease.release()
        self.local.release()

    @property
    def held(self):
        return self.local.held


def _alive(pid):
    try:
        os.kill(int(pid), 0)
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def owner_name():
    return "pid %d on %s" % (os.getpid(), socket.gethostname())


class JournalStore:
    """Records of one kind (``what``: "replacement", "evacuation") and a lock per key.

    ``records`` a records object (or a directory path: JSON files there);
    ``lockdir`` where the local flocks live (default: the directory);
    ``leases`` a records object for leases (needed when ``records.shared``).
    """

    def __init__(self, records, what="run", lockdir=None, leases=None, lease_seconds=60.0):
        if isinstance(records, str):
            lockdir = lockdir or records
            records = DirectoryRecords(records)
        if lockdir is None:
            raise ValueError("a store needs a directory for its local locks")
        if getattr(records, "shared", False) and leases is None:
            raise ValueError("a shared store needs a lease bank")
        self.records, self.what, self.lockdir = records, what, lockdir
        self.leases, self.lease_seconds = leases, lease_seconds

    def load(self, key):
        """The record, or None; a corrupt record is a clear error naming where it is."""
        try:
            record = self.records.fetch(key)
        except (ValueError, TypeError) as exc:
            raise corrupt(self.what, key, self.records.where(key), exc) from None
        if record in (None, {}):
            return None
        if not isinstance(record, dict):
            raise InvalidInput(
                "the journal %s does not hold a record; move it aside" % self.records.where(key)
            )
        return record

    def save(self, key, record):
        self.records.store(key, record)

    def keys(self):
        return self.records.keys()

    def _local(self, key):
        return RunLock(os.path.join(self.lockdir, "%s.lock" % key))

    def _lease(self, key):
        return Lease(self.leases, key, owner_name(), self.lease_seconds)

    def lock(self, key):
        """Take the key's lock for this process, or raise :class:`Locked` naming the holder."""
        local = self._local(key)
        holder = local.acquire()
        lease = None
        if holder is None and self.leases is not None:
            lease = self._lease(key)
            holder = lease.acquire()
            if holder is not None:
                local.release()
        if holder is not None:
            raise Locked(
                "a %s of %s is already running (%s); nothing was changed" % (self.what, key, holder)
            )
        return HeldLock(local, lease)

    def is_locked(self, key):
        """Who holds the key's lock (None: nobody)."""
        local = self._local(key)
        holder = local.acquire()
        if holder is not None:
            return holder
        local.release()
        if self.leases is not None:
            return self._lease(key).holder()
        return None
