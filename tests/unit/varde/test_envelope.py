"""Signed envelopes: round trips, and every way a message can be bad is refused by name."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from varde.crypto import generate_key, public_key_b64, verify
from varde.envelope import SignedEnvelope, canonical_json, open_envelope, seal, utcnow
from varde.errors import EnvelopeRejected

KEY = generate_key()
PUB = public_key_b64(KEY)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=10,
)


@settings(max_examples=50)
@given(st.dictionaries(st.text(max_size=10), json_values, max_size=5))
def test_seal_open_round_trip(body: dict[str, object]) -> None:
    env = seal(
        KEY, kind="work", sender="gateway", recipient="oslo", body=body, ttl=dt.timedelta(seconds=5)
    )
    payload = open_envelope(env, sender_key=PUB, recipient="oslo", kinds=("work",))
    assert payload.body == body
    assert payload.header.sender == "gateway"


@settings(max_examples=50)
@given(st.binary(max_size=64), st.integers(0, 63))
def test_any_bit_flip_breaks_signature(data: bytes, bit: int) -> None:
    from varde.crypto import sign

    sig = sign(KEY, data)
    assert verify(PUB, data, sig)
    if data:
        flipped = bytearray(data)
        flipped[bit % len(data)] ^= 1 << (bit % 8)
        assert not verify(PUB, bytes(flipped), sig)


def _env(**kw: object) -> SignedEnvelope:
    args: dict[str, object] = {
        "kind": "work", "sender": "gateway", "recipient": "oslo", "body": {"x": 1},
        "ttl": dt.timedelta(seconds=30),
    }  # fmt: skip
    args.update(kw)
    key = args.pop("key", KEY)
    return seal(key, **args)  # type: ignore[arg-type]


def _reason(env: SignedEnvelope, **kw: object) -> str:
    with pytest.raises(EnvelopeRejected) as info:
        open_envelope(env, sender_key=PUB, recipient="oslo", kinds=("work",), **kw)  # type: ignore[arg-type]
    return info.value.reason


def test_forged_by_other_key() -> None:
    assert _reason(_env(key=generate_key())) == "forged"


def test_tampered_payload() -> None:
    env = _env()
    tampered = SignedEnvelope(
        payload=env.payload.replace('"x":1', '"x":2'), signature=env.signature
    )
    assert _reason(tampered) == "forged"


def test_misaddressed() -> None:
    assert _reason(_env(recipient="bergen")) == "misaddressed"


def test_expired() -> None:
    old = utcnow() - dt.timedelta(minutes=5)
    assert _reason(_env(now=old, ttl=dt.timedelta(seconds=10))) == "expired"


def test_wrong_kind() -> None:
    assert _reason(_env(kind="release")) == "wrong_kind"


def test_replayed() -> None:
    seen: set[str] = set()

    def store(nonce: str, _exp: dt.datetime) -> bool:
        if nonce in seen:
            return True
        seen.add(nonce)
        return False

    env = _env()
    open_envelope(env, sender_key=PUB, recipient="oslo", kinds=("work",), seen_nonce=store)
    assert _reason(env, seen_nonce=store) == "replayed"


def test_canonical_json_rejects_nan() -> None:
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})
