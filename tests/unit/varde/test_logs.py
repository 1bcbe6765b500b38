"""Structured logs: one JSON object a line with the bound request id, and request ids that are
always plain tokens whatever a caller sends."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from varde.logs import (
    REQUEST_ID_PATTERN,
    RequestIdFilter,
    accept_request_id,
    bound_request_id,
    carried_request_id,
    configure_logging,
    json_formatter,
)
from varde.redaction import redact_record


@pytest.fixture
def json_log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(json_formatter("gateway"))
    logger = logging.getLogger(f"test.logs.{id(out)}")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, out
    logger.removeHandler(handler)


def lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_record_is_one_json_object_with_the_bound_request_id(
    json_log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, out = json_log
    with bound_request_id("req-1"):
        logger.info("query %s answered", "q1", extra={"status": 200})
    logger.warning("outside any request")
    first, second = lines(out)
    assert first["message"] == "query q1 answered"
    assert first["request_id"] == "req-1"
    assert first["status"] == 200
    assert first["level"] == "INFO" and first["logger"] == logger.name
    assert first["component"] == "gateway" and "time" in first
    assert second["request_id"] == ""


def test_an_explicit_request_id_wins_over_the_bound_one(
    json_log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, out = json_log
    with bound_request_id("poll-7"):
        logger.info("release", extra={"request_id": "researcher-3"})
    assert lines(out)[0]["request_id"] == "researcher-3"


def test_bound_ids_do_not_leak_out_of_their_block() -> None:
    from varde.logs import request_id

    with bound_request_id("a"):
        with bound_request_id("b"):
            assert request_id.get() == "b"
        assert request_id.get() == "a"
    assert request_id.get() == ""


def test_tokens_are_masked_in_json_lines(json_log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = json_log
    record = logger.makeRecord(
        logger.name, logging.WARNING, __file__, 1, "token %s", ("vr_" + "a" * 40,), None
    )
    logger.handle(redact_record(record))
    assert "a" * 40 not in out.getvalue()


def test_configure_logging_replaces_the_root_handlers() -> None:
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    try:
        handler = configure_logging("json", "info", component="node")
        assert root.handlers == [handler] and root.level == logging.INFO
        with pytest.raises(ValueError, match="unknown log format 'xml'"):
            configure_logging("xml", "info", component="node")  # type: ignore[arg-type]
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved:
            root.addHandler(h)
        root.setLevel(level)


@given(st.text(max_size=100))
def test_an_accepted_request_id_is_always_a_plain_token(value: str) -> None:
    rid = accept_request_id(value)
    assert re.fullmatch(REQUEST_ID_PATTERN, rid)
    assert (rid == value) == bool(re.fullmatch(REQUEST_ID_PATTERN, value))
    assert carried_request_id(value) in ("", value)


@given(st.from_regex(REQUEST_ID_PATTERN, fullmatch=True))
def test_a_valid_request_id_is_kept(value: str) -> None:
    assert accept_request_id(value) == value == carried_request_id(value)


def test_a_trailing_newline_is_not_a_request_id() -> None:
    # (a `$` anchor alone would accept it: a log line could then be split by a caller)
    assert accept_request_id("abc\n") != "abc\n"
    assert carried_request_id("abc\n") == ""
