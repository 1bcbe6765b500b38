"""The question a work item asks, in one line a person can read, and as the audit records it.

Why one renderer: staff approve a question, the data-protection officer reads
the audit trail, and ``varde audit report`` lists what was spent on what. All
three must show the *same* words for the same query, so there is one function,
:func:`describe_query`, and one record of the question,
:func:`question_record`, that every audit entry about a work item carries (the
canonical JSON *and* its one-line summary: the JSON is what the node answered,
the line is what a person reads).

The rendering never raises for a validated :class:`~varde.query.Query` and
names every field the query reads (tested with hypothesis over predicate
trees), so nothing a query touches is hidden from the person approving it.
"""

from __future__ import annotations

from typing import Any

from varde.outcomes import describe_outcome
from varde.query import (
    And,
    Between,
    Count,
    Crosstab,
    Eq,
    Funnel,
    Ge,
    Histogram,
    In,
    Le,
    Mean,
    Not,
    Or,
    Predicate,
    Quantile,
    Query,
    StartsWith,
    Sum,
    Survival,
)
from varde.training import TrainingSpec

__all__ = [
    "canonical_question",
    "claimed_question",
    "describe_cohort",
    "describe_privacy",
    "describe_query",
    "describe_statistic",
    "describe_training",
    "question_record",
    "training_record",
]

MAX_LISTED = 8
"""Values of an ``in`` list (or bins, categories) shown before the rest is counted."""


def _value(v: object) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _listed(values: list[Any]) -> str:
    shown = ", ".join(_value(v) for v in values[:MAX_LISTED])
    if len(values) > MAX_LISTED:
        shown += f", ... ({len(values)} in all)"
    return shown


def describe_cohort(pred: Predicate | None) -> str:
    """A predicate tree as readable criteria.

    >>> from varde.query import Query
    >>> q = Query.model_validate({"project": "p", "statistic": {"kind": "count"},
    ...     "privacy": {"mode": "dp", "epsilon": 0.5},
    ...     "cohort": {"op": "and", "args": [
    ...         {"op": "startswith", "field": "topography", "prefix": "C34"},
    ...         {"op": "eq", "field": "stage", "value": "IV"},
    ...         {"op": "between", "field": "age_at_diagnosis", "low": 18, "high": 75}]}})
    >>> describe_cohort(q.cohort)
    'topography starts with C34 and stage = IV and age_at_diagnosis 18–75'
    >>> describe_cohort(None)
    'all tumours'
    """
    if pred is None:
        return "all tumours"
    return _cohort(pred, parent="")


def _cohort(pred: Predicate, *, parent: str) -> str:
    if isinstance(pred, And | Or):
        word = " and " if isinstance(pred, And) else " or "
        text = word.join(_cohort(a, parent=pred.op) for a in pred.args)
        # "a and (b or c)": parentheses only where the other connective encloses this one
        return f"({text})" if parent and parent != pred.op and len(pred.args) > 1 else text
    if isinstance(pred, Not):
        return f"not ({_cohort(pred.arg, parent='')})"
    if isinstance(pred, Eq):
        return f"{pred.field} = {_value(pred.value)}"
    if isinstance(pred, In):
        return f"{pred.field} in {{{_listed(list(pred.values))}}}"
    if isinstance(pred, Between):
        return f"{pred.field} {_value(pred.low)}–{_value(pred.high)}"
    if isinstance(pred, Ge):
        return f"{pred.field} >= {_value(pred.value)}"
    if isinstance(pred, Le):
        return f"{pred.field} <= {_value(pred.value)}"
    if isinstance(pred, StartsWith):
        return f"{pred.field} starts with {pred.prefix}"
    raise TypeError(f"no rendering for predicate {type(pred).__name__}")  # pragma: no cover


def describe_statistic(query: Query) -> str:
    """The statistic with its grid: bins, categories, candidates, steps or time axis."""
    s = query.statistic
    if isinstance(s, Count):
        return "count"
    if isinstance(s, Sum | Mean):
        return f"{s.kind} of {s.field} clamped to [{_value(s.lower)}, {_value(s.upper)}]"
    if isinstance(s, Histogram):
        if s.bins is not None:
            grid = f"bins {_listed(list(s.bins))}"
        elif s.categories is not None:
            grid = f"categories {_listed(list(s.categories))}"
        else:
            grid = f"all {len(s.labels())} categories"
        return f"histogram of {s.field} ({grid})"
    if isinstance(s, Crosstab):
        return "crosstab of " + " × ".join(s.fields)
    if isinstance(s, Funnel):
        steps = "; ".join(
            f"{i}. {st.label}: {_cohort(st.criterion, parent='')}"
            for i, st in enumerate(s.steps, 1)
        )
        return f"funnel of {len(s.steps)} steps ({steps})"
    if isinstance(s, Quantile):
        alphas = ", ".join(f"{a:g}" for a in s.alphas)
        lo, hi = s.candidates[0], s.candidates[-1]
        return (
            f"quantiles {alphas} of {s.field} on {len(s.candidates)} grid points "
            f"{_value(lo)}–{_value(hi)}"
        )
    if isinstance(s, Survival):
        return (
            f"Kaplan-Meier survival (survival_days, vital_status) every "
            f"{s.interval_months} month(s) to {s.horizon_months} months"
        )
    raise TypeError(f"no rendering for statistic {type(s).__name__}")  # pragma: no cover


def describe_privacy(query: Query) -> str:
    """What each site is asked to spend: ``epsilon 0.5 (dp)``, ``rho 0.01 (zcdp)``, or none."""
    budget = query.budget
    target = getattr(query.privacy, "accuracy", None)  # an accuracy target instead of a budget
    if budget is None and target is not None:
        size = f", cohort of {target.cohort_size}" if getattr(target, "cohort_size", None) else ""
        return (
            f"±{target.pm95:g} at 95%{size} ({query.privacy.mode} by accuracy: each site "
            "spends the least budget that meets it)"
        )
    if budget is None:
        return "aggregate (exact, small cells suppressed; no DP budget)"
    return f"{budget.measure} {budget.amount:g} ({query.privacy.mode})"


def describe_query(query: Query) -> str:
    """The whole question in one line: statistic, cohort, grouping, privacy.

    >>> from varde.query import Query
    >>> describe_query(Query.model_validate({"project": "p",
    ...     "cohort": {"op": "or", "args": [{"op": "eq", "field": "stage", "value": "III"},
    ...                                     {"op": "eq", "field": "stage", "value": "IV"}]},
    ...     "statistic": {"kind": "histogram", "field": "age_at_diagnosis",
    ...                   "bins": [0, 50, 70, 120]},
    ...     "group_by": ["sex"], "privacy": {"mode": "zcdp", "rho": 0.02}}))
    'histogram of age_at_diagnosis (bins 0, 50, 70, 120) where stage = III or stage = IV, by sex; rho 0.02 (zcdp)'
    """  # noqa: E501
    text = describe_statistic(query)
    if query.unit == "patients":
        text += " (patients)"
    if query.cohort is not None:
        text += f" where {describe_cohort(query.cohort)}"
    if query.group_by:
        text += f", by {', '.join(query.group_by)}"
    return f"{text}; {describe_privacy(query)}"


def canonical_question(query: Query) -> dict[str, Any]:
    """The query as the node answered it (validated JSON, without how long to wait)."""
    spec = query.model_dump(mode="json", exclude_none=True)
    spec.pop("timeout_s", None)  # how long to wait is not part of the question
    return spec


def question_record(query: Query) -> dict[str, Any]:
    """What every audit entry about a query carries: its JSON and its one-line summary."""
    return {"question": canonical_question(query), "summary": describe_query(query)}


def describe_training(spec: TrainingSpec) -> str:
    """What staff are asked to approve, in one line.

    >>> from varde.training import TrainingPrivacy
    >>> describe_training(TrainingSpec(project="p", features=["sex", "stage"], rounds=4,
    ...                                privacy=TrainingPrivacy(epsilon=2.0)))
    'logistic model of death_within_2y on sex, stage; 4 rounds; epsilon 2 for the whole job (delta 1e-06, clip 1)'
    """  # noqa: E501
    p = spec.privacy
    cohort = f" where {describe_cohort(spec.cohort)}" if spec.cohort is not None else ""
    return (
        f"{spec.model} model of {describe_outcome(spec.outcome)} on "
        f"{', '.join(spec.features)}{cohort}; "
        f"{spec.rounds} rounds; {p.budget_text()} for the whole job "
        f"(delta {p.delta:g}, clip {p.clip:g})"
    )


def training_record(spec: TrainingSpec) -> dict[str, Any]:
    """The training job's question as its audit entries carry it (sites left out)."""
    return {
        "question": spec.model_dump(mode="json", exclude={"sites", "min_sites"}, exclude_none=True),
        "summary": describe_training(spec),
    }


def claimed_question(raw: object) -> dict[str, Any]:
    """The question a signed work item claims, before the pipeline parses it (never raises).

    The ``work_received`` entry is written with the item's nonce, before the
    query is validated: a query that validates is recorded like every later
    entry; one that does not is kept as sent (its refusal follows in the trail).
    """
    try:
        return question_record(Query.model_validate(raw))
    except (ValueError, TypeError):  # pydantic's ValidationError is a ValueError
        return {"question": raw if isinstance(raw, dict) else str(raw)[:2000], "summary": ""}
