r"""Staff edits of the policy file: one change, validated, written atomically, audited.

Why a module: the policy file is the source of truth (issue 5), so a decision
staff make in the console or with the CLI that changes what may leave the site
(a project's budget, approving a project) must become a **new policy version**
in that file, not a row beside it. Both front ends go through
:func:`write_policy_version`, so both get exactly ``varde policy check``'s
validation (errors with their line), the same atomic replace (the node's
reloader never reads half a file) and the same audit entry.

The edits themselves change the staff's file as little as possible: comments,
order and layout stay (``set_scalar`` replaces one scalar; ``approve_project``
adds one name to ``approvals.approved_projects``).

>>> text = "site: oslo\napprovals:\n  new_projects: true   # staff decide\n"
>>> print(approve_project(text, "nsclc"), end="")
site: oslo
approvals:
  approved_projects: [nsclc]
  new_projects: true   # staff decide
>>> print(approve_project(approve_project(text, "nsclc"), "breast"), end="")
site: oslo
approvals:
  approved_projects: [nsclc, breast]
  new_projects: true   # staff decide
>>> approve_project(approve_project(text, "nsclc"), "nsclc") == approve_project(text, "nsclc")
True
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from nodes.policy import Policy
from nodes.policy_check import check_policy_text
from nodes.store import NodeStore
from varde.budget import ZCDP, Budget

__all__ = [
    "PolicyEditError",
    "approve_project",
    "record_project_approval",
    "set_budget",
    "set_scalar",
    "write_policy_version",
]


class PolicyEditError(ValueError):
    """The edit cannot be made, or the edited policy does not validate (message says why)."""


def _mapping_value(node: yaml.Node, key: str) -> yaml.Node | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    return next((v for k, v in node.value if str(k.value) == key), None)


def _flow_list(names: list[str]) -> str:
    # json.dumps quotes only what YAML would misread; plain names stay plain
    plain = all(n.replace("-", "").replace("_", "").isalnum() for n in names)
    return "[" + ", ".join(n if plain else json.dumps(n) for n in names) + "]"


def approve_project(text: str, project: str) -> str:
    """``text`` with ``project`` added to ``approvals.approved_projects`` (kept if present).

    The list is written in flow style where it is (re)written; an ``approvals``
    section is added at the end of the file when there is none.
    """
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if not isinstance(root, yaml.MappingNode):
        raise PolicyEditError("the policy file is not a YAML mapping")
    approvals = _mapping_value(root, "approvals")
    if approvals is None:
        tail = "" if text.endswith("\n") or not text else "\n"
        return text + tail + f"approvals:\n  approved_projects: {_flow_list([project])}\n"
    if not isinstance(approvals, yaml.MappingNode):
        raise PolicyEditError("approvals: is not a mapping; edit the file by hand")
    listed = _mapping_value(approvals, "approved_projects")
    if listed is None:
        if approvals.flow_style or not approvals.value:
            raise PolicyEditError("approvals: is written inline; edit the file by hand")
        first_key = approvals.value[0][0]
        line_start = first_key.start_mark.index - first_key.start_mark.column
        indent = " " * first_key.start_mark.column
        entry = f"{indent}approved_projects: {_flow_list([project])}\n"
        return text[:line_start] + entry + text[line_start:]
    if not isinstance(listed, yaml.SequenceNode):
        raise PolicyEditError("approvals.approved_projects is not a list; edit the file by hand")
    names = [str(item.value) for item in listed.value]
    if project in names:
        return text
    start, end = listed.start_mark.index, listed.end_mark.index
    if not listed.flow_style:  # a block list ends at the next line's start: keep that newline
        end = listed.value[-1].end_mark.index if listed.value else start
    return text[:start] + _flow_list([*names, project]) + text[end:]


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


def budget_key(budget: Budget) -> str:
    """The policy key that holds a project's budget in ``budget``'s measure."""
    return "rho_budget" if isinstance(budget, ZCDP) else "epsilon_budget"


def set_budget(text: str, project: str, budget: Budget) -> str:
    """``text`` with the project's budget in ``budget``'s measure set to it."""
    key = budget_key(budget)
    try:
        return set_scalar(text, ("projects", project, key), repr(budget.amount))
    except KeyError as err:
        raise PolicyEditError(f"project {project!r} has no {key} in the file") from err


def write_policy_version(
    path: Path,
    edit: Callable[[str], str],
    *,
    site: str | None,
    store: NodeStore,
    user: str,
    via: str,
    project: str,
    change: dict[str, Any],
    saved: Callable[[], object] | None = None,
) -> Policy:
    """Apply ``edit`` to the policy file, validate, replace atomically, audit; return the policy.

    Nothing is written when the edit fails or the result does not validate
    (:class:`PolicyEditError` carries ``varde policy check``'s explanation).
    ``saved`` is called afterwards (the node passes its reloader, so the new
    version is in force at once; a separate CLI process relies on the node's
    file watcher instead).
    """
    old_text = path.read_text()
    new_text = edit(old_text)
    result = check_policy_text(new_text, source=str(path), site=site)
    if not result.ok or result.policy is None:
        raise PolicyEditError(result.explain())
    tmp = path.with_name(path.name + f".{via}-tmp")
    tmp.write_text(new_text)
    os.replace(tmp, path)  # atomic: the node never reads half a file
    store.audit(
        f"{via}_policy_edit",
        project=project,
        user=user,
        version=result.policy.version,
        **change,
    )
    if saved is not None:
        saved()
    return result.policy


def record_project_approval(
    path: Path,
    *,
    project: str,
    request_id: str,
    site: str | None,
    store: NodeStore,
    user: str,
    via: str,
    saved: Callable[[], object] | None = None,
) -> Policy:
    """Write staff's approval of ``project`` (request ``request_id``) as a new policy version.

    The console and ``varde node approve --policy`` both call this *before*
    recording the decision, so a policy that would not validate leaves the
    request pending and the file untouched.
    """
    return write_policy_version(
        path,
        lambda text: approve_project(text, project),
        site=site,
        store=store,
        user=user,
        via=via,
        project=project,
        change={"key": "approvals.approved_projects", "request": request_id},
        saved=saved,
    )
