"""Site mappings: a hospital's own tables (CSV, Parquet, SQL, OMOP CDM) -> the common schema.

One module per job: :mod:`~nodes.mapping.model` (the ``mapping.yaml`` model),
:mod:`~nodes.mapping.loader` (reading it, errors with YAML lines),
:mod:`~nodes.mapping.sources` and :mod:`~nodes.mapping.omop` (rows in chunks),
:mod:`~nodes.mapping.transform` and :mod:`~nodes.mapping.derive` (value maps,
codes, dates, derived fields), :mod:`~nodes.mapping.contradictions` and
:mod:`~nodes.mapping.check` (``varde node check-data``),
:mod:`~nodes.mapping.reader` (:func:`read_site_data`, all or nothing),
:mod:`~nodes.mapping.availability` (fields a site lacks leave its policy),
:mod:`~nodes.mapping.starter` (the file ``varde node init`` writes).
docs/MAPPING.md documents every key.
"""

from __future__ import annotations

from nodes.mapping.loader import MappingError, check_mapping_text, load_mapping
from nodes.mapping.model import SiteMapping
from nodes.mapping.reader import read_site_data
from nodes.mapping.starter import starter_mapping_text

__all__ = [
    "MappingError",
    "SiteMapping",
    "check_mapping_text",
    "load_mapping",
    "read_site_data",
    "starter_mapping_text",
]
