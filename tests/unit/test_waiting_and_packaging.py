import configparser
import os

import pytest

from tests.conftest import REPO
from vmopslib import loader, waiting
from vmopslib.errors import Timeout


class FakeClock:
    def __init__(self):
        self.now = 0.0
        self.sleeps = []

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def test_wait_for_backs_off_and_returns_the_value():
    clock, calls = FakeClock(), []

    def probe():
        calls.append(1)
        return "ok" if len(calls) == 5 else None

    assert (
        waiting.wait_for(probe, 60, "x", interval=1, backoff=2, max_interval=4, clock=clock) == "ok"
    )
    assert clock.sleeps == [1, 2, 4, 4]


def test_wait_for_times_out_with_a_clear_message():
    clock = FakeClock()
    with pytest.raises(Timeout, match="timed out after 3s waiting for the thing"):
        waiting.wait_for(lambda: None, 3, "the thing", interval=1, backoff=1, clock=clock)
    assert clock.now == 3


def test_entry_point_dirs_hold_the_loader_modules():
    dirs = loader.get_loader_dirs()
    assert set(dirs) == {"modules", "runners", "states"}
    # in a checkout the wheel's package dirs are the repo's _modules/_runners/_states
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    mapping = dict(line.split(" = ") for line in cfg["options"]["package_dir"].strip().splitlines())
    assert mapping["vmopslib.salt_modules"] == "_modules"
    assert mapping["vmopslib.salt_runners"] == "_runners"
    assert "vmopslib.loader:get_loader_dirs" in cfg["options.entry_points"]["salt.loader"]
    for src in ("_modules", "_runners"):
        assert os.path.exists(REPO / src / "vmops.py")


def test_wait_for_polls_a_fifth_of_the_time_waited_by_default():
    """Without a back-off the pause follows the time waited (0.25 s .. 5 s): a short wait
    ends at most ~20 % late, a long one polls every 5 s."""
    clock, calls = FakeClock(), []

    def probe():
        calls.append(clock.now)
        clock.now += 0.1  # each request takes 0.1 s
        return "ok" if clock.now > 60 else None

    assert waiting.wait_for(probe, 120, "x", clock=clock) == "ok"
    assert clock.sleeps[0] == 0.25 and max(clock.sleeps) == 5.0
    for at, pause in zip(calls, clock.sleeps, strict=False):
        assert pause <= max(0.25, (at + 0.1) * 0.2) + 1e-9
    assert len(calls) < 40
