"""Staff login for the site console: scrypt password hashes on disk, sessions in memory.

Why scrypt from the standard library: a well-reviewed memory-hard KDF with no new
dependency inside the hospital. Hashes live in ``state_dir/console_users.json``
(owner-readable only); sessions are random tokens held in the node's memory
(a restart logs everybody out, which is the safe direction).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from pathlib import Path

__all__ = ["Sessions", "add_user", "check_password", "hash_password", "users_path"]

_N, _R, _P = 2**14, 8, 1
_NAME = re.compile(r"^[a-z][a-z0-9_.-]{1,40}$")


def users_path(state_dir: Path) -> Path:
    """Where a node keeps its console users."""
    return state_dir / "console_users.json"


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$salt$hash`` (base64), so parameters can be raised later.

    >>> h = hash_password("correct horse")
    >>> check_hash(h, "correct horse"), check_hash(h, "wrong")
    (True, False)
    """
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${_N}${_R}${_P}${b64(salt).decode()}${b64(digest).decode()}"


def check_hash(stored: str, password: str) -> bool:
    """Constant-time check of ``password`` against a :func:`hash_password` string."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=32,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(digest))


def _load(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def add_user(path: Path, name: str, password: str) -> None:
    """Create or reset a staff user (file written owner-readable only)."""
    if not _NAME.match(name):
        raise ValueError("user names are 2-41 lowercase letters, digits, '.', '_' or '-'")
    if len(password) < 10:
        raise ValueError("a console password needs at least 10 characters")
    users = _load(path)
    users[name] = hash_password(password)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(users, fh, indent=2)


def check_password(path: Path, name: str, password: str) -> bool:
    """True iff ``name`` exists and ``password`` is theirs (unknown names cost the same time)."""
    stored = _load(path).get(name)
    if stored is None:
        check_hash(hash_password("x", salt=b"0" * 16), password)  # same work: no user oracle
        return False
    return check_hash(stored, password)


class Sessions:
    """Logged-in staff by random token, expiring after ``ttl`` seconds."""

    def __init__(self, ttl: float = 8 * 3600) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._by_token: dict[str, tuple[str, float]] = {}

    def open(self, user: str) -> str:
        """A new session token for ``user``."""
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._by_token[token] = (user, time.monotonic() + self.ttl)
        return token

    def user(self, token: str | None) -> str | None:
        """The user of a live session, or None."""
        if not token:
            return None
        with self._lock:
            found = self._by_token.get(token)
            if found is None or found[1] < time.monotonic():
                self._by_token.pop(token, None)
                return None
            return found[0]

    def close(self, token: str | None) -> None:
        """End a session (logout)."""
        if token:
            with self._lock:
                self._by_token.pop(token, None)
