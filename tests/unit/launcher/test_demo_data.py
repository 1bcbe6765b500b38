"""`varde demo --data site=FILE --mapping site=FILE`: strict pairs, checked before starting."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from launcher.cli import app, site_files
from launcher.demo import run_demo


def test_site_file_pairs() -> None:
    assert site_files("--data", ["oslo=a.csv", "bergen=/x/b.parquet"]) == {
        "oslo": Path("a.csv"),
        "bergen": Path("/x/b.parquet"),
    }
    for bad in (["oslo"], ["=a.csv"], ["oslo="], ["oslo=a", "oslo=b"]):
        with pytest.raises(typer.BadParameter):
            site_files("--data", bad)


def test_unknown_sites_and_missing_files_are_refused_before_starting(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="not tromso"):
        run_demo(workdir=tmp_path, rows=1000, seed=0, once=True, data={"tromso": tmp_path})
    with pytest.raises(RuntimeError, match="no such file"):
        run_demo(
            workdir=tmp_path, rows=1000, seed=0, once=True, mappings={"oslo": tmp_path / "m.yaml"}
        )
    assert not (tmp_path / "state").exists() and not (tmp_path / "data").exists()


def test_the_command_names_the_problem() -> None:
    result = CliRunner().invoke(app, ["demo", "--once", "--mapping", "oslo"])
    assert result.exit_code == 2 and "use site=FILE" in result.output
    result = CliRunner().invoke(app, ["demo", "--once", "--data", "tromso=x.csv"])
    assert result.exit_code == 2 and "not tromso" in result.output
