"""Read a site's data through its mapping: the common schema (plus study fields), or a refusal.

Why all or nothing: a node that loaded the rows it could parse and skipped the
rest would answer for a registry that is not the one staff think it is. So
:func:`load_site` maps every chunk, collects every problem, and
:func:`read_site_data` refuses the whole source if any row has a hard one,
naming the source, the column and the rule (``varde node check-data`` shows
the full report).

Fields the site does not have (``not_available``) are all-missing columns of the
schema's dtype: never read (the node's policy stops exposing them, see
:mod:`nodes.mapping.availability`), never faked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from nodes.mapping.contradictions import check_contradictions
from nodes.mapping.loader import MappingError, load_mapping
from nodes.mapping.model import FileSource, OmopSource, SiteMapping, SqlSource
from nodes.mapping.omop import omop_chunks
from nodes.mapping.sources import RawChunks, file_chunks, sql_chunks
from nodes.mapping.transform import ProblemLog, map_chunk, missing_columns
from nodes.registry_io import conform_registry
from varde.schema import FIELDS_BY_NAME, FieldKind, FieldSpec


@dataclass
class SiteLoad:
    """What reading a site's source gave: the frame (or None), where from, and the problems."""

    source: str
    frame: pd.DataFrame | None
    log: ProblemLog
    conform_error: str | None = None
    checked: pd.DataFrame | None = None
    """The mapped frame the cross-field checks ran on (also when they failed)."""


def _placeholder(spec: FieldSpec) -> object:
    if spec.kind is FieldKind.CATEGORICAL:
        return spec.categories[0]
    if spec.kind is FieldKind.DATE:
        return pd.Timestamp("1970-01-01")
    return spec.lower if spec.lower is not None else 0


def _absent(spec: FieldSpec, n: int) -> object:
    """An all-missing column in the dtype :func:`conform_registry` gives ``spec``."""
    if spec.kind is FieldKind.CATEGORICAL:
        dtype = pd.CategoricalDtype(pd.Index(spec.categories), ordered=False)
        return pd.Categorical.from_codes(np.full(n, -1, dtype=np.int16), dtype=dtype)
    if spec.kind is FieldKind.DATE:
        return np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]")
    return pd.array([pd.NA] * n, dtype="Int32")


def conform_mapped(frame: pd.DataFrame, mapping: SiteMapping) -> pd.DataFrame:
    """The mapped frame in the registry dtypes: schema columns, then study fields."""
    study = list(mapping.study_fields)
    schema_part = frame.drop(columns=study)
    for name in mapping.not_available:
        schema_part[name] = _placeholder(FIELDS_BY_NAME[name])
    conformed = conform_registry(schema_part)
    for name in mapping.not_available:
        conformed[name] = _absent(FIELDS_BY_NAME[name], len(conformed))
    for name in study:
        conformed[name] = frame[name].to_numpy() if len(frame) else frame[name]
    conformed.attrs["not_available"] = list(mapping.not_available)
    return conformed


def open_source(mapping: SiteMapping, base: Path, data_override: Path | None = None) -> RawChunks:
    """Open the mapping's source (``data_override``: a CSV/Parquet file in its place).

    ``base`` is the mapping file's directory: a relative ``path`` is relative to it.
    """
    source = mapping.source
    if data_override is not None:
        suffix = data_override.suffix.lower().lstrip(".")
        if suffix not in ("csv", "parquet"):
            raise MappingError(f"{data_override}: --data must be a .csv or .parquet file")
        delimiter = source.delimiter if isinstance(source, FileSource) else ","
        override = FileSource(kind=suffix, path=str(data_override), delimiter=delimiter)  # type: ignore[arg-type]
        return file_chunks(override, data_override)
    if isinstance(source, FileSource):
        path = Path(source.path)
        return file_chunks(source, path if path.is_absolute() else base / path)
    if isinstance(source, SqlSource):
        return sql_chunks(source)
    if isinstance(source, OmopSource):
        return omop_chunks(source)
    raise MappingError(f"unknown source kind {source!r}")  # pragma: no cover - model refuses it


def load_site(mapping: SiteMapping, base: Path, data_override: Path | None = None) -> SiteLoad:
    """Map every chunk of the source and collect the problems (raises only if it cannot open)."""
    raw = open_source(mapping, base, data_override)
    log = ProblemLog()
    parts: list[pd.DataFrame] = []
    offset = 0
    try:
        absent = missing_columns(mapping, raw.columns)
        if absent:
            raise MappingError(
                f"{raw.name}: the mapping reads column(s) the source does not have: "
                f"{', '.join(absent)} (source columns: {', '.join(raw.columns[:40])})"
            )
        for chunk in raw.chunks:
            parts.append(map_chunk(mapping, chunk, offset, log))
            offset += len(chunk)
    finally:
        raw.close()
    if offset == 0:
        raise MappingError(f"{raw.name}: the source has no rows")
    if log.hard:
        return SiteLoad(raw.name, None, log)
    mapped = pd.concat(parts, ignore_index=True)
    del parts
    try:
        frame = conform_mapped(mapped, mapping)
    except ValueError as err:
        return SiteLoad(raw.name, None, log, conform_error=str(err))
    check_contradictions(frame, mapping.provided, log)
    return SiteLoad(raw.name, None if log.hard else frame, log, checked=frame)


def refusal(load: SiteLoad) -> str:
    """Why a load cannot be used: source, then each hard problem (field, column, rule, rows)."""
    lines = [f"{load.source}: {load.log.rejected_rows:,} of {load.log.rows_read:,} row(s) rejected"]
    lines += [f"  {p.line()}" for p in load.log.hard]
    if load.conform_error:
        lines.append(f"  {load.conform_error}")
    lines.append(
        "nothing was loaded; run 'varde node check-data --mapping FILE' for the full report"
    )
    return "\n".join(lines)


def mapping_base(path: Path) -> Path:
    """The directory a mapping file's relative paths are relative to."""
    return Path(path).resolve().parent


def read_site_data(
    mapping: SiteMapping | Path, data_override: Path | None = None, *, base: Path | None = None
) -> pd.DataFrame:
    """The site's rows in the common schema (plus study-field columns), all or nothing.

    Args:
        mapping: The mapping, or the path of its file (relative paths in it are
            relative to the file; with a :class:`SiteMapping`, to ``base`` or the
            working directory).
        data_override: A CSV or Parquet file read in place of the mapping's source.
        base: The directory relative paths of a :class:`SiteMapping` are relative to.

    Raises:
        MappingError: The mapping, the source or any row breaks a hard rule; the
            message names the source, the column and the rule.
    """
    if isinstance(mapping, Path):
        base = mapping_base(mapping)
        mapping = load_mapping(mapping)
    load = load_site(mapping, base or Path.cwd(), data_override)
    if load.frame is None:
        raise MappingError(refusal(load))
    return load.frame
