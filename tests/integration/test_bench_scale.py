"""bench/scale.py runs end to end with tiny sizes and prints its summary (no timing asserted)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.xdist_group("bench")]

SCALE = Path(__file__).resolve().parents[2] / "bench" / "scale.py"


def _module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("bench_scale", SCALE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_timed_query_is_a_new_question() -> None:
    """A repeated question is answered from the node's cache: the bench must never time that."""
    question = _module().question
    indices = [*range(5_000), *range(45_000, 50_000), *range(1_000_000, 1_005_000)]
    assert len({repr(question(i)) for i in indices}) == len(indices)
    assert question(7)["privacy"] == {"mode": "dp", "epsilon": 0.01}


def test_a_tiny_run_prints_every_section(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(SCALE),
            "--nodes",
            "1,2",
            "--node-rows",
            "500",
            "--repeat",
            "2",
            "--skip",
            "qps,rows",
            "--hop-rows",
            "2000",
            "--workdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "=== summary" in out
    assert "    2 " in out.split("=== summary")[1]  # the 2-node row of the growth table
    assert "only up to 2 nodes: not the target's 100" in out
    assert "ratio" in out and "ledger commit" in out
