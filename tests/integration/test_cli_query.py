"""``varde query FILE`` against the live network prints per-site and network tables."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.network import LocalNetwork

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("network")]


def run(
    network: LocalNetwork, spec: dict[str, object], tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "q.json"
    path.write_text(json.dumps(spec))
    return subprocess.run(
        [sys.executable, "-m", "launcher.cli", "query", str(path), "--gateway", network.url,
         "--token", network.token],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_query_command(network: LocalNetwork, tmp_path: Path) -> None:
    spec = {
        "project": "nsclc-feasibility",
        "cohort": {"op": "eq", "field": "cancer_type", "value": "lung"},
        "statistic": {"kind": "histogram", "field": "stage"},
        "privacy": {"mode": "dp", "epsilon": 0.1},
    }
    proc = run(network, spec, tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for word in (
        "NETWORK",
        "network 95% CI",
        "oslo",
        "bergen",
        "trondheim",
        "opendp.discrete_laplace",
    ):
        assert word in out
    bad = run(network, {**spec, "privacy": {"mode": "dp", "epsilon": 0}}, tmp_path)
    assert (
        bad.returncode == 2 and "422 invalid_query" in bad.stderr and "greater than 0" in bad.stderr
    )
