"""Evaluate a validated cohort predicate to a boolean row mask, vectorised.

The predicate has already been checked against the common schema
(:mod:`varde.query`) and against this site's exposed fields (the policy), so
this module only translates. Categorical predicates become a lookup in a small
boolean table indexed by category code, which is as fast as one numpy gather
however many categories ``in``/``startswith`` match. Missing values never
satisfy a comparison (as in SQL), but do satisfy its ``not``.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from nodes.data import RegistryData
from varde.query import And, Between, Eq, Ge, In, Le, Not, Or, Predicate, Scalar, StartsWith
from varde.schema import FIELDS_BY_NAME, FieldKind, FieldSpec


def _num(spec: FieldSpec, value: Scalar) -> float:
    if spec.kind is FieldKind.DATE:
        return float((dt.date.fromisoformat(str(value)) - dt.date(1970, 1, 1)).days)
    return float(value)


def _column(data: RegistryData, name: str, rows: np.ndarray | None) -> np.ndarray:
    col = data.column(name)
    return col if rows is None else col[rows]


def _category_mask(col: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Rows whose category is ``wanted`` (a boolean per schema category); missing never matches.

    One wanted code or a contiguous run of them (``startswith`` on ordered ICD
    codes) is one or two integer compares; anything else a table lookup.
    """
    codes = np.flatnonzero(wanted)
    if codes.size == 0:
        return np.zeros(col.shape[0], dtype=bool)
    if codes.size == 1:
        return np.asarray(col == codes[0])
    lo, hi = int(codes[0]), int(codes[-1])
    if hi - lo + 1 == codes.size:
        out = col >= lo
        out &= col <= hi
        return np.asarray(out)
    table = np.append(wanted, False)
    return np.asarray(table[col])


SPARSE = 0.25
"""Below this surviving fraction, ``and`` evaluates its remaining terms on survivors only."""


def evaluate(
    data: RegistryData, pred: Predicate | None, rows: np.ndarray | None = None
) -> np.ndarray:
    """Boolean mask of rows in the cohort (all rows when ``pred`` is None).

    With ``rows`` (indices), the mask covers just those rows. ``and`` narrows as
    it goes: once few rows survive its first terms, later terms are evaluated on
    the survivors only, so a selective cohort (one cancer site, one stage) costs
    little more than its first filter.
    """
    n = data.n_rows if rows is None else rows.shape[0]
    if pred is None:
        return np.ones(n, dtype=bool)
    if isinstance(pred, And):
        out = evaluate(data, pred.args[0], rows)
        for a in pred.args[1:]:
            alive = np.flatnonzero(out)
            if alive.size < SPARSE * n:
                sub = evaluate(data, a, alive if rows is None else rows[alive])
                out[alive[~sub]] = False
            else:
                out &= evaluate(data, a, rows)
        return out
    if isinstance(pred, Or):
        out = evaluate(data, pred.args[0], rows)
        for a in pred.args[1:]:
            out |= evaluate(data, a, rows)
        return out
    if isinstance(pred, Not):
        return ~evaluate(data, pred.arg, rows)
    if pred.field not in FIELDS_BY_NAME:
        return _study(data, pred, rows)
    spec = FIELDS_BY_NAME[pred.field]
    col = _column(data, spec.name, rows)
    if spec.kind is FieldKind.CATEGORICAL:
        cats = np.asarray(spec.categories, dtype=object)
        if isinstance(pred, Eq):
            wanted = cats == pred.value
        elif isinstance(pred, In):
            wanted = np.isin(cats, np.asarray(pred.values, dtype=object))
        elif isinstance(pred, StartsWith):
            wanted = np.array([c.startswith(pred.prefix) for c in spec.categories], dtype=bool)
        else:  # pragma: no cover - the query model forbids it
            raise TypeError(f"{pred.op} on categorical {spec.name}")
        return _category_mask(col, wanted)
    if isinstance(pred, Eq):
        return np.asarray(col == _num(spec, pred.value))
    if isinstance(pred, In):
        return np.isin(col, [_num(spec, v) for v in pred.values])
    if isinstance(pred, Between):
        out = col >= _num(spec, pred.low)
        out &= col <= _num(spec, pred.high)
        return np.asarray(out)
    if isinstance(pred, Ge):
        return np.asarray(col >= _num(spec, pred.value))
    if isinstance(pred, Le):
        return np.asarray(col <= _num(spec, pred.value))
    raise TypeError(f"{pred.op} on {spec.kind.value} field {spec.name}")  # pragma: no cover


def _study(data: RegistryData, pred: Predicate, rows: np.ndarray | None) -> np.ndarray:
    """A criterion on a study field: its text by the column's own levels, numbers as floats.

    The query model has checked the criterion against the field's declaration and the
    policy that the column is of the declared kind, so this only compares.
    """
    assert not isinstance(pred, And | Or | Not)
    col = _column(data, pred.field, rows)
    levels = data.study_levels.get(pred.field)
    if levels is not None:
        cats = np.asarray(levels, dtype=object)
        if isinstance(pred, Eq):
            wanted = cats == pred.value
        elif isinstance(pred, In):
            wanted = np.isin(cats, np.asarray(pred.values, dtype=object))
        elif isinstance(pred, StartsWith):
            wanted = np.array([c.startswith(pred.prefix) for c in levels], dtype=bool)
        else:  # pragma: no cover - the query model forbids it
            raise TypeError(f"{pred.op} on categorical study field {pred.field}")
        return _category_mask(col, np.asarray(wanted, dtype=bool))
    if isinstance(pred, Eq):
        return np.asarray(col == float(pred.value))
    if isinstance(pred, In):
        return np.isin(col, [float(v) for v in pred.values])
    if isinstance(pred, Between):
        out = col >= float(pred.low)
        out &= col <= float(pred.high)
        return np.asarray(out)
    if isinstance(pred, Ge):
        return np.asarray(col >= float(pred.value))
    if isinstance(pred, Le):
        return np.asarray(col <= float(pred.value))
    raise TypeError(f"{pred.op} on study field {pred.field}")  # pragma: no cover
