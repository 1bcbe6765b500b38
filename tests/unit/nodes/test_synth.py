"""Tests of the synthetic registry generator (nodes/synth/).

One 200k-row Oslo registry is generated once per module and shared; statistical checks use
tolerances wide enough for that size (binomial standard errors are well under 1 point) but
narrow enough to catch a wrong parameter.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nodes.synth import (
    BIOMARKER_PREVALENCE,
    DATA_AS_OF,
    DIAGNOSIS_END,
    DIAGNOSIS_START,
    PATIENT_ID_DTYPE,
    SITE_PROFILES,
    MarkerRule,
    SiteProfile,
    conform_registry,
    generate_registry,
    profile_for,
    read_registry,
    write_registry,
)
from varde import schema

N_ROWS = 200_000


@pytest.fixture(scope="module")
def oslo() -> pd.DataFrame:
    return generate_registry("oslo", N_ROWS, seed=0)


@pytest.fixture(scope="module")
def bergen() -> pd.DataFrame:
    return generate_registry("bergen", 100_000, seed=0)


@pytest.fixture(scope="module")
def small() -> pd.DataFrame:
    return generate_registry("trondheim", 5_000, seed=7)


def share_among_tested(frame: pd.DataFrame, column: str, value: str) -> float:
    """Share of ``value`` among tumours tested for ``column``."""
    tested = frame[column] != "not_tested"
    assert tested.sum() > 200, f"too few tested for {column}"
    return float((frame.loc[tested, column] == value).mean())


def assert_same(left: pd.DataFrame, right: pd.DataFrame) -> None:
    """assert_frame_equal, exact: pandas 3's default (inexact) path compares categoricals
    element by element (~2 s per 200k-row column); the exact path compares codes."""
    pd.testing.assert_frame_equal(left, right, check_exact=True)


def km_curve(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Kaplan-Meier estimate from survival_days and vital_status: (sorted days, S(day))."""
    time = frame["survival_days"].to_numpy()
    event = (frame["vital_status"] == "dead").to_numpy()
    order = np.argsort(time, kind="stable")
    time, event = time[order], event[order]
    at_risk = time.size - np.arange(time.size)
    return time, np.cumprod(1.0 - event / at_risk)


def km_survival(frame: pd.DataFrame, day: int) -> float:
    time, survival = km_curve(frame)
    index = np.searchsorted(time, day, side="right") - 1
    return 1.0 if index < 0 else float(survival[index])


def km_median(frame: pd.DataFrame) -> int:
    time, survival = km_curve(frame)
    return int(time[np.argmax(survival < 0.5)])


# --- reproducibility and shape ------------------------------------------------------------


def test_same_seed_and_site_give_identical_frames() -> None:
    first = generate_registry("oslo", 20_000, seed=3)
    second = generate_registry("oslo", 20_000, seed=3)
    assert_same(first, second)


def test_different_seed_differs() -> None:
    first = generate_registry("oslo", 5_000, seed=3)
    second = generate_registry("oslo", 5_000, seed=4)
    assert not first.drop(columns="tumour_id").equals(second.drop(columns="tumour_id"))
    assert not np.array_equal(first["diagnosis_date"], second["diagnosis_date"])


def test_different_site_same_seed_differs() -> None:
    first = generate_registry("oslo", 5_000, seed=3)
    # Same profile, other name: only the site hash differs, and that alone must change rows.
    second = generate_registry("oslo2", 5_000, seed=3, profile=SITE_PROFILES["oslo"])
    assert not np.array_equal(first["diagnosis_date"], second["diagnosis_date"])
    assert not np.array_equal(first["age_at_diagnosis"], second["age_at_diagnosis"])


@pytest.mark.parametrize("n", [1, 2, 3, 10, 997])
def test_exact_row_count(n: int) -> None:
    frame = generate_registry("bergen", n, seed=1)
    assert len(frame) == n
    assert frame["tumour_id"].is_unique


def test_zero_rows_keeps_schema_dtypes(small: pd.DataFrame) -> None:
    empty = generate_registry("oslo", 0)
    assert len(empty) == 0
    assert list(empty.columns) == list(schema.COLUMN_ORDER)
    assert empty.dtypes.to_dict() == small.dtypes.to_dict()


@pytest.mark.parametrize(("site", "n", "seed"), [("", 10, 0), ("oslo", -1, 0), ("oslo", 10, -1)])
def test_bad_arguments_are_refused(site: str, n: int, seed: int) -> None:
    with pytest.raises(ValueError):
        generate_registry(site, n, seed=seed)


def test_columns_and_dtypes(oslo: pd.DataFrame) -> None:
    assert list(oslo.columns) == list(schema.COLUMN_ORDER)
    assert isinstance(oslo.index, pd.RangeIndex)
    for spec in schema.FIELDS:
        dtype = oslo[spec.name].dtype
        if spec.kind is schema.FieldKind.CATEGORICAL:
            assert isinstance(dtype, pd.CategoricalDtype), spec.name
            assert tuple(dtype.categories) == spec.categories, spec.name
            assert dtype.ordered is False, spec.name
        elif spec.kind is schema.FieldKind.INTEGER:
            assert dtype == ("Int32" if spec.nullable else np.dtype(np.int32)), spec.name
        elif spec.kind is schema.FieldKind.DATE:
            assert dtype == np.dtype("datetime64[ns]"), spec.name
    assert oslo["patient_id"].dtype == PATIENT_ID_DTYPE
    assert oslo["tumour_id"].dtype == np.dtype(np.int64)
    assert oslo["tumour_id"].is_unique


def test_values_within_schema_bounds_and_no_missing(oslo: pd.DataFrame) -> None:
    for spec in schema.FIELDS:
        column = oslo[spec.name]
        if spec.name != "days_to_treatment":
            assert column.notna().all(), spec.name
        if spec.kind is schema.FieldKind.INTEGER:
            assert column.min() >= spec.lower and column.max() <= spec.upper, spec.name


def test_patient_ids(oslo: pd.DataFrame) -> None:
    assert oslo["patient_id"].str.fullmatch(r"oslo-P\d{7}").all()


# --- internal consistency -----------------------------------------------------------------


def test_dates_window_and_derived_fields(oslo: pd.DataFrame) -> None:
    diagnosis = oslo["diagnosis_date"]
    assert diagnosis.min() >= pd.Timestamp(DIAGNOSIS_START)
    assert diagnosis.max() <= pd.Timestamp(DIAGNOSIS_END)
    assert (oslo["diagnosis_year"] == diagnosis.dt.year).all()
    assert oslo["diagnosis_date"].is_monotonic_increasing  # registration order
    age = oslo["age_at_diagnosis"].to_numpy()
    lag = (oslo["diagnosis_year"] - oslo["birth_year"]).to_numpy()
    assert np.isin(lag - age, [0, 1]).all()
    bands = {a: schema.age_band(int(a)) for a in np.unique(age)}
    assert (oslo["age_band"].astype(str) == oslo["age_at_diagnosis"].map(bands)).all()


def test_incidence_rises_slowly(oslo: pd.DataFrame) -> None:
    per_year = oslo["diagnosis_year"].value_counts().sort_index()
    assert list(per_year.index) == list(range(2010, 2026))
    assert 1.1 < per_year.loc[2023:2025].mean() / per_year.loc[2010:2012].mean() < 1.6


def test_follow_up_consistency(oslo: pd.DataFrame) -> None:
    last = oslo["last_contact_date"]
    assert (last == oslo["diagnosis_date"] + pd.to_timedelta(oslo["survival_days"], "D")).all()
    assert (oslo["survival_days"] >= 0).all()
    as_of = pd.Timestamp(DATA_AS_OF)
    assert (last <= as_of).all()
    alive = oslo["vital_status"] == "alive"
    # Alive: censored at (about) the as-of date; dead: died before censoring.
    assert (last[alive] > pd.Timestamp(DIAGNOSIS_END)).all()
    assert 0.3 < (~alive).mean() < 0.7


def test_behaviour_stage_and_tnm_consistent(oslo: pd.DataFrame) -> None:
    behaviour = oslo["morphology"].astype(str).str[-1]
    assert (oslo["behaviour"].astype(str) == behaviour).all()
    in_situ = oslo["behaviour"] == "2"
    assert ((oslo["stage"] == "0") == in_situ).all()
    stage = oslo["stage"]
    assert (oslo.loc[stage == "0", "t_stage"] == "Tis").all()
    assert ((oslo["t_stage"] == "Tis") <= (stage == "0")).all()
    assert (oslo.loc[stage == "IV", "m_stage"] == "M1").all()
    assert ((oslo["m_stage"] == "M1") == (stage == "IV")).all()
    early = stage.isin(["0", "I", "II", "III"])
    assert (oslo.loc[early, "m_stage"] == "M0").all()
    assert (oslo.loc[stage.isin(["0", "I"]), "n_stage"] == "N0").all()
    assert (oslo.loc[stage == "unknown", "m_stage"] == "MX").all()


def test_topography_and_morphology_match_type(oslo: pd.DataFrame) -> None:
    topo = oslo["topography"].astype(str)
    prefixes = {
        "lung": ("C34",),
        "breast": ("C50",),
        "prostate": ("C61",),
        "colorectal": ("C18", "C19", "C20"),
        "melanoma": ("C43",),
        "bladder": ("C67",),
        "cervix": ("C53",),
        "ovary": ("C56",),
        "brain": ("C71",),
    }
    for cancer, allowed in prefixes.items():
        rows = oslo["cancer_type"] == cancer
        assert topo[rows].str[:3].isin(allowed).all(), cancer
    lung = oslo[oslo["cancer_type"] == "lung"]
    shares = lung["morphology"].value_counts(normalize=True)
    assert 0.38 < shares["8140/3"] < 0.52
    assert 0.20 < shares["8070/3"] < 0.30
    assert 0.09 < shares["8041/3"] < 0.17
    assert (oslo.loc[oslo["cancer_type"] == "melanoma", "morphology"] == "8720/3").all()


def test_sex_constraints(oslo: pd.DataFrame) -> None:
    sex = oslo["sex"]
    assert (sex[oslo["cancer_type"] == "prostate"] == "male").all()
    for cancer in ("cervix", "ovary", "uterus"):
        assert (sex[oslo["cancer_type"] == cancer] == "female").all(), cancer
    assert (sex[oslo["cancer_type"] == "breast"] == "female").mean() > 0.97
    assert 0.45 < (sex == "male").mean() < 0.58


def test_multi_tumour_patients(oslo: pd.DataFrame) -> None:
    per_patient = oslo.groupby("patient_id", observed=True).agg(
        n=("tumour_id", "size"),
        sexes=("sex", "nunique"),
        births=("birth_year", "nunique"),
        status=("vital_status", "nunique"),
        last=("last_contact_date", "nunique"),
        region=("region", "nunique"),
    )
    assert per_patient["n"].max() <= 3
    assert 0.05 <= (per_patient["n"] >= 2).mean() <= 0.12
    assert 0.003 <= (per_patient["n"] == 3).mean() <= 0.02
    shared = per_patient.loc[per_patient["n"] > 1, ["sexes", "births", "status", "last", "region"]]
    assert (shared == 1).all().all()


def test_biomarkers_only_where_meaningful(oslo: pd.DataFrame) -> None:
    allowed = {
        "egfr": {"lung"},
        "alk": {"lung"},
        "ros1": {"lung"},
        "kras_g12c": {"lung", "colorectal"},
        "braf_v600e": {"melanoma", "colorectal"},
        "her2": {"breast", "stomach"},
        "msi": {"colorectal", "uterus", "stomach"},
        "pdl1_tps": {"lung"},
    }
    assert set(BIOMARKER_PREVALENCE) == set(allowed)
    for marker, types in allowed.items():
        tested = oslo[oslo[marker] != "not_tested"]
        assert set(tested["cancer_type"].astype(str)) == types, marker
        assert (tested["behaviour"] == "3").all(), marker
    lung = oslo[oslo["cancer_type"] == "lung"]
    small_cell = lung[lung["morphology"] == "8041/3"]
    assert (small_cell[["egfr", "alk", "ros1", "pdl1_tps"]] == "not_tested").all().all()


def test_biomarker_prevalence(oslo: pd.DataFrame) -> None:
    lung = oslo[oslo["cancer_type"] == "lung"]
    adeno = lung[lung["morphology"] == "8140/3"]
    assert 0.08 <= share_among_tested(adeno, "egfr", "positive") <= 0.17
    assert 0.02 <= share_among_tested(adeno, "alk", "positive") <= 0.07
    assert 0.08 <= share_among_tested(lung, "kras_g12c", "positive") <= 0.16
    melanoma = oslo[oslo["cancer_type"] == "melanoma"]
    assert 0.40 <= share_among_tested(melanoma, "braf_v600e", "positive") <= 0.60
    colorectal = oslo[oslo["cancer_type"] == "colorectal"]
    assert 0.10 <= share_among_tested(colorectal, "msi", "msi_high") <= 0.20
    breast = oslo[oslo["cancer_type"] == "breast"]
    assert 0.12 <= share_among_tested(breast, "her2", "positive") <= 0.23
    bands = lung.loc[lung["pdl1_tps"] != "not_tested", "pdl1_tps"].value_counts(normalize=True)
    assert 0.2 < bands[">=50%"] < 0.4


def test_drivers_are_mutually_exclusive(oslo: pd.DataFrame) -> None:
    drivers = ["egfr", "alk", "ros1", "kras_g12c", "braf_v600e"]
    positives = (oslo[drivers] == "positive").sum(axis=1)
    assert positives.max() == 1


def test_testing_rises_with_year(oslo: pd.DataFrame) -> None:
    adeno = oslo[(oslo["cancer_type"] == "lung") & (oslo["morphology"] == "8140/3")]
    tested = adeno["egfr"] != "not_tested"
    early = tested[adeno["diagnosis_year"] <= 2012].mean()
    late = tested[adeno["diagnosis_year"] >= 2023].mean()
    assert late > early + 0.25
    assert (adeno.loc[adeno["diagnosis_year"] < 2016, "pdl1_tps"] == "not_tested").all()


def test_stage_distribution(oslo: pd.DataFrame) -> None:
    lung = oslo[oslo["cancer_type"] == "lung"]
    assert 0.35 <= (lung["stage"] == "IV").mean() <= 0.60
    breast = oslo[oslo["cancer_type"] == "breast"]
    assert breast["stage"].isin(["I", "II"]).mean() > 0.6
    assert (oslo["stage"] == "unknown").mean() > 0.02


def test_treatment_follows_stage_and_biomarkers(oslo: pd.DataFrame) -> None:
    untreated = oslo["first_treatment"] == "none"
    assert (oslo["days_to_treatment"].isna() == untreated).all()
    treated = oslo[~untreated]
    assert (treated["days_to_treatment"] <= treated["survival_days"]).all()
    assert 10 < treated["days_to_treatment"].median() < 45
    lung_iv = oslo[(oslo["cancer_type"] == "lung") & (oslo["stage"] == "IV")]
    driver = lung_iv[(lung_iv["egfr"] == "positive") | (lung_iv["alk"] == "positive")]
    assert (driver["first_treatment"] == "targeted").mean() > 0.6
    no_driver = lung_iv[lung_iv["egfr"] == "negative"]
    assert (no_driver["first_treatment"] == "targeted").mean() < 0.2
    early_era = oslo["diagnosis_year"] < 2015
    assert (oslo.loc[early_era, "first_treatment"] == "immunotherapy").sum() == 0
    prostate = oslo[oslo["cancer_type"] == "prostate"]
    assert (prostate["first_treatment"] == "immunotherapy").sum() == 0


def test_clinical_trial_rate(oslo: pd.DataFrame) -> None:
    rate = (oslo["clinical_trial"] == "yes").mean()
    assert abs(rate - SITE_PROFILES["oslo"].trial_rate) < 0.01


def test_survival_ordering_and_calibration(oslo: pd.DataFrame) -> None:
    lung = oslo[oslo["cancer_type"] == "lung"]
    stage_iv = lung[lung["stage"] == "IV"]
    stage_i = lung[lung["stage"] == "I"]
    assert stage_iv["survival_days"].median() < stage_i["survival_days"].median()
    median_iv = km_median(stage_iv)
    assert 180 <= median_iv <= 365, median_iv  # ~8-10 months
    assert km_survival(stage_i, 1826) > km_survival(stage_iv, 1826) + 0.3
    breast_i = oslo[(oslo["cancer_type"] == "breast") & (oslo["stage"] == "I")]
    assert km_survival(breast_i[breast_i["age_at_diagnosis"] < 70], 1826) > 0.95


def test_age_distribution(oslo: pd.DataFrame) -> None:
    age = oslo["age_at_diagnosis"]
    assert 0.7 < (age > 55).mean() < 0.9
    assert 0.002 < (age < 15).mean() < 0.01
    children = oslo.loc[age < 15, "cancer_type"].astype(str)
    assert set(children) <= {"leukaemia", "brain", "lymphoma", "other"}
    by_type = oslo.groupby("cancer_type", observed=True)["age_at_diagnosis"].mean()
    assert by_type["cervix"] < by_type["breast"] < by_type["prostate"]


# --- sites --------------------------------------------------------------------------------


def test_site_profiles_named_sites() -> None:
    assert {"oslo", "bergen", "trondheim", "stockholm", "copenhagen"} <= set(SITE_PROFILES)
    assert profile_for("oslo") is SITE_PROFILES["oslo"]
    assert SITE_PROFILES["stockholm"].country == "SE"
    assert SITE_PROFILES["copenhagen"].country == "DK"
    for name in ("oslo", "bergen", "trondheim"):
        assert SITE_PROFILES[name].country == "NO"
        assert set(SITE_PROFILES[name].regions) <= set(schema.REGIONS)


def test_profile_for_unknown_site_is_stable_and_valid() -> None:
    first, second = profile_for("tromso"), profile_for("tromso")
    assert first == second
    assert first != profile_for("hamar")
    assert all(region.startswith(first.country) for region in first.regions)


def test_country_and_region_follow_profile(oslo: pd.DataFrame, bergen: pd.DataFrame) -> None:
    assert (oslo["country"] == "NO").all()
    assert set(oslo["region"].astype(str)) == set(SITE_PROFILES["oslo"].regions)
    assert set(bergen["region"].astype(str)) <= set(SITE_PROFILES["bergen"].regions)
    stockholm = generate_registry("stockholm", 2_000, seed=0)
    assert (stockholm["country"] == "SE").all()


def test_sites_are_not_iid(oslo: pd.DataFrame, bergen: pd.DataFrame) -> None:
    # Profiles: Oslo age_shift -1.5, Bergen +1.5 -> ~3 years apart in mean age at diagnosis.
    gap = bergen["age_at_diagnosis"].mean() - oslo["age_at_diagnosis"].mean()
    assert 2.0 < gap < 4.0
    # Bergen stage_shift +0.15 -> at least 2 points more stage IV among staged tumours.
    staged_o = oslo[oslo["stage"].isin(["I", "II", "III", "IV"])]
    staged_b = bergen[bergen["stage"].isin(["I", "II", "III", "IV"])]
    assert (staged_b["stage"] == "IV").mean() > (staged_o["stage"] == "IV").mean() + 0.02


def test_testing_multiplier_changes_testing_rate(oslo: pd.DataFrame) -> None:
    low = SiteProfile(country="NO", regions=("NO08",), testing_multiplier=0.5)
    other = generate_registry("oslo", N_ROWS // 2, seed=0, profile=low)

    def rate(frame: pd.DataFrame) -> float:
        return float((frame.loc[frame["cancer_type"] == "breast", "her2"] != "not_tested").mean())

    assert rate(other) < rate(oslo) - 0.3


@pytest.mark.parametrize(
    "kwargs",
    [
        {"country": "XX", "regions": ("NO08",)},
        {"country": "NO", "regions": ()},
        {"country": "NO", "regions": ("SE11",)},
        {"country": "NO", "regions": ("NO08",), "trial_rate": 0.9},
        {"country": "NO", "regions": ("NO08",), "type_mix": (("unicorn", 1.0),)},
        {"country": "NO", "regions": ("NO08", "NO09"), "region_weights": (1.0,)},
    ],
)
def test_site_profile_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SiteProfile(**kwargs)  # type: ignore[arg-type]


def test_marker_rule_validation() -> None:
    with pytest.raises(ValueError, match="probability"):
        MarkerRule("lung", ("8140/3",), (0.5, 0.6), (0.5, 0.5))
    with pytest.raises(ValueError, match="invasive"):
        MarkerRule("lung", ("8140/2",), (0.5, 0.5), (0.5, 0.5))


# --- files ------------------------------------------------------------------------------


def test_parquet_round_trip(oslo: pd.DataFrame, tmp_path: Path) -> None:
    path = write_registry(oslo, tmp_path / "oslo.parquet", "parquet")
    assert_same(read_registry(path), oslo)


def test_csv_round_trip(small: pd.DataFrame, tmp_path: Path) -> None:
    path = write_registry(small, tmp_path / "trondheim", "csv")
    assert path.suffix == ".csv"
    assert small["days_to_treatment"].isna().any()  # nulls survive the round trip
    assert_same(read_registry(path), small)


def test_pandas_written_csv_is_restored(small: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "by_pandas.csv"
    small.to_csv(path, index=False, date_format="%Y-%m-%d")
    assert_same(read_registry(path), small)


def test_tampered_csv_is_refused(small: pd.DataFrame, tmp_path: Path) -> None:
    path = write_registry(small, tmp_path / "r.csv", "csv")
    text = path.read_text()
    path.write_text(text.replace(",lung,", ",unicorn,", 1).replace('"lung"', '"unicorn"', 1))
    with pytest.raises(ValueError, match=r"cancer_type.*outside the schema.*unicorn"):
        read_registry(path)


def test_missing_column_is_refused(small: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    small.drop(columns="stage").to_csv(path, index=False)
    with pytest.raises(ValueError, match="lacks schema column.*stage"):
        read_registry(path)


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("age_at_diagnosis", 111, "outside"),
        ("survival_days", -1, "outside"),
        ("birth_year", "abc", "non-numeric"),
        ("diagnosis_date", "2020-13-45", "not ISO dates"),
        ("vital_status", None, "missing"),
        ("region", "XX99", "outside the schema"),
    ],
)
def test_conform_refuses_bad_values(
    small: pd.DataFrame, column: str, value: object, message: str
) -> None:
    bad = small.astype({column: object})
    bad.loc[0, column] = value
    with pytest.raises(ValueError, match=f"{column}.*{message}"):
        conform_registry(bad)


def test_duplicate_tumour_ids_are_refused(small: pd.DataFrame) -> None:
    bad = small.copy()
    bad.loc[1, "tumour_id"] = bad.loc[0, "tumour_id"]
    with pytest.raises(ValueError, match="duplicate"):
        conform_registry(bad)


def test_write_refuses_wrong_suffix_and_format(small: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="suffix"):
        write_registry(small, tmp_path / "r.csv", "parquet")
    with pytest.raises(ValueError, match="format"):
        write_registry(small, tmp_path / "r.json", "json")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unsupported"):
        read_registry(tmp_path / "r.json")


def test_patient_id_regex_is_site_prefixed(small: pd.DataFrame) -> None:
    assert all(re.fullmatch(r"trondheim-P\d{7}", p) for p in small["patient_id"].head(50))
