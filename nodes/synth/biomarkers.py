"""Biomarkers: every prevalence and testing parameter, in one place, and its lookup arrays.

:data:`BIOMARKER_PREVALENCE` is the table a reader edits; :data:`_MARKERS` is the same
table compiled (and checked) into arrays indexed by ``type * n_morph + morph``, which the
sampler reads.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import numpy as np

from nodes.synth.codes import _MORPH, _N_MORPH, _N_TYPES, _TYPE, Bools, Floats, Ints
from nodes.synth.dates import _LAST_YEAR, DIAGNOSIS_START
from varde.schema import FIELDS_BY_NAME


@dataclass(frozen=True)
class MarkerRule:
    """Who is eligible for one biomarker test, how often they are tested, what it shows.

    Attributes:
        cancer_type: The tumour's ``cancer_type``.
        morphologies: Eligible ICD-O-3 codes (invasive, behaviour 3); in situ tumours and
            other morphologies of the type are never tested.
        outcome: P(result | tested) for each tested category of the field in schema order
            (``not_tested`` excluded), e.g. ``(positive, negative)``.
        tested: Fraction tested in the year ``since`` and in the last diagnosis year;
            linear in between, zero before ``since``. Site profiles scale it.
        since: First diagnosis year with routine testing.
        early_stage_factor: Multiplier on the testing rate for stage I-II and unknown
            stage, because most tests are ordered to choose a treatment for advanced disease.
    """

    cancer_type: str
    morphologies: tuple[str, ...]
    outcome: tuple[float, ...]
    tested: tuple[float, float]
    since: int = DIAGNOSIS_START.year
    early_stage_factor: float = 1.0

    def __post_init__(self) -> None:
        """Reject rules that name unknown codes or are not probabilities."""
        if self.cancer_type not in _TYPE:
            raise ValueError(f"unknown cancer type {self.cancer_type!r}")
        for code in self.morphologies:
            if code not in _MORPH or not code.endswith("/3"):
                raise ValueError(f"morphology {code!r} is not an invasive schema code")
        if min(self.outcome) < 0 or not math.isclose(sum(self.outcome), 1.0):
            raise ValueError(f"outcome {self.outcome} is not a probability vector")
        if not all(0.0 <= t <= 1.0 for t in self.tested) or self.early_stage_factor < 0:
            raise ValueError("testing rates must lie in [0, 1]")
        if not DIAGNOSIS_START.year <= self.since <= _LAST_YEAR:
            raise ValueError(f"since={self.since} is outside the diagnosis window")


def _positive(p: float) -> tuple[float, float]:
    """Outcome of a binary marker: (positive, negative)."""
    return (p, 1.0 - p)


_ADENO = ("8140/3",)
_NSCLC_NOS = ("8046/3",)
_SQUAMOUS = ("8070/3",)
_CRC = ("8140/3", "8480/3")

BIOMARKER_PREVALENCE: Final[Mapping[str, tuple[MarkerRule, ...]]] = {
    # EGFR: ~12% of tested European lung adenocarcinoma, rarer in other NSCLC.
    "egfr": (
        MarkerRule("lung", _ADENO, _positive(0.12), (0.40, 0.92), 2010, 0.6),
        MarkerRule("lung", _NSCLC_NOS, _positive(0.06), (0.30, 0.85), 2010, 0.6),
        MarkerRule("lung", _SQUAMOUS, _positive(0.02), (0.05, 0.35), 2010, 0.5),
    ),
    # ALK ~4%, ROS1 ~1.5% of lung adenocarcinoma.
    "alk": (
        MarkerRule("lung", _ADENO, _positive(0.04), (0.20, 0.90), 2012, 0.6),
        MarkerRule("lung", _NSCLC_NOS, _positive(0.03), (0.15, 0.80), 2012, 0.6),
    ),
    "ros1": (
        MarkerRule("lung", _ADENO, _positive(0.015), (0.30, 0.88), 2015, 0.6),
        MarkerRule("lung", _NSCLC_NOS, _positive(0.01), (0.20, 0.80), 2015, 0.6),
    ),
    # KRAS G12C ~12% of tested NSCLC (mostly adenocarcinoma), ~3% of colorectal.
    "kras_g12c": (
        MarkerRule("lung", _ADENO, _positive(0.14), (0.20, 0.90), 2016, 0.6),
        MarkerRule("lung", _NSCLC_NOS, _positive(0.11), (0.15, 0.80), 2016, 0.6),
        MarkerRule("lung", _SQUAMOUS, _positive(0.04), (0.05, 0.30), 2016, 0.5),
        MarkerRule("colorectal", _CRC, _positive(0.03), (0.20, 0.80), 2012, 0.4),
    ),
    # BRAF V600E ~50% of melanoma, ~10% of colorectal.
    "braf_v600e": (
        MarkerRule("melanoma", ("8720/3",), _positive(0.50), (0.30, 0.85), 2011, 0.3),
        MarkerRule("colorectal", _CRC, _positive(0.10), (0.20, 0.80), 2012, 0.4),
    ),
    # HER2 positive ~17% of breast (tested almost always), ~15% of gastric adenocarcinoma.
    "her2": (
        MarkerRule(
            "breast", ("8500/3", "8520/3", "8010/3", "8480/3"), _positive(0.17), (0.95, 0.99)
        ),
        MarkerRule(
            "stomach", ("8140/3", "8480/3", "8010/3"), _positive(0.15), (0.20, 0.65), 2011, 0.5
        ),
    ),  # fmt: skip
    # MSI-high ~15% of colorectal, ~25% of endometrial, ~8% of gastric (msi_high, mss).
    "msi": (
        MarkerRule("colorectal", _CRC, _positive(0.15), (0.20, 0.92), 2012),
        MarkerRule("uterus", ("8140/3", "8441/3"), _positive(0.25), (0.10, 0.85), 2015),
        MarkerRule("stomach", ("8140/3", "8480/3"), _positive(0.08), (0.05, 0.50), 2017, 0.5),
    ),
    # PD-L1 tumour proportion score bands (<1%, 1-49%, >=50%) in NSCLC.
    "pdl1_tps": tuple(
        MarkerRule("lung", morph, (0.30, 0.38, 0.32), (0.20, 0.92), 2016, 0.5)
        for morph in (_ADENO, _NSCLC_NOS, _SQUAMOUS)
    ),
}
"""Biomarker prevalence and testing parameters: field name -> eligibility rules.

A tumour matches at most one rule per field; unmatched tumours are ``not_tested``.
"""

DRIVER_MARKERS: Final = ("egfr", "alk", "ros1", "kras_g12c", "braf_v600e")
"""Oncogenic drivers that are mutually exclusive within one tumour (as in real NSCLC)."""


@dataclass(frozen=True)
class _MarkerTable:
    """One biomarker's rules as lookup arrays indexed by ``type * n_morph + morph``."""

    eligible: Bools
    start: Floats
    end: Floats
    since: Ints
    early: Floats
    outcome: Floats  # (keys, tested categories)
    driver_low: Floats  # positive iff driver_low <= u_driver < driver_high (drivers only)
    driver_high: Floats


def _marker_tables() -> dict[str, _MarkerTable]:
    """Compile :data:`BIOMARKER_PREVALENCE` into lookup arrays, checking it on the way."""
    n_keys = _N_TYPES * _N_MORPH
    offset = np.zeros(n_keys)  # cumulative driver prevalence per key, in DRIVER_MARKERS order
    tables: dict[str, _MarkerTable] = {}
    for name in (*DRIVER_MARKERS, *(m for m in BIOMARKER_PREVALENCE if m not in DRIVER_MARKERS)):
        spec = FIELDS_BY_NAME[name]
        n_results = len(spec.categories) - 1
        if spec.categories[-1] != "not_tested":
            raise ValueError(f"{name}: 'not_tested' must be the last category")
        eligible = np.zeros(n_keys, dtype=np.bool_)
        start, end, early = np.zeros(n_keys), np.zeros(n_keys), np.ones(n_keys)
        since = np.full(n_keys, _LAST_YEAR + 1, dtype=np.int64)
        outcome = np.zeros((n_keys, n_results))
        outcome[:, -1] = 1.0
        for rule in BIOMARKER_PREVALENCE[name]:
            if len(rule.outcome) != n_results:
                raise ValueError(f"{name}: outcome needs {n_results} probabilities")
            for morph in rule.morphologies:
                key = _TYPE[rule.cancer_type] * _N_MORPH + _MORPH[morph]
                if eligible[key]:
                    raise ValueError(f"{name}: two rules match {rule.cancer_type} {morph}")
                eligible[key] = True
                start[key], end[key] = rule.tested
                since[key], early[key] = rule.since, rule.early_stage_factor
                outcome[key] = rule.outcome
        low = offset.copy()
        if name in DRIVER_MARKERS:
            offset = offset + np.where(eligible, outcome[:, 0], 0.0)
            if offset.max() > 1.0:
                raise ValueError("mutually exclusive driver prevalences exceed 1")
        tables[name] = _MarkerTable(eligible, start, end, since, early, outcome, low, offset)
    return tables


_MARKERS: Final = _marker_tables()
