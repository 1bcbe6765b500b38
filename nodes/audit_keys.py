"""Which keys may have signed which audit checkpoints: key handovers (``key_rotated`` entries).

Why: a node's key is rotated (``varde node rotate-key``) but its audit trail
carries on, so checkpoints signed before the rotation carry the *old* key. The
verifier trusts only the node's current key; it accepts an older key's
checkpoint when the current key took over from it through a chain of intact
``key_rotated`` entries (K1 -> K2 -> ... -> current), and only for the part of
the trail up to that key's handover.

Each ``key_rotated`` entry holds the old and new public keys and
``new_key_signature``: the *new* key's signature over the old and new keys and
the hash of the entry before the handover (:func:`handover_message`). The new
key so vouches for the whole trail up to its handover, and nobody without it can
hand its trust to a key of their own (someone who can write the database could
otherwise rewrite the trail, sign it with a key they made and append a handover
to the real key). The rotation also signs a checkpoint over the handover entry
with the old key, its last act.

A checkpoint signed by a retired key is accepted if it vouches for entries up
to its handover entry at most and sits right after it at the latest; one signed
after that is refused ("signed by key X after it was retired at entry N"), and
one by a key never handed over is refused as "not the node's".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from varde.crypto import key_fingerprint, verify

__all__ = [
    "KEY_ROTATED",
    "Handover",
    "SignerWindows",
    "handover_detail",
    "handover_message",
    "read_handover",
]

KEY_ROTATED = "key_rotated"
"""The kind of the audit entry that hands the node's trust from one key to the next."""

_HANDOVER_DOMAIN = b"varde-audit-key-handover\x00"


def handover_message(prev_hash: str, old_key: str, new_key: str) -> bytes:
    """What the new key signs: the trail up to the handover (``prev_hash``) and both keys."""
    return _HANDOVER_DOMAIN + f"{prev_hash}:{old_key}:{new_key}".encode()


def handover_detail(old_key: str, new_key: str, new_key_signature: str) -> dict[str, str]:
    """The ``detail`` of a ``key_rotated`` entry (keys base64, with their fingerprints)."""
    return {
        "old_public_key": old_key,
        "old_fingerprint": key_fingerprint(old_key),
        "new_public_key": new_key,
        "new_fingerprint": key_fingerprint(new_key),
        "new_key_signature": new_key_signature,
    }


@dataclass(frozen=True)
class Handover:
    """``old_key`` handed over to ``new_key`` at audit entry ``entry_id``."""

    entry_id: int
    old_key: str
    new_key: str


def read_handover(entry_id: int, prev_hash: str, data: dict[str, object]) -> Handover | str:
    """The handover a ``key_rotated`` entry's ``data`` records, or why it is not one."""
    old, new, sig = (data.get(k) for k in ("old_public_key", "new_public_key", "new_key_signature"))
    if not (isinstance(old, str) and isinstance(new, str) and isinstance(sig, str)):
        return "key_rotated entry without readable old and new keys and signature"
    if old == new:
        return "key_rotated entry hands a key over to itself"
    if not verify(new, handover_message(prev_hash, old, new), sig):
        return "key_rotated entry whose new key's signature does not verify"
    return Handover(entry_id, old, new)


@dataclass(frozen=True)
class _Window:
    after: int
    """Checkpoints of this key come after this entry (its handover to it; 0: the start)."""
    upto: int | None
    """The key's own handover entry (it was retired there), None while it is the current key."""


class SignerWindows:
    """The keys trusted to have signed checkpoints, each for its part of the trail.

    Built from the current key back through the handovers whose new key is the
    key in force after them, so a handover that does not lead to the current key
    gives no trust. If the current key was itself handed over (its key file was
    restored after a rotation), it is trusted only up to that handover too.
    """

    def __init__(self, current_key: str, handovers: Iterable[Handover]) -> None:
        self.current_key = current_key
        self._windows: dict[str, list[_Window]] = {}
        ordered = sorted(handovers, key=lambda h: h.entry_id, reverse=True)
        # a key file restored after its key was rotated out: retired there, as any other
        start = next((h.entry_id for h in ordered if h.old_key == current_key), None)
        in_force = current_key
        for h in ordered:
            if h.new_key != in_force or (start is not None and h.entry_id >= start):
                continue
            self._add(in_force, _Window(h.entry_id, start))
            in_force, start = h.old_key, h.entry_id
        self._add(in_force, _Window(0, start))

    def _add(self, key: str, window: _Window) -> None:
        self._windows.setdefault(key, []).append(window)

    def problem(self, key: str, checkpoint_id: int, signed_id: int) -> str | None:
        """Why ``key`` may not have signed the checkpoint ``checkpoint_id`` (None: it may)."""
        windows = self._windows.get(key)
        if not windows:
            return "checkpoint signed by a key that is not the node's (nor handed over to it)"
        for w in windows:
            if checkpoint_id <= w.after:
                continue
            if w.upto is None or (signed_id <= w.upto and checkpoint_id <= w.upto + 1):
                return None
        retired = [w.upto for w in windows if w.upto is not None and checkpoint_id > w.after]
        if retired:
            return (
                f"checkpoint signed by key {key_fingerprint(key)} after it was retired "
                f"at entry {max(retired)}"
            )
        first = min(w.after for w in windows)
        return (
            f"checkpoint signed by key {key_fingerprint(key)} before it was handed over to "
            f"at entry {first}"
        )
