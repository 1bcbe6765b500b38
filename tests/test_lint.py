"""Style and types are part of the build: ruff (lint + format) and mypy --strict must be clean."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    "cmd",
    [
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
        ["mypy", "varde", "varde_client", "gateway", "nodes", "launcher"],
    ],
    ids=["ruff-check", "ruff-format", "mypy-strict"],
)
def test_clean(cmd: list[str]) -> None:
    proc = subprocess.run(
        [str(BIN / cmd[0]), *cmd[1:]], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
