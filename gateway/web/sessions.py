"""Browser sessions of researchers: a sealed cookie, readable only by the gateway.

Why a sealed cookie rather than sessions in memory or in a table: gateway replicas
(``gateway/dispatch_pg.py``) serve one researcher's requests in turn, so a session
kept in one process's memory would fail on the next replica, and a table would need
a migration for data nobody needs after a restart. The cookie is a Fernet token
(AES-CBC + HMAC-SHA256, from ``cryptography``) under a key derived with HKDF from the
gateway's Ed25519 signing key, which every replica already shares (nodes pin its
public half). It is refused 30 minutes after the page last used it (each request seals
it again) and 8 hours after login however busy (:class:`SessionSealer`).

It never holds the researcher's token, only the token's hash: every request resolves
the hash to the researcher again, so revoking a token ends all its sessions at once.
Each session carries a random CSRF token (synchronizer pattern, bound to the
session): the page embeds it and every state-changing request must send it back in
``X-CSRF-Token``. The cookie is HttpOnly (no script reads it); the CSRF token is in the
page, which no other site can read.

What a stateless cookie cannot do: logging out deletes the browser's cookie, but a
copy taken before (it is HttpOnly and SameSite=Strict, so only by someone with the
browser's disk) stays valid until it has been idle for 30 minutes or is 8 hours old;
revoking the token ends it at once.
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
    """Unix time the session was opened (it ends :attr:`SessionSealer.ttl` later at most)."""


class SessionSealer:
    """Seals sessions into cookie values and opens them again.

    A session ends ``idle`` seconds after its cookie was last sealed (each request the
    page makes seals it again, :meth:`refresh`), and ``ttl`` seconds after it was
    opened however busy it is. ``clock`` is injectable so tests can expire a session
    without sleeping.

    >>> now = [1_000_000.0]
    >>> sealer = SessionSealer(b"k" * 32, ttl=100, idle=60, clock=lambda: now[0])
    >>> cookie, session = sealer.open("h")
    >>> sealer.read(cookie) == session
    True
    >>> now[0] += 50; cookie = sealer.refresh(session); now[0] += 50
    >>> sealer.read(cookie) == session  # used within its idle time: still open
    True
    >>> now[0] += 1
    >>> sealer.read(sealer.refresh(session)) is None  # past its absolute time
    True
    """

    def __init__(
        self,
        secret: bytes,
        ttl: int = 8 * 3600,
        idle: int = 30 * 60,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if len(secret) < 32:
            raise ValueError("a session secret needs at least 32 bytes")
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(secret)
        self._fernet = Fernet(base64.urlsafe_b64encode(key))
        self.ttl, self.idle = ttl, min(idle, ttl)
        self._clock = clock

    @classmethod
    def for_gateway(cls, signing_key: Ed25519PrivateKey) -> SessionSealer:
        """The sealer every replica of one gateway shares (its key derived from ``signing_key``)."""
        raw = signing_key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return cls(raw)

    def open(self, token_hash: str) -> tuple[str, WebSession]:
        """A new session for the researcher whose token hashes to ``token_hash``, and its cookie."""
        session = WebSession(token_hash, secrets.token_urlsafe(32), int(self._clock()))
        return self.refresh(session), session

    def refresh(self, session: WebSession) -> str:
        """``session`` sealed again now: a cookie whose idle time starts over."""
        body = json.dumps({"h": session.token_hash, "c": session.csrf, "i": session.issued})
        return self._fernet.encrypt_at_time(body.encode(), int(self._clock())).decode()

    def read(self, cookie: str | None) -> WebSession | None:
        """The session sealed in ``cookie``, or None (missing, forged, altered, idle or over)."""
        if not cookie or len(cookie) > 4096:
            return None
        now = int(self._clock())
        try:
            raw = cookie.encode("ascii")
            body = json.loads(self._fernet.decrypt_at_time(raw, self.idle, now))
            sealed = self._fernet.extract_timestamp(raw)
        except (InvalidToken, UnicodeEncodeError, ValueError):
            return None
        if not isinstance(body, dict):
            return None
        hashed, csrf, issued = body.get("h"), body.get("c"), body.get("i")
        if not isinstance(hashed, str) or not isinstance(csrf, str) or type(issued) is not int:
            return None
        if sealed > now + 60 or issued > sealed or now - issued > self.ttl:
            return None  # from the future (a clock far off), or past its absolute time
        return WebSession(hashed, csrf, issued)
