"""The trust boundary as import contracts (``[tool.importlinter]`` in pyproject.toml).

``import-linter`` builds the import graph of every package of ours, function-local
and ``TYPE_CHECKING`` imports included, and checks each contract: ``gateway``
and ``nodes`` never import each other, ``varde`` imports neither (nor the
client or the launcher), the client reaches the network over HTTP only, only
``launcher`` puts both sides together, and no package's modules import each
other in a cycle.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

CONTRACTS = [
    "gateway and nodes never import each other",
    "varde holds what both sides exchange and imports no other package of ours",
    "the researcher client reaches the network over HTTP only",
    "only the launcher puts both sides together",
    "no import cycles between the modules of a package",
]


@pytest.fixture(scope="module")
def report() -> str:
    proc = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.stdout + proc.stderr


@pytest.mark.parametrize("contract", CONTRACTS)
def test_contract_kept(report: str, contract: str) -> None:
    assert f"{contract} KEPT" in report, report


def test_every_contract_is_checked(report: str) -> None:
    # A contract added to pyproject.toml without a test here would go unnoticed.
    assert f"Contracts: {len(CONTRACTS)} kept" in report or "BROKEN" in report, report
    assert report.count(" KEPT") + report.count(" BROKEN") == len(CONTRACTS), report


PACKAGES = {"varde", "varde_client", "nodes", "gateway", "launcher"}


def test_unit_tests_mirror_the_packages() -> None:
    """``tests/unit/<package>/...`` follows the code's layout, so a module's tests are found
    where the module is: every unit test file sits under a folder named after one of our
    packages, and every folder below it names a sub-package that exists."""
    unit = ROOT / "tests" / "unit"
    misplaced = []
    for path in sorted(unit.rglob("test_*.py")):
        parts = path.relative_to(unit).parts[:-1]
        if not parts or parts[0] not in PACKAGES or not (ROOT.joinpath(*parts)).is_dir():
            misplaced.append(str(path.relative_to(ROOT)))
    assert not misplaced, f"unit tests outside the package layout: {misplaced}"
    assert len(list(unit.rglob("test_*.py"))) > 40
