"""Audit verification across key rotations: trust handed from key to key by key_rotated entries."""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from nodes.audit_keys import KEY_ROTATED, Handover, SignerWindows, handover_detail
from nodes.key_rotation import record_handover
from nodes.store import NodeStore
from varde.crypto import generate_key, key_fingerprint, public_key_b64


def _fill(store: NodeStore, n: int) -> None:
    for i in range(n):
        store.audit("released", query_id=f"q{i}", project="p", epsilon=0.5)


def _rotate(store: NodeStore, new: Ed25519PrivateKey) -> int:
    old = store.log.key
    assert old is not None
    entry = record_handover(store, old, new)
    store.set_key(new)
    return entry


def _rotated_trail(tmp_path: Path) -> tuple[NodeStore, list[Ed25519PrivateKey], list[int]]:
    """K1 signs 7 entries, rotate to K2, 7 more, rotate to K3, 3 more (checkpoint every 3)."""
    keys = [generate_key() for _ in range(3)]
    store = NodeStore.in_directory(tmp_path, key=keys[0], checkpoint_every=3)
    _fill(store, 7)
    first = _rotate(store, keys[1])
    _fill(store, 7)
    second = _rotate(store, keys[2])
    _fill(store, 3)
    store.log.checkpoint()
    return store, keys, [first, second]


def _verify(store: NodeStore, key: Ed25519PrivateKey) -> list[str]:
    return [str(p) for p in store.log.verify(public_key_b64(key)).problems]


def test_a_trail_rotated_twice_verifies_with_the_current_key(tmp_path: Path) -> None:
    store, keys, handovers = _rotated_trail(tmp_path)
    signers = {e.data["public_key"] for e in store.events("checkpoint")}
    assert signers == {public_key_b64(k) for k in keys}  # each key signed some checkpoints
    report = store.log.verify(public_key_b64(keys[2]))
    assert report.ok, report.problems
    assert report.unsigned == 0
    rotated = store.events(KEY_ROTATED)
    assert [e.id for e in rotated] == handovers
    detail = rotated[0].data
    assert detail["old_public_key"] == public_key_b64(keys[0])
    assert detail["new_fingerprint"] == key_fingerprint(public_key_b64(keys[1]))
    # the checkpoint right after each handover is the old key's, over the handover entry
    after = {e.id: e for e in store.events("checkpoint")}
    for entry_id, old in zip(handovers, keys, strict=False):
        cp = after[entry_id + 1].data
        assert cp["signed_id"] == entry_id and cp["public_key"] == public_key_b64(old)


def test_an_unrelated_key_is_refused(tmp_path: Path) -> None:
    store, _, _ = _rotated_trail(tmp_path)
    problems = _verify(store, generate_key())
    assert problems and all("not the node's" in p for p in problems), problems


def test_an_edited_handover_breaks_the_trail(tmp_path: Path) -> None:
    store, keys, handovers = _rotated_trail(tmp_path)
    store.close()
    con = sqlite3.connect(tmp_path / "node.sqlite")
    with con:  # swap in another new key: the entry no longer matches its hash
        forged = public_key_b64(generate_key())
        con.execute(
            "UPDATE audit_entries SET detail = json_set(detail, '$.new_public_key', ?) "
            "WHERE id = ?",
            (forged, handovers[1]),
        )
    con.close()
    again = NodeStore.in_directory(tmp_path)
    problems = _verify(again, keys[2])
    assert f"entry {handovers[1]}: edited: content does not match its hash (edited)" in problems
    # with that handover gone, K2's and K1's checkpoints are no longer vouched for
    assert any("not the node's" in p for p in problems), problems


def test_a_handover_rehashed_after_an_edit_is_refused_by_its_signature(tmp_path: Path) -> None:
    """Someone who can write the database appends a handover from a key of their own."""
    real = generate_key()
    mine = generate_key()  # the forger's: signs a rewritten history
    store = NodeStore.in_directory(tmp_path, key=mine, checkpoint_every=3)
    _fill(store, 5)
    # hand over to the real key, but without the real key's signature (the forger has no real key)
    record_handover(store, mine, generate_key())
    rows = store.events(KEY_ROTATED)
    assert rows
    with store.log.write_engine.begin() as conn:
        detail = handover_detail(
            public_key_b64(mine), public_key_b64(real), rows[0].data["new_key_signature"]
        )
        store.log.append(conn, KEY_ROTATED, detail=detail)
    problems = _verify(store, real)
    assert any("new key's signature does not verify" in p for p in problems), problems
    assert any("not the node's" in p for p in problems), problems


def test_a_retired_key_signing_after_its_handover_is_refused(tmp_path: Path) -> None:
    store, keys, handovers = _rotated_trail(tmp_path)
    store.set_key(keys[0])  # the stolen first key signs more
    _fill(store, 1)
    cp = store.log.checkpoint()
    assert cp is not None
    problems = _verify(store, keys[2])
    fp = key_fingerprint(public_key_b64(keys[0]))
    assert problems == [
        f"entry {cp.id}: signature: checkpoint signed by key {fp} after it was retired "
        f"at entry {handovers[0]}"
    ]


def test_a_restored_retired_key_file_does_not_make_its_key_current_again(
    tmp_path: Path,
) -> None:
    """The key file of K2 is restored after K2 was rotated out; the node signs with it again."""
    store, keys, handovers = _rotated_trail(tmp_path)
    store.set_key(keys[1])
    _fill(store, 1)
    cp = store.log.checkpoint()
    assert cp is not None
    problems = _verify(store, keys[1])
    fp = key_fingerprint(public_key_b64(keys[1]))
    assert (
        f"entry {cp.id}: signature: checkpoint signed by key {fp} after it was retired "
        f"at entry {handovers[1]}"
    ) in problems, problems
    assert any("not the node's" in p for p in problems)  # K3's checkpoints


def test_windows_refuse_a_new_key_before_its_handover() -> None:
    k1, k2 = (public_key_b64(generate_key()) for _ in range(2))
    windows = SignerWindows(k2, [Handover(10, k1, k2)])
    assert windows.problem(k1, 5, 4) is None
    assert windows.problem(k1, 11, 10) is None  # the old key's last checkpoint, over the handover
    assert "after it was retired at entry 10" in str(windows.problem(k1, 12, 11))
    assert "after it was retired" in str(windows.problem(k1, 11, 11))  # vouches past it
    assert windows.problem(k2, 12, 11) is None
    assert "before it was handed over to at entry 10" in str(windows.problem(k2, 9, 8))
    # a handover that does not lead to the current key hands nothing over
    k3 = public_key_b64(generate_key())
    assert "not the node's" in str(SignerWindows(k3, [Handover(10, k1, k2)]).problem(k1, 5, 4))


@settings(
    max_examples=15,
    deadline=None,
)
@given(
    gaps=st.lists(st.integers(min_value=0, max_value=6), min_size=1, max_size=4),
    every=st.integers(min_value=1, max_value=4),
    data=st.data(),
)
def test_any_sequence_of_rotations_verifies_and_a_forged_one_breaks(
    gaps: list[int], every: int, data: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory(prefix="HKEY-") as tmp:
        keys = [generate_key() for _ in range(len(gaps) + 1)]
        store = NodeStore.in_directory(Path(tmp), key=keys[0], checkpoint_every=every)
        handovers = []
        for gap, new in zip(gaps, keys[1:], strict=True):
            _fill(store, gap)
            handovers.append(_rotate(store, new))
        _fill(store, data.draw(st.integers(min_value=0, max_value=5)))
        report = store.log.verify(public_key_b64(keys[-1]))
        assert report.ok, report.problems
        # drop one handover's trust: edit it (its hash no longer matches)
        victim = data.draw(st.sampled_from(handovers))
        store.close()
        con = sqlite3.connect(Path(tmp) / "node.sqlite")
        with con:
            con.execute("UPDATE audit_entries SET detail = detail || ' ' WHERE id = ?", (victim,))
        con.close()
        again = NodeStore.in_directory(Path(tmp))
        broken = again.log.verify(public_key_b64(keys[-1]))
        assert not broken.ok
        assert any(p.entry_id == victim and p.kind == "edited" for p in broken.problems)
        again.close()
