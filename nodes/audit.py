"""The node's tamper-evident audit trail: a hash chain, signed at checkpoints.

Why: registry staff and their data protection officer must be able to *prove*
what their site received, refused, charged and released, without trusting the
gateway and without trusting that nobody edited a database row afterwards.

How it works:

* **Append-only chain.** Entry ``n`` stores ``prev_hash`` (the hash of entry
  ``n - 1``; :data:`GENESIS` for the first) and ``hash = sha256(canonical JSON of
  {id, at, kind, query_id, project, detail, prev})``. Ids are consecutive from 1.
  Editing, deleting or moving any entry breaks the chain at that entry.
* **A head row**, written in the same transaction as every append, names the
  last id and hash. Cutting entries off the end (which leaves a valid but
  shorter chain) shows as a head that points past the trail.
* **Signed checkpoints.** Every :data:`CHECKPOINT_EVERY` entries, and when the
  node shuts down, the node appends a ``checkpoint`` entry carrying an Ed25519
  signature (the node key) over the id and hash of the entry before it. An
  exported checkpoint is a receipt: whoever holds it can later show that the
  trail up to it has not been rewritten, even by someone who can write the
  database.
* **Linear under concurrency.** Appends run in ``BEGIN IMMEDIATE`` transactions
  (SQLite's write lock taken up front), so worker threads of the node and other
  processes (``varde node approve``) append one after the other and the chain
  never forks.

:func:`verify_trail` walks the chain and names the first entry where it breaks
and why (edited, missing, reordered, truncated, bad signature).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    insert,
    select,
    update,
)

from nodes.audit_keys import KEY_ROTATED, Handover, SignerWindows, read_handover
from nodes.sqlite import create_tables, serialised_writes
from varde.crypto import public_key_b64, sign, verify
from varde.envelope import utcnow

__all__ = [
    "CHECKPOINT_EVERY",
    "GENESIS",
    "AuditEntry",
    "AuditLog",
    "AuditProblem",
    "AuditReport",
    "configure_sqlite",
    "entry_hash",
    "verify_trail",
]

GENESIS = "0" * 64
"""The ``prev_hash`` of the first entry."""

CHECKPOINT_EVERY = 100
"""Entries between signed checkpoints (a checkpoint costs one Ed25519 signature, ~50 us)."""

_CHECKPOINT_DOMAIN = b"varde-audit-checkpoint\x00"

metadata = MetaData()

audit_entries = Table(
    "audit_entries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("at", String(40), nullable=False, index=True),
    Column("kind", String(40), nullable=False, index=True),
    Column("query_id", String(64), nullable=False, default="", index=True),
    Column("project", String(100), nullable=False, default=""),
    Column("detail", Text, nullable=False, default="{}"),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)

audit_head = Table(
    "audit_head",
    metadata,
    Column("one", Integer, primary_key=True, autoincrement=False),
    Column("last_id", Integer, nullable=False),
    Column("last_hash", String(64), nullable=False),
    Column("last_checkpoint", Integer, nullable=False),
)


def canonical_json(value: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces); values JSON cannot hold become strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def entry_hash(
    *, id: int, at: str, kind: str, query_id: str, project: str, detail: str, prev: str
) -> str:
    """The sha256 of one entry's canonical JSON, which includes the previous hash.

    ``detail`` is hashed as the stored text, so verification never depends on how
    floats or dates would be re-serialised.

    >>> h = entry_hash(id=1, at="2026-01-01T00:00:00+00:00", kind="k", query_id="",
    ...                project="", detail="{}", prev=GENESIS)
    >>> len(h), h == entry_hash(id=1, at="2026-01-01T00:00:00+00:00", kind="k",
    ...                         query_id="", project="", detail="{}", prev=GENESIS)
    (64, True)
    """
    body = {
        "id": id,
        "at": at,
        "kind": kind,
        "query_id": query_id,
        "project": project,
        "detail": detail,
        "prev": prev,
    }
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


def checkpoint_message(signed_id: int, signed_hash: str) -> bytes:
    """What a checkpoint signs: the id and hash of the entry it vouches for (and all before)."""
    return _CHECKPOINT_DOMAIN + f"{signed_id}:{signed_hash}".encode()


@dataclass(frozen=True)
class AuditEntry:
    """One entry of the trail as stored (``detail`` is its JSON text)."""

    id: int
    at: dt.datetime
    kind: str
    query_id: str
    project: str
    detail: str
    prev_hash: str
    hash: str
    at_text: str = ""
    """The timestamp exactly as stored and hashed (an edit may make it unparsable)."""

    @property
    def data(self) -> dict[str, Any]:
        """``detail`` parsed (an unparsable detail shows as ``{"_raw": text}``)."""
        try:
            value = json.loads(self.detail)
        except ValueError:
            return {"_raw": self.detail}
        return value if isinstance(value, dict) else {"_value": value}

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able form, for export and the console."""
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "kind": self.kind,
            "query_id": self.query_id,
            "project": self.project,
            "detail": self.data,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


def _row_entry(row: Any) -> AuditEntry:
    try:
        at = dt.datetime.fromisoformat(row.at)
    except (TypeError, ValueError):
        at = dt.datetime.min.replace(tzinfo=dt.UTC)
    return AuditEntry(
        id=int(row.id),
        at=at,
        kind=row.kind,
        query_id=row.query_id,
        project=row.project,
        detail=row.detail,
        prev_hash=row.prev_hash,
        hash=row.hash,
        at_text=str(row.at),
    )


def configure_sqlite(engine: Engine) -> Engine:
    """Set up the trail's SQLite engine for serialised writers; returns the engine for writes.

    A committed entry survives a process crash (``synchronous=NORMAL``); only a power
    cut can lose the last few. The privacy-critical state, the ledger, keeps ``FULL``
    (:mod:`nodes.sqlite`).
    """
    return serialised_writes(engine, synchronous="NORMAL")


class AuditLog:
    """Appends to and reads the chain kept in ``engine``'s database.

    Args:
        engine: The database (the node's ``node.sqlite``).
        write_engine: The same engine with writes starting ``BEGIN IMMEDIATE``
            (see :func:`configure_sqlite`); defaults to ``engine``.
        key: The node key; without it (e.g. a staff CLI process) entries are
            appended but no checkpoint is signed; the node signs them later.
        checkpoint_every: Entries between signed checkpoints.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        write_engine: Engine | None = None,
        key: Ed25519PrivateKey | None = None,
        checkpoint_every: int = CHECKPOINT_EVERY,
    ) -> None:
        if checkpoint_every < 1:
            raise ValueError("checkpoint_every must be >= 1")
        self.engine = engine
        self.write_engine = write_engine or engine
        self.key = key
        self.checkpoint_every = checkpoint_every
        create_tables(metadata, self.write_engine)

    def append(
        self,
        conn: Connection,
        kind: str,
        *,
        query_id: str = "",
        project: str = "",
        detail: dict[str, Any] | None = None,
    ) -> AuditEntry:
        """Append one entry inside the caller's (write) transaction ``conn``.

        The caller's transaction must have been started as a write (``BEGIN
        IMMEDIATE``), so reading the head and writing the entry cannot interleave
        with another appender.
        """
        if not kind:
            raise ValueError("an audit entry needs a kind")
        head = conn.execute(select(audit_head).where(audit_head.c.one == 1)).one_or_none()
        last_id, last_hash, last_cp = (
            (int(head.last_id), str(head.last_hash), int(head.last_checkpoint))
            if head is not None
            else (0, GENESIS, 0)
        )
        entry = self._write(
            conn,
            last_id + 1,
            kind,
            query_id=query_id,
            project=project,
            detail=canonical_json(detail or {}),
            prev=last_hash,
        )
        if self.key is not None and entry.id - last_cp >= self.checkpoint_every:
            cp = self._checkpoint_after(conn, entry)
            self._set_head(conn, cp.id, cp.hash, cp.id, exists=head is not None)
        else:
            self._set_head(conn, entry.id, entry.hash, last_cp, exists=head is not None)
        return entry

    def _write(
        self,
        conn: Connection,
        id: int,
        kind: str,
        *,
        query_id: str,
        project: str,
        detail: str,
        prev: str,
    ) -> AuditEntry:
        at = utcnow()
        at_text = at.isoformat(timespec="microseconds")
        digest = entry_hash(
            id=id,
            at=at_text,
            kind=kind,
            query_id=query_id,
            project=project,
            detail=detail,
            prev=prev,
        )
        conn.execute(
            insert(audit_entries).values(
                id=id,
                at=at_text,
                kind=kind,
                query_id=query_id,
                project=project,
                detail=detail,
                prev_hash=prev,
                hash=digest,
            )
        )
        return AuditEntry(id, at, kind, query_id, project, detail, prev, digest, at_text)

    def _checkpoint_after(self, conn: Connection, entry: AuditEntry) -> AuditEntry:
        assert self.key is not None
        detail = {
            "signed_id": entry.id,
            "signed_hash": entry.hash,
            "public_key": public_key_b64(self.key),
            "signature": sign(self.key, checkpoint_message(entry.id, entry.hash)),
        }
        return self._write(
            conn,
            entry.id + 1,
            "checkpoint",
            query_id="",
            project="",
            detail=canonical_json(detail),
            prev=entry.hash,
        )

    @staticmethod
    def _set_head(conn: Connection, last_id: int, last_hash: str, cp: int, *, exists: bool) -> None:
        values = {"last_id": last_id, "last_hash": last_hash, "last_checkpoint": cp}
        if exists:
            conn.execute(update(audit_head).where(audit_head.c.one == 1).values(**values))
        else:
            conn.execute(insert(audit_head).values(one=1, **values))

    def record(
        self, kind: str, *, query_id: str = "", project: str = "", **detail: Any
    ) -> AuditEntry:
        """Append one entry in its own transaction."""
        with self.write_engine.begin() as conn:
            return self.append(conn, kind, query_id=query_id, project=project, detail=detail)

    def checkpoint(self) -> AuditEntry | None:
        """Sign the head now (e.g. on shutdown), unless it is already a checkpoint.

        Returns the checkpoint entry, or None when there is nothing new to sign
        or no key to sign with.
        """
        if self.key is None:
            return None
        with self.write_engine.begin() as conn:
            head = conn.execute(select(audit_head).where(audit_head.c.one == 1)).one_or_none()
            if head is None or int(head.last_checkpoint) == int(head.last_id):
                return None
            last = conn.execute(
                select(audit_entries).where(audit_entries.c.id == int(head.last_id))
            ).one()
            cp = self._checkpoint_after(conn, _row_entry(last))
            self._set_head(conn, cp.id, cp.hash, cp.id, exists=True)
            return cp

    def entries(
        self,
        *,
        kind: str | None = None,
        kinds: Sequence[str] | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        query_id: str | None = None,
        project: str | None = None,
        researcher: str | None = None,
        search: str | None = None,
        after_id: int = 0,
        before_id: int | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[AuditEntry]:
        """Entries matching every filter given (``search``: substring of kind, ids or detail).

        ``kinds``: any of these kinds; ``since``/``until``: at or after / before
        (timezone-aware); ``researcher``: entries whose detail names this
        researcher; ``after_id``/``before_id``: ids strictly between (pages).
        """
        t = audit_entries
        stmt = self._filtered(
            select(t),
            kind=kind,
            kinds=kinds,
            since=since,
            until=until,
            query_id=query_id,
            project=project,
            researcher=researcher,
            search=search,
            after_id=after_id,
            before_id=before_id,
        )
        stmt = stmt.order_by(t.c.id.desc() if newest_first else t.c.id)
        if limit is not None:
            stmt = stmt.limit(limit)
        with self.engine.connect() as conn:
            return [_row_entry(row) for row in conn.execute(stmt)]

    def count(self, **filters: Any) -> int:
        """How many entries match ``filters`` (those of :meth:`entries`, without paging)."""
        stmt = self._filtered(select(func.count()).select_from(audit_entries), **filters)
        with self.engine.connect() as conn:
            return int(conn.execute(stmt).scalar_one())

    def kinds(self) -> list[str]:
        """Every kind of entry the trail holds, sorted (for the console's filter)."""
        stmt = select(audit_entries.c.kind).distinct().order_by(audit_entries.c.kind)
        with self.engine.connect() as conn:
            return [str(k) for k in conn.execute(stmt).scalars()]

    @staticmethod
    def _filtered(
        stmt: Any,
        *,
        kind: str | None = None,
        kinds: Sequence[str] | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        query_id: str | None = None,
        project: str | None = None,
        researcher: str | None = None,
        search: str | None = None,
        after_id: int = 0,
        before_id: int | None = None,
    ) -> Any:
        t = audit_entries
        stmt = stmt.where(t.c.id > after_id)
        if before_id is not None:
            stmt = stmt.where(t.c.id < before_id)
        if kind is not None:
            stmt = stmt.where(t.c.kind == kind)
        if kinds is not None:
            stmt = stmt.where(t.c.kind.in_(list(kinds)))
        for bound, op in ((since, "ge"), (until, "lt")):
            if bound is None:
                continue
            if bound.tzinfo is None:
                raise ValueError("since and until must be timezone-aware")
            text = bound.astimezone(dt.UTC).isoformat(timespec="microseconds")
            stmt = stmt.where(t.c.at >= text if op == "ge" else t.c.at < text)
        if query_id is not None:
            stmt = stmt.where(t.c.query_id == query_id)
        if project is not None:
            stmt = stmt.where(t.c.project == project)
        if researcher is not None:
            # details are canonical JSON (no spaces), so the key and value appear exactly so
            needle = canonical_json({"researcher": researcher})[1:-1]
            stmt = stmt.where(t.c.detail.contains(needle, autoescape=True))
        if search:
            pattern = f"%{search}%"
            stmt = stmt.where(
                t.c.kind.like(pattern)
                | t.c.query_id.like(pattern)
                | t.c.project.like(pattern)
                | t.c.detail.like(pattern)
            )
        return stmt

    def iter_all(self) -> Iterator[AuditEntry]:
        """Every entry in id order (what :func:`verify_trail` walks)."""
        with self.engine.connect() as conn:
            for row in conn.execute(select(audit_entries).order_by(audit_entries.c.id)):
                yield _row_entry(row)

    def head(self) -> tuple[int, str] | None:
        """The (last id, last hash) the head row records, or None for an empty trail."""
        with self.engine.connect() as conn:
            row = conn.execute(select(audit_head).where(audit_head.c.one == 1)).one_or_none()
        return None if row is None else (int(row.last_id), str(row.last_hash))

    def verify(self, public_key: str | None = None) -> AuditReport:
        """Check the whole trail; see :func:`verify_trail`.

        Entries and head are read in one transaction (one snapshot), so a node
        appending meanwhile cannot make a sound trail look truncated.
        """
        with self.engine.begin() as conn:
            rows = conn.execute(select(audit_entries).order_by(audit_entries.c.id)).all()
            head = conn.execute(select(audit_head).where(audit_head.c.one == 1)).one_or_none()
        entries = [_row_entry(row) for row in rows]
        last = None if head is None else (int(head.last_id), str(head.last_hash))
        return verify_trail(entries, last, public_key=public_key)


ProblemKind = Literal["edited", "missing", "reordered", "truncated", "signature", "head"]


@dataclass(frozen=True)
class AuditProblem:
    """Where the chain breaks (``entry_id``: the first entry that is not what it claims)."""

    entry_id: int
    kind: ProblemKind
    message: str

    def __str__(self) -> str:
        return f"entry {self.entry_id}: {self.kind}: {self.message}"


@dataclass
class AuditReport:
    """The outcome of :func:`verify_trail`."""

    entries: int = 0
    checkpoints: int = 0
    last_signed_id: int = 0
    unsigned: int = 0
    """Entries (other than checkpoints) after the last signed one: not yet vouched for."""
    problems: list[AuditProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the chain, head and every checkpoint signature are intact."""
        return not self.problems

    @property
    def first(self) -> AuditProblem | None:
        """The first problem, by entry id (where to start looking)."""
        return min(self.problems, key=lambda p: p.entry_id) if self.problems else None


def _recomputed(e: AuditEntry, id: int | None = None) -> str:
    return entry_hash(
        id=e.id if id is None else id,
        at=e.at_text or e.at.isoformat(timespec="microseconds"),
        kind=e.kind,
        query_id=e.query_id,
        project=e.project,
        detail=e.detail,
        prev=e.prev_hash,
    )


def _check_checkpoint(
    e: AuditEntry, by_id: dict[int, AuditEntry], signers: SignerWindows | None
) -> AuditProblem | None:
    data = e.data
    try:
        signed_id = int(data["signed_id"])
        signed_hash = str(data["signed_hash"])
        key = str(data["public_key"])
        signature = str(data["signature"])
    except (KeyError, TypeError, ValueError):
        return AuditProblem(e.id, "signature", "checkpoint without a readable signature")
    why = None if signers is None else signers.problem(key, e.id, signed_id)
    if why is not None:
        return AuditProblem(e.id, "signature", why)
    if not verify(key, checkpoint_message(signed_id, signed_hash), signature):
        return AuditProblem(e.id, "signature", "checkpoint signature does not verify")
    target = by_id.get(signed_id)
    if target is None or target.hash != signed_hash:
        return AuditProblem(
            e.id,
            "signature",
            f"checkpoint vouches for entry {signed_id}, which is not in the trail",
        )
    return None


def verify_trail(
    entries: list[AuditEntry], head: tuple[int, str] | None, *, public_key: str | None = None
) -> AuditReport:
    """Walk ``entries`` (in id order) and report every place the chain breaks.

    Each entry is checked against the *stored* hash of the one before it, so
    one edited entry gives one problem at that entry (not a cascade), and the
    first problem is where the tampering is.

    Args:
        entries: The trail, ordered by id.
        head: The head row's (last id, last hash), None if it is missing.
        public_key: The node's public key (base64); when given, checkpoints
            signed by any other key are refused, except by keys handed over to it
            through intact ``key_rotated`` entries, for the trail up to their
            handover (:mod:`nodes.audit_keys`).
    """
    report = AuditReport(entries=len(entries))
    by_id = {e.id: e for e in entries}
    broken = [e for e in entries if _recomputed(e) != e.hash]
    broken_ids = {e.id for e in broken}
    handovers: list[Handover] = []
    for e in entries:
        if e.kind == KEY_ROTATED and e.id not in broken_ids:
            handover = read_handover(e.id, e.prev_hash, e.data)
            if isinstance(handover, str):
                report.problems.append(AuditProblem(e.id, "signature", handover))
            else:
                handovers.append(handover)
    signers = None if public_key is None else SignerWindows(public_key, handovers)
    candidates = sorted(broken_ids)[:1000]
    prev_id, prev_hash = 0, GENESIS
    for e in entries:
        intact = e.id not in broken_ids
        if not intact:
            moved_from = next(
                (k for k in candidates if k != e.id and _recomputed(e, k) == e.hash), None
            )
            if moved_from is not None:
                report.problems.append(
                    AuditProblem(
                        e.id,
                        "reordered",
                        f"holds what was entry {moved_from} (entries moved out of order)",
                    )
                )
            else:
                report.problems.append(
                    AuditProblem(e.id, "edited", "content does not match its hash (edited)")
                )
        elif e.id != prev_id + 1:
            report.problems.append(
                AuditProblem(
                    e.id,
                    "missing",
                    f"follows entry {prev_id}: entries {prev_id + 1}..{e.id - 1} were deleted",
                )
            )
        elif e.prev_hash != prev_hash:
            report.problems.append(
                AuditProblem(
                    e.id, "missing", f"does not follow entry {prev_id} (an entry was replaced)"
                )
            )
        if intact and e.kind == "checkpoint":
            problem = _check_checkpoint(e, by_id, signers)
            if problem is None:
                report.checkpoints += 1
                report.last_signed_id = max(report.last_signed_id, int(e.data["signed_id"]))
            else:
                report.problems.append(problem)
        prev_id, prev_hash = e.id, e.hash
    report.unsigned = sum(
        1 for e in entries if e.id > report.last_signed_id and e.kind != "checkpoint"
    )
    if head is None:
        if entries:
            report.problems.append(
                AuditProblem(entries[0].id, "head", "the head record is missing")
            )
    else:
        head_id, head_hash = head
        if head_id > prev_id:
            report.problems.append(
                AuditProblem(
                    prev_id + 1,
                    "truncated",
                    f"the trail ends at entry {prev_id} but its head records entry {head_id}",
                )
            )
        elif head_id < prev_id or head_hash != prev_hash:
            report.problems.append(
                AuditProblem(
                    min(head_id, prev_id) or 1,
                    "head",
                    f"the head records entry {head_id}, the trail ends at entry {prev_id} "
                    "with another hash (entries appended or the head edited outside the node)",
                )
            )
    return report
