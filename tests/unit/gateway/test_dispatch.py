"""The in-process work queue (SQLite gateways) and the queue choice by database URL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.core.config import Settings
from gateway.dispatch import Dispatcher, with_budget
from gateway.state import work_queue
from tests.unit.gateway.test_dispatch_pg import query_id_of, release, work
from varde.budget import ZCDP, PureDP
from varde.release import Manifest, ProjectTerms


def test_work_is_handed_to_the_polling_site_and_its_release_to_the_query() -> None:
    async def body() -> None:
        disp = Dispatcher()
        poll = asyncio.create_task(disp.next_batch("oslo", wait=5))
        await asyncio.sleep(0.01)
        assert disp.connected("oslo")
        env = work("oslo")
        waiting = asyncio.create_task(disp.submit("oslo", query_id_of(env), env, timeout=5))
        assert await poll == [env]
        assert await disp.deliver(*release(query_id_of(env), "oslo"))
        answer = await waiting
        assert answer is not None and answer[0].site == "oslo"
        assert not await disp.deliver(*release(query_id_of(env), "oslo"))  # nobody waits now

    asyncio.run(body())


def test_work_not_picked_up_in_time_is_withdrawn() -> None:
    async def body() -> None:
        disp = Dispatcher()
        env = work("bergen")
        assert await disp.submit("bergen", query_id_of(env), env, timeout=0.05) is None
        assert await disp.depth() == 0
        assert await disp.next_batch("bergen", wait=0.05) == []

    asyncio.run(body())


def test_with_budget_sets_remaining_only_in_the_projects_measure() -> None:
    terms = ProjectTerms(accounting="epsilon", budget=PureDP(10.0), max_per_query=PureDP(1.0))
    manifest = Manifest(site="oslo", fields=[], statistics=[], projects={"p": terms})
    updated = with_budget(manifest, "p", PureDP(4.0))
    assert updated is not None and updated.projects["p"].remaining == PureDP(4.0)
    assert with_budget(manifest, "p", ZCDP(0.1)) is None
    assert with_budget(manifest, "other", PureDP(4.0)) is None
    assert with_budget(None, "p", PureDP(4.0)) is None


def test_the_queue_follows_the_database_url(tmp_path: Path) -> None:
    assert isinstance(work_queue(Settings(state_dir=tmp_path)), Dispatcher)
    pg = work_queue(Settings(state_dir=tmp_path, database_url="postgresql+psycopg://u@h/db"))
    assert type(pg).__name__ == "PgDispatcher"


def test_postgresql_without_the_driver_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "gateway.dispatch_pg", None)  # as if psycopg were missing
    with pytest.raises(RuntimeError, match=r"varde\[postgres\]"):
        work_queue(Settings(state_dir=tmp_path, database_url="postgresql+psycopg://u@h/db"))


def test_a_nonce_is_a_replay_until_it_expires() -> None:
    import datetime as dt

    seen = Dispatcher().seen_nonce
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
    assert not seen("n1", soon)
    assert seen("n1", soon)
    assert not seen("n2", soon)
