"""The common registry schema: one row per tumour, defined once, here.

Why one module: the synthetic generator (``nodes/synth/``), each site's policy
(which fields it exposes), the query validator (which fields and categories a
query may name) and the gateway's ``GET /v1/schema`` all read this table, so a
field or category can never mean two things in two places.

Categories listed here are *public*: they are part of the protocol, never read
from any site's data. A histogram or ``group_by`` over a categorical field uses
exactly these categories, so the shape of a release never depends on the rows.

Identifier fields (``patient_id``, ``tumour_id``) exist in the data so a node can
bound each patient's contribution; no policy may expose them and no query may
name them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class FieldKind(StrEnum):
    """How a field is stored and which predicates apply to it."""

    CATEGORICAL = "categorical"
    INTEGER = "integer"
    DATE = "date"
    IDENTIFIER = "identifier"


@dataclass(frozen=True)
class FieldSpec:
    """One column of the common schema.

    ``lower``/``upper`` are the public domain of an integer field (values outside
    it cannot occur); statistics still require the researcher to declare their
    own clamping bounds inside this range.
    """

    name: str
    kind: FieldKind
    description: str
    categories: tuple[str, ...] = ()
    lower: int | None = None
    upper: int | None = None
    nullable: bool = False

    @property
    def queryable(self) -> bool:
        """Whether a query or a policy may name this field at all."""
        return self.kind is not FieldKind.IDENTIFIER


BIOMARKER_STATUS = ("positive", "negative", "not_tested")

AGE_BANDS = (
    "0-14",
    "15-24",
    "25-34",
    "35-44",
    "45-54",
    "55-64",
    "65-74",
    "75-84",
    "85+",
)
# Lower edge of each band in AGE_BANDS (the last band is open-ended).
AGE_BAND_EDGES = (0, 15, 25, 35, 45, 55, 65, 75, 85)

CANCER_TYPES = (
    "breast",
    "prostate",
    "colorectal",
    "lung",
    "melanoma",
    "bladder",
    "kidney",
    "pancreas",
    "stomach",
    "oesophagus",
    "lymphoma",
    "leukaemia",
    "cervix",
    "ovary",
    "uterus",
    "brain",
    "thyroid",
    "other",
)

# ICD-10 chapter II malignant topography codes with a subsite digit, C00.0 .. C96.9, plus C97
# (multiple independent primaries). Real ICD-10 does not use every subsite; listing them all keeps
# the category set public and simple.
TOPOGRAPHY_CODES = tuple(f"C{n:02d}.{s}" for n in range(0, 97) for s in range(10)) + ("C97",)

MORPHOLOGY_CODES = (
    "8000/3",  # neoplasm, malignant
    "8010/3",  # carcinoma NOS
    "8041/3",  # small cell carcinoma
    "8046/3",  # non-small cell carcinoma
    "8070/3",  # squamous cell carcinoma
    "8120/3",  # transitional cell (urothelial) carcinoma
    "8140/2",  # adenocarcinoma in situ
    "8140/3",  # adenocarcinoma NOS
    "8260/3",  # papillary adenocarcinoma
    "8312/3",  # renal cell carcinoma
    "8441/3",  # serous carcinoma
    "8480/3",  # mucinous adenocarcinoma
    "8500/2",  # ductal carcinoma in situ
    "8500/3",  # invasive ductal carcinoma
    "8520/3",  # lobular carcinoma
    "8720/3",  # malignant melanoma
    "9440/3",  # glioblastoma
    "9680/3",  # diffuse large B-cell lymphoma
    "9823/3",  # chronic lymphocytic leukaemia
    "9861/3",  # acute myeloid leukaemia
)

COUNTRIES = ("NO", "SE", "DK", "FI", "IS", "DE", "NL", "BE", "FR", "ES", "IT", "PT", "PL", "EE")

# NUTS-2 regions of the demo countries (public list; a site maps its catchment area onto these).
REGIONS = (
    "NO02", "NO06", "NO07", "NO08", "NO09", "NO0A", "NO0B",
    "SE11", "SE12", "SE21", "SE22", "SE23", "SE31", "SE32", "SE33",
    "DK01", "DK02", "DK03", "DK04", "DK05",
    "FI19", "FI1B", "FI1C", "FI1D", "FI20",
    "DE11", "DE21", "DE30", "DE60", "DEA1",
    "NL32", "NL33", "NL41", "BE10", "FR10", "ES30", "ES51", "ITC4", "PT17", "PL91", "EE00",
)  # fmt: skip

STAGES = ("0", "I", "II", "III", "IV", "unknown")

FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("patient_id", FieldKind.IDENTIFIER, "Pseudonymous patient id (never exposed)."),
    FieldSpec(
        "tumour_id", FieldKind.IDENTIFIER, "Tumour id, unique within a site (never exposed)."
    ),
    FieldSpec("sex", FieldKind.CATEGORICAL, "Sex at birth.", ("female", "male")),
    FieldSpec("birth_year", FieldKind.INTEGER, "Year of birth.", lower=1900, upper=2030),
    FieldSpec(
        "age_at_diagnosis",
        FieldKind.INTEGER,
        "Age in whole years at diagnosis.",
        lower=0,
        upper=110,
    ),
    FieldSpec("age_band", FieldKind.CATEGORICAL, "Age at diagnosis in public bands.", AGE_BANDS),
    FieldSpec("diagnosis_date", FieldKind.DATE, "Date of diagnosis (ISO 8601)."),
    FieldSpec("diagnosis_year", FieldKind.INTEGER, "Year of diagnosis.", lower=1950, upper=2030),
    FieldSpec(
        "topography", FieldKind.CATEGORICAL, "ICD-10 topography, e.g. C34.1.", TOPOGRAPHY_CODES
    ),
    FieldSpec(
        "cancer_type", FieldKind.CATEGORICAL, "Cancer type grouped from topography.", CANCER_TYPES
    ),
    FieldSpec(
        "morphology", FieldKind.CATEGORICAL, "ICD-O-3 morphology/behaviour.", MORPHOLOGY_CODES
    ),
    FieldSpec(
        "behaviour", FieldKind.CATEGORICAL, "ICD-O-3 behaviour: 2 in situ, 3 malignant.", ("2", "3")
    ),
    FieldSpec("stage", FieldKind.CATEGORICAL, "Grouped stage 0-IV.", STAGES),
    FieldSpec(
        "t_stage", FieldKind.CATEGORICAL, "TNM T.", ("TX", "T0", "Tis", "T1", "T2", "T3", "T4")
    ),
    FieldSpec("n_stage", FieldKind.CATEGORICAL, "TNM N.", ("NX", "N0", "N1", "N2", "N3")),
    FieldSpec("m_stage", FieldKind.CATEGORICAL, "TNM M.", ("MX", "M0", "M1")),
    FieldSpec(
        "grade", FieldKind.CATEGORICAL, "Histological grade.", ("G1", "G2", "G3", "G4", "GX")
    ),
    FieldSpec("egfr", FieldKind.CATEGORICAL, "EGFR mutation (lung).", BIOMARKER_STATUS),
    FieldSpec("alk", FieldKind.CATEGORICAL, "ALK rearrangement (lung).", BIOMARKER_STATUS),
    FieldSpec("ros1", FieldKind.CATEGORICAL, "ROS1 rearrangement (lung).", BIOMARKER_STATUS),
    FieldSpec("kras_g12c", FieldKind.CATEGORICAL, "KRAS G12C mutation.", BIOMARKER_STATUS),
    FieldSpec("braf_v600e", FieldKind.CATEGORICAL, "BRAF V600E mutation.", BIOMARKER_STATUS),
    FieldSpec("her2", FieldKind.CATEGORICAL, "HER2 status (breast, stomach).", BIOMARKER_STATUS),
    FieldSpec(
        "msi",
        FieldKind.CATEGORICAL,
        "Microsatellite status / MMR.",
        ("msi_high", "mss", "not_tested"),
    ),
    FieldSpec(
        "pdl1_tps",
        FieldKind.CATEGORICAL,
        "PD-L1 tumour proportion score band.",
        ("<1%", "1-49%", ">=50%", "not_tested"),
    ),
    FieldSpec(
        "first_treatment",
        FieldKind.CATEGORICAL,
        "First treatment modality.",
        ("surgery", "radiotherapy", "chemotherapy", "targeted", "immunotherapy", "hormone", "none"),
    ),
    FieldSpec(
        "days_to_treatment",
        FieldKind.INTEGER,
        "Days from diagnosis to first treatment (missing when untreated).",
        lower=0,
        upper=3650,
        nullable=True,
    ),
    FieldSpec(
        "clinical_trial", FieldKind.CATEGORICAL, "Enrolled in a clinical trial.", ("yes", "no")
    ),
    FieldSpec("vital_status", FieldKind.CATEGORICAL, "Status at last contact.", ("alive", "dead")),
    FieldSpec("last_contact_date", FieldKind.DATE, "Date of death or of last follow-up."),
    FieldSpec(
        "survival_days",
        FieldKind.INTEGER,
        "Days from diagnosis to death or last follow-up.",
        lower=0,
        upper=40000,
    ),
    FieldSpec("country", FieldKind.CATEGORICAL, "Country of the registry (ISO 3166-1).", COUNTRIES),
    FieldSpec("region", FieldKind.CATEGORICAL, "NUTS-2 region of residence.", REGIONS),
)

FIELDS_BY_NAME: dict[str, FieldSpec] = {f.name: f for f in FIELDS}
QUERYABLE_FIELDS: tuple[str, ...] = tuple(f.name for f in FIELDS if f.queryable)
COLUMN_ORDER: tuple[str, ...] = tuple(f.name for f in FIELDS)


def field(name: str) -> FieldSpec:
    """Return the spec of ``name``; raise ``KeyError`` with the known names if unknown."""
    try:
        return FIELDS_BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown field {name!r}") from None


def age_band(age: int) -> str:
    """Map an age in years to its public band.

    >>> age_band(14), age_band(15), age_band(90)
    ('0-14', '15-24', '85+')
    """
    band = AGE_BANDS[0]
    for edge, name in zip(AGE_BAND_EDGES, AGE_BANDS, strict=True):
        if age >= edge:
            band = name
    return band


def render_markdown() -> str:
    """The schema as a Markdown table (``varde schema``; docs/SCHEMA.md is generated from it)."""
    out = [
        "# Common registry schema",
        "",
        "One row per tumour. Generated by `varde schema` from `varde/schema.py`;"
        " do not edit by hand.",
        "Categories are public: histograms and `group_by` always use exactly these.",
        "",
        "| field | kind | description | public categories / domain |",
        "|---|---|---|---|",
    ]
    for f in FIELDS:
        if f.categories:
            cats = ", ".join(f.categories)
            if len(f.categories) > 12:
                cats = ", ".join(f.categories[:6]) + f", … ({len(f.categories)} codes)"
        elif f.lower is not None:
            cats = f"{f.lower} … {f.upper}" + (" (may be missing)" if f.nullable else "")
        else:
            cats = "never exposed" if f.kind is FieldKind.IDENTIFIER else "ISO date"
        out.append(f"| `{f.name}` | {f.kind.value} | {f.description} | {cats} |")
    return "\n".join(out)
