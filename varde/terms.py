"""The one check of a site's public terms, shared by the gateway's pre-check and the node.

Why one function: the gateway refuses early what a site's published manifest
already rules out (so the researcher gets a precise 4xx and no site is
bothered), and the node authorises every work item against its own policy. If
the two were written separately they would drift, and a query the gateway lets
through would be refused with other words at the site (or the other way
round). So both call :func:`check_query` (and :func:`check_training` for
training jobs) on a :class:`~varde.release.Manifest`: the gateway on the one the
site published, the node on the one its policy in force produces. The node then
adds only what it alone knows: which researchers a project admits, staff
approvals, and the budget left in its ledger, charged atomically.

Every refusal names the site, the project and the rule; budgets and caps are
compared in the measure the project accounts in (:mod:`varde.budget`).
"""

from __future__ import annotations

import datetime as dt

from varde.budget import measure_of
from varde.errors import BudgetExhausted, FieldNotAvailable, PolicyViolation
from varde.query import Query, Survival
from varde.release import Manifest, ProjectTerms
from varde.study_fields import StudyField
from varde.training import TrainingSpec, round_costs

LEDGER_ROUNDING = 1e-9
"""A ledger rounds each charge up to this (nano-units): a budget within it still pays."""


def budget_help(site: str, renews: dt.date | None, contact: str) -> str:
    """What a researcher can do about a spent budget: when it renews and whom to ask.

    One wording for the gateway's pre-check and the node's own refusal.

    >>> budget_help("oslo", dt.date(2027, 1, 1), "registry@ous.example")
    '; the budget renews on 2027-01-01; for more, ask registry@ous.example'
    >>> budget_help("oslo", None, "")
    "; it is the project's whole budget at 'oslo' (it does not renew); for more, ask the registry staff at 'oslo'"
    """  # noqa: E501
    where = f"at {site!r}" if site else "here"
    when = (
        f"the budget renews on {renews.isoformat()}"
        if renews is not None
        else f"it is the project's whole budget {where} (it does not renew)"
    )
    return f"; {when}; for more, ask {contact or f'the registry staff {where}'}"


def _project(terms: Manifest, project: str) -> ProjectTerms:
    found = terms.projects.get(project)
    if found is None:
        raise PolicyViolation(f"site {terms.site!r} does not serve project {project!r}")
    return found


def _exposed(
    terms: Manifest, project: ProjectTerms, fields: set[str], declared: list[StudyField]
) -> None:
    """Every field read is exposed here: a schema field, or a study field of the project.

    A study field must also mean here what the query says it means: the declaration it
    carries is the one this site publishes, or the site refuses (its cells, bounds and
    scaling would be someone else's).
    """
    study = {f.name: f for f in project.study_fields}
    hidden = fields - set(terms.fields) - set(study)
    if hidden:
        raise FieldNotAvailable(terms.site, hidden)
    for f in declared:
        if f.name in fields and study.get(f.name) != f:
            raise PolicyViolation(
                f"site {terms.site!r} declares study field {f.name!r} differently from the "
                f"query: {_declaration(study.get(f.name))} here, {_declaration(f)} asked"
            )


def _declaration(f: StudyField | None) -> str:
    if f is None:  # pragma: no cover - a hidden field is refused before
        return "none"
    if f.kind == "categorical":
        return f"categories {', '.join(f.categories or [])}"
    return f"bounds [{f.lower:g}, {f.upper:g}]"


_MODES = {"epsilon": "dp", "zcdp": "zcdp"}
"""The privacy mode a project's queries are asked in, by its accounting."""


def _mode_text(accounting: str) -> str:
    return (
        '{"mode": "zcdp", "rho": ...}' if accounting == "zcdp" else '{"mode": "dp", "epsilon": ...}'
    )


def check_query(terms: Manifest, query: Query) -> ProjectTerms:
    """Refuse ``query`` if the site's public terms rule it out; its project's terms otherwise.

    Raises:
        FieldNotAvailable: The query reads a field the site does not expose.
        PolicyViolation: Project not served, statistic not allowed, a grid
            too fine or too many cells for the site, a privacy mode the project
            does not account in (or aggregate mode where it is not allowed), or a
            budget above the project's per-query cap.
        BudgetExhausted: The project has no budget here, or (when ``remaining``
            is published) less left than the query asks.

    An accuracy target (``query.accuracy``) names no budget: its mode must match the
    project's accounting and some budget must be left; the cap is checked by the node,
    which alone knows the least budget its own policy needs for the target
    (``nodes/statistics/accuracy_first.py``).
    """
    site = terms.site
    project = _project(terms, query.project)
    kind = query.statistic.kind
    if kind not in terms.statistics:
        raise PolicyViolation(f"site {site!r} does not allow statistic {kind!r}")
    _exposed(terms, project, query.fields_read(), query.study_fields)
    stat, limits = query.statistic, terms.limits
    floor = limits.min_survival_interval_months
    if isinstance(stat, Survival) and stat.interval_months < floor:
        raise PolicyViolation(
            f"survival grid too fine for site {site!r}: intervals of "
            f"{stat.interval_months} month(s) asked, at least {floor} allowed here"
        )
    released = query.released_count()
    if released > limits.max_cells:
        raise PolicyViolation(
            f"the query would release {released} numbers from site {site!r}, which "
            f"releases at most {limits.max_cells} per query"
        )
    asked = query.budget
    target = query.accuracy
    if target is not None:  # each site finds its own least budget; its node checks the cap
        if query.privacy.mode != _MODES[project.accounting]:
            raise PolicyViolation(
                f"project {query.project!r} accounts in {project.accounting} at {site!r}: "
                f'ask with privacy {{"mode": "{_MODES[project.accounting]}", "accuracy": ...}}'
            )
        _has_budget(terms, query.project, project, 0.0, "query")
        left = project.remaining
        if left is not None and left.amount <= LEDGER_ROUNDING:
            raise BudgetExhausted(
                f"project {query.project!r} has no {left.measure} left at {site!r}"
            )
        return project
    if asked is None:
        if not (terms.aggregate_mode and project.aggregate):
            raise PolicyViolation(
                f"site {site!r} does not allow non-DP aggregate mode for {query.project!r}"
            )
        if kind in ("sum", "mean") and not terms.aggregate_sums:
            raise PolicyViolation(
                f"site {site!r} releases only counts in aggregate mode, not a {kind}: "
                'ask with privacy {"mode": "dp", ...}'
            )
        return project
    if asked.measure != measure_of(project.accounting):
        raise PolicyViolation(
            f"project {query.project!r} accounts in {project.accounting} at {site!r}: "
            f"ask with privacy {_mode_text(project.accounting)}"
        )
    if asked > project.max_per_query:  # type: ignore[operator]
        raise PolicyViolation(
            f"{asked.measure} {asked.amount:g} is above the per-query cap "
            f"{project.max_per_query.amount:g} of project {query.project!r} at {site!r}"
        )
    _has_budget(terms, query.project, project, asked.amount, "query")
    return project


def _has_budget(
    terms: Manifest, name: str, project: ProjectTerms, needed: float, what: str
) -> None:
    measure = project.budget.measure
    if project.budget.amount == 0:
        raise BudgetExhausted(f"project {name!r} has no {measure} budget at {terms.site!r}")
    left = project.remaining
    if left is not None and needed > left.amount + LEDGER_ROUNDING:
        raise BudgetExhausted(
            f"project {name!r} has {left.amount:.6g} {measure} left at "
            f"{terms.site!r}; the {what} needs {needed:.6g}"
            + budget_help(terms.site, project.renews, terms.contact)
        )


def check_training(terms: Manifest, spec: TrainingSpec) -> ProjectTerms:
    """Refuse the training job ``spec`` if the site's public terms rule it out.

    The job's rounds and evaluation are priced in the project's own measure
    with :func:`varde.training.round_costs`, the same maths the site charges
    with: the dearest (first) round and the evaluation must fit the per-query
    cap, and the whole job what is left (when ``remaining`` is published).

    Raises:
        FieldNotAvailable: The job reads a field the site does not expose.
        PolicyViolation: Project not served, model not allowed for it, or a round
            or the evaluation above the per-query cap.
        BudgetExhausted: No budget, or not enough left for the whole job.
    """
    site = terms.site
    project = _project(terms, spec.project)
    if spec.model not in project.training:
        allowed = ", ".join(project.training) or "none"
        raise PolicyViolation(
            f"site {site!r} does not allow training {spec.model!r} models for project "
            f"{spec.project!r} (allowed there: {allowed})"
        )
    _exposed(terms, project, spec.fields_read(), spec.study_fields)
    measure = project.budget.measure
    costs = round_costs(spec, measure)
    cap = project.max_per_query.amount
    if costs[0] > cap:
        raise PolicyViolation(
            f"site {site!r}: round 1 costs {measure} {costs[0]:.4g}, above the per-query cap "
            f"{cap:g} of project {spec.project!r} (use more rounds or a smaller "
            f"{spec.privacy.measure})"
        )
    evaluation = costs[-1] if spec.privacy.evaluation_budget() > 0 else 0.0
    if evaluation > cap:
        raise PolicyViolation(
            f"site {site!r}: the final evaluation costs {measure} {evaluation:.4g}, above the "
            f"per-query cap {cap:g} of project {spec.project!r} (set a smaller "
            f"privacy.evaluation_{spec.privacy.measure})"
        )
    _has_budget(terms, spec.project, project, sum(costs), "job")
    return project
