"""The audit trail: one linear hash chain, signed checkpoints; tampering is found and placed."""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodes.audit import GENESIS, AuditEntry, entry_hash, verify_trail
from nodes.context import NodeContext
from nodes.pipeline import handle
from nodes.store import NodeStore
from tests.conftest import make_work
from varde.crypto import generate_key, public_key_b64


def _fill(store: NodeStore, n: int) -> None:
    for i in range(n):
        store.audit("released", query_id=f"q{i}", project="p", epsilon=0.5, cells=[{"value": i}])


def _sql(tmp_path: Path, *statements: str) -> None:
    con = sqlite3.connect(tmp_path / "node.sqlite")
    with con:
        for stmt in statements:
            con.execute(stmt)
    con.close()


@pytest.fixture
def store(tmp_path: Path) -> NodeStore:
    s = NodeStore.in_directory(tmp_path, key=generate_key(), checkpoint_every=5)
    _fill(s, 12)
    return s


def test_intact_chain_verifies_with_signed_checkpoints(store: NodeStore) -> None:
    entries = store.events()
    # 12 entries plus a checkpoint after every 5 (entries 6 and 12 are checkpoints)
    assert [e.id for e in entries] == list(range(1, 15))
    assert [e.kind for e in entries].count("checkpoint") == 2
    assert entries[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.hash for a, b in zip(entries, entries[1:], strict=False))
    report = store.verify()
    assert report.ok, report.problems
    assert report.checkpoints == 2
    assert report.last_signed_id == 11


def test_close_signs_the_tail(store: NodeStore, tmp_path: Path) -> None:
    key = store.log.key
    store.close()
    again = NodeStore.in_directory(tmp_path, key=key)
    last = again.events()[-1]
    assert last.kind == "checkpoint" and last.data["signed_id"] == 14
    assert again.verify().last_signed_id == 14
    again.close()  # nothing new: no second checkpoint
    assert NodeStore.in_directory(tmp_path).events()[-1].id == 15


def test_edit_is_found_where_it_happened(store: NodeStore, tmp_path: Path) -> None:
    _sql(tmp_path, "UPDATE audit_entries SET detail = replace(detail, '0.5', '0.05') WHERE id = 4")
    report = store.verify()
    assert not report.ok
    assert report.first is not None
    assert (report.first.entry_id, report.first.kind) == (4, "edited")
    assert len(report.problems) == 1  # no cascade: later entries are still chained


def test_recomputed_hash_after_edit_still_breaks_the_next_link(
    store: NodeStore, tmp_path: Path
) -> None:
    """An editor who also fixes the edited entry's hash breaks the link to the next one."""
    e = store.events()[3]
    forged = entry_hash(
        id=e.id,
        at=e.at_text,
        kind=e.kind,
        query_id=e.query_id,
        project=e.project,
        detail="{}",
        prev=e.prev_hash,
    )
    _sql(tmp_path, f"UPDATE audit_entries SET detail = '{{}}', hash = '{forged}' WHERE id = 4")
    first = store.verify().first
    assert first is not None and first.entry_id == 5 and first.kind == "missing"


def test_delete_is_found_at_the_gap(store: NodeStore, tmp_path: Path) -> None:
    _sql(tmp_path, "DELETE FROM audit_entries WHERE id = 3")
    first = store.verify().first
    assert first is not None
    assert (first.entry_id, first.kind) == (4, "missing")
    assert "entries 3..3 were deleted" in first.message


def test_reorder_is_found(store: NodeStore, tmp_path: Path) -> None:
    _sql(
        tmp_path,
        "UPDATE audit_entries SET id = -1 WHERE id = 2",
        "UPDATE audit_entries SET id = 2 WHERE id = 3",
        "UPDATE audit_entries SET id = 3 WHERE id = -1",
    )
    report = store.verify()
    assert report.first is not None
    assert (report.first.entry_id, report.first.kind) == (2, "reordered")
    assert "was entry 3" in report.first.message


def test_truncation_is_found(store: NodeStore, tmp_path: Path) -> None:
    _sql(tmp_path, "DELETE FROM audit_entries WHERE id > 9")
    first = store.verify().first
    assert first is not None
    assert (first.entry_id, first.kind) == (10, "truncated")
    assert "ends at entry 9 but its head records entry 14" in first.message


def test_checkpoint_by_another_key_is_refused(store: NodeStore, tmp_path: Path) -> None:
    report = store.log.verify(public_key=public_key_b64(generate_key()))
    assert {(p.entry_id, p.kind) for p in report.problems} == {(6, "signature"), (12, "signature")}


def test_nonce_and_work_received_are_one_transaction(tmp_path: Path) -> None:
    s = NodeStore.in_directory(tmp_path)
    exp = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
    received = {"query_id": "q1", "project": "p", "researcher": "a"}
    assert s.seen_nonce("n1", exp, received=received) is False
    # a replay rolls back both: no second work_received entry, the chain stays intact
    assert s.seen_nonce("n1", exp, received={"query_id": "q1", "project": "p"}) is True
    (entry,) = s.events()
    assert (entry.kind, entry.query_id, entry.project) == ("work_received", "q1", "p")
    assert entry.data == {"researcher": "a"}
    assert s.verify().ok


def test_concurrent_appenders_keep_one_linear_chain(tmp_path: Path) -> None:
    """Worker threads and a second process-like store append at once; the chain never forks."""
    node = NodeStore.in_directory(tmp_path, key=generate_key(), checkpoint_every=7)
    staff = NodeStore.in_directory(tmp_path)  # another connection pool, as a CLI process has
    exp = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
    errors: list[BaseException] = []

    def work(who: NodeStore, t: int) -> None:
        try:
            for i in range(25):
                if i % 2:
                    who.audit("released", query_id=f"t{t}-{i}")
                else:
                    who.seen_nonce(f"n{t}-{i}", exp, received={"query_id": f"t{t}-{i}"})
        except BaseException as err:  # pragma: no cover - surfaced below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(node if t % 2 else staff, t)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    entries = node.events()
    data = [e for e in entries if e.kind != "checkpoint"]
    assert len(data) == 150
    assert [e.id for e in entries] == list(range(1, len(entries) + 1))
    report = node.verify()
    assert report.ok, report.problems
    assert report.checkpoints >= 5  # only the node (holding the key) signs
    node.close()  # the shutdown checkpoint covers the staff entries too
    final = staff.verify()
    assert final.ok and final.unsigned == 0
    assert final.last_signed_id == max(e.id for e in data)


# --- property: any single tampering of any chain is detected at the right entry ----------------

Tamper = tuple[str, int, int]


def _chain(n: int) -> list[AuditEntry]:
    out: list[AuditEntry] = []
    prev = GENESIS
    at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    for i in range(1, n + 1):
        at_text = (at + dt.timedelta(seconds=i)).isoformat(timespec="microseconds")
        detail = f'{{"i":{i}}}'
        h = entry_hash(
            id=i, at=at_text, kind="k", query_id=f"q{i}", project="p", detail=detail, prev=prev
        )
        out.append(
            AuditEntry(i, at + dt.timedelta(seconds=i), "k", f"q{i}", "p", detail, prev, h, at_text)
        )
        prev = h
    return out


@st.composite
def tampered(draw: st.DrawFn) -> tuple[int, str, int, int]:
    n = draw(st.integers(min_value=2, max_value=40))
    op = draw(st.sampled_from(["edit", "delete", "swap", "truncate"]))
    i = draw(st.integers(min_value=1, max_value=n - 1 if op in {"swap", "truncate"} else n))
    j = draw(st.integers(min_value=i + 1, max_value=n)) if op == "swap" else 0
    return n, op, i, j


@given(tampered())
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_property_any_tampering_is_found_at_its_position(case: tuple[int, str, int, int]) -> None:
    n, op, i, j = case
    chain = _chain(n)
    head = (chain[-1].id, chain[-1].hash)
    assert verify_trail(chain, head).ok
    entries = list(chain)
    if op == "edit":
        e = entries[i - 1]
        entries[i - 1] = AuditEntry(
            e.id, e.at, e.kind, e.query_id, e.project, '{"i":-1}', e.prev_hash, e.hash, e.at_text
        )
        expected = (i, "edited")
    elif op == "delete":
        del entries[i - 1]
        expected = (i + 1, "missing") if i < n else (i, "truncated")
    elif op == "swap":
        a, b = entries[i - 1], entries[j - 1]
        entries[i - 1] = AuditEntry(
            i, b.at, b.kind, b.query_id, b.project, b.detail, b.prev_hash, b.hash, b.at_text
        )
        entries[j - 1] = AuditEntry(
            j, a.at, a.kind, a.query_id, a.project, a.detail, a.prev_hash, a.hash, a.at_text
        )
        expected = (i, "reordered")
    else:
        entries = entries[:i]
        expected = (i + 1, "truncated")
    first = verify_trail(entries, head).first
    assert first is not None
    assert (first.entry_id, first.kind) == expected


def test_pipeline_audits_receipt_refusals_charges_and_released_values(
    node_ctx: NodeContext, gateway_key: Ed25519PrivateKey
) -> None:
    query = {
        "project": "nsclc-feasibility",
        "cohort": {"op": "startswith", "field": "topography", "prefix": "C34"},
        "statistic": {"kind": "count"},
        "privacy": {"mode": "dp", "epsilon": 0.5},
    }
    rel = handle(node_ctx, make_work(gateway_key, query, query_id="ok-1"))
    handle(node_ctx, make_work(gateway_key, {**query, "project": "rogue"}, query_id="bad-1"))
    handle(node_ctx, make_work(generate_key(), query, query_id="forged-1"))
    by_kind = {e.kind: e for e in node_ctx.store.events()}
    released, charged = by_kind["released"].data, by_kind["charged"].data
    assert released["charged"] == {"epsilon": 0.5}
    assert (charged["measure"], charged["amount"], charged["spent_after"]) == ("epsilon", 0.5, 0.5)
    assert charged["what"] == "query" and by_kind["charged"].query_id == "ok-1"
    assert released["policy_version"] == node_ctx.policy.version
    assert [c["value"] for c in released["cells"]] == [c.value for c in rel.cells]
    assert by_kind["policy_violation"].query_id == "bad-1"
    assert by_kind["envelope_rejected"].data["reason"] == "forged"
    assert [e.query_id for e in node_ctx.store.events("work_received")] == ["ok-1", "bad-1"]
    assert node_ctx.store.verify().ok
