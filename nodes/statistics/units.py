"""What a query counts: tumours (rows) or patients (each once, by their first matching tumour).

Why a rule rather than "patients with any matching tumour in the cell": a patient
with tumours in two groups would then be in both, and one patient could move up to
``k`` cells (the per-patient bound), which is the tumour count's sensitivity again.
Counting patients instead keeps **one row per patient**, the earliest-diagnosed row
that meets the question's criteria (ties by tumour id; a missing diagnosis date
sorts last). That row alone decides the patient's group, bin or value, so adding or
removing one patient moves the release as one row does: every sensitivity in
:mod:`nodes.sensitivity` holds with ``k = 1``.

"Meets the criteria" is the whole filter of the released number: the cohort for a
count, histogram, crosstab, sum, mean, quantile or survival curve (rows outside
every cell, such as a histogram value outside its bins, still count as matching:
the patient is then in no cell), and cohort plus steps ``1..j`` for step ``j`` of a
funnel, so a funnel's patient totals never rise from one step to the next (a
patient's group can, when a later step selects a later tumour).

>>> import numpy as np
>>> from types import SimpleNamespace
>>> data = SimpleNamespace(patients=np.array([0, 0, 1, 1]), tumour_order=np.array([1, 0, 2, 3]))
>>> first_tumours(data, np.array([True, True, False, True])).tolist()
[False, True, False, True]
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from varde.query import Query


class _Ordered(Protocol):
    @property
    def patients(self) -> np.ndarray: ...

    @property
    def tumour_order(self) -> np.ndarray | None: ...


def rows_per_patient(query: Query, max_rows: int) -> int:
    """The most rows one patient adds to ``query``'s release: ``k``, or 1 counting patients.

    >>> from varde.query import parse_query
    >>> q = {"project": "p", "statistic": {"kind": "count"}, "privacy": {"mode": "aggregate"}}
    >>> rows_per_patient(parse_query(q), 3), rows_per_patient(parse_query({**q, "unit": "patients"}), 3)
    (3, 1)
    """  # noqa: E501
    return 1 if query.unit == "patients" else max_rows


def first_tumours(data: _Ordered, rows: np.ndarray) -> np.ndarray:
    """The mask of each patient's first row among ``rows`` (a boolean mask over all rows)."""
    order = data.tumour_order
    if order is None:  # pragma: no cover - prepare() always sets it
        raise ValueError("the registry has no tumour order")
    selected = order[np.asarray(rows, dtype=bool)[order]]
    patients = np.asarray(data.patients)[selected]
    first = np.ones(selected.shape[0], dtype=bool)
    first[1:] = patients[1:] != patients[:-1]
    out = np.zeros(np.asarray(rows).shape[0], dtype=bool)
    out[selected[first]] = True
    return out


def counted_rows(data: _Ordered, rows: np.ndarray, query: Query) -> np.ndarray:
    """The rows ``query`` counts among the cohort's ``rows``: all, or each patient's first.

    A funnel's rows are left as they are: it picks each patient's first row per step
    (:mod:`nodes.statistics.funnel`), since each step has its own criteria.
    """
    mask = np.asarray(rows, dtype=bool)
    if query.unit != "patients" or query.statistic.kind == "funnel":
        return mask
    return first_tumours(data, mask)
