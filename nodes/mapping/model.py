"""The mapping file of one site: how its own tables become the common schema.

Why a declarative file: registry staff know their columns and codes, not Python.
``mapping.yaml`` says, for every field of ``varde/schema.py``, where it comes
from (a source column with a value map, a date format, a code normaliser, a
default for empty cells), that it is *derived* by a documented rule (age from
birth and diagnosis dates, survival from dates ...), that it is one constant
for the site (``country``), or that the site simply does not have it
(``not_available``: never faked, refused by name in queries). Every schema
field must be accounted for in exactly one of these ways, so a forgotten
column is an error at load time, not a silent default.

Reading the file (with YAML line numbers) is :mod:`nodes.mapping.loader`;
applying it to rows is :mod:`nodes.mapping.transform`. docs/MAPPING.md is the
staff-facing description of every key.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    Tag,
    field_validator,
    model_validator,
)

from varde.schema import FIELDS_BY_NAME, FieldKind, FieldSpec


def _schema_value(value: object) -> str | int:
    """A category's text or a whole number; YAML's booleans and decimals are refused by name.

    Why: YAML reads ``NO`` (Norway), ``yes`` and ``off`` as booleans and ``1.0`` as a
    decimal; silently turning them into ``"False"`` or ``1`` would store a wrong code.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is a YAML boolean (from yes/no/on/off/true/false); quote it")
    if isinstance(value, str | int):
        return value
    raise ValueError(f"{value!r} is not text or a whole number; quote it if it is a code")


SchemaValue = Annotated[str | int, PlainValidator(_schema_value)]
"""A value in the common schema (a category's text, or a whole number)."""

CodeSystem = Literal["icd_o3_topography", "icd_o3_morphology"]
"""Code normalisers (:func:`nodes.mapping.derive.normalise_codes`)."""

DERIVABLE: dict[str, str] = {
    "tumour_id": "the row's number in the source (1, 2, ...), when the source has no tumour id",
    "age_at_diagnosis": "whole years from inputs.birth_date to diagnosis_date",
    "birth_year": "year of inputs.birth_date (without it: diagnosis year minus age)",
    "age_band": "the public band of age_at_diagnosis",
    "diagnosis_year": "year of diagnosis_date",
    "cancer_type": "grouped from the topography's three-character code (docs/MAPPING.md)",
    "behaviour": "the digit after '/' of the morphology (2 in situ, 3 malignant)",
    "last_contact_date": "inputs.death_date if present, else inputs.last_followup_date",
    "vital_status": "dead when inputs.death_date is present, else alive",
    "survival_days": "days from diagnosis_date to last_contact_date",
}
"""Every derivation there is, one per field, each with its rule (shown in docs and errors)."""

REQUIRED: frozenset[str] = frozenset({"patient_id", "tumour_id", "diagnosis_date"})
"""Fields a site must provide: contributions are bounded per patient by earliest diagnosis."""

INPUTS: tuple[str, ...] = ("birth_date", "death_date", "last_followup_date")
"""Source dates that feed derivations but are not schema fields themselves."""

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,40}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _text_keys(value: object) -> object:
    """Value-map keys as text: cells are compared as text, so ``1:`` and ``"1":`` are one key.

    A YAML ``yes``/``no``/``true`` key is a bool, almost never what staff meant: refused.
    """
    if not isinstance(value, dict):
        return value
    out: dict[str, object] = {}
    for key, val in value.items():
        if isinstance(key, bool) or key is None:
            raise ValueError(f'value-map key {key!r} is not text; quote it (e.g. "yes":)')
        if isinstance(key, float):
            raise ValueError(f"value-map key {key!r} is a decimal number; quote it")
        out[str(key)] = val
    return out


class ColumnRule(_Strict):
    """One field (or input) taken from a source column."""

    column: str = Field(min_length=1, description="The source column it is read from.")
    values: dict[str, SchemaValue | None] = Field(
        default={},
        description="Local code -> schema value (null: the cell counts as empty). A cell "
        "that is already a schema value passes unchanged.",
    )
    others: SchemaValue | None = Field(
        default=None,
        description="What any other non-empty code becomes (unset: an unmapped code is an error).",
    )
    missing: SchemaValue | None = Field(
        default=None,
        description="What an empty cell becomes (unset: an empty cell is an error, unless the "
        "schema lets the field be missing).",
    )
    date_format: str | None = Field(
        default=None,
        description="strftime format of a date column, e.g. '%d.%m.%Y' (default: the "
        "mapping's date_format, else ISO 8601).",
    )
    codes: CodeSystem | None = Field(
        default=None, description="Normalise codes first (e.g. C34 -> C34.9, 81403 -> 8140/3)."
    )

    _keys = field_validator("values", mode="before")(_text_keys)


class ConstantRule(_Strict):
    """One value for every row (e.g. the site's country)."""

    value: SchemaValue


def _rule_kind(value: object) -> str:
    if isinstance(value, dict):
        return "<constant>" if "value" in value else "<column>"
    if isinstance(value, ConstantRule):
        return "<constant>"
    return "<column>" if isinstance(value, ColumnRule) else "<derived>"


FieldRule = Annotated[
    Annotated[ColumnRule, Tag("<column>")]
    | Annotated[ConstantRule, Tag("<constant>")]
    | Annotated[Literal["derived"], Tag("<derived>")],
    Discriminator(_rule_kind),
]
"""How one schema field is filled: from a column, a constant, or ``derived``."""

RULE_TAGS = frozenset({"<column>", "<constant>", "<derived>"})
"""Union tags pydantic puts in an error's location (not keys of the file)."""


class StudyField(_Strict):
    """A study-specific field: an extra column next to the schema's (issue 11, point 3)."""

    column: str = Field(min_length=1, description="The source column it is read from.")
    kind: Literal["categorical", "integer", "number", "date"] = Field(
        description="categorical (text codes), integer, number (decimal) or date."
    )
    values: dict[str, SchemaValue | None] = Field(
        default={}, description="Local code -> value (null: the cell counts as empty)."
    )
    date_format: str | None = None

    _keys = field_validator("values", mode="before")(_text_keys)


class FileSource(_Strict):
    """A CSV or Parquet file; ``path`` relative to the mapping file."""

    kind: Literal["csv", "parquet"]
    path: str = Field(min_length=1)
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    encoding: str = "utf-8"


class SqlSource(_Strict):
    """A table or a query in any SQLAlchemy database; ``${VAR}`` in the URL reads the environment.

    Why ``${VAR}``: a database password belongs in the node's environment, not in a
    file staff copy around.
    """

    kind: Literal["sql"]
    url: str = Field(min_length=1, description="SQLAlchemy URL, e.g. postgresql+psycopg://...")
    table: str | None = Field(default=None, description="A table or view (schema.table allowed).")
    query: str | None = Field(default=None, description="A SELECT whose columns are the source.")
    chunksize: int = Field(default=50_000, ge=100, le=5_000_000)

    @model_validator(mode="after")
    def _one(self) -> SqlSource:
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of table or query")
        if self.table is not None and not re.fullmatch(
            r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)?", self.table
        ):
            raise ValueError(f"table {self.table!r} is not a plain [schema.]name")
        return self


class Measured(_Strict):
    """Which OMOP measurement/observation concepts carry one value (a biomarker, a stage)."""

    concepts: list[int] = Field(min_length=1, description="measurement/observation concept ids.")


class OmopSource(_Strict):
    """An OMOP CDM 5.4 database (:mod:`nodes.mapping.omop` says which columns it yields)."""

    kind: Literal["omop"]
    url: str = Field(min_length=1)
    schema_name: str | None = Field(
        default=None,
        alias="schema",
        pattern=r"^[A-Za-z_]\w*$",
        description="The CDM's database schema (PostgreSQL); unset: the default one.",
    )
    vocabularies: list[str] = Field(
        default=["ICDO3", "ICD10", "ICD10CM"],
        min_length=1,
        description="Condition vocabularies read as tumours (concept.vocabulary_id).",
    )
    measurements: dict[str, Measured] = Field(
        default={},
        description="Raw column name -> the measurement/observation concepts carrying it; the "
        "column holds the person's latest value_as_concept_id (map it with 'values').",
    )
    chunksize: int = Field(default=50_000, ge=100, le=5_000_000)

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)


Source = Annotated[FileSource | SqlSource | OmopSource, Field(discriminator="kind")]


class SiteMapping(_Strict):
    """The whole mapping of one site (``mapping.yaml``)."""

    site: str = Field(pattern=r"^[a-z][a-z0-9_-]{1,40}$", description="This site's name.")
    source: Source
    date_format: str | None = Field(
        default=None, description="Default strftime format of every date column (unset: ISO)."
    )
    fields: dict[str, FieldRule] = Field(description="Schema field -> where it comes from.")
    inputs: dict[Literal["birth_date", "death_date", "last_followup_date"], ColumnRule] = Field(
        default={}, description="Source dates that derived fields use."
    )
    not_available: list[str] = Field(
        default=[], description="Schema fields this site does not have (refused in queries)."
    )
    study_fields: dict[str, StudyField] = Field(
        default={}, description="Study-specific fields: name -> source column."
    )

    @field_validator("fields")
    @classmethod
    def _known_fields(cls, value: dict[str, FieldRule]) -> dict[str, FieldRule]:
        for name, rule in value.items():
            spec = FIELDS_BY_NAME.get(name)
            if spec is None:
                raise ValueError(f"unknown field {name!r} (see varde/schema.py)")
            if rule == "derived" and name not in DERIVABLE:
                raise ValueError(
                    f"field {name!r} cannot be derived (derivable: {', '.join(DERIVABLE)})"
                )
            if isinstance(rule, ColumnRule) and rule.codes is not None:
                wanted = {"icd_o3_topography": "topography", "icd_o3_morphology": "morphology"}
                if wanted[rule.codes] != name:
                    raise ValueError(
                        f"field {name!r}: codes {rule.codes!r} is for {wanted[rule.codes]!r}"
                    )
            if (
                isinstance(rule, ColumnRule)
                and spec.kind is not FieldKind.DATE
                and rule.date_format
            ):
                raise ValueError(f"field {name!r} is not a date; date_format does not apply")
            _check_targets(name, spec, rule)
        return value

    @field_validator("not_available")
    @classmethod
    def _known_absent(cls, value: list[str]) -> list[str]:
        for name in value:
            if name not in FIELDS_BY_NAME:
                raise ValueError(f"unknown field {name!r} (see varde/schema.py)")
            if name in REQUIRED:
                raise ValueError(f"field {name!r} is required; a site cannot leave it out")
        if len(set(value)) != len(value):
            raise ValueError("not_available must not repeat a field")
        return value

    @field_validator("study_fields")
    @classmethod
    def _study_names(cls, value: dict[str, StudyField]) -> dict[str, StudyField]:
        for name in value:
            if name in FIELDS_BY_NAME or name in INPUTS:
                raise ValueError(f"study field {name!r} clashes with a schema field or input")
            if not _NAME.match(name):
                raise ValueError(f"study field {name!r}: use lower-case letters, digits and _")
        return value

    @model_validator(mode="after")
    def _complete(self) -> SiteMapping:
        both = sorted(set(self.fields) & set(self.not_available))
        if both:
            raise ValueError(f"field(s) {', '.join(both)} are both mapped and not_available")
        unset = [n for n in FIELDS_BY_NAME if n not in self.fields and n not in self.not_available]
        if unset:
            raise ValueError(
                f"field(s) {', '.join(unset)} not accounted for: map each (column, value or "
                "derived) or list it in not_available"
            )
        for name, rule in self.fields.items():
            if rule == "derived":
                for need in _needs(name, self):
                    if need not in self.fields and need not in self.inputs:
                        raise ValueError(
                            f"field {name!r} is derived from {need!r}, which is not mapped"
                        )
        return self

    @property
    def provided(self) -> frozenset[str]:
        """The schema fields this site has (everything but :attr:`not_available`)."""
        return frozenset(self.fields)


def _check_targets(name: str, spec: FieldSpec, rule: FieldRule) -> None:
    """What a rule writes must be a value of the field: caught in the file, not per row.

    A categorical field's ``values``, ``others``, ``missing`` and constant must be
    its public categories (or null in ``values``); a date's default or constant an ISO
    date; a number's a whole number; ``others`` applies to categorical fields only.
    """
    if isinstance(rule, ConstantRule):
        targets: list[object] = [rule.value]
    elif isinstance(rule, ColumnRule):
        targets = [v for v in rule.values.values() if v is not None]
        targets += [v for v in (rule.missing, rule.others) if v is not None]
        if rule.others is not None and spec.kind is not FieldKind.CATEGORICAL:
            raise ValueError(f"field {name!r}: 'others' is for categorical fields only")
    else:
        return
    for target in targets:
        if spec.kind is FieldKind.CATEGORICAL and str(target) not in spec.categories:
            shown = ", ".join(spec.categories[:12]) + (" ..." if len(spec.categories) > 12 else "")
            raise ValueError(f"field {name!r}: {target!r} is not one of its values ({shown})")
        if spec.kind is FieldKind.DATE:
            try:
                dt.date.fromisoformat(str(target))
            except ValueError:
                raise ValueError(
                    f"field {name!r}: {target!r} is not an ISO date (YYYY-MM-DD)"
                ) from None
        if spec.kind is FieldKind.INTEGER or spec.name == "tumour_id":
            if not isinstance(target, int) and not str(target).lstrip("-").isdigit():
                raise ValueError(f"field {name!r}: {target!r} is not a whole number")


def _needs(name: str, mapping: SiteMapping) -> tuple[str, ...]:
    """What a derived field is computed from (fields, or ``inputs``)."""
    if name == "birth_year":
        return (
            ("birth_date",)
            if "birth_date" in mapping.inputs
            else ("diagnosis_date", "age_at_diagnosis")
        )
    if name == "last_contact_date":
        return ("last_followup_date",)
    if name == "vital_status":
        return ("death_date",)
    return {
        "tumour_id": (),
        "age_at_diagnosis": ("birth_date", "diagnosis_date"),
        "age_band": ("age_at_diagnosis",),
        "diagnosis_year": ("diagnosis_date",),
        "cancer_type": ("topography",),
        "behaviour": ("morphology",),
        "survival_days": ("diagnosis_date", "last_contact_date"),
    }[name]
