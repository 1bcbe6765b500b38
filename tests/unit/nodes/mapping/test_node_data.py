"""What a starting node loads: hard findings stop it (naming file, column, rule), soft ones warn."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest

from nodes.mapping import MappingError
from nodes.mapping.node_data import load_node_data
from nodes.synth import generate_registry, write_registry
from tests.unit.nodes.mapping.helpers import write_site


def test_a_mapped_site_loads_with_its_missing_fields_marked(site_mapping: Path) -> None:
    data = load_node_data(site="oslo", max_rows_per_patient=3, mapping_path=site_mapping)
    assert data.n_rows + data.n_dropped == 400
    assert "egfr" in data.not_available and "sex" not in data.not_available
    with pytest.raises(MappingError, match="mapping is for site 'oslo', not 'bergen'"):
        load_node_data(site="bergen", max_rows_per_patient=3, mapping_path=site_mapping)


def test_soft_findings_are_logged_and_the_node_starts(
    tmp_path: Path, export: pd.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    odd = export.copy()
    odd.loc[odd.index[:2], ["icdo3_topography", "sex"]] = ["C619", "F"]
    with caplog.at_level(logging.WARNING, logger="varde.node.data"):
        data = load_node_data(
            site="oslo", max_rows_per_patient=3, mapping_path=write_site(tmp_path, odd)
        )
    assert data.n_rows > 0
    assert any("sex_specific_cancer" in r.getMessage() for r in caplog.records)


def test_a_plain_registry_file_with_a_hard_contradiction_is_refused(tmp_path: Path) -> None:
    frame = generate_registry("oslo", 500, seed=2)
    frame.loc[4, "survival_days"] = frame.loc[4, "survival_days"] + 400
    path = write_registry(frame, tmp_path / "oslo.parquet", "parquet")
    with pytest.raises(MappingError) as err:
        load_node_data(site="oslo", max_rows_per_patient=3, data_path=path)
    assert "oslo.parquet" in str(err.value) and "survival_days_vs_dates" in str(err.value)
    fine = write_registry(generate_registry("oslo", 500, seed=2), tmp_path / "ok.csv", "csv")
    assert load_node_data(site="oslo", max_rows_per_patient=3, data_path=fine).n_rows > 0
    with pytest.raises(MappingError, match="--data.*--mapping"):
        load_node_data(site="oslo", max_rows_per_patient=3)
