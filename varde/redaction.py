"""Keep secrets out of what a process prints: error lines, tracebacks and log records.

Both sides need it (a node holds its enrollment token and signing key, the
gateway sees bearer tokens on every request, the researcher's commands hold a
token) and neither may import the other, so it lives here; it imports nothing
of ours.

What is redacted, whatever the text around it:

- ``Bearer <token>`` (an ``Authorization`` header echoed by a library);
- the project's own token formats, ``vr_…`` (researcher) and ``ve_…``
  (enrollment), wherever they appear;
- ``token=…``, ``"password": "…"``, ``--enroll-token …`` and the like:
  a value after a key or flag named token, password, secret or api key
  (unquoted, only a token-like value of 8 characters or more, so prose like
  "pass --enroll-token from the admin" and Python's ``token: str`` stay readable);
- key material: PEM private-key blocks, and the base64 of an Ed25519 PKCS#8
  private key (the only form our keys are serialised in);
- a URL's ``user:password@``;
- any exact value a process registered with :func:`remember` (the ``--token``
  it was started with, say), however it is spelled around it.

>>> redact("401 for Bearer tok-SECRET-1234567890 at http://u:pw@gw:8700/v1")
'401 for Bearer *** at http://***@gw:8700/v1'
>>> redact("enroll with token=ve_abcdefghijklmnopqrstuvwx1234 now")
'enroll with token=ve_*** now'

Log records are redacted where they are *created* (:func:`install_log_redaction`
wraps the record factory), so records from every logger reach every handler
already clean, including handlers uvicorn or Flower configure after us; a
filter on one logger would miss records that propagate from its children.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from typing import Any

MASK = "***"

MIN_REMEMBERED = 8
"""Shorter values are not remembered: masking every ``t`` or ``abc`` would garble the text."""

_SECRET_NAMES = r"(?:token|password|passwd|secret|passphrase|api[_-]?key|private[_-]?key)"
_TOKEN_CHARS = r"[A-Za-z0-9._~+/=%-]"


def _quoted(match: re.Match[str]) -> str:
    quote = match[2][0]
    return f"{match[1]}{quote}{MASK}{quote}"


_PATTERNS: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
    (
        re.compile(
            r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----.*?-----END \1PRIVATE KEY-----", re.DOTALL
        ),
        rf"-----BEGIN \1PRIVATE KEY-----{MASK}-----END \1PRIVATE KEY-----",
    ),
    # An Ed25519 PKCS#8 DER (302e020100300506032b657004220420 + 32 key bytes), base64.
    (re.compile(r"MC4CAQAwBQYDK2VwBCIEI[A-Za-z0-9+/=]*"), MASK),
    # The scheme as headers spell it ("bearer token" in prose is not a header).
    (re.compile(r"\b(Bearer\s+)[A-Za-z0-9._~+/=-]+"), rf"\1{MASK}"),
    (re.compile(r"\b(v[re]_)[A-Za-z0-9_-]{8,}"), rf"\1{MASK}"),
    # A flag's value: ``--token X``, ``--enroll-token=X`` (prose such as "--token for" is short).
    (re.compile(rf"(?i)(--[a-z-]*{_SECRET_NAMES}(?:=|\s+)){_TOKEN_CHARS}{{8,}}"), rf"\1{MASK}"),
    # A quoted value after a secret name: ``"token": "X"``, ``password='X'``.
    (
        re.compile(rf"(?i)\b([a-z_-]*{_SECRET_NAMES}[\"']?\s*[:=]\s*)(\"[^\"\n]*\"|'[^'\n]*')"),
        _quoted,
    ),
    # An unquoted value after ``=``: ``?token=X&``, ``api_key=X``.
    (re.compile(rf"(?i)\b([a-z_-]*{_SECRET_NAMES}=){_TOKEN_CHARS}{{8,}}"), rf"\1{MASK}"),
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s:@]+:[^/\s@]*@"), rf"\1{MASK}@"),
]

_remembered: set[str] = set()
_lock = threading.Lock()


def remember(secret: str | None) -> None:
    """Mask this exact value from now on (a token or password this process was given)."""
    if secret is None:
        return
    value = secret.strip()
    if len(value) >= MIN_REMEMBERED:
        with _lock:
            _remembered.add(value)


def redact(text: str) -> str:
    """``text`` with every secret it holds replaced by ``***``."""
    with _lock:
        known = sorted(_remembered, key=len, reverse=True)
    for value in known:
        text = text.replace(value, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _clean(value: object) -> object:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, BaseException):  # logged as an argument: its text is what shows
        return redact(str(value))
    return value


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Redact a log record in place: message, arguments, exception and stack text.

    Arguments are cleaned one by one so formatters that read them by position
    (uvicorn's access log) still work; if a secret only appears once they are
    put together (``"Bearer %s" % token``), the record is collapsed into its
    redacted message.
    """
    if isinstance(record.msg, str):
        record.msg = redact(record.msg)
    args = record.args
    if isinstance(args, tuple):
        record.args = tuple(_clean(a) for a in args)
    elif isinstance(args, dict):
        record.args = {k: _clean(v) for k, v in args.items()}
    if record.args:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed call: logging reports it itself
            message = None
        if message is not None and redact(message) != message:
            record.msg, record.args = redact(message), None
    if record.exc_info and not record.exc_text:
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
    elif record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    return record


_installed = False


def install_log_redaction() -> None:
    """Redact every log record this process creates from now on (idempotent)."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    make: Callable[..., logging.LogRecord] = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return redact_record(make(*args, **kwargs))

    logging.setLogRecordFactory(factory)
