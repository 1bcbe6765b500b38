"""Schema categories as integer codes, and the numpy array types used throughout.

Why codes: every column is drawn over whole arrays of category indices and becomes a
``pd.Categorical`` only when the frame is built; these maps name the indices (schema order).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from varde.schema import CANCER_TYPES, FIELDS_BY_NAME, MORPHOLOGY_CODES, STAGES

Ints = NDArray[np.int64]
Floats = NDArray[np.float64]
Bools = NDArray[np.bool_]


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
