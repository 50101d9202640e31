"""Polling with a deadline and back-off: one implementation for every wait of the pack."""

import time

from .errors import Timeout


def wait_for(probe, timeout, what, interval=0.5, max_interval=5.0, backoff=1.5, clock=time):
    """Call ``probe()`` until it returns something truthy; return that.

    ``probe`` may raise to stop waiting (e.g. a server that went to ERROR).
    Raises :class:`Timeout` naming ``what`` and the last value seen.
    """
    deadline = clock.monotonic() + timeout
    last = None
    while True:
        last = probe()
        if last:
            return last
        now = clock.monotonic()
        if now >= deadline:
            raise Timeout("timed out after %ss waiting for %s" % (timeout, what))
        clock.sleep(min(interval, max(deadline - now, 0)))
        interval = min(interval * backoff, max_interval)
