"""Ed25519 keys and signatures, via ``cryptography``; nothing hand-rolled.

Why Ed25519: small keys that fit in a JSON field, deterministic signatures, no
parameter choices to get wrong. Keys travel as base64 of the raw 32 bytes, and
private keys rest on disk as unencrypted PKCS#8 PEM readable by the owner only
(a hospital protects its node's disk; key-at-rest encryption is a deployment
choice, not ours to hard-code).

>>> key = generate_key()
>>> pub = public_key_b64(key)
>>> verify(pub, b"hello", sign(key, b"hello"))
True
>>> verify(pub, b"hellO", sign(key, b"hello"))
False
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


def generate_key() -> Ed25519PrivateKey:
    """A fresh signing key."""
    return Ed25519PrivateKey.generate()


def public_key_b64(key: Ed25519PrivateKey) -> str:
    """The public half as base64 of its 32 raw bytes (what the other side pins)."""
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def load_public_key(b64: str) -> Ed25519PublicKey:
    """Parse a pinned public key; ``ValueError`` if it is not 32 base64 bytes."""
    try:
        raw = base64.b64decode(b64, validate=True)
    except binascii.Error as err:
        raise ValueError("public key is not valid base64") from err
    if len(raw) != 32:
        raise ValueError("an Ed25519 public key has 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


def key_fingerprint(public_b64: str) -> str:
    """A short name of a public key both sides can show and compare (``SHA256:`` + 16 hex).

    ``varde admin nodes`` shows it for every node and ``varde node doctor`` for
    its own key, so an operator and a site can check on the phone that they mean
    the same key.
    """
    import hashlib

    try:
        raw = base64.b64decode(public_b64, validate=True)
    except (binascii.Error, ValueError):
        return "(not a key)"  # shown, never compared equal to a real fingerprint
    return "SHA256:" + hashlib.sha256(raw).hexdigest()[:16]


def sign(key: Ed25519PrivateKey, data: bytes) -> str:
    """Signature over ``data`` as base64."""
    return base64.b64encode(key.sign(data)).decode("ascii")


def verify(public_b64: str, data: bytes, signature_b64: str) -> bool:
    """True iff ``signature_b64`` is a valid signature of ``data`` under ``public_b64``."""
    try:
        pub = load_public_key(public_b64)
        sig = base64.b64decode(signature_b64, validate=True)
        pub.verify(sig, data)
    except (ValueError, binascii.Error, InvalidSignature):
        return False
    return True


def save_private_key(key: Ed25519PrivateKey, path: Path) -> None:
    """Write ``key`` as PEM readable by the owner only."""
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read a key written by :func:`save_private_key`."""
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} does not hold an Ed25519 private key")
    return key


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """The key at ``path``, generated on first use."""
    if path.exists():
        return load_private_key(path)
    key = generate_key()
    save_private_key(key, path)
    return key
