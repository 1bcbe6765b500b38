"""How every ``varde`` command fails: one redacted line naming the problem and its fix.

A command that meets a user error (a missing file, JSON with a trailing comma,
a gateway URL without ``http://``, an unreachable gateway, a refused token, a
bad flag) prints ``error: <what> — <fix>`` on stderr and exits 2 (the input was
wrong) or 1 (the environment failed: a gateway down, a timeout, a bug). It
never prints a traceback, because typer's pretty tracebacks show every frame's
locals, and the locals of a researcher's command hold their bearer token.

``varde --debug`` (or ``VARDE_DEBUG=1``) adds a plain traceback, without
locals, redacted like the line (:mod:`varde.redaction`). The values of
``--token``, ``--enroll-token`` and ``--password`` (and of ``VARDE_TOKEN``,
``VARDE_CONSOLE_PASSWORD``) are remembered as the command starts, so they are
masked even where a library echoes them in a form no pattern knows.

The handler sits in :class:`VardeGroup`, the top-level command group, so it
covers every sub-command and works the same under ``CliRunner`` as from the
console script.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click
import typer
from typer.core import TyperGroup

from varde.redaction import redact, remember

if TYPE_CHECKING:
    import httpx
    from pydantic import ValidationError

SECRET_OPTIONS = ("--token", "--enroll-token", "--password")
SECRET_ENV = ("VARDE_TOKEN", "VARDE_CONSOLE_PASSWORD")
INPUT, FAILURE = 2, 1
"""Exit codes: the user's input was wrong; something else failed."""


def one_line(text: str) -> str:
    """``text`` on one line, redacted."""
    return " ".join(redact(text).split())


def remember_secrets(args: Sequence[str]) -> None:
    """Remember the secret option values on a command line and in the environment."""
    for i, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        if name in SECRET_OPTIONS:
            remember(value if eq else (args[i + 1] if i + 1 < len(args) else None))
    for var in SECRET_ENV:
        remember(os.environ.get(var))


def _validation(err: ValidationError) -> str:
    problems = [
        f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in err.errors()
    ]
    return f"invalid {err.title}: " + "; ".join(problems)


def _url(err: httpx.RequestError) -> str:
    try:
        return str(err.request.url)
    except RuntimeError:  # raised before a request existed
        return "the gateway"


HTTP_FIXES = {
    400: "fix the request",
    401: "check --token (or VARDE_TOKEN): use the token `varde admin researcher add` printed",
    403: "ask the project's or site's administrator for access",
    404: "check the project, site or job name",
    409: "nothing was charged; see the budgets (client.budgets()) or ask the site",
    422: "fix the query (the README's 'query language' lists what is allowed)",
}


def _line(what: str, fix: str = "") -> str:
    """``what`` (redacted: it may quote a library) on one line, then our own ``fix``."""
    return one_line(what) + (f" — {fix}" if fix else "")


def explain(err: BaseException) -> tuple[str, int]:
    """One line (without ``error:``) saying what went wrong and how to fix it, and the exit code.

    The libraries are imported here, when an error happened, so ``varde --help``
    and a node's commands load none of them.
    """
    import json

    import httpx
    import sqlalchemy.exc
    import yaml
    from pydantic import ValidationError

    from varde.errors import VardeError
    from varde_client.errors import VardeHTTPError

    if isinstance(err, VardeHTTPError):
        fix = HTTP_FIXES.get(err.status, "the gateway failed: try again, or ask its operator")
        return _line(str(err), fix), INPUT if err.status < 500 else FAILURE
    if isinstance(err, httpx.UnsupportedProtocol | httpx.InvalidURL):
        fix = "give it with its scheme, e.g. http://127.0.0.1:8700"
        return _line(f"bad gateway URL: {err}", fix), INPUT
    if isinstance(err, httpx.ConnectError):
        fix = "check --gateway and that the gateway runs"
        return _line(f"cannot reach {_url(err)}: {err}", fix), FAILURE
    if isinstance(err, httpx.TimeoutException):
        fix = "try again, or check the gateway"
        return _line(f"{_url(err)} did not answer in time", fix), FAILURE
    if isinstance(err, httpx.LocalProtocolError):
        fix = "check --token for spaces or line breaks"
        return _line(f"could not send the request: {err}", fix), INPUT
    if isinstance(err, httpx.HTTPError):
        return _line(f"talking to the gateway failed: {err}", "check --gateway"), FAILURE
    if isinstance(err, json.JSONDecodeError):
        what = f"not valid JSON: {err.msg} at line {err.lineno} column {err.colno}"
        return _line(what, "fix the JSON (double-quoted keys, no trailing commas)"), INPUT
    if isinstance(err, yaml.YAMLError):
        return _line(f"not valid YAML: {err}", "fix the YAML"), INPUT
    if isinstance(err, ValidationError):
        return _line(_validation(err)), INPUT
    if isinstance(err, sqlalchemy.exc.ArgumentError):
        return _line(f"bad database URL: {err}", "check --database-url"), INPUT
    if isinstance(err, sqlalchemy.exc.OperationalError):
        cause = err.orig if err.orig is not None else err
        fix = "check --database-url and that the database runs"
        return _line(f"database error: {cause}", fix), FAILURE
    if isinstance(err, FileNotFoundError):
        return _line(f"no such file or directory: {err.filename}", "check the path"), INPUT
    if isinstance(err, PermissionError):
        fix = "check the file's permissions"
        return _line(f"permission denied: {err.filename}", fix), INPUT
    if isinstance(err, OSError) and err.filename is not None:
        return _line(f"{err.strerror or err}: {err.filename}", "check the path"), INPUT
    if isinstance(err, VardeError):
        return _line(f"{err.code}: {err.message}"), INPUT
    if isinstance(err, ValueError):  # our parsers' messages say what to fix themselves
        return _line(str(err)), INPUT
    fix = "run `varde --debug ...` for the traceback and report it"
    return _line(f"internal error ({type(err).__name__}: {err})", fix), FAILURE


def report(err: BaseException, *, debug: bool) -> int:
    """Print ``err`` as one redacted line (after a plain traceback with ``debug``); its code."""
    if debug:
        text = "".join(traceback.format_exception(err))  # no locals, ever
        typer.echo(redact(text).rstrip("\n"), err=True)
    message, code = explain(err)
    typer.echo(f"error: {message}", err=True)
    return code


def _usage(err: click.UsageError) -> click.exceptions.Exit:
    where = err.ctx.command_path if err.ctx is not None else "varde"
    typer.echo(f"error: {one_line(err.format_message())} — see `{where} --help`", err=True)
    return click.exceptions.Exit(err.exit_code)


class VardeGroup(TyperGroup):
    """The top-level ``varde`` group: every sub-command's errors end here (see module doc)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Remember secret values first, then parse (a usage error is one line too)."""
        remember_secrets(args)
        try:
            return super().parse_args(ctx, args)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as err:
            raise _usage(err) from None

    def invoke(self, ctx: click.Context) -> Any:
        """Run the sub-command; turn what it raises into one line and an exit code."""
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort, click.exceptions.NoArgsIsHelpError):
            raise
        except click.UsageError as err:
            raise _usage(err) from None
        except click.ClickException:
            raise
        except Exception as err:
            debug = bool(ctx.params.get("debug"))  # the --debug option (or VARDE_DEBUG=1)
            raise click.exceptions.Exit(report(err, debug=debug)) from None
