"""read_site_data: a local export in, the common schema out, or a refusal naming what and where."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from nodes.mapping import MappingError, read_site_data
from nodes.mapping.starter import starter_mapping_text
from nodes.synth import generate_registry
from tests.unit.nodes.mapping.helpers import write_site
from varde.schema import COLUMN_ORDER, age_band


def _mapping(**changes: object) -> str:
    data = yaml.safe_load(starter_mapping_text("oslo"))
    for key, value in changes.items():
        data["fields"][key] = value
    return yaml.safe_dump(data, sort_keys=False)


def test_the_starter_mapping_reads_a_local_export_back_into_the_schema(
    site_mapping: Path, export: pd.DataFrame
) -> None:
    frame = read_site_data(site_mapping)
    original = generate_registry("oslo", 400, seed=0)
    assert list(frame.columns) == list(COLUMN_ORDER)
    assert len(frame) == len(export)
    assert (frame.tumour_id == range(1, len(frame) + 1)).all()  # derived: row numbers
    for name in ("sex", "topography", "morphology", "cancer_type", "behaviour", "region"):
        assert (frame[name].astype(str) == original[name].astype(str)).all(), name
    assert (frame.stage.astype(str) == original.stage.astype(str)).all()  # "" -> unknown
    assert (frame.survival_days == original.survival_days).all()
    assert (frame.vital_status.astype(str) == original.vital_status.astype(str)).all()
    ages = frame.age_at_diagnosis.to_numpy()
    assert (frame.age_band.astype(str).to_numpy() == [age_band(int(a)) for a in ages]).all()
    assert frame.egfr.isna().all() and frame.attrs["not_available"][0] == "egfr"


def test_value_maps_defaults_others_constants_and_date_formats(
    tmp_path: Path, export: pd.DataFrame
) -> None:
    export = export.copy()
    export["stage"] = export["stage"].fillna("IIIB").replace({"4": "Stage 4 (local)"})
    export["diagnosis_date"] = pd.to_datetime(export["diagnosis_date"]).dt.strftime("%d.%m.%Y")
    text = _mapping(
        diagnosis_date={"column": "diagnosis_date", "date_format": "%d.%m.%Y"},
        stage={
            "column": "stage",
            "values": {"1": "I", "2": "II", "3": "III", "IIIB": "III"},
            "others": "unknown",
        },
        country={"value": "SE"},
    )
    frame = read_site_data(write_site(tmp_path, export, text))
    assert set(frame.country.astype(str)) == {"SE"}
    assert "IV" not in set(frame.stage.astype(str))  # the local "Stage 4 (local)" -> others
    assert (frame.stage.astype(str)[export.stage == "IIIB"] == "III").all()
    assert frame.diagnosis_date.min() >= pd.Timestamp("2000-01-01")


def test_a_topography_without_subsite_is_accepted_as_unspecified_part(
    tmp_path: Path, export: pd.DataFrame
) -> None:
    export = export.copy()
    export.loc[:9, "icdo3_topography"] = "C34"
    frame = read_site_data(write_site(tmp_path, export))
    assert (frame.topography.astype(str)[:10] == "C34.9").all()
    assert (frame.cancer_type.astype(str)[:10] == "lung").all()


def test_study_fields_become_extra_columns(tmp_path: Path, export: pd.DataFrame) -> None:
    export = export.assign(
        arm=["A", "B"] * (len(export) // 2), ecog=[0, 1, 2, ""] * (len(export) // 4)
    )
    data = yaml.safe_load(starter_mapping_text("oslo"))
    data["study_fields"] = {
        "trial_arm": {
            "column": "arm",
            "kind": "categorical",
            "values": {"A": "control", "B": "treatment"},
        },
        "ecog": {"column": "ecog", "kind": "integer"},
    }
    frame = read_site_data(write_site(tmp_path, export, yaml.safe_dump(data, sort_keys=False)))
    assert list(frame.columns[-2:]) == ["trial_arm", "ecog"]
    assert set(frame.trial_arm) == {"control", "treatment"}
    assert frame.ecog.isna().sum() == len(export) // 4 and frame.ecog.max() == 2


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (lambda e: e.rename(columns={"sex": "kjonn"}), ["sex", "registry.csv", "kjonn"]),
        (
            lambda e: e.assign(sex=e.sex.where(e.index != 3, "X")),
            ["sex", "unmapped_code", "'X'", "1 row"],
        ),
        (
            lambda e: e.assign(diagnosis_date=e.diagnosis_date.where(e.index != 5, "31.02.2020")),
            ["diagnosis_date", "bad_date", "'31.02.2020'"],
        ),
        (
            lambda e: e.assign(
                days_to_treatment=e.days_to_treatment.astype("string").where(e.index != 2, "0.5")
            ),
            ["days_to_treatment", "not_whole", "'0.5'"],
        ),
        (
            lambda e: e.assign(region=e.region.where(e.index > 1, None)),
            ["region", "missing_value", "2 row"],
        ),
        (
            lambda e: e.assign(last_followup_date="1999-01-01", death_date=None),
            ["last_contact_before_diagnosis", "survival_days"],
        ),
    ],
)
def test_bad_input_is_refused_naming_source_column_and_rule(
    tmp_path: Path, export: pd.DataFrame, damage: object, named: list[str]
) -> None:
    path = write_site(tmp_path, damage(export.copy()))  # type: ignore[operator]
    with pytest.raises(MappingError) as err:
        read_site_data(path)
    message = str(err.value)
    for word in named:
        assert word in message, (word, message)


def test_nothing_is_loaded_half_way_even_when_the_bad_row_is_in_a_later_chunk(
    tmp_path: Path, export: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nodes.mapping.sources as sources

    monkeypatch.setattr(sources, "_CSV_BLOCK", 4096)  # a few dozen rows a chunk
    bad = export.copy()
    bad.loc[len(bad) - 1, "sex"] = "?"
    with pytest.raises(MappingError, match=r"1 of 400 row\(s\) rejected") as err:
        read_site_data(write_site(tmp_path, bad))
    assert "(rows 400)" in str(err.value)  # the row's place in the source, across chunks
    assert len(read_site_data(write_site(tmp_path / "ok", export))) == 400  # chunks join up


def test_data_override_and_a_missing_file(tmp_path: Path, export: pd.DataFrame) -> None:
    path = write_site(tmp_path, export.iloc[:10])
    other = tmp_path / "other.parquet"
    export.iloc[:25].to_parquet(other)
    assert len(read_site_data(path, other)) == 25
    with pytest.raises(MappingError, match="no such data file"):
        read_site_data(path, tmp_path / "gone.csv")
    with pytest.raises(MappingError, match="must be a .csv or .parquet"):
        read_site_data(path, tmp_path / "x.xlsx")
