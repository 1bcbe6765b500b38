"""Spend per researcher and project, from the audit trail, against a hand computation."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nodes.cli import audit_app
from nodes.spend import SpendRow, render_table, spend_report, spend_series
from nodes.store import NodeStore

runner = CliRunner()


def _trail(store: NodeStore) -> None:
    """Old-style entries (no researcher, no measure), new ones, a repeat, training, aggregate."""
    store.audit("work_received", query_id="q0", project="A", researcher="bob")
    store.audit("charged", query_id="q0", project="A", what="recovered", measure="epsilon",
                amount=0.25, recovered=True)  # fmt: skip
    store.audit("released", query_id="q0", project="A", charged={"epsilon": 0.25}, cells=[])
    store.audit("charged", query_id="q1", project="A", what="query", measure="epsilon",
                amount=0.5, researcher="alice")  # fmt: skip
    store.audit("released", query_id="q1", project="A", researcher="alice", measure="epsilon",
                amount=0.5, n_cells=2)  # fmt: skip
    store.audit("released_from_cache", query_id="q2", project="A", researcher="alice",
                measure="epsilon", amount=0.0)  # fmt: skip
    store.audit("charged", query_id="training:j:round:1", project="B", what="training round",
                measure="rho", amount=0.1, researcher="alice")  # fmt: skip
    store.audit("released", query_id="q3", project="B", researcher="alice", measure=None,
                amount=0.0, mode="aggregate")  # fmt: skip
    store.audit("console_login", user="kari", ok=True)  # not spend: ignored


def _rows(rows: list[SpendRow]) -> list[tuple[str, str, float, int, int, int]]:
    return [(r.key, r.measure, round(r.spent, 9), r.charges, r.releases, r.repeats) for r in rows]


def test_report_by_researcher_and_by_project_match_the_hand_computation(tmp_path: Path) -> None:
    store = NodeStore.in_directory(tmp_path)
    _trail(store)
    entries = store.events()
    # by hand: bob paid q0 (found through work_received), alice q1, a free repeat (q2),
    # a training round in rho, and an aggregate release (no measure)
    assert _rows(spend_report(entries, by="researcher")) == [
        ("alice", "epsilon", 0.5, 1, 1, 1),
        ("alice", "none", 0.0, 0, 1, 0),
        ("alice", "rho", 0.1, 1, 1, 0),
        ("bob", "epsilon", 0.25, 1, 1, 0),
        ("TOTAL", "epsilon", 0.75, 2, 2, 1),
        ("TOTAL", "none", 0.0, 0, 1, 0),
        ("TOTAL", "rho", 0.1, 1, 1, 0),
    ]
    assert _rows(spend_report(entries, by="project")) == [
        ("A", "epsilon", 0.75, 2, 2, 1),
        ("B", "none", 0.0, 0, 1, 0),
        ("B", "rho", 0.1, 1, 1, 0),
        ("TOTAL", "epsilon", 0.75, 2, 2, 1),
        ("TOTAL", "none", 0.0, 0, 1, 0),
        ("TOTAL", "rho", 0.1, 1, 1, 0),
    ]
    # since the fourth entry: bob's charge and release are left out, his name still resolves
    since = entries[3].at
    assert _rows(spend_report(entries, by="researcher", since=since))[:3] == [
        ("alice", "epsilon", 0.5, 1, 1, 1),
        ("alice", "none", 0.0, 0, 1, 0),
        ("alice", "rho", 0.1, 1, 1, 0),
    ]
    series = spend_series(entries, by="researcher")
    assert [v for _, v in series["epsilon"]["bob"]] == [0.25]
    assert [v for _, v in series["rho"]["alice"]] == [0.1]
    with pytest.raises(ValueError, match="by researcher or by project"):
        spend_report(entries, by="site")  # type: ignore[arg-type]
    store.close()


def test_an_empty_trail_says_so() -> None:
    assert render_table([], by="project") == "nothing was charged or released in this period"


def test_audit_report_command_prints_the_table_and_the_csv(tmp_path: Path) -> None:
    store = NodeStore.in_directory(tmp_path)
    _trail(store)
    store.close()
    res = runner.invoke(audit_app, ["report", "--state-dir", str(tmp_path), "--by", "project"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0] == "privacy budget spent at this site by project, over the whole trail:"
    assert lines[1].split()[:8] == [
        "project", "measure", "spent", "charges", "releases", "repeats", "first", "(UTC)"
    ]  # fmt: skip
    assert lines[2].split()[:6] == ["A", "epsilon", "0.75", "2", "2", "1"]
    res = runner.invoke(
        audit_app,
        ["report", "--state-dir", str(tmp_path), "--format", "csv", "--since", "2000-01-01"],
    )
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO(res.output)))
    assert [(r["researcher"], r["measure"], float(r["spent"])) for r in rows][:2] == [
        ("alice", "epsilon", 0.5),
        ("alice", "none", 0.0),
    ]
    bad = runner.invoke(audit_app, ["report", "--state-dir", str(tmp_path), "--by", "site"])
    assert bad.exit_code == 2 and "--by must be researcher or project" in bad.output
    future = runner.invoke(
        audit_app, ["report", "--state-dir", str(tmp_path), "--since", "2999-01-01"]
    )
    assert "nothing was charged or released in this period" in future.output
