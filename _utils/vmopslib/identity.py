"""Minion identity: fingerprints, and what a server's console says about its minion's key.

A new VM makes its own key pair: no private key ever leaves it (none is in its
user-data).  The pack's user-data makes cloud-init print, on the server's
console, the minion's public key tagged with the run's nonce
(``ci-info: salt-minion public key [<nonce>]: <base64 of minion.pub>``) and its
fingerprint.  The console is the cloud's evidence: only the server itself
writes there, and the cloud's API serves it to the master.  The fingerprint is
the one ``salt-key -F`` prints (sha256 over the PEM body lines), so an operator
can compare the two by eye.
"""

import base64
import binascii
import hashlib
import re

# The line the pack's user-data makes cloud-init print on the console (see userdata.py).
FINGERPRINT_LINE = "ci-info: salt-minion key fingerprint (sha256): "
# Whole lines only (optionally behind the kernel's timestamp and cloud-init's journal tag):
# a line that some program echoed inside another line (a web log of a request, say) is
# not cloud-init's.
_LINE_START = r"^(?:\[\s*\d+\.\d+\]\s*)?(?:cloud-init\[\d+\]:\s*)?"
_FINGERPRINT_RE = re.compile(
    _LINE_START + re.escape(FINGERPRINT_LINE) + r"((?:[0-9a-f]{2}:){31}[0-9a-f]{2})[ \t\r]*$",
    re.MULTILINE,
)


# Where salt-minion keeps its public key on the Linux packages (onedir and distro).
MINION_PUB = "/etc/salt/pki/minion/minion.pub"
PUBKEY_MARKER = "ci-info: salt-minion public key ["
_PUBKEY_RE = re.compile(
    _LINE_START
    + re.escape(PUBKEY_MARKER)
    + r"([0-9a-f]{8,64})\]: ([A-Za-z0-9+/=]{64,8192})[ \t\r]*$",
    re.MULTILINE,
)
_TAG_RE = re.compile(r"[0-9a-f]{8,64}\Z")


def print_pubkey_cmd(tag, path=MINION_PUB):
    """The ``runcmd`` line that prints the minion's public key, tagged, on the console.

    It waits (up to 5 minutes) for salt-minion to write its key at first start.
    """
    if not _TAG_RE.match(tag or ""):
        raise ValueError("a console tag is 8-64 lowercase hex characters")
    return (
        "sh -c 'i=0; while [ ! -s %s ] && [ $i -lt 300 ]; do sleep 1; i=$((i+1)); done; "
        'echo "%s%s]: $(base64 -w0 %s)"\'' % (path, PUBKEY_MARKER, tag, path)
    )


def console_pubkey(console_text, tag):
    """The public key (PEM) the console printed with ``tag``: the first such line, or None.

    Whole lines only, the first one wins: a line a workload echoed later (or inside
    another line) does not count.  A line that does not decode to a PEM public key is
    not evidence (None).
    """
    for found_tag, blob in _PUBKEY_RE.findall(console_text or ""):
        if found_tag != tag:
            continue
        try:
            pem = base64.b64decode(blob, validate=True).decode("ascii")
        except (binascii.Error, ValueError):
            return None
        lines = pem.strip().splitlines()
        if len(lines) < 3 or not lines[0].startswith("-----BEGIN ") or "PUBLIC KEY" not in lines[0]:
            return None
        return pem
    return None


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
