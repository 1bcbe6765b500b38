"""Query-set overlap control: no aggregate release may differ from an earlier one by a few patients.

Why: exact aggregates with small-cell suppression do not resist differencing
(DataSHIELD dsBase #251): ``count(cohort) - count(cohort and not <one patient's
predicate>)`` is 1, and the same subtraction on a histogram, a sum or a mean's
parts gives that patient's stage, survival days or age. Suppression looks at one
release at a time; the attack needs two. So the node remembers, per project and
version of its data, the exact set of patients behind every cell it released in
aggregate mode (as a compressed bitmap of its internal patient indices, in its
own database: the sets never leave the node), and refuses a new release if any
of its cells' sets has a symmetric difference with an earlier one of at least
one and fewer than ``min_cell`` patients. Identical sets are allowed (they tell
nothing new, and the cell-key method gives them the same perturbation).

Only sets whose sizes differ by less than ``min_cell`` can be that close, so the
check reads just those (indexed by size). The check and the recording happen in
one write transaction, so two concurrent releases cannot both pass against each
other.

Limits: this compares two releases at a time. Linear combinations of three or
more releases whose pairwise differences are all large ("trackers") are not
caught here; the cell-key perturbation (:mod:`nodes.statistics.cellkey`) blurs
them, and only DP mode bounds what any number of releases can reveal.
"""

from __future__ import annotations

import numpy as np
from pyroaring import BitMap
from sqlalchemy import Column, Engine, Integer, LargeBinary, MetaData, String, Table, insert, select

from nodes.sqlite import create_tables
from varde.envelope import utcnow
from varde.errors import PolicyViolation

_meta = MetaData()
released_sets = Table(
    "aggregate_released_sets",
    _meta,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("project", String(100), nullable=False),
    Column("data_version", String(64), nullable=False),
    Column("size", Integer, nullable=False),
    Column("members", LargeBinary, nullable=False),
    Column("query_id", String(64), nullable=False),
    Column("created_at", String(40), nullable=False),
)


def patient_set(indices: np.ndarray) -> BitMap:
    """The set of (internal, dense) patient indices behind one cell."""
    return BitMap(np.asarray(indices, dtype=np.uint32))


class OverlapBook:
    """Patient sets of every aggregate release, in the node's database."""

    def __init__(self, engine: Engine, write_engine: Engine) -> None:
        self.engine = engine
        self.write_engine = write_engine
        create_tables(_meta, write_engine)

    def admit(
        self,
        *,
        project: str,
        data_version: str,
        sets: list[BitMap],
        min_cell: int,
        query_id: str,
        site: str,
    ) -> None:
        """Record ``sets`` as released, or refuse if one is too close to an earlier one.

        Raises:
            PolicyViolation: A set differs from one released earlier for ``project``
                by at least one and fewer than ``min_cell`` patients; nothing is
                recorded and the refusal is audited by the caller.
        """
        now = utcnow().isoformat(timespec="microseconds")
        with self.write_engine.begin() as conn:
            for members in sets:
                size = len(members)
                rows = conn.execute(
                    select(released_sets.c.members, released_sets.c.query_id).where(
                        (released_sets.c.project == project)
                        & (released_sets.c.data_version == data_version)
                        & (released_sets.c.size > size - min_cell)
                        & (released_sets.c.size < size + min_cell)
                    )
                )
                for blob, earlier in rows:
                    apart = members.symmetric_difference_cardinality(BitMap.deserialize(blob))
                    if 0 < apart < min_cell:
                        raise PolicyViolation(
                            f"site {site!r} does not release this: one of its cells differs "
                            f"from a cell released earlier for project {project!r} (query "
                            f"{earlier}) by fewer than {min_cell} patients, which would let "
                            "the two be subtracted"
                        )
            if sets:
                conn.execute(
                    insert(released_sets),
                    [
                        {
                            "project": project,
                            "data_version": data_version,
                            "size": len(members),
                            "members": bytes(members.serialize()),
                            "query_id": query_id,
                            "created_at": now,
                        }
                        for members in sets
                    ],
                )

    def count(self, project: str) -> int:
        """How many released cell sets ``project`` has (for tests and the console)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(released_sets.c.id).where(released_sets.c.project == project)
            )
            return len(rows.all())
