"""What changing one policy into another does to budgets and exposure, change by change.

Why: a policy change goes live as soon as the node reloads the file, so staff
(and the node's audit log) must see before and after what it does: which
budgets grow, which fields or projects open up, what stops leaving the site.
Each change is marked as more exposure, less, or neither; ``varde policy diff``
prints :func:`render_diff`, the reloader audits :func:`diff_policies`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel

from nodes.periods import BudgetPeriod
from nodes.policy import Policy, ProjectPolicy
from varde.budget import Measure

__all__ = ["Effect", "PolicyChange", "SpentLookup", "diff_policies", "render_diff"]

SpentLookup = Callable[[str, Measure, BudgetPeriod], tuple[float, str]]
"""(project, measure, budget period) -> (what it has spent in the current period, that period).

Given to :func:`render_diff` by ``varde policy diff --state-dir``, from the node's ledger.
"""
_BUDGET_KEY = re.compile(r"^projects\.(?P<project>.+)\.(?P<measure>epsilon|rho)_budget$")

Effect = Literal["more", "less", "neutral"]
"""What a change does to what may leave the site: more exposure, less, or neither."""


@dataclass(frozen=True)
class PolicyChange:
    """One difference between two policies and its effect on exposure."""

    where: str
    effect: Effect
    text: str

    def __str__(self) -> str:
        mark = {"more": "+", "less": "-", "neutral": "~"}[self.effect]
        return f"{mark} {self.where}: {self.text}"


def _num(value: float | None) -> str:
    return "none" if value is None else f"{value:g}"


def _compare_number(
    where: str, old: float | None, new: float | None, *, higher_is_more: bool
) -> list[PolicyChange]:
    if old == new:
        return []
    if old is None or new is None:
        effect: Effect = "neutral"
    else:
        effect = "more" if (new > old) == higher_is_more else "less"
    delta = f" ({new - old:+g})" if old is not None and new is not None else ""
    return [PolicyChange(where, effect, f"{_num(old)} -> {_num(new)}{delta}")]


def _compare_set(where: str, old: list[str], new: list[str], noun: str) -> list[PolicyChange]:
    out = []
    added, removed = sorted(set(new) - set(old)), sorted(set(old) - set(new))
    if added:
        out.append(PolicyChange(where, "more", f"{noun} added: {', '.join(added)}"))
    if removed:
        out.append(PolicyChange(where, "less", f"{noun} removed: {', '.join(removed)}"))
    return out


def _project_changes(name: str, old: ProjectPolicy, new: ProjectPolicy) -> list[PolicyChange]:
    w = f"projects.{name}"
    out = _compare_number(
        f"{w}.epsilon_budget", old.epsilon_budget, new.epsilon_budget, higher_is_more=True
    )
    out += _compare_number(
        f"{w}.max_epsilon_per_query",
        old.max_epsilon_per_query,
        new.max_epsilon_per_query,
        higher_is_more=True,
    )
    if old.researchers != new.researchers:
        if new.researchers is None:
            out.append(PolicyChange(f"{w}.researchers", "more", "now open to every researcher"))
        elif old.researchers is None:
            out.append(
                PolicyChange(
                    f"{w}.researchers", "less", f"now only {', '.join(sorted(new.researchers))}"
                )
            )
        else:
            out += _compare_set(f"{w}.researchers", old.researchers, new.researchers, "researchers")
    if old.aggregate_mode != new.aggregate_mode:
        out.append(
            PolicyChange(
                f"{w}.aggregate_mode",
                "more" if new.aggregate_mode else "less",
                "non-DP aggregates " + ("allowed" if new.aggregate_mode else "no longer allowed"),
            )
        )
    out += _compare_set(f"{w}.training", list(old.training), list(new.training), "training models")
    return out + _other_fields(w, old, new, _PROJECT_HANDLED)


_PROJECT_HANDLED = {
    "epsilon_budget",
    "max_epsilon_per_query",
    "researchers",
    "aggregate_mode",
    "training",
}
_POLICY_HANDLED = {
    "site",
    "profile",
    "privacy_unit",
    "fields",
    "statistics",
    "projects",
    "aggregate",
    "approvals",
    "limits",
}


def _other_fields(
    where: str, old: BaseModel, new: BaseModel, handled: set[str]
) -> list[PolicyChange]:
    """Keys without a dedicated rule: budgets and caps by size, anything else as a plain change.

    Why generic: the model grows (budget periods, zCDP), and a diff that silently
    ignores a changed key would under-report what a change does.
    """
    out: list[PolicyChange] = []
    for name in type(old).model_fields:
        if name in handled:
            continue
        a, b = getattr(old, name), getattr(new, name)
        if a == b:
            continue
        key = f"{where}.{name}" if where else name
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (a, b))
        if numeric and ("budget" in name or "per_query" in name):
            out += _compare_number(key, float(a), float(b), higher_is_more=True)
        else:
            out.append(PolicyChange(key, "neutral", f"{_plain(a)} -> {_plain(b)}"))
    return out


def _plain(value: object) -> str:
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    return "none" if value is None else str(value)


def diff_policies(old: Policy, new: Policy) -> list[PolicyChange]:
    """What changing ``old`` into ``new`` does to budgets and exposure, change by change.

    Budgets are policy totals: the ledger keeps what each project has spent, so
    a lowered budget below what was spent leaves nothing to spend (never a
    negative), and a removed project keeps its ledger rows.
    """
    out: list[PolicyChange] = []
    if old.site != new.site:
        out.append(PolicyChange("site", "neutral", f"{old.site} -> {new.site} (a different site!)"))
    if old.profile != new.profile:
        out.append(
            PolicyChange(
                "profile",
                "more" if new.profile == "development" else "less",
                f"{old.profile} -> {new.profile}",
            )
        )
    k_old = old.privacy_unit.max_tumours_per_patient
    k_new = new.privacy_unit.max_tumours_per_patient
    if k_old != k_new:
        out.append(
            PolicyChange(
                "privacy_unit.max_tumours_per_patient",
                "neutral",
                f"{k_old} -> {k_new}: noise scales by {k_new / k_old:g}x "
                "(takes effect when the node restarts and reloads its data)",
            )
        )
    out += _compare_set("fields", old.fields, new.fields, "fields exposed")
    out += _compare_set("statistics", list(old.statistics), list(new.statistics), "statistics")
    for name in sorted(set(new.projects) - set(old.projects)):
        p = new.projects[name]
        out.append(
            PolicyChange(
                f"projects.{name}",
                "more",
                f"project added: budget {p.epsilon_budget:g}, "
                f"max {p.max_epsilon_per_query:g} per query"
                + (f", trains {', '.join(p.training)}" if p.training else ""),
            )
        )
    for name in sorted(set(old.projects) - set(new.projects)):
        out.append(
            PolicyChange(
                f"projects.{name}", "less", "project removed: no longer served (ledger kept)"
            )
        )
    for name in sorted(set(old.projects) & set(new.projects)):
        out += _project_changes(name, old.projects[name], new.projects[name])
    if old.aggregate.allowed != new.aggregate.allowed:
        out.append(
            PolicyChange(
                "aggregate.allowed",
                "more" if new.aggregate.allowed else "less",
                "non-DP aggregate mode " + ("enabled" if new.aggregate.allowed else "disabled"),
            )
        )
    out += _compare_number(
        "aggregate.min_cell",
        old.aggregate.min_cell,
        new.aggregate.min_cell,
        higher_is_more=False,
    )
    a_old, a_new = old.approvals, new.approvals
    if a_old.new_projects != a_new.new_projects:
        out.append(
            PolicyChange(
                "approvals.new_projects",
                "less" if a_new.new_projects else "more",
                "new projects " + ("wait for approval" if a_new.new_projects else "start at once"),
            )
        )
    if a_old.epsilon_above != a_new.epsilon_above:
        if a_new.epsilon_above is None:
            effect: Effect = "more"
        elif a_old.epsilon_above is None:
            effect = "less"
        else:
            effect = "more" if a_new.epsilon_above > a_old.epsilon_above else "less"
        out.append(
            PolicyChange(
                "approvals.epsilon_above",
                effect,
                f"{_num(a_old.epsilon_above)} -> {_num(a_new.epsilon_above)}",
            )
        )
    if a_old.training_jobs != a_new.training_jobs:
        out.append(
            PolicyChange(
                "approvals.training_jobs",
                "less" if a_new.training_jobs else "more",
                "training jobs "
                + ("wait for approval" if a_new.training_jobs else "start without approval"),
            )
        )
    if a_old.message != a_new.message:
        out.append(PolicyChange("approvals.message", "neutral", "message to researchers changed"))
    out += _compare_set(
        "approvals.approved_projects",
        a_old.approved_projects,
        a_new.approved_projects,
        "approved project(s)",
    )
    out += _compare_number(
        "limits.min_survival_interval_months",
        old.limits.min_survival_interval_months,
        new.limits.min_survival_interval_months,
        higher_is_more=False,
    )
    out += _compare_number(
        "limits.max_cells", old.limits.max_cells, new.limits.max_cells, higher_is_more=True
    )
    return out + _other_fields("", old, new, _POLICY_HANDLED)


def _with_spent(change: PolicyChange, new: Policy, spent: SpentLookup) -> str:
    """A budget change's line with what the project has already spent beside it."""
    found = _BUDGET_KEY.match(change.where)
    if found is None or found["project"] not in new.projects:
        return str(change)
    project = new.projects[found["project"]]
    measure: Measure = "rho" if found["measure"] == "rho" else "epsilon"
    amount, period = spent(found["project"], measure, project.budget_period)
    budget = project.rho_budget if measure == "rho" else project.epsilon_budget
    note = f"; spent {amount:.6g} {measure} in period {period}"
    if budget < amount:
        until = (
            "for good (a lifetime budget never renews)"
            if period == "lifetime"
            else "until the next period"
        )
        note += (
            ": the new budget is BELOW what is spent, so the project has nothing left "
            f"{until} (nothing spent comes back)"
        )
    else:
        note += f", {budget - amount:.6g} left under the new budget"
    return str(change) + note


def render_diff(old: Policy, new: Policy, *, spent: SpentLookup | None = None) -> str:
    """The diff as text: one change per line, then totals (epsilon budget, exposure).

    With ``spent`` (the node's ledger), each budget change says what the
    project has already spent in its current period and what that leaves.
    """
    changes = diff_policies(old, new)
    if not changes:
        return "no change in effect (budgets and exposure identical)"
    total_old = sum(p.epsilon_budget for p in old.projects.values())
    total_new = sum(p.epsilon_budget for p in new.projects.values())
    more = sum(1 for c in changes if c.effect == "more")
    less = sum(1 for c in changes if c.effect == "less")
    lines = [str(c) if spent is None else _with_spent(c, new, spent) for c in changes]
    lines.append(
        f"total epsilon budget over all projects: {total_old:g} -> {total_new:g} "
        f"({total_new - total_old:+g})"
    )
    lines.append(
        f"exposure: {more} change(s) let more leave the site, {less} let less leave "
        "(+ more, - less, ~ neither)"
    )
    return "\n".join(lines)
