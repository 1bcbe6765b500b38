"""Epidemiological parameter tables per cancer type: the calibration of the generator.

Tumours per patient, incidence growth, each type's share, sex ratio, age, stage mix and
five-year survival; topography x morphology (histology) tables, grade, TNM given the
grouped stage, and the survival hazard constants. Biomarkers live in
:mod:`nodes.synth.biomarkers`, treatment in :mod:`nodes.synth.treatment`, site differences
in :mod:`nodes.synth.profiles`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from nodes.synth.codes import _M, _MORPH, _N, _N_STAGES, _N_TYPES, _TOPO, Floats, Ints
from varde.schema import CANCER_TYPES, MORPHOLOGY_CODES

TUMOURS_PER_PATIENT: Final = (0.91, 0.08, 0.01)
"""Share of patients with 1, 2 and 3 tumours (never more)."""
INCIDENCE_GROWTH: Final = 0.02
"""Yearly relative growth of incidence over the diagnosis window (ageing population)."""

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

# Survival hazard constants.
_WEIBULL_SHAPE: Final = 0.9  # < 1: cancer hazard falls with time since diagnosis
_AGE_HR_PER_YEAR: Final = 0.025  # excess hazard per year of age over 65
_CALENDAR_HR_PER_YEAR: Final = 0.02  # survival improves by ~2% hazard per diagnosis year
_MORPH_HR: Final = {"8041/3": 1.8, "9440/3": 2.5, "9823/3": 0.35, "9861/3": 2.5}
_MORPH_HR_ARRAY: Final = np.array([_MORPH_HR.get(m, 1.0) for m in MORPHOLOGY_CODES])
# Background (non-cancer) mortality: Gompertz hazard h(a) = h70 * exp(B (a - 70)) per year.
_GOMPERTZ_B: Final = 0.095
_GOMPERTZ_H70: Final = np.array([0.009, 0.014])  # female, male (Norway life tables)
