"""Read a query document for ``varde query FILE``: JSON or YAML, from a file or stdin.

Why strict: a query spends privacy budget, so a document that only *looks*
right must not be sent. A duplicated key (JSON and YAML both keep the last one
silently) is refused, and YAML's implicit dates stay strings, as the query
language wants them (``diagnosis_date: 2020-01-01`` would otherwise become a
date object that is not JSON). Every error names the source, the line and the
column, and says what to fix.

The format follows the name: ``.json`` is JSON, ``.yaml``/``.yml`` YAML; a
name without either (stdin, ``-``) is JSON when it starts with ``{`` or ``[`` and YAML
otherwise, so a JSON document is never read by YAML's laxer rules (which
accept a trailing comma).

>>> parse_query_text("{project: lung, statistic: {kind: count}}", name="q.yaml")
{'project': 'lung', 'statistic': {'kind': 'count'}}
>>> try:
...     parse_query_text('{"project": "lung",}', name="q.json")
... except QueryFileError as err:
...     print(str(err).split(" — ")[0])
q.json: not valid JSON: Expecting property name enclosed in double quotes at line 1 column 20
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Literal

import yaml

Format = Literal["json", "yaml"]


class QueryFileError(ValueError):
    """The query document cannot be read: the message names where and what to fix."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} appears twice in one object")
        out[key] = value
    return out


class _QueryLoader(yaml.SafeLoader):
    """Safe YAML without implicit timestamps, refusing a key given twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_QueryLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def format_of(name: str, text: str) -> Format:
    """``json`` or ``yaml`` for a document called ``name`` (see the module doc)."""
    suffix = Path(name).suffix.lower()
    if suffix == ".json":
        return "json"
    if suffix in (".yaml", ".yml"):
        return "yaml"
    return "json" if text.lstrip()[:1] in ("{", "[") else "yaml"


def _json(text: str, name: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as err:
        raise QueryFileError(
            f"{name}: not valid JSON: {err.msg} at line {err.lineno} column {err.colno} — "
            "fix the JSON (double-quoted keys, no trailing commas)"
        ) from None
    except ValueError as err:  # a duplicate key
        raise QueryFileError(f"{name}: {err} — give each key once") from None


def _yaml(text: str, name: str) -> Any:
    try:
        return yaml.load(text, Loader=_QueryLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = err.problem or err.context or "unreadable"
        raise QueryFileError(
            f"{name}: not valid YAML: {problem}{where} — fix the YAML (indent with spaces; "
            "quote values that start with > or contain ': ')"
        ) from None
    except yaml.YAMLError as err:
        raise QueryFileError(f"{name}: not valid YAML: {err} — fix the YAML") from None


def parse_query_text(text: str, *, name: str, fmt: Format | None = None) -> dict[str, Any]:
    """The query document in ``text`` as a dict (not yet validated as a query)."""
    if not text.strip():
        raise QueryFileError(f"{name} is empty — give a query document (JSON or YAML)")
    kind = fmt or format_of(name, text)
    data = _json(text, name) if kind == "json" else _yaml(text, name)
    if not isinstance(data, dict):
        raise QueryFileError(
            f"{name}: a query is one {kind.upper()} object with project, statistic and privacy, "
            f"not a {type(data).__name__}"
        )
    return data


def read_query_file(source: str) -> dict[str, Any]:
    """The query document at path ``source``, or on stdin for ``-``."""
    if source == "-":
        return parse_query_text(sys.stdin.read(), name="stdin")
    path = Path(source)
    if path.is_dir():
        raise QueryFileError(f"{source} is a directory — give the query file in it")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise QueryFileError(f"no such file: {source} — check the path") from None
    except UnicodeDecodeError:
        raise QueryFileError(f"{source} is not UTF-8 text — save the query as UTF-8") from None
    return parse_query_text(text, name=source)
