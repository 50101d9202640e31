"""Errors of the pack.  Every message says what is wrong and what was (not) changed."""


class VmopsError(Exception):
    """Base class: a failure the operator can act on."""


class InvalidInput(VmopsError):
    """Bad input, refused before anything changed."""


class NotFound(VmopsError):
    """A server, floating IP, host, flavor... that the cloud does not have."""


class Ambiguous(VmopsError):
    """A name that matches more than one resource: give an id."""


class NotSupported(VmopsError):
    """The cloud (or this provider) has no such feature."""


class CloudError(VmopsError):
    """The cloud refused or failed a request.  ``transient``: the cloud was unavailable
    (HTTP 500/502/503/504, a connection refused, reset or timed out): the same request may
    work a moment later."""

    def __init__(self, *args, transient=False):
        super().__init__(*args)
        self.transient = transient


class Timeout(VmopsError):
    """A wait ran out of time."""
