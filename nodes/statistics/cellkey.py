"""The cell-key method: the same small, consistent perturbation for the same set of patients.

Why: in aggregate (non-DP) mode a site publishes counts of at least ``min_cell``
patients. Exact counts can be combined across queries ("trackers": ``c(A ∪ B ∪
{p}) - c(A) - c(B) = 1``) to isolate a patient even when every pair of cohorts
differs by many patients. Statistical offices publish tables with the cell-key
method for this (the ABS's TableBuilder, Eurostat's census hub): every patient
carries a secret uniform *record key*; a cell's key is the fractional part of
the sum of its patients' record keys; the published count is the exact count
plus a perturbation looked up from the cell key. So

* the same set of patients always gets the same perturbation (asking again,
  or rewording the question, averages nothing away), and
* two sets that differ by even one patient get unrelated perturbations, so a
  difference of published counts is ``1 + e1 - e2`` with ``e`` in
  ``[-spread, spread]``, not ``1``.

The record keys come from the patient's hash and a secret only this node holds
(derived from its private key), so nobody outside can compute a cell key. The
perturbation table here is uniform on ``{-spread, ..., spread}``; the released
interval of a count is ``value ± spread``. It is not differential privacy: an
attacker who can build many different trackers for the same patient averages
the noise away. DP mode is the mode whose guarantee composes.
"""

from __future__ import annotations

import hashlib

import numpy as np

_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijective mix of 64-bit words (vectorised, wrapping)."""
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return (z ^ (z >> np.uint64(31))) & _MASK


def secret_salt(node_secret: bytes) -> int:
    """A 64-bit salt for record keys from a secret only the node has (its private key).

    >>> secret_salt(b"k") == secret_salt(b"k") != secret_salt(b"other")
    True
    """
    digest = hashlib.blake2b(node_secret, digest_size=8, person=b"varde-cellkey").digest()
    return int.from_bytes(digest, "little")


def record_keys(patient_keys: np.ndarray, salt: int) -> np.ndarray:
    """Each patient's record key: uniform in ``[0, 1)``, fixed for the patient and the salt.

    >>> keys = record_keys(np.array([1, 2, 1], dtype=np.uint64), salt=7)
    >>> bool(keys[0] == keys[2]), bool(0 <= keys.min() and keys.max() < 1)
    (True, True)
    """
    mixed = _mix(np.asarray(patient_keys, dtype=np.uint64) ^ np.uint64(salt))
    return (mixed >> np.uint64(11)).astype(np.float64) / float(2**53)


def perturbation(keys_of_patients: np.ndarray, spread: int) -> int:
    """The perturbation of a cell whose (distinct) patients have these record keys.

    >>> k = np.array([0.1, 0.35, 0.8])
    >>> perturbation(k, 2) == perturbation(k[::-1], 2), -2 <= perturbation(k, 2) <= 2
    (True, True)
    >>> perturbation(k, 0)
    0
    """
    if spread < 0:
        raise ValueError("spread must be >= 0")
    cell_key = float(np.sum(np.sort(keys_of_patients)) % 1.0)  # sorted: order-independent sum
    return min(int(cell_key * (2 * spread + 1)), 2 * spread) - spread
