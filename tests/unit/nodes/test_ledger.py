"""Tests of the node's privacy budget ledger (nodes/ledger.py).

Backends: every basic and concurrency test runs on a SQLite file and on the
PostgreSQL at 127.0.0.1:5432 (each test in a fresh schema, dropped afterwards,
so pytest-xdist workers never see each other's rows). The PostgreSQL variants
skip with a clear reason when that server is not reachable.
"""

from __future__ import annotations

import math
import multiprocessing
import shutil
import sqlite3
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)
from sqlalchemy import create_engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from nodes.ledger import Charge, Ledger
from varde.budget import PureDP
from varde.budget import budget as typed_budget
from varde.errors import BudgetExhausted, Conflict

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
NANO = 10**9

Target = tuple[str, str | None]  # (url, schema)


# --------------------------------------------------------------------- fixtures


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A fresh PostgreSQL schema for one test, dropped afterwards; skip if no server."""
    name = f"ledger_{uuid.uuid4().hex}"
    try:
        engine = create_engine(PG_URL, poolclass=NullPool, connect_args={"connect_timeout": 5})
    except ImportError as err:  # psycopg not installed
        pytest.skip(f"PostgreSQL not reachable at 127.0.0.1:5432: {err}")
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{name}"')
    except OperationalError as err:
        engine.dispose()
        reason = (str(err.orig) or str(err)).strip().splitlines()[0]
        pytest.skip(f"PostgreSQL not reachable at 127.0.0.1:5432: {reason}")
    try:
        yield name
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    """Where a test's ledger lives: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.sqlite'}", None
    schema: str = request.getfixturevalue("pg_schema")
    return PG_URL, schema


@pytest.fixture
def open_ledger(target: Target) -> Iterator[Callable[[], Ledger]]:
    """Open ledgers on the test's target; all are closed at teardown."""
    opened: list[Ledger] = []

    def _open() -> Ledger:
        url, schema = target
        ledger = Ledger(url, schema=schema)
        opened.append(ledger)
        return ledger

    yield _open
    for ledger in opened:
        ledger.close()


@pytest.fixture
def ledger(open_ledger: Callable[[], Ledger]) -> Ledger:
    return open_ledger()


def _units(value: float) -> int:
    """The contract's rounding for a charge, computed independently (Fraction, not Decimal)."""
    return math.ceil(Fraction(repr(value)) * NANO)


def _budget_units(value: float) -> int:
    return math.floor(Fraction(repr(value)) * NANO)


def _charge_units(charge: Charge) -> int:
    return round(charge.amount * NANO)


# ----------------------------------------------------------------------- basics


def test_charge_spent_remaining(ledger: Ledger) -> None:
    before = datetime.now(UTC)
    charge = ledger.charge(
        project="p1", cost=PureDP(0.25), total=PureDP(1.0), query_id="q1", note="count"
    )
    assert charge == Charge(
        query_id="q1",
        project="p1",
        measure="epsilon",
        period="lifetime",
        amount=0.25,
        spent_after=0.25,
        created_at=charge.created_at,
        note="count",
    )
    assert charge.created_at.tzinfo is not None
    assert charge.created_at.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=1) <= charge.created_at <= datetime.now(UTC)
    assert ledger.spent("p1") == 0.25
    assert ledger.remaining("p1", PureDP(1.0)).amount == 0.75
    assert ledger.spent("never-charged") == 0.0
    assert ledger.remaining("never-charged", PureDP(2.0)).amount == 2.0
    stored = ledger.charges()
    assert stored == [charge]  # created_at survives the round trip, UTC-aware


def test_charges_oldest_first_and_filtered(ledger: Ledger) -> None:
    made = [
        ledger.charge(project=p, cost=PureDP(0.1), total=PureDP(5.0), query_id=f"q{i}")
        for i, p in enumerate(["a", "b", "a", "c", "b", "a"])
    ]
    assert [c.query_id for c in ledger.charges()] == [c.query_id for c in made]
    assert [c.query_id for c in ledger.charges("a")] == ["q0", "q2", "q5"]
    assert [c.spent_after for c in ledger.charges("a")] == [0.1, 0.2, 0.3]
    assert ledger.charges("nobody") == []


def test_budget_exhausted_states_project_request_and_remaining(ledger: Ledger) -> None:
    ledger.charge(project="lung-2025", cost=PureDP(0.75), total=PureDP(1.0), query_id="q1")
    with pytest.raises(BudgetExhausted) as excinfo:
        ledger.charge(project="lung-2025", cost=PureDP(0.5), total=PureDP(1.0), query_id="q2")
    message = str(excinfo.value)
    assert "lung-2025" in message
    assert "0.5" in message  # requested
    assert "0.25" in message  # remaining
    assert excinfo.value.code == "budget_exhausted"
    # A refused charge changes nothing, and its query id stays usable.
    assert ledger.spent("lung-2025") == 0.75
    assert [c.query_id for c in ledger.charges()] == ["q1"]
    ledger.charge(project="lung-2025", cost=PureDP(0.25), total=PureDP(1.0), query_id="q2")
    assert ledger.spent("lung-2025") == 1.0


def test_refused_charge_on_new_account_creates_nothing(ledger: Ledger) -> None:
    with pytest.raises(BudgetExhausted, match="remaining 0.0"):
        ledger.charge(project="p", cost=PureDP(0.1), total=PureDP(0.0), query_id="q1")
    assert ledger.charges() == []
    assert ledger.spent("p") == 0.0


@pytest.mark.parametrize("amount", [math.nan, math.inf, -math.inf, 0.0, -0.0, -0.1, 1e300])
def test_invalid_amount_is_value_error(ledger: Ledger, amount: float) -> None:
    with pytest.raises(ValueError):
        ledger.charge(project="p", cost=PureDP(amount), total=PureDP(1.0), query_id="q")
    assert ledger.charges() == []


@pytest.mark.parametrize("budget", [math.nan, math.inf, -math.inf, -0.1])
def test_invalid_budget_is_value_error(ledger: Ledger, budget: float) -> None:
    with pytest.raises(ValueError):
        ledger.charge(project="p", cost=PureDP(0.1), total=PureDP(budget), query_id="q")
    with pytest.raises(ValueError):
        ledger.remaining("p", PureDP(budget))
    assert ledger.charges() == []


@pytest.mark.parametrize("field", ["project", "query_id", "period"])
def test_empty_keys_are_value_error(ledger: Ledger, field: str) -> None:
    kwargs: dict[str, Any] = {
        "project": "p",
        "cost": PureDP(0.1),
        "total": PureDP(1.0),
        "query_id": "q",
        "period": "lifetime",
    }
    kwargs[field] = ""
    with pytest.raises(ValueError):
        ledger.charge(**kwargs)


def test_duplicate_query_id_is_conflict_and_changes_nothing(ledger: Ledger) -> None:
    first = ledger.charge(project="p", cost=PureDP(0.3), total=PureDP(1.0), query_id="work-1")
    for kwargs in (
        {"project": "p", "cost": PureDP(0.3), "total": PureDP(1.0)},  # exact replay
        {"project": "other", "cost": PureDP(0.1), "total": PureDP(1.0)},  # other account
        {"project": "p", "cost": PureDP(5.0), "total": PureDP(1.0)},  # would not even fit
    ):
        with pytest.raises(Conflict) as excinfo:
            ledger.charge(query_id="work-1", **kwargs)
        assert excinfo.type is Conflict  # not its subclass BudgetExhausted
        assert "work-1" in str(excinfo.value)
    assert ledger.charges() == [first]
    assert ledger.spent("p") == 0.3
    assert ledger.spent("other") == 0.0


def test_lost_response_does_not_refund(ledger: Ledger) -> None:
    """The node charged, the reply was lost, the gateway re-sends: no refund, no second payment."""
    ledger.charge(project="p", cost=PureDP(0.4), total=PureDP(1.0), query_id="w")
    with pytest.raises(Conflict):
        ledger.charge(project="p", cost=PureDP(0.4), total=PureDP(1.0), query_id="w")
    assert ledger.spent("p") == 0.4
    assert ledger.remaining("p", PureDP(1.0)).amount == 0.6


def test_accounts_are_separate_per_project_measure_period(ledger: Ledger) -> None:
    keys = [
        ("a", "epsilon", "lifetime"),
        ("b", "epsilon", "lifetime"),
        ("a", "rho", "lifetime"),
        ("a", "epsilon", "2025"),
        ("a", "rho", "2026"),
    ]
    for i, (project, measure, period) in enumerate(keys):
        ledger.charge(
            project=project,
            cost=typed_budget(measure, 1.0),
            total=typed_budget(measure, 1.0),
            query_id=f"q{i}",
            period=period,
        )
    for project, measure, period in keys:
        assert ledger.spent(project, measure, period) == 1.0
        assert ledger.remaining(project, typed_budget(measure, 1.0), period).amount == 0.0
    assert ledger.spent("b", "rho", "lifetime") == 0.0
    assert ledger.spent("a", "epsilon", "2024") == 0.0


def test_ten_tenths_fit_exactly_and_the_eleventh_does_not(ledger: Ledger) -> None:
    assert sum([0.1] * 10) != 1.0  # the float trap this ledger avoids
    for i in range(10):
        ledger.charge(project="p", cost=PureDP(0.1), total=PureDP(1.0), query_id=f"q{i}")
    assert ledger.spent("p") == 1.0
    assert ledger.remaining("p", PureDP(1.0)).amount == 0.0
    with pytest.raises(BudgetExhausted):
        ledger.charge(project="p", cost=PureDP(0.1), total=PureDP(1.0), query_id="q10")
    # The smallest unit does not fit either.
    with pytest.raises(BudgetExhausted):
        ledger.charge(project="p", cost=PureDP(1e-9), total=PureDP(1.0), query_id="q11")
    assert len(ledger.charges()) == 10


def test_rounding_never_undercharges_nor_overspends(ledger: Ledger) -> None:
    third = ledger.charge(project="p", cost=PureDP(1 / 3), total=PureDP(1.0), query_id="q1")
    assert third.amount == 0.333333334  # rounded up to the next 1e-9
    tiny = ledger.charge(project="p", cost=PureDP(1e-15), total=PureDP(1.0), query_id="q2")
    assert tiny.amount == 1e-9  # anything > 0 costs at least one unit
    # Spent is 333333335 units; a budget of 333333335.9 units rounds down to 333333335.
    with pytest.raises(BudgetExhausted):
        ledger.charge(project="p", cost=PureDP(1e-9), total=PureDP(0.3333333359), query_id="q3")


def test_budget_comes_from_the_policy_at_charge_time(ledger: Ledger) -> None:
    ledger.charge(project="p", cost=PureDP(0.6), total=PureDP(1.0), query_id="q1")
    # The site's policy shrinks the budget below what was spent: nothing more, never negative.
    assert ledger.remaining("p", PureDP(0.5)).amount == 0.0
    with pytest.raises(BudgetExhausted):
        ledger.charge(project="p", cost=PureDP(0.1), total=PureDP(0.5), query_id="q2")
    # The policy grows it again: the ledger kept the spend, not the total.
    ledger.charge(project="p", cost=PureDP(1.4), total=PureDP(2.0), query_id="q3")
    assert ledger.spent("p") == 2.0
    assert ledger.remaining("p", PureDP(3.0)).amount == 1.0


def test_charges_survive_reopening(open_ledger: Callable[[], Ledger]) -> None:
    first = open_ledger()
    made = first.charge(project="p", cost=PureDP(0.5), total=PureDP(1.0), query_id="q1")
    first.close()
    second = open_ledger()  # creating tables again is a no-op
    assert second.charges() == [made]
    assert second.spent("p") == 0.5
    with pytest.raises(Conflict):
        second.charge(project="p", cost=PureDP(0.5), total=PureDP(1.0), query_id="q1")


class _InjectedCrash(Exception):
    pass


def test_crash_before_commit_changes_nothing(ledger: Ledger) -> None:
    ledger.charge(project="p", cost=PureDP(0.2), total=PureDP(1.0), query_id="q1")

    def crash() -> None:
        raise _InjectedCrash("power cut between UPDATE and COMMIT")

    ledger._before_commit = crash
    with pytest.raises(_InjectedCrash):
        ledger.charge(project="p", cost=PureDP(0.3), total=PureDP(1.0), query_id="q2")
    with pytest.raises(_InjectedCrash):  # a brand-new account is rolled back too
        ledger.charge(project="new", cost=PureDP(0.3), total=PureDP(1.0), query_id="q3")
    ledger._before_commit = None
    assert ledger.spent("p") == 0.2
    assert ledger.spent("new") == 0.0
    assert [c.query_id for c in ledger.charges()] == ["q1"]
    # Nothing was committed, so the work item may pay when it is retried.
    ledger.charge(project="p", cost=PureDP(0.3), total=PureDP(1.0), query_id="q2")
    assert ledger.spent("p") == 0.5


def test_closed_ledger_refuses_work(ledger: Ledger) -> None:
    ledger.close()
    ledger.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        ledger.charge(project="p", cost=PureDP(0.1), total=PureDP(1.0), query_id="q")
    with pytest.raises(RuntimeError, match="closed"):
        ledger.spent("p")


def test_in_directory_uses_a_wal_sqlite_file(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with Ledger.in_directory(state) as ledger:
        ledger.charge(project="p", cost=PureDP(0.1), total=PureDP(1.0), query_id="q")
    path = state / "ledger.sqlite"
    assert path.is_file()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("SELECT count(*) FROM budget_charges").fetchone() == (1,)
    finally:
        conn.close()
    with Ledger.in_directory(state) as reopened:
        assert reopened.spent("p") == 0.1


@pytest.mark.parametrize(
    ("url", "schema"),
    [
        ("sqlite://", None),
        ("sqlite:///:memory:", None),
        ("sqlite:///x.db", "s"),
        ("mysql://u@localhost/db", None),
    ],
)
def test_unsupported_configurations_are_value_error(url: str, schema: str | None) -> None:
    with pytest.raises(ValueError):
        Ledger(url, schema=schema)


# ------------------------------------------------------------------ concurrency


def _race(threads: int, work: Callable[[int], str]) -> list[str]:
    """Run ``work(i)`` in ``threads`` threads released together; return their outcomes."""
    barrier = threading.Barrier(threads)
    outcomes: list[str] = [""] * threads

    def run(i: int) -> None:
        barrier.wait()
        outcomes[i] = work(i)

    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in pool)
    return outcomes


def _try_charge(ledger: Ledger, query_id: str, project: str = "p") -> str:
    try:
        ledger.charge(project=project, cost=PureDP(0.1), total=PureDP(1.0), query_id=query_id)
    except BudgetExhausted:
        return "exhausted"
    except Conflict:
        return "conflict"
    return "ok"


def test_fifty_threads_never_overspend(ledger: Ledger) -> None:
    outcomes = _race(50, lambda i: _try_charge(ledger, f"t{i}"))
    assert outcomes.count("ok") == 10
    assert outcomes.count("exhausted") == 40
    assert ledger.spent("p") == 1.0
    charges = ledger.charges("p")
    assert len(charges) == 10
    assert sum(_charge_units(c) for c in charges) == NANO
    assert sorted(c.spent_after for c in charges) == [round(0.1 * k, 1) for k in range(1, 11)]


def test_threads_replaying_one_work_item_pay_once(ledger: Ledger) -> None:
    outcomes = _race(20, lambda i: _try_charge(ledger, "same-work-item"))
    assert outcomes.count("ok") == 1
    assert outcomes.count("conflict") == 19
    assert ledger.spent("p") == 0.1
    assert len(ledger.charges()) == 1


def _charge_in_process(
    url: str,
    schema: str | None,
    worker: int,
    attempts: int,
    barrier: Any,
    results: Any,
) -> None:
    """One node process: open its own Ledger on the shared database and try to charge."""
    counts = {"ok": 0, "exhausted": 0, "conflict": 0, "error": 0}
    try:
        with Ledger(url, schema=schema) as ledger:
            barrier.wait(timeout=60)
            for attempt in range(attempts):
                counts[_try_charge(ledger, f"w{worker}-{attempt}")] += 1
    except Exception:
        counts["error"] += 1
    results.put(counts)


def test_four_processes_never_overspend(ledger: Ledger, target: Target) -> None:
    url, schema = target
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(4)
    results = context.Queue()
    processes = [
        context.Process(target=_charge_in_process, args=(url, schema, w, 10, barrier, results))
        for w in range(4)
    ]
    for process in processes:
        process.start()
    totals = {"ok": 0, "exhausted": 0, "conflict": 0, "error": 0}
    for _ in processes:
        for key, value in results.get(timeout=120).items():
            totals[key] += value
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
        process.close()
    results.close()
    results.join_thread()
    assert totals == {"ok": 10, "exhausted": 30, "conflict": 0, "error": 0}
    assert ledger.spent("p") == 1.0
    assert len(ledger.charges()) == 10


# ------------------------------------------------------------- stateful property

Key = tuple[str, str, str]

_AMOUNTS = st.one_of(
    st.sampled_from([0.1, 0.2, 0.25, 0.05, 1 / 3, 0.7, 1.0, 1e-9, 1e-12]),
    st.floats(min_value=1e-12, max_value=1.5, allow_nan=False, allow_infinity=False),
)
_BUDGETS = st.one_of(
    st.sampled_from([0.0, 0.3, 0.5, 1.0, 2.0]),
    st.floats(min_value=0.0, max_value=3.0, allow_nan=False, allow_infinity=False),
)
_KEYS = st.tuples(
    st.sampled_from(["lung", "breast"]),
    st.sampled_from(["epsilon", "rho"]),
    st.sampled_from(["lifetime", "2025"]),
)


class _Crash(Exception):
    pass


class LedgerMachine(RuleBasedStateMachine):
    """Random charges, policy changes, replays, crashes and restarts against a model.

    The model keeps, per account, the integer units the contract says were
    spent, and the list of committed charges. Every outcome the ledger gives
    must match the model, and the invariants are checked after every step.
    """

    crashed = Bundle("crashed")

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="varde-ledger-"))
        self.url = f"sqlite:///{self.directory / 'ledger.sqlite'}"
        self.ledger = Ledger(self.url)
        self.spent: dict[Key, int] = {}
        self.committed: list[tuple[str, Key, int]] = []
        self.last_budget: dict[Key, float] = {}
        self.counter = 0

    def _next_id(self) -> str:
        self.counter += 1
        return f"q{self.counter}"

    def _fits(self, key: Key, amount: float, budget: float) -> bool:
        return self.spent.get(key, 0) + _units(amount) <= _budget_units(budget)

    def _charge(self, key: Key, amount: float, budget: float, query_id: str) -> None:
        project, measure, period = key
        fits = self._fits(key, amount, budget)
        self.last_budget[key] = budget
        try:
            charge = self.ledger.charge(
                project=project,
                cost=typed_budget(measure, amount),
                total=typed_budget(measure, budget),
                query_id=query_id,
                period=period,
            )
        except BudgetExhausted as err:
            assert not fits, f"refused although it fits: {err}"
            return
        assert fits
        units = _units(amount)
        self.spent[key] = self.spent.get(key, 0) + units
        self.committed.append((query_id, key, units))
        assert _charge_units(charge) == units
        assert charge.amount >= amount
        assert charge.spent_after == self.spent[key] / NANO
        # Never above the budget in force at this charge (float and exact).
        assert charge.spent_after <= budget
        assert self.spent[key] <= _budget_units(budget)

    @rule(key=_KEYS, amount=_AMOUNTS, budget=_BUDGETS)
    def charge(self, key: Key, amount: float, budget: float) -> None:
        self._charge(key, amount, budget, self._next_id())

    @rule(target=crashed, key=_KEYS, amount=_AMOUNTS, budget=_BUDGETS)
    def crash_before_commit(self, key: Key, amount: float, budget: float) -> str:
        query_id = self._next_id()
        fits = self._fits(key, amount, budget)

        def boom() -> None:
            raise _Crash("crash between UPDATE and COMMIT")

        self.ledger._before_commit = boom
        try:
            with pytest.raises(_Crash if fits else BudgetExhausted):
                self.ledger.charge(
                    project=key[0],
                    cost=typed_budget(key[1], amount),
                    total=typed_budget(key[1], budget),
                    query_id=query_id,
                    period=key[2],
                )
        finally:
            self.ledger._before_commit = None
        return query_id

    @rule(query_id=consumes(crashed), key=_KEYS, amount=_AMOUNTS, budget=_BUDGETS)
    def retry_crashed(self, query_id: str, key: Key, amount: float, budget: float) -> None:
        # Nothing was committed, so the work item may pay now.
        self._charge(key, amount, budget, query_id)

    @precondition(lambda self: bool(self.committed))
    @rule(data=st.data())
    def replay(self, data: st.DataObject) -> None:
        query_id, key, _ = data.draw(st.sampled_from(self.committed))
        with pytest.raises(Conflict) as excinfo:
            self.ledger.charge(
                project=key[0],
                cost=typed_budget(key[1], 0.1),
                total=typed_budget(key[1], 100.0),
                query_id=query_id,
                period=key[2],
            )
        assert excinfo.type is Conflict

    @rule()
    def restart(self) -> None:
        self.ledger.close()
        self.ledger = Ledger(self.url)

    @invariant()
    def ledger_matches_model(self) -> None:
        charges = self.ledger.charges()
        assert [c.query_id for c in charges] == [q for q, _, _ in self.committed]
        per_account: dict[Key, int] = {}
        for charge in charges:
            key = (charge.project, charge.measure, charge.period)
            per_account[key] = per_account.get(key, 0) + _charge_units(charge)
            assert charge.spent_after == per_account[key] / NANO
        assert per_account == {k: v for k, v in self.spent.items() if v}
        for key, units in self.spent.items():
            assert self.ledger.spent(*key) == units / NANO
        for key, budget in self.last_budget.items():
            left = self.ledger.remaining(key[0], typed_budget(key[1], budget), key[2]).amount
            assert left >= 0.0
            assert left == max(0, _budget_units(budget) - self.spent.get(key, 0)) / NANO

    def teardown(self) -> None:
        self.ledger.close()
        shutil.rmtree(self.directory, ignore_errors=True)


LedgerMachine.TestCase.settings = settings(
    max_examples=30,
    stateful_step_count=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLedgerMachine = LedgerMachine.TestCase
