"""Fixtures: a local export and the starter mapping that reads it (see helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.unit.nodes.mapping.helpers import local_export, write_site


@pytest.fixture
def export() -> pd.DataFrame:
    return local_export()


@pytest.fixture
def site_mapping(tmp_path: Path, export: pd.DataFrame) -> Path:
    return write_site(tmp_path / "site", export)
