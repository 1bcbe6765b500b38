"""Policies as code: check a policy file line by line, diff two versions, document the schema.

Why: the people who edit ``policies/<site>.yaml`` are registry staff, not
programmers. A refusal must say *where* (the YAML line) and *what to do*
(allowed keys, the rule broken); a change must say what it does to budgets and
exposure before it goes live; and the documentation of every key must come
from the same pydantic model that enforces it, so it cannot drift.

Line numbers come from the YAML node tree (``yaml.compose``), which keeps each
node's position; a pydantic error location (``projects.p1.epsilon_budget``)
is walked down that tree to the node it names.
"""

from __future__ import annotations

import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from nodes.policy import (
    SAFE_MAX_EPSILON_PER_QUERY,
    SAFE_MIN_CELL,
    AggregateMode,
    ApprovalRules,
    Policy,
    PrivacyUnit,
    ProjectPolicy,
    QueryLimits,
)

__all__ = [
    "CheckResult",
    "PolicyChange",
    "PolicyProblem",
    "check_policy_file",
    "check_policy_text",
    "diff_policies",
    "render_policy_markdown",
]


@dataclass(frozen=True)
class PolicyProblem:
    """One reason a policy cannot be used, with the 1-based YAML line it concerns."""

    line: int | None
    where: str
    message: str

    def __str__(self) -> str:
        at = f"line {self.line}" if self.line is not None else "file"
        return f"{at}: {self.where}: {self.message}" if self.where else f"{at}: {self.message}"


@dataclass
class CheckResult:
    """The outcome of checking one policy text: the policy, or every problem found."""

    source: str
    policy: Policy | None = None
    problems: list[PolicyProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the policy is valid (and so may be put in force)."""
        return self.policy is not None and not self.problems

    def explain(self) -> str:
        """Human-readable report, one problem per line, ``file:line: where: what``."""
        if self.ok:
            assert self.policy is not None
            p = self.policy
            return (
                f"{self.source}: OK: site {p.site}, {len(p.projects)} project(s), "
                f"{len(p.fields)} field(s), policy version {p.version}"
            )
        lines = [
            f"{self.source}:{p.line}: {p.where + ': ' if p.where else ''}{p.message}"
            if p.line is not None
            else f"{self.source}: {p.where + ': ' if p.where else ''}{p.message}"
            for p in self.problems
        ]
        lines.append(f"{len(self.problems)} problem(s); the policy cannot be used")
        return "\n".join(lines)


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _duplicate_keys(node: yaml.Node, path: tuple[str, ...] = ()) -> list[PolicyProblem]:
    """YAML silently keeps the last of two equal keys; in a policy that hides an edit."""
    problems: list[PolicyProblem] = []
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            name = str(key.value)
            if name in first:
                problems.append(
                    PolicyProblem(
                        _line(key),
                        ".".join((*path, name)),
                        f"duplicate key (first at line {first[name]}); YAML would keep only "
                        "the last one",
                    )
                )
            else:
                first[name] = _line(key)
            problems += _duplicate_keys(value, (*path, name))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            problems += _duplicate_keys(item, (*path, str(i)))
    return problems


def _locate(root: yaml.Node, loc: tuple[int | str, ...], message: str) -> int:
    """The line of the node ``loc`` names (or of the deepest ancestor that exists).

    A missing key points at its parent mapping. When the node found is a mapping
    or a list and the message names one of its keys or quotes one of its items,
    the line of that key or item is more useful, so it wins.
    """
    node = root
    line = _line(root)
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if str(k.value) == str(part)), None)
            if match is None:
                break
            line, node = _line(match[0]), match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if not 0 <= part < len(node.value):
                break
            node = node.value[part]
            line = _line(node)
        else:
            break
    else:
        if isinstance(node, yaml.MappingNode):
            named = [
                (m.start(), _line(key))
                for key, _value in node.value
                if (m := re.search(rf"\b{re.escape(str(key.value))}\b", message))
            ]
            if named:
                return min(named)[1]  # the key the message names first
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                if isinstance(item, yaml.ScalarNode) and f"'{item.value}'" in message:
                    return _line(item)
    return line


_TOP_RULES: list[tuple[re.Pattern[str], typing.Callable[[re.Match[str]], tuple[str, ...]]]] = [
    (re.compile(r"^aggregate\.min_cell"), lambda m: ("aggregate", "min_cell")),
    (
        re.compile(r"^project '([^']+)': (\w+)"),
        lambda m: ("projects", m.group(1), m.group(2)),
    ),
]


def _refine(loc: tuple[int | str, ...], message: str) -> tuple[int | str, ...]:
    """Whole-policy rules name their key in the message; point at it, not at line 1."""
    if loc:
        return loc
    for pattern, to_loc in _TOP_RULES:
        m = pattern.search(message)
        if m:
            return to_loc(m)
    return loc


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The policy model that owns the mapping at ``loc`` (for "allowed keys" hints)."""
    model: type[BaseModel] = Policy
    i = 0
    while i < len(loc):
        info = model.model_fields.get(str(loc[i]))
        if info is None:
            return None
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model, i = ann, i + 1
        elif get_origin(ann) is dict:
            inner = get_args(ann)[1]
            if not (isinstance(inner, type) and issubclass(inner, BaseModel)):
                return None
            model, i = inner, i + 2
        else:
            return None
    return model


def _message(err: Any) -> str:
    msg = str(err["msg"]).removeprefix("Value error, ")
    loc = tuple(err["loc"])
    if err["type"] == "extra_forbidden":
        owner = _model_at(loc[:-1])
        if owner is not None:
            msg += f" (allowed here: {', '.join(owner.model_fields)})"
    elif err["type"] == "missing":
        msg = "required key is missing"
    return msg


def check_policy_text(
    text: str, *, source: str = "<policy>", site: str | None = None
) -> CheckResult:
    """Validate a policy's YAML text; every problem carries its line.

    Args:
        text: The YAML document.
        source: A name for messages (usually the file path).
        site: If given, the policy must be for this site (a node reloading its file).
    """
    result = CheckResult(source=source)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = int(mark.line) + 1 if mark is not None else None
        result.problems.append(PolicyProblem(line, "", f"not valid YAML: {err.problem}"))
        return result
    if root is None or not isinstance(root, yaml.MappingNode):
        line = _line(root) if root is not None else 1
        result.problems.append(PolicyProblem(line, "", "a policy is a YAML mapping (key: value)"))
        return result
    result.problems += _duplicate_keys(root)
    data = yaml.safe_load(text)
    try:
        policy = Policy.model_validate(data)
    except ValidationError as err:
        for e in err.errors():
            msg = _message(e)
            loc = _refine(tuple(e["loc"]), msg)
            where = ".".join(str(p) for p in loc)
            result.problems.append(PolicyProblem(_locate(root, loc, msg), where, msg))
        result.problems.sort(key=lambda p: (p.line or 0, p.where))
        return result
    if site is not None and policy.site != site:
        line = next((_line(k) for k, _ in root.value if k.value == "site"), 1)
        result.problems.append(
            PolicyProblem(line, "site", f"policy is for site {policy.site!r}, not {site!r}")
        )
    if not result.problems:
        result.policy = policy
    return result


def check_policy_file(path: Path, *, site: str | None = None) -> CheckResult:
    """Read and check ``path`` (a missing or unreadable file is a problem, not a crash)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        return CheckResult(str(path), problems=[PolicyProblem(None, "", f"cannot read: {err}")])
    return check_policy_text(text, source=str(path), site=site)


# --- diff ---------------------------------------------------------------------------------------

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


def render_diff(old: Policy, new: Policy) -> str:
    """The diff as text: one change per line, then totals (epsilon budget, exposure)."""
    changes = diff_policies(old, new)
    if not changes:
        return "no change in effect (budgets and exposure identical)"
    total_old = sum(p.epsilon_budget for p in old.projects.values())
    total_new = sum(p.epsilon_budget for p in new.projects.values())
    more = sum(1 for c in changes if c.effect == "more")
    less = sum(1 for c in changes if c.effect == "less")
    lines = [str(c) for c in changes]
    lines.append(
        f"total epsilon budget over all projects: {total_old:g} -> {total_new:g} "
        f"({total_new - total_old:+g})"
    )
    lines.append(
        f"exposure: {more} change(s) let more leave the site, {less} let less leave "
        "(+ more, - less, ~ neither)"
    )
    return "\n".join(lines)


# --- schema documentation -----------------------------------------------------------------------

_DOC_MODELS: list[tuple[str, type[BaseModel]]] = [
    ("(top level)", Policy),
    ("privacy_unit", PrivacyUnit),
    ("projects.<name>", ProjectPolicy),
    ("aggregate", AggregateMode),
    ("approvals", ApprovalRules),
    ("limits", QueryLimits),
]


def _type_name(ann: Any) -> str:
    origin = get_origin(ann)
    if origin is Literal:
        return " \\| ".join(f"`{a}`" for a in get_args(ann))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(ann))
    if origin is list:
        return f"list of {_type_name(get_args(ann)[0])}"
    if origin is dict:
        return f"mapping name -> {_type_name(get_args(ann)[1])}"
    if ann is type(None):
        return "null"
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        key = next(k for k, m in _DOC_MODELS if m is ann)
        return f"[{key}](#{re.sub(r'[^a-z0-9]+', '', key)})"
    return getattr(ann, "__name__", str(ann))


def _constraints(info: FieldInfo) -> str:
    out = []
    for m in info.metadata:
        for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            v = getattr(m, attr, None)
            if v is not None:
                out.append(f"{sym} {v}")
        for attr in ("pattern", "max_length", "min_length"):
            v = getattr(m, attr, None)
            if v is not None:
                out.append(f"{attr} `{v}`")
    return ", ".join(out)


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "**required**"
    value = info.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "(defaults below)"
    if value is None:
        return "`null`"
    return f"`{value!r}`"


def render_policy_markdown() -> str:
    """``docs/POLICY.md``: every policy key with type, default, limits and meaning."""
    lines = [
        "# Site policy schema",
        "",
        "Generated from `nodes/policy.py` by `varde policy schema`; do not edit by hand.",
        "A policy is one YAML file per site (`policies/<site>.yaml`). Unknown keys are errors;",
        "a missing file denies everything. Check a file with `varde policy check FILE` and",
        "compare two versions with `varde policy diff OLD NEW`. A running node reloads a",
        "changed file by itself; an invalid file is refused (and audited) and the old policy",
        "stays in force.",
        "",
        "Outside `profile: development`, these are refused: `aggregate.min_cell` below "
        f"{SAFE_MIN_CELL} with",
        f"aggregates allowed, and any `max_epsilon_per_query` above {SAFE_MAX_EPSILON_PER_QUERY}.",
    ]
    for key, model in _DOC_MODELS:
        anchor_title = key
        lines += ["", f"## {anchor_title}", "", (model.__doc__ or "").strip().splitlines()[0], ""]
        lines += ["| key | type | default | limits | meaning |", "|---|---|---|---|---|"]
        for name, info in model.model_fields.items():
            lines.append(
                f"| `{name}` | {_type_name(info.annotation)} | {_default(info)} | "
                f"{_constraints(info)} | {info.description or ''} |"
            )
    return "\n".join(lines) + "\n"


# --- edits that keep the file's comments ----------------------------------------------------------


def set_scalar(text: str, path: tuple[str, ...], value: str) -> str:
    """``text`` with the scalar at ``path`` replaced by ``value``, everything else untouched.

    Why not load, change and dump: the file is the staff's, with their comments
    and order; an edit from the console must change one number, not the file.
    Raises ``KeyError`` when ``path`` does not name an existing scalar.
    """
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    node: yaml.Node | None = root
    for part in path:
        if not isinstance(node, yaml.MappingNode):
            raise KeyError(".".join(path))
        node = next((v for k, v in node.value if str(k.value) == part), None)
    if not isinstance(node, yaml.ScalarNode):
        raise KeyError(".".join(path))
    start, end = node.start_mark.index, node.end_mark.index
    return text[:start] + value + text[end:]
