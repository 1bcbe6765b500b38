"""Study-specific fields: a project's own covariates, declared in the sites' policies.

The common schema (:mod:`varde.schema`) is the same at every site; a study also has
fields of its own (a trial arm, a lab value, a count of prior treatments). A project
declares each in the policy of every site that serves it (``projects.<name>.study_fields``
in ``policies/<site>.yaml``): its name, its kind, its *public* categories or bounds, a
unit and a description. A site exposes a declared field only if its data provide the
column (its mapping names it); its manifest then publishes the declaration.

Why the declaration travels with the query: a query is validated wherever it is read
(the gateway, every node, the audit trail, the release cache), and every check that
depends on a field's kind (``between`` needs a number, ``group_by`` a category), its
public categories (the cells of a histogram) or its bounds must give the same answer
in all those places without asking anyone. So the gateway completes a query naming a
study field with the declaration the sites published (:func:`complete`), the query
carries it (``study_fields``), and each site checks that the declaration it is handed
is the one its own policy makes (:func:`varde.terms.check_query`). Nothing here reads
data: what a site's rows hold is the node's business.

>>> arm = StudyField(name="trial_arm", kind="categorical", categories=["A", "B"])
>>> arm.spec().categories, arm.spec().kind.value
(('A', 'B'), 'categorical')
>>> StudyField(name="crp", kind="bounded", lower=0, upper=250.5, unit="mg/L").spec().upper
251
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from varde.schema import FIELDS_BY_NAME, FieldKind, FieldSpec

StudyKind = Literal["categorical", "bounded"]
T = TypeVar("T")

MAX_STUDY_CATEGORIES = 200
"""A categorical study field's public categories: each is a released cell when grouped by."""


class StudyField(BaseModel):
    """One declared study field: public facts only, never anything read from rows.

    ``categorical`` fields have public ``categories`` (what group_by and histograms use,
    whatever the data hold); ``bounded`` fields are numbers with public ``lower`` and
    ``upper`` bounds (what sums and means clamp to, and what training scales over).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,40}$")] = Field(
        description="The field's name in queries and in the site's data (its mapping's column)."
    )
    kind: StudyKind = Field(
        description="categorical (public categories) or bounded (a number within public bounds)."
    )
    categories: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_STUDY_CATEGORIES,
        description="Public categories (categorical fields only).",
    )
    lower: float | None = Field(
        default=None, allow_inf_nan=False, description="Public lower bound (bounded fields only)."
    )
    upper: float | None = Field(
        default=None, allow_inf_nan=False, description="Public upper bound (bounded fields only)."
    )
    unit: Annotated[str, Field(max_length=40)] = Field(
        default="", description="Unit of a bounded field, e.g. mg/L (shown to researchers)."
    )
    description: Annotated[str, Field(max_length=300)] = Field(
        default="", description="What the field is (shown to researchers)."
    )

    @model_validator(mode="before")
    @classmethod
    def _whole_bounds(cls, data: Any) -> Any:
        """Whole-number bounds may be written as integers (YAML ``0``) though they are floats."""
        if isinstance(data, dict):
            data = {
                k: float(v) if k in ("lower", "upper") and type(v) is int else v
                for k, v in data.items()
            }
        return data

    @model_validator(mode="after")
    def _consistent(self) -> StudyField:
        if self.name in FIELDS_BY_NAME:
            raise ValueError(f"study field {self.name!r} is a field of the common schema already")
        if self.kind == "categorical":
            if self.categories is None:
                raise ValueError(f"categorical study field {self.name!r} needs its 'categories'")
            if len(set(self.categories)) != len(self.categories):
                raise ValueError(f"categories of study field {self.name!r} must not repeat")
            if self.lower is not None or self.upper is not None:
                raise ValueError(f"categorical study field {self.name!r} takes no bounds")
            return self
        if self.categories is not None:
            raise ValueError(f"bounded study field {self.name!r} takes no categories")
        if self.lower is None or self.upper is None:
            raise ValueError(f"bounded study field {self.name!r} needs 'lower' and 'upper'")
        if not self.lower < self.upper:
            raise ValueError(
                f"study field {self.name!r}: lower {self.lower:g} must be < upper {self.upper:g}"
            )
        return self

    def spec(self) -> FieldSpec:
        """The field as the query language sees it (a bounded field is numeric).

        The domain of a bounded field is its declared bounds widened to whole numbers
        (what the query language's domain checks compare with); the exact bounds stay
        here, for training's scaling.
        """
        if self.kind == "categorical":
            assert self.categories is not None
            cats = tuple(self.categories)
            return FieldSpec(self.name, FieldKind.CATEGORICAL, self.description, cats)
        assert self.lower is not None and self.upper is not None
        return FieldSpec(
            self.name,
            FieldKind.INTEGER,
            self.description,
            lower=math.floor(self.lower),
            upper=math.ceil(self.upper),
            nullable=True,
        )


_IN_SCOPE: ContextVar[Mapping[str, StudyField] | None] = ContextVar(
    "study_fields_in_scope", default=None
)
"""The study fields a query being validated declares (:func:`declared`)."""

Resolver = Callable[[str, set[str]], list[StudyField]]
"""``(project, names) -> declarations``: what the sites published for names a query uses."""

_RESOLVER: ContextVar[Resolver | None] = ContextVar("study_field_resolver", default=None)


@contextmanager
def declared(fields: Mapping[str, StudyField] | list[StudyField]) -> Iterator[None]:
    """Validate queries (and criteria) in this block knowing these study fields."""
    by_name = fields if isinstance(fields, Mapping) else {f.name: f for f in fields}
    token = _IN_SCOPE.set({**(_IN_SCOPE.get() or {}), **by_name})
    try:
        yield
    finally:
        _IN_SCOPE.reset(token)


def in_scope(name: str) -> StudyField | None:
    """The declaration of study field ``name`` in the current validation, if any."""
    return (_IN_SCOPE.get() or {}).get(name)


def lookup(name: str) -> FieldSpec | None:
    """A schema field's spec, or a study field's in the current validation, or None."""
    spec = FIELDS_BY_NAME.get(name)
    if spec is not None:
        return spec
    study = in_scope(name)
    return None if study is None else study.spec()


def names_in_scope() -> tuple[str, ...]:
    """Every study field name in scope (for "did you mean" suggestions)."""
    return tuple(_IN_SCOPE.get() or ())


def resolve_with(resolver: Resolver | None) -> None:
    """Complete queries validated from here on (in this context) with ``resolver``.

    The gateway sets it for each request, with what the sites' manifests declare; a
    node never does (a node reads only the declarations a query carries).
    """
    _RESOLVER.set(resolver)


def _named(value: Any, out: set[str]) -> None:
    """Every field name a raw query (JSON-like) mentions, wherever it is."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "field" and isinstance(item, str):
                out.add(item)
            elif key in ("time", "event") and isinstance(item, str):  # a training outcome's
                out.add(item)
            elif key in ("fields", "features") and isinstance(item, list):
                out.update(v for v in item if isinstance(v, str))
            else:
                _named(item, out)
    elif isinstance(value, list):
        for item in value:
            _named(item, out)


def mentioned(data: Mapping[str, Any]) -> set[str]:
    """Names a raw query reads that are not schema fields (candidates for study fields).

    >>> sorted(mentioned({"cohort": {"op": "eq", "field": "trial_arm", "value": "A"},
    ...                   "statistic": {"kind": "crosstab", "fields": ["sex", "ecog"]},
    ...                   "group_by": ["stage", "site_group"]}))
    ['ecog', 'site_group', 'trial_arm']
    """
    out: set[str] = set()
    _named({k: v for k, v in data.items() if k not in ("study_fields", "group_by")}, out)
    group_by = data.get("group_by")
    if isinstance(group_by, list):
        out.update(v for v in group_by if isinstance(v, str))
    return {name for name in out if name not in FIELDS_BY_NAME}


def complete(data: Any) -> Any:
    """A raw query with the declarations of the study fields it names, if a resolver is set.

    Names the query declares itself are left alone; names nobody declares stay
    undeclared, so validation refuses them as unknown fields.
    """
    resolver = _RESOLVER.get()
    if resolver is None or not isinstance(data, dict):
        return data
    given = data.get("study_fields") or []
    if not isinstance(given, list):
        return data
    have = {f.get("name") if isinstance(f, dict) else getattr(f, "name", None) for f in given}
    missing = mentioned(data) - have
    project = data.get("project")
    if not missing or not isinstance(project, str):
        return data
    found = [f.model_dump(mode="json") for f in resolver(project, missing)]
    return {**data, "study_fields": [*given, *found]} if found else data


def validate_declaring(data: Any, handler: Callable[[Any], T]) -> T:
    """Run a model's validation (``handler``) knowing the study fields ``data`` declares.

    The body of the wrap validators of :class:`varde.query.Query` and
    :class:`varde.training.TrainingSpec`: complete the raw document first (at the
    gateway), then validate it with its declarations in scope, so every nested check
    (a criterion, a feature, an outcome) sees them.
    """
    if not isinstance(data, dict):
        return handler(data)
    data = complete(data)
    raw = data.get("study_fields") or []
    try:
        fields = [StudyField.model_validate(f) for f in raw] if isinstance(raw, list) else []
    except ValidationError:
        fields = []  # the handler reports the bad declaration where it is
    with declared(fields):
        return handler(data)


def merge_declarations(
    project: str, names: set[str], published: Mapping[str, list[StudyField]]
) -> list[StudyField]:
    """The one declaration per name that the sites (``site -> declarations``) publish.

    Raises:
        ValueError: Sites declare one of ``names`` differently (the query could not mean
            the same thing at each), naming the field and the sites.
    """
    by_name: dict[str, dict[str, StudyField]] = {}
    for site, fields in sorted(published.items()):
        for f in fields:
            if f.name in names:
                by_name.setdefault(f.name, {})[site] = f
    out = []
    for name, at in sorted(by_name.items()):
        versions = {f.model_dump_json() for f in at.values()}
        if len(versions) > 1:
            raise ValueError(
                f"sites declare study field {name!r} of project {project!r} differently "
                f"({', '.join(sorted(at))}): ask them to agree on one declaration"
            )
        out.append(next(iter(at.values())))
    return out
