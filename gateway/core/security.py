"""Bearer tokens and enrollment tokens: random, shown once, stored hashed.

Why SHA-256 and not a slow password hash: the tokens are 256-bit random
strings generated here, not human passwords, so brute force is out of reach
and a fast hash keeps every request's lookup cheap.
"""

from __future__ import annotations

import hashlib
import secrets


def new_token(prefix: str) -> str:
    """A fresh secret like ``vr_…`` (researcher) or ``ve_…`` (enrollment)."""
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def token_hash(token: str) -> str:
    """What the database stores for ``token``.

    >>> len(token_hash("vr_x"))
    64
    """
    return hashlib.sha256(token.encode()).hexdigest()
