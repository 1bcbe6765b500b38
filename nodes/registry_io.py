"""Registry files: write, read, and restore the common schema's dtypes.

Why a module of its own: a hospital node loads its *real* registry through
:func:`read_registry`, and that must not depend on the synthetic generator. Every
file is checked against ``varde/schema.py`` on the way in (unknown or missing
columns, values outside the public categories or domain, missing values where
none are allowed, repeated tumour ids are errors naming file and column), and
the dtypes come back the same from Parquet and CSV.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Final, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from numpy.typing import NDArray

from varde.schema import COLUMN_ORDER, FIELDS, FIELDS_BY_NAME, FieldKind, FieldSpec

PATIENT_ID_DTYPE: Final = pd.StringDtype("pyarrow")
"""Pseudonymous patient ids: Arrow-backed strings (compact, fast to group by)."""

Floats = NDArray[np.float64]
Bools = NDArray[np.bool_]

# --------------------------------------------------------------------------------------------
# Files: write, read, and restore the schema's dtypes.
# --------------------------------------------------------------------------------------------

_ID_FIELDS: Final = {"patient_id", "tumour_id"}


def _fail(spec: FieldSpec, problem: str, values: Sequence[object] = ()) -> ValueError:
    shown = f": {sorted({str(v) for v in values})[:5]}" if len(values) else ""
    return ValueError(f"registry column {spec.name!r} {problem}{shown}")


def _conform_categorical(spec: FieldSpec, series: pd.Series) -> pd.Categorical:
    categories = pd.Index(spec.categories)
    if isinstance(series.dtype, pd.CategoricalDtype):
        # Map the file's own category list once, then its integer codes: no string hashing.
        labels = [str(c) for c in series.cat.categories]
        mapping = np.append(categories.get_indexer(labels), -1)
        codes = mapping[series.cat.codes.to_numpy()]
    else:
        if not pd.api.types.is_string_dtype(series.dtype):
            series = series.astype(str).where(series.notna())
        codes = categories.get_indexer(series)
    if series.isna().any():
        raise _fail(spec, "has missing values")
    outside = codes < 0
    if outside.any():
        raise _fail(spec, "has values outside the schema's categories", series[outside].unique())
    dtype = pd.CategoricalDtype(categories, ordered=False)
    return pd.Categorical.from_codes(codes.astype(np.int16), dtype=dtype, validate=False)


def _conform_numbers(spec: FieldSpec, series: pd.Series) -> tuple[Floats, Bools]:
    """Values as float64 plus a null mask, after checking they are whole numbers in range."""
    numbers = pd.to_numeric(series, errors="coerce")
    was_null = series.isna().to_numpy()
    null = numbers.isna().to_numpy()
    if (null & ~was_null).any():
        raise _fail(spec, "has non-numeric values", series[null & ~was_null].unique())
    if null.any() and not spec.nullable:
        raise _fail(spec, "has missing values")
    values = np.asarray(numbers.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)
    present = values[~null]
    if (present != np.round(present)).any():
        raise _fail(spec, "has non-integer values", present[present != np.round(present)])
    low = -np.inf if spec.lower is None else spec.lower
    high = np.inf if spec.upper is None else spec.upper
    out_of_range = (present < low) | (present > high)
    if out_of_range.any():
        raise _fail(spec, f"has values outside [{spec.lower}, {spec.upper}]", present[out_of_range])
    return np.where(null, 0.0, values), null


def _conform_date(spec: FieldSpec, series: pd.Series) -> NDArray[np.datetime64]:
    if pd.api.types.is_datetime64_dtype(series.dtype):
        parsed = series
    else:
        parsed = pd.to_datetime(series, format="ISO8601", errors="coerce")
        bad = parsed.isna().to_numpy() & series.notna().to_numpy()
        if bad.any():
            raise _fail(spec, "has values that are not ISO dates", series[bad].unique())
    if parsed.isna().any():
        raise _fail(spec, "has missing values")
    values = np.asarray(parsed.to_numpy(dtype="datetime64[ns]"))
    timed = values != values.astype("datetime64[D]")
    if timed.any():
        raise _fail(spec, "has a time of day (dates only)", values[timed])
    return values


def _conform_column(spec: FieldSpec, series: pd.Series) -> object:
    if spec.kind is FieldKind.CATEGORICAL:
        return _conform_categorical(spec, series)
    if spec.kind is FieldKind.DATE:
        return _conform_date(spec, series)
    if spec.name == "patient_id":
        ids = series.astype(PATIENT_ID_DTYPE)
        if ids.isna().any() or (ids.str.len() == 0).any():
            raise _fail(spec, "has missing values")
        return ids.array
    values, null = _conform_numbers(spec, series)
    if spec.kind is FieldKind.IDENTIFIER:
        ids = values.astype(np.int64)
        if not (ids[1:] > ids[:-1]).all():  # sorted ids (the usual case) need no sort
            ordered = np.sort(ids)
            repeated = ordered[1:][ordered[1:] == ordered[:-1]]
            if repeated.size:
                raise _fail(spec, "has duplicate identifiers", repeated)
        return ids
    if spec.nullable:
        return pd.arrays.IntegerArray(values.astype(np.int32), null)
    return values.astype(np.int32)


def conform_registry(frame: pd.DataFrame) -> pd.DataFrame:
    """Check a registry frame against the schema and give it the generator's dtypes.

    Why: files lose dtypes (CSV keeps only text; Parquet keeps only the categories it saw),
    and a node must refuse, not guess, when a value is outside the public schema.

    dtypes: categorical fields ``pd.Categorical`` over the schema's full category tuple
    (unordered); integer fields ``int32`` (``Int32`` when nullable); dates
    ``datetime64[ns]``; ``patient_id`` :data:`PATIENT_ID_DTYPE`; ``tumour_id`` ``int64``.

    Args:
        frame: A registry with at least the schema's columns.

    Returns:
        A new frame with exactly ``schema.COLUMN_ORDER`` columns and a fresh RangeIndex.

    Raises:
        ValueError: If a column is missing or unknown, a value is missing where the schema
            forbids it, outside its categories or bounds, not a number or date, or a
            ``tumour_id`` repeats.
    """
    missing = [name for name in COLUMN_ORDER if name not in frame.columns]
    if missing:
        raise ValueError(f"registry lacks schema column(s): {', '.join(missing)}")
    unknown = [str(name) for name in frame.columns if name not in FIELDS_BY_NAME]
    if unknown:
        raise ValueError(f"registry has column(s) outside the schema: {', '.join(unknown)}")
    columns = {spec.name: _conform_column(spec, frame[spec.name]) for spec in FIELDS}
    return pd.DataFrame(columns, index=pd.RangeIndex(len(frame)))


def write_registry(frame: pd.DataFrame, path: Path, fmt: Literal["parquet", "csv"]) -> Path:
    """Write a registry as Parquet or CSV after checking it against the schema.

    Why check on write: a file that :func:`read_registry` would refuse should never be
    produced. Dates are written as ``YYYY-MM-DD``; a missing ``days_to_treatment`` is an
    empty CSV field.

    Args:
        frame: The registry (e.g. from :func:`generate_registry`).
        path: Target file; a missing suffix becomes ``.parquet``/``.csv``. Parent
            directories are created.
        fmt: ``"parquet"`` or ``"csv"``.

    Returns:
        The path written.

    Raises:
        ValueError: If ``fmt`` is unknown, the suffix contradicts it, or the frame does not
            follow the schema.
    """
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"unknown registry format {fmt!r}; use 'parquet' or 'csv'")
    path = Path(path)
    if not path.suffix:
        path = path.with_suffix(f".{fmt}")
    if path.suffix.lower() != f".{fmt}":
        raise ValueError(f"{path} has suffix {path.suffix!r} but format {fmt!r}")
    table = pa.Table.from_pandas(conform_registry(frame), preserve_index=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        pq.write_table(table, path)
        return path
    plain = []
    for column in table.columns:
        if pa.types.is_dictionary(column.type):
            column = column.cast(pa.string())
        elif pa.types.is_timestamp(column.type):
            column = column.cast(pa.date32())
        plain.append(column)
    pa_csv.write_csv(pa.table(plain, names=table.column_names), path)
    return path


def _csv_column_types() -> dict[str, pa.DataType]:
    """Arrow types for reading a registry CSV: strings stay strings ("0", "2" are categories)."""
    types: dict[str, pa.DataType] = {}
    for spec in FIELDS:
        if spec.kind is FieldKind.CATEGORICAL:
            types[spec.name] = pa.dictionary(pa.int32(), pa.string())
        elif spec.kind is FieldKind.DATE or spec.name == "patient_id":
            types[spec.name] = pa.string()
        else:
            types[spec.name] = pa.float64()  # whole-number check happens in conform_registry
    return types


def read_registry(path: Path) -> pd.DataFrame:
    """Read a registry file and restore exactly the dtypes :func:`generate_registry` gives.

    Why: the node's query engine relies on schema categories and dtypes, so a file is
    validated once at load time instead of trusting whoever wrote it.

    Args:
        path: A ``.parquet`` or ``.csv`` file.

    Returns:
        The registry, as :func:`conform_registry` returns it.

    Raises:
        ValueError: If the suffix is not ``.parquet``/``.csv``, the file cannot be parsed, a
            schema column is missing, or a value is outside the schema.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            table = pq.read_table(path)
        elif suffix == ".csv":
            options = pa_csv.ConvertOptions(
                column_types=_csv_column_types(),
                null_values=[""],
                strings_can_be_null=True,
            )
            table = pa_csv.read_csv(path, convert_options=options)
        else:
            raise ValueError(f"{path}: unsupported registry format; use .parquet or .csv")
    except pa.ArrowInvalid as err:
        raise ValueError(f"{path}: cannot parse registry file: {err}") from err
    try:
        return conform_registry(table.to_pandas())
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
