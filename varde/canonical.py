"""A canonical form of a query, so trivial rewrites of one question are recognised as one.

Why: a node answers a repeated query from its release cache (same numbers, no
new charge), which makes averaging repeated answers useless. A researcher who
rewrites the cohort trivially (reorders ``and`` arguments, nests them, writes
``between`` as ``>=`` plus ``<=``, lists ``in`` values in another order) is
asking the same question, and should get the same cached answer.

The canonical form must be **sound**: two predicates with the same canonical
form select exactly the same rows on every registry. It need not be complete
(deciding equivalence of arbitrary predicates is co-NP-hard): a rewrite it does
not recognise is simply a new query, answered afresh and charged in full, so an
incomplete canonical form costs budget, never privacy.

Rewrites recognised (each is an identity under the cohort semantics of
:mod:`nodes.cohort`, where a missing value satisfies no comparison):

* ``and``/``or`` nested in the same operator are flattened; one-argument
  ``and``/``or`` is its argument; arguments are deduplicated and sorted.
* ``not(not(p))`` is ``p``.
* ``in`` values are deduplicated and sorted; ``in`` with one value is ``eq``;
  inside an ``or``, ``eq``/``in`` terms on one field merge into one ``in``.
* numbers are written one way (``18.0`` is ``18``).
* inside an ``and``, every ``between``/``>=``/``<=`` on one numeric or date
  field is intersected into one range: ``between`` if bounded on both sides
  (and non-empty), else ``>=`` or ``<=``.

The canonical predicate is itself a valid :data:`~varde.query.Predicate`, so
tests can check soundness by evaluating both on data.

>>> from varde.query import parse_query
>>> q1 = parse_query({"project": "p", "statistic": {"kind": "count"},
...     "privacy": {"mode": "dp", "epsilon": 1},
...     "cohort": {"op": "and", "args": [
...         {"op": "eq", "field": "stage", "value": "IV"},
...         {"op": "between", "field": "age_at_diagnosis", "low": 18, "high": 75}]}})
>>> q2 = parse_query({"project": "p", "statistic": {"kind": "count"},
...     "privacy": {"mode": "dp", "epsilon": 1.0}, "timeout_s": 30,
...     "cohort": {"op": "and", "args": [
...         {"op": "<=", "field": "age_at_diagnosis", "value": 75.0},
...         {"op": "and", "args": [{"op": "in", "field": "stage", "values": ["IV"]},
...                                {"op": ">=", "field": "age_at_diagnosis", "value": 18}]}]}})
>>> query_key(q1) == query_key(q2)
True
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

from varde.query import (
    And,
    Between,
    Eq,
    Funnel,
    Ge,
    In,
    Le,
    Not,
    Or,
    Predicate,
    Query,
    Scalar,
    StartsWith,
)
from varde.schema import FIELDS_BY_NAME, FieldKind

__all__ = ["canonical_predicate", "canonical_query", "query_key"]


def _scalar(field: str, value: Scalar) -> Scalar:
    """One spelling per value: a whole float is an int, a date is ``YYYY-MM-DD``."""
    if FIELDS_BY_NAME[field].kind is FieldKind.DATE:
        return dt.date.fromisoformat(str(value)).isoformat()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _order(field: str, value: Scalar) -> float:
    if FIELDS_BY_NAME[field].kind is FieldKind.DATE:
        return float(dt.date.fromisoformat(str(value)).toordinal())
    return float(value)


def _sort_key(pred: Predicate) -> str:
    return json.dumps(pred.model_dump(mode="json"), sort_keys=True)


def _in(field: str, values: list[Scalar]) -> Predicate:
    unique = sorted({_scalar(field, v) for v in values}, key=lambda v: (str(type(v)), v))
    if len(unique) == 1:
        return Eq(op="eq", field=field, value=unique[0])
    return In(op="in", field=field, values=unique)


def _merge_ranges(args: list[Predicate]) -> list[Predicate]:
    """Intersect the ranges on each field among an ``and``'s arguments."""
    lows: dict[str, Scalar] = {}
    highs: dict[str, Scalar] = {}
    rest: list[Predicate] = []
    for a in args:
        bounds: list[tuple[str, Scalar]] = []
        if isinstance(a, Between):
            bounds = [("low", a.low), ("high", a.high)]
        elif isinstance(a, Ge):
            bounds = [("low", a.value)]
        elif isinstance(a, Le):
            bounds = [("high", a.value)]
        else:
            rest.append(a)
            continue
        for side, value in bounds:
            target = lows if side == "low" else highs
            old = target.get(a.field)
            v = _scalar(a.field, value)
            if old is None:
                target[a.field] = v
            elif side == "low" and _order(a.field, v) > _order(a.field, old):
                target[a.field] = v
            elif side == "high" and _order(a.field, v) < _order(a.field, old):
                target[a.field] = v
    for name in sorted(set(lows) | set(highs)):
        lo, hi = lows.get(name), highs.get(name)
        if lo is not None and hi is not None and _order(name, lo) <= _order(name, hi):
            rest.append(Between(op="between", field=name, low=lo, high=hi))
            continue
        if lo is not None:
            rest.append(Ge(op=">=", field=name, value=lo))
        if hi is not None:
            rest.append(Le(op="<=", field=name, value=hi))
    return rest


def _merge_alternatives(args: list[Predicate]) -> list[Predicate]:
    """Merge an ``or``'s ``eq``/``in`` terms on one field into one ``in``."""
    values: dict[str, list[Scalar]] = {}
    rest: list[Predicate] = []
    for a in args:
        if isinstance(a, Eq):
            values.setdefault(a.field, []).append(a.value)
        elif isinstance(a, In):
            values.setdefault(a.field, []).extend(a.values)
        else:
            rest.append(a)
    rest.extend(_in(name, vals) for name, vals in sorted(values.items()))
    return rest


def canonical_predicate(pred: Predicate) -> Predicate:
    """The canonical form of ``pred`` (selects the same rows; see the module docstring)."""
    if isinstance(pred, And | Or):
        kind = type(pred)
        flat: list[Predicate] = []
        for a in pred.args:
            c = canonical_predicate(a)
            flat.extend(c.args if isinstance(c, kind) else [c])
        merged = _merge_ranges(flat) if kind is And else _merge_alternatives(flat)
        # merging can create new same-kind children only through recursion, never here,
        # but it can create new duplicates: deduplicate after merging.
        unique = {_sort_key(a): a for a in merged}
        ordered = [unique[k] for k in sorted(unique)]
        if len(ordered) == 1:
            return ordered[0]
        if kind is And:
            return And(op="and", args=ordered)
        return Or(op="or", args=ordered)
    if isinstance(pred, Not):
        inner = canonical_predicate(pred.arg)
        if isinstance(inner, Not):
            return inner.arg
        return Not(op="not", arg=inner)
    if isinstance(pred, In):
        return _in(pred.field, list(pred.values))
    if isinstance(pred, Eq):
        return Eq(op="eq", field=pred.field, value=_scalar(pred.field, pred.value))
    if isinstance(pred, Between):
        return _merge_ranges([pred])[0]
    if isinstance(pred, Ge | Le):
        return _merge_ranges([pred])[0]
    assert isinstance(pred, StartsWith)
    return pred


def canonical_query(query: Query) -> dict[str, Any]:
    """The parts of ``query`` that decide what a site releases, in canonical JSON form.

    ``sites`` and ``timeout_s`` are left out: they say where and how long to
    ask, not what. The statistic, ``group_by`` and privacy stay as written
    (their order fixes the layout of the released cells); numbers in them are
    spelt one way.
    """
    cohort = None if query.cohort is None else canonical_predicate(query.cohort)
    statistic = query.statistic
    if isinstance(statistic, Funnel):  # the steps' order matters, each criterion's form not
        steps = [
            s.model_copy(update={"criterion": canonical_predicate(s.criterion)})
            for s in statistic.steps
        ]
        statistic = statistic.model_copy(update={"steps": steps})
    return {
        "project": query.project,
        "cohort": None if cohort is None else cohort.model_dump(mode="json"),
        "statistic": _numbers(statistic.model_dump(mode="json", exclude_none=True)),
        "group_by": list(query.group_by),
        "privacy": _numbers(query.privacy.model_dump(mode="json")),
    }


def _numbers(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _numbers(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_numbers(v) for v in obj]
    if isinstance(obj, float) and obj.is_integer():
        return int(obj)
    return obj


def query_key(query: Query) -> str:
    """A stable hex digest of :func:`canonical_query` (the release cache's key)."""
    text = json.dumps(canonical_query(query), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
