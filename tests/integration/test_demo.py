"""The README's first command: ``varde demo --once`` runs every example and exits cleanly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from launcher.demo import EXAMPLES, STATISTICS

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("demo")]


def test_demo_once_answers_every_example(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "launcher.cli", "demo", "--once", "--rows", "3000", "--dir",
         str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    for title, _ in EXAMPLES + STATISTICS:
        assert title in out
    assert "refused:" not in out
    assert "Preview (nothing charged)" in out and "pm95_count" in out
    assert "median" in out and "q0.5" in out  # survival median and pooled quantile rows
    # one example is refused by Trondheim's policy, by design, and says so
    assert "site 'trondheim' does not expose field(s) pdl1_tps" in out
    assert out.count("end to end)") == len(EXAMPLES) + len(STATISTICS)
