"""Where a site's rows come from: CSV and Parquet files, SQL tables or queries, an OMOP CDM.

Every source yields its rows in chunks (:class:`RawChunks`), and the reader maps
each chunk to the compact common schema before reading the next, so a large
hospital database never sits in memory twice (raw text and mapped columns).
A source that cannot be opened is a :class:`~nodes.mapping.loader.MappingError`
naming the file or the database (its password masked), before any row is read.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from nodes.mapping.derive import TEXT
from nodes.mapping.loader import MappingError
from nodes.mapping.model import FileSource, SqlSource

_CSV_BLOCK = 16 << 20
"""Bytes of CSV parsed at a time (about 100 000 registry rows)."""
_PARQUET_ROWS = 200_000


@dataclass(frozen=True)
class RawChunks:
    """A source opened for reading: its name for messages, its columns, and its chunks."""

    name: str
    columns: list[str]
    chunks: Iterator[pd.DataFrame]
    close: Callable[[], None] = field(default=lambda: None)
    """Release the file or connection (also when reading stops early)."""


def expand_url(url: str) -> str:
    """``${VAR}`` in a database URL replaced from the environment (unset: an error naming it).

    >>> os.environ["H11A_DOCTEST_PW"] = "s3cret"
    >>> expand_url("postgresql://u:${H11A_DOCTEST_PW}@db/x")
    'postgresql://u:s3cret@db/x'
    """

    def one(m: re.Match[str]) -> str:
        value = os.environ.get(m.group(1))
        if value is None:
            raise MappingError(f"database URL uses ${{{m.group(1)}}}, which is not set")
        return value

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", one, url)


def shown_url(url: str) -> str:
    """The URL for messages, password masked (``***``)."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<unparseable database URL>"


def _first_line(err: sa.exc.SQLAlchemyError) -> str:
    """The driver's own message, first line (no SQL echo, no parameters)."""
    orig = getattr(err, "orig", None)
    text = str(orig if orig is not None else err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def connect(url: str) -> Engine:
    """An engine that has answered once, or a :class:`MappingError` naming the database."""
    real = expand_url(url)
    try:
        engine = sa.create_engine(real)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as err:
        raise MappingError(f"cannot use database URL {shown_url(url)}: {err}") from err
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError as err:
        engine.dispose()
        raise MappingError(f"cannot connect to {shown_url(url)}: {_first_line(err)}") from err
    return engine


def _csv_header(source: FileSource, path: Path) -> list[str]:
    utf8 = source.encoding.lower().replace("_", "-") in ("utf-8", "utf8")
    # a spreadsheet's UTF-8 export often starts with a byte-order mark (Arrow skips it too)
    with path.open(encoding="utf-8-sig" if utf8 else source.encoding, newline="") as fh:
        row = next(csv.reader(fh, delimiter=source.delimiter), None)
    if not row:
        raise MappingError(f"{path}: cannot read csv file: the file has no header")
    return [name.strip() for name in row]


_ARROW_TEXT = {pa.string(): TEXT, pa.large_string(): TEXT}.get
"""Arrow strings stay Arrow strings in pandas (no copy into Python objects)."""


def file_chunks(source: FileSource, path: Path) -> RawChunks:
    """A CSV (every cell as text: ``01`` is not 1) or Parquet file, in chunks."""
    if not path.exists():
        raise MappingError(f"{path}: no such data file")
    try:
        if source.kind == "parquet":
            parquet = pq.ParquetFile(path)
            names = list(parquet.schema_arrow.names)

            def parquet_chunks() -> Iterator[pd.DataFrame]:
                for batch in parquet.iter_batches(batch_size=_PARQUET_ROWS):
                    yield batch.to_pandas(types_mapper=_ARROW_TEXT)

            return RawChunks(str(path), names, parquet_chunks(), parquet.close)
        names = _csv_header(source, path)
        reader = pa_csv.open_csv(
            path,
            read_options=pa_csv.ReadOptions(block_size=_CSV_BLOCK, encoding=source.encoding),
            parse_options=pa_csv.ParseOptions(delimiter=source.delimiter),
            convert_options=pa_csv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.string()),
                null_values=[""],
                strings_can_be_null=True,
            ),
        )
    except (OSError, UnicodeDecodeError, csv.Error, pa.ArrowInvalid) as err:
        raise MappingError(f"{path}: cannot read {source.kind} file: {err}") from err

    def csv_chunks() -> Iterator[pd.DataFrame]:
        try:
            for batch in reader:
                yield batch.to_pandas(types_mapper=_ARROW_TEXT)
        except (pa.ArrowInvalid, UnicodeDecodeError) as err:
            raise MappingError(f"{path}: cannot read csv file: {err}") from err

    return RawChunks(str(path), names, csv_chunks(), reader.close)


def sql_chunks(source: SqlSource) -> RawChunks:
    """A table, view or query of a SQL database, ``chunksize`` rows at a time."""
    engine = connect(source.url)
    if source.table is not None:
        schema, _, table = source.table.rpartition(".")
        try:
            sa_table = sa.Table(table, sa.MetaData(), schema=schema or None, autoload_with=engine)
        except sa.exc.NoSuchTableError as err:
            engine.dispose()
            raise MappingError(
                f"{shown_url(source.url)}: no table or view {source.table!r}"
            ) from err
        statement: sa.Executable = sa.select(sa_table)
        name = f"{shown_url(source.url)} table {source.table}"
    else:
        statement = sa.text(source.query or "")
        name = f"{shown_url(source.url)} query"
    stream = stream_sql(
        engine,
        name,
        source.chunksize,
        lambda conn: conn.execution_options(stream_results=True).execute(statement),
    )
    return RawChunks(name, stream.columns, stream.chunks, stream.close)


@dataclass
class SqlStream:
    """The rows of one streaming result, ``chunksize`` at a time, and how to release it."""

    columns: list[str]
    chunks: Iterator[pd.DataFrame]
    close: Callable[[], None]


def stream_sql(
    engine: Engine,
    name: str,
    chunksize: int,
    run: Callable[[sa.Connection], sa.CursorResult[Any]],
    *,
    failure: str = "",
) -> SqlStream:
    """The streaming result ``run(connection)`` opens, read in chunks (every SQL source: one way).

    Tables, views and queries (:func:`sql_chunks`) and an OMOP CDM read through here.

    Whatever fails while opening closes the connection and the engine here and is a
    :class:`MappingError` naming ``name`` (``failure`` says what it was not); after that,
    ``close`` releases the result, the connection and the engine, also when reading stops early.
    """
    conn = engine.connect()
    try:
        result = run(conn)
        columns = list(result.keys())
    except sa.exc.SQLAlchemyError as err:
        conn.close()
        engine.dispose()
        raise MappingError(f"{name}: {failure}{_first_line(err)}") from err

    def close() -> None:
        result.close()
        conn.close()
        engine.dispose()

    def chunks() -> Iterator[pd.DataFrame]:
        while rows := result.fetchmany(chunksize):
            yield pd.DataFrame.from_records(rows, columns=columns)

    return SqlStream(columns, chunks(), close)
