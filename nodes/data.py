"""A site's registry, loaded once and prepared for fast, vectorised queries.

Why prepare: OpenDP's Polars query path costs seconds per query on 1M rows
(../shared/DESIGN.md); a vectorised numpy filter over prepared columns costs
milliseconds. At load time each column becomes one numpy array:

* categorical -> ``int8``/``int16`` codes into the *schema's* category list
  (-1 missing), so predicates become integer compares or a small table lookup;
* integer and date without missing values -> the narrowest integer type that
  holds the schema's domain (dates as days since 1970-01-01), which halves or
  quarters the memory each comparison streams through;
* integer or date with missing values -> ``float64`` with NaN, which no
  comparison matches.

Contributions are bounded here, once: each patient keeps at most ``k`` tumours
(the earliest diagnoses), which is what every sensitivity in
:mod:`nodes.sensitivity` assumes. Dropped rows are counted, never released.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from nodes.registry_io import read_registry
from varde.schema import FIELDS, FIELDS_BY_NAME, FieldKind

EPOCH = np.datetime64("1970-01-01", "D")


@dataclass(frozen=True)
class RegistryData:
    """Prepared columns of a site's bounded registry."""

    site: str
    n_rows: int
    n_dropped: int
    max_rows_per_patient: int
    columns: dict[str, np.ndarray] = field(repr=False)
    patient_keys: np.ndarray | None = field(default=None, repr=False)
    """A stable 64-bit hash of each row's ``patient_id`` (never released): public,
    data-independent splits by patient, such as training's held-out patients."""
    patient_index: np.ndarray | None = field(default=None, repr=False)
    """Each row's patient as a dense ``uint32`` index (0 .. patients - 1), ordered by
    :attr:`patient_keys`: what aggregate mode counts and compares patient sets with."""
    tumour_order: np.ndarray | None = field(default=None, repr=False)
    """Row positions sorted by patient, then diagnosis date, then tumour id: each patient's
    rows in a run, earliest first. Counting patients takes the first matching row of each
    run (:mod:`nodes.statistics.units`); the order is the one :func:`bound_contributions`
    keeps rows by."""
    study: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    """Columns beyond the common schema (study fields a mapping provides), by name: numbers
    as ``float64`` (NaN missing), text as ``int32`` codes into :attr:`study_levels` (-1
    missing). Which of them a query may read is the policy's declaration
    (:mod:`varde.study_fields`); their values are never checked against it here, since
    the policy can change while the data stay: a category the declaration lacks falls in
    no cell, a number outside the declared bounds is clamped where bounds apply."""
    study_levels: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """The distinct values of each text study column, sorted (what its codes index)."""

    @property
    def patients(self) -> np.ndarray:
        """:attr:`patient_index`, which every prepared registry has."""
        if self.patient_index is None:  # pragma: no cover - prepare() always sets it
            raise ValueError(f"registry of {self.site!r} has no patient index")
        return self.patient_index

    def column(self, name: str) -> np.ndarray:
        """The prepared array for ``name``, a schema or study column (``KeyError`` if absent)."""
        found = self.columns.get(name)
        return self.study[name] if found is None else found

    def study_kinds(self) -> dict[str, str]:
        """Each study column's kind: ``categorical`` (text) or ``bounded`` (numbers)."""
        return {n: "categorical" if n in self.study_levels else "bounded" for n in self.study}

    not_available: frozenset[str] = frozenset()
    """Schema fields this site does not have (its mapping's ``not_available``): their
    columns are all missing, and :func:`nodes.mapping.availability.restrict_policy` keeps
    them out of the policy in force, so no query reads them."""


def bound_contributions(frame: pd.DataFrame, max_rows: int) -> pd.DataFrame:
    """Keep each patient's ``max_rows`` earliest tumours; the privacy unit's bound."""
    if max_rows < 1:
        raise ValueError("max_rows must be >= 1")
    order = frame.sort_values(["patient_id", "diagnosis_date", "tumour_id"], kind="stable")
    rank = order.groupby("patient_id", sort=False, observed=True).cumcount().to_numpy()
    kept = order.loc[rank < max_rows]
    return kept.sort_index()


def _narrow(values: np.ndarray) -> np.ndarray:
    """Whole numbers in int16 or int32 when none is missing; otherwise float64 with NaN."""
    if values.size == 0 or np.isnan(values).any():
        return values
    lo, hi = float(values.min()), float(values.max())
    return values.astype(np.int16 if -(2**15) <= lo and hi < 2**15 else np.int32)


def days_since_epoch(values: pd.Series) -> np.ndarray:
    """Dates as float days since 1970-01-01 (NaN for missing)."""
    as_dt = pd.to_datetime(values, errors="raise").to_numpy(dtype="datetime64[D]")
    days = (as_dt - EPOCH).astype("timedelta64[D]").astype(np.float64)
    days[np.isnat(as_dt)] = np.nan
    return np.asarray(days, dtype=np.float64)


def hash_patient_ids(ids: pd.Series) -> np.ndarray:
    """A stable ``uint64`` hash of each patient id (pandas' SipHash with its fixed key).

    >>> keys = hash_patient_ids(pd.Series(["a-P1", "a-P2", "a-P1"]))
    >>> keys.dtype.name, bool(keys[0] == keys[2]), bool(keys[0] != keys[1])
    ('uint64', True, True)
    """
    hashed = pd.util.hash_pandas_object(ids.astype(str), index=False, hash_key="0123456789123456")
    return np.asarray(hashed.to_numpy(), dtype=np.uint64)


def prepare(frame: pd.DataFrame, *, site: str, max_rows_per_patient: int) -> RegistryData:
    """Bound contributions and convert every schema column to its query-ready array."""
    missing = [f.name for f in FIELDS if f.name not in frame.columns]
    if missing:
        raise ValueError(f"registry for {site!r} lacks schema column(s): {', '.join(missing)}")
    bounded = bound_contributions(frame, max_rows_per_patient)
    cols: dict[str, np.ndarray] = {}
    for spec in FIELDS:
        series = bounded[spec.name]
        if spec.kind is FieldKind.CATEGORICAL:
            cat = pd.Categorical(series, categories=list(spec.categories))
            unknown = series.notna().to_numpy() & (cat.codes < 0)
            if unknown.any():
                bad = sorted(set(series[unknown].astype(str)))[:5]
                raise ValueError(f"column {spec.name!r} has values outside the schema: {bad}")
            small = len(spec.categories) < 127
            cols[spec.name] = cat.codes.astype(np.int8 if small else np.int16)
        elif spec.kind is FieldKind.INTEGER:
            as_float = pd.to_numeric(series).astype("Float64")
            values = as_float.to_numpy(dtype=np.float64, na_value=np.nan)
            # whole numbers are the schema's promise, and the canonical form relies on it
            # (nodes.canonical reads ">= 17.5" as ">= 18" to recognise rewritten repeats)
            fractional = ~np.isnan(values) & (values != np.floor(values))
            if fractional.any():
                bad = sorted({float(v) for v in values[fractional]})[:5]
                raise ValueError(f"integer column {spec.name!r} has non-whole values: {bad}")
            cols[spec.name] = _narrow(values)
        elif spec.kind is FieldKind.DATE:
            cols[spec.name] = _narrow(days_since_epoch(series))
    study, levels = study_columns(bounded)
    keys = hash_patient_ids(bounded["patient_id"])
    patient_index = np.unique(keys, return_inverse=True)[1].astype(np.uint32).reshape(-1)
    return RegistryData(
        site=site,
        n_rows=len(bounded),
        n_dropped=len(frame) - len(bounded),
        max_rows_per_patient=max_rows_per_patient,
        columns=cols,
        patient_keys=keys,
        patient_index=patient_index,
        tumour_order=tumour_order(bounded, patient_index),
        study=study,
        study_levels=levels,
    )


def study_columns(
    bounded: pd.DataFrame,
) -> tuple[dict[str, np.ndarray], dict[str, tuple[str, ...]]]:
    """Every column beyond the schema, prepared: numbers as floats, text as sorted codes."""
    study: dict[str, np.ndarray] = {}
    levels: dict[str, tuple[str, ...]] = {}
    for name in bounded.columns:
        if not isinstance(name, str) or name in FIELDS_BY_NAME:
            continue
        series = bounded[name]
        if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
            as_float = pd.to_numeric(series).astype("Float64")
            study[name] = as_float.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            cat = pd.Categorical(series.astype("string"))
            levels[name] = tuple(str(c) for c in cat.categories)
            study[name] = np.asarray(cat.codes, dtype=np.int32)
    return study, levels


def tumour_order(bounded: pd.DataFrame, patient_index: np.ndarray) -> np.ndarray:
    """Row positions by patient, diagnosis date (missing last), tumour id: see ``tumour_order``."""
    dates = pd.to_datetime(bounded["diagnosis_date"], errors="coerce").to_numpy("datetime64[D]")
    days = np.where(np.isnat(dates), np.iinfo(np.int64).max, dates.astype(np.int64))
    try:  # the ids' own order (numbers as numbers), as bound_contributions sorts them
        tumour_rank = pd.factorize(bounded["tumour_id"], sort=True)[0]
    except TypeError:  # ids of mixed types: compared as text
        tumour_rank = pd.factorize(bounded["tumour_id"].astype(str), sort=True)[0]
    return np.lexsort((tumour_rank, days, patient_index)).astype(np.int64)


def load_registry(path: Path, *, site: str, max_rows_per_patient: int) -> RegistryData:
    """Read a Parquet or CSV registry file (schema-checked) and prepare it."""
    return prepare(read_registry(path), site=site, max_rows_per_patient=max_rows_per_patient)
