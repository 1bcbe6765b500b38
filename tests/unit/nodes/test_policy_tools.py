"""Policies as code: each problem with its YAML line, diffs in terms of exposure, generated docs."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from launcher.network import DEFAULT_POLICIES
from nodes.cli import policy_app
from nodes.policy import Policy
from nodes.policy_check import check_policy_file, check_policy_text, load_policy
from nodes.policy_diff import diff_policies, render_diff
from nodes.policy_docs import render_policy_markdown

runner = CliRunner()

BASE = """\
site: oslo
profile: production
privacy_unit:
  max_tumours_per_patient: 3
fields: [sex, age_at_diagnosis, stage]
statistics: [count, sum]
projects:
  p1:
    epsilon_budget: 10.0
    max_epsilon_per_query: 1.0
  p2:
    epsilon_budget: 5.0
    max_epsilon_per_query: 0.5
aggregate:
  allowed: true
  min_cell: 10
"""


def _edit(old: str, new: str) -> str:
    assert old in BASE
    return BASE.replace(old, new)


def test_base_is_valid() -> None:
    result = check_policy_text(BASE)
    assert result.ok, result.explain()
    assert result.policy is not None and set(result.policy.projects) == {"p1", "p2"}


@pytest.mark.parametrize(
    ("text", "line", "where", "message"),
    [
        (_edit("profile: production", "profle: production"), 2, "profle", "allowed here: site,"),
        (
            _edit("  max_tumours_per_patient: 3", "  max_tumours_per_patient: 0"),
            4,
            "privacy_unit.max_tumours_per_patient",
            "greater than or equal to 1",
        ),
        (
            _edit("[sex, age_at_diagnosis, stage]", "[sex, shoe_size, stage]"),
            5,
            "fields",
            "unknown field 'shoe_size'",
        ),
        (
            _edit("[sex, age_at_diagnosis, stage]", "[sex, patient_id]"),
            5,
            "fields",
            "identifier and can never be exposed",
        ),
        (_edit("[count, sum]", "[count, median]"), 6, "statistics.1", "'count'"),
        (
            _edit("    epsilon_budget: 5.0", "    epsilon_budget: -5"),
            12,
            "projects.p2.epsilon_budget",
            "greater than or equal to 0",
        ),
        (
            _edit("    max_epsilon_per_query: 0.5", "    max_epsilon_per_query: 6"),
            13,
            "projects.p2",
            "exceeds the whole epsilon_budget",
        ),
        (
            _edit(
                "    epsilon_budget: 10.0\n    max_epsilon_per_query: 1.0",
                "    epsilon_budget: 100.0\n    max_epsilon_per_query: 9.0",
            ),
            10,
            "projects.p1.max_epsilon_per_query",
            "only a 'development' profile",
        ),
        (_edit("  min_cell: 10", "  min_cell: 2"), 16, "aggregate.min_cell", "below 5"),
        (
            _edit(
                "  p2:\n    epsilon_budget: 5.0\n",
                "  p2:\n    budget: 1\n    epsilon_budget: 5.0\n",
            ),
            12,
            "projects.p2.budget",
            "allowed here: epsilon_budget, max_epsilon_per_query",
        ),
        (
            _edit("  p2:\n    epsilon_budget: 5.0\n", "  p2:\n"),
            11,
            "projects.p2.epsilon_budget",
            "required key is missing",
        ),
        (_edit("site: oslo", "site: Oslo Hospital"), 1, "site", "should match pattern"),
        (
            _edit("  min_cell: 10", "  min_cell: 10\n  min_cell: 20"),
            17,
            "aggregate.min_cell",
            "duplicate key (first at line 16)",
        ),
        (_edit("statistics: [count, sum]", "statistics: [count, sum"), 7, "", "not valid YAML"),
        ("- just\n- a list\n", 1, "", "a policy is a YAML mapping"),
    ],
)
def test_invalid_policies_say_where_and_why(text: str, line: int, where: str, message: str) -> None:
    result = check_policy_text(text)
    assert not result.ok
    first = result.problems[0]
    assert (first.line, first.where) == (line, where), result.explain()
    assert message in first.message


def test_every_problem_is_reported_not_just_the_first() -> None:
    text = _edit("profile: production", "profle: production")
    text = text.replace("  min_cell: 10", "  min_cell: zero")
    result = check_policy_text(text, source="p.yaml")
    assert [(p.line, p.where) for p in result.problems] == [
        (2, "profle"),
        (16, "aggregate.min_cell"),
    ]
    report = result.explain()
    assert report.startswith("p.yaml:2: profle: Extra inputs are not permitted")
    assert "p.yaml:16: aggregate.min_cell: Input should be a valid integer" in report
    assert report.endswith("2 problem(s); the policy cannot be used")


def test_site_must_match_when_a_node_reloads() -> None:
    result = check_policy_text(BASE, site="bergen")
    assert not result.ok
    assert str(result.problems[0]) == "line 1: site: policy is for site 'oslo', not 'bergen'"


def test_load_policy_errors_carry_lines(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(_edit("  min_cell: 10", "  min_cell: 2"))
    with pytest.raises(ValueError, match=r"line 16: aggregate.min_cell: .*below 5"):
        load_policy(path)


@pytest.mark.parametrize("site", ["oslo", "bergen", "trondheim"])
def test_demo_policies_check_clean(site: str) -> None:
    assert check_policy_file(DEFAULT_POLICIES / f"{site}.yaml", site=site).ok


def _policy(text: str) -> Policy:
    result = check_policy_text(text)
    assert result.policy is not None, result.explain()
    return result.policy


def test_diff_names_budget_and_exposure_changes() -> None:
    new = _edit("    epsilon_budget: 10.0", "    epsilon_budget: 12.0")
    new = new.replace("[sex, age_at_diagnosis, stage]", "[sex, stage, grade]")
    new = new.replace("  p2:\n    epsilon_budget: 5.0\n    max_epsilon_per_query: 0.5\n", "")
    new = new.replace("  min_cell: 10", "  min_cell: 20")
    new += "  p3:\n    epsilon_budget: 2.0\n    max_epsilon_per_query: 0.2\n"
    new = new.replace("aggregate:\n", "aggregate:\n", 1)
    changes = [str(c) for c in diff_policies(_policy(BASE), _policy(_fix_p3(new)))]
    assert changes == [
        "+ fields: fields exposed added: grade",
        "- fields: fields exposed removed: age_at_diagnosis",
        "+ projects.p3: project added: budget 2, max 0.2 per query",
        "- projects.p2: project removed: no longer served (ledger kept)",
        "+ projects.p1.epsilon_budget: 10 -> 12 (+2)",
        "- aggregate.min_cell: 10 -> 20 (+10)",
    ]
    text = render_diff(_policy(BASE), _policy(_fix_p3(new)))
    assert "total epsilon budget over all projects: 15 -> 14 (-1)" in text
    assert "exposure: 3 change(s) let more leave the site, 3 let less leave" in text


def _fix_p3(text: str) -> str:
    """Move the appended p3 block under projects (YAML order matters for the test only)."""
    block = "  p3:\n    epsilon_budget: 2.0\n    max_epsilon_per_query: 0.2\n"
    text = text.replace(block, "")
    return text.replace("aggregate:\n", block + "aggregate:\n")


def test_diff_of_identical_policies() -> None:
    assert render_diff(_policy(BASE), _policy(BASE)).startswith("no change in effect")


def test_diff_aggregate_mode_and_researchers() -> None:
    new = _edit(
        "    max_epsilon_per_query: 0.5\n",
        "    max_epsilon_per_query: 0.5\n    aggregate_mode: true\n    researchers: [alice]\n",
    )
    changes = [str(c) for c in diff_policies(_policy(BASE), _policy(new))]
    assert changes == [
        "- projects.p2.researchers: now only alice",
        "+ projects.p2.aggregate_mode: non-DP aggregates allowed",
    ]


def test_cli_check_and_diff(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(BASE)
    bad.write_text(_edit("  min_cell: 10", "  min_cell: 2"))
    res = runner.invoke(policy_app, ["check", str(good)])
    assert res.exit_code == 0 and "OK: site oslo, 2 project(s)" in res.output
    res = runner.invoke(policy_app, ["check", str(bad)])
    assert res.exit_code == 1
    assert f"{bad}:16: aggregate.min_cell:" in res.output
    res = runner.invoke(policy_app, ["check", str(tmp_path / "absent.yaml")])
    assert res.exit_code == 1 and "cannot read" in res.output
    newer = tmp_path / "newer.yaml"
    newer.write_text(_edit("    epsilon_budget: 5.0", "    epsilon_budget: 4.0"))
    res = runner.invoke(policy_app, ["diff", str(good), str(newer)])
    assert res.exit_code == 0
    assert "- projects.p2.epsilon_budget: 5 -> 4 (-1)" in res.output
    res = runner.invoke(policy_app, ["diff", str(good), str(bad)])
    assert res.exit_code == 2


def test_policy_doc_is_generated_from_the_model() -> None:
    doc = Path(__file__).resolve().parents[3] / "docs" / "POLICY.md"
    assert doc.read_text() == render_policy_markdown(), "run: varde policy schema > docs/POLICY.md"
    for name in Policy.model_fields:
        assert f"`{name}`" in doc.read_text()


def test_diff_reports_keys_without_a_dedicated_rule() -> None:
    """Every project key the model has is compared, so a new key is never silently ignored."""
    old = _policy(BASE)
    p1 = old.projects["p1"]
    extra = [
        n
        for n in type(p1).model_fields
        if n not in {"epsilon_budget", "max_epsilon_per_query", "researchers", "aggregate_mode"}
    ]
    for name in extra:
        value = getattr(p1, name)
        if isinstance(value, float) and not isinstance(value, bool):
            changed = old.model_copy(
                update={"projects": {**old.projects, "p1": p1.model_copy(update={name: value + 1})}}
            )
            (change,) = diff_policies(old, changed)
            assert change.where == f"projects.p1.{name}"
