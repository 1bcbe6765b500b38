"""An OMOP CDM 5.4 database as a source: one row per cancer condition, read in chunks.

What it yields (the columns a mapping's ``fields`` and ``inputs`` name):

===================== =====================================================================
``person_id``         ``person.person_id`` (as text)
``condition_occurrence_id``  the tumour's id
``gender_concept_id`` 8507 male, 8532 female (map with ``values``)
``year_of_birth``     ``person.year_of_birth``
``birth_date``        ``birth_datetime``, else year/month/day of birth (1 July / the 1st
                      when month / day are unknown: the usual convention, documented)
``diagnosis_date``    ``condition_start_date``
``topography``        ICD-O-3 ``8140/3-C34.1`` -> ``C34.1``; ICD-10 ``C34.1`` as it is
``morphology``        ICD-O-3 ``8140/3-C34.1`` -> ``8140/3``; empty for ICD-10 conditions
``vocabulary_id``     the condition code's vocabulary
``death_date``        ``death.death_date`` (empty while alive)
``last_followup_date`` the end of the person's latest ``observation_period``
one column per ``measurements`` entry: the person's latest ``value_as_concept_id`` among
                      ``measurement`` and ``observation`` rows with those concepts
===================== =====================================================================

Why the condition's *source* concept: ICD-O-3 and ICD-10 codes live in
``condition_source_concept_id`` (the standard ``condition_concept_id`` is usually
SNOMED); without one the standard concept is read. Only codes of the configured
vocabularies count, and of ICD-10 only chapter II's ``C`` codes: a hypertension
in the same table is not a tumour. Rows arrive ``chunksize`` at a time
(server-side cursor where the driver has one), so the raw table never sits in
memory whole; the measurements are read first, filtered to their concepts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from nodes.mapping.derive import TEXT
from nodes.mapping.model import OmopSource
from nodes.mapping.sources import RawChunks, connect, shown_url, stream_sql

DDL_PATH = Path(__file__).with_name("omop_ddl.sql")
BASE_COLUMNS = [
    "person_id",
    "condition_occurrence_id",
    "gender_concept_id",
    "year_of_birth",
    "birth_date",
    "diagnosis_date",
    "topography",
    "morphology",
    "vocabulary_id",
    "death_date",
    "last_followup_date",
]


def ddl_statements(schema: str | None = None) -> list[str]:
    """The DDL subset's ``CREATE TABLE`` statements, for ``schema`` (or the default one)."""
    text = DDL_PATH.read_text().replace("{schema}", f"{schema}." if schema else "")
    body = "\n".join(line for line in text.splitlines() if not line.startswith("--"))
    return [s.strip() for s in body.split(";") if s.strip()]


def _conditions_sql(prefix: str) -> sa.TextClause:
    return sa.text(
        f"""
        SELECT co.condition_occurrence_id, co.person_id, p.gender_concept_id, p.year_of_birth,
               p.month_of_birth, p.day_of_birth, p.birth_datetime,
               co.condition_start_date AS diagnosis_date,
               c.concept_code, c.vocabulary_id, d.death_date, op.last_followup_date
        FROM {prefix}condition_occurrence co
        JOIN {prefix}person p ON p.person_id = co.person_id
        JOIN {prefix}concept c ON c.concept_id = COALESCE(
            NULLIF(co.condition_source_concept_id, 0), co.condition_concept_id)
        LEFT JOIN {prefix}death d ON d.person_id = co.person_id
        LEFT JOIN (
            SELECT person_id, MAX(observation_period_end_date) AS last_followup_date
            FROM {prefix}observation_period GROUP BY person_id
        ) op ON op.person_id = co.person_id
        WHERE c.vocabulary_id IN :vocabularies
          AND (c.vocabulary_id = 'ICDO3' OR c.concept_code LIKE 'C%')
        ORDER BY co.condition_occurrence_id
        """
    ).bindparams(sa.bindparam("vocabularies", expanding=True))


def _measured_sql(prefix: str) -> sa.TextClause:
    return sa.text(
        f"""
        SELECT person_id, measurement_concept_id AS concept_id, value_as_concept_id AS value,
               measurement_date AS day
        FROM {prefix}measurement WHERE measurement_concept_id IN :concepts
        UNION ALL
        SELECT person_id, observation_concept_id, value_as_concept_id, observation_date
        FROM {prefix}observation WHERE observation_concept_id IN :concepts
        """
    ).bindparams(sa.bindparam("concepts", expanding=True))


def _latest(conn: sa.Connection, source: OmopSource, prefix: str) -> pd.DataFrame:
    """Person x measurement column: the latest value (as text), only configured concepts."""
    column_of = {c: name for name, m in source.measurements.items() for c in m.concepts}
    if not column_of:
        return pd.DataFrame(index=pd.Index([], name="person_id"))
    rows = pd.read_sql(
        _measured_sql(prefix), conn, params={"concepts": sorted(column_of)}, chunksize=None
    )
    rows["column"] = rows["concept_id"].map(column_of)
    rows["day"] = pd.to_datetime(rows["day"])
    rows = rows.sort_values(["person_id", "column", "day"], kind="stable")
    last = rows.groupby(["person_id", "column"]).tail(1)
    wide = last.pivot(index="person_id", columns="column", values="value")
    wide = wide.reindex(columns=list(source.measurements))
    return wide.astype("Int64").astype(TEXT)


def _birth_date(rows: pd.DataFrame) -> pd.Series:
    parts = pd.DataFrame(
        {
            "year": pd.to_numeric(rows["year_of_birth"]),
            "month": pd.to_numeric(rows["month_of_birth"]).fillna(7),
            "day": pd.to_numeric(rows["day_of_birth"]).fillna(1),
        }
    )
    unknown_month = rows["month_of_birth"].isna()
    parts.loc[unknown_month, "day"] = 1
    from_parts = pd.to_datetime(parts, errors="coerce")
    stamped = pd.to_datetime(rows["birth_datetime"], errors="coerce")
    return stamped.dt.normalize().where(stamped.notna(), from_parts)


def _shape(rows: pd.DataFrame, latest: pd.DataFrame) -> pd.DataFrame:
    code = rows["concept_code"].astype(TEXT)
    icdo3 = rows["vocabulary_id"] == "ICDO3"
    split = code.str.split("-", n=1, expand=True).reindex(columns=[0, 1])
    out = pd.DataFrame(
        {
            "person_id": rows["person_id"].astype("Int64").astype(TEXT),
            "condition_occurrence_id": rows["condition_occurrence_id"],
            "gender_concept_id": rows["gender_concept_id"].astype("Int64").astype(TEXT),
            "year_of_birth": rows["year_of_birth"],
            "birth_date": _birth_date(rows),
            "diagnosis_date": pd.to_datetime(rows["diagnosis_date"]),
            "topography": split[1].where(icdo3, code),
            "morphology": split[0].where(icdo3),
            "vocabulary_id": rows["vocabulary_id"],
            "death_date": pd.to_datetime(rows["death_date"]),
            "last_followup_date": pd.to_datetime(rows["last_followup_date"]),
        }
    )
    if len(latest.columns):
        joined = latest.reindex(rows["person_id"].to_numpy())
        for name in latest.columns:
            out[name] = joined[name].to_numpy()
    return out


def omop_chunks(source: OmopSource) -> RawChunks:
    """Open the CDM and yield its cancer conditions as mapped-ready chunks."""
    engine = connect(source.url)
    prefix = f"{source.schema_name}." if source.schema_name else ""
    name = f"OMOP CDM at {shown_url(source.url)}" + (
        f" schema {source.schema_name}" if prefix else ""
    )
    latest = pd.DataFrame()

    def run(conn: sa.Connection) -> sa.CursorResult[Any]:
        nonlocal latest
        latest = _latest(conn, source, prefix)  # read whole first: one row per person
        return conn.execution_options(stream_results=True).execute(
            _conditions_sql(prefix), {"vocabularies": list(source.vocabularies)}
        )

    stream = stream_sql(
        engine, name, source.chunksize, run, failure="not a readable OMOP CDM 5.4: "
    )
    shaped = (_shape(chunk, latest) for chunk in stream.chunks)
    return RawChunks(name, BASE_COLUMNS + list(source.measurements), shaped, stream.close)
