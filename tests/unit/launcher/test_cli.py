"""The ``varde`` console command: synth, admin and schema, as a user would call them."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from launcher.cli import app
from nodes.registry_io import read_registry

runner = CliRunner()


def test_synth_writes_parquet_and_csv(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["synth", "--site", "oslo", "--site", "bergen", "--rows", "3000", "--format", "both",
              "--out", str(tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for site in ("oslo", "bergen"):
        pq, csv = (
            read_registry(tmp_path / f"{site}.parquet"),
            read_registry(tmp_path / f"{site}.csv"),
        )
        assert len(pq) == len(csv) == 3000
        assert pq.equals(csv)
    bad = runner.invoke(app, ["synth", "--site", "oslo", "--format", "xml", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "--format must be" in bad.output


def test_admin_commands(tmp_path: Path) -> None:
    state = ["--state-dir", str(tmp_path)]
    assert runner.invoke(app, ["admin", "project", "add", "lung", *state]).exit_code == 0
    again = runner.invoke(app, ["admin", "project", "add", "lung", *state])
    assert again.exit_code == 2 and "exists" in again.output
    token = runner.invoke(app, ["admin", "researcher", "add", "alice", "--project", "lung", *state])
    assert token.exit_code == 0 and token.output.strip().startswith("vr_")
    missing = runner.invoke(app, ["admin", "researcher", "add", "bob", "--project", "nope", *state])
    assert missing.exit_code == 2 and "project 'nope' does not exist" in missing.output
    enroll = runner.invoke(app, ["admin", "enroll-token", "oslo", *state])
    assert enroll.exit_code == 0 and enroll.output.strip().startswith("ve_")
    bad_name = runner.invoke(app, ["admin", "enroll-token", "Oslo Site", *state])
    assert bad_name.exit_code == 2


def test_schema_command() -> None:
    result = runner.invoke(app, ["schema"])
    assert result.exit_code == 0 and "`egfr`" in result.output
