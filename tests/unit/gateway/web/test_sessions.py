"""Sealed session cookies: round trip, expiry, tampering, replicas sharing one key."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from gateway.web.sessions import SessionSealer

SECRET = b"s" * 32


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_session_opens_until_its_time_is_up() -> None:
    clock = Clock()
    sealer = SessionSealer(SECRET, ttl=3600, idle=3600, clock=clock)
    cookie, session = sealer.open("hash-of-token")
    assert "hash-of-token" not in cookie  # sealed: not even the hash can be read off it
    assert sealer.read(cookie) == session
    assert len(session.csrf) >= 40
    clock.now += 3599
    assert sealer.read(cookie) == session
    clock.now += 2
    assert sealer.read(cookie) is None


def test_an_unused_session_ends_after_its_idle_time_a_used_one_at_its_ttl() -> None:
    clock = Clock()
    sealer = SessionSealer(SECRET, ttl=3600, idle=600, clock=clock)
    cookie, session = sealer.open("h")
    clock.now += 601
    assert sealer.read(cookie) is None  # idle too long
    clock.now -= 601
    for _ in range(5):  # used every 9 minutes: the idle clock starts over each time
        clock.now += 540
        assert sealer.read(cookie) == session
        cookie = sealer.refresh(session)
    clock.now += 540  # 3240 s since login
    assert sealer.read(cookie) == session
    cookie = sealer.refresh(session)
    clock.now += 361  # 3601 s since login: over, however busy
    assert sealer.read(cookie) is None


def test_each_session_has_its_own_csrf_token() -> None:
    sealer = SessionSealer(SECRET)
    (_, a), (_, b) = sealer.open("h"), sealer.open("h")
    assert a.csrf != b.csrf


def test_an_altered_or_foreign_cookie_is_refused() -> None:
    sealer = SessionSealer(SECRET)
    cookie, _ = sealer.open("h")
    flipped = cookie[:20] + ("A" if cookie[20] != "A" else "B") + cookie[21:]
    assert sealer.read(flipped) is None
    assert SessionSealer(b"t" * 32).read(cookie) is None
    assert sealer.read("") is None and sealer.read(None) is None
    assert sealer.read("x" * 5000) is None


def test_a_cookie_from_the_future_is_refused() -> None:
    clock = Clock()
    cookie, _ = SessionSealer(SECRET, clock=clock).open("h")
    clock.now -= 3600  # the reader's clock is an hour behind the writer's
    assert SessionSealer(SECRET, clock=clock).read(cookie) is None


def test_replicas_of_one_gateway_read_each_others_cookies() -> None:
    key = Ed25519PrivateKey.generate()
    cookie, session = SessionSealer.for_gateway(key).open("h")
    assert SessionSealer.for_gateway(key).read(cookie) == session
    assert SessionSealer.for_gateway(Ed25519PrivateKey.generate()).read(cookie) is None


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        SessionSealer(b"short")


@given(st.text(max_size=300))
def test_any_cookie_text_is_a_session_or_none_never_an_error(text: str) -> None:
    assert SessionSealer(SECRET).read(text) is None
