"""Where state lives: journals and registrations on Salt's cache, locks local and shared."""

import multiprocessing
import threading
import time

import pytest

from vmopslib import replace, saltglue
from vmopslib.errors import InvalidInput
from vmopslib.store import JournalStore, Lease, Locked


def _opts(tmp_path, **vmops):
    return {"cachedir": str(tmp_path / "cache"), "cache": "localfs", "vmops": vmops}


def test_journals_and_registrations_live_in_salts_cache_banks(tmp_path):
    opts = _opts(tmp_path)
    store = saltglue.journal_store(opts, "replace", "replacement")
    journal = replace.Journal(store)
    journal.save({"vm": "app2", "state": "planned", "n": 1})
    # Salt's localfs driver: <cachedir>/vmops/replace/app2.p, readable by any salt.cache user
    import salt.cache

    assert salt.cache.factory(opts).fetch("vmops/replace", "app2")["state"] == "planned"
    assert (
        replace.Journal(saltglue.journal_store(opts, "replace", "replacement")).load("app2")["n"]
        == 1
    )
    assert store.keys() == ["app2"]
    reg = saltglue.registry(opts)
    entry = reg.expect("web1", "os", "test", ttl=60)
    assert salt.cache.factory(opts).fetch("vmops/expected", "web1")["nonce"] == entry["nonce"]
    assert [e["minion"] for e in saltglue.registry(opts).entries()] == ["web1"]
    reg.remember_refusal("web1", "fp", "no", until=time.time() + 60)
    assert reg.refusal("web1", "fp") == "no"
    reg.clear_refusal("web1")
    assert reg.refusal("web1", "fp") is None
    assert reg.forget("web1") and reg.entries() == []
    # the locks are flocks beside the cache, not records in the bank
    assert (tmp_path / "cache" / "vmops" / "locks").is_dir()


def test_a_truncated_cache_record_is_a_clear_error(tmp_path):
    opts = _opts(tmp_path)
    store = saltglue.journal_store(opts, "evacuate", "evacuation")
    store.save("cmp1", {"node": "cmp1", "state": "moving"})
    path = tmp_path / "cache" / "vmops" / "evacuate" / "cmp1.p"
    path.write_bytes(path.read_bytes()[:7])
    with pytest.raises(
        InvalidInput, match="evacuation of cmp1 .*bank vmops/evacuate.*move it aside"
    ):
        store.load("cmp1")


def test_store_settings_are_checked(tmp_path):
    assert saltglue.store_settings({"cache": "localfs"}) == {
        "driver": "localfs",
        "lease_seconds": 60,
    }
    assert saltglue.store_settings({"cache": "redis"})["driver"] == "redis"
    conf = {"cache": "localfs", "vmops": {"store": {"driver": "consul", "lease_seconds": 30}}}
    assert saltglue.store_settings(conf) == {"driver": "consul", "lease_seconds": 30}
    with pytest.raises(InvalidInput, match="lease_seconds"):
        saltglue.store_settings({"vmops": {"store": {"lease_seconds": "soon"}}})
    with pytest.raises(InvalidInput, match="mapping"):
        saltglue.store_settings({"vmops": {"store": "redis"}})


class SharedRecords:
    """An in-memory shared bank, as a consul/etcd/redis bank looks to each master."""

    shared = True

    def __init__(self, delay=0.0):
        self.data, self.delay, self.mutex = {}, delay, threading.Lock()

    def where(self, key):
        return "memory:%s" % key

    def fetch(self, key):
        with self.mutex:
            value = self.data.get(key)
        return dict(value) if value else None

    def store(self, key, record):
        time.sleep(self.delay)  # a slow network write: the race Fischer's wait is for
        with self.mutex:
            self.data[key] = dict(record)

    def flush(self, key):
        with self.mutex:
            return self.data.pop(key, None) is not None

    def keys(self):
        return sorted(self.data)


def _masters(tmp_path, n=2, lease_seconds=60, delay=0.0):
    """``n`` masters sharing one store: each its own lock directory (its own disk)."""
    records, leases = SharedRecords(), SharedRecords(delay)
    return [
        JournalStore(
            records,
            "replacement",
            lockdir=str(tmp_path / ("m%d" % i)),
            leases=leases,
            lease_seconds=lease_seconds,
        )
        for i in range(n)
    ]


def test_a_run_on_one_master_locks_out_the_others_until_it_ends(tmp_path):
    one, two = _masters(tmp_path)
    held = one.lock("app2")
    assert two.is_locked("app2")
    with pytest.raises(Locked, match="replacement of app2 is already running \\(pid"):
        two.lock("app2")
    one.save("app2", {"vm": "app2", "state": "booted"})
    assert two.load("app2")["state"] == "booted"  # one view of every run
    held.release()
    assert two.is_locked("app2") is None
    two.lock("app2").release()


def test_two_masters_racing_for_one_lease_never_both_win(tmp_path):
    for round_ in range(3):
        stores = _masters(tmp_path / str(round_), n=4, delay=0.05)
        won, go = [], threading.Barrier(4)

        def take(store, go=go, won=won):
            go.wait()
            try:
                won.append(store.lock("app2"))
            except Locked:
                pass

        threads = [threading.Thread(target=take, args=(s,)) for s in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(won) == 1, won
        won[0].release()


def test_a_lease_without_heartbeat_is_taken_over_and_a_live_one_is_renewed(tmp_path):
    records = SharedRecords()
    stale = {"owner": "pid 1 on elsewhere", "host": "elsewhere", "pid": 1, "token": "t"}
    records.store("app2", dict(stale, heartbeat=time.time() - 61))
    lease = Lease(records, "app2", "me", lease_seconds=60, settle=0)
    assert lease.acquire() is None  # the other master died a minute ago
    lease.release()
    records.store("app2", dict(stale, heartbeat=time.time() - 5))
    assert Lease(records, "app2", "me", 60, 0).acquire() == "pid 1 on elsewhere"

    records = SharedRecords()
    lease = Lease(records, "app2", "me", lease_seconds=0.3, settle=0)
    assert lease.acquire() is None
    first = records.fetch("app2")["heartbeat"]
    time.sleep(0.5)
    assert records.fetch("app2")["heartbeat"] > first  # renewed while held
    assert Lease(records, "app2", "other", 0.3, 0).acquire() == "me"
    lease.release()
    assert records.fetch("app2") is None


def _dies_holding(store):
    store.lock("app2")
    # no release: the process ends (as a killed salt-run does)


def test_a_lease_of_a_dead_run_on_this_master_is_free_at_once(tmp_path):
    (store,) = _masters(tmp_path, n=1)
    store.leases.delay = 0
    proc = multiprocessing.get_context("fork").Process(target=_dies_holding, args=(store,))
    proc.start()
    proc.join(10)
    # the forked child wrote into its own copy of the in-memory bank: copy what it would have
    # left in a real shared store
    store.leases.store(
        "app2",
        {
            "owner": "pid %d" % proc.pid,
            "host": __import__("socket").gethostname(),
            "pid": proc.pid,
            "token": "x",
            "heartbeat": time.time(),
        },
    )
    assert store.is_locked("app2") is None
    store.lock("app2").release()
