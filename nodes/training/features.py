"""Encode a site's prepared registry columns into the job's public model design.

Why the encoding only uses the schema: every site must produce the same columns
in the same order (see :func:`varde.training.design_columns`) and the scaling
must not depend on the data, or the scaling itself would leak (a site's
maximum age is a statistic). Categorical values become indicators over the
schema's categories; integers are scaled to ``[-1, 1]`` over the schema's
public bounds (a missing integer becomes the midpoint, 0). So every row has
``||x||_2 <= sqrt(1 + number of features)``, and the per-row gradient clip of
:mod:`nodes.training.dp` is what actually bounds each row's influence. A Cox
model's design has no intercept column (:func:`varde.training.design_columns`).

Held-out patients: each site keeps a share ``spec.holdout`` of its patients
out of training, chosen by a public hash of the patient id
(:attr:`nodes.data.RegistryData.patient_keys`), so the split is the same in
every round and every process, depends on no other row, and keeps all of a
patient's tumours on the same side. Training reads only the other patients;
the final evaluation (:mod:`nodes.training.evaluation`) only these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from nodes.data import RegistryData
from varde.schema import FIELDS_BY_NAME, FieldKind
from varde.training import OUTCOME_HORIZON_DAYS, TrainingSpec, design_columns

Floats = NDArray[np.float64]


Part = Literal["train", "holdout", "all"]

_HOLDOUT_SALT = np.uint64(0x9E3779B97F4A7C15)
"""Mixes the patient key so the holdout split is unrelated to Cox's blocks (which use the
key's low bits)."""


def holdout_mask(data: RegistryData, fraction: float) -> NDArray[np.bool_]:
    """``True`` for the rows of held-out patients (a public share ``fraction`` of them)."""
    if not 0 <= fraction < 1:
        raise ValueError("the held-out fraction must be in [0, 1)")
    if fraction == 0:
        return np.zeros(data.n_rows, dtype=bool)
    if data.patient_keys is None:
        raise ValueError("the registry was prepared without patient keys")
    with np.errstate(over="ignore"):
        mixed = (data.patient_keys ^ _HOLDOUT_SALT) * np.uint64(0xBF58476D1CE4E5B9)
    unit = (mixed >> np.uint64(11)).astype(np.float64) / float(2**53)
    return np.asarray(unit < fraction, dtype=bool)


def part_mask(data: RegistryData, spec: TrainingSpec, part: Part) -> NDArray[np.bool_]:
    """Rows of ``part``: training patients, held-out patients, or every row."""
    if part == "all":
        return np.ones(data.n_rows, dtype=bool)
    held = holdout_mask(data, spec.holdout)
    return held if part == "holdout" else ~held


def encode_features(data: RegistryData, features: list[str], *, intercept: bool = True) -> Floats:
    """The design matrix (rows x :func:`design_columns`) of every row of ``data``."""
    n = data.n_rows
    blocks: list[Floats] = [np.ones((n, 1))] if intercept else [np.zeros((n, 0))]
    for name in features:
        spec = FIELDS_BY_NAME[name]
        column = data.column(name)
        if spec.kind is FieldKind.CATEGORICAL:
            codes = np.asarray(column, dtype=np.int64)
            block = np.zeros((n, len(spec.categories)))
            known = codes >= 0
            block[np.flatnonzero(known), codes[known]] = 1.0
            blocks.append(block)
        elif spec.kind is FieldKind.INTEGER:
            if spec.lower is None or spec.upper is None:
                raise ValueError(f"integer field {name!r} has no public bounds in the schema")
            mid = (spec.lower + spec.upper) / 2.0
            half = (spec.upper - spec.lower) / 2.0
            values = np.asarray(column, dtype=np.float64)
            scaled = np.clip((values - mid) / half, -1.0, 1.0)
            blocks.append(np.nan_to_num(scaled, nan=0.0).reshape(n, 1))
        else:
            raise ValueError(f"field {name!r} cannot be a feature")
    matrix = np.hstack(blocks)
    model = "logistic" if intercept else "cox"
    if matrix.shape[1] != len(design_columns(features, model)):  # pragma: no cover - invariant
        raise AssertionError("encoding disagrees with the public design")
    return matrix


def outcome_death_within_2y(data: RegistryData) -> tuple[Floats, NDArray[np.bool_]]:
    """Label 1 for death within two years of diagnosis, 0 for two-year survivors.

    Rows alive at last contact with less than two years of follow-up have an
    unknown outcome and are left out (the returned mask is ``False`` there).
    """
    dead = np.asarray(data.column("vital_status")) == FIELDS_BY_NAME[
        "vital_status"
    ].categories.index("dead")
    days = np.asarray(data.column("survival_days"), dtype=np.float64)
    died_early = dead & (days <= OUTCOME_HORIZON_DAYS)
    survived = days > OUTCOME_HORIZON_DAYS
    known = (died_early | survived) & ~np.isnan(days)
    return died_early.astype(np.float64), known


def design(data: RegistryData, spec: TrainingSpec, part: Part = "train") -> tuple[Floats, Floats]:
    """``(X, y)`` of a logistic job: rows of ``part`` with a known outcome only."""
    if spec.outcome != "death_within_2y":
        raise ValueError(f"a logistic design needs outcome death_within_2y, not {spec.outcome!r}")
    y, known = outcome_death_within_2y(data)
    keep = known & part_mask(data, spec, part)
    x = encode_features(data, spec.features)
    return x[keep], y[keep]


@dataclass(frozen=True)
class SurvivalDesign:
    """A Cox job's rows: features (no intercept), time, event, and patient keys (for blocks)."""

    x: Floats
    time: Floats
    event: Floats
    patient_keys: NDArray[np.uint64]

    @property
    def n_rows(self) -> int:
        """Number of rows."""
        return int(self.x.shape[0])


def outcome_overall_survival(data: RegistryData) -> tuple[Floats, Floats, NDArray[np.bool_]]:
    """``(time, event, known)``: days to death or last contact, death from any cause.

    Rows without a survival time or vital status are left out (``known`` False).
    """
    status = np.asarray(data.column("vital_status"))
    event = status == FIELDS_BY_NAME["vital_status"].categories.index("dead")
    days = np.asarray(data.column("survival_days"), dtype=np.float64)
    known = ~np.isnan(days) & (status >= 0)
    return days, event.astype(np.float64), known


def survival_design(data: RegistryData, spec: TrainingSpec, part: Part = "train") -> SurvivalDesign:
    """The Cox design of ``part`` (rows with a known survival outcome only)."""
    if spec.outcome != "overall_survival":
        raise ValueError(f"a Cox design needs outcome overall_survival, not {spec.outcome!r}")
    days, event, known = outcome_overall_survival(data)
    keep = known & part_mask(data, spec, part)
    if data.patient_keys is None:
        raise ValueError("the registry was prepared without patient keys")
    x = encode_features(data, spec.features, intercept=False)
    return SurvivalDesign(
        x=x[keep],
        time=days[keep],
        event=event[keep],
        patient_keys=np.asarray(data.patient_keys[keep], dtype=np.uint64),
    )
