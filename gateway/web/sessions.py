"""Browser sessions of researchers: a sealed cookie, readable only by the gateway.

Why a sealed cookie rather than sessions in memory or in a table: gateway replicas
(``gateway/dispatch_pg.py``) serve one researcher's requests in turn, so a session
kept in one process's memory would fail on the next replica, and a table would need
a migration for data nobody needs after a restart. The cookie is a Fernet token
(AES-CBC + HMAC-SHA256, from ``cryptography``) under a key derived with HKDF from the
gateway's Ed25519 signing key, which every replica already shares (nodes pin its
public half); it carries its own issue time, and is refused after :attr:`SessionSealer.ttl`.

It never holds the researcher's token, only the token's hash: every request resolves
the hash to the researcher again, so revoking a token ends all its sessions at once.
Each session carries a random CSRF token (synchronizer pattern, bound to the
session): the page embeds it and every state-changing request must send it back in
``X-CSRF-Token``; the cookie itself is HttpOnly, so no script can read either.

What a stateless cookie cannot do: logging out deletes the browser's cookie, but a
copy taken before (it is HttpOnly and SameSite=Strict, so only by someone with the
browser's disk) stays valid until its time is up; revoking the token ends it.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["SESSION_COOKIE", "SessionSealer", "WebSession"]

SESSION_COOKIE = "varde_session"
"""The cookie that carries a session (HttpOnly, SameSite=Strict, path /feasibility)."""

_INFO = b"varde feasibility page session v1"


@dataclass(frozen=True)
class WebSession:
    """One researcher's login in a browser."""

    token_hash: str
    """Hash of the researcher token it was opened with (resolved again on every request)."""
    csrf: str
    issued: int
    """Unix time the session was opened."""


class SessionSealer:
    """Seals sessions into cookie values and opens them again, for at most ``ttl`` seconds.

    ``clock`` is injectable so tests can expire a session without sleeping.

    >>> now = [1_000_000.0]
    >>> sealer = SessionSealer(b"k" * 32, ttl=60, clock=lambda: now[0])
    >>> cookie, session = sealer.open("h")
    >>> sealer.read(cookie) == session
    True
    >>> now[0] += 61
    >>> sealer.read(cookie) is None
    True
    """

    def __init__(
        self, secret: bytes, ttl: int = 8 * 3600, clock: Callable[[], float] = time.time
    ) -> None:
        if len(secret) < 32:
            raise ValueError("a session secret needs at least 32 bytes")
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(secret)
        self._fernet = Fernet(base64.urlsafe_b64encode(key))
        self.ttl = ttl
        self._clock = clock

    @classmethod
    def for_gateway(cls, signing_key: Ed25519PrivateKey, ttl: int = 8 * 3600) -> SessionSealer:
        """The sealer every replica of one gateway shares (its key derived from ``signing_key``)."""
        raw = signing_key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return cls(raw, ttl=ttl)

    def open(self, token_hash: str) -> tuple[str, WebSession]:
        """A new session for the researcher whose token hashes to ``token_hash``, and its cookie."""
        now = int(self._clock())
        session = WebSession(token_hash, secrets.token_urlsafe(32), now)
        body = json.dumps({"h": token_hash, "c": session.csrf}).encode()
        return self._fernet.encrypt_at_time(body, now).decode(), session

    def read(self, cookie: str | None) -> WebSession | None:
        """The session sealed in ``cookie``, or None (missing, forged, altered or expired)."""
        if not cookie or len(cookie) > 4096:
            return None
        now = int(self._clock())
        try:
            raw = cookie.encode("ascii")
            body = json.loads(self._fernet.decrypt_at_time(raw, self.ttl, now))
            issued = self._fernet.extract_timestamp(raw)
        except (InvalidToken, UnicodeEncodeError, ValueError):
            return None
        if issued > now + 60:  # from the future (a clock far off): refused
            return None
        hashed, csrf = body.get("h"), body.get("c")
        if not isinstance(hashed, str) or not isinstance(csrf, str):
            return None
        return WebSession(hashed, csrf, issued)
