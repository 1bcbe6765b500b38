"""Cohort criteria that read like Python and compile to the query language's predicates.

>>> from varde_client.cohort import Field
>>> lung = Field("topography").startswith("C34") & (Field("stage") == "IV")
>>> lung.to_json()["op"], len(lung.to_json()["args"])
('and', 2)

Why a builder: a cohort is a tree of ``varde.query`` predicates, and writing that
JSON by hand invites typos the gateway can only refuse after a round trip. The
criteria here are plain values (frozen, comparable, hashable) that compile to
exactly the server's ops (``eq``, ``in``, ``between``, ``>=``, ``<=``,
``startswith``, ``and``, ``or``, ``not``) and nothing else, and
:func:`validate` checks them against the schema (``GET /v1/schema`` or, offline,
:mod:`varde.schema`) before anything is sent, suggesting the name that was meant.

Python's ``and``/``or``/``not`` (and chained comparisons such as
``18 <= Field("age_at_diagnosis") <= 75``) cannot be overloaded and would silently
keep one side, so a criterion has no truth value: combine with ``&``, ``|``, ``~``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import numbers
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, NoReturn

from pydantic import TypeAdapter

from varde import query as q
from varde.schema import FieldKind
from varde.suggest import hint, suggest
from varde_client.schema_view import (
    CohortError,
    InvalidCriterion,
    Schema,
    SchemaLike,
    UnknownCategory,
    UnknownField,
)

__all__ = [
    "AllOf",
    "AnyOf",
    "AtLeast",
    "AtMost",
    "CohortError",
    "Comparison",
    "Criterion",
    "Equals",
    "Field",
    "InRange",
    "InvalidCriterion",
    "IsIn",
    "Negation",
    "Schema",
    "SchemaLike",
    "StartsWith",
    "UnknownCategory",
    "UnknownField",
    "Value",
    "all_of",
    "any_of",
    "validate",
]

Value = str | int | float
"""What a criterion compares with: a category, a number, or an ISO date string."""

_PREDICATE: TypeAdapter[q.Predicate] = TypeAdapter(q.Predicate)

_NO_TRUTH = (
    "a cohort criterion has no truth value: combine criteria with & (and), | (or), ~ (not); "
    "Python's and/or/not and chained comparisons such as 18 <= Field('age_at_diagnosis') <= 75 "
    "would silently drop one side (write Field('age_at_diagnosis').between(18, 75))"
)


# --- values ------------------------------------------------------------------------------------


def _value(value: object) -> Value:
    """A value as the wire carries it: a date becomes its ISO string; nothing else is coerced."""
    if isinstance(value, bool):
        raise TypeError(f"{value!r} is a boolean, not a category, number or date")
    if isinstance(value, dt.datetime):
        raise TypeError(f"{value!r} has a time of day; dates are whole days: give a datetime.date")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        if not math.isfinite(float(value)):
            raise ValueError(f"{value!r} is not a finite number")
        return float(value)
    raise TypeError(f"{value!r} ({type(value).__name__}) is not a category, number or date")


def _as_date(value: object, field: str) -> dt.date:
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise TypeError(f"field {field!r} is a date: give a datetime.date or 'YYYY-MM-DD'")


# --- criteria ----------------------------------------------------------------------------------


class Criterion:
    """A cohort criterion: combine with ``&``, ``|`` and ``~``; compile with :meth:`to_json`."""

    __slots__ = ()

    def __and__(self, other: Criterion) -> Criterion:
        return all_of(self, _criterion(other, "&"))

    def __or__(self, other: Criterion) -> Criterion:
        return any_of(self, _criterion(other, "|"))

    def __invert__(self) -> Criterion:
        return Negation(self)

    def __bool__(self) -> NoReturn:
        raise TypeError(_NO_TRUTH)

    def to_json(self) -> dict[str, Any]:
        """The predicate in the JSON query language (``varde/query.py``)."""
        raise NotImplementedError  # pragma: no cover - every criterion class defines it

    def leaves(self) -> Iterator[Comparison]:
        """Every comparison in the tree, left to right."""
        raise NotImplementedError  # pragma: no cover - every criterion class defines it

    def fields(self) -> set[str]:
        """Every field the criterion reads (a site's policy must expose all of them)."""
        return {leaf.field for leaf in self.leaves()}

    def to_predicate(self) -> q.Predicate:
        """The validated ``varde.query`` predicate (raises ``pydantic.ValidationError``)."""
        return _PREDICATE.validate_python(self.to_json())

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> Criterion:
        """Parse a JSON predicate, validated by ``varde.query`` (nested and/or flattened)."""
        return _from_model(_PREDICATE.validate_python(dict(data)))


def _criterion(other: object, op: str) -> Criterion:
    if not isinstance(other, Criterion):
        raise TypeError(f"{op} combines criteria; got {type(other).__name__} {other!r}")
    return other


class Comparison(Criterion):
    """A criterion on one field (the leaves of the tree); ``OP`` is its JSON op."""

    __slots__ = ()
    OP: ClassVar[str]
    field: str

    def leaves(self) -> Iterator[Comparison]:
        """Just this comparison."""
        yield self

    def to_json(self) -> dict[str, Any]:
        """``{"op": OP, "field": ..., <its operands>}``, as ``varde/query.py`` spells them."""
        out: dict[str, Any] = {"op": self.OP}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


@dataclass(frozen=True, slots=True)
class Equals(Comparison):
    """``field == value`` (JSON op ``eq``)."""

    OP: ClassVar[str] = "eq"
    field: str
    value: Value

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", _value(self.value))


@dataclass(frozen=True, slots=True)
class IsIn(Comparison):
    """``field`` is one of ``values`` (JSON op ``in``)."""

    OP: ClassVar[str] = "in"
    field: str
    values: tuple[Value, ...]

    def __post_init__(self) -> None:
        if isinstance(self.values, str) or not isinstance(self.values, Iterable):
            raise TypeError(f"isin takes a list of values, not {self.values!r}")
        values = tuple(_value(v) for v in self.values)
        if not values:
            raise ValueError(f"isin on {self.field!r} needs at least one value")
        object.__setattr__(self, "values", values)


@dataclass(frozen=True, slots=True)
class InRange(Comparison):
    """``low <= field <= high``, both ends included (JSON op ``between``)."""

    OP: ClassVar[str] = "between"
    field: str
    low: Value
    high: Value

    def __post_init__(self) -> None:
        object.__setattr__(self, "low", _value(self.low))
        object.__setattr__(self, "high", _value(self.high))


@dataclass(frozen=True, slots=True)
class AtLeast(Comparison):
    """``field >= value`` (JSON op ``>=``)."""

    OP: ClassVar[str] = ">="
    field: str
    value: Value

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", _value(self.value))


@dataclass(frozen=True, slots=True)
class AtMost(Comparison):
    """``field <= value`` (JSON op ``<=``)."""

    OP: ClassVar[str] = "<="
    field: str
    value: Value

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", _value(self.value))


@dataclass(frozen=True, slots=True)
class StartsWith(Comparison):
    """A categorical code starts with ``prefix``: ``C34`` is every lung subsite."""

    OP: ClassVar[str] = "startswith"
    field: str
    prefix: str

    def __post_init__(self) -> None:
        if not isinstance(self.prefix, str) or not self.prefix:
            raise TypeError(f"startswith on {self.field!r} needs a non-empty string prefix")


def _flat(kind: type[AllOf | AnyOf], args: Iterable[object]) -> tuple[Criterion, ...]:
    out: list[Criterion] = []
    for a in args:
        crit = _criterion(a, "&" if kind is AllOf else "|")
        out.extend(crit.args if isinstance(crit, kind) else (crit,))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class AllOf(Criterion):
    """Every one of ``args`` (JSON op ``and``); nested ``AllOf`` are flattened into one."""

    args: tuple[Criterion, ...]

    def __post_init__(self) -> None:
        args = _flat(AllOf, self.args)
        if len(args) < 2:
            raise ValueError("AllOf needs two or more criteria (all_of() takes one)")
        object.__setattr__(self, "args", args)

    def to_json(self) -> dict[str, Any]:
        """``{"op": "and", "args": [...]}``."""
        return {"op": "and", "args": [a.to_json() for a in self.args]}

    def leaves(self) -> Iterator[Comparison]:
        """The comparisons of every argument."""
        for a in self.args:
            yield from a.leaves()


@dataclass(frozen=True, slots=True)
class AnyOf(Criterion):
    """Any one of ``args`` (JSON op ``or``); nested ``AnyOf`` are flattened into one."""

    args: tuple[Criterion, ...]

    def __post_init__(self) -> None:
        args = _flat(AnyOf, self.args)
        if len(args) < 2:
            raise ValueError("AnyOf needs two or more criteria (any_of() takes one)")
        object.__setattr__(self, "args", args)

    def to_json(self) -> dict[str, Any]:
        """``{"op": "or", "args": [...]}``."""
        return {"op": "or", "args": [a.to_json() for a in self.args]}

    def leaves(self) -> Iterator[Comparison]:
        """The comparisons of every argument."""
        for a in self.args:
            yield from a.leaves()


@dataclass(frozen=True, slots=True)
class Negation(Criterion):
    """Not ``arg`` (JSON op ``not``); a missing value fails a comparison, so passes its negation."""

    arg: Criterion

    def __post_init__(self) -> None:
        _criterion(self.arg, "~")

    def to_json(self) -> dict[str, Any]:
        """``{"op": "not", "arg": ...}``."""
        return {"op": "not", "arg": self.arg.to_json()}

    def leaves(self) -> Iterator[Comparison]:
        """The comparisons of the negated criterion."""
        return self.arg.leaves()


def all_of(*criteria: Criterion) -> Criterion:
    """Every one of ``criteria`` (one criterion is itself)."""
    args = _flat(AllOf, criteria)
    if not args:
        raise ValueError("all_of needs at least one criterion")
    return args[0] if len(args) == 1 else AllOf(args)


def any_of(*criteria: Criterion) -> Criterion:
    """Any one of ``criteria`` (one criterion is itself)."""
    args = _flat(AnyOf, criteria)
    if not args:
        raise ValueError("any_of needs at least one criterion")
    return args[0] if len(args) == 1 else AnyOf(args)


class Field:
    """A schema field to compare: ``Field("stage") == "IV"``, ``Field("age_at_diagnosis") >= 18``.

    ``>`` and ``<`` exist only where they are exact as ``>=``/``<=`` on the next value:
    integer fields (whole numbers) and date fields (whole days).
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"a field name is a non-empty string, not {name!r}")
        self.name = name

    def __repr__(self) -> str:
        return f"Field({self.name!r})"

    def __hash__(self) -> int:
        return hash((Field, self.name))

    def __eq__(self, value: object) -> Equals:  # type: ignore[override]
        return Equals(self.name, _value(value))

    def __ne__(self, value: object) -> Criterion:  # type: ignore[override]
        return Negation(Equals(self.name, _value(value)))

    def __ge__(self, value: object) -> AtLeast:
        return AtLeast(self.name, _value(value))

    def __le__(self, value: object) -> AtMost:
        return AtMost(self.name, _value(value))

    def __gt__(self, value: object) -> AtLeast:
        return AtLeast(self.name, self._next(value, +1, ">"))

    def __lt__(self, value: object) -> AtMost:
        return AtMost(self.name, self._next(value, -1, "<"))

    def isin(self, values: Iterable[object]) -> IsIn:
        """``field`` is one of ``values``."""
        if isinstance(values, str) or not isinstance(values, Iterable):
            raise TypeError(f"isin takes a list of values, not {values!r}")
        return IsIn(self.name, tuple(_value(v) for v in values))

    def between(self, low: object, high: object) -> InRange:
        """``low <= field <= high`` (both ends included)."""
        return InRange(self.name, _value(low), _value(high))

    def startswith(self, prefix: str) -> StartsWith:
        """A categorical code beginning with ``prefix`` (``"C34"``: every lung subsite)."""
        return StartsWith(self.name, prefix)

    def _next(self, value: object, step: int, op: str) -> Value:
        """The bound that makes ``op`` exact as ``>=`` (step +1) or ``<=`` (step -1)."""
        spec = Schema.offline().field(self.name)  # the kind decides; UnknownField if none
        if spec.kind == FieldKind.DATE.value:
            return (_as_date(value, self.name) + dt.timedelta(days=step)).isoformat()
        if spec.kind != FieldKind.INTEGER.value:
            raise TypeError(
                f"{op!r} on {spec.kind} field {self.name!r} has no exact meaning; "
                f"use >= or <= (and, for categories, == or isin)"
            )
        number = _value(value)
        if isinstance(number, str):
            raise TypeError(f"field {self.name!r} is an integer field; {value!r} is not a number")
        return math.floor(number) + 1 if step > 0 else math.ceil(number) - 1


def _from_model(pred: q.Predicate) -> Criterion:
    if isinstance(pred, q.And):
        return all_of(*(_from_model(a) for a in pred.args))
    if isinstance(pred, q.Or):
        return any_of(*(_from_model(a) for a in pred.args))
    if isinstance(pred, q.Not):
        return Negation(_from_model(pred.arg))
    if isinstance(pred, q.Eq):
        return Equals(pred.field, pred.value)
    if isinstance(pred, q.In):
        return IsIn(pred.field, tuple(pred.values))
    if isinstance(pred, q.Between):
        return InRange(pred.field, pred.low, pred.high)
    if isinstance(pred, q.Ge):
        return AtLeast(pred.field, pred.value)
    if isinstance(pred, q.Le):
        return AtMost(pred.field, pred.value)
    return StartsWith(pred.field, pred.prefix)


# --- validation against a schema ---------------------------------------------------------------


def validate(criterion: Criterion, schema: SchemaLike | None = None) -> Criterion:
    """Check every field, category, prefix and value kind of ``criterion``; return it.

    ``schema`` is what ``GET /v1/schema`` returns (records, or
    ``VardeClient.schema()``'s frame), a :class:`Schema`, or None for the
    common schema this client was built with. Raises :class:`UnknownField`,
    :class:`UnknownCategory` or :class:`InvalidCriterion` (all ``ValueError``).
    """
    found = Schema.of(schema)
    if not isinstance(criterion, Criterion):
        raise TypeError(f"not a criterion: {criterion!r}")
    for leaf in criterion.leaves():
        _check_leaf(leaf, found)
    return criterion


def _check_leaf(leaf: Comparison, schema: Schema) -> None:
    spec = schema.field(leaf.field)
    name = leaf.field
    if isinstance(leaf, StartsWith):
        schema.require(name, {"categorical"}, "startswith")
        if not any(c.startswith(leaf.prefix) for c in spec.categories):
            cats = list(spec.categories)
            close = suggest(leaf.prefix, sorted({c[: len(leaf.prefix)] for c in cats}))
            raise UnknownCategory(
                f"no category of {name!r} starts with {leaf.prefix!r}" + hint(close, cats),
                field=name,
                value=leaf.prefix,
                suggestions=close,
            )
        return
    values = _leaf_values(leaf)
    if spec.kind == "categorical":
        if not isinstance(leaf, Equals | IsIn):
            raise InvalidCriterion(
                f"{leaf.to_json()['op']!r} needs a numeric or date field; {name!r} is "
                f"categorical (use == or isin)",
                field=name,
            )
        for v in values:
            schema.category(name, v)
        return
    for v in values:
        if spec.kind == "date" and not _is_iso_date(v):
            raise InvalidCriterion(
                f"field {name!r} is a date; {v!r} is not 'YYYY-MM-DD'", field=name, value=v
            )
        if spec.kind == "integer" and isinstance(v, str):
            raise InvalidCriterion(
                f"field {name!r} is numeric; {v!r} is a string, not a number", field=name, value=v
            )
    if isinstance(leaf, InRange) and _order(leaf.low) > _order(leaf.high):
        raise InvalidCriterion(
            f"between on {name!r}: low {leaf.low!r} > high {leaf.high!r}", field=name
        )


def _leaf_values(leaf: Comparison) -> tuple[Value, ...]:
    if isinstance(leaf, IsIn):
        return leaf.values
    if isinstance(leaf, InRange):
        return (leaf.low, leaf.high)
    if isinstance(leaf, Equals | AtLeast | AtMost):
        return (leaf.value,)
    raise TypeError(f"not a comparison: {leaf!r}")  # pragma: no cover


def _is_iso_date(value: Value) -> bool:
    if not isinstance(value, str):
        return False
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _order(value: Value) -> float:
    if isinstance(value, str):
        return float(dt.date.fromisoformat(value).toordinal())
    return float(value)
