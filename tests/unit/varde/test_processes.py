"""``flower_env``: the environment of the Flower processes the gateway and nodes start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from varde.processes import flower_env

PRINT_JSON = (
    "import sys; from rich.console import Console; "
    "Console(file=sys.stdout).print_json('{\"run-id\": 7}')"
)
"""How ``flwr run --format json`` prints its answer (``flwr.cli.utils.print_json_to_stdout``)."""


def _printed(env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", PRINT_JSON], env=env, capture_output=True, check=True
    )
    return done.stdout.decode()


def test_forced_colour_is_not_passed_to_flower(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Jupyter kernel sets FORCE_COLOR for its children; flwr's JSON must stay parseable."""
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("CLICOLOR_FORCE", "1")
    with pytest.raises(json.JSONDecodeError):  # what the gateway was given to parse
        json.loads(_printed(dict(os.environ)))
    env = flower_env(tmp_path)
    assert "FORCE_COLOR" not in env and "CLICOLOR_FORCE" not in env
    assert json.loads(_printed(env)) == {"run-id": 7}
    assert env["FLWR_HOME"] == str(tmp_path / "flwr")
