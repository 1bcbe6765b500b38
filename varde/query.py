"""The query language: one validated JSON document, never free-form SQL.

A query names a project, a cohort (a tree of predicates over the common schema),
one statistic, optional ``group_by`` over public categorical fields, and a privacy
mode. Everything here is checked against :mod:`varde.schema` when the model is
built, so an object of type :class:`Query` is always meaningful: unknown fields,
unknown categories, inverted bounds, non-increasing bins, epsilon <= 0 or NaN
all fail *before* any site is contacted, and nothing is charged.

What a particular site allows (which fields it exposes, which statistics, how
much epsilon) is a different question, answered by that site's policy.

The models are frozen and use ``extra="forbid"`` so that a typo in a key is an
error rather than a silently ignored option.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    ModelWrapValidatorHandler,
    Tag,
    field_validator,
    model_validator,
)

from varde.budget import ZCDP, Budget, Measure, PureDP
from varde.schema import FIELDS_BY_NAME, QUERYABLE_FIELDS, FieldKind, FieldSpec
from varde.study_fields import StudyField, in_scope, names_in_scope, validate_declaring
from varde.suggest import hint, suggest, unknown

Scalar = str | int | float

MAX_CELLS = 20_000
"""Upper bound on the number of released cells (group_by x bins) in one query."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _tag(key: str) -> Callable[[Any], str | None]:
    """A union's tag read from ``key`` (of a dict or a model).

    A callable rather than the key's name, so the union's error can say in words what it
    needs ("statistic needs a kind: ...") instead of pydantic's list of tags.
    """

    def tag(value: Any) -> str | None:
        found = value.get(key) if isinstance(value, dict) else getattr(value, key, None)
        return found if isinstance(found, str) else None

    return tag


def _documented(key: str, tags: list[str]) -> Callable[[dict[str, Any]], None]:
    """Put the union's discriminator back into its JSON schema (OpenAPI readers, generators).

    A callable discriminator (:func:`_tag`) leaves only a bare ``oneOf``; ``tags`` are the
    members' values of ``key`` in the union's order, paired with the ``$ref`` of each (in
    whatever reference template the document uses).
    """

    def add(schema: dict[str, Any]) -> None:
        refs = [member.get("$ref") for member in schema.get("oneOf", [])]
        if len(refs) == len(tags) and all(isinstance(r, str) for r in refs):
            mapping = dict(zip(tags, refs, strict=True))
            schema["discriminator"] = {"propertyName": key, "mapping": mapping}

    return add


def _queryable(name: str) -> FieldSpec:
    spec = FIELDS_BY_NAME.get(name)
    if spec is None:
        study = in_scope(name)  # a study field the query declares (varde.study_fields)
        if study is not None:
            return study.spec()
        raise ValueError(unknown("field", name, (*QUERYABLE_FIELDS, *names_in_scope())))
    if not spec.queryable:
        raise ValueError(f"field {name!r} is an identifier and can never be queried")
    return spec


def _check_value(spec: FieldSpec, value: Scalar) -> Scalar:
    """Coerce ``value`` to the field's kind, or explain why it cannot be."""
    if spec.kind is FieldKind.CATEGORICAL:
        if not isinstance(value, str):
            raise ValueError(f"field {spec.name!r} is categorical; {value!r} is not a string")
        if value not in spec.categories:
            cats = list(spec.categories)
            raise ValueError(
                f"unknown category {value!r} for field {spec.name!r}"
                + hint(suggest(value, cats), cats)
            )
        return value
    if spec.kind is FieldKind.INTEGER:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"field {spec.name!r} is numeric; {value!r} is not a number")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"field {spec.name!r}: {value!r} is not a finite number")
        return value
    if spec.kind is FieldKind.DATE:
        if not isinstance(value, str):
            raise ValueError(f"field {spec.name!r} is a date; give it as 'YYYY-MM-DD'")
        try:
            dt.date.fromisoformat(value)
        except ValueError as err:
            raise ValueError(f"field {spec.name!r}: {value!r} is not an ISO date") from err
        return value
    raise ValueError(f"field {spec.name!r} cannot be compared")  # pragma: no cover


def _order_key(spec: FieldSpec, value: Scalar) -> float:
    if spec.kind is FieldKind.DATE:
        return float(dt.date.fromisoformat(str(value)).toordinal())
    return float(value)


class Eq(_Frozen):
    """``field == value``."""

    op: Literal["eq"]
    field: str
    value: Scalar

    @model_validator(mode="after")
    def _valid(self) -> Eq:
        _check_value(_queryable(self.field), self.value)
        return self


class In(_Frozen):
    """``field`` is one of ``values``."""

    op: Literal["in"]
    field: str
    values: Annotated[list[Scalar], Field(min_length=1, max_length=2000)]

    @model_validator(mode="after")
    def _valid(self) -> In:
        spec = _queryable(self.field)
        for v in self.values:
            _check_value(spec, v)
        return self


class Between(_Frozen):
    """``low <= field <= high`` (inclusive both ends, like SQL)."""

    op: Literal["between"]
    field: str
    low: Scalar
    high: Scalar

    @model_validator(mode="after")
    def _valid(self) -> Between:
        spec = _queryable(self.field)
        if spec.kind is FieldKind.CATEGORICAL:
            raise ValueError(
                f"'between' needs a numeric or date field; {self.field!r} is categorical"
            )
        _check_value(spec, self.low)
        _check_value(spec, self.high)
        if _order_key(spec, self.low) > _order_key(spec, self.high):
            raise ValueError(f"'between' on {self.field!r}: low {self.low!r} > high {self.high!r}")
        return self


class _Compare(_Frozen):
    op: str
    field: str
    value: Scalar

    @model_validator(mode="after")
    def _valid(self) -> _Compare:
        spec = _queryable(self.field)
        if spec.kind is FieldKind.CATEGORICAL:
            raise ValueError(
                f"'{self.op}' needs a numeric or date field; {self.field!r} is categorical"
            )
        _check_value(spec, self.value)
        return self


class Ge(_Compare):
    """``field >= value``."""

    op: Literal[">="]


class Le(_Compare):
    """``field <= value``."""

    op: Literal["<="]


class StartsWith(_Frozen):
    """Categorical code starts with ``prefix``: ``C34`` matches every lung subsite."""

    op: Literal["startswith"]
    field: str
    prefix: Annotated[str, Field(min_length=1, max_length=32)]

    @model_validator(mode="after")
    def _valid(self) -> StartsWith:
        spec = _queryable(self.field)
        if spec.kind is not FieldKind.CATEGORICAL:
            raise ValueError(f"'startswith' needs a categorical code field; {self.field!r} is not")
        if not any(c.startswith(self.prefix) for c in spec.categories):
            raise ValueError(f"no category of {self.field!r} starts with {self.prefix!r}")
        return self


class And(_Frozen):
    """All of ``args``."""

    op: Literal["and"]
    args: Annotated[list[Predicate], Field(min_length=1, max_length=100)]


class Or(_Frozen):
    """Any of ``args``."""

    op: Literal["or"]
    args: Annotated[list[Predicate], Field(min_length=1, max_length=100)]


class Not(_Frozen):
    """Negation of ``arg``."""

    op: Literal["not"]
    arg: Predicate


_OPS = ("eq", "in", "between", ">=", "<=", "startswith", "and", "or", "not")
"""Every criterion's ``op``, in the order of :data:`Predicate`'s members."""

Predicate = Annotated[
    Annotated[Eq, Tag("eq")]
    | Annotated[In, Tag("in")]
    | Annotated[Between, Tag("between")]
    | Annotated[Ge, Tag(">=")]
    | Annotated[Le, Tag("<=")]
    | Annotated[StartsWith, Tag("startswith")]
    | Annotated[And, Tag("and")]
    | Annotated[Or, Tag("or")]
    | Annotated[Not, Tag("not")],
    Discriminator(
        _tag("op"),
        custom_error_type="criterion_op",
        custom_error_message=f"a criterion needs an op: {', '.join(_OPS[:-1])} or {_OPS[-1]}",
    ),
    Field(json_schema_extra=_documented("op", [*_OPS])),
]

for _model in (And, Or, Not):
    _model.model_rebuild()


def predicate_fields(pred: Predicate | None) -> set[str]:
    """Every field a predicate tree reads (a policy must expose all of them)."""
    if pred is None:
        return set()
    if isinstance(pred, And | Or):
        out: set[str] = set()
        for a in pred.args:
            out |= predicate_fields(a)
        return out
    if isinstance(pred, Not):
        return predicate_fields(pred.arg)
    return {pred.field}


def _numeric_field(name: str) -> FieldSpec:
    spec = _queryable(name)
    if spec.kind is not FieldKind.INTEGER:
        raise ValueError(f"field {name!r} is {spec.kind.value}, a numeric field is needed")
    return spec


class Count(_Frozen):
    """Number of tumours, or of patients (the query's ``unit``), in the cohort (per group)."""

    kind: Literal["count"]


class _Bounded(_Frozen):
    field: str
    lower: float = Field(allow_inf_nan=False)
    upper: float = Field(allow_inf_nan=False)

    @model_validator(mode="after")
    def _valid(self) -> _Bounded:
        spec = _numeric_field(self.field)
        if not self.lower < self.upper:
            raise ValueError(
                f"bounds inverted or empty: lower {self.lower} must be < upper {self.upper}"
            )
        if (
            spec.lower is not None
            and spec.upper is not None
            and (self.upper < spec.lower or self.lower > spec.upper)
        ):
            raise ValueError(
                f"bounds [{self.lower}, {self.upper}] lie outside the domain of {self.field!r} "
                f"[{spec.lower}, {spec.upper}]"
            )
        return self


class Sum(_Bounded):
    """Sum of ``field`` with each value clamped to the declared ``[lower, upper]``."""

    kind: Literal["sum"]


class Mean(_Bounded):
    """Mean of ``field`` clamped to ``[lower, upper]``; released as noisy sum / noisy count."""

    kind: Literal["mean"]


class Histogram(_Frozen):
    """Counts per public category, or per declared numeric bin ``[edge_i, edge_i+1)``.

    For a categorical field the categories default to the schema's public list
    (never the data's). For a numeric field ``bins`` are required, strictly
    increasing; values outside ``[bins[0], bins[-1])`` are not counted.
    """

    kind: Literal["histogram"]
    field: str
    bins: Annotated[list[float], Field(min_length=2, max_length=1001)] | None = None
    categories: Annotated[list[str], Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _valid(self) -> Histogram:
        spec = _queryable(self.field)
        if spec.kind is FieldKind.CATEGORICAL:
            if self.bins is not None:
                raise ValueError(f"{self.field!r} is categorical: give 'categories', not 'bins'")
            if self.categories is None and self.field not in FIELDS_BY_NAME:
                # a study field's cells are its declared categories, written out here so the
                # histogram says its own labels wherever it is read (frozen: set once, now)
                object.__setattr__(self, "categories", list(spec.categories))
            for c in self.categories or ():
                _check_value(spec, c)
            if self.categories is not None and len(set(self.categories)) != len(self.categories):
                raise ValueError("categories must not repeat")
        elif spec.kind is FieldKind.INTEGER:
            if self.categories is not None:
                raise ValueError(f"{self.field!r} is numeric: give 'bins', not 'categories'")
            if self.bins is None:
                raise ValueError(f"a histogram of numeric {self.field!r} needs declared 'bins'")
            if any(not math.isfinite(b) for b in self.bins):
                raise ValueError("bins must be finite numbers")
            if any(b >= c for b, c in zip(self.bins, self.bins[1:], strict=False)):
                raise ValueError(f"bins must be strictly increasing: {self.bins}")
        else:
            raise ValueError(f"no histogram over {spec.kind.value} field {self.field!r}")
        return self

    def labels(self) -> list[str]:
        """The public cell labels of this histogram, in order."""
        if self.categories is not None:
            return list(self.categories)
        spec = FIELDS_BY_NAME.get(self.field)
        if spec is not None and spec.kind is FieldKind.CATEGORICAL:
            return list(spec.categories)
        assert self.bins is not None
        return [f"[{_fmt(a)}, {_fmt(b)})" for a, b in zip(self.bins, self.bins[1:], strict=False)]


MAX_QUANTILE_CANDIDATES = 1001
"""Each candidate interval is a released count: a finer grid drowns each in noise."""


class Quantile(_Frozen):
    """Quantiles (median by default) of a numeric field over a declared public grid.

    ``candidates`` are strictly increasing edges: the bounds are the first and
    last edge (values outside are clamped to them, missing values are left
    out) and a quantile is interpolated within one interval. Each site
    releases DP counts per interval, so the network pools sites by adding
    counts (the pooled CDF), never by averaging site medians.
    """

    kind: Literal["quantile"]
    field: str
    candidates: Annotated[list[float], Field(min_length=2, max_length=MAX_QUANTILE_CANDIDATES)]
    alphas: Annotated[list[float], Field(min_length=1, max_length=9)] = [0.5]

    @model_validator(mode="after")
    def _valid(self) -> Quantile:
        spec = _numeric_field(self.field)
        if any(not math.isfinite(c) for c in self.candidates):
            raise ValueError("candidates must be finite numbers")
        if any(a >= b for a, b in zip(self.candidates, self.candidates[1:], strict=False)):
            raise ValueError(f"candidates must be strictly increasing: {self.candidates}")
        lo, hi = self.candidates[0], self.candidates[-1]
        if (
            spec.lower is not None
            and spec.upper is not None
            and (hi < spec.lower or lo > spec.upper)
        ):
            raise ValueError(
                f"candidates [{lo}, {hi}] lie outside the domain of {self.field!r} "
                f"[{spec.lower}, {spec.upper}]"
            )
        if any(not (0.0 < a < 1.0) for a in self.alphas):
            raise ValueError(f"alphas must lie strictly between 0 and 1: {self.alphas}")
        if any(a >= b for a, b in zip(self.alphas, self.alphas[1:], strict=False)):
            raise ValueError(f"alphas must be strictly increasing: {self.alphas}")
        return self

    def labels(self) -> list[str]:
        """One public label per requested quantile, e.g. ``q0.5``."""
        return [f"q{a:g}" for a in self.alphas]


DAYS_PER_MONTH = 365.25 / 12
"""A month on the survival grid, in days (the schema's ``survival_days`` unit)."""

MAX_SURVIVAL_INTERVALS = 240
"""At most 20 years of monthly intervals: each interval is two released counts."""


class Survival(_Frozen):
    """Kaplan-Meier (life-table) survival on a public monthly grid, from diagnosis.

    Time is ``survival_days`` (diagnosis to death or last follow-up) and the
    event is ``vital_status == "dead"``; the grid is every ``interval_months``
    up to ``horizon_months``. Each site releases DP counts of deaths and
    censorings per interval (and of patients followed beyond the horizon); the
    gateway pools the counts and computes the network curve, its bands and the
    median survival.
    """

    kind: Literal["survival"]
    interval_months: int = Field(default=1, ge=1, le=60)
    horizon_months: int = Field(default=60, ge=1, le=MAX_SURVIVAL_INTERVALS)

    @model_validator(mode="after")
    def _valid(self) -> Survival:
        if self.horizon_months % self.interval_months:
            raise ValueError(
                f"horizon_months {self.horizon_months} must be a multiple of "
                f"interval_months {self.interval_months}"
            )
        return self

    def months(self) -> list[int]:
        """The grid's end points (months), one released survival estimate each."""
        step = self.interval_months
        return list(range(step, self.horizon_months + 1, step))

    def labels(self) -> list[str]:
        """Public labels along the time axis: each grid point, then the median."""
        return [f"{m}m" for m in self.months()] + ["median"]

    def fields(self) -> set[str]:
        """The schema fields survival reads (a site's policy must expose both)."""
        return {"survival_days", "vital_status"}


class Crosstab(_Frozen):
    """Counts over the cartesian product of public categorical ``fields``."""

    kind: Literal["crosstab"]
    fields: Annotated[list[str], Field(min_length=2, max_length=6)]

    @model_validator(mode="after")
    def _valid(self) -> Crosstab:
        if len(set(self.fields)) != len(self.fields):
            raise ValueError("crosstab fields must not repeat")
        for name in self.fields:
            if _queryable(name).kind is not FieldKind.CATEGORICAL:
                raise ValueError(f"crosstab needs categorical fields; {name!r} is not")
        return self


class FunnelStep(_Frozen):
    """One eligibility criterion of a funnel, with the label its row gets."""

    label: Annotated[str, Field(min_length=1, max_length=80)]
    criterion: Predicate


MAX_FUNNEL_STEPS = 12
"""More steps would split epsilon so thinly that every count drowns in noise."""


class Funnel(_Frozen):
    """Trial-feasibility attrition: the count left after each criterion, applied in order.

    Row ``i`` counts the cohort's tumours meeting criteria ``1..i`` (so the
    exact counts never rise). Each row is a separate count, so the epsilon is
    split across the steps (by OpenDP composition at the node).
    """

    kind: Literal["funnel"]
    steps: Annotated[list[FunnelStep], Field(min_length=1, max_length=MAX_FUNNEL_STEPS)]

    @model_validator(mode="after")
    def _valid(self) -> Funnel:
        labels = [s.label for s in self.steps]
        if len(set(labels)) != len(labels):
            raise ValueError(f"funnel step labels must not repeat: {labels}")
        return self

    def labels(self) -> list[str]:
        """The step labels, in order (the funnel's public axis)."""
        return [s.label for s in self.steps]


_KINDS = ("count", "sum", "mean", "histogram", "crosstab", "funnel", "quantile", "survival")
"""Every statistic's ``kind``, in the order of :data:`Statistic`'s members."""

Statistic = Annotated[
    Annotated[Count, Tag("count")]
    | Annotated[Sum, Tag("sum")]
    | Annotated[Mean, Tag("mean")]
    | Annotated[Histogram, Tag("histogram")]
    | Annotated[Crosstab, Tag("crosstab")]
    | Annotated[Funnel, Tag("funnel")]
    | Annotated[Quantile, Tag("quantile")]
    | Annotated[Survival, Tag("survival")],
    Discriminator(
        _tag("kind"),
        custom_error_type="statistic_kind",
        custom_error_message=f"statistic needs a kind: {', '.join(_KINDS[:-1])} or {_KINDS[-1]}",
    ),
    Field(json_schema_extra=_documented("kind", [*_KINDS])),
]


def _one_needed(data: Any, amount: str) -> Any:
    if isinstance(data, dict) and amount not in data:
        raise ValueError(
            f"Field required: give privacy.{amount} or privacy.accuracy (exactly one of them)"
        )
    return data


class DPPrivacy(_Frozen):
    """Differential privacy: each site spends ``epsilon`` from the project's budget."""

    mode: Literal["dp"]
    epsilon: float = Field(gt=0, allow_inf_nan=False, strict=True)

    @model_validator(mode="before")
    @classmethod
    def _one_given(cls, data: Any) -> Any:
        return _one_needed(data, "epsilon")

    @property
    def budget(self) -> PureDP:
        """The typed budget asked of each site."""
        return PureDP(self.epsilon)


class ZCDPPrivacy(_Frozen):
    """Zero-concentrated DP: each site spends ``rho`` from a project it accounts in zCDP.

    Released through OpenDP's Gaussian mechanisms (discrete for counts,
    continuous for sums and means) at the L2 sensitivity; zCDP composes
    tightly, which suits projects that ask many questions. Every statistic
    that has a DP release has a zCDP one.
    """

    mode: Literal["zcdp"]
    rho: float = Field(gt=0, allow_inf_nan=False, strict=True)

    @model_validator(mode="before")
    @classmethod
    def _one_given(cls, data: Any) -> Any:
        return _one_needed(data, "rho")

    @property
    def budget(self) -> ZCDP:
        """The typed budget asked of each site."""
        return ZCDP(self.rho)


ACCURACY_STATISTICS = ("count", "histogram", "crosstab", "funnel", "sum", "survival")
"""The statistics an accuracy target can be given for (``docs/STATISTICS.md``).

Each has a 95% half-width that follows from the budget and public facts alone (the
site's per-patient bound, declared clamping bounds, a stated cohort size), so the
budget a site picks for it says nothing about its rows. A mean's error divides by its
(unknown) count and a quantile's depends on the data's density near it: those are
asked with an epsilon or rho."""


class AccuracyTarget(_Frozen):
    """What the researcher wants instead of a budget: ``+-pm95`` at 95% on each released number.

    For counts (count, histogram, crosstab, funnel) ``pm95`` is in the query's unit; for a sum,
    in the field's units. For survival it is a half-width on the survival probability
    ``S(t)`` (between 0 and 1) that the DP noise alone adds at any grid point, for a
    site-and-group cohort of ``cohort_size`` patients (required for survival, refused
    elsewhere): the sampling error and a smaller or censored cohort widen the band the
    release reports. Each site finds the least budget that meets it under its own policy.
    """

    pm95: float = Field(gt=0, allow_inf_nan=False)
    cohort_size: int | None = Field(default=None, ge=1, le=1_000_000_000)


def _one_of(data: Any, amount: str) -> Any:
    if isinstance(data, dict) and amount in data and "accuracy" in data:
        raise ValueError(f"give exactly one of privacy.{amount} or privacy.accuracy, not both")
    return data


class _AccuracyPrivacy(_Frozen):
    accuracy: AccuracyTarget

    @property
    def budget(self) -> None:
        """No budget is asked: each site finds its own least one for :attr:`accuracy`."""
        return None


class DPAccuracy(_AccuracyPrivacy):
    """Pure DP by accuracy: each site spends the least epsilon that meets ``accuracy``."""

    mode: Literal["dp"]
    measure: ClassVar[Measure] = "epsilon"

    @model_validator(mode="before")
    @classmethod
    def _exactly_one(cls, data: Any) -> Any:
        return _one_of(data, "epsilon")


class ZCDPAccuracy(_AccuracyPrivacy):
    """zCDP by accuracy: each site spends the least rho that meets ``accuracy``."""

    mode: Literal["zcdp"]
    measure: ClassVar[Measure] = "rho"

    @model_validator(mode="before")
    @classmethod
    def _exactly_one(cls, data: Any) -> Any:
        return _one_of(data, "rho")


class AggregatePrivacy(_Frozen):
    """Exact aggregates with small-cell suppression, where a site's policy allows it."""

    mode: Literal["aggregate"]

    @property
    def budget(self) -> None:
        """Aggregate mode spends no privacy budget (and carries no guarantee that composes)."""
        return None


def _privacy_tag(value: Any) -> str | None:
    """``dp``/``zcdp`` with an amount, ``dp-accuracy``/``zcdp-accuracy`` with a target."""
    if isinstance(value, dict):
        mode, by_accuracy = value.get("mode"), "accuracy" in value
    else:
        mode, by_accuracy = getattr(value, "mode", None), isinstance(value, _AccuracyPrivacy)
    if not isinstance(mode, str):
        return None
    return f"{mode}-accuracy" if by_accuracy and mode in ("dp", "zcdp") else mode


Privacy = Annotated[
    Annotated[DPPrivacy, Tag("dp")]
    | Annotated[ZCDPPrivacy, Tag("zcdp")]
    | Annotated[DPAccuracy, Tag("dp-accuracy")]
    | Annotated[ZCDPAccuracy, Tag("zcdp-accuracy")]
    | Annotated[AggregatePrivacy, Tag("aggregate")],
    Discriminator(
        _privacy_tag,
        custom_error_type="privacy_mode",
        custom_error_message="privacy needs a mode: dp, zcdp or aggregate",
    ),
]
"""How a query is private: an epsilon or rho, an accuracy target in either mode, or aggregate."""

AccuracyPrivacy = DPAccuracy | ZCDPAccuracy


def _check_target(stat: Statistic, target: AccuracyTarget) -> None:
    """Refuse an accuracy target that has no data-independent meaning for ``stat``."""
    if stat.kind not in ACCURACY_STATISTICS:
        raise ValueError(
            f"an accuracy target is accepted for {', '.join(ACCURACY_STATISTICS)}, not for "
            f"a {stat.kind}: its error depends on the data (ask with an epsilon or rho)"
        )
    if isinstance(stat, Survival):
        if target.cohort_size is None:
            raise ValueError(
                "a survival accuracy target needs 'cohort_size': the patients you expect per "
                "site and group (the noise's effect on S(t) depends on it)"
            )
        if not target.pm95 < 1:
            raise ValueError(
                f"a survival accuracy target is a half-width on a probability: pm95 "
                f"{target.pm95:g} must be below 1"
            )
    elif target.cohort_size is not None:
        raise ValueError(f"'cohort_size' is for survival targets only, not for a {stat.kind}")


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


Unit = Literal["tumours", "patients"]
"""What a query counts (:attr:`Query.unit`): rows of the registry, or the people behind them."""


class Query(_Frozen):
    """A complete question to the network.

    ``unit`` says what is counted. ``tumours`` (the default, so every query written
    before units existed keeps its meaning) counts rows: a patient with two matching
    primaries counts twice, and one patient moves a count by up to the site's
    per-patient bound ``k``. ``patients`` counts each patient once, by their *first*
    matching tumour (earliest diagnosis date, ties by tumour id): that tumour alone
    decides the patient's group, bin or value, so one patient moves the release by at
    most one row and its noise is ``k`` times smaller (``docs/STATISTICS.md``). Every
    statistic takes either unit; trial feasibility asks for patients.
    """

    project: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[a-z0-9][a-z0-9_.-]*$")]
    cohort: Predicate | None = None
    statistic: Statistic
    unit: Unit = Field(default="tumours", exclude_if=lambda unit: unit == "tumours")
    """Left out of the query's JSON when it is the default, so a tumour question (every
    question written before units existed) is spelt, stored and keyed as it always was."""
    group_by: Annotated[list[str], Field(max_length=4)] = []
    privacy: Privacy
    sites: Annotated[list[str], Field(min_length=1)] | None = None
    timeout_s: float = Field(default=10.0, gt=0, le=120, allow_inf_nan=False)
    study_fields: Annotated[list[StudyField], Field(max_length=50)] = Field(
        default=[], exclude_if=lambda fields: not fields
    )
    """Declarations of the study fields the query names (:mod:`varde.study_fields`): filled
    in by the gateway from what the sites publish, checked by each site against its own."""

    @model_validator(mode="wrap")
    @classmethod
    def _study_fields_in_scope(cls, data: Any, handler: ModelWrapValidatorHandler[Query]) -> Query:
        """Validate the query knowing the study fields it declares (or the gateway completes)."""
        return validate_declaring(data, handler)

    @field_validator("study_fields")
    @classmethod
    def _declared_once(cls, value: list[StudyField]) -> list[StudyField]:
        names = [f.name for f in value]
        if len(set(names)) != len(names):
            raise ValueError(f"study fields must not repeat: {names}")
        return value

    def field_categories(self, name: str) -> list[str]:
        """The public categories of a categorical field: the schema's, or a study field's."""
        spec = FIELDS_BY_NAME.get(name)
        if spec is not None:
            return list(spec.categories)
        study = next((f for f in self.study_fields if f.name == name), None)
        if study is None or study.categories is None:
            raise KeyError(f"the query declares no categorical field {name!r}")
        return list(study.categories)

    @field_validator("group_by")
    @classmethod
    def _group_keys(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("group_by keys must not repeat")
        for name in value:
            if _queryable(name).kind is not FieldKind.CATEGORICAL:
                raise ValueError(f"group_by needs public categorical fields; {name!r} is not")
        return value

    @model_validator(mode="after")
    def _cells(self) -> Query:
        if isinstance(self.statistic, Crosstab) and set(self.statistic.fields) & set(self.group_by):
            raise ValueError("a field cannot be both a crosstab axis and a group_by key")
        if isinstance(self.statistic, Histogram) and self.statistic.field in self.group_by:
            raise ValueError("a field cannot be both the histogram field and a group_by key")
        if isinstance(self.statistic, Quantile) and isinstance(self.privacy, AggregatePrivacy):
            raise ValueError(
                "quantiles are DP only: an exact quantile of a small group is one patient's value"
            )
        if isinstance(self.statistic, Survival):
            if isinstance(self.privacy, AggregatePrivacy):
                raise ValueError(
                    "survival is DP only: exact event times of a small group identify patients"
                )
            clash = self.statistic.fields() & set(self.group_by)
            if clash:
                raise ValueError(f"survival cannot group by its own field(s) {sorted(clash)}")
        if isinstance(self.privacy, DPAccuracy | ZCDPAccuracy):
            _check_target(self.statistic, self.privacy.accuracy)
        n = self.released_count()
        if n > MAX_CELLS:
            raise ValueError(f"the query would release {n} cells; at most {MAX_CELLS} are allowed")
        return self

    def released_count(self) -> int:
        """How many noisy numbers one site releases for this query (what its limits cap)."""
        n = self.cell_count()
        if isinstance(self.statistic, Quantile):  # released: one count per interval per group
            n = n // len(self.statistic.alphas) * (len(self.statistic.candidates) - 1)
        if isinstance(self.statistic, Survival):  # released: deaths, censorings per interval
            n = n // len(self.statistic.labels()) * (2 * len(self.statistic.months()) + 1)
        return n

    def axes(self) -> list[tuple[str, list[str]]]:
        """The public axes of the released table: group_by keys, then the statistic's own."""
        out = [(g, self.field_categories(g)) for g in self.group_by]
        stat = self.statistic
        if isinstance(stat, Histogram):
            out.append((stat.field, stat.labels()))
        elif isinstance(stat, Crosstab):
            out.extend((f, self.field_categories(f)) for f in stat.fields)
        elif isinstance(stat, Funnel):
            out.append(("step", stat.labels()))
        elif isinstance(stat, Quantile):
            out.append(("quantile", stat.labels()))
        elif isinstance(stat, Survival):
            out.append(("time", stat.labels()))
        return out

    def cell_count(self) -> int:
        """How many numbers the query releases per site."""
        n = 1
        for _, labels in self.axes():
            n *= len(labels)
        return n

    def fields_read(self) -> set[str]:
        """Every field the query reads; a site's policy must expose all of them."""
        out = predicate_fields(self.cohort) | set(self.group_by)
        stat = self.statistic
        if isinstance(stat, Sum | Mean | Histogram | Quantile):
            out.add(stat.field)
        elif isinstance(stat, Crosstab):
            out |= set(stat.fields)
        elif isinstance(stat, Funnel):
            for step in stat.steps:
                out |= predicate_fields(step.criterion)
        elif isinstance(stat, Survival):
            out |= stat.fields()
        return out

    @property
    def budget(self) -> Budget | None:
        """What each site is asked to spend: ``PureDP`` or ``ZCDP``.

        None in aggregate mode, and for an accuracy target (:attr:`accuracy`), where
        each site finds its own least budget (:meth:`resolved` is then the question
        that site answers).
        """
        return self.privacy.budget

    @property
    def accuracy(self) -> AccuracyTarget | None:
        """The accuracy target each site meets with its least budget, if one was given."""
        privacy = self.privacy
        return privacy.accuracy if isinstance(privacy, DPAccuracy | ZCDPAccuracy) else None

    def resolved(self, budget: Budget) -> Query:
        """The same question asked with ``budget`` (in the measure of the query's mode).

        >>> q = parse_query({"project": "p", "statistic": {"kind": "count"},
        ...                  "privacy": {"mode": "dp", "accuracy": {"pm95": 10}}})
        >>> q.budget is None, q.resolved(PureDP(0.3)).privacy
        (True, DPPrivacy(mode='dp', epsilon=0.3))
        """
        privacy: DPPrivacy | ZCDPPrivacy
        if self.privacy.mode == "dp" and isinstance(budget, PureDP):
            privacy = DPPrivacy(mode="dp", epsilon=budget.epsilon)
        elif self.privacy.mode == "zcdp" and isinstance(budget, ZCDP):
            privacy = ZCDPPrivacy(mode="zcdp", rho=budget.rho)
        else:
            raise TypeError(f"a {self.privacy.mode!r} query cannot be asked with {budget}")
        return self.model_copy(update={"privacy": privacy})


def parse_query(data: dict[str, Any]) -> Query:
    """Validate a JSON-like dict into a :class:`Query` (raises ``pydantic.ValidationError``)."""
    return Query.model_validate(data)
