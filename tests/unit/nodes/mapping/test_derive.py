"""Code normalisers and derivations against plain Python references."""

from __future__ import annotations

import datetime as dt

import pandas as pd
from hypothesis import given
from hypothesis import strategies as st

from nodes.mapping.derive import (
    age_band_of,
    cancer_type_of,
    normalise_morphology,
    normalise_topography,
    whole_years,
)
from varde.schema import CANCER_TYPES, TOPOGRAPHY_CODES, age_band


@given(st.integers(0, 96), st.one_of(st.none(), st.integers(0, 9)), st.sampled_from(["", ".", " "]))
def test_topography_with_or_without_subsite(head: int, sub: int | None, dot: str) -> None:
    raw = f"c{head:02d}{dot if sub is not None and dot != ' ' else ''}{'' if sub is None else sub}"
    got = normalise_topography(pd.Series([raw])).iloc[0]
    assert got == f"C{head:02d}.{9 if sub is None else sub}"
    assert got in TOPOGRAPHY_CODES


@given(st.integers(8000, 9999), st.sampled_from("0123"), st.sampled_from(["/", "-", "", " / "]))
def test_morphology_forms(code: int, behaviour: str, sep: str) -> None:
    assert (
        normalise_morphology(pd.Series([f"M{code}{sep}{behaviour}"])).iloc[0]
        == f"{code}/{behaviour}"
    )


def test_codes_that_are_not_codes_are_left_for_the_category_check() -> None:
    assert normalise_topography(pd.Series(["lung", None])).tolist()[0] == "lung"
    assert normalise_morphology(pd.Series(["adeno"])).tolist() == ["adeno"]


def test_cancer_types_are_schema_categories() -> None:
    types = cancer_type_of(pd.Series(list(TOPOGRAPHY_CODES)))
    assert set(types) <= set(CANCER_TYPES) and "other" in set(types)


@given(st.dates(dt.date(1900, 1, 1), dt.date(2020, 12, 31)), st.integers(0, 40000))
def test_whole_years_and_bands(birth: dt.date, days: int) -> None:
    later = birth + dt.timedelta(days=days)
    want = later.year - birth.year - ((later.month, later.day) < (birth.month, birth.day))
    got = whole_years(pd.Series(pd.to_datetime([birth])), pd.Series(pd.to_datetime([later])))
    assert int(got.iloc[0]) == want
    assert age_band_of(pd.Series([want])).iloc[0] == age_band(want)
