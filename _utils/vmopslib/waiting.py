"""Polling with a deadline: one implementation for every wait of the pack."""

import time

from .errors import Timeout

# By default a wait polls every fifth of the time it has waited so far (between
# ``interval`` and ``max_interval``): it notices the end at most ~20 % late (a server
# deleted after 2.5 s is seen within 0.5 s, not 1.7 s later as with a x1.5 back-off),
# and a long wait still costs few requests (every 5 s after the first 25 s).
SHARE = 0.2


def wait_for(
    probe, timeout, what, interval=0.25, max_interval=5.0, backoff=None, clock=time, share=SHARE
):
    """Call ``probe()`` until it returns something truthy; return that.

    ``probe`` may raise to stop waiting (e.g. a server that went to ERROR).
    ``backoff``: multiply the pause by it after each try (default: none, the pause is
    ``share`` of the time waited so far), always within ``interval``..``max_interval``.
    Raises :class:`Timeout` naming ``what`` and the last value seen.
    """
    start = clock.monotonic()
    deadline = start + timeout
    pause = interval
    while True:
        last = probe()
        if last:
            return last
        now = clock.monotonic()
        if now >= deadline:
            raise Timeout("timed out after %ss waiting for %s" % (timeout, what))
        if backoff is None:
            pause = min(max(interval, (now - start) * share), max_interval)
        clock.sleep(min(pause, max(deadline - now, 0)))
        if backoff is not None:
            pause = min(pause * backoff, max_interval)
