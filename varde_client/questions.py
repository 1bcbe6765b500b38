"""Builders for each statistic: a validated :class:`varde.query.Query` from a few arguments.

>>> from varde_client.cohort import Field
>>> from varde_client.questions import count
>>> q = count("nsclc-feasibility", Field("stage") == "IV", by="sex", epsilon=0.5)
>>> q.statistic.kind, q.group_by, q.privacy.mode
('count', ['sex'], 'dp')

Why builders: the JSON query language is exact but verbose, and its pydantic
models check only the common schema. These functions check every field and
category against the schema they are given (what ``GET /v1/schema`` returned, or
offline :mod:`varde.schema`) with errors that suggest the name meant, then let
``varde.query`` check the rest (bounds, bins, cell limits), so what they return
is a query the gateway will parse, and nothing has been sent.

Privacy is one of ``epsilon=`` (pure DP), ``rho=`` (zCDP, for projects a site
accounts in zCDP) or ``aggregate=True`` (non-DP counts where a policy allows),
exactly one; ``sites=`` and ``timeout_s=`` pass through. ``unit="patients"``
counts each patient once, by their first matching tumour, with ``k`` times less
noise than the default ``unit="tumours"`` (``k``: a site's tumours per patient):
what trial feasibility asks.

>>> count("nsclc-feasibility", Field("stage") == "IV", unit="patients", epsilon=0.5).unit
'patients'
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, Literal, TypedDict, Unpack

from varde.query import Query, parse_query
from varde.study_fields import mentioned
from varde_client.cohort import Criterion, InvalidCriterion, Schema, SchemaLike, validate

By = str | Sequence[str] | None
"""``group_by``: one public categorical field, several, or none."""


class ClientOptions(TypedDict, total=False):
    """What every statistic takes as keywords: privacy (exactly one), sites, timeout."""

    epsilon: float
    rho: float
    aggregate: bool
    accuracy: float
    """Instead of an epsilon or rho: the 95% half-width wanted (each site finds its least)."""
    zcdp: bool
    """With ``accuracy``: the project accounts in zCDP (rho), not pure DP."""
    cohort_size: int
    """With ``accuracy`` on a survival curve: the patients per site the target assumes."""
    sites: Sequence[str]
    timeout_s: float
    unit: Literal["patients", "tumours"]
    """What is counted: ``"tumours"`` (the default) or ``"patients"`` (each once)."""


class Options(ClientOptions, total=False):
    """The builders' keywords: the client's, and the schema to check names against."""

    schema: SchemaLike | None
    """What ``GET /v1/schema`` returned (records or frame); None: :mod:`varde.schema`."""


_OPTIONS = {*ClientOptions.__annotations__, "schema"}


def privacy(
    *,
    epsilon: float | None = None,
    rho: float | None = None,
    aggregate: bool = False,
    accuracy: float | None = None,
    zcdp: bool = False,
    cohort_size: int | None = None,
) -> dict[str, Any]:
    """The query's ``privacy``: exactly one of ``epsilon``, ``rho``, ``accuracy``, ``aggregate``.

    ``accuracy`` asks for a 95% half-width instead of a budget: each site spends the least
    epsilon (or rho, with ``zcdp=True``) its own policy needs for it (docs/STATISTICS.md).

    >>> privacy(rho=0.05)
    {'mode': 'zcdp', 'rho': 0.05}
    >>> privacy(accuracy=10)
    {'mode': 'dp', 'accuracy': {'pm95': 10.0}}
    """
    for name, flag in (("aggregate", aggregate), ("zcdp", zcdp)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} is True or False, not {flag!r}")
    given = [
        name
        for name, present in (
            ("epsilon=", epsilon is not None),
            ("rho=", rho is not None),
            ("accuracy=", accuracy is not None),
            ("aggregate=True", aggregate),
        )
        if present
    ]
    if len(given) != 1:
        got = f" (got {' and '.join(given)})" if given else ""
        raise ValueError(f"give exactly one of epsilon=, rho=, accuracy= or aggregate=True{got}")
    if (zcdp or cohort_size is not None) and accuracy is None:
        raise ValueError("zcdp= and cohort_size= go with accuracy= (rho= asks in zCDP directly)")
    if aggregate:
        return {"mode": "aggregate"}
    if epsilon is not None:
        return {"mode": "dp", "epsilon": _positive("epsilon", epsilon)}
    if accuracy is not None:
        target: dict[str, Any] = {"pm95": _positive("accuracy", accuracy)}
        if cohort_size is not None:
            if isinstance(cohort_size, bool) or not isinstance(cohort_size, int):
                raise TypeError(f"cohort_size is a whole number, not {cohort_size!r}")
            target["cohort_size"] = cohort_size
        return {"mode": "zcdp" if zcdp else "dp", "accuracy": target}
    assert rho is not None
    return {"mode": "zcdp", "rho": _positive("rho", rho)}


def _positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} is a number, not {value!r}")
    if not (math.isfinite(float(value)) and float(value) > 0):
        raise ValueError(f"{name} must be a positive finite number, not {value!r}")
    return float(value)


def _numbers(name: str, values: Sequence[object]) -> list[float]:
    """A list of finite numbers (``range`` is welcome); a string or a boolean is refused."""
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise TypeError(f"{name} is a list of numbers, not {values!r}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise TypeError(f"{name}: {v!r} is not a number")
        out.append(float(v))
    return out


def _names(name: str, values: str | Sequence[str] | None) -> list[str]:
    if values is None:
        return []
    listed = [values] if isinstance(values, str) else list(values)
    if not all(isinstance(v, str) for v in listed):
        raise TypeError(f"{name} takes field names (strings), not {values!r}")
    return listed


def build(
    project: str,
    statistic: dict[str, Any],
    cohort: Criterion | None,
    by: By,
    options: Options,
) -> Query:
    """Check names against the schema, then validate the whole query with ``varde.query``.

    ``statistic`` is the statistic's JSON object, whose own names the builders
    below have checked (they are the usual way in).
    """
    unknown = set(options) - _OPTIONS
    if unknown:
        raise TypeError(f"unknown option(s) {sorted(unknown)}; known: {sorted(_OPTIONS)}")
    schema = Schema.of(options.get("schema"))
    body: dict[str, Any] = {
        "project": project,
        "statistic": statistic,
        "group_by": _names("by", by),
        "privacy": privacy(
            epsilon=options.get("epsilon"),
            rho=options.get("rho"),
            aggregate=options.get("aggregate", False),
            accuracy=options.get("accuracy"),
            zcdp=options.get("zcdp", False),
            cohort_size=options.get("cohort_size"),
        ),
    }
    if cohort is not None:
        if not isinstance(cohort, Criterion):
            raise TypeError(f"cohort is a Criterion (see varde_client.cohort), not {cohort!r}")
        body["cohort"] = validate(cohort, schema).to_json()
    for key in body["group_by"]:
        schema.require(key, {"categorical"}, "group_by")
    if "sites" in options:
        body["sites"] = _names("sites", options["sites"])
    if "timeout_s" in options:
        body["timeout_s"] = _positive("timeout_s", options["timeout_s"])
    if "unit" in options:
        if options["unit"] not in ("patients", "tumours"):
            raise ValueError(f"unit is 'patients' or 'tumours', not {options['unit']!r}")
        body["unit"] = options["unit"]
    declared = [
        found.study
        for name in sorted(mentioned(body))
        if (found := schema.fields.get(name)) is not None and found.study is not None
    ]
    if declared:  # study fields the query names: it carries their declarations
        body["study_fields"] = declared
    return parse_query(body)


def count(
    project: str, cohort: Criterion | None = None, by: By = None, **options: Unpack[Options]
) -> Query:
    """Number of tumours, or of patients with ``unit="patients"``, in the cohort (per group)."""
    return build(project, {"kind": "count"}, cohort, by, options)


def survival(
    project: str,
    cohort: Criterion | None = None,
    by: By = None,
    *,
    months: int = 60,
    interval: int = 12,
    **options: Unpack[Options],
) -> Query:
    """Kaplan-Meier survival every ``interval`` months up to ``months`` (DP only)."""
    schema = Schema.of(options.get("schema"))
    for name in ("survival_days", "vital_status"):
        schema.field(name)
    stat = {"kind": "survival", "interval_months": interval, "horizon_months": months}
    return build(project, stat, cohort, by, options)


def funnel(
    project: str,
    steps: Sequence[tuple[str, Criterion]],
    cohort: Criterion | None = None,
    by: By = None,
    **options: Unpack[Options],
) -> Query:
    """Trial-feasibility attrition: the count left after each ``(label, criterion)`` in order."""
    if isinstance(steps, str | dict) or not isinstance(steps, Sequence):
        raise TypeError("steps is a list of (label, criterion) pairs")
    schema = Schema.of(options.get("schema"))
    out = []
    for step in steps:
        if not (isinstance(step, tuple) and len(step) == 2 and isinstance(step[1], Criterion)):
            raise TypeError(f"a funnel step is a (label, criterion) pair, not {step!r}")
        out.append({"label": step[0], "criterion": validate(step[1], schema).to_json()})
    return build(project, {"kind": "funnel", "steps": out}, cohort, by, options)


def quantile(
    project: str,
    field: str,
    candidates: Sequence[float],
    cohort: Criterion | None = None,
    by: By = None,
    *,
    alphas: Sequence[float] = (0.5,),
    **options: Unpack[Options],
) -> Query:
    """Quantiles of a numeric ``field`` over the public grid ``candidates`` (median by default)."""
    Schema.of(options.get("schema")).require(field, {"integer"}, "quantile")
    stat = {
        "kind": "quantile",
        "field": field,
        "candidates": _numbers("candidates", candidates),
        "alphas": _numbers("alphas", alphas),
    }
    return build(project, stat, cohort, by, options)


def crosstab(
    project: str,
    fields: Sequence[str],
    cohort: Criterion | None = None,
    by: By = None,
    **options: Unpack[Options],
) -> Query:
    """Counts over every combination of the public categorical ``fields``."""
    names = _names("fields", fields)
    schema = Schema.of(options.get("schema"))
    for name in names:
        schema.require(name, {"categorical"}, "crosstab")
    return build(project, {"kind": "crosstab", "fields": names}, cohort, by, options)


def _bounded(
    kind: str,
    project: str,
    field: str,
    lower: float,
    upper: float,
    cohort: Criterion | None,
    by: By,
    options: Options,
) -> Query:
    Schema.of(options.get("schema")).require(field, {"integer"}, kind)
    low, high = _numbers("lower/upper", [lower, upper])
    stat = {"kind": kind, "field": field, "lower": low, "upper": high}
    return build(project, stat, cohort, by, options)


def mean(
    project: str,
    field: str,
    lower: float,
    upper: float,
    cohort: Criterion | None = None,
    by: By = None,
    **options: Unpack[Options],
) -> Query:
    """Mean of ``field`` with each value clamped to the declared ``[lower, upper]``."""
    return _bounded("mean", project, field, lower, upper, cohort, by, options)


def sum(  # the statistic's name shadows the builtin here, which this module never needs
    project: str,
    field: str,
    lower: float,
    upper: float,
    cohort: Criterion | None = None,
    by: By = None,
    **options: Unpack[Options],
) -> Query:
    """Sum of ``field`` with each value clamped to the declared ``[lower, upper]``."""
    return _bounded("sum", project, field, lower, upper, cohort, by, options)


def histogram(
    project: str,
    field: str,
    cohort: Criterion | None = None,
    by: By = None,
    *,
    bins: Sequence[float] | None = None,
    categories: Sequence[str] | None = None,
    **options: Unpack[Options],
) -> Query:
    """Counts per public category of ``field`` (or some ``categories``), or per numeric ``bins``."""
    schema = Schema.of(options.get("schema"))
    spec = schema.require(field, {"categorical", "integer"}, "histogram")
    stat: dict[str, Any] = {"kind": "histogram", "field": field}
    if bins is not None:
        stat["bins"] = _numbers("bins", bins)
    if categories is not None:
        stat["categories"] = _names("categories", categories)
        if spec.kind != "categorical":
            raise InvalidCriterion(f"{field!r} is {spec.kind}: give bins=, not categories=")
        for c in stat["categories"]:
            schema.category(field, c)
    return build(project, stat, cohort, by, options)
