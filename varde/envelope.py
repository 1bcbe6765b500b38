"""Signed envelopes: every message across the trust boundary is one.

The gateway signs each work item for one node; the node signs each release and
each poll. The signature covers the exact bytes of ``payload`` (canonical JSON,
kept as a string) rather than a re-serialisation, so no parser quirk can make
two sides disagree about what was signed (the same reason JWS signs bytes).

The header inside the payload carries ``sender``, ``recipient``, a random
``nonce`` and ``issued_at``/``expires_at``. :func:`open_envelope` checks, in
order: signature (forged), recipient (misaddressed), expiry (expired), and the
caller's nonce store (replayed), raising :class:`EnvelopeRejected` whose
``reason`` names the failed check.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from collections.abc import Callable
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from varde.crypto import sign, verify
from varde.errors import EnvelopeRejected

Kind = Literal["work", "release", "poll", "hello"]
MAX_CLOCK_SKEW = dt.timedelta(seconds=30)


def utcnow() -> dt.datetime:
    """Timezone-aware now; every timestamp on the wire is UTC."""
    return dt.datetime.now(dt.UTC)


class Header(BaseModel):
    """Who sent what to whom, and until when it is valid."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Kind
    sender: str
    recipient: str
    nonce: str
    issued_at: dt.datetime
    expires_at: dt.datetime


class Payload(BaseModel):
    """Header plus the message body (a JSON object whose model depends on ``kind``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    header: Header
    body: dict[str, Any]


class SignedEnvelope(BaseModel):
    """What travels: the canonical payload string and its signature."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    payload: str = Field(max_length=4_000_000)
    signature: str = Field(max_length=200)


def canonical_json(obj: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, no NaN.

    >>> canonical_json({"b": 1, "a": [1.5, "x"]})
    '{"a":[1.5,"x"],"b":1}'
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def seal(
    key: Ed25519PrivateKey,
    *,
    kind: Kind,
    sender: str,
    recipient: str,
    body: dict[str, Any],
    ttl: dt.timedelta,
    now: dt.datetime | None = None,
) -> SignedEnvelope:
    """Sign ``body`` for ``recipient``; valid for ``ttl`` from ``now``."""
    issued = now or utcnow()
    header = Header(
        kind=kind,
        sender=sender,
        recipient=recipient,
        nonce=secrets.token_hex(16),
        issued_at=issued,
        expires_at=issued + ttl,
    )
    payload = canonical_json({"header": header.model_dump(mode="json"), "body": body})
    return SignedEnvelope(payload=payload, signature=sign(key, payload.encode()))


def peek(envelope: SignedEnvelope) -> Payload:
    """Parse without verifying (only to learn who claims to have sent it)."""
    try:
        return Payload.model_validate_json(envelope.payload)
    except ValidationError as err:
        raise EnvelopeRejected("malformed", "payload is not a valid envelope") from err


def open_envelope(
    envelope: SignedEnvelope,
    *,
    sender_key: str,
    recipient: str,
    kinds: tuple[Kind, ...],
    seen_nonce: Callable[[str, dt.datetime], bool] | None = None,
    now: dt.datetime | None = None,
) -> Payload:
    """Verify and parse ``envelope``; raise :class:`EnvelopeRejected` on any failed check.

    ``seen_nonce(nonce, expires_at)`` must record the nonce and return True if it
    had been recorded before; a replay store only needs to keep nonces until
    they expire, since an expired envelope is refused anyway.
    """
    if not verify(sender_key, envelope.payload.encode(), envelope.signature):
        raise EnvelopeRejected("forged", "signature does not verify against the pinned key")
    payload = peek(envelope)
    head = payload.header
    if head.kind not in kinds:
        raise EnvelopeRejected("wrong_kind", f"expected {'/'.join(kinds)}, got {head.kind}")
    if head.recipient != recipient:
        raise EnvelopeRejected(
            "misaddressed", f"addressed to {head.recipient!r}, not {recipient!r}"
        )
    current = now or utcnow()
    if head.expires_at <= current:
        raise EnvelopeRejected("expired", f"expired at {head.expires_at.isoformat()}")
    if head.issued_at > current + MAX_CLOCK_SKEW:
        raise EnvelopeRejected(
            "not_yet_valid", f"issued in the future ({head.issued_at.isoformat()})"
        )
    if seen_nonce is not None and seen_nonce(head.nonce, head.expires_at):
        raise EnvelopeRejected("replayed", f"nonce {head.nonce} was already used")
    return payload
