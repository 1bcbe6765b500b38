"""The book of answered work items: the first release of a query id is kept, old ones go."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy import update

from nodes.answered import KEEP, AnsweredBook, answered_items
from nodes.store import NodeStore
from varde.release import SiteRelease


def _release(query_id: str, message: str = "") -> SiteRelease:
    return SiteRelease(query_id=query_id, site="oslo", status="ok", message=message)


def test_first_release_of_a_query_id_wins(store: NodeStore) -> None:
    book = AnsweredBook(store.engine, store.write_engine)
    assert book.get("q1") is None
    book.put(_release("q1", "first"))
    book.put(_release("q1", "second"))
    got = book.get("q1")
    assert got is not None and got.message == "first"
    book.put(_release(""))  # no query id: nothing to key it by
    assert book.get("") is None


def test_entries_older_than_keep_are_dropped(store: NodeStore) -> None:
    book = AnsweredBook(store.engine, store.write_engine)
    book.put(_release("old"))
    with store.write_engine.begin() as conn:
        when = dt.datetime.now(dt.UTC) - KEEP - dt.timedelta(minutes=1)
        conn.execute(update(answered_items).values(answered_at=when))
    book.put(_release("new"))
    assert book.get("old") is None and book.get("new") is not None


def test_the_book_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state"
    first = NodeStore.in_directory(path)
    AnsweredBook(first.engine, first.write_engine).put(_release("q9"))
    first.close()
    again = NodeStore.in_directory(path)
    try:
        assert AnsweredBook(again.engine, again.write_engine).get("q9") is not None
    finally:
        again.close()
