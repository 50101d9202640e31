"""Run journals on the master's disk: one JSON record per key, and a real lock per key.

The lock is an ``flock`` on ``<key>.lock`` held by the running process for the
whole run: the kernel drops it when that process dies (killed ``salt-run``,
master restart), so a re-run resumes instead of waiting for a stale owner,
and two runs can never both hold it (no check-then-write window).  Records
are written to a unique temporary file and renamed over the old one, so a
reader never sees half a record and concurrent writers cannot mix theirs.
"""

import errno
import fcntl
import json
import os
import time
import uuid

from .errors import InvalidInput


class Locked(InvalidInput):
    """Another live process holds the lock: nothing was changed."""


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


class JournalStore:
    """``<directory>/<key>.json`` records and ``<key>.lock`` locks."""

    def __init__(self, directory, what="run"):
        self.directory = directory
        self.what = what

    def _path(self, key, ext):
        return os.path.join(self.directory, "%s.%s" % (key, ext))

    def load(self, key):
        """The record, or None; a corrupt record is a clear error naming the file."""
        path = self._path(key, "json")
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except FileNotFoundError:
            return None
        try:
            record = json.loads(text)
        except ValueError as exc:
            raise InvalidInput(
                "the journal of the %s of %s (%s) is not valid JSON (%s): move it aside to "
                "start over; nothing was changed" % (self.what, key, path, exc)
            ) from None
        if not isinstance(record, dict):
            raise InvalidInput("the journal %s does not hold a record; move it aside" % path)
        return record

    def save(self, key, record):
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        path = self._path(key, "json")
        tmp = "%s.%d.%s.tmp" % (path, os.getpid(), uuid.uuid4().hex[:8])
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(record, fh, indent=1, sort_keys=True, default=str)
        os.replace(tmp, path)

    def lock(self, key):
        """Take the key's lock for this process, or raise :class:`Locked` naming the holder."""
        lock = RunLock(self._path(key, "lock"))
        holder = lock.acquire()
        if holder is not None:
            raise Locked(
                "a %s of %s is already running (%s); nothing was changed" % (self.what, key, holder)
            )
        return lock

    def is_locked(self, key):
        lock = RunLock(self._path(key, "lock"))
        holder = lock.acquire()
        if holder is None:
            lock.release()
            return None
        return holder
