"""First-treatment tables (type x stage, plus CLL and AML) and waiting times to treatment.

The biomarker- and era-driven overrides of these tables are applied where treatment is
drawn (:func:`nodes.synth.sampler._first_treatment`).
"""

from __future__ import annotations

from typing import Final

import numpy as np

from nodes.synth.codes import _TREAT
from varde.schema import CANCER_TYPES, STAGES

IMMUNOTHERAPY_FROM: Final = 2015
"""Checkpoint inhibitors as first treatment only from this diagnosis year."""


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
