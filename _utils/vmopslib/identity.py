"""Minion identity: key pairs, fingerprints, and what a server's console says about its key.

The fingerprint is the one ``salt-key -F`` prints (sha256 over the PEM body
lines), so an operator can compare the two by eye.
"""

import hashlib
import re

# The line the pack's user-data makes cloud-init print on the console (see userdata.py).
FINGERPRINT_LINE = "ci-info: salt-minion key fingerprint (sha256): "
# Whole lines only (optionally behind the kernel's timestamp and cloud-init's journal tag):
# a fingerprint that some program echoed inside another line (a web log of a request,
# say) is not cloud-init's.
_FINGERPRINT_RE = re.compile(
    r"^(?:\[\s*\d+\.\d+\]\s*)?(?:cloud-init\[\d+\]:\s*)?" + re.escape(FINGERPRINT_LINE)
    + r"((?:[0-9a-f]{2}:){31}[0-9a-f]{2})[ \t\r]*$", re.MULTILINE)


def fingerprint(pub_pem):
    """``salt-key -F`` fingerprint of a PEM public key."""
    if isinstance(pub_pem, bytes):
        pub_pem = pub_pem.decode()
    lines = [line for line in pub_pem.splitlines(True) if line.strip()][1:-1]
    digest = hashlib.sha256("".join(lines).replace("\r\n", "\n").encode()).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def console_fingerprints(console_text):
    """Every minion-key fingerprint line the console printed, oldest first (whole lines only)."""
    return _FINGERPRINT_RE.findall(console_text or "")


def generate_keypair(bits=2048):
    """A new RSA key pair as (public PEM, private PEM), in the formats salt-minion uses."""
    # cryptography is a dependency of salt itself
    from cryptography.hazmat.primitives import serialization  # pylint: disable=import-outside-toplevel
    from cryptography.hazmat.primitives.asymmetric import rsa  # pylint: disable=import-outside-toplevel

    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    priv = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    pub = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return pub, priv
