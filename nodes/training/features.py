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

Study fields (:mod:`varde.study_fields`) are encoded the same way over their
*declared* public facts: a categorical one over its declared categories (a value the
declaration lacks sets no indicator), a bounded one scaled over its declared bounds,
so a covariate living in 17..44 moves its column across the whole ``[-1, 1]``.

A job's ``cohort`` (the query language's criteria) keeps the rows it selects, in
training and in the evaluation alike; its ``outcome`` is a built-in one or a named
binary or time-to-event outcome (:mod:`varde.outcomes`): rows whose outcome is
unknown are left out.

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

from nodes.cohort import evaluate
from nodes.data import RegistryData
from varde.outcomes import BinaryOutcome, TimeToEvent
from varde.schema import FIELDS_BY_NAME, FieldKind
from varde.study_fields import StudyField
from varde.training import OUTCOME_HORIZON_DAYS, TrainingSpec, design_columns, feature_spec

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
    """Rows of ``part`` in the job's cohort: training patients, held-out patients, or all."""
    cohort = np.asarray(evaluate(data, spec.cohort), dtype=bool)
    if part == "all":
        return cohort
    held = holdout_mask(data, spec.holdout)
    return cohort & (held if part == "holdout" else ~held)


def category_codes(data: RegistryData, name: str, categories: tuple[str, ...]) -> NDArray[np.int64]:
    """Each row's position in ``categories`` (-1: missing, or a value they do not list).

    A schema field's codes already index the schema's categories; a study field's index
    its column's own levels, mapped here onto the declared ones.
    """
    codes = np.asarray(data.column(name), dtype=np.int64)
    levels = data.study_levels.get(name)
    if levels is None:
        return codes
    position = {c: i for i, c in enumerate(categories)}
    table = np.array([position.get(c, -1) for c in levels] + [-1], dtype=np.int64)
    return np.asarray(table[codes], dtype=np.int64)


def _bounds(name: str, study_fields: list[StudyField]) -> tuple[float, float]:
    """A numeric feature's public bounds: a study field's declared ones, else the schema's."""
    for f in study_fields:
        if f.name == name and f.lower is not None and f.upper is not None:
            return f.lower, f.upper
    spec = FIELDS_BY_NAME[name]
    if spec.lower is None or spec.upper is None:
        raise ValueError(f"integer field {name!r} has no public bounds in the schema")
    return float(spec.lower), float(spec.upper)


def encode_features(
    data: RegistryData,
    features: list[str],
    *,
    intercept: bool = True,
    study_fields: list[StudyField] | None = None,
) -> Floats:
    """The design matrix (rows x :func:`design_columns`) of every row of ``data``."""
    n = data.n_rows
    study = study_fields or []
    blocks: list[Floats] = [np.ones((n, 1))] if intercept else [np.zeros((n, 0))]
    for name in features:
        spec = feature_spec(name, study)
        if spec.kind is FieldKind.CATEGORICAL:
            codes = category_codes(data, name, spec.categories)
            block = np.zeros((n, len(spec.categories)))
            known = codes >= 0
            block[np.flatnonzero(known), codes[known]] = 1.0
            blocks.append(block)
        elif spec.kind is FieldKind.INTEGER:
            lower, upper = _bounds(name, study)
            mid = (lower + upper) / 2.0
            half = (upper - lower) / 2.0
            values = np.asarray(data.column(name), dtype=np.float64)
            scaled = np.clip((values - mid) / half, -1.0, 1.0)
            blocks.append(np.nan_to_num(scaled, nan=0.0).reshape(n, 1))
        else:
            raise ValueError(f"field {name!r} cannot be a feature")
    matrix = np.hstack(blocks)
    model = "logistic" if intercept else "cox"
    if matrix.shape[1] != len(design_columns(features, model, study)):  # pragma: no cover
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


def outcome_binary(
    data: RegistryData, outcome: BinaryOutcome, study_fields: list[StudyField]
) -> tuple[Floats, NDArray[np.bool_]]:
    """Label 1 where the field is the outcome's ``positive`` category, 0 for any other.

    Rows with the field missing (or holding a value its public categories lack) are left
    out (the returned mask is ``False`` there).
    """
    categories = feature_spec(outcome.field, study_fields).categories
    codes = category_codes(data, outcome.field, categories)
    positive = codes == categories.index(outcome.positive)
    return positive.astype(np.float64), np.asarray(codes >= 0, dtype=bool)


def design(data: RegistryData, spec: TrainingSpec, part: Part = "train") -> tuple[Floats, Floats]:
    """``(X, y)`` of a logistic job: rows of ``part`` with a known outcome only."""
    outcome = spec.outcome
    if outcome == "death_within_2y":
        y, known = outcome_death_within_2y(data)
    elif isinstance(outcome, BinaryOutcome):
        y, known = outcome_binary(data, outcome, spec.study_fields)
    else:
        raise ValueError(f"a logistic design needs a binary outcome, not {outcome!r}")
    keep = known & part_mask(data, spec, part)
    x = encode_features(data, spec.features, study_fields=spec.study_fields)
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


def outcome_time_to_event(
    data: RegistryData, outcome: TimeToEvent, study_fields: list[StudyField]
) -> tuple[Floats, Floats, NDArray[np.bool_]]:
    """``(time, event, known)`` of a named outcome: the event where ``event`` is its value.

    Rows missing the time or the event (or with a negative time) are left out.
    """
    categories = feature_spec(outcome.event, study_fields).categories
    codes = category_codes(data, outcome.event, categories)
    event = codes == categories.index(outcome.event_value)
    time = np.asarray(data.column(outcome.time), dtype=np.float64)
    known = ~np.isnan(time) & (time >= 0) & (codes >= 0)
    return time, event.astype(np.float64), np.asarray(known, dtype=bool)


def survival_design(data: RegistryData, spec: TrainingSpec, part: Part = "train") -> SurvivalDesign:
    """The Cox design of ``part`` (rows with a known survival outcome only)."""
    outcome = spec.outcome
    if outcome == "overall_survival":
        days, event, known = outcome_overall_survival(data)
    elif isinstance(outcome, TimeToEvent):
        days, event, known = outcome_time_to_event(data, outcome, spec.study_fields)
    else:
        raise ValueError(f"a Cox design needs a time-to-event outcome, not {outcome!r}")
    keep = known & part_mask(data, spec, part)
    if data.patient_keys is None:
        raise ValueError("the registry was prepared without patient keys")
    x = encode_features(data, spec.features, intercept=False, study_fields=spec.study_fields)
    return SurvivalDesign(
        x=x[keep],
        time=days[keep],
        event=event[keep],
        patient_keys=np.asarray(data.patient_keys[keep], dtype=np.uint64),
    )
