"""The policy schema as Markdown (``docs/POLICY.md``), generated from the pydantic model.

Why generated: the documentation of every key must come from the same model
that enforces it (:mod:`nodes.policy`), so types, defaults, limits and meanings
cannot drift from what a node actually accepts; a test compares the committed
file with :func:`render_policy_markdown`.
"""

from __future__ import annotations

import re
import types
import typing
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from nodes.policy import (
    SAFE_MAX_EPSILON_PER_QUERY,
    SAFE_MIN_CELL,
    AggregateMode,
    ApprovalRules,
    ConsoleRules,
    Policy,
    PrivacyUnit,
    ProjectPolicy,
    QueryLimits,
)
from varde.study_fields import StudyField

__all__ = ["render_policy_markdown"]

_DOC_MODELS: list[tuple[str, type[BaseModel]]] = [
    ("(top level)", Policy),
    ("privacy_unit", PrivacyUnit),
    ("projects.<name>", ProjectPolicy),
    ("projects.<name>.study_fields[]", StudyField),
    ("aggregate", AggregateMode),
    ("approvals", ApprovalRules),
    ("limits", QueryLimits),
    ("console", ConsoleRules),
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
