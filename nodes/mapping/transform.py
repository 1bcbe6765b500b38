"""Apply a site's mapping to one chunk of source rows: the common schema, plus every problem.

Why collect problems instead of raising at the first: registry staff fix a file
once per round trip, so ``varde node check-data`` must show *all* that is wrong
(grouped by field and rule, with counts and a few example values). The node
then refuses the whole file if any row has a hard problem: nothing is loaded
half-way.

A chunk comes back with pandas' nullable dtypes (``string``, ``Int64``, dates
as ``datetime64[ns]``); :mod:`nodes.mapping.reader` turns the whole result into
the registry dtypes with :func:`nodes.registry_io.conform_registry`.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as _field

import numpy as np
import pandas as pd

from nodes.mapping.derive import (
    DERIVE_ORDER,
    TEXT,
    by_unique,
    derive,
    normalise_morphology,
    normalise_topography,
)
from nodes.mapping.model import ColumnRule, ConstantRule, SiteMapping, StudyField
from varde.schema import FIELDS, FIELDS_BY_NAME, FieldKind, FieldSpec

_EXAMPLES = 5


@dataclass
class Problem:
    """One rule broken by some rows: which field, source column and rule, how often, examples."""

    field: str
    column: str | None
    rule: str
    detail: str
    count: int = 0
    examples: list[str] = _field(default_factory=list)
    hard: bool = True
    first_rows: list[int] = _field(default_factory=list)
    """The first few rows (1 = the source's first data row) that break the rule."""

    def line(self) -> str:
        """``field (column 'x'): rule: detail: N row(s), e.g. ... (rows 4, 18)``."""
        col = f" (column {self.column!r})" if self.column and self.column != self.field else ""
        shown = f", e.g. {', '.join(self.examples)}" if self.examples else ""
        at = f" (rows {', '.join(str(r) for r in self.first_rows)})" if self.first_rows else ""
        return f"{self.field}{col}: {self.rule}: {self.detail}: {self.count:,} row(s){shown}{at}"


@dataclass
class ProblemLog:
    """Problems across chunks, keyed by (field, rule), and which rows have a hard one."""

    problems: dict[tuple[str, str], Problem] = _field(default_factory=dict)
    rejected_rows: int = 0
    rows_read: int = 0
    _bad: np.ndarray | None = None
    _offset: int = 0

    def begin_chunk(self, n: int, offset: int | None = None) -> None:
        """Start counting which of the next ``n`` rows have a hard problem.

        ``offset``: the chunk's first row's position in the source (default: rows read).
        """
        self._bad = np.zeros(n, dtype=bool)
        self._offset = self.rows_read if offset is None else offset
        self.rows_read += n

    def end_chunk(self) -> None:
        """Add the chunk's rows with a hard problem to :attr:`rejected_rows`."""
        if self._bad is not None:
            self.rejected_rows += int(self._bad.sum())
        self._bad = None

    def add(
        self,
        name: str,
        column: str | None,
        rule: str,
        detail: str,
        mask: np.ndarray,
        values: pd.Series | None = None,
        *,
        hard: bool = True,
    ) -> None:
        """Record that the rows in ``mask`` break ``rule`` (``values`` give the examples)."""
        n = int(mask.sum())
        if n == 0:
            return
        if hard and self._bad is not None and len(mask) == len(self._bad):
            self._bad |= mask
        key = (name, rule)
        found = self.problems.setdefault(key, Problem(name, column, rule, detail, hard=hard))
        found.count += n
        if len(found.first_rows) < _EXAMPLES:
            at = np.flatnonzero(mask)[: _EXAMPLES - len(found.first_rows)] + self._offset + 1
            found.first_rows += [int(r) for r in at]
        if values is not None and len(found.examples) < _EXAMPLES:
            for v in pd.unique(values[mask].astype(str)):
                shown = repr(v)
                if shown not in found.examples and len(found.examples) < _EXAMPLES:
                    found.examples.append(shown)

    @property
    def hard(self) -> list[Problem]:
        """Problems that make the data unusable."""
        return [p for p in self.problems.values() if p.hard]

    @property
    def soft(self) -> list[Problem]:
        """Problems worth a look that do not stop the node."""
        return [p for p in self.problems.values() if not p.hard]


def _text(raw: pd.Series) -> pd.Series:
    """Cells as stripped text; an empty cell is missing."""
    if pd.api.types.is_bool_dtype(raw.dtype):
        return raw.astype(TEXT)  # "True"/"False": never read as a number or a code
    if pd.api.types.is_float_dtype(raw.dtype):
        # 3.0 from a numeric column is the code "3", not "3.0"
        whole = raw.notna() & (raw == np.floor(raw.fillna(0)))
        text = raw.astype(TEXT)
        return text.where(~whole, raw.where(whole).astype("Int64").astype(TEXT))
    return _stripped(raw)


@by_unique
def _stripped(values: pd.Series) -> pd.Series:
    text = values.astype(TEXT).str.strip()
    return text.mask(text == "")


def _mapped(rule: ColumnRule, raw: pd.Series) -> pd.Series:
    text = _text(raw)
    if not rule.values:
        return text
    lookup = {k: (None if v is None else str(v)) for k, v in rule.values.items()}
    hit = text.isin(list(lookup))
    return text.where(~hit, text.map(lookup).astype(TEXT))


def _dates(name: str, column: str, raw: pd.Series, fmt: str | None, log: ProblemLog) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(raw.dtype):
        return pd.Series(pd.to_datetime(raw).dt.tz_localize(None).dt.normalize(), index=raw.index)
    text = _text(raw)
    codes, uniques = pd.factorize(text, use_na_sentinel=True)  # a few thousand distinct days
    once = pd.to_datetime(
        pd.Series(uniques, dtype=object), format=fmt or "ISO8601", errors="coerce"
    )
    parsed = pd.Series(
        pd.DatetimeIndex(once).take(codes, allow_fill=True, fill_value=pd.NaT), index=raw.index
    )
    bad = (parsed.isna() & text.notna()).to_numpy()
    log.add(name, column, "bad_date", f"not a date in format {fmt or 'ISO 8601'}", bad, text)
    return parsed.dt.normalize()


def _numbers(
    spec: FieldSpec | None, name: str, column: str, text: pd.Series, log: ProblemLog, whole: bool
) -> pd.Series:
    numbers = pd.to_numeric(text, errors="coerce").astype("Float64")
    bad = (numbers.isna() & text.notna()).to_numpy()
    log.add(name, column, "not_a_number", "not a number", bad, text)
    values = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
    if whole:
        frac = ~np.isnan(values) & (values != np.floor(np.nan_to_num(values)))
        log.add(name, column, "not_whole", "not a whole number", frac, text)
        values[frac] = np.nan
    if spec is not None and spec.lower is not None and spec.upper is not None:
        out = ~np.isnan(values) & ((values < spec.lower) | (values > spec.upper))
        log.add(name, column, "out_of_range", f"outside [{spec.lower}, {spec.upper}]", out, text)
        values[out] = np.nan
    series = pd.Series(values, index=text.index, dtype="Float64")
    return series.astype("Int64") if whole else series


def column_field(
    spec: FieldSpec, rule: ColumnRule, raw: pd.Series, date_format: str | None, log: ProblemLog
) -> pd.Series:
    """One schema field read from its source column, with every problem logged."""
    col = rule.column
    if spec.kind is FieldKind.DATE:
        if rule.values:
            raw = _mapped(rule, raw)
        out = _dates(spec.name, col, raw, rule.date_format or date_format, log)
        present = raw.notna().to_numpy() if rule.values else _text(raw).notna().to_numpy()
        empty = out.isna().to_numpy() & ~present
        if rule.missing is not None:
            fill = pd.to_datetime(str(rule.missing), format="ISO8601")
            out = out.mask(pd.Series(empty, index=out.index), fill)
        elif not spec.nullable:
            log.add(spec.name, col, "missing_value", "empty cell and no 'missing' default", empty)
        return out
    text = _mapped(rule, raw)
    if rule.codes == "icd_o3_topography":
        text = normalise_topography(text).astype(TEXT)
    elif rule.codes == "icd_o3_morphology":
        text = normalise_morphology(text).astype(TEXT)
    empty = text.isna().to_numpy()
    if rule.missing is not None:
        text = text.mask(pd.Series(empty, index=text.index), str(rule.missing))
    elif not spec.nullable:
        log.add(spec.name, col, "missing_value", "empty cell and no 'missing' default", empty)
    if spec.kind is FieldKind.CATEGORICAL:
        outside = (text.notna() & ~text.isin(list(spec.categories))).to_numpy()
        if rule.others is not None:
            return text.mask(pd.Series(outside, index=text.index), str(rule.others))
        log.add(
            spec.name, col, "unmapped_code", "not a schema value and not in 'values'", outside, text
        )
        return text.mask(pd.Series(outside, index=text.index))
    if spec.name == "patient_id":
        return text
    return _numbers(spec, spec.name, col, text, log, whole=True)


def study_field(
    name: str, rule: StudyField, raw: pd.Series, date_format: str | None, log: ProblemLog
) -> pd.Series:
    """A study field's column (no schema categories: its terms live in the policies)."""
    if rule.kind == "date":
        return _dates(name, rule.column, raw, rule.date_format or date_format, log)
    text = _mapped(ColumnRule(column=rule.column, values=rule.values), raw)
    if rule.kind == "categorical":
        return text
    return _numbers(None, name, rule.column, text, log, whole=rule.kind == "integer")


def _constant(spec: FieldSpec, rule: ConstantRule, index: pd.Index, log: ProblemLog) -> pd.Series:
    if spec.kind is FieldKind.CATEGORICAL:
        if str(rule.value) not in spec.categories:
            log.add(
                spec.name,
                None,
                "unmapped_code",
                "constant is not a schema value",
                np.ones(len(index), bool),
                pd.Series([str(rule.value)] * len(index), index=index),
            )
        return pd.Series(str(rule.value), index=index, dtype=TEXT)
    if spec.kind is FieldKind.DATE:
        return pd.Series(pd.to_datetime(str(rule.value), format="ISO8601"), index=index)
    if spec.name == "patient_id":
        return pd.Series(str(rule.value), index=index, dtype=TEXT)
    return _numbers(
        spec,
        spec.name,
        "",
        pd.Series(str(rule.value), index=index, dtype=TEXT),
        log,
        whole=True,
    )


def _check_derived(spec: FieldSpec, values: pd.Series, log: ProblemLog) -> pd.Series:
    """Range checks on a derived number (a negative survival means dates contradict)."""
    if spec.kind is not FieldKind.INTEGER or spec.lower is None or spec.upper is None:
        return values
    numbers = values.astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)
    out = ~np.isnan(numbers) & ((numbers < spec.lower) | (numbers > spec.upper))
    rule = "derived_out_of_range"
    detail = f"derived value outside [{spec.lower}, {spec.upper}]"
    if spec.name == "survival_days":
        rule, detail = "last_contact_before_diagnosis", "last contact is before the diagnosis"
    elif spec.name == "age_at_diagnosis":
        rule, detail = (
            "birth_after_diagnosis",
            f"age from the dates outside [{spec.lower}, {spec.upper}]",
        )
    log.add(spec.name, None, rule, detail, out, values)
    return values.mask(pd.Series(out, index=values.index))


def _categorical(values: pd.Series, spec: FieldSpec) -> pd.Categorical:
    """Schema-category codes, found once per distinct value (values outside: missing)."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    where = pd.Index(spec.categories).get_indexer(pd.Index(uniques, dtype=object))
    mapped = np.append(where, -1)[codes].astype(np.int16)
    dtype = pd.CategoricalDtype(list(spec.categories))
    return pd.Categorical.from_codes(mapped, dtype=dtype, validate=False)


def missing_columns(mapping: SiteMapping, columns: list[str]) -> list[str]:
    """Source columns the mapping reads that the source does not have."""
    wanted = [r.column for r in mapping.fields.values() if isinstance(r, ColumnRule)]
    wanted += [r.column for r in mapping.inputs.values()]
    wanted += [r.column for r in mapping.study_fields.values()]
    have = set(columns)
    return sorted({c for c in wanted if c not in have})


def map_chunk(
    mapping: SiteMapping, raw: pd.DataFrame, offset: int, log: ProblemLog
) -> pd.DataFrame:
    """Map one chunk of source rows (``offset``: its first row's number in the source)."""
    raw = raw.reset_index(drop=True)
    log.begin_chunk(len(raw))
    out: dict[str, pd.Series] = {}
    fmt = mapping.date_format
    inputs = pd.DataFrame(
        {
            name: _dates(name, rule.column, raw[rule.column], rule.date_format or fmt, log)
            for name, rule in mapping.inputs.items()
        },
        index=raw.index,
    )
    for name, rule in mapping.fields.items():
        spec = FIELDS_BY_NAME[name]
        if isinstance(rule, ColumnRule):
            out[name] = column_field(spec, rule, raw[rule.column], fmt, log)
        elif isinstance(rule, ConstantRule):
            out[name] = _constant(spec, rule, raw.index, log)
    frame = pd.DataFrame(out, index=raw.index)
    for name in DERIVE_ORDER:
        if mapping.fields.get(name) == "derived":
            frame[name] = _check_derived(
                FIELDS_BY_NAME[name], derive(name, frame, inputs, offset), log
            )
    for spec in FIELDS:
        if spec.name in mapping.not_available:
            frame[spec.name] = pd.Series(np.nan, index=raw.index)  # replaced when conformed
        elif spec.kind is FieldKind.CATEGORICAL:  # compact now: chunks add up, not raw text
            frame[spec.name] = _categorical(frame[spec.name], spec)
    for name, study in mapping.study_fields.items():
        frame[name] = study_field(name, study, raw[study.column], fmt, log)
    log.end_chunk()
    return frame
