"""Each source kind gives the same rows: CSV (any delimiter), Parquet, SQL table, view, query."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
import yaml

from nodes.mapping import MappingError, read_site_data
from nodes.mapping.sources import expand_url, shown_url
from nodes.mapping.starter import starter_mapping_text
from tests.unit.nodes.mapping.helpers import write_site


def _with_source(source: Mapping[str, object]) -> str:
    data = yaml.safe_load(starter_mapping_text("oslo"))
    data["source"] = source
    return yaml.safe_dump(data, sort_keys=False)


@pytest.fixture
def reference(site_mapping: Path) -> pd.DataFrame:
    return read_site_data(site_mapping)


def test_csv_with_another_delimiter_and_parquet_give_the_same_rows(
    tmp_path: Path, export: pd.DataFrame, reference: pd.DataFrame
) -> None:
    export.to_csv(tmp_path / "semi.csv", sep=";", index=False)
    export.to_parquet(tmp_path / "reg.parquet", index=False)
    for source in (
        {"kind": "csv", "path": "semi.csv", "delimiter": ";"},
        {"kind": "parquet", "path": str(tmp_path / "reg.parquet")},  # absolute path too
    ):
        (tmp_path / "m.yaml").write_text(_with_source(source))
        pd.testing.assert_frame_equal(read_site_data(tmp_path / "m.yaml"), reference)


def test_a_sqlite_table_a_view_and_a_query_give_the_same_rows(
    tmp_path: Path, export: pd.DataFrame, reference: pd.DataFrame
) -> None:
    url = f"sqlite:///{tmp_path / 'reg.db'}"
    engine = sa.create_engine(url)
    export.to_sql("tumours", engine, index=False)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE VIEW v_tumours AS SELECT * FROM tumours"))
    engine.dispose()
    for source in (
        {"kind": "sql", "url": url, "table": "tumours", "chunksize": 100},
        {"kind": "sql", "url": url, "table": "v_tumours"},
        {"kind": "sql", "url": url, "query": "SELECT * FROM tumours ORDER BY rowid"},
    ):
        (tmp_path / "m.yaml").write_text(_with_source(source))
        got = read_site_data(tmp_path / "m.yaml")
        pd.testing.assert_frame_equal(got, reference, check_dtype=True)


def test_sql_errors_name_the_database_with_its_password_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cases = [
        (
            {"url": "sqlite:////no/such/dir/x.db", "table": "t"},
            "cannot connect to sqlite:////no/such/dir/x.db",
        ),
        (
            {"url": "postgresql+psycopg://reg:hunter2@127.0.0.1:1/x", "table": "t"},
            "cannot connect to postgresql+psycopg://reg:***@127.0.0.1:1/x",
        ),
        ({"url": "nosuchdialect://x", "table": "t"}, "cannot use database URL"),
        (
            {"url": f"sqlite:///{tmp_path / 'e.db'}", "table": "missing"},
            "no table or view 'missing'",
        ),
        (
            {"url": f"sqlite:///{tmp_path / 'e.db'}", "query": "SELECT * FROM nowhere"},
            "no such table: nowhere",
        ),
        (
            {"url": "postgresql+psycopg://reg:${H11A_UNSET_PW}@db/x", "table": "t"},
            "${H11A_UNSET_PW}, which is not set",
        ),
    ]
    monkeypatch.delenv("H11A_UNSET_PW", raising=False)
    for source, message in cases:
        (tmp_path / "m.yaml").write_text(_with_source({"kind": "sql", **source}))
        with pytest.raises(MappingError) as err:
            read_site_data(tmp_path / "m.yaml")
        assert message in str(err.value)
        assert "hunter2" not in str(err.value)


def test_url_environment_expansion_and_masking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("H11A_PW", "pa ss")
    assert expand_url("postgresql://u:${H11A_PW}@h/d") == "postgresql://u:pa ss@h/d"
    assert shown_url("postgresql://u:secret@h/d") == "postgresql://u:***@h/d"


def test_a_source_column_the_mapping_reads_but_the_table_lacks(
    tmp_path: Path, export: pd.DataFrame
) -> None:
    url = f"sqlite:///{tmp_path / 'reg.db'}"
    engine = sa.create_engine(url)
    export.drop(columns=["region"]).to_sql("tumours", engine, index=False)
    engine.dispose()
    (tmp_path / "m.yaml").write_text(_with_source({"kind": "sql", "url": url, "table": "tumours"}))
    with pytest.raises(
        MappingError,
        match=r"table tumours: the mapping reads column\(s\) the source does not have: region",
    ):
        read_site_data(tmp_path / "m.yaml")


def test_an_empty_or_unreadable_file(tmp_path: Path, export: pd.DataFrame) -> None:
    path = write_site(tmp_path, export.iloc[:0])
    with pytest.raises(MappingError, match="has no rows"):
        read_site_data(path)
    (tmp_path / "registry.csv").write_bytes(b"")
    with pytest.raises(MappingError, match="registry.csv: cannot read csv file"):
        read_site_data(path)


def test_a_spreadsheet_export_with_a_byte_order_mark_and_a_latin_1_file(
    tmp_path: Path, export: pd.DataFrame, reference: pd.DataFrame
) -> None:
    path = write_site(tmp_path, export)
    csv_file = tmp_path / "registry.csv"
    csv_file.write_bytes(b"\xef\xbb\xbf" + csv_file.read_bytes())
    pd.testing.assert_frame_equal(read_site_data(path), reference)
    export.assign(region=export.region).to_csv(csv_file, index=False, encoding="latin-1")
    (tmp_path / "m.yaml").write_text(
        _with_source({"kind": "csv", "path": "registry.csv", "encoding": "latin-1"})
    )
    pd.testing.assert_frame_equal(read_site_data(tmp_path / "m.yaml"), reference)
