"""Build a query document from ``varde query`` flags, so a quick question needs no file.

The flags map one to one onto the query language (``varde/query.py``):
``--project``, ``--cohort`` (the cohort text of :mod:`varde_client.cohort_text`,
e.g. ``"topography^=C34 and stage=IV and age_at_diagnosis in 18..75"``),
``--statistic`` with its own options, ``--by`` (``group_by``), ``--sites``,
and exactly one of ``--epsilon``, ``--rho``, ``--aggregate`` or ``--accuracy``.

Why it refuses rather than guesses: an option that does not apply to the
chosen statistic (``--bins`` with ``count``) or two privacy choices would
otherwise be dropped silently, and the researcher would pay for a question
they did not ask. What the flags cannot express (a funnel's several criteria,
a histogram's own category list) is written in a query file.

>>> q = build_query(QueryFlags(project="lung", statistic="histogram", field="stage", epsilon=0.5))
>>> q["statistic"], q["privacy"]
({'kind': 'histogram', 'field': 'stage'}, {'mode': 'dp', 'epsilon': 0.5})
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

STATISTICS = ("count", "histogram", "sum", "mean", "quantile", "crosstab", "survival")
"""What ``--statistic`` accepts (a funnel needs a query file)."""

# Which statistic options each statistic takes; "field" is required where listed first.
_OPTIONS: dict[str, tuple[str, ...]] = {
    "count": (),
    "histogram": ("field", "bins"),
    "sum": ("field", "lower", "upper"),
    "mean": ("field", "lower", "upper"),
    "quantile": ("field", "bins", "alphas"),
    "crosstab": ("field",),
    "survival": ("months", "interval"),
}
_REQUIRED: dict[str, tuple[str, ...]] = {
    "histogram": ("field",),
    "sum": ("field", "lower", "upper"),
    "mean": ("field", "lower", "upper"),
    "quantile": ("field", "bins"),
    "crosstab": ("field",),
}
_FLAG = {
    "field": "--field",
    "bins": "--bins",
    "lower": "--lower",
    "upper": "--upper",
    "alphas": "--alphas",
    "months": "--months",
    "interval": "--interval",
}


class QueryFlagError(ValueError):
    """The flags do not make one query: the message names the flag and the fix."""


@dataclass(frozen=True)
class QueryFlags:
    """The query-building flags of ``varde query``, as given (None: not given)."""

    project: str | None = None
    cohort: str | None = None
    statistic: str | None = None
    by: str | None = None
    field: str | None = None
    bins: str | None = None
    lower: float | None = None
    upper: float | None = None
    alphas: str | None = None
    months: int | None = None
    interval: int | None = None
    sites: str | None = None
    unit: str | None = None
    epsilon: float | None = None
    rho: float | None = None
    aggregate: bool = False
    accuracy: float | None = None
    zcdp: bool = False
    cohort_size: int | None = None

    def given(self) -> list[str]:
        """The flags that were given, as ``--name``."""
        return [
            "--" + f.name.replace("_", "-")
            for f in fields(self)
            if getattr(self, f.name) not in (None, False)
        ]


def csv_list(value: str | None, flag: str) -> list[str] | None:
    """``"a, b,c"`` as ``["a", "b", "c"]``; an empty item is an error, not skipped."""
    if value is None:
        return None
    items = [v.strip() for v in value.split(",")]
    if not all(items):
        raise QueryFlagError(f"{flag} {value!r} has an empty item — separate values by one comma")
    return items


def number_list(value: str | None, flag: str) -> list[int | float] | None:
    """``"0,18,40.5"`` as numbers (integers stay integers); anything else names the item."""
    items = csv_list(value, flag)
    if items is None:
        return None
    out: list[int | float] = []
    for item in items:
        try:
            number: int | float = int(item)
        except ValueError:
            try:
                number = float(item)
            except ValueError:
                raise QueryFlagError(
                    f"{flag}: {item!r} is not a number — give numbers separated by commas"
                ) from None
        if not math.isfinite(number):
            raise QueryFlagError(f"{flag}: {item!r} is not a finite number")
        out.append(number)
    return out


def _statistic(flags: QueryFlags) -> dict[str, Any]:
    kind = flags.statistic or "count"
    if kind == "funnel":
        raise QueryFlagError(
            "a funnel has several criteria — write it in a query file (varde query FILE)"
        )
    if kind not in _OPTIONS:
        raise QueryFlagError(
            f"--statistic {kind!r} is not known — use one of {', '.join(STATISTICS)}"
        )
    allowed = _OPTIONS[kind]
    for name, flag in _FLAG.items():
        if getattr(flags, name) is not None and name not in allowed:
            where = ", ".join(_FLAG[a] for a in allowed) or "no options"
            raise QueryFlagError(f"{flag} does not apply to --statistic {kind} (it takes {where})")
    missing = [_FLAG[n] for n in _REQUIRED.get(kind, ()) if getattr(flags, n) is None]
    if missing:
        raise QueryFlagError(f"--statistic {kind} needs {' and '.join(missing)}")
    stat: dict[str, Any] = {"kind": kind}
    if kind == "crosstab":
        stat["fields"] = csv_list(flags.field, "--field")
    elif flags.field is not None:
        stat["field"] = flags.field
    if flags.bins is not None:
        stat["candidates" if kind == "quantile" else "bins"] = number_list(flags.bins, "--bins")
    if flags.lower is not None:
        stat["lower"] = flags.lower
    if flags.upper is not None:
        stat["upper"] = flags.upper
    if flags.alphas is not None:
        stat["alphas"] = number_list(flags.alphas, "--alphas")
    if flags.months is not None:
        stat["horizon_months"] = flags.months
    if flags.interval is not None:
        stat["interval_months"] = flags.interval
    return stat


def _privacy(flags: QueryFlags) -> dict[str, Any]:
    chosen = [
        flag
        for flag, given in (
            ("--epsilon", flags.epsilon is not None),
            ("--rho", flags.rho is not None),
            ("--aggregate", flags.aggregate),
            ("--accuracy", flags.accuracy is not None),
        )
        if given
    ]
    if len(chosen) != 1:
        said = f" (given: {', '.join(chosen)})" if chosen else ""
        raise QueryFlagError(
            f"give exactly one of --epsilon, --rho, --aggregate or --accuracy{said}"
        )
    if flags.accuracy is None and (flags.zcdp or flags.cohort_size is not None):
        raise QueryFlagError("--zcdp and --cohort-size go with --accuracy")
    if flags.epsilon is not None:
        return {"mode": "dp", "epsilon": flags.epsilon}
    if flags.rho is not None:
        return {"mode": "zcdp", "rho": flags.rho}
    if flags.aggregate:
        return {"mode": "aggregate"}
    target: dict[str, Any] = {"pm95": flags.accuracy}
    if flags.cohort_size is not None:
        target["cohort_size"] = flags.cohort_size
    return {"mode": "zcdp" if flags.zcdp else "dp", "accuracy": target}


def build_query(flags: QueryFlags) -> dict[str, Any]:
    """The query document the flags describe (the gateway validates it against the schema)."""
    if flags.project is None:
        raise QueryFlagError("--project is needed to build a query (or give a query file)")
    query: dict[str, Any] = {"project": flags.project}
    if flags.cohort is not None:
        from varde_client.cohort_text import parse_cohort_text

        try:
            query["cohort"] = parse_cohort_text(flags.cohort).to_json()
        except ValueError as err:  # the parser's errors name the position and the token
            raise QueryFlagError(f"--cohort: {err}") from None
    query["statistic"] = _statistic(flags)
    group_by = csv_list(flags.by, "--by")
    if group_by is not None:
        query["group_by"] = group_by
    query["privacy"] = _privacy(flags)
    sites = csv_list(flags.sites, "--sites")
    if sites is not None:
        query["sites"] = sites
    if flags.unit is not None:
        if flags.unit not in ("patients", "tumours"):
            raise QueryFlagError(f"--unit is patients or tumours, not {flags.unit!r}")
        query["unit"] = flags.unit
    return query
