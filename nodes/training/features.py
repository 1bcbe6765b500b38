"""Encode a site's prepared registry columns into the job's public model design.

Why the encoding only uses the schema: every site must produce the same columns
in the same order (see :func:`varde.training.design_columns`) and the scaling
must not depend on the data, or the scaling itself would leak (a site's
maximum age is a statistic). Categorical values become indicators over the
schema's categories; integers are scaled to ``[-1, 1]`` over the schema's
public bounds (a missing integer becomes the midpoint, 0). So every row has
``||x||_2 <= sqrt(1 + number of features)``, and the per-row gradient clip of
:mod:`nodes.training.dp` is what actually bounds each row's influence.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from nodes.data import RegistryData
from varde.schema import FIELDS_BY_NAME, FieldKind
from varde.training import OUTCOME_HORIZON_DAYS, TrainingSpec, design_columns

Floats = NDArray[np.float64]


def encode_features(data: RegistryData, features: list[str]) -> Floats:
    """The design matrix (rows x :func:`design_columns`) of every row of ``data``."""
    n = data.n_rows
    blocks: list[Floats] = [np.ones((n, 1))]
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
    if matrix.shape[1] != len(design_columns(features)):  # pragma: no cover - invariant
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


def design(data: RegistryData, spec: TrainingSpec) -> tuple[Floats, Floats]:
    """``(X, y)`` for the job: rows with a known outcome only."""
    if spec.outcome != "death_within_2y":  # pragma: no cover - Literal has one value today
        raise ValueError(f"unsupported outcome {spec.outcome!r}")
    y, known = outcome_death_within_2y(data)
    x = encode_features(data, spec.features)
    return x[known], y[known]
