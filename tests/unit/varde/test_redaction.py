"""Secrets never survive :func:`varde.redaction.redact`, in text or in log records."""

from __future__ import annotations

import base64
import io
import logging
import secrets

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given
from hypothesis import strategies as st

from varde.crypto import generate_key, public_key_b64
from varde.redaction import MASK, install_log_redaction, redact, redact_record, remember

URLSAFE = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", min_size=16
)
PROSE = st.text(alphabet=st.characters(whitelist_categories=["Ll", "Zs"]), max_size=40)


@given(token=URLSAFE, before=PROSE, after=PROSE)
def test_bearer_headers_and_our_token_formats_are_masked(
    token: str, before: str, after: str
) -> None:
    for secret, shown in (
        (f"Bearer {token}", f"Bearer {MASK}"),
        (f"vr_{token}", f"vr_{MASK}"),
        (f"ve_{token}", f"ve_{MASK}"),
    ):
        out = redact(f"{before} {secret} {after}")
        assert token not in out and shown in out


@pytest.mark.parametrize(
    "text",
    [
        "enroll?token=S3cretValue123&site=oslo",
        '{"token": "S3cretValue123", "site": "oslo"}',
        "password='S3cretValue123'",
        "{'password': 'S3cret Value123'}",
        "varde node run --enroll-token S3cretValue123 --site oslo",
        "varde query --token=S3cretValue123",
        "api_key=S3cretValue123",
        "postgresql://alice:S3cretValue123@db:5432/varde",
    ],
)
def test_values_after_secret_names_are_masked(text: str) -> None:
    out = redact(text)
    assert "S3cretValue123" not in out and "S3cret Value123" not in out and MASK in out


def test_private_keys_are_masked_public_keys_are_not() -> None:
    key = generate_key()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    der_b64 = base64.b64encode(der).decode()
    body = pem.splitlines()[1]
    out = redact(f"loaded {pem} and {der_b64} for node with key {public_key_b64(key)}")
    assert body not in out and der_b64 not in out
    assert "-----BEGIN PRIVATE KEY-----***-----END PRIVATE KEY-----" in out
    assert public_key_b64(key) in out  # public: pinned and shown on purpose


def test_plain_prose_about_tokens_is_left_alone() -> None:
    for text in (
        "unknown or revoked token",
        "missing bearer token (Authorization: Bearer <token>)",
        "this token enrolls site 'oslo', not 'bergen'",
        "422 invalid_query: privacy.epsilon: Input should be greater than 0",
        "node 'oslo' is not enrolled: pass --enroll-token from the gateway admin",
        "check --token (or VARDE_TOKEN) for spaces or line breaks",
        "    password: Annotated[str, typer.Option(prompt=True)],",
    ):
        assert redact(text) == text


def test_remembered_values_are_masked_wherever_they_appear() -> None:
    value = "tok-" + secrets.token_hex(8)
    assert redact(f"x{value}y") == f"x{value}y"  # no pattern knows this shape
    remember(value)
    remember("short")  # too short to remember: would garble every message
    assert redact(f"x{value}y 'short'") == f"x{MASK}y 'short'"


def test_log_records_are_redacted_in_message_arguments_and_traceback() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("test.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    install_log_redaction()
    install_log_redaction()  # idempotent
    try:
        logger.warning("header %s", "Bearer abcdefghijklmnop")
        logger.warning("split: Bearer %s", "abcdefghijklmnop")
        logger.warning("%s %s %s", "GET", "/v1/x?token=abcdefghijklmnop", 200)
        try:
            raise ValueError("token=abcdefghijklmnop")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "abcdefghijklmnop" not in text
    assert "header Bearer ***" in text and "split: Bearer ***" in text
    assert "GET /v1/x?token=*** 200" in text
    assert "ValueError: token=***" in text and "Traceback" in text


def test_positional_arguments_keep_their_shape() -> None:
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", "/v1/sites?token=abcdefghijkl", "1.1", 200), None,
    )  # fmt: skip
    redact_record(record)
    assert isinstance(record.args, tuple) and record.args[4] == 200
    assert record.args[2] == "/v1/sites?token=***"
