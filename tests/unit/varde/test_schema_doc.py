from pathlib import Path

from varde.schema import FIELDS, render_markdown


def test_schema_doc_is_generated_from_code() -> None:
    doc = Path(__file__).resolve().parents[3] / "docs" / "SCHEMA.md"
    assert doc.read_text().strip() == render_markdown().strip(), (
        "run: varde schema > docs/SCHEMA.md"
    )
    for f in FIELDS:
        assert f"`{f.name}`" in doc.read_text()
