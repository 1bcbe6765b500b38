"""Read a site's mapping file; every problem names its YAML line, like ``varde policy check``.

Why the policy checker's machinery: staff edit both files, and a refusal must
point at the line in the same words. Line numbers come from the YAML node tree
(:func:`nodes.policy_check._locate`); duplicate keys are refused as in policies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from nodes.mapping.model import RULE_TAGS, SiteMapping
from nodes.policy_check import PolicyProblem, _duplicate_keys, _line, _locate

__all__ = ["MappingError", "check_mapping_text", "load_mapping", "mapping_problems"]


class MappingError(ValueError):
    """A mapping file, source or data that cannot be used; the message names what and where."""


_SOURCE_KINDS = ("csv", "parquet", "sql", "omop")


def _clean(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """The error's location as keys of the file (without pydantic's union tags)."""
    parts = [p for p in loc if p not in RULE_TAGS]
    if len(parts) > 1 and parts[0] == "source" and parts[1] in _SOURCE_KINDS:
        del parts[1]
    return tuple(parts)


def _allowed(loc: tuple[int | str, ...]) -> str:
    """The keys allowed in the mapping at pydantic's ``loc`` (walks the models), or ``""``."""
    from nodes.mapping import model as m

    kinds: dict[str, type[BaseModel]] = {
        "csv": m.FileSource,
        "parquet": m.FileSource,
        "sql": m.SqlSource,
        "omop": m.OmopSource,
        "<column>": m.ColumnRule,
        "<constant>": m.ConstantRule,
    }
    owner: type[BaseModel] | None = None
    if not loc:
        owner = SiteMapping
    elif loc[0] in ("source", "fields") and len(loc) == 2 + (loc[0] == "fields"):
        owner = kinds.get(str(loc[-1]))
    elif loc[0] == "inputs" and len(loc) == 2:
        owner = m.ColumnRule
    elif loc[0] == "study_fields" and len(loc) == 2:
        owner = m.StudyField
    if owner is None:
        return ""
    return ", ".join(info.alias or name for name, info in owner.model_fields.items())


def _message(err: Any) -> str:
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        allowed = _allowed(tuple(err["loc"][:-1]))
        if allowed:
            msg += f" (allowed here: {allowed})"
    elif err["type"] == "missing":
        msg = "required key is missing"
    return msg


def mapping_problems(text: str) -> tuple[SiteMapping | None, list[PolicyProblem]]:
    """Validate mapping text: the mapping, or every problem with its line."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = int(mark.line) + 1 if mark is not None else None
        return None, [PolicyProblem(line, "", f"not valid YAML: {err.problem}")]
    if root is None or not isinstance(root, yaml.MappingNode):
        line = _line(root) if root is not None else 1
        return None, [PolicyProblem(line, "", "a mapping file is a YAML mapping (key: value)")]
    problems = _duplicate_keys(root)
    try:
        mapping = SiteMapping.model_validate(yaml.safe_load(text))
    except ValidationError as err:
        for e in err.errors():
            msg = _message(e)
            loc = _clean(tuple(e["loc"]))
            where = ".".join(str(p) for p in loc)
            problems.append(PolicyProblem(_locate(root, loc, msg), where, msg))
        problems.sort(key=lambda p: (p.line or 0, p.where))
        return None, problems
    return (mapping if not problems else None), problems


def check_mapping_text(text: str, *, source: str = "<mapping>") -> SiteMapping:
    """The mapping in ``text``, or :class:`MappingError` listing every ``source:line: problem``."""
    mapping, problems = mapping_problems(text)
    if mapping is None:
        lines = [
            f"{source}:{p.line}: {p.where + ': ' if p.where else ''}{p.message}"
            if p.line is not None
            else f"{source}: {p.message}"
            for p in problems
        ]
        raise MappingError("\n".join(lines))
    return mapping


def load_mapping(path: Path) -> SiteMapping:
    """Read and validate the mapping file at ``path``.

    Raises:
        MappingError: The file is missing, unreadable, not YAML, or breaks a rule
            (each problem with its line and key).
    """
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise MappingError(f"{path}: cannot read mapping file: {err}") from err
    return check_mapping_text(text, source=str(path))
