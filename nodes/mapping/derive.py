"""Code normalisers and derived fields: one documented rule each, vectorised over a chunk.

Why here and not in each site's SQL: the same rule must give the same answer at
every site (a cancer type grouped two ways is two different statistics), and
:mod:`nodes.mapping.check` checks rows against exactly these rules.

>>> normalise_topography(pd.Series(["C34", "c341", " C34.1", "C97", "X1"])).tolist()
['C34.9', 'C34.1', 'C34.1', 'C97', 'X1']
>>> normalise_morphology(pd.Series(["81403", "8140/3", "8140-3", "M8140/3"])).tolist()
['8140/3', '8140/3', '8140/3', '8140/3']
>>> cancer_type_of(pd.Series(["C34.1", "C18.7", "C61.9", "C44.3"])).tolist()
['lung', 'colorectal', 'prostate', 'other']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import numpy as np
import pandas as pd

from varde.schema import AGE_BAND_EDGES, AGE_BANDS

TEXT: Final = pd.StringDtype("pyarrow")
"""Text columns: Arrow-backed strings (vectorised string methods, compact in memory)."""

_TYPE_BY_CODE: Final[dict[str, str]] = {
    "C15": "oesophagus",
    "C16": "stomach",
    "C18": "colorectal",
    "C19": "colorectal",
    "C20": "colorectal",
    "C25": "pancreas",
    "C34": "lung",
    "C43": "melanoma",
    "C50": "breast",
    "C53": "cervix",
    "C54": "uterus",
    "C55": "uterus",
    "C56": "ovary",
    "C61": "prostate",
    "C64": "kidney",
    "C65": "kidney",
    "C67": "bladder",
    "C71": "brain",
    "C73": "thyroid",
    **{f"C{n}": "lymphoma" for n in (81, 82, 83, 84, 85, 86, 88)},
    **{f"C{n}": "leukaemia" for n in (91, 92, 93, 94, 95)},
}
"""Cancer type by ICD-10 three-character topography; every other code is ``other``."""

SEX_SPECIFIC: Final[dict[str, str]] = {
    "prostate": "male",
    "cervix": "female",
    "ovary": "female",
    "uterus": "female",
}
"""Cancer types that occur in one sex only (a registrar's plausibility check)."""


def by_unique(fn: Callable[[pd.Series], pd.Series]) -> Callable[[pd.Series], pd.Series]:
    """Apply a text rule once per distinct value, not once per row.

    Why: a registry has a million tumours but a few hundred distinct codes, and
    string methods cost per call; the rule's result is spread back by code.
    """

    def each(values: pd.Series) -> pd.Series:
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
        done = fn(pd.Series(uniques, dtype=TEXT)).astype(TEXT).to_numpy()
        out = pd.Series(pd.array(done, dtype=TEXT).take(codes, allow_fill=True), index=values.index)
        return out

    each.__doc__ = fn.__doc__
    return each


@by_unique
def normalise_topography(codes: pd.Series) -> pd.Series:
    """ICD-O-3/ICD-10 topography as the schema writes it: ``C34.1``.

    A three-character code without a subsite (``C34``) becomes ``C34.9``, the
    "unspecified part" subsite both classifications use; ``C341`` gains its dot;
    case and spaces are ignored. ``C97`` (multiple primaries) has no subsite.
    Anything else is left as it was, for the category check to name.
    """
    text = codes.astype(TEXT).str.strip().str.upper()
    parts = text.str.extract(r"^C\s*(\d{2})\.?(\d)?$")
    subsite = parts[1].fillna("9")
    fixed = ("C" + parts[0] + "." + subsite).where(parts[0] != "97", "C97")
    return fixed.where(parts[0].notna(), codes)


@by_unique
def normalise_morphology(codes: pd.Series) -> pd.Series:
    """ICD-O-3 morphology as ``8140/3``, from ``81403``, ``8140-3`` or ``M8140/3``.

    Anything else is left as it was, for the category check to name.
    """
    text = codes.astype(TEXT).str.strip().str.upper()
    parts = text.str.extract(r"^M?(\d{4})\s*[/-]?\s*(\d)$")
    fixed = parts[0] + "/" + parts[1]
    return fixed.where(parts[0].notna(), codes)


@by_unique
def cancer_type_of(topography: pd.Series) -> pd.Series:
    """The public cancer type of each topography (:data:`_TYPE_BY_CODE`, else ``other``)."""
    head = topography.astype(TEXT).str[:3]
    return head.map(_TYPE_BY_CODE).fillna("other").where(topography.notna())


@by_unique
def behaviour_of(morphology: pd.Series) -> pd.Series:
    """ICD-O-3 behaviour: the digit after the slash."""
    text = morphology.astype(TEXT)
    return text.str[-1].where(text.str.contains("/", regex=False))


def whole_years(start: pd.Series, end: pd.Series) -> pd.Series:
    """Completed years from ``start`` to ``end`` (a birthday not yet reached does not count).

    >>> whole_years(pd.Series(pd.to_datetime(["1950-06-02", "1950-06-01"])),
    ...             pd.Series(pd.to_datetime(["2000-06-01", "2000-06-01"]))).tolist()
    [49, 50]
    """
    years = end.dt.year - start.dt.year
    before = (end.dt.month < start.dt.month) | (
        (end.dt.month == start.dt.month) & (end.dt.day < start.dt.day)
    )
    return (years - before.astype("Int64")).astype("Int64")


def age_band_of(age: pd.Series) -> pd.Series:
    """The public age band of each age (``varde.schema.age_band``, vectorised)."""
    values = pd.to_numeric(age).astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)
    index = np.searchsorted(np.asarray(AGE_BAND_EDGES), values, side="right") - 1
    bands = np.asarray(AGE_BANDS, dtype=object)[np.clip(index, 0, len(AGE_BANDS) - 1)]
    return pd.Series(bands, index=age.index, dtype=TEXT).where(~np.isnan(values))


def days_between(start: pd.Series, end: pd.Series) -> pd.Series:
    """Whole days from ``start`` to ``end``."""
    return (end - start).dt.days.astype("Int64")


DERIVE_ORDER: Final = (
    "tumour_id",
    "last_contact_date",
    "vital_status",
    "diagnosis_year",
    "age_at_diagnosis",
    "birth_year",
    "age_band",
    "survival_days",
    "cancer_type",
    "behaviour",
)
"""Derivations in dependency order (each uses only columns computed before it)."""


def derive(name: str, frame: pd.DataFrame, inputs: pd.DataFrame, offset: int) -> pd.Series:
    """Compute derived field ``name`` of one chunk from its mapped columns and ``inputs``.

    ``offset`` is the chunk's first row number in the source (for ``tumour_id``).
    """
    idx = frame.index
    if name == "tumour_id":
        return pd.Series(np.arange(offset + 1, offset + 1 + len(frame)), index=idx, dtype="Int64")
    if name == "last_contact_date":
        followup = inputs["last_followup_date"]
        if "death_date" in inputs:
            return inputs["death_date"].where(inputs["death_date"].notna(), followup)
        return followup
    if name == "vital_status":
        dead = inputs["death_date"].notna()
        return pd.Series(np.where(dead, "dead", "alive"), index=idx, dtype=TEXT)
    if name == "diagnosis_year":
        return frame["diagnosis_date"].dt.year.astype("Int64")
    if name == "age_at_diagnosis":
        return whole_years(inputs["birth_date"], frame["diagnosis_date"])
    if name == "birth_year":
        if "birth_date" in inputs:
            return inputs["birth_date"].dt.year.astype("Int64")
        age = pd.to_numeric(frame["age_at_diagnosis"]).astype("Int64")
        return (frame["diagnosis_date"].dt.year.astype("Int64") - age).astype("Int64")
    if name == "age_band":
        return age_band_of(frame["age_at_diagnosis"])
    if name == "survival_days":
        return days_between(frame["diagnosis_date"], frame["last_contact_date"])
    if name == "cancer_type":
        return cancer_type_of(frame["topography"])
    if name == "behaviour":
        return behaviour_of(frame["morphology"])
    raise KeyError(f"no derivation for {name!r}")  # pragma: no cover - model checks the name
