"""The per-site privacy budget ledger: a node pays here *before* any number leaves.

Why a ledger inside the hospital: the site, not the gateway, is accountable for
how much privacy loss its registry has released. So the node charges this ledger
first and only then releases the number, which gives these rules:

* **One transaction.** Reserving and recording a charge happen in one database
  transaction: the account row is created if missing, ``spent`` is raised by a
  *conditional* ``UPDATE ... WHERE spent + :units <= :budget`` and the charge row
  is inserted. Either all three are committed or none is, so concurrent queries
  (threads of one node, or several processes sharing the database) can never
  overspend, and a crash before the commit leaves no trace.
* **Committed before release.** :meth:`Ledger.charge` returns only after the
  commit (SQLite runs with ``synchronous=FULL``), so a crash after the number
  left can never have lost the charge that paid for it.
* **No refunds.** A response lost on the way to the gateway does not give the
  budget back: the number may have been seen. A replayed work item carries the
  same ``query_id`` and is refused with :class:`~varde.errors.Conflict`, so it
  never pays twice either.
* **Totals come from policy.** The ledger stores what was *spent*; the total a
  project may spend is passed in at charge time from the site's current policy,
  so a policy change takes effect on the next charge without migrating anything.
* **Exact arithmetic.** Amounts are stored as integers in units of 1e-9
  (nano-epsilon). Each charge is rounded *up* and each budget *down*, from the
  shortest decimal form of the float (``repr``), so ten charges of ``0.1`` fit a
  budget of ``1.0`` exactly and the eleventh does not, and rounding can only
  ever err on the side of privacy.

The ledger works on SQLite (one file per node, the default) and PostgreSQL.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    Engine,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.schema import CreateSchema
from sqlalchemy.types import TypeDecorator

from nodes.sqlite import BUSY_TIMEOUT_S, ensure_schema, serialised_writes
from varde.budget import MAX_AMOUNT, ZCDP, Budget, Measure, PureDP, budget
from varde.errors import BudgetExhausted, Conflict

__all__ = ["UNITS_PER_EPSILON", "Charge", "Ledger"]

#: Stored amounts are integers in units of 1e-9 so sums are exact.
UNITS_PER_EPSILON = 10**9

# Largest charge or budget in units. Kept far below 2**63 so that
# ``spent + units`` can never overflow a 64-bit integer column (SQLite would
# silently turn an overflowing sum into a float, PostgreSQL would raise).
_MAX_UNITS = int(MAX_AMOUNT) * UNITS_PER_EPSILON


class _UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always UTC-aware in Python, whatever the database keeps.

    Why: SQLite has no time-zone-aware column type and returns naive datetimes;
    storing naive UTC everywhere and re-attaching UTC on read gives the same
    aware value back from SQLite and PostgreSQL.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Store naive UTC; refuse naive input, whose zone would be a guess."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("ledger timestamps must be timezone-aware")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any | None, dialect: Dialect) -> datetime | None:
        """Re-attach UTC to the stored naive value."""
        if value is None:
            return None
        if not isinstance(value, datetime):  # pragma: no cover - driver contract
            raise TypeError(f"expected a datetime from the database, got {type(value)!r}")
        return value.replace(tzinfo=UTC)


class _Base(DeclarativeBase):
    """Declarative base of the ledger's own tables (kept apart from any other metadata)."""


class _Account(_Base):
    """What one project has spent of one measure in one period, in nano units.

    The primary key is the account key, so "insert if missing" can rely on the
    database's uniqueness instead of a racy read-then-insert.
    """

    __tablename__ = "budget_accounts"
    __table_args__ = (CheckConstraint("spent_units >= 0", name="ck_budget_accounts_spent"),)

    project: Mapped[str] = mapped_column(String, primary_key=True)
    measure: Mapped[str] = mapped_column(String, primary_key=True)
    period: Mapped[str] = mapped_column(String, primary_key=True)
    spent_units: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    updated_at: Mapped[datetime] = mapped_column(_UTCDateTime, nullable=False)


class _ChargeRow(_Base):
    """One paid release; ``query_id`` is unique so a replayed work item cannot pay twice."""

    __tablename__ = "budget_charges"
    __table_args__ = (
        CheckConstraint("units > 0", name="ck_budget_charges_units"),
        CheckConstraint("spent_after_units >= units", name="ck_budget_charges_spent_after"),
        UniqueConstraint("query_id", name="uq_budget_charges_query_id"),
    )

    # Integer (not BigInteger) so SQLite makes it the rowid alias and it autoincrements.
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    query_id: Mapped[str] = mapped_column(String, nullable=False)
    project: Mapped[str] = mapped_column(String, nullable=False, index=True)
    measure: Mapped[str] = mapped_column(String, nullable=False)
    period: Mapped[str] = mapped_column(String, nullable=False)
    units: Mapped[int] = mapped_column(BigInteger, nullable=False)
    spent_after_units: Mapped[int] = mapped_column(BigInteger, nullable=False)
    created_at: Mapped[datetime] = mapped_column(_UTCDateTime, nullable=False)
    note: Mapped[str] = mapped_column(Text, nullable=False, default="")


@dataclass(frozen=True)
class Charge:
    """One committed charge, as the node's audit log and the tests see it.

    Attributes:
        query_id: The work item that paid; unique across the ledger.
        project: The project whose budget paid.
        measure: What was spent, e.g. ``"epsilon"`` or ``"rho"``.
        period: The budget period, e.g. ``"lifetime"`` or ``"2025"``.
        amount: The amount charged after rounding up to 1e-9.
        spent_after: The account's total spent right after this charge.
        created_at: When the charge was made (UTC).
        note: Free text for auditors (e.g. the statistic released).
    """

    query_id: str
    project: str
    measure: Measure
    period: str
    amount: float
    spent_after: float
    created_at: datetime
    note: str

    @property
    def cost(self) -> Budget:
        """What was charged, as a typed budget."""
        return budget(self.measure, self.amount)


def _decimal(value: float, what: str) -> Decimal:
    """The shortest decimal form of ``value``, i.e. the number the caller wrote.

    Why ``repr``: ``Decimal(0.1)`` is the binary value 0.1000000000000000055...,
    which would round *up* to 100000001 units; ``repr(0.1)`` is ``"0.1"``.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} must be a real number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return Decimal(repr(number))


def _amount_units(amount: float) -> int:
    """Nano units for a charge, rounded up so rounding never undercharges."""
    exact = _decimal(amount, "amount")
    if exact <= 0:
        raise ValueError(f"amount must be > 0, got {amount!r}")
    units = int((exact * UNITS_PER_EPSILON).to_integral_value(rounding=ROUND_CEILING))
    if units > _MAX_UNITS:
        raise ValueError(f"amount {amount!r} exceeds the largest chargeable amount")
    return units


def _budget_units(budget: float) -> int:
    """Nano units for a budget, rounded down so rounding never overspends.

    Budgets beyond the ledger's range are clamped (down), which is harmless:
    no sequence of permitted charges can reach that range anyway.
    """
    exact = _decimal(budget, "budget")
    if exact < 0:
        raise ValueError(f"budget must be >= 0, got {budget!r}")
    units = int((exact * UNITS_PER_EPSILON).to_integral_value(rounding=ROUND_FLOOR))
    return min(units, _MAX_UNITS)


def _as_float(units: int) -> float:
    """Nano units back to a float; int/int division is correctly rounded, so 10**9 -> 1.0."""
    return units / UNITS_PER_EPSILON


def _require_text(**values: str) -> None:
    """Refuse empty keys: an empty project or query id is always a caller bug."""
    for name, value in values.items():
        if not isinstance(value, str) or not value:
            raise ValueError(f"{name} must be a non-empty string, got {value!r}")


class Ledger:
    """The node's privacy budget ledger, backed by SQLite or PostgreSQL.

    Thread-safe: every call checks a connection out of the engine's pool, and
    every charge is one database transaction, so one ``Ledger`` can be shared by
    all threads of a node, and several processes may open the same database.

    Attributes:
        _before_commit: Test hook, called inside the charge transaction after the
            account was raised and the charge row inserted, just before COMMIT.
            An exception raised here must roll everything back, which is how the
            tests simulate a crash at the worst moment.
    """

    def __init__(self, url: str, *, schema: str | None = None) -> None:
        """Open (and if needed create) the ledger at ``url``.

        Args:
            url: A SQLAlchemy URL, e.g. ``"sqlite:///state/ledger.sqlite"`` or
                ``"postgresql+psycopg://postgres@127.0.0.1:5432/test"``.
            schema: PostgreSQL only: keep the tables in this schema (created if
                missing), so several ledgers, or parallel test runs, can share one
                database without seeing each other.

        Raises:
            ValueError: For an in-memory SQLite database (a restart would forget
                every charge), a schema on SQLite, or an unsupported database.
        """
        parsed = make_url(url)
        backend = parsed.get_backend_name()
        if backend == "sqlite":
            if parsed.database in (None, "", ":memory:") or "mode=memory" in str(parsed):
                raise ValueError(
                    "the ledger needs a database file: in memory, charges die with the process"
                )
            if schema is not None:
                raise ValueError("schema is only supported on PostgreSQL")
            engine = create_engine(
                parsed,
                connect_args={"timeout": BUSY_TIMEOUT_S},
                # All writers serialise on SQLite's file lock anyway; a few pooled
                # connections are enough, and waiting threads queue in the pool.
                pool_size=5,
                max_overflow=10,
                pool_timeout=BUSY_TIMEOUT_S * 4,
            )
            # synchronous=FULL: a committed charge survives power loss (charge before release)
            write_engine = serialised_writes(engine, synchronous="FULL")
        elif backend == "postgresql":
            engine = create_engine(
                parsed,
                pool_size=5,
                max_overflow=10,
                pool_timeout=60.0,
                pool_pre_ping=True,
            )
            write_engine = engine
        else:
            raise ValueError(f"unsupported ledger database {backend!r}: use sqlite or postgresql")

        self._backend = backend
        self._schema = schema
        self._base_engine: Engine = engine
        self._engine: Engine = (
            engine.execution_options(schema_translate_map={None: schema}) if schema else engine
        )
        self._write_engine: Engine = (
            write_engine.execution_options(schema_translate_map={None: schema})
            if schema
            else write_engine
        )
        self._closed = False
        self._before_commit: Callable[[], None] | None = None
        try:
            self._create_tables()
        except BaseException:
            engine.dispose()
            raise

    @classmethod
    def in_directory(cls, state_dir: Path) -> Ledger:
        """The ledger kept in a node's state directory, as ``ledger.sqlite``."""
        state_dir.mkdir(parents=True, exist_ok=True)
        return cls(f"sqlite:///{(state_dir / 'ledger.sqlite').resolve()}")

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _create_tables(self) -> None:
        """Create the schema and tables if missing, safely when several nodes start at once.

        Why a lock: ``create_all`` checks then creates, which races. On SQLite the
        write engine's BEGIN IMMEDIATE serialises it; on PostgreSQL a
        transaction-scoped advisory lock does.
        """
        with self._write_engine.begin() as conn:
            if self._backend == "postgresql":
                conn.execute(
                    text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
                    {"key": f"varde.ledger:{self._schema or ''}"},
                )
                if self._schema is not None:
                    conn.execute(CreateSchema(self._schema, if_not_exists=True))
            ensure_schema(conn, _Base.metadata)  # refuses a version it does not know

    def _connection_engine(self, *, write: bool) -> Engine:
        """The engine to use, refusing work after :meth:`close`."""
        if self._closed:
            raise RuntimeError("the ledger is closed")
        return self._write_engine if write else self._engine

    def _ensure_account(self, conn: Connection, project: str, measure: str, period: str) -> None:
        """Insert the account row if missing, without failing when another writer races us.

        ``ON CONFLICT DO NOTHING`` (SQLite and PostgreSQL alike) never raises on
        a concurrent insert, so it does not abort the surrounding transaction.
        """
        values = {
            "project": project,
            "measure": measure,
            "period": period,
            "spent_units": 0,
            "updated_at": datetime.now(UTC),
        }
        if self._backend == "postgresql":
            conn.execute(pg_insert(_Account).values(**values).on_conflict_do_nothing())
        else:
            conn.execute(sqlite_insert(_Account).values(**values).on_conflict_do_nothing())

    def charge(
        self,
        *,
        project: str,
        cost: Budget,
        total: Budget,
        query_id: str,
        period: str = "lifetime",
        note: str = "",
    ) -> Charge:
        """Pay ``cost`` from the project's account, or refuse and change nothing.

        Call this *before* releasing the number it pays for: once it returns, the
        charge is committed and will never be refunded.

        Args:
            project: The project whose budget pays.
            cost: Privacy loss of the release (``PureDP`` or ``ZCDP``); > 0,
                rounded up to 1e-9. Its measure names the account it pays from.
            total: The budget the site's policy allows *now* for this account, in
                the same measure; rounded down to 1e-9.
            query_id: Unique id of the work item; a second charge with it is refused.
            period: Budget period (``"lifetime"``, ``"2025"``, ...); separate account.
            note: Free text kept for auditors.

        Returns:
            The committed charge.

        Raises:
            ValueError: For a zero cost, a total in another measure than the
                cost, or an empty key.
            BudgetExhausted: If the amount does not fit in what is left.
            Conflict: If ``query_id`` has already paid.
        """
        if not (isinstance(cost, PureDP | ZCDP) and isinstance(total, PureDP | ZCDP)):
            raise ValueError(f"cost and total must be typed budgets, got {cost!r} and {total!r}")
        if cost.measure != total.measure:
            raise ValueError(f"cannot pay {cost} from a budget in {total.measure}")
        measure, amount = cost.measure, cost.amount
        _require_text(project=project, query_id=query_id, measure=measure, period=period)
        units = _amount_units(amount)
        budget_units = _budget_units(total.amount)
        if not isinstance(note, str):
            raise ValueError(f"note must be a string, got {note!r}")
        engine = self._connection_engine(write=True)
        now = datetime.now(UTC)
        key = (
            (_Account.project == project)
            & (_Account.measure == measure)
            & (_Account.period == period)
        )
        with engine.begin() as conn:
            # Fast path for a replay. The unique index below is what guarantees it.
            seen = conn.execute(
                select(_ChargeRow.id).where(_ChargeRow.query_id == query_id)
            ).first()
            if seen is not None:
                raise Conflict(f"query {query_id!r} has already been charged")
            self._ensure_account(conn, project, measure, period)
            raised = conn.execute(
                update(_Account)
                .where(key)
                .where(_Account.spent_units + units <= budget_units)
                .values(spent_units=_Account.spent_units + units, updated_at=now)
            )
            spent_units = conn.execute(select(_Account.spent_units).where(key)).scalar_one()
            if raised.rowcount != 1:
                left = _as_float(max(0, budget_units - spent_units))
                raise BudgetExhausted(
                    f"privacy budget exhausted for project {project!r} ({measure}, {period}):"
                    f" requested {amount!r}, remaining {left!r} of {_as_float(budget_units)!r}"
                )
            try:
                conn.execute(
                    insert(_ChargeRow).values(
                        query_id=query_id,
                        project=project,
                        measure=measure,
                        period=period,
                        units=units,
                        spent_after_units=spent_units,
                        created_at=now,
                        note=note,
                    )
                )
            except IntegrityError as err:
                # Another transaction with this query_id committed first (both SQLite
                # and PostgreSQL name the column or constraint). Any other violation
                # is a bug, not a replay, and must not be reported as one.
                if "query_id" not in str(err.orig):
                    raise
                raise Conflict(f"query {query_id!r} has already been charged") from err
            if self._before_commit is not None:
                self._before_commit()
        return Charge(
            query_id=query_id,
            project=project,
            measure=measure,
            period=period,
            amount=_as_float(units),
            spent_after=_as_float(spent_units),
            created_at=now,
            note=note,
        )

    def _spent_units(self, project: str, measure: str, period: str) -> int:
        """Spent nano units of one account; an account never charged has spent 0."""
        with self._connection_engine(write=False).connect() as conn:
            value = conn.execute(
                select(_Account.spent_units).where(
                    (_Account.project == project)
                    & (_Account.measure == measure)
                    & (_Account.period == period)
                )
            ).scalar_one_or_none()
        return 0 if value is None else int(value)

    def spent(self, project: str, measure: Measure = "epsilon", period: str = "lifetime") -> float:
        """How much of ``measure`` the project has spent in ``period`` (what auditors read)."""
        return _as_float(self._spent_units(project, measure, period))

    def remaining(self, project: str, total: Budget, period: str = "lifetime") -> Budget:
        """What is left of ``total`` (the policy's current budget, in its measure); never negative.

        It is zero, not negative, when a policy shrank below what was already spent.
        """
        budget_units = _budget_units(total.amount)
        spent = self._spent_units(project, total.measure, period)
        return total.like(_as_float(max(0, budget_units - spent)))

    def charges(self, project: str | None = None) -> list[Charge]:
        """All committed charges, oldest first, optionally of one project."""
        query = select(_ChargeRow).order_by(_ChargeRow.id)
        if project is not None:
            query = query.where(_ChargeRow.project == project)
        with self._connection_engine(write=False).connect() as conn:
            rows = conn.execute(query).all()
        return [
            Charge(
                query_id=row.query_id,
                project=row.project,
                measure=row.measure,
                period=row.period,
                amount=_as_float(row.units),
                spent_after=_as_float(row.spent_after_units),
                created_at=row.created_at,
                note=row.note,
            )
            for row in rows
        ]

    def close(self) -> None:
        """Close every pooled connection; the ledger cannot be used afterwards."""
        if not self._closed:
            self._closed = True
            self._base_engine.dispose()
