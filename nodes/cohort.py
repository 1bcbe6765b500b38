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


def _category_mask(data: RegistryData, spec: FieldSpec, wanted: np.ndarray) -> np.ndarray:
    """``wanted`` is a boolean per schema category; code -1 (missing) maps to False."""
    table = np.append(wanted, False)
    return table[data.column(spec.name)]


def evaluate(data: RegistryData, pred: Predicate | None) -> np.ndarray:
    """Boolean mask of rows in the cohort (all rows when ``pred`` is None)."""
    if pred is None:
        return np.ones(data.n_rows, dtype=bool)
    if isinstance(pred, And):
        out = evaluate(data, pred.args[0])
        for a in pred.args[1:]:
            out &= evaluate(data, a)
        return out
    if isinstance(pred, Or):
        out = evaluate(data, pred.args[0])
        for a in pred.args[1:]:
            out |= evaluate(data, a)
        return out
    if isinstance(pred, Not):
        return ~evaluate(data, pred.arg)
    spec = FIELDS_BY_NAME[pred.field]
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
        return _category_mask(data, spec, wanted)
    col = data.column(spec.name)
    if isinstance(pred, Eq):
        return col == _num(spec, pred.value)
    if isinstance(pred, In):
        return np.isin(col, [_num(spec, v) for v in pred.values])
    if isinstance(pred, Between):
        return (col >= _num(spec, pred.low)) & (col <= _num(spec, pred.high))
    if isinstance(pred, Ge):
        return col >= _num(spec, pred.value)
    if isinstance(pred, Le):
        return col <= _num(spec, pred.value)
    raise TypeError(f"{pred.op} on {spec.kind.value} field {spec.name}")  # pragma: no cover
