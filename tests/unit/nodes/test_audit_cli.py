"""``varde audit verify/export`` on a real state directory, as the data protection officer would."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from pathlib import Path

from typer.testing import CliRunner

from nodes.cli import audit_app
from nodes.enrollment import key_path
from nodes.store import NodeStore
from varde.crypto import load_or_create_key

runner = CliRunner()


def _state(tmp_path: Path, n: int = 8) -> Path:
    key = load_or_create_key(key_path(tmp_path))
    store = NodeStore.in_directory(tmp_path, key=key, checkpoint_every=4)
    for i in range(n):
        store.audit("released", query_id=f"q{i}", project="p", epsilon=0.25, note="tumour ✓")
    store.close()
    return tmp_path


def test_verify_ok(tmp_path: Path) -> None:
    res = runner.invoke(audit_app, ["verify", "--state-dir", str(_state(tmp_path))])
    assert res.exit_code == 0, res.output
    assert "audit trail OK: 10 entries, 2 signed checkpoints, signed up to entry 9\n" in res.output


def test_verify_reports_unsigned_tail(tmp_path: Path) -> None:
    state = _state(tmp_path)
    NodeStore.in_directory(state).audit("approved", query_id="a1")  # staff CLI: no key
    res = runner.invoke(audit_app, ["verify", "--state-dir", str(state)])
    assert res.exit_code == 0
    assert "11 entries, 2 signed checkpoints, signed up to entry 9 (1 later" in res.output


def test_verify_names_the_edited_entry(tmp_path: Path) -> None:
    state = _state(tmp_path)
    con = sqlite3.connect(state / "node.sqlite")
    with con:
        con.execute("UPDATE audit_entries SET project = 'other' WHERE id = 7")
    con.close()
    res = runner.invoke(audit_app, ["verify", "--state-dir", str(state)])
    assert res.exit_code == 1
    assert "audit trail BROKEN at entry 7" in res.output
    assert "entry 7: edited" in res.output


def test_verify_refuses_a_directory_without_state(tmp_path: Path) -> None:
    res = runner.invoke(audit_app, ["verify", "--state-dir", str(tmp_path / "nope")])
    assert res.exit_code == 2
    assert "no node state at" in res.output


def test_export_json_and_csv_since(tmp_path: Path) -> None:
    state = _state(tmp_path)
    res = runner.invoke(audit_app, ["export", "--state-dir", str(state), "--format", "json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert [r["id"] for r in rows] == list(range(1, 11))
    assert rows[0]["detail"] == {"epsilon": 0.25, "note": "tumour ✓"}
    assert rows[1]["prev_hash"] == rows[0]["hash"]
    res = runner.invoke(
        audit_app, ["export", "--state-dir", str(state), "--format", "csv", "--kind", "checkpoint"]
    )
    table = list(csv.DictReader(io.StringIO(res.stdout)))
    assert [r["id"] for r in table] == ["5", "10"]
    future = runner.invoke(
        audit_app, ["export", "--state-dir", str(state), "--since", "2999-01-01"]
    )
    assert json.loads(future.stdout) == []
    bad = runner.invoke(audit_app, ["export", "--state-dir", str(state), "--since", "yesterday"])
    assert bad.exit_code == 2 and "not an ISO date" in bad.output
