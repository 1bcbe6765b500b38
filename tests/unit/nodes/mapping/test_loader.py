"""The mapping file parser: valid mappings round-trip, invalid ones name the key and its line."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodes.mapping import MappingError, SiteMapping, check_mapping_text, load_mapping
from nodes.mapping.model import DERIVABLE, REQUIRED
from nodes.mapping.starter import starter_mapping_text
from varde.schema import FIELDS, FieldKind

COLUMN = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,12}", fullmatch=True)
CODE = st.from_regex(r"[A-Za-z0-9]{1,6}", fullmatch=True)


def _needs_met(name: str, done: dict[str, Any], inputs: dict[str, Any]) -> bool:
    needs = {
        "tumour_id": (),
        "age_at_diagnosis": ("birth_date", "diagnosis_date"),
        "birth_year": ("birth_date",),
        "age_band": ("age_at_diagnosis",),
        "diagnosis_year": ("diagnosis_date",),
        "cancer_type": ("topography",),
        "behaviour": ("morphology",),
        "last_contact_date": ("last_followup_date",),
        "vital_status": ("death_date",),
        "survival_days": ("diagnosis_date", "last_contact_date"),
    }[name]
    return all(n in done or n in inputs for n in needs)


@st.composite
def mappings(draw: st.DrawFn) -> dict[str, Any]:
    """A valid mapping as the dict a YAML file holds (every field accounted for)."""
    inputs = {
        name: {"column": draw(COLUMN)}
        for name in ("birth_date", "death_date", "last_followup_date")
        if draw(st.booleans())
    }
    fields: dict[str, Any] = {}
    absent: list[str] = []
    for spec in FIELDS:
        choice = draw(st.sampled_from(["column", "constant", "derived", "absent"]))
        if choice == "derived" and spec.name in DERIVABLE and _needs_met(spec.name, fields, inputs):
            fields[spec.name] = "derived"
        elif choice == "absent" and spec.name not in REQUIRED:
            absent.append(spec.name)
        elif choice == "constant" and spec.kind is FieldKind.CATEGORICAL:
            fields[spec.name] = {"value": draw(st.sampled_from(spec.categories))}
        else:
            rule: dict[str, Any] = {"column": draw(COLUMN)}
            if spec.kind is FieldKind.CATEGORICAL:
                cats = st.sampled_from(spec.categories)
                rule["values"] = draw(st.dictionaries(CODE, cats, max_size=4))
                if draw(st.booleans()):
                    rule["missing"] = draw(cats)
            if spec.kind is FieldKind.DATE and draw(st.booleans()):
                rule["date_format"] = draw(st.sampled_from(["%d.%m.%Y", "%Y%m%d", "%m/%d/%Y"]))
            fields[spec.name] = rule
    source = draw(
        st.sampled_from(
            [
                {"kind": "csv", "path": "export.csv", "delimiter": ";"},
                {"kind": "parquet", "path": "data/registry.parquet"},
                {"kind": "sql", "url": "sqlite:///registry.db", "table": "tumours"},
                {"kind": "sql", "url": "postgresql+psycopg://u:${PW}@db/x", "query": "SELECT 1"},
                {"kind": "omop", "url": "sqlite:///cdm.db", "schema": "cdm"},
            ]
        )
    )
    out: dict[str, Any] = {"site": "oslo", "source": source, "fields": fields}
    if inputs:
        out["inputs"] = inputs
    if absent:
        out["not_available"] = absent
    return out


def _text(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mappings())
def test_valid_mappings_round_trip(data: dict[str, Any]) -> None:
    mapping = check_mapping_text(_text(data))
    again = mapping.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    assert check_mapping_text(_text(again)) == mapping
    assert mapping.provided | set(mapping.not_available) == {f.name for f in FIELDS}


def _place_unknown(data: dict[str, Any], where: int, key: str) -> None:
    targets: list[dict[str, Any]] = [data, data["source"]]
    targets += [r for r in data["fields"].values() if isinstance(r, dict)]
    targets[where % len(targets)][key] = "x"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mappings(), st.integers(0, 50), st.from_regex(r"zz[a-z]{1,8}", fullmatch=True))
def test_an_unknown_key_is_named_with_its_line(data: dict[str, Any], where: int, key: str) -> None:
    _place_unknown(data, where, key)
    text = _text(data)
    with pytest.raises(MappingError) as err:
        check_mapping_text(text, source="m.yaml")
    line = next(i for i, row in enumerate(text.splitlines(), 1) if re.search(rf"\b{key}\b", row))
    assert f"m.yaml:{line}:" in str(err.value) and key in str(err.value)
    assert "allowed here" in str(err.value)


@settings(max_examples=40, deadline=None)
@given(mappings(), st.sampled_from([f.name for f in FIELDS]))
def test_a_field_left_out_is_named(data: dict[str, Any], name: str) -> None:
    data["fields"].pop(name, None)
    data["not_available"] = [n for n in data.get("not_available", []) if n != name]
    for other, rule in list(data["fields"].items()):
        if rule == "derived":  # a derivation reading the removed field would fail first
            data["fields"][other] = {"column": other}
    with pytest.raises(MappingError, match=rf"{name}.*not accounted for|{name}"):
        check_mapping_text(_text(data), source="m.yaml")


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda d: d["fields"].update(tumour_size={"column": "x"}), "tumour_size"),
        (lambda d: d["fields"].update(stage="derived"), "stage"),
        (lambda d: d["source"].update(kind="excel"), "source"),
        (lambda d: d.update(not_available=["patient_id"]), "patient_id"),
        (lambda d: d["fields"]["sex"].update(values={True: "male"}), "quote it"),
        (lambda d: d["fields"].update(country={"value": False}), "YAML boolean"),
        (lambda d: d["fields"]["sex"].update(date_format="%Y"), "not a date"),
        (lambda d: d.update(study_fields={"sex": {"column": "s", "kind": "integer"}}), "clashes"),
        (lambda d: d.update(source={"kind": "sql", "url": "sqlite://"}), "exactly one"),
        (lambda d: d["fields"]["sex"].update(values={"K": "kvinne"}), "'kvinne' is not one of"),
        (lambda d: d["fields"]["stage"].update(missing="ukjent"), "'ukjent' is not one of"),
        (
            lambda d: d["fields"].update(diagnosis_date={"column": "d", "missing": "01.02.2020"}),
            "not an ISO date",
        ),
        (lambda d: d["fields"]["days_to_treatment"].update(others=0), "categorical fields only"),
        (lambda d: d["fields"].update(country={"value": "Norway"}), "'Norway' is not one of"),
    ],
)
def test_invalid_mappings_name_the_key(change: Any, named: str) -> None:
    data = yaml.safe_load(starter_mapping_text("oslo"))
    change(data)
    with pytest.raises(MappingError, match=re.escape(named)):
        check_mapping_text(_text(data))


def test_duplicate_keys_and_bad_yaml_are_refused_with_lines() -> None:
    text = starter_mapping_text("oslo").replace("  sex:", "  sex: {column: a}\n  sex:")
    with pytest.raises(MappingError, match=r"m\.yaml:\d+: fields\.sex: duplicate key"):
        check_mapping_text(text, source="m.yaml")
    with pytest.raises(MappingError, match=r"m\.yaml:\d: not valid YAML"):
        check_mapping_text("site: oslo\nsource: [a, b\nfields: {}\n", source="m.yaml")


def test_starter_loads_and_missing_file_is_a_clear_error(tmp_path: Any) -> None:
    mapping = check_mapping_text(starter_mapping_text("bergen"))
    assert isinstance(mapping, SiteMapping) and mapping.site == "bergen"
    assert "egfr" in mapping.not_available
    with pytest.raises(MappingError, match="cannot read mapping file"):
        load_mapping(tmp_path / "nope.yaml")
