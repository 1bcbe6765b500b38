"""``varde node check-data``: the report on stdout, exit 0 when the node would start, 1 if not."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from launcher.cli import app
from nodes.synth import generate_registry, write_registry
from tests.unit.nodes.mapping.helpers import local_export, write_site

RUN = CliRunner()


def test_a_mapped_export_and_a_broken_one(tmp_path: Path) -> None:
    good = write_site(tmp_path / "good", local_export(200, seed=1))
    result = RUN.invoke(app, ["node", "check-data", "--mapping", str(good)])
    assert result.exit_code == 0, result.output
    assert "rows read: 200" in result.output and "verdict: OK" in result.output
    export = local_export(200, seed=1)
    export.loc[3, "region"] = "XX99"
    bad = write_site(tmp_path / "bad", export)
    result = RUN.invoke(app, ["node", "check-data", "--mapping", str(bad), "--format", "json"])
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["rows_rejected"] == 1
    assert [(f["field"], f["rule"], f["examples"]) for f in report["findings"]] == [
        ("region", "unmapped_code", ["'XX99'"])
    ]


def test_a_common_schema_file_without_mapping_and_usage_errors(tmp_path: Path) -> None:
    path = write_registry(generate_registry("bergen", 300, seed=2), tmp_path / "b.csv", "csv")
    result = RUN.invoke(app, ["node", "check-data", "--data", str(path), "--site", "bergen"])
    assert result.exit_code == 0 and "site bergen" in result.output
    result = RUN.invoke(app, ["node", "check-data"])
    assert result.exit_code == 2 and "give --mapping FILE" in result.output
    result = RUN.invoke(app, ["node", "check-data", "--mapping", str(tmp_path / "none.yaml")])
    assert result.exit_code == 2 and "cannot read mapping file" in result.output
