"""check_data: the report staff read before a node serves anything, and its verdict."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from nodes.mapping.check import check_data
from tests.unit.nodes.mapping.helpers import write_site


def test_a_clean_export_is_ok_with_missing_shares(site_mapping: Path) -> None:
    report = check_data(site_mapping)
    assert report.verdict == "ok" and report.rows_read == 400 and report.rows_rejected == 0
    assert 0 < report.missing_share["days_to_treatment"] < 1
    assert report.missing_share["sex"] == 0.0 and "egfr" not in report.missing_share
    text = report.render()
    assert "rows read: 400" in text and text.splitlines()[-1].startswith("verdict: OK")
    assert "not available at this site: egfr" in text


def test_rejected_rows_are_grouped_by_rule_with_counts(
    tmp_path: Path, export: pd.DataFrame
) -> None:
    bad = export.copy()
    bad.loc[:4, "sex"] = "U"
    bad.loc[10:12, "diagnosis_date"] = "2020-13-45"
    report = check_data(write_site(tmp_path, bad))
    assert report.verdict == "fail"
    rules = {(f.field, f.rule): f.rows for f in report.findings}
    assert rules[("sex", "unmapped_code")] == 5
    assert rules[("diagnosis_date", "bad_date")] == 3
    rows = {f.rule: f.first_rows for f in report.findings}
    assert rows["unmapped_code"] == [1, 2, 3, 4, 5] and rows["bad_date"] == [11, 12, 13]
    assert report.rows_rejected == 8
    text = report.render()
    assert "unmapped_code" in text and "'U'" in text and "FAIL" in text.splitlines()[-1]


def test_soft_findings_give_warnings_and_a_source_error_is_a_fail(
    tmp_path: Path, export: pd.DataFrame
) -> None:
    odd = export.copy()
    odd.loc[odd.index[:3], "icdo3_topography"] = "C619"  # prostate ...
    odd.loc[odd.index[:3], "sex"] = "F"  # ... in women: plausible only as a coding error
    report = check_data(write_site(tmp_path, odd))
    assert report.verdict == "warnings", report.render()
    assert [f.rule for f in report.findings] == ["sex_specific_cancer"]
    assert report.findings[0].rows == 3 and not report.findings[0].hard
    gone = check_data(write_site(tmp_path / "x", export), tmp_path / "none.csv")
    assert gone.verdict == "fail" and "no such data file" in (gone.load_error or "")
    assert "FAIL" in gone.summary()


def test_docs_name_every_rule_and_derivation() -> None:
    from nodes.mapping.contradictions import RULES
    from nodes.mapping.model import DERIVABLE

    docs = (Path(__file__).parents[4] / "docs" / "MAPPING.md").read_text()
    for name in [r.name for r in RULES] + list(DERIVABLE):
        assert f"`{name}`" in docs, name
