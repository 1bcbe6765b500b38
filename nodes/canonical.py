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
  ``and``/``or`` is its argument; arguments are deduplicated and sorted (so
  any permutation of commutative operands is one form).
* ``not(not(p))`` is ``p``.
* categorical ``in`` values are deduplicated and sorted; ``in`` with one value
  is ``eq``; inside an ``or``, ``eq``/``in`` terms on one field merge into
  one ``in``.
* numbers are written one way (``18.0`` is ``18``), dates as ``YYYY-MM-DD``.
* comparisons on integer and date fields (``eq``, ``in``, ``between``,
  ``>=``, ``<=``) are read as the set of whole numbers they select (integer
  fields hold whole numbers, enforced by :func:`nodes.data.prepare`; dates
  are whole days): ``>= 17.5`` is ``>= 18``; ``between a b`` is ``>= a`` and
  ``<= b``; ``between a a`` is ``eq a``; ``in [1, 2, 3]`` is ``between 1
  3``. Inside an ``and`` the sets on one field are intersected (overlapping
  ranges merge into one), inside an ``or`` united (overlapping or adjacent
  ranges merge), and the result is written back one way: runs as
  ``between``/``>=``/``<=``, single values gathered into one ``eq``/``in``.

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
import math
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
from varde.study_fields import declared

__all__ = ["canonical_predicate", "canonical_query", "query_key"]


def _kind(field: str) -> FieldKind | None:
    """The schema kind of ``field``; None for a study field.

    A study field holds real numbers or its own categories: its predicates are kept as
    written, never rewritten on a whole-number line.
    """
    spec = FIELDS_BY_NAME.get(field)
    return None if spec is None else spec.kind


def _scalar(field: str, value: Scalar) -> Scalar:
    """One spelling per value: a whole float is an int, a date is ``YYYY-MM-DD``."""
    if _kind(field) is None:
        return value
    if _kind(field) is FieldKind.DATE:
        return dt.date.fromisoformat(str(value)).isoformat()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _sort_key(pred: Predicate) -> str:
    return json.dumps(pred.model_dump(mode="json"), sort_keys=True)


def _in(field: str, values: list[Scalar]) -> Predicate:
    unique = sorted({_scalar(field, v) for v in values}, key=lambda v: (str(type(v)), v))
    if len(unique) == 1:
        return Eq(op="eq", field=field, value=unique[0])
    return In(op="in", field=field, values=unique)


# ----------------------------------------------------------------- whole-number fields
#
# Every field a range can apply to (integer and date) holds whole numbers: integers by the
# schema (nodes.data.prepare refuses anything else), dates as whole days. So a predicate on
# such a field is a set of whole numbers, written here as a sorted list of disjoint,
# non-adjacent inclusive intervals (None = unbounded). ``>= 17.5`` is ``>= 18``,
# ``between 3 3`` is ``eq 3``, ``in [1, 2, 3]`` is ``between 1 3``, ``or(<= 5, >= 6)``
# is every non-missing value. Missing values satisfy no comparison, so they are in no
# interval, and union and intersection of the sets are exactly ``or`` and ``and``.

Bound = int | None
Interval = tuple[Bound, Bound]


def _discrete(pred: Predicate) -> bool:
    """A comparison on a whole-number field (integer or date)."""
    return isinstance(pred, Eq | In | Between | Ge | Le) and _kind(pred.field) in (
        FieldKind.INTEGER,
        FieldKind.DATE,
    )


def _num(field: str, value: Scalar) -> float:
    """A value on the field's whole-number line (dates as ordinals)."""
    if FIELDS_BY_NAME[field].kind is FieldKind.DATE:
        return float(dt.date.fromisoformat(str(value)).toordinal())
    return float(value)


def _value(field: str, x: int) -> Scalar:
    """The inverse of :func:`_num` for a whole number."""
    if FIELDS_BY_NAME[field].kind is FieldKind.DATE:
        return dt.date.fromordinal(x).isoformat()
    return x


def _intervals(pred: Predicate) -> list[Interval]:
    """The whole numbers ``pred`` (a comparison on a whole-number field) selects."""
    assert isinstance(pred, Eq | In | Between | Ge | Le)
    f = pred.field
    raw: list[tuple[float | None, float | None]]
    if isinstance(pred, Eq):
        raw = [(_num(f, pred.value), _num(f, pred.value))]
    elif isinstance(pred, In):
        raw = [(_num(f, v), _num(f, v)) for v in pred.values]
    elif isinstance(pred, Between):
        raw = [(_num(f, pred.low), _num(f, pred.high))]
    elif isinstance(pred, Ge):
        raw = [(_num(f, pred.value), None)]
    else:
        raw = [(None, _num(f, pred.value))]
    return _union(
        [
            (None if lo is None else math.ceil(lo), None if hi is None else math.floor(hi))
            for lo, hi in raw
        ]
    )


def _union(intervals: list[Interval]) -> list[Interval]:
    """Sorted, disjoint, non-adjacent intervals covering the same whole numbers; empties dropped."""
    live = [(lo, hi) for lo, hi in intervals if lo is None or hi is None or lo <= hi]
    live.sort(key=lambda iv: -math.inf if iv[0] is None else iv[0])
    out: list[Interval] = []
    for lo, hi in live:
        if out:
            plo, phi = out[-1]
            if phi is None or lo is None or lo <= phi + 1:
                out[-1] = (plo, None if phi is None or hi is None else max(phi, hi))
                continue
        out.append((lo, hi))
    return out


def _intersect(a: list[Interval], b: list[Interval]) -> list[Interval]:
    out: list[Interval] = []
    for alo, ahi in a:
        for blo, bhi in b:
            lo = blo if alo is None else alo if blo is None else max(alo, blo)
            hi = bhi if ahi is None else ahi if bhi is None else min(ahi, bhi)
            out.append((lo, hi))
    return _union(out)


def _emit(field: str, intervals: list[Interval]) -> list[Predicate]:
    """Canonical disjuncts for a (canonical) interval list; ``[]`` when it selects nothing.

    Single values gather into one ``eq``/``in``; longer runs are ``between``,
    ``>=`` or ``<=``. Every non-missing value (one unbounded interval) is
    ``<= 0`` or ``>= 1`` (for dates, around 1970-01-01), since no comparison
    says "not missing" on its own.
    """
    points: list[Scalar] = []
    out: list[Predicate] = []
    for lo, hi in intervals:
        if lo is not None and hi is not None:
            if lo == hi:
                points.append(_value(field, lo))
            else:
                out.append(
                    Between(
                        op="between", field=field, low=_value(field, lo), high=_value(field, hi)
                    )
                )
        elif lo is not None:
            out.append(Ge(op=">=", field=field, value=_value(field, lo)))
        elif hi is not None:
            out.append(Le(op="<=", field=field, value=_value(field, hi)))
        else:
            zero = dt.date(1970, 1, 1).toordinal() if _is_date(field) else 0
            out.append(Le(op="<=", field=field, value=_value(field, zero)))
            out.append(Ge(op=">=", field=field, value=_value(field, zero + 1)))
    if points:
        out.append(_in(field, points))
    return out


def _is_date(field: str) -> bool:
    return FIELDS_BY_NAME[field].kind is FieldKind.DATE


def _nothing(field: str) -> list[Predicate]:
    """The canonical conjuncts of an empty selection on ``field``: ``>= 1`` and ``<= 0``."""
    zero = dt.date(1970, 1, 1).toordinal() if _is_date(field) else 0
    return [
        Ge(op=">=", field=field, value=_value(field, zero + 1)),
        Le(op="<=", field=field, value=_value(field, zero)),
    ]


def _any_of(args: list[Predicate]) -> Predicate:
    unique = {_sort_key(a): a for a in args}
    ordered = [unique[k] for k in sorted(unique)]
    return ordered[0] if len(ordered) == 1 else Or(op="or", args=ordered)


def _all_of(args: list[Predicate]) -> Predicate:
    unique = {_sort_key(a): a for a in args}
    ordered = [unique[k] for k in sorted(unique)]
    return ordered[0] if len(ordered) == 1 else And(op="and", args=ordered)


def _alone(pred: Predicate) -> Predicate:
    """A lone comparison on a whole-number field, in canonical form."""
    assert isinstance(pred, Eq | In | Between | Ge | Le)
    disjuncts = _emit(pred.field, _intervals(pred))
    return _any_of(disjuncts) if disjuncts else _all_of(_nothing(pred.field))


def _merge_ranges(args: list[Predicate]) -> list[Predicate]:
    """Inside an ``and``: intersect the comparisons on each whole-number field."""
    sets: dict[str, list[Interval]] = {}
    rest: list[Predicate] = []
    for a in args:
        if _discrete(a):
            assert isinstance(a, Eq | In | Between | Ge | Le)
            mine = _intervals(a)
            sets[a.field] = mine if a.field not in sets else _intersect(sets[a.field], mine)
        else:
            rest.append(a)
    for name in sorted(sets):
        disjuncts = _emit(name, sets[name])
        rest.extend([_any_of(disjuncts)] if disjuncts else _nothing(name))
    return rest


def _merge_alternatives(args: list[Predicate]) -> list[Predicate]:
    """Inside an ``or``: unite comparisons per whole-number field, ``eq``/``in`` per category.

    A field whose comparisons select nothing drops out, unless nothing else is
    left (then the ``or`` is that field's empty selection).
    """
    values: dict[str, list[Scalar]] = {}
    sets: dict[str, list[Interval]] = {}
    rest: list[Predicate] = []
    for a in args:
        if _discrete(a):
            assert isinstance(a, Eq | In | Between | Ge | Le)
            sets[a.field] = _union([*sets.get(a.field, []), *_intervals(a)])
        elif isinstance(a, Eq):
            values.setdefault(a.field, []).append(a.value)
        elif isinstance(a, In):
            values.setdefault(a.field, []).extend(a.values)
        else:
            rest.append(a)
    rest.extend(_in(name, vals) for name, vals in sorted(values.items()))
    for name in sorted(sets):
        rest.extend(_emit(name, sets[name]))
    if not rest:  # every alternative selected nothing
        return [_all_of(_nothing(min(sets)))]
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
        # merging can emit a same-kind child (a field's empty selection inside an ``and``,
        # a field's several runs inside an ``or``): flatten again, then deduplicate and sort
        again: list[Predicate] = []
        for m in merged:
            again.extend(m.args if isinstance(m, kind) else [m])
        return _all_of(again) if kind is And else _any_of(again)
    if isinstance(pred, Not):
        inner = canonical_predicate(pred.arg)
        if isinstance(inner, Not):
            return inner.arg
        return Not(op="not", arg=inner)
    if _discrete(pred):
        return _alone(pred)
    if isinstance(pred, In):
        return _in(pred.field, list(pred.values))
    if isinstance(pred, Eq):
        return Eq(op="eq", field=pred.field, value=_scalar(pred.field, pred.value))
    if isinstance(pred, Between | Ge | Le):  # a range on a study field's real line: as written
        return pred
    assert isinstance(pred, StartsWith)
    return pred


def canonical_query(query: Query) -> dict[str, Any]:
    """The parts of ``query`` that decide what a site releases, in canonical JSON form.

    ``sites`` and ``timeout_s`` are left out: they say where and how long to
    ask, not what. The statistic, ``group_by`` and privacy stay as written
    (their order fixes the layout of the released cells); numbers in them are
    spelt one way.
    """
    with declared(query.study_fields):  # rewritten criteria may name its study fields
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
        # what is counted; absent for tumours, so a tumour question keeps its key
        **({"unit": query.unit} if query.unit != "tumours" else {}),
        # study fields mean what their declarations say: a new declaration, a new question
        **(
            {"study_fields": [f.model_dump(mode="json") for f in query.study_fields]}
            if query.study_fields
            else {}
        ),
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
