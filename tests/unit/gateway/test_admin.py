"""Node administration: token durations, listing and revoking nodes (functions and commands)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from gateway.admin import enrollment_token, parse_duration
from launcher.cli import app
from varde.errors import InvalidQuery

runner = CliRunner()


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("48h", dt.timedelta(hours=48)),
        ("2d", dt.timedelta(days=2)),
        ("90m", dt.timedelta(minutes=90)),
        ("1h30m", dt.timedelta(minutes=90)),
        ("1w", dt.timedelta(weeks=1)),
        (" 1.5H ", dt.timedelta(minutes=90)),
    ],
)
def test_durations(text: str, want: dt.timedelta) -> None:
    assert parse_duration(text) == want


@pytest.mark.parametrize("text", ["", "48", "h", "-1h", "48 h", "2x", "1h-5m", "10s", "400d", "0h"])
def test_bad_durations_say_the_form(text: str) -> None:
    with pytest.raises(InvalidQuery, match="duration"):
        parse_duration(text)


@given(st.text(max_size=20))
def test_any_text_is_a_duration_or_a_clear_refusal(text: str) -> None:
    try:
        got = parse_duration(text)
    except InvalidQuery as err:
        assert "duration" in str(err)
    else:
        assert dt.timedelta(minutes=1) <= got <= dt.timedelta(days=366)


def test_a_token_for_a_site_name_the_gateway_cannot_enroll_is_refused(tmp_path: Path) -> None:
    from gateway.cli import _sessions

    with pytest.raises(InvalidQuery, match="site name"):
        enrollment_token(_sessions(tmp_path), "1-oslo", dt.timedelta(hours=1))


def test_enroll_token_nodes_and_revoke_commands(tmp_path: Path) -> None:
    state = ["--state-dir", str(tmp_path / "gw")]
    token = runner.invoke(app, ["admin", "enroll-token", "voss", "--expires", "48h", *state])
    assert token.exit_code == 0 and token.stdout.startswith("ve_"), token.output
    old = runner.invoke(app, ["admin", "enroll-token", "voss", "--valid-hours", "2", *state])
    assert old.exit_code == 0, old.output
    both = runner.invoke(
        app, ["admin", "enroll-token", "voss", "--expires", "1h", "--valid-hours", "2", *state]
    )
    assert both.exit_code == 2 and "not both" in both.output
    bad = runner.invoke(app, ["admin", "enroll-token", "voss", "--expires", "soon", *state])
    assert bad.exit_code == 2 and "like 48h" in bad.output
    empty = runner.invoke(app, ["admin", "nodes", *state])
    assert empty.exit_code == 0 and "no enrolled nodes" in empty.stdout
    missing = runner.invoke(app, ["admin", "revoke", "voss", *state])
    assert missing.exit_code == 2 and "no enrolled site 'voss'" in missing.output

    from gateway.cli import _sessions
    from gateway.core.db import Node
    from varde.crypto import generate_key, key_fingerprint, public_key_b64

    pub = public_key_b64(generate_key())
    with _sessions(tmp_path / "gw")() as s:
        s.add(Node(site="voss", public_key=pub))
        s.commit()
    table = runner.invoke(app, ["admin", "nodes", *state])
    assert table.exit_code == 0
    head, row = table.stdout.splitlines()
    assert head.split() == ["site", "last", "seen", "(UTC)", "version", "key", "state"]
    assert row.split() == ["voss", "-", "-", key_fingerprint(pub), "never", "seen"]
    revoked = runner.invoke(app, ["admin", "revoke", "voss", "--reason", "left", *state])
    assert revoked.exit_code == 0 and "enroll-token voss" in revoked.stdout
    again = runner.invoke(app, ["admin", "revoke", "voss", *state])
    assert again.exit_code == 2 and "already revoked" in again.output
    listed = runner.invoke(app, ["admin", "nodes", "--json", *state])
    assert json.loads(listed.stdout)["state"] == "revoked"
