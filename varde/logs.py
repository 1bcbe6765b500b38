"""Log output of the gateway and the node: plain text or one JSON object a line, with a request id.

Why shared: a researcher's query is logged by the gateway that took it and by
every node that answered it, so both sides must write the same fields and the
same request id for an operator (or a log pipeline) to follow one question
across the network. The id comes from the researcher's ``X-Request-ID`` header
when it is a plain token (else the gateway makes one), travels to each node in
the signed work item and back in the release (:mod:`varde.release`), and is
added to every log record written while that request or work item is handled
(a :class:`contextvars.ContextVar`, so concurrent requests never mix).

JSON lines come from the maintained ``python-json-logger`` formatter; the
record factory of :mod:`varde.redaction` still masks tokens and keys first.
Nothing here knows a row: the node logs query ids, statuses and timings only.

>>> accept_request_id("abc-123"), len(accept_request_id("bad id; drop table"))
('abc-123', 32)
>>> carried_request_id("abc-123"), carried_request_id("a b"), carried_request_id(7)
('abc-123', '', '')
"""

from __future__ import annotations

import logging
import re
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Literal

from pythonjsonlogger.json import JsonFormatter

LogFormat = Literal["text", "json"]
"""How a process writes its log: ``text`` for a person, ``json`` for a log pipeline."""

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
"""A request id is a short plain token: it is logged and signed, never interpreted."""
_VALID = re.compile(REQUEST_ID_PATTERN)

request_id: ContextVar[str] = ContextVar("varde_request_id", default="")
"""The id of the request or work item being handled in this context ('' outside one)."""

TEXT_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


def new_request_id() -> str:
    """A fresh random id (128 bits, hex)."""
    return uuid.uuid4().hex


def accept_request_id(value: str | None) -> str:
    """``value`` if it is a valid request id, else a fresh one (never an error: it is a label)."""
    if value is not None and _VALID.fullmatch(value):
        return value
    return new_request_id()


def carried_request_id(value: object) -> str:
    """``value`` if it is a valid request id, else '' (what a node echoes of a work item's id)."""
    return value if isinstance(value, str) and _VALID.fullmatch(value) else ""


@contextmanager
def bound_request_id(value: str) -> Iterator[str]:
    """Log records written inside the block carry ``value`` as their ``request_id``."""
    token = request_id.set(value)
    try:
        yield value
    finally:
        request_id.reset(token)


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to each record: the one passed in ``extra=``, else the bound one."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Always keeps the record; only adds the attribute."""
        if not getattr(record, "request_id", ""):
            record.request_id = request_id.get()
        return True


def json_formatter(component: str) -> logging.Formatter:
    """One JSON object a line: time, level, logger, message, component, request_id and extras."""
    return JsonFormatter(
        ["asctime", "levelname", "name", "message"],
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        static_fields={"component": component},
    )


def configure_logging(fmt: LogFormat, level: str | int, *, component: str) -> logging.Handler:
    """Send the root logger to stderr in ``fmt`` at ``level``; the handler it installed.

    Replaces the root logger's handlers (a process configures its log once, at
    start-up). ``component`` (``gateway`` or ``node:<site>``) names the writer in
    every JSON line.
    """
    if fmt not in ("text", "json"):
        raise ValueError(f"unknown log format {fmt!r}: use text or json")
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(
        json_formatter(component) if fmt == "json" else logging.Formatter(TEXT_FORMAT)
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return handler
