"""Seeded synthetic cancer registries in the common schema (one row per tumour).

Why synthetic: the demo, the tests and the benchmarks need registries that look like a
hospital's (type mix, age, stage, biomarkers, treatment, survival) and that differ between
sites the way real ones do (non-IID: older catchments, later stage, fewer molecular tests),
without a single real patient. Proportions are calibrated on public figures
(``../shared/data/registry-facts.md``, Cancer in Norway 2022-2023); the rows stay synthetic.

Why vectorised: a node must be able to load a million-row registry in seconds, so every
column is drawn with numpy over whole arrays. The only Python loops run over small public
tables (cancer types, biomarkers), never over rows.

How a registry is drawn, patient first, so that multi-tumour patients stay consistent:

1. patients and their tumour count (1, 2 or 3); every tumour gets a diagnosis date from the
   (slowly rising) incidence curve and a patient's earliest is the index tumour, which gets a
   type, the patient a sex (given that type) and an age, hence a birth date;
2. further tumours get a type given the patient's sex;
3. every tumour gets topography and morphology (consistent with its type), behaviour (from
   the morphology suffix), grouped stage, TNM (consistent with the stage) and grade; a
   tumour followed by a later diagnosis gets its stage given that the patient survived
   until then (so stage IV lung rarely precedes a second primary by years);
4. a patient dies once: at the earliest of the tumours' cancer deaths (Weibull) and a
   background (Gompertz) death, all conditional on being alive at the last diagnosis;
   follow-up is censored at :data:`DATA_AS_OF`;
5. biomarkers (tested only where they mean something, more often in later years), first
   treatment (stage- and biomarker-driven), waiting time and trial enrolment.

Every parameter lives in a module-level table: biomarker prevalence and testing rates all in
:data:`BIOMARKER_PREVALENCE`; site differences all in :class:`SiteProfile`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Final

import numpy as np
import pandas as pd
import pyarrow as pa
from numpy.typing import NDArray

from nodes.registry_io import PATIENT_ID_DTYPE, conform_registry, read_registry, write_registry
from varde.schema import (
    AGE_BAND_EDGES,
    CANCER_TYPES,
    COLUMN_ORDER,
    COUNTRIES,
    FIELDS_BY_NAME,
    MORPHOLOGY_CODES,
    REGIONS,
    STAGES,
)

__all__ = [
    "BIOMARKER_PREVALENCE",
    "DATA_AS_OF",
    "SITE_PROFILES",
    "MarkerRule",
    "SiteProfile",
    "generate_registry",
    "profile_for",
    "read_registry",  # re-exported from nodes.registry_io for callers that generate and read
    "write_registry",
]

Ints = NDArray[np.int64]
Floats = NDArray[np.float64]
Bools = NDArray[np.bool_]

DIAGNOSIS_START: Final = date(2010, 1, 1)
"""First possible diagnosis date."""
DIAGNOSIS_END: Final = date(2025, 12, 31)
"""Last possible diagnosis date."""
DATA_AS_OF: Final = date(2026, 6, 30)
"""Follow-up is censored here: the registry's extraction date."""

TUMOURS_PER_PATIENT: Final = (0.91, 0.08, 0.01)
"""Share of patients with 1, 2 and 3 tumours (never more)."""
INCIDENCE_GROWTH: Final = 0.02
"""Yearly relative growth of incidence over the diagnosis window (ageing population)."""
IMMUNOTHERAPY_FROM: Final = 2015
"""Checkpoint inhibitors as first treatment only from this diagnosis year."""

"""dtype of ``patient_id`` in every frame this module returns."""

_LAST_YEAR: Final = DIAGNOSIS_END.year
_DAY_EPOCH: Final = np.datetime64("1970-01-01", "D")


def _day(d: date) -> int:
    """Days since 1970-01-01, the integer date representation used throughout."""
    return int((np.datetime64(d, "D") - _DAY_EPOCH).astype(np.int64))


_START_DAY: Final = _day(DIAGNOSIS_START)
_END_DAY: Final = _day(DIAGNOSIS_END)
_AS_OF_DAY: Final = _day(DATA_AS_OF)
_MAX_LAG_DAYS: Final = _AS_OF_DAY - _END_DAY - 1  # censoring never precedes a diagnosis
_DAYS_PER_YEAR: Final = 365.25


def _categories(name: str) -> tuple[str, ...]:
    return FIELDS_BY_NAME[name].categories


def _index(name: str) -> dict[str, int]:
    return {c: i for i, c in enumerate(_categories(name))}


_TYPE = _index("cancer_type")
_MORPH = _index("morphology")
_TOPO = _index("topography")
_STAGE = _index("stage")
_T = _index("t_stage")
_N = _index("n_stage")
_M = _index("m_stage")
_TREAT = _index("first_treatment")
_N_TYPES = len(CANCER_TYPES)
_N_MORPH = len(MORPHOLOGY_CODES)
_N_STAGES = len(STAGES)

# --------------------------------------------------------------------------------------------
# Biomarkers: every prevalence and testing parameter, in one place.
# --------------------------------------------------------------------------------------------


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

# --------------------------------------------------------------------------------------------
# Cancer types: share, sex, age, stage and survival.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _TypeParams:
    """Per-type calibration (shares from Cancer in Norway; survival from literature ranges).

    ``stage`` and ``s5`` run over stage I, II, III, IV, unknown; stage 0 comes only from
    in situ morphologies. ``s5`` is five-year cancer-specific survival at age 65 in 2010.
    """

    share: float
    male: float
    age: tuple[float, float]
    child: float
    stage: tuple[float, float, float, float, float]
    s5: tuple[float, float, float, float, float]


_NOT_STAGED = (0.0, 0.0, 0.0, 0.0, 1.0)
_TYPES: Final[dict[str, _TypeParams]] = {
    "breast": _TypeParams(
        0.11, 0.01, (62, 13), 0, stage=(.45, .35, .10, .05, .05), s5=(.995, .95, .80, .32, .85)
    ),
    "prostate": _TypeParams(
        0.14, 1.0, (70, 8), 0, stage=(.25, .35, .15, .15, .10), s5=(.999, .99, .95, .45, .90)
    ),
    "colorectal": _TypeParams(
        0.125, 0.52, (71, 11), 0, stage=(.18, .27, .27, .22, .06), s5=(.93, .85, .72, .13, .55)
    ),
    "lung": _TypeParams(
        0.09, 0.50, (71, 9), 0, stage=(.20, .08, .17, .48, .07), s5=(.70, .50, .25, .03, .20)
    ),
    "melanoma": _TypeParams(
        0.07, 0.52, (63, 16), 0, stage=(.62, .17, .08, .04, .09), s5=(.99, .90, .75, .30, .90)
    ),
    "bladder": _TypeParams(
        0.045, 0.75, (73, 11), 0, stage=(.45, .20, .10, .10, .15), s5=(.90, .65, .45, .10, .60)
    ),
    "kidney": _TypeParams(
        0.025, 0.65, (66, 12), 0, stage=(.45, .10, .15, .20, .10), s5=(.93, .80, .65, .15, .60)
    ),
    "pancreas": _TypeParams(
        0.025, 0.50, (72, 10), 0, stage=(.10, .15, .15, .50, .10), s5=(.35, .20, .10, .02, .05)
    ),
    "stomach": _TypeParams(
        0.012, 0.60, (72, 11), 0, stage=(.20, .15, .20, .35, .10), s5=(.75, .50, .25, .04, .20)
    ),
    "oesophagus": _TypeParams(
        0.010, 0.72, (71, 10), 0, stage=(.12, .15, .25, .35, .13), s5=(.55, .35, .20, .04, .15)
    ),
    "lymphoma": _TypeParams(
        0.032, 0.57, (65, 15), .02, stage=(.20, .20, .15, .30, .15), s5=(.90, .85, .75, .65, .70)
    ),
    "leukaemia": _TypeParams(
        0.034, 0.60, (68, 15), .06, stage=_NOT_STAGED, s5=(.65, .65, .65, .65, .65)
    ),
    "cervix": _TypeParams(
        0.008, 0.0, (47, 14), 0, stage=(.45, .20, .20, .10, .05), s5=(.93, .70, .55, .18, .60)
    ),
    "ovary": _TypeParams(
        0.013, 0.0, (64, 13), 0, stage=(.25, .07, .40, .20, .08), s5=(.92, .75, .40, .20, .30)
    ),
    "uterus": _TypeParams(
        0.022, 0.0, (66, 10), 0, stage=(.72, .08, .10, .06, .04), s5=(.95, .80, .60, .20, .60)
    ),
    "brain": _TypeParams(
        0.020, 0.55, (58, 16), .08, stage=_NOT_STAGED, s5=(.30, .30, .30, .30, .30)
    ),
    "thyroid": _TypeParams(
        0.012, 0.28, (50, 16), 0, stage=(.65, .15, .08, .07, .05), s5=(.999, .99, .95, .60, .95)
    ),
    "other": _TypeParams(
        0.0, 0.50, (68, 14), .008, stage=(.25, .20, .20, .20, .15), s5=(.85, .65, .45, .12, .40)
    ),
}  # fmt: skip
if tuple(_TYPES) != CANCER_TYPES:
    raise RuntimeError("_TYPES must list the schema's cancer types in schema order")
_OTHER_SHARE: Final = 1.0 - sum(p.share for p in _TYPES.values())
_BASE_SHARE: Final = np.array([p.share for p in _TYPES.values()]) + np.where(
    np.array(CANCER_TYPES) == "other", _OTHER_SHARE, 0.0
)
_MALE: Final = np.array([p.male for p in _TYPES.values()])
_AGE_MEAN: Final = np.array([p.age[0] for p in _TYPES.values()], dtype=np.float64)
_AGE_SD: Final = np.array([p.age[1] for p in _TYPES.values()], dtype=np.float64)
_CHILD: Final = np.array([p.child for p in _TYPES.values()])
_STAGE_MIX: Final = np.array([(0.0, *p.stage) for p in _TYPES.values()])  # columns = STAGES
_H5: Final = -np.log([(0.999, *p.s5) for p in _TYPES.values()])  # 5-y cum. hazard by STAGES
_ADULT_AGE: Final = (15.0, 100.0)  # support of the adult age distribution
_STAGED: Final = np.array([p.stage != _NOT_STAGED for p in _TYPES.values()])

# Topography x morphology per type: (subsite weights, histology weights) drawn independently,
# or an explicit joint table where histology depends on the subsite. Extra groups hold the
# childhood forms used for 0-14-year-olds.
_Weights = tuple[tuple[str, float], ...]
_INDEPENDENT: Final[dict[str, tuple[_Weights, _Weights]]] = {
    "breast": (
        (("C50.1", 5), ("C50.2", 10), ("C50.3", 5), ("C50.4", 35), ("C50.5", 8), ("C50.8", 17),
         ("C50.9", 20)),
        (("8500/3", 72), ("8520/3", 12), ("8500/2", 10), ("8010/3", 3), ("8480/3", 3)),
    ),
    "prostate": ((("C61.9", 1),), (("8140/3", 97), ("8000/3", 3))),
    "colorectal": (
        (("C18.0", 12), ("C18.2", 10), ("C18.3", 3), ("C18.4", 6), ("C18.5", 3), ("C18.6", 5),
         ("C18.7", 22), ("C18.9", 4), ("C19.9", 5), ("C20.9", 30)),
        (("8140/3", 86), ("8480/3", 10), ("8140/2", 2), ("8010/3", 2)),
    ),
    "lung": (
        (("C34.0", 3), ("C34.1", 42), ("C34.2", 5), ("C34.3", 25), ("C34.8", 5), ("C34.9", 20)),
        (("8140/3", 44), ("8070/3", 25), ("8041/3", 13), ("8046/3", 12), ("8010/3", 5),
         ("8140/2", 1)),
    ),
    "melanoma": (
        (("C43.3", 6), ("C43.4", 6), ("C43.5", 38), ("C43.6", 14), ("C43.7", 24), ("C43.9", 12)),
        (("8720/3", 1),),
    ),
    "bladder": (
        (("C67.0", 5), ("C67.2", 30), ("C67.4", 10), ("C67.8", 20), ("C67.9", 35)),
        (("8120/3", 90), ("8070/3", 5), ("8010/3", 5)),
    ),
    "pancreas": (
        (("C25.0", 60), ("C25.1", 15), ("C25.2", 10), ("C25.9", 15)),
        (("8500/3", 55), ("8140/3", 35), ("8000/3", 10)),
    ),
    "stomach": (
        (("C16.0", 30), ("C16.2", 15), ("C16.3", 15), ("C16.9", 40)),
        (("8140/3", 85), ("8480/3", 5), ("8010/3", 10)),
    ),
    "cervix": (
        (("C53.0", 20), ("C53.1", 15), ("C53.9", 65)),
        (("8070/3", 75), ("8140/3", 20), ("8010/3", 5)),
    ),
    "ovary": ((("C56.9", 1),), (("8441/3", 70), ("8480/3", 4), ("8140/3", 12), ("8010/3", 14))),
    "uterus": (
        (("C54.1", 85), ("C54.9", 10), ("C55.9", 5)),
        (("8140/3", 82), ("8441/3", 10), ("8010/3", 8)),
    ),
    "brain": (
        (("C71.0", 10), ("C71.1", 25), ("C71.2", 20), ("C71.3", 10), ("C71.4", 5), ("C71.8", 10),
         ("C71.9", 20)),
        (("9440/3", 55), ("8000/3", 45)),
    ),
    "thyroid": ((("C73.9", 1),), (("8260/3", 85), ("8010/3", 10), ("8000/3", 5))),
}  # fmt: skip
_JOINT: Final[dict[str, tuple[tuple[str, str, float], ...]]] = {
    "kidney": (("C64.9", "8312/3", 85), ("C64.9", "8010/3", 5), ("C65.9", "8120/3", 10)),
    "oesophagus": (
        ("C15.5", "8140/3", 38), ("C15.5", "8070/3", 7), ("C15.4", "8070/3", 15),
        ("C15.4", "8140/3", 10), ("C15.3", "8070/3", 10), ("C15.9", "8140/3", 10),
        ("C15.9", "8070/3", 10),
    ),
    "lymphoma": (
        ("C83.3", "9680/3", 40), ("C85.9", "8000/3", 20), ("C81.9", "8000/3", 12),
        ("C82.9", "8000/3", 15), ("C88.4", "8000/3", 5), ("C84.4", "8000/3", 8),
    ),
    "leukaemia": (
        ("C91.1", "9823/3", 33), ("C92.0", "9861/3", 22), ("C91.0", "8000/3", 8),
        ("C92.1", "8000/3", 10), ("C95.9", "8000/3", 7), ("C91.4", "8000/3", 2),
        ("C93.1", "8000/3", 8), ("C92.9", "8000/3", 10),
    ),
    "other": (
        ("C44.3", "8070/3", 12), ("C44.6", "8070/3", 5), ("C44.7", "8070/3", 4),
        ("C02.9", "8070/3", 3), ("C09.9", "8070/3", 2), ("C10.9", "8070/3", 4),
        ("C32.9", "8070/3", 3), ("C11.9", "8070/3", 1), ("C07.9", "8000/3", 1),
        ("C22.0", "8000/3", 5), ("C23.9", "8140/3", 2), ("C24.0", "8140/3", 2),
        ("C17.9", "8140/3", 2), ("C90.0", "8000/3", 9), ("C45.0", "8000/3", 2),
        ("C49.9", "8000/3", 2), ("C41.9", "8000/3", 1), ("C80.9", "8010/3", 6),
        ("C96.9", "8000/3", 2), ("C37.9", "8000/3", 1),
    ),
    "leukaemia_child": (("C91.0", "8000/3", 80), ("C92.0", "9861/3", 20)),
    "brain_child": (("C71.6", "8000/3", 60), ("C71.7", "8000/3", 20), ("C71.9", "8000/3", 20)),
    "other_child": (
        ("C74.9", "8000/3", 30), ("C41.9", "8000/3", 20), ("C49.9", "8000/3", 30),
        ("C69.2", "8000/3", 20),
    ),
}  # fmt: skip
_CHILD_GROUP: Final = {t: f"{t}_child" for t in ("leukaemia", "brain", "other")}


def _histology_tables() -> tuple[Floats, Ints, Ints]:
    """Combination probabilities and (topography, morphology) codes, one row per group.

    Groups are the cancer types in schema order followed by the childhood groups.
    """
    groups: list[list[tuple[str, str, float]]] = []
    for name in (*CANCER_TYPES, *_CHILD_GROUP.values()):
        if name in _JOINT:
            groups.append(list(_JOINT[name]))
        else:
            sites, histologies = _INDEPENDENT[name]
            groups.append([(t, m, wt * wm) for t, wt in sites for m, wm in histologies])
    width = max(len(g) for g in groups)
    probs = np.zeros((len(groups), width))
    topo = np.zeros((len(groups), width), dtype=np.int64)
    morph = np.zeros((len(groups), width), dtype=np.int64)
    for i, combos in enumerate(groups):
        for j, (t, m, w) in enumerate(combos):
            probs[i, j], topo[i, j], morph[i, j] = w, _TOPO[t], _MORPH[m]
    return probs / probs.sum(axis=1, keepdims=True), topo, morph


_HIST_PROBS, _HIST_TOPO, _HIST_MORPH = _histology_tables()
_CHILD_GROUP_OF_TYPE: Final = np.array(
    [
        _N_TYPES + list(_CHILD_GROUP).index(t) if t in _CHILD_GROUP else i
        for i, t in enumerate(CANCER_TYPES)
    ]
)
_IN_SITU_MORPH: Final = np.array([code.endswith("/2") for code in MORPHOLOGY_CODES])

# Grade (G1, G2, G3, G4, GX) per type; two extra groups for small cell and glioblastoma.
_GRADE_DEFAULT = (0.15, 0.40, 0.28, 0.02, 0.15)
_GRADE_BY_TYPE: Final[dict[str, tuple[float, ...]]] = {
    "breast": (0.22, 0.45, 0.28, 0.0, 0.05),
    "prostate": (0.20, 0.35, 0.35, 0.0, 0.10),
    "colorectal": (0.10, 0.70, 0.12, 0.0, 0.08),
    "lung": (0.05, 0.30, 0.40, 0.0, 0.25),
    "melanoma": (0, 0, 0, 0, 1),
    "lymphoma": (0, 0, 0, 0, 1),
    "leukaemia": (0, 0, 0, 0, 1),
    "brain": (0.05, 0.15, 0.20, 0.10, 0.50),
    "thyroid": (0.60, 0.20, 0.05, 0.0, 0.15),
}
_GRADE: Final = np.array(
    [_GRADE_BY_TYPE.get(t, _GRADE_DEFAULT) for t in CANCER_TYPES]
    + [(0, 0, 0, 0.85, 0.15), (0, 0, 0, 0.95, 0.05)],  # small cell, glioblastoma
    dtype=np.float64,
)

# TNM given the grouped stage. Rows: STAGES then "not staged"; T depends on N as well so
# that e.g. stage II is T2-3 N0 or T1-2 N1.
_N_PROBS: Final = np.array(
    [  # NX N0 N1 N2 N3
        (0, 1, 0, 0, 0),  # 0
        (0, 1, 0, 0, 0),  # I
        (0, 0.6, 0.4, 0, 0),  # II
        (0, 0.1, 0.4, 0.4, 0.1),  # III
        (0.08, 0.2, 0.25, 0.3, 0.17),  # IV
        (0.8, 0.15, 0.05, 0, 0),  # unknown
        (1, 0, 0, 0, 0),  # not staged
    ],
    dtype=np.float64,
)


def _t_table() -> Floats:
    """P(T | stage group, N) as a (7 * 5) x 7 table; rows = stage group * 5 + N code."""
    # TX T0 Tis T1 T2 T3 T4
    any_t = (0.08, 0, 0, 0.10, 0.25, 0.27, 0.30)
    unknown_t = (0.70, 0, 0, 0.08, 0.10, 0.08, 0.04)
    by_stage_n: dict[tuple[int, int], tuple[float, ...]] = {
        (1, 1): (0, 0, 0, 0.65, 0.35, 0, 0),
        (2, 1): (0, 0, 0, 0, 0.4, 0.6, 0),
        (2, 2): (0, 0, 0, 0.35, 0.65, 0, 0),
        (3, 1): (0, 0, 0, 0, 0, 0.3, 0.7),
        (3, 2): (0, 0, 0, 0.05, 0.25, 0.45, 0.25),
    }
    rows = []
    for group in range(_N_STAGES + 1):
        for n_code in range(len(_N)):
            if group == 0:
                row: tuple[float, ...] = (0, 0, 1, 0, 0, 0, 0)
            elif group in (1, 2, 3):
                row = by_stage_n.get((group, min(n_code, 2)), (0, 0, 0, 0.15, 0.3, 0.35, 0.2))
            elif group == 4:
                row = any_t
            elif group == 5:
                row = unknown_t
            else:
                row = (1, 0, 0, 0, 0, 0, 0)
            rows.append(row)
    return np.array(rows, dtype=np.float64)


_T_PROBS: Final = _t_table()
_M_CODE_BY_GROUP: Final = np.array([_M["M0"]] * 4 + [_M["M1"], _M["MX"], _M["MX"]])

# --------------------------------------------------------------------------------------------
# Treatment, waiting time, survival.
# --------------------------------------------------------------------------------------------


def _tx(**weights: float) -> tuple[float, ...]:
    """First-treatment weights in schema order (surgery ... none); unnamed ones are 0."""
    unknown = set(weights) - set(_TREAT)
    if unknown:
        raise ValueError(f"unknown treatment(s) {sorted(unknown)}")
    return tuple(weights.get(t, 0.0) for t in _TREAT)


_TREATMENT_DEFAULT: Final[dict[str, tuple[float, ...]]] = {
    "0": _tx(surgery=0.90, radiotherapy=0.02, none=0.08),
    "I": _tx(surgery=0.80, radiotherapy=0.08, chemotherapy=0.04, hormone=0.02, none=0.06),
    "II": _tx(surgery=0.70, radiotherapy=0.10, chemotherapy=0.12, hormone=0.02, none=0.06),
    "III": _tx(surgery=0.35, radiotherapy=0.20, chemotherapy=0.35, targeted=0.02,
               immunotherapy=0.01, hormone=0.02, none=0.05),
    "IV": _tx(surgery=0.08, radiotherapy=0.15, chemotherapy=0.45, targeted=0.05,
              immunotherapy=0.07, hormone=0.02, none=0.18),
    "unknown": _tx(surgery=0.35, radiotherapy=0.10, chemotherapy=0.15, none=0.40),
}  # fmt: skip
_ALL_STAGES = dict.fromkeys(STAGES)
_TREATMENT_BY_TYPE: Final[dict[str, dict[str, tuple[float, ...]]]] = {
    "prostate": {
        "I": _tx(surgery=0.30, radiotherapy=0.20, hormone=0.05, none=0.45),
        "II": _tx(surgery=0.40, radiotherapy=0.30, hormone=0.10, none=0.20),
        "III": _tx(surgery=0.25, radiotherapy=0.35, hormone=0.35, none=0.05),
        "IV": _tx(hormone=0.80, chemotherapy=0.07, radiotherapy=0.03, none=0.10),
        "unknown": _tx(surgery=0.10, radiotherapy=0.10, hormone=0.30, none=0.50),
    },
    "breast": {
        "0": _tx(surgery=0.97, none=0.03),
        "I": _tx(surgery=0.93, chemotherapy=0.03, hormone=0.03, none=0.01),
        "II": _tx(surgery=0.75, chemotherapy=0.20, hormone=0.04, none=0.01),
        "III": _tx(surgery=0.30, chemotherapy=0.60, radiotherapy=0.02, hormone=0.05, none=0.03),
        "IV": _tx(surgery=0.03, radiotherapy=0.05, chemotherapy=0.35, targeted=0.05,
                  hormone=0.45, none=0.07),
        "unknown": _tx(surgery=0.60, chemotherapy=0.10, hormone=0.20, none=0.10),
    },
    "lung": {
        "I": _tx(surgery=0.70, radiotherapy=0.22, chemotherapy=0.02, none=0.06),
        "II": _tx(surgery=0.55, radiotherapy=0.20, chemotherapy=0.15, none=0.10),
        "III": _tx(surgery=0.15, radiotherapy=0.25, chemotherapy=0.50, immunotherapy=0.02,
                   none=0.08),
        "IV": _tx(radiotherapy=0.12, chemotherapy=0.42, targeted=0.03, immunotherapy=0.15,
                  none=0.28),
        "unknown": _tx(surgery=0.10, radiotherapy=0.15, chemotherapy=0.20, none=0.55),
    },
    "colorectal": {
        "I": _tx(surgery=0.93, radiotherapy=0.03, none=0.04),
        "II": _tx(surgery=0.90, radiotherapy=0.05, none=0.05),
        "III": _tx(surgery=0.70, radiotherapy=0.15, chemotherapy=0.10, none=0.05),
        "IV": _tx(surgery=0.20, chemotherapy=0.55, targeted=0.07, immunotherapy=0.02,
                  none=0.16),
    },
    "melanoma": {
        "I": _tx(surgery=0.98, none=0.02),
        "II": _tx(surgery=0.97, none=0.03),
        "III": _tx(surgery=0.75, targeted=0.05, immunotherapy=0.15, none=0.05),
        "IV": _tx(surgery=0.05, radiotherapy=0.05, chemotherapy=0.10, targeted=0.20,
                  immunotherapy=0.45, none=0.15),
    },
    "pancreas": {
        "I": _tx(surgery=0.60, chemotherapy=0.30, none=0.10),
        "II": _tx(surgery=0.50, chemotherapy=0.35, none=0.15),
        "III": _tx(surgery=0.10, chemotherapy=0.60, none=0.30),
        "IV": _tx(chemotherapy=0.50, none=0.50),
    },
    "kidney": {
        "IV": _tx(surgery=0.15, targeted=0.45, immunotherapy=0.20, none=0.20),
    },
    "thyroid": dict.fromkeys(("I", "II", "III"), _tx(surgery=0.95, none=0.05)),
    "lymphoma": dict.fromkeys(_ALL_STAGES, _tx(chemotherapy=0.80, radiotherapy=0.08, none=0.12)),
    "leukaemia": dict.fromkeys(_ALL_STAGES, _tx(chemotherapy=0.55, targeted=0.10, none=0.35)),
    "brain": dict.fromkeys(_ALL_STAGES, _tx(surgery=0.70, radiotherapy=0.12, chemotherapy=0.03,
                                           none=0.15)),
}  # fmt: skip
# Two extra treatment groups after type x stage: CLL (watch and wait) and AML.
_TREATMENT_EXTRA: Final = (
    ("9823/3", _tx(chemotherapy=0.20, targeted=0.15, none=0.65)),
    ("9861/3", _tx(chemotherapy=0.85, none=0.15)),
)
_TREATMENT: Final = np.array(
    [
        _TREATMENT_BY_TYPE.get(t, {}).get(s, _TREATMENT_DEFAULT[s])
        for t in CANCER_TYPES
        for s in STAGES
    ]
    + [probs for _, probs in _TREATMENT_EXTRA],
    dtype=np.float64,
)
# Mean days from diagnosis to each first treatment (index = treatment code; "none" unused).
_WAIT_MEAN: Final = np.array([28.0, 35.0, 24.0, 32.0, 30.0, 12.0, 0.0])
_WAIT_SHAPE: Final = 2.5

_WEIBULL_SHAPE: Final = 0.9  # < 1: cancer hazard falls with time since diagnosis
_AGE_HR_PER_YEAR: Final = 0.025  # excess hazard per year of age over 65
_CALENDAR_HR_PER_YEAR: Final = 0.02  # survival improves by ~2% hazard per diagnosis year
_MORPH_HR: Final = {"8041/3": 1.8, "9440/3": 2.5, "9823/3": 0.35, "9861/3": 2.5}
_MORPH_HR_ARRAY: Final = np.array([_MORPH_HR.get(m, 1.0) for m in MORPHOLOGY_CODES])
# Background (non-cancer) mortality: Gompertz hazard h(a) = h70 * exp(B (a - 70)) per year.
_GOMPERTZ_B: Final = 0.095
_GOMPERTZ_H70: Final = np.array([0.009, 0.014])  # female, male (Norway life tables)

# --------------------------------------------------------------------------------------------
# Site profiles.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SiteProfile:
    """How one site's registry differs from the calibration (the non-IID part).

    Attributes:
        country: ISO 3166-1 code of the registry (schema ``COUNTRIES``).
        regions: NUTS-2 regions of the catchment area (schema ``REGIONS``, same country).
        region_weights: Relative share of each region (equal if empty).
        age_shift: Years added to the mean age at diagnosis (older rural catchments).
        type_mix: ``(cancer_type, multiplier)`` pairs applied to the national type mix
            (e.g. a thoracic referral centre sees more lung cancer).
        stage_shift: Tilt of the stage I-IV distribution; positive means later stage.
            Stage weight ``j`` (I=1 .. IV=4) is multiplied by ``exp(stage_shift * (j - 2.5))``.
        testing_multiplier: Scales every biomarker testing rate (capped at 99%).
        trial_rate: Share of tumours enrolled in a clinical trial.
        treatment_delay: Scales the mean waiting time to first treatment.
        survival_hr: Hazard ratio of cancer death relative to the calibration.
        follow_up_lag_days: Mean days between the last follow-up and :data:`DATA_AS_OF`.
    """

    country: str
    regions: tuple[str, ...]
    region_weights: tuple[float, ...] = ()
    age_shift: float = 0.0
    type_mix: tuple[tuple[str, float], ...] = ()
    stage_shift: float = 0.0
    testing_multiplier: float = 1.0
    trial_rate: float = 0.05
    treatment_delay: float = 1.0
    survival_hr: float = 1.0
    follow_up_lag_days: float = 14.0

    def __post_init__(self) -> None:
        """Reject profiles that would produce values outside the schema."""
        if self.country not in COUNTRIES:
            raise ValueError(f"unknown country {self.country!r}")
        if not self.regions:
            raise ValueError("a site profile needs at least one region")
        for region in self.regions:
            if region not in REGIONS or not region.startswith(self.country):
                raise ValueError(f"region {region!r} is not a schema region of {self.country}")
        if self.region_weights and (
            len(self.region_weights) != len(self.regions) or min(self.region_weights) <= 0
        ):
            raise ValueError("region_weights must give one positive weight per region")
        for name, multiplier in self.type_mix:
            if name not in _TYPE or not multiplier > 0:
                raise ValueError(f"bad type_mix entry ({name!r}, {multiplier})")
        checks = {
            "age_shift": -10 <= self.age_shift <= 10,
            "stage_shift": -1 <= self.stage_shift <= 1,
            "testing_multiplier": 0 <= self.testing_multiplier <= 3,
            "trial_rate": 0 <= self.trial_rate <= 0.5,
            "treatment_delay": 0 < self.treatment_delay <= 5,
            "survival_hr": 0 < self.survival_hr <= 5,
            "follow_up_lag_days": 0 <= self.follow_up_lag_days <= 60,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"site profile out of range: {', '.join(bad)}")

    def type_shares(self) -> Floats:
        """Probability of each cancer type (schema order) at this site."""
        multipliers = dict(self.type_mix)
        shares = _BASE_SHARE * np.array([multipliers.get(t, 1.0) for t in CANCER_TYPES])
        return np.asarray(shares / shares.sum(), dtype=np.float64)

    def stage_mix(self) -> Floats:
        """P(stage | type) for invasive tumours, one row per type, columns = STAGES."""
        tilt = np.exp(self.stage_shift * (np.arange(_N_STAGES) - 2.5))
        tilt[0] = 0.0  # stage 0 only from in situ morphology
        tilt[-1] = 1.0  # unknown stays as calibrated
        mix = _STAGE_MIX * tilt
        return np.asarray(mix / mix.sum(axis=1, keepdims=True), dtype=np.float64)


SITE_PROFILES: Final[dict[str, SiteProfile]] = {
    # University hospital in the capital: younger urban catchment, national referral centre
    # (more molecular testing and trials), a little more melanoma and lung.
    "oslo": SiteProfile(
        country="NO",
        regions=("NO08", "NO02", "NO09"),
        region_weights=(0.75, 0.10, 0.15),
        age_shift=-1.5,
        type_mix=(("melanoma", 1.1), ("lung", 1.05), ("prostate", 0.95)),
        stage_shift=0.0,
        testing_multiplier=1.15,
        trial_rate=0.07,
        treatment_delay=0.9,
        follow_up_lag_days=7.0,
    ),
    # Western Norway: older catchment, slightly later stage.
    "bergen": SiteProfile(
        country="NO",
        regions=("NO0A", "NO09"),
        region_weights=(0.95, 0.05),
        age_shift=1.5,
        type_mix=(("prostate", 1.05), ("lung", 0.95)),
        stage_shift=0.15,
        testing_multiplier=1.0,
        trial_rate=0.05,
        treatment_delay=1.0,
        follow_up_lag_days=14.0,
    ),
    # Central and northern Norway: oldest, most rural catchment, later stage, fewer tests.
    "trondheim": SiteProfile(
        country="NO",
        regions=("NO06", "NO07"),
        region_weights=(0.8, 0.2),
        age_shift=2.0,
        type_mix=(("lung", 1.1), ("melanoma", 0.9), ("stomach", 1.2)),
        stage_shift=0.25,
        testing_multiplier=0.85,
        trial_rate=0.04,
        treatment_delay=1.15,
        survival_hr=1.05,
        follow_up_lag_days=21.0,
    ),
    "stockholm": SiteProfile(
        country="SE",
        regions=("SE11", "SE12"),
        region_weights=(0.9, 0.1),
        age_shift=0.0,
        type_mix=(("prostate", 1.15), ("melanoma", 1.1), ("lung", 0.85)),
        stage_shift=-0.1,
        testing_multiplier=1.1,
        trial_rate=0.08,
        treatment_delay=1.05,
        survival_hr=0.95,
        follow_up_lag_days=10.0,
    ),
    # Denmark: markedly more lung cancer, somewhat later stage.
    "copenhagen": SiteProfile(
        country="DK",
        regions=("DK01", "DK02"),
        region_weights=(0.8, 0.2),
        age_shift=0.5,
        type_mix=(("lung", 1.35), ("breast", 1.1), ("melanoma", 0.95)),
        stage_shift=0.1,
        testing_multiplier=1.05,
        trial_rate=0.06,
        treatment_delay=0.95,
        survival_hr=1.05,
        follow_up_lag_days=10.0,
    ),
}
"""The named demo sites."""


def _site_entropy(site: str, purpose: str) -> list[int]:
    """Four 32-bit words from SHA-256 of the site name (stable across processes).

    ``hash()`` is salted per process, so it would break reproducibility.
    """
    digest = hashlib.sha256(f"varde-synth/{purpose}/{site}".encode()).digest()
    return [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]


def profile_for(site: str) -> SiteProfile:
    """Return the profile of a named site, or a stable variation for any other name.

    Why: tests and demos may invent site names; each must get its own but reproducible
    registry character, derived from SHA-256 of the name (never the salted ``hash()``).

    Args:
        site: Site name, e.g. ``"oslo"``.

    Returns:
        ``SITE_PROFILES[site]`` if listed, else a perturbation of a listed profile (same
        country, a subset of that country's regions); pass ``profile=`` to
        :func:`generate_registry` to choose one explicitly.

    Raises:
        ValueError: If ``site`` is empty.
    """
    if not site:
        raise ValueError("site name must not be empty")
    if site in SITE_PROFILES:
        return SITE_PROFILES[site]
    rng = np.random.default_rng(_site_entropy(site, "profile"))
    base = SITE_PROFILES[sorted(SITE_PROFILES)[int(rng.integers(len(SITE_PROFILES)))]]
    country = base.country
    candidates = [r for r in REGIONS if r.startswith(country)]
    n_regions = int(rng.integers(1, min(3, len(candidates)) + 1))
    picked = rng.choice(len(candidates), size=n_regions, replace=False)
    regions = tuple(candidates[int(i)] for i in sorted(picked))
    multipliers = np.exp(rng.normal(0.0, 0.12, size=_N_TYPES))
    return SiteProfile(
        country=country,
        regions=regions,
        region_weights=tuple(float(w) for w in rng.uniform(0.2, 1.0, size=n_regions)),
        age_shift=float(np.clip(base.age_shift + rng.uniform(-2, 2), -10, 10)),
        type_mix=tuple((t, float(m)) for t, m in zip(CANCER_TYPES, multipliers, strict=True)),
        stage_shift=float(np.clip(base.stage_shift + rng.uniform(-0.15, 0.15), -1, 1)),
        testing_multiplier=float(base.testing_multiplier * rng.uniform(0.8, 1.2)),
        trial_rate=float(rng.uniform(0.03, 0.08)),
        treatment_delay=float(base.treatment_delay * rng.uniform(0.85, 1.2)),
        survival_hr=float(base.survival_hr * rng.uniform(0.9, 1.1)),
        follow_up_lag_days=float(rng.uniform(5, 30)),
    )


# --------------------------------------------------------------------------------------------
# Vectorised helpers.
# --------------------------------------------------------------------------------------------


def _draw(u: Floats, group: Ints, probs: Floats) -> Ints:
    """Draw one category per row from the row of ``probs`` picked by ``group``.

    One ``searchsorted`` over the concatenated, offset cumulative tables replaces a loop
    over groups: row ``g`` of the table is shifted to ``[g, g + 1]`` and ``g + u`` lands
    inside it. Zero-probability categories are never drawn.

    Args:
        u: Uniform draws in ``[0, 1)``, one per row.
        group: Row of ``probs`` to use, one per row.
        probs: ``(groups, categories)`` table whose rows sum to 1.

    Returns:
        Category index per row.
    """
    n_groups, width = probs.shape
    cum = np.cumsum(probs, axis=1)
    cum /= cum[:, -1:]
    flat = (cum + np.arange(n_groups)[:, None]).ravel()
    picked = np.searchsorted(flat, group + u, side="right") - group * width
    return np.asarray(np.minimum(picked, width - 1), dtype=np.int64)


def _ymd(days: Ints) -> tuple[Ints, Ints, Ints]:
    """Year, month and day of days since 1970-01-01 (proleptic Gregorian).

    Integer arithmetic (H. Hinnant's ``civil_from_days``) because numpy's datetime64 unit
    casts are several times slower on a million rows.
    """
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = np.where(mp < 10, mp + 3, mp - 9)
    year = yoe + era * 400 + (month <= 2)
    return year, month, day


def _completed_years(birth: Ints, on: Ints) -> Ints:
    """Age in whole years on day ``on`` of someone born on day ``birth``."""
    by, bm, bd = _ymd(birth)
    oy, om, od = _ymd(on)
    before_birthday = (om * 32 + od) < (bm * 32 + bd)
    return oy - by - before_birthday.astype(np.int64)


def _beta_params(mean: Floats, sd: Floats, low: float, high: float) -> tuple[Floats, Floats]:
    """Beta shape parameters with the given mean and sd on ``[low, high]``."""
    mu = np.clip((mean - low) / (high - low), 0.05, 0.95)
    var = np.minimum((sd / (high - low)) ** 2, 0.9 * mu * (1 - mu))
    k = mu * (1 - mu) / var - 1
    return mu * k, (1 - mu) * k


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


# --------------------------------------------------------------------------------------------
# The generator.
# --------------------------------------------------------------------------------------------


def _tumour_counts(rng: np.random.Generator, n_tumours: int) -> Ints:
    """Tumours per patient (1-3), summing exactly to ``n_tumours``."""
    probs = np.array(TUMOURS_PER_PATIENT)
    mean = float(probs @ np.arange(1, len(probs) + 1))
    counts = np.empty(0, dtype=np.int64)
    while counts.sum() < n_tumours:  # one extra round at most, in practice
        batch = int(n_tumours / mean * 1.02) + 16
        more = rng.choice(np.arange(1, len(probs) + 1), size=batch, p=probs)
        counts = np.concatenate([counts, more.astype(np.int64)])
    total = np.cumsum(counts)
    n_patients = int(np.searchsorted(total, n_tumours)) + 1
    counts = counts[:n_patients].copy()
    counts[-1] -= int(total[n_patients - 1]) - n_tumours
    return counts


def _diagnosis_days(rng: np.random.Generator, size: int) -> Ints:
    """Diagnosis days with incidence rising linearly over the window.

    Inverse CDF of the density ``1 + g t`` on ``t`` in ``[0, 1)``.
    """
    span = _END_DAY - _START_DAY + 1
    g = INCIDENCE_GROWTH * span / _DAYS_PER_YEAR
    u = rng.random(size)
    t = (np.sqrt(1.0 + 2.0 * g * u * (1.0 + g / 2.0)) - 1.0) / g
    return _START_DAY + np.minimum((t * span).astype(np.int64), span - 1)


def _hazard_ratio(age: Floats, year: Ints, morph: Ints, profile: SiteProfile) -> Floats:
    """Cancer-death hazard relative to the five-year table (age 65, diagnosed 2010)."""
    log_hr = _AGE_HR_PER_YEAR * (age - 65.0) - _CALENDAR_HR_PER_YEAR * (year - 2010)
    return np.asarray(np.exp(log_hr) * _MORPH_HR_ARRAY[morph] * profile.survival_hr)


def _stage_given_survival(
    u: Floats, prior: Floats, h5: Floats, hr: Floats, alive_for: Floats
) -> Ints:
    """Draw stages from P(stage | type) reweighted by P(surviving ``alive_for`` days | stage).

    Why: a tumour followed by a later diagnosis belongs to someone who survived until then,
    so it is rarely stage IV lung; conditioning the stage (Bayes) rather than only the death
    time avoids immortal stage IV patients.

    Args:
        u: Uniform draws, one per row.
        prior: P(stage) per row, shape ``(rows, stages)``.
        h5: Five-year cumulative hazard per row and stage, same shape.
        hr: Hazard ratio per row.
        alive_for: Days the patient is known to survive, per row.
    """
    exposure = (alive_for / (5.0 * _DAYS_PER_YEAR)) ** _WEIBULL_SHAPE
    posterior = prior * np.exp(-(hr * exposure)[:, None] * h5)
    total = posterior.sum(axis=1, keepdims=True)
    posterior = np.where(total > 0, posterior / np.where(total > 0, total, 1.0), prior)
    passed = u[:, None] >= np.cumsum(posterior, axis=1)[:, :-1]
    return np.asarray(passed.sum(axis=1), dtype=np.int64)


def _cancer_death_days(
    rng: np.random.Generator, h5: Floats, hr: Floats, alive_for: Floats
) -> Floats:
    """Days from diagnosis to cancer death (Weibull; may lie far beyond follow-up).

    The five-year cumulative hazard ``h5`` (from the survival table) fixes the scale and
    ``hr`` moves it. The draw is conditional on surviving ``alive_for`` days (the patient
    is known to be alive at a later diagnosis).
    """
    already = (alive_for / (5.0 * _DAYS_PER_YEAR)) ** _WEIBULL_SHAPE
    exposure = already + rng.standard_exponential(h5.size) / (hr * h5)
    days = 5.0 * _DAYS_PER_YEAR * exposure ** (1.0 / _WEIBULL_SHAPE)
    return np.maximum(np.minimum(days, 60.0 * _DAYS_PER_YEAR), alive_for)


def _background_death_days(
    rng: np.random.Generator, age: Floats, male: Bools, alive_for: Floats
) -> Floats:
    """Days from ``age`` to a non-cancer death (Gompertz), given ``alive_for`` days survived."""
    later_age = age + alive_for / _DAYS_PER_YEAR
    h_now = _GOMPERTZ_H70[male.astype(np.int64)] * np.exp(_GOMPERTZ_B * (later_age - 70.0))
    e = rng.standard_exponential(age.size)
    days = alive_for + np.log1p(_GOMPERTZ_B * e / h_now) / _GOMPERTZ_B * _DAYS_PER_YEAR
    return np.asarray(days, dtype=np.float64)


def _biomarkers(
    rng: np.random.Generator,
    type_code: Ints,
    morph: Ints,
    stage: Ints,
    year: Ints,
    profile: SiteProfile,
) -> dict[str, Ints]:
    """Category codes of every biomarker field; ``not_tested`` where not eligible/tested.

    One uniform per tumour decides testing for all markers (panels test together), one
    decides which driver (if any) is present, so drivers are mutually exclusive and each
    marker's positive share among the tested equals its table value.
    """
    key = type_code * _N_MORPH + morph
    u_test, u_driver = rng.random(type_code.size), rng.random(type_code.size)
    early = (stage == _STAGE["I"]) | (stage == _STAGE["II"]) | (stage == _STAGE["unknown"])
    codes: dict[str, Ints] = {}
    for name, table in _MARKERS.items():
        since = table.since[key]
        span = np.maximum(_LAST_YEAR - since, 1)
        ramp = np.clip((year - since) / span, 0.0, 1.0)
        rate = table.start[key] + (table.end[key] - table.start[key]) * ramp
        rate = np.where(year >= since, rate, 0.0) * np.where(early, table.early[key], 1.0)
        rate = np.minimum(rate * profile.testing_multiplier, 0.99)
        tested = table.eligible[key] & (stage != _STAGE["0"]) & (u_test < rate)
        if name in DRIVER_MARKERS:
            positive = (u_driver >= table.driver_low[key]) & (u_driver < table.driver_high[key])
            result = np.where(positive, 0, 1).astype(np.int64)
        else:
            result = _draw(rng.random(type_code.size), key, table.outcome)
        codes[name] = np.where(tested, result, table.outcome.shape[1])
    return codes


def _first_treatment(
    rng: np.random.Generator,
    type_code: Ints,
    stage: Ints,
    morph: Ints,
    year: Ints,
    markers: Mapping[str, Ints],
) -> Ints:
    """First treatment: a type x stage table, then biomarker- and era-driven overrides."""
    group = type_code * _N_STAGES + stage
    for i, (code, _) in enumerate(_TREATMENT_EXTRA):
        group = np.where(morph == _MORPH[code], _N_TYPES * _N_STAGES + i, group)
    treat = _draw(rng.random(type_code.size), group, _TREATMENT)
    u = rng.random(type_code.size)
    pos = {name: markers[name] == 0 for name in DRIVER_MARKERS + ("her2", "msi")}
    is_type = {t: type_code == _TYPE[t] for t in ("lung", "melanoma", "breast", "colorectal")}
    stage_iv, stage_iii = stage == _STAGE["IV"], stage == _STAGE["III"]
    driver = pos["egfr"] | pos["alk"] | pos["ros1"]
    targeted, immuno = _TREAT["targeted"], _TREAT["immunotherapy"]
    pdl1 = markers["pdl1_tps"]
    overrides: list[tuple[Bools, float, int]] = [
        # (which tumours, probability, treatment)
        (is_type["lung"] & stage_iv & ~driver & (pdl1 == 2) & (year >= 2017), 0.70, immuno),
        (is_type["lung"] & stage_iv & ~driver & (pdl1 == 1) & (year >= 2019), 0.35, immuno),
        (is_type["lung"] & stage_iv & pos["kras_g12c"] & (year >= 2022), 0.25, targeted),
        (is_type["lung"] & stage_iv & driver, 0.85, targeted),
        (is_type["lung"] & stage_iii & driver, 0.40, targeted),
        (is_type["melanoma"] & (stage_iii | stage_iv) & pos["braf_v600e"], 0.45, targeted),
        (is_type["breast"] & (stage >= _STAGE["II"]) & (stage <= _STAGE["IV"]) & pos["her2"],
         0.50, targeted),
        (is_type["colorectal"] & stage_iv & pos["msi"] & (year >= 2020), 0.50, immuno),
    ]  # fmt: skip
    for mask, probability, treatment in overrides:
        treat = np.where(mask & (u < probability), treatment, treat)
    # Before checkpoint inhibitors, the same patients got chemotherapy.
    early_era = (treat == immuno) & (year < IMMUNOTHERAPY_FROM)
    return np.where(early_era, _TREAT["chemotherapy"], treat)


def _categorical(name: str, codes: NDArray[np.integer]) -> pd.Categorical:
    """A ``pd.Categorical`` over the schema's full category list from integer codes."""
    dtype = pd.CategoricalDtype(list(_categories(name)), ordered=False)
    return pd.Categorical.from_codes(codes.astype(np.int16), dtype=dtype, validate=False)


def _dates(days: Ints) -> NDArray[np.datetime64]:
    return days.astype("datetime64[D]").astype("datetime64[ns]")


def _patient_ids(site: str, numbers: Ints) -> pd.api.extensions.ExtensionArray:
    """``f"{site}-P{n:07d}"`` for every number, built in Arrow without a Python loop."""
    import pyarrow.compute as pc

    digits = pc.utf8_lpad(pc.cast(pa.array(numbers), pa.string()), width=7, padding="0")
    ids = pc.binary_join_element_wise(f"{site}-P", digits, "")
    return pd.array(ids, dtype=PATIENT_ID_DTYPE)


def generate_registry(
    site: str, n_tumours: int, seed: int = 0, profile: SiteProfile | None = None
) -> pd.DataFrame:
    """Generate a synthetic registry for one site: ``n_tumours`` rows in the common schema.

    Why seeded by (seed, SHA-256 of site): the same call always gives the same frame, and
    two sites with the same seed still get different (independent) patients.

    Args:
        site: Site name; picks the :class:`SiteProfile` (see :func:`profile_for`) and
            prefixes every ``patient_id``.
        n_tumours: Number of rows (tumours); patients number about ``n_tumours / 1.1``.
        seed: Non-negative seed.
        profile: Overrides the site's profile (e.g. for experiments).

    Returns:
        A frame with exactly ``schema.COLUMN_ORDER`` columns, schema dtypes (see
        :func:`conform_registry`) and rows sorted by diagnosis date (``tumour_id`` 1..n).

    Raises:
        ValueError: If ``site`` is empty or ``n_tumours`` or ``seed`` is negative.
    """
    if not site:
        raise ValueError("site name must not be empty")
    if n_tumours < 0 or seed < 0:
        raise ValueError("n_tumours and seed must be non-negative")
    profile = profile if profile is not None else profile_for(site)
    if n_tumours == 0:
        return conform_registry(pd.DataFrame({name: [] for name in COLUMN_ORDER}))
    rng = np.random.default_rng([seed, *_site_entropy(site, "data")])

    # 1. Patients, their index tumour, sex, age, dates.
    counts = _tumour_counts(rng, n_tumours)
    n_patients = counts.size
    starts = np.cumsum(counts) - counts
    patient = np.repeat(np.arange(n_patients), counts)
    is_index = np.zeros(n_tumours, dtype=np.bool_)
    is_index[starts] = True
    shares = profile.type_shares()
    first_type = _draw(rng.random(n_patients), np.zeros(n_patients, dtype=np.int64), shares[None])
    male_p = rng.random(n_patients) < _MALE[first_type]
    child = (rng.random(n_patients) < _CHILD[first_type]) & (counts == 1)
    a, b = _beta_params(_AGE_MEAN + profile.age_shift, _AGE_SD, *_ADULT_AGE)
    low, high = _ADULT_AGE
    index_age = np.where(
        child,
        15.0 * rng.beta(1.2, 1.6, size=n_patients),
        low + (high - low) * rng.beta(a[first_type], b[first_type]),
    )
    # Every tumour's date follows the incidence curve; a patient's earliest is the index.
    planned = _diagnosis_days(rng, n_tumours)
    planned = planned[np.argsort(patient * (1 << 16) + (planned - _START_DAY))]
    index_day = planned[starts]
    birth_p = index_day - np.round(index_age * _DAYS_PER_YEAR).astype(np.int64)
    birth = birth_p[patient]
    diag_day = np.minimum(planned, birth + 110 * 365)  # keep age <= 110
    year = _ymd(diag_day)[0]
    alive_for = (np.maximum.reduceat(diag_day, starts)[patient] - diag_day).astype(np.float64)

    # 2. Types of further tumours, given the patient's sex.
    male = male_p[patient]
    type_code = np.empty(n_tumours, dtype=np.int64)
    type_code[starts] = first_type
    by_sex = np.stack([shares * (1.0 - _MALE), shares * _MALE])
    by_sex /= by_sex.sum(axis=1, keepdims=True)
    extra = ~is_index
    type_code[extra] = _draw(rng.random(int(extra.sum())), male[extra].astype(np.int64), by_sex)

    # 3. Histology, stage, TNM, grade.
    hist_group = type_code.copy()
    child_rows = starts[child]
    hist_group[child_rows] = _CHILD_GROUP_OF_TYPE[type_code[child_rows]]
    combo = _draw(rng.random(n_tumours), hist_group, _HIST_PROBS)
    topo, morph = _HIST_TOPO[hist_group, combo], _HIST_MORPH[hist_group, combo]
    hr = _hazard_ratio((diag_day - birth) / _DAYS_PER_YEAR, year, morph, profile)
    stage_mix = profile.stage_mix()
    stage = _draw(rng.random(n_tumours), type_code, stage_mix)
    known = np.flatnonzero(alive_for > 0)  # tumours followed by a later diagnosis
    stage[known] = _stage_given_survival(
        rng.random(known.size),
        stage_mix[type_code[known]],
        _H5[type_code[known]],
        hr[known],
        alive_for[known],
    )
    stage = np.where(_IN_SITU_MORPH[morph], _STAGE["0"], stage)
    tnm_group = np.where(_STAGED[type_code], stage, _N_STAGES)
    n_stage = _draw(rng.random(n_tumours), tnm_group, _N_PROBS)
    t_stage = _draw(rng.random(n_tumours), tnm_group * len(_N) + n_stage, _T_PROBS)
    m_stage = _M_CODE_BY_GROUP[tnm_group]
    grade_group = type_code.copy()
    grade_group[morph == _MORPH["8041/3"]] = _N_TYPES
    grade_group[morph == _MORPH["9440/3"]] = _N_TYPES + 1
    grade = _draw(rng.random(n_tumours), grade_group, _GRADE)

    # 4. Survival. A patient dies once, at the earliest cancer or background death; every
    # death is drawn conditional on being alive at the patient's last diagnosis.
    cancer_death = _cancer_death_days(rng, _H5[type_code, stage], hr, alive_for)
    background = _background_death_days(rng, index_age, male_p, alive_for[starts])
    death_row = diag_day + cancer_death
    death_row[starts] = np.minimum(death_row[starts], index_day + background)
    death_p = np.floor(np.minimum.reduceat(death_row, starts)).astype(np.int64)
    lag = np.minimum(rng.exponential(profile.follow_up_lag_days, n_patients), _MAX_LAG_DAYS)
    censor_p = _AS_OF_DAY - lag.astype(np.int64)
    dead_p = death_p <= censor_p
    last_contact = np.where(dead_p, death_p, censor_p)[patient]
    survival_days = last_contact - diag_day

    # 5. Derived fields, biomarkers, treatment, trials.
    age = _completed_years(birth, diag_day)
    markers = _biomarkers(rng, type_code, morph, stage, year, profile)
    treat = _first_treatment(rng, type_code, stage, morph, year, markers)
    wait_mean = _WAIT_MEAN[treat] * profile.treatment_delay
    wait = np.floor(rng.gamma(_WAIT_SHAPE, 1.0, n_tumours) * wait_mean / _WAIT_SHAPE)
    wait = wait.astype(np.int64)
    untreated = (treat == _TREAT["none"]) | (wait > survival_days)  # died or lost first
    treat = np.where(untreated, _TREAT["none"], treat)
    trial_weight = (
        np.array([0.2, 0.7, 1.0, 1.3, 1.6, 0.8])[stage]
        * np.where(age >= 80, 0.3, 1.0)
        * np.where(untreated, 0.2, 1.0)
    )
    trial_p = np.minimum(profile.trial_rate * trial_weight / trial_weight.mean(), 0.9)
    trial = (rng.random(n_tumours) >= trial_p).astype(np.int64)  # 0 = "yes"
    region_probs = np.array(profile.region_weights or (1.0,) * len(profile.regions))
    region_pick = _draw(
        rng.random(n_patients),
        np.zeros(n_patients, dtype=np.int64),
        (region_probs / region_probs.sum())[None],
    )
    region = np.array([REGIONS.index(r) for r in profile.regions])[region_pick][patient]
    patient_number = rng.permutation(n_patients).astype(np.int64) + 1

    order = np.argsort(diag_day, kind="stable")
    columns: dict[str, object] = {
        "patient_id": _patient_ids(site, patient_number[patient][order]),
        "tumour_id": np.arange(1, n_tumours + 1, dtype=np.int64),
        "sex": _categorical("sex", male.astype(np.int64)[order]),
        "birth_year": _ymd(birth)[0].astype(np.int32)[order],
        "age_at_diagnosis": age.astype(np.int32)[order],
        "age_band": _categorical(
            "age_band", np.searchsorted(AGE_BAND_EDGES, age[order], side="right") - 1
        ),
        "diagnosis_date": _dates(diag_day[order]),
        "diagnosis_year": year.astype(np.int32)[order],
        "topography": _categorical("topography", topo[order]),
        "cancer_type": _categorical("cancer_type", type_code[order]),
        "morphology": _categorical("morphology", morph[order]),
        "behaviour": _categorical("behaviour", _IN_SITU_MORPH[morph].astype(np.int64)[order] ^ 1),
        "stage": _categorical("stage", stage[order]),
        "t_stage": _categorical("t_stage", t_stage[order]),
        "n_stage": _categorical("n_stage", n_stage[order]),
        "m_stage": _categorical("m_stage", m_stage[order]),
        "grade": _categorical("grade", grade[order]),
        **{name: _categorical(name, codes[order]) for name, codes in markers.items()},
        "first_treatment": _categorical("first_treatment", treat[order]),
        "days_to_treatment": pd.arrays.IntegerArray(wait.astype(np.int32)[order], untreated[order]),
        "clinical_trial": _categorical("clinical_trial", trial[order]),
        "vital_status": _categorical("vital_status", dead_p[patient].astype(np.int64)[order]),
        "last_contact_date": _dates(last_contact[order]),
        "survival_days": survival_days.astype(np.int32)[order],
        "country": _categorical("country", np.full(n_tumours, COUNTRIES.index(profile.country))),
        "region": _categorical("region", region[order]),
    }
    return pd.DataFrame({name: columns[name] for name in COLUMN_ORDER})
