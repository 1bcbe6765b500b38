"""The schema as the researcher's client sees it, and the errors for names it does not have.

Why here and not in :mod:`varde.schema`: the gateway's ``GET /v1/schema`` is the
authority for what a query may name, and a client may be older or newer than the
server; :class:`Schema` reads that answer (or, offline, :mod:`varde.schema`) and
turns a typo into an error that says what was meant, before anything is sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import pandas as pd

from varde.schema import FIELDS, FieldKind
from varde.suggest import LISTED, hint, suggest

# --- errors ---------------------------------------------------------------------------------------


class CohortError(ValueError):
    """A criterion the schema cannot answer; raised before anything is sent.

    ``field`` and ``value`` name what was wrong, ``suggestions`` the close
    matches, ``position`` (text form only) where in the text it was.
    """

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        value: object = None,
        suggestions: Sequence[str] = (),
        position: int | None = None,
    ) -> None:
        super().__init__(message)
        self.field = field
        self.value = value
        self.suggestions = list(suggestions)
        self.position = position

    def at(self, position: int, token: str) -> CohortError:
        """The same error, located in a text (``position`` counts characters from 0)."""
        return type(self)(
            f"at position {position} ({token!r}): {self}",
            field=self.field,
            value=self.value,
            suggestions=self.suggestions,
            position=position,
        )


class UnknownField(CohortError):
    """A field the schema does not have (or that can never be queried)."""


class UnknownCategory(CohortError):
    """A category (or a code prefix) the field does not have."""


class InvalidCriterion(CohortError):
    """A known field used in a way its kind does not allow (``between`` on a category...)."""


# --- the schema a criterion is checked against -------------------------------------------------


@dataclass(frozen=True)
class SchemaField:
    """One queryable field as ``GET /v1/schema`` describes it: name, kind, public categories."""

    name: str
    kind: str
    categories: tuple[str, ...] = ()
    study: Mapping[str, Any] | None = field(default=None, compare=False, hash=False)
    """A study field's declaration (JSON), which a query naming the field carries."""


_KINDS = {k.value for k in FieldKind if k is not FieldKind.IDENTIFIER}
_IDENTIFIERS = {f.name for f in FIELDS if not f.queryable}


class Schema:
    """The queryable fields a criterion may name, from the gateway or from :mod:`varde.schema`."""

    def __init__(self, fields: Iterable[SchemaField]) -> None:
        self.fields: dict[str, SchemaField] = {f.name: f for f in fields}

    @classmethod
    def offline(cls) -> Schema:
        """The common schema this client was built with (:mod:`varde.schema`)."""
        return cls(
            SchemaField(f.name, f.kind.value, tuple(f.categories)) for f in FIELDS if f.queryable
        )

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]]) -> Schema:
        """From the JSON of ``GET /v1/schema`` (a list of ``FieldInfo`` objects)."""
        out = []
        for rec in records:
            name, kind, cats = rec.get("name"), rec.get("kind"), rec.get("categories")
            if not isinstance(name, str) or kind not in _KINDS:
                raise ValueError(f"not a schema field: {dict(rec)!r}")
            if not isinstance(cats, list | tuple):  # None (JSON null) or NaN (from a frame)
                cats = ()
            study = rec.get("study")
            declared = dict(study) if isinstance(study, Mapping) else None
            out.append(SchemaField(name, str(kind), tuple(str(c) for c in cats), declared))
        return cls(out)

    @classmethod
    def of(cls, source: SchemaLike | None) -> Schema:
        """Whatever describes a schema: None (offline), a :class:`Schema`, records or a frame."""
        if source is None:
            return cls.offline()
        if isinstance(source, Schema):
            return source
        if isinstance(source, pd.DataFrame):  # what VardeClient.schema() returns
            return cls.from_records(source.to_dict("records"))
        return cls.from_records(source)

    def field(self, name: str) -> SchemaField:
        """The field called ``name``, or :class:`UnknownField` with the close matches."""
        found = self.fields.get(name)
        if found is not None:
            return found
        names = list(self.fields)
        close = suggest(name, names)
        msg = f"unknown field {name!r}"
        if name in _IDENTIFIERS:
            msg = f"field {name!r} is an identifier and can never be queried"
        raise UnknownField(msg + hint(close, names), field=name, suggestions=close)

    def require(self, name: str, kinds: set[str], purpose: str) -> SchemaField:
        """The field called ``name`` if its kind is one of ``kinds`` (``purpose`` says who asks)."""
        found = self.field(name)
        if found.kind not in kinds:
            wanted = " or ".join(sorted(kinds))
            raise InvalidCriterion(
                f"{purpose} needs a {wanted} field; {name!r} is {found.kind}", field=name
            )
        return found

    def category(self, name: str, value: object) -> None:
        """Check that ``value`` is one of the public categories of field ``name``."""
        found = self.field(name)
        if not isinstance(value, str):
            raise InvalidCriterion(
                f"field {name!r} is categorical; {value!r} is not a string "
                f"(categories are strings: write {str(value)!r})",
                field=name,
                value=value,
            )
        if value in found.categories:
            return
        cats = list(found.categories)
        extending = [c for c in cats if c.startswith(value)]  # "C34" is a prefix of "C34.1"
        close = extending[:3] or suggest(value, cats)
        msg = f"unknown category {value!r} for field {name!r}" + hint(close, cats)
        if len(cats) > LISTED:
            msg += f" ({len(cats)} categories)"
        if extending:
            msg += f"; to match a code prefix use Field({name!r}).startswith({value!r})"
        raise UnknownCategory(msg, field=name, value=value, suggestions=close)


SchemaLike: TypeAlias = Schema | Iterable[Mapping[str, Any]] | pd.DataFrame
"""A :class:`Schema`, the records of ``GET /v1/schema``, or ``VardeClient.schema()``'s frame."""
