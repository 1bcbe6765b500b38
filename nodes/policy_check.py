"""Check a policy file line by line, and load the one a node runs with.

Why: the people who edit ``policies/<site>.yaml`` are registry staff, not
programmers. A refusal must say *where* (the YAML line) and *what to do*
(allowed keys, the rule broken), whether it comes from ``varde policy check``,
the node's reloader, a console edit or a node starting up. So the loader
(:func:`load_policy`) lives here with the checker it reports through, and the
model in :mod:`nodes.policy` stays a model that imports neither.

Line numbers come from the YAML node tree (``yaml.compose``), which keeps each
node's position; a pydantic error location (``projects.p1.epsilon_budget``)
is walked down that tree to the node it names.
"""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from nodes.policy import Policy

__all__ = [
    "CheckResult",
    "PolicyError",
    "PolicyProblem",
    "check_policy_file",
    "check_policy_text",
    "load_policy",
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


class PolicyError(ValueError):
    """A policy file that cannot be used; the message names file, key and problem."""


def load_policy(path: Path, *, site: str | None = None) -> Policy:
    """Read and validate ``path``; a missing file means :meth:`Policy.deny_all`.

    ``site`` is required to build the deny-all policy when the file is missing.
    """
    if not path.exists():
        if site is None:
            raise PolicyError(f"{path}: no such policy file (and no site name to deny all for)")
        return Policy.deny_all(site)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise PolicyError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise PolicyError(f"{path}: a policy is a YAML mapping")
    try:
        policy = Policy.model_validate(data)
    except ValidationError as err:
        located = check_policy_text(path.read_text(), source=str(path)).problems
        problems = "; ".join(str(p) for p in located) or "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in err.errors()
        )
        raise PolicyError(f"{path}: {problems}") from err
    if site is not None and policy.site != site:
        raise PolicyError(f"{path}: policy is for site {policy.site!r}, not {site!r}")
    return policy
