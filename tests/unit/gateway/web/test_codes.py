"""Names beside the schema's codes, for the page's code search."""

from __future__ import annotations

from gateway.web.codes import (
    MORPHOLOGY_NAMES,
    TOPOGRAPHY_NAMES,
    morphology_terms,
    topography_groups,
)
from varde.schema import MORPHOLOGY_CODES, TOPOGRAPHY_CODES


def test_every_three_character_group_of_the_schema_is_there_in_order() -> None:
    groups = [code for code, _ in topography_groups()]
    assert groups == sorted({c[:3] for c in TOPOGRAPHY_CODES})
    assert ("C34", "Bronchus and lung") in topography_groups()
    assert ("C50", "Breast") in topography_groups()


def test_names_only_for_codes_the_schema_has() -> None:
    prefixes = {c[:3] for c in TOPOGRAPHY_CODES}
    assert set(TOPOGRAPHY_NAMES) <= prefixes
    assert set(MORPHOLOGY_NAMES) == set(MORPHOLOGY_CODES)
    assert all(name for _, name in morphology_terms())
