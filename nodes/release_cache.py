"""The node's release cache: the repeat-query defence.

Why: DP noise averages out. If a project could ask the same question a hundred
times and average the answers, the noise would shrink by ten; the ledger would
charge for each repeat, but a site that answers *the same numbers* to a repeat
makes the attack pointless and saves the project's budget too. So a node keeps
every DP release it made, keyed by the project, the canonical form of the
question (:func:`nodes.canonical.query_key`, which sees through trivial
rewrites) and the version of its data, and answers a repeat from here with
``cached: true`` and nothing charged.

The cache lives in the node's own SQLite database (it is the node's defence,
not the gateway's), so it survives a restart. Only released (already noisy)
cells are stored, never exact aggregates. Entries are never evicted: a cache
that forgets would let a patient attacker re-draw the noise.

If two identical queries race, both miss, both are charged in full and both
release; the first to store wins, and every later repeat gets that one.
Each was paid for, so no privacy is lost.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from dataclasses import dataclass

import numpy as np
from pydantic import TypeAdapter
from sqlalchemy import DateTime, String, Text, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from nodes.canonical import query_key
from nodes.data import RegistryData
from nodes.sqlite import create_tables
from varde.budget import Budget, PureDP
from varde.envelope import utcnow
from varde.query import Query
from varde.release import Cell

__all__ = ["CachedRelease", "ReleaseCache", "cache_key", "data_digest"]

log = logging.getLogger("varde.node")


class _Base(DeclarativeBase):
    """The cache's own metadata (kept apart from the store's and the ledger's tables)."""


class _CachedRow(_Base):
    __tablename__ = "release_cache"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    project: Mapped[str] = mapped_column(String(100), index=True)
    query_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    epsilon: Mapped[str] = mapped_column(String(60))  # the cost's JSON, e.g. {"rho":0.1}
    mechanism: Mapped[str] = mapped_column(String(100))
    noise_scales: Mapped[str] = mapped_column(Text)
    cells: Mapped[str] = mapped_column(Text)


@dataclass(frozen=True)
class CachedRelease:
    """What was released the first time: enough to answer a repeat identically."""

    query_id: str
    cost: Budget
    """What the first release charged (a repeat charges nothing)."""
    mechanism: str
    noise_scales: dict[str, float]
    cells: list[Cell]


_BUDGET = TypeAdapter[Budget](Budget)


def _stored_cost(text: str) -> Budget:
    """The cost column: a budget's JSON, or (rows cached before typed budgets) an epsilon."""
    if text.lstrip().startswith("{"):
        return _BUDGET.validate_json(text)
    return PureDP(float(text))


class ReleaseCache:
    """Released cells by cache key, in the node's database."""

    def __init__(self, engine: Engine, write_engine: Engine) -> None:
        self.engine = engine
        self.write_engine = write_engine
        create_tables(_Base.metadata, write_engine)

    def get(self, key: str) -> CachedRelease | None:
        """The release stored under ``key``, or None."""
        with Session(self.engine) as session:
            row = session.get(_CachedRow, key)
            if row is None:
                return None
            return CachedRelease(
                query_id=row.query_id,
                cost=_stored_cost(row.epsilon),
                mechanism=row.mechanism,
                noise_scales={k: float(v) for k, v in json.loads(row.noise_scales).items()},
                cells=[Cell.model_validate(c) for c in json.loads(row.cells)],
            )

    def put(self, key: str, project: str, release: CachedRelease) -> None:
        """Store ``release`` under ``key`` unless one is there already (the first wins)."""
        with Session(self.write_engine) as session:
            session.add(
                _CachedRow(
                    key=key,
                    project=project,
                    query_id=release.query_id,
                    created_at=utcnow(),
                    epsilon=_BUDGET.dump_json(release.cost).decode(),
                    mechanism=release.mechanism,
                    noise_scales=json.dumps(release.noise_scales),
                    cells=json.dumps([c.model_dump(mode="json") for c in release.cells]),
                )
            )
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
            except SQLAlchemyError:
                # The release is paid for and goes out regardless; a repeat of it will then
                # be answered afresh and charged again, which costs budget, never privacy.
                session.rollback()
                log.warning("could not cache release %s", release.query_id, exc_info=True)

    def __len__(self) -> int:
        with Session(self.engine) as session:
            return len(list(session.scalars(select(_CachedRow.key))))


def data_digest(data: RegistryData) -> str:
    """A digest of every prepared column (about a second per 10M rows; computed once)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{data.site}:{data.n_rows}:{data.max_rows_per_patient}".encode())
    for name in sorted(data.columns):
        col = np.ascontiguousarray(data.columns[name])
        h.update(name.encode())
        h.update(str(col.dtype).encode())
        h.update(col.tobytes())
    for name in sorted(data.study):  # study columns (none: the digest of before)
        col = np.ascontiguousarray(data.study[name])
        h.update(f"study:{name}:{col.dtype}:{data.study_levels.get(name)}".encode())
        h.update(col.tobytes())
    return h.hexdigest()


def cache_key(query: Query, data_version: str) -> str:
    """The key of ``query`` on data ``data_version``: canonical question plus data digest."""
    return hashlib.sha256(f"{query_key(query)}:{data_version}".encode()).hexdigest()
