"""Every ``varde`` command fails with one redacted line and a non-zero status, never a traceback.

A recognisable fake token is passed everywhere a command takes one; it must
not appear in what the command prints, with or without ``--debug``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from launcher.cli import app
from launcher.cli_errors import explain
from nodes.synth import generate_registry, write_registry
from varde.processes import free_port

TOKEN = "tok-SECRET-1234567890"
runner = CliRunner()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    out = {
        "comma": root / "comma.json",
        "yaml": root / "bad.yaml",
        "missing": root / "missing.json",
        "ok": root / "ok.json",
        "notdir": root / "plain-file",
        "registry": root / "oslo.parquet",
    }
    # a node checks its data before it enrolls, so the network cases need a real registry
    write_registry(generate_registry("oslo", 300, seed=1), out["registry"], "parquet")
    out["comma"].write_text('{"project": "p", "statistic": {"kind": "count"},}\n')
    out["yaml"].write_text("project: p\n  statistic: [count\n")
    out["ok"].write_text(
        '{"project": "p", "statistic": {"kind": "count"}, "privacy": {"mode": "dp", "epsilon": 1}}'
    )
    out["notdir"].write_text("x")
    return out


def _dead() -> str:
    return f"http://127.0.0.1:{free_port()}"


def _cases(files: dict[str, Path]) -> list[tuple[list[str], str, int]]:
    """(arguments, what the one line must say, exit status)."""
    auth = ["--token", TOKEN]
    dead = _dead()
    return [
        (["query", str(files["comma"]), "--gateway", dead, *auth], "not valid JSON", 2),
        (["query", str(files["yaml"]), "--gateway", dead, *auth], "not valid YAML", 2),
        (["query", str(files["missing"]), "--gateway", dead, *auth], "no such file", 2),
        (["query", str(files["ok"]), "--gateway", "127.0.0.1:8700", *auth], "https://", 2),
        (["query", str(files["ok"]), "--gateway", "http://10.1.2.3:8700", *auth],
         "plain http to 10.1.2.3", 2),
        (["query", str(files["ok"]), "--gateway", dead, *auth], "cannot reach", 1),
        (["query", str(files["ok"]), "--gateway", dead, f"--token={TOKEN}", "--format", "xml"],
         "--format 'xml' is not known", 2),
        (["query", "--project", "p", "--epsilon", "abc", "--gateway", dead, *auth],
         "'abc' is not a valid float", 2),
        (["query", "--project", "p", "--gateway", dead, *auth], "exactly one of --epsilon", 2),
        (["query", str(files["ok"]), "--project", "p", "--gateway", dead, *auth],
         "not both", 2),
        (["query", "--project", "p", "--cohort", "stage=V", "--epsilon", "1",
          "--gateway", dead, *auth], "--cohort: at position 6", 2),
        (["query", str(files["ok"]), "--gateway", dead], "Missing option '--token'", 2),
        (["train", "--project", "p", "--features", "stage", "--rounds", "2", "--epsilon", "1",
          "--gateway", "localhost:8700", *auth], "bad gateway URL", 2),
        (["train", "--project", "p", "--features", "stage", "--rounds", "0", "--epsilon", "1",
          "--gateway", dead, *auth], "'--rounds'", 2),
        (["trainings", "--gateway", dead, *auth], "cannot reach", 1),
        (["trainings", "--gateway", "127.0.0.1", *auth, "--limit", "-5"], "'--limit'", 2),
        (["schema", "--bogus"], "No such option '--bogus'", 2),
        (["quer", str(files["ok"]), *auth], "No such command 'quer'", 2),
        (["node", "run", "--policy", "policies/oslo.yaml", "--gateway", "127.0.0.1:1",
          "--data", str(files["registry"]), "--state-dir", str(files["notdir"].parent / "ns"),
          "--enroll-token", TOKEN], "bad gateway URL", 2),
        (["node", "run", "--policy", "policies/oslo.yaml", "--gateway", dead,
          "--data", str(files["registry"]), "--state-dir", str(files["notdir"].parent / "ns2"),
          f"--enroll-token={TOKEN}"], "cannot reach", 1),
        (["admin", "researcher", "add", "bob", "--project", "x", "--state-dir",
          str(files["notdir"])], str(files["notdir"]), 2),
        (["admin", "enroll-token", "oslo", "--valid-hours", "zero", "--state-dir",
          str(files["notdir"].parent / "gw")], "'--valid-hours'", 2),
        (["gateway", "serve", "--database-url", f"postgresql://u:{TOKEN}@127.0.0.1:1/db",
          "--state-dir", str(files["notdir"].parent / "gw"), "--port", "0"],
         "database error", 1),
        (["node", "console-user", "kari", "--state-dir", str(files["notdir"].parent / "cs"),
          "--password", "short-pw1"], "at least 10 characters", 2),
        (["audit", "export", "--state-dir", str(files["notdir"].parent), "--since", "monday"],
         "is not an ISO date", 2),
        (["policy", "diff", str(files["missing"]), str(files["missing"])], "cannot read", 2),
        (["synth", "--site", "oslo", "--rows", "many"], "'--rows'", 2),
    ]  # fmt: skip


def test_every_command_fails_in_one_line_without_the_token(files: dict[str, Path]) -> None:
    for args, message, code in _cases(files):
        result = runner.invoke(app, args, env={"VARDE_TOKEN": None, "VARDE_GATEWAY": None})
        shown = result.stdout + result.stderr
        assert result.exit_code == code, (args, shown)
        assert TOKEN not in shown and "short-pw1" not in shown, args
        assert message in shown, (args, shown)
        assert "Traceback" not in shown and "locals" not in shown, args
        if args[:2] != ["policy", "diff"]:  # prints each file's report, then exits 2
            *logged, last = result.stderr.strip().splitlines()
            assert last.startswith("error: "), (args, shown)
            if args[:2] == ["node", "run"]:  # a node logs what it loaded before it fails
                assert all(" INFO " in line or " WARNING " in line for line in logged), shown
            else:
                assert logged == [], (args, shown)
            assert result.stdout == "", args


def test_debug_adds_a_plain_traceback_without_locals_or_the_token(files: dict[str, Path]) -> None:
    dead = _dead()
    for debug in (["--debug"], []):
        env = {"VARDE_DEBUG": "1" if not debug else None, "VARDE_TOKEN": TOKEN}
        result = runner.invoke(app, [*debug, "query", str(files["ok"]), "--gateway", dead], env=env)
        assert result.exit_code == 1
        err = result.stderr
        assert err.startswith("Traceback (most recent call last):")
        assert "httpx.ConnectError" in err and "in query" in err  # the frames, plainly
        assert err.strip().splitlines()[-1].startswith("error: cannot reach")
        assert TOKEN not in err and "locals" not in err and "│" not in err


def test_explain_gives_what_and_fix() -> None:
    from varde_client.errors import error_for

    refused = error_for(401, {"error": "authentication_failed", "detail": "unknown token"})
    message, code = explain(refused)
    assert message.startswith("401 authentication_failed: unknown token — check --token")
    assert code == 2
    message, code = explain(KeyError("boom"))
    assert message.startswith("internal error (KeyError: 'boom') — run `varde --debug")
    assert code == 1
