"""``varde policy diff --state-dir``: each budget change shows what is already spent beside it."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from launcher.network import DEFAULT_POLICIES
from nodes.cli import policy_app
from nodes.ledger import Ledger
from varde.budget import PureDP

runner = CliRunner()


def _files(tmp_path: Path) -> tuple[Path, Path]:
    old = tmp_path / "old.yaml"
    old.write_text((DEFAULT_POLICIES / "oslo.yaml").read_text())
    new = tmp_path / "new.yaml"
    text = old.read_text()
    new.write_text(
        text.replace("epsilon_budget: 10.0", "epsilon_budget: 3.0").replace(
            "epsilon_budget: 5.0", "epsilon_budget: 6.0"
        )
    )
    return old, new


def test_diff_shows_spent_and_warns_below_it(tmp_path: Path) -> None:
    old, new = _files(tmp_path)
    state = tmp_path / "state"
    state.mkdir()
    ledger = Ledger.in_directory(state)
    for i, amount in enumerate([1.0, 1.0, 1.0, 0.5, 0.71]):
        ledger.charge(
            project="nsclc-feasibility", cost=PureDP(amount), total=PureDP(10.0), query_id=f"q{i}"
        )
    ledger.charge(project="breast-outcomes", cost=PureDP(0.5), total=PureDP(5.0), query_id="b")
    ledger.close()
    res = runner.invoke(policy_app, ["diff", str(old), str(new), "--state-dir", str(state)])
    assert res.exit_code == 0, res.output
    lines = {line.split(":")[0]: line for line in res.output.splitlines()}
    lung = lines["- projects.nsclc-feasibility.epsilon_budget"]
    assert lung.startswith("- projects.nsclc-feasibility.epsilon_budget: 10 -> 3 (-7); ")
    assert "spent 4.21 epsilon in period lifetime: the new budget is BELOW what is spent" in lung
    assert "nothing left for good (a lifetime budget never renews)" in lung
    breast = lines["+ projects.breast-outcomes.epsilon_budget"]
    assert breast.endswith("5 -> 6 (+1); spent 0.5 epsilon in period lifetime, 5.5 left under "
                           "the new budget")  # fmt: skip
    # without the state directory: the plain diff, as before
    plain = runner.invoke(policy_app, ["diff", str(old), str(new)])
    assert plain.exit_code == 0 and "spent" not in plain.output
    missing = runner.invoke(
        policy_app, ["diff", str(old), str(new), "--state-dir", str(tmp_path / "nowhere")]
    )
    assert missing.exit_code == 2 and "no node ledger at" in missing.output
