"""A clock for step machines under test: ``sleep`` moves time on at once."""

import time
from datetime import datetime, timezone


class Clock:
    def __init__(self):
        self.now = time.time()

    def time(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def stamp(epoch):
    """``epoch`` as Nova writes ``updated_at`` (UTC, no zone)."""
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")
