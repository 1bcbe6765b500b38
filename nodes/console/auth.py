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
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "LoginGuard",
    "Session",
    "Sessions",
    "add_user",
    "check_password",
    "hash_password",
    "users_path",
]

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


@dataclass
class Session:
    """One staff member's login: who, its CSRF token, and when it ends."""

    user: str
    csrf: str
    expires: float
    """Monotonic time after which the session is over, whatever happens."""
    idle_until: float
    """Monotonic time after which an unused session is over (moved on by every request)."""


class Sessions:
    """Logged-in staff by random token: at most ``ttl`` seconds, ``idle`` seconds unused.

    Each session carries its own random CSRF token, which every form of the
    console embeds and every state-changing request must send back
    (:func:`nodes.console.deps.staff_action`).
    """

    def __init__(self, ttl: float = 8 * 3600, idle: float = 30 * 60) -> None:
        self.ttl = ttl
        self.idle = idle
        self._lock = threading.Lock()
        self._by_token: dict[str, Session] = {}

    def open(self, user: str) -> str:
        """A new session token for ``user``."""
        token = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            self._by_token[token] = Session(
                user, secrets.token_urlsafe(32), now + self.ttl, now + self.idle
            )
        return token

    def session(self, token: str | None) -> Session | None:
        """The live session of ``token`` (its idle clock restarted), or None."""
        if not token:
            return None
        now = time.monotonic()
        with self._lock:
            found = self._by_token.get(token)
            if found is None or found.expires < now or found.idle_until < now:
                self._by_token.pop(token, None)
                return None
            found.idle_until = now + self.idle
            return found

    def user(self, token: str | None) -> str | None:
        """The user of a live session, or None."""
        found = self.session(token)
        return found.user if found is not None else None

    def close(self, token: str | None) -> None:
        """End a session (logout)."""
        if token:
            with self._lock:
                self._by_token.pop(token, None)


class LoginGuard:
    """Failed logins per user name: after ``max_failures`` within ``window`` s, a lockout.

    During the lockout (``lockout`` s) even the right password is refused, so
    guessing is bounded at ``max_failures`` tries per ``lockout`` seconds for each
    name; the node audits the lockout (``console_lockout``) and every attempt.
    """

    def __init__(self, max_failures: int = 5, window: float = 900, lockout: float = 900) -> None:
        self.max_failures, self.window, self.lockout = max_failures, window, lockout
        self._lock = threading.Lock()
        self._failures: dict[str, list[float]] = {}
        self._locked_until: dict[str, float] = {}

    def locked(self, name: str) -> float:
        """Seconds ``name`` is still locked out for (0: not locked)."""
        with self._lock:
            return max(0.0, self._locked_until.get(name, 0.0) - time.monotonic())

    def failed(self, name: str) -> bool:
        """Record a failed login; True when it starts a lockout."""
        now = time.monotonic()
        with self._lock:
            recent = [t for t in self._failures.get(name, []) if t > now - self.window]
            recent.append(now)
            self._failures[name] = recent
            if len(recent) >= self.max_failures:
                self._locked_until[name] = now + self.lockout
                self._failures[name] = []
                return True
            return False

    def succeeded(self, name: str) -> None:
        """A right password outside a lockout clears the failures."""
        with self._lock:
            self._failures.pop(name, None)
