"""A small synthetic OMOP CDM 5.4 database, and the mapping that reads it (tests and demos).

Why: a hospital's OMOP database is the source most sites will bring, and the
tests must build one in SQLite and in PostgreSQL from the DDL in the repository
(:data:`nodes.mapping.omop.DDL_PATH`). Persons come from the synthetic registry
generator (:func:`nodes.synth.generate_registry`), written the way an OMOP ETL
would write them: ICD-O-3 ``histology/behaviour-topography`` source concepts,
some tumours coded in ICD-10 only (a quarter of those without a subsite, so
``C34`` must become ``C34.9``), non-cancer conditions that must be skipped,
EGFR as a measurement and ALK as an observation (``value_as_concept_id`` 9191
Positive / 9189 Negative), deaths, and observation periods ending at the last
contact. Concept ids above 2,000,000,000 are local (OMOP's range for site
concepts), except the real Positive/Negative and gender concepts.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import sqlalchemy as sa

from nodes.mapping.omop import ddl_statements
from nodes.synth import generate_registry

EGFR_CONCEPT = 2_000_100_001
ALK_CONCEPT = 2_000_100_002
POSITIVE, NEGATIVE = 9191, 9189
MALE, FEMALE = 8507, 8532
HYPERTENSION_CONCEPT = 2_000_000_000


def synthetic_omop_tables(
    persons: int = 300, *, seed: int = 0, site: str = "oslo"
) -> dict[str, pd.DataFrame]:
    """The CDM tables (``concept``, ``person``, ...) for about ``persons`` persons."""
    rng = np.random.default_rng(seed)
    reg = generate_registry(site, int(persons * 1.15), seed=seed)
    pid = {p: i + 1 for i, p in enumerate(pd.unique(reg["patient_id"]))}
    reg = reg.assign(person_id=reg["patient_id"].map(pid).astype(int))
    first = reg.sort_values("diagnosis_date").groupby("person_id", sort=True).first()
    n = len(first)
    month = rng.integers(1, 13, n)
    day = rng.integers(1, 29, n)
    stamped = pd.Series(
        pd.to_datetime(
            {"year": first["birth_year"].astype(int).to_numpy(), "month": month, "day": day}
        )
        + pd.Timedelta(hours=8, minutes=30)
    )
    person = pd.DataFrame(
        {
            "person_id": first.index.to_numpy(),
            "gender_concept_id": np.where(first["sex"].astype(str) == "male", MALE, FEMALE),
            "year_of_birth": first["birth_year"].astype(int).to_numpy(),
            "month_of_birth": pd.Series(month, dtype="Int64").where(rng.random(n) >= 0.1).array,
            "day_of_birth": day.astype(object),
            "birth_datetime": stamped.where(rng.random(n) < 0.2),  # some carry a full stamp
            "race_concept_id": 0,
            "ethnicity_concept_id": 0,
        }
    )
    # ICD-O-3 source concepts for most tumours, ICD-10 for the rest (some without subsite)
    icd10 = rng.random(len(reg)) < 0.2
    no_subsite = icd10 & (rng.random(len(reg)) < 0.25)
    topo = reg["topography"].astype(str)
    codes = np.where(
        icd10,
        np.where(no_subsite, topo.str[:3], topo),
        reg["morphology"].astype(str) + "-" + topo,
    )
    vocab = np.where(icd10, "ICD10", "ICDO3")
    keys = pd.Series(list(zip(vocab, codes, strict=True)))
    distinct = list(dict.fromkeys(keys))
    concept_id = {k: 2_000_001_000 + i for i, k in enumerate(distinct)}
    concept = pd.DataFrame(
        {
            "concept_id": [concept_id[k] for k in distinct] + [HYPERTENSION_CONCEPT],
            "concept_name": [f"{v} {c}" for v, c in distinct] + ["Essential hypertension"],
            "domain_id": "Condition",
            "vocabulary_id": [v for v, _ in distinct] + ["ICD10"],
            "concept_class_id": "ICDO Condition",
            "standard_concept": None,
            "concept_code": [c for _, c in distinct] + ["I10"],
            "valid_start_date": dt.date(1970, 1, 1),
            "valid_end_date": dt.date(2099, 12, 31),
            "invalid_reason": None,
        }
    )
    diagnosis = pd.to_datetime(reg["diagnosis_date"]).dt.date
    cancer = pd.DataFrame(
        {
            "condition_occurrence_id": reg["tumour_id"].astype(int).to_numpy(),
            "person_id": reg["person_id"].to_numpy(),
            "condition_concept_id": 0,
            "condition_start_date": diagnosis.to_numpy(),
            "condition_type_concept_id": 32879,
            "condition_source_value": codes,
            "condition_source_concept_id": [concept_id[k] for k in keys],
        }
    )
    sick = person["person_id"].sample(frac=0.3, random_state=seed).to_numpy()
    other = pd.DataFrame(
        {
            "condition_occurrence_id": np.arange(len(sick))
            + int(cancer["condition_occurrence_id"].max())
            + 1,
            "person_id": sick,
            "condition_concept_id": 0,
            "condition_start_date": dt.date(2015, 3, 1),
            "condition_type_concept_id": 32879,
            "condition_source_value": "I10",
            "condition_source_concept_id": HYPERTENSION_CONCEPT,
        }
    )
    last = reg.groupby("person_id")["last_contact_date"].max()
    dead = reg.groupby("person_id")["vital_status"].agg(lambda s: (s.astype(str) == "dead").any())
    death = pd.DataFrame(
        {"person_id": last.index[dead], "death_date": pd.to_datetime(last[dead]).dt.date.to_numpy()}
    )
    period = pd.DataFrame(
        {
            "observation_period_id": last.index.to_numpy(),
            "person_id": last.index.to_numpy(),
            "observation_period_start_date": dt.date(2000, 1, 1),
            "observation_period_end_date": pd.to_datetime(last).dt.date.to_numpy(),
            "period_type_concept_id": 32817,
        }
    )
    measurement = _marker_rows(reg, "egfr", EGFR_CONCEPT, "measurement")
    observation = _marker_rows(reg, "alk", ALK_CONCEPT, "observation")
    return {
        "concept": concept,
        "person": person,
        "observation_period": period,
        "condition_occurrence": pd.concat([cancer, other], ignore_index=True),
        "measurement": measurement,
        "observation": observation,
        "death": death,
    }


def _marker_rows(reg: pd.DataFrame, marker: str, concept: int, table: str) -> pd.DataFrame:
    tested = reg[reg[marker].astype(str) != "not_tested"]
    rows = pd.DataFrame(
        {
            f"{table}_id": np.arange(1, len(tested) + 1),
            "person_id": tested["person_id"].to_numpy(),
            f"{table}_concept_id": concept,
            f"{table}_date": pd.to_datetime(tested["diagnosis_date"]).dt.date.to_numpy(),
            f"{table}_type_concept_id": 32817,
            "value_as_concept_id": np.where(
                tested[marker].astype(str) == "positive", POSITIVE, NEGATIVE
            ),
        }
    )
    return rows


def write_synthetic_omop(
    engine: sa.Engine, *, persons: int = 300, seed: int = 0, schema: str | None = None
) -> dict[str, pd.DataFrame]:
    """Create the DDL subset in ``engine`` (in ``schema``) and fill it; returns the tables."""
    tables = synthetic_omop_tables(persons, seed=seed)
    with engine.begin() as conn:
        if schema:
            conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
        for statement in ddl_statements(schema):
            conn.execute(sa.text(statement))
        for name, frame in tables.items():
            frame.to_sql(name, conn, schema=schema, if_exists="append", index=False)
    return tables


def omop_mapping_text(site: str, url: str, *, schema: str | None = None) -> str:
    """A mapping file reading :func:`write_synthetic_omop`'s database (docs/MAPPING.md shows it)."""
    schema_line = f"\n  schema: {schema}" if schema else ""
    return f"""\
site: {site}
source:
  kind: omop
  url: {url}{schema_line}
  measurements:
    egfr: {{concepts: [{EGFR_CONCEPT}]}}
    alk: {{concepts: [{ALK_CONCEPT}]}}
inputs:
  birth_date: {{column: birth_date}}
  death_date: {{column: death_date}}
  last_followup_date: {{column: last_followup_date}}
fields:
  patient_id: {{column: person_id}}
  tumour_id: {{column: condition_occurrence_id}}
  sex: {{column: gender_concept_id, values: {{"{MALE}": male, "{FEMALE}": female}}}}
  birth_year: {{column: year_of_birth}}
  age_at_diagnosis: derived
  age_band: derived
  diagnosis_date: {{column: diagnosis_date}}
  diagnosis_year: derived
  topography: {{column: topography, codes: icd_o3_topography}}
  cancer_type: derived
  morphology: {{column: morphology, codes: icd_o3_morphology, missing: "8000/3"}}
  behaviour: derived
  egfr:
    column: egfr
    values: {{"{POSITIVE}": positive, "{NEGATIVE}": negative}}
    missing: not_tested
  alk:
    column: alk
    values: {{"{POSITIVE}": positive, "{NEGATIVE}": negative}}
    missing: not_tested
  vital_status: derived
  last_contact_date: derived
  survival_days: derived
  country: {{value: "NO"}}
not_available: [stage, t_stage, n_stage, m_stage, grade, ros1, kras_g12c, braf_v600e, her2, msi,
                pdl1_tps, first_treatment, days_to_treatment, clinical_trial, region]
"""
