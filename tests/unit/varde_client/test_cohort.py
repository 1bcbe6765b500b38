"""The cohort builder and its text form: JSON round trips, the rows selected, errors that help.

The rows test evaluates each random criterion twice: by an independent pandas
evaluator written here from the *intent* of each builder call (``>`` is pandas'
own ``>``, ``!=`` is ``not ==`` with missing values passing), and by the node's
``nodes.cohort.evaluate`` on the compiled JSON over the same synthetic registry.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodes.cohort import evaluate
from nodes.data import RegistryData, prepare
from nodes.synth import generate_registry
from varde.schema import FIELDS, FieldKind
from varde_client.cohort import (
    AllOf,
    AnyOf,
    AtLeast,
    AtMost,
    CohortError,
    Criterion,
    Equals,
    Field,
    InRange,
    InvalidCriterion,
    IsIn,
    Negation,
    Schema,
    StartsWith,
    UnknownCategory,
    UnknownField,
    all_of,
    any_of,
    validate,
)
from varde_client.cohort_text import CohortSyntaxError, format_cohort_text, parse_cohort_text

Mask = Callable[[pd.DataFrame], pd.Series]

CATEGORICAL = [f for f in FIELDS if f.kind is FieldKind.CATEGORICAL]
INTEGER = [f for f in FIELDS if f.kind is FieldKind.INTEGER]
DATES = [f for f in FIELDS if f.kind is FieldKind.DATE]


# --- strategies: a criterion together with the pandas mask it is meant to select ---------------


def _filled(mask: pd.Series) -> pd.Series:
    """A comparison with a missing value is False (as in SQL), so its negation is True."""
    return mask.astype("boolean").fillna(False).astype(bool)


@st.composite
def categorical_leaf(draw: st.DrawFn) -> tuple[Criterion, Mask]:
    spec = draw(st.sampled_from(CATEGORICAL))
    cats = list(spec.categories)
    name, f = spec.name, Field(spec.name)
    kind = draw(st.sampled_from(["eq", "ne", "isin", "startswith"]))
    if kind == "isin":
        values = draw(st.lists(st.sampled_from(cats), min_size=1, max_size=4, unique=True))
        return f.isin(values), lambda d: _filled(d[name].astype(object).isin(values))
    value = draw(st.sampled_from(cats))
    if kind == "startswith":
        prefix = value[: draw(st.integers(1, len(value)))]
        return f.startswith(prefix), lambda d: _filled(
            d[name].astype(object).str.startswith(prefix)
        )
    eq = (f == value, lambda d: _filled(d[name].astype(object) == value))
    if kind == "eq":
        return eq
    return f != value, lambda d: ~eq[1](d)


@st.composite
def ordered_leaf(draw: st.DrawFn) -> tuple[Criterion, Mask]:
    spec = draw(st.sampled_from(INTEGER + DATES))
    name, f = spec.name, Field(spec.name)
    if spec.kind is FieldKind.INTEGER:
        assert spec.lower is not None and spec.upper is not None
        span = spec.upper - spec.lower
        whole = st.integers(spec.lower - 2, spec.upper + 2)
        number = st.one_of(whole, st.floats(spec.lower - 1, spec.upper + 1).map(lambda x: x + 0.5))
        # values concentrated where the data lie, so masks are neither all nor nothing
        centre = spec.lower + span // (10 if name != "age_at_diagnosis" else 2)
        near = st.integers(centre - span // 10, centre + span // 10)
        values = st.one_of(whole, number, near)
        wrap: Callable[[Any], Any] = lambda v: v  # noqa: E731
        column: Callable[[pd.DataFrame], pd.Series] = lambda d: d[name]  # noqa: E731
    else:
        values = st.dates(dt.date(2008, 1, 1), dt.date(2027, 12, 31))
        wrap = pd.Timestamp
        column = lambda d: d[name]  # noqa: E731
    op = draw(st.sampled_from(["eq", "isin", "between", ">=", "<=", ">", "<"]))
    if op == "isin":
        vs = draw(st.lists(values, min_size=1, max_size=3))
        return f.isin(vs), lambda d: _filled(column(d).isin([wrap(v) for v in vs]))
    a = draw(values)
    if op == "between":
        b = draw(values)
        lo, hi = min(a, b), max(a, b)
        return f.between(lo, hi), lambda d: _filled(
            (column(d) >= wrap(lo)) & (column(d) <= wrap(hi))
        )
    ops: dict[str, tuple[Callable[[Field, Any], Criterion], Mask]] = {
        "eq": (lambda f, v: f == v, lambda d: _filled(column(d) == wrap(a))),
        ">=": (lambda f, v: f >= v, lambda d: _filled(column(d) >= wrap(a))),
        "<=": (lambda f, v: f <= v, lambda d: _filled(column(d) <= wrap(a))),
        ">": (lambda f, v: f > v, lambda d: _filled(column(d) > wrap(a))),
        "<": (lambda f, v: f < v, lambda d: _filled(column(d) < wrap(a))),
    }
    build, mask = ops[op]
    return build(f, a), mask


def _and(pair: tuple[tuple[Criterion, Mask], tuple[Criterion, Mask]]) -> tuple[Criterion, Mask]:
    (a, ma), (b, mb) = pair
    return a & b, lambda d: ma(d) & mb(d)


def _or(pair: tuple[tuple[Criterion, Mask], tuple[Criterion, Mask]]) -> tuple[Criterion, Mask]:
    (a, ma), (b, mb) = pair
    return a | b, lambda d: ma(d) | mb(d)


def _not(item: tuple[Criterion, Mask]) -> tuple[Criterion, Mask]:
    a, ma = item
    return ~a, lambda d: ~ma(d)


leaves = st.one_of(categorical_leaf(), ordered_leaf())
trees = st.recursive(
    leaves,
    lambda kids: st.one_of(
        st.tuples(kids, kids).map(_and), st.tuples(kids, kids).map(_or), kids.map(_not)
    ),
    max_leaves=8,
)
criteria = trees.map(lambda pair: pair[0])


@functools.cache
def registry() -> tuple[pd.DataFrame, RegistryData]:
    frame = generate_registry("oslo", 3000, seed=11)
    data = prepare(frame, site="oslo", max_rows_per_patient=10)
    assert data.n_dropped == 0 and data.n_rows == len(frame)  # same rows, same order
    return frame.reset_index(drop=True), data


# --- round trips and the rows selected ----------------------------------------------------------


@given(criteria)
@settings(max_examples=300, deadline=None)
def test_json_round_trip_through_the_server_models(criterion: Criterion) -> None:
    data = criterion.to_json()
    back = Criterion.from_json(data)
    assert back == criterion
    assert back.to_json() == data
    assert criterion.to_predicate().model_dump(mode="json", exclude_none=True) == data


@given(criteria)
@settings(max_examples=300, deadline=None)
def test_text_round_trip(criterion: Criterion) -> None:
    text = format_cohort_text(criterion)
    assert parse_cohort_text(text) == criterion, text


@given(trees)
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_selects_the_rows_an_independent_evaluation_selects(pair: tuple[Criterion, Mask]) -> None:
    criterion, mask = pair
    frame, data = registry()
    expected = mask(frame).to_numpy(dtype=bool)
    got = evaluate(data, Criterion.from_json(criterion.to_json()).to_predicate())
    np.testing.assert_array_equal(got, expected, err_msg=format_cohort_text(criterion))


def test_random_criteria_select_neither_everything_nor_nothing() -> None:
    """The rows test would be weak if its criteria all selected everything or nothing."""
    frame, data = registry()
    sizes = []

    @given(trees)
    @settings(max_examples=200, deadline=None, database=None)
    def collect(pair: tuple[Criterion, Mask]) -> None:
        sizes.append(int(pair[1](frame).sum()))

    collect()
    partial = [s for s in sizes if 0 < s < len(frame)]
    assert len(partial) > len(sizes) / 4, sizes


# --- building ------------------------------------------------------------------------------------


def test_the_readme_cohort_compiles_to_the_query_language() -> None:
    cohort = (
        Field("topography").startswith("C34")
        & (Field("stage") == "IV")
        & Field("age_at_diagnosis").between(18, 75)
        & (Field("diagnosis_date") >= dt.date(2020, 1, 1))
    )
    assert cohort.to_json() == {
        "op": "and",
        "args": [
            {"op": "startswith", "field": "topography", "prefix": "C34"},
            {"op": "eq", "field": "stage", "value": "IV"},
            {"op": "between", "field": "age_at_diagnosis", "low": 18, "high": 75},
            {"op": ">=", "field": "diagnosis_date", "value": "2020-01-01"},
        ],
    }
    assert cohort.fields() == {"topography", "stage", "age_at_diagnosis", "diagnosis_date"}


def test_nested_and_or_are_flattened() -> None:
    a, b, c, d = (Field("stage") == s for s in ("I", "II", "III", "IV"))
    assert (a & b) & (c & d) == AllOf((a, b, c, d))
    assert a | (b | c) == AnyOf((a, b, c))
    assert ((a | b) & c).to_json()["args"][0]["op"] == "or"  # different ops stay nested
    nested = {"op": "and", "args": [{"op": "and", "args": [a.to_json(), b.to_json()]}, c.to_json()]}
    assert Criterion.from_json(nested) == AllOf((a, b, c))
    assert Criterion.from_json({"op": "or", "args": [a.to_json()]}) == a
    assert all_of(a) == a and any_of(a, b) == a | b
    with pytest.raises(ValueError, match="at least one"):
        all_of()


@pytest.mark.parametrize(
    "use",
    [
        lambda a, b: a and b,
        lambda a, b: a or b,
        lambda a, b: not a,
        lambda a, b: 18 <= Field("age_at_diagnosis") <= 75,
        lambda a, b: bool(a),
    ],
    ids=["and", "or", "not", "chained comparison", "bool"],
)
def test_python_keywords_raise_a_type_error(use: Callable[[Criterion, Criterion], Any]) -> None:
    a, b = Field("stage") == "IV", Field("sex") == "male"
    with pytest.raises(TypeError, match=r"combine criteria with & \(and\), \| \(or\), ~ \(not\)"):
        use(a, b)


def test_strict_comparisons_are_exact_on_integers_and_dates_only() -> None:
    assert (Field("age_at_diagnosis") > 17) == AtLeast("age_at_diagnosis", 18)
    assert (Field("age_at_diagnosis") > 17.5) == AtLeast("age_at_diagnosis", 18)
    assert (Field("age_at_diagnosis") < 75) == AtMost("age_at_diagnosis", 74)
    assert (Field("age_at_diagnosis") < 74.2) == AtMost("age_at_diagnosis", 74)
    assert (Field("diagnosis_date") > dt.date(2020, 12, 31)) == AtLeast(
        "diagnosis_date", "2021-01-01"
    )
    assert (Field("diagnosis_date") < "2020-03-01") == AtMost("diagnosis_date", "2020-02-29")
    with pytest.raises(TypeError, match="use >= or <="):
        _ = Field("stage") > "I"
    with pytest.raises(UnknownField, match="did you mean 'age_at_diagnosis'"):
        _ = Field("age_at_diagnosys") > 3
    with pytest.raises(TypeError, match="not a number"):
        _ = Field("age_at_diagnosis") > "17"


def test_values_are_not_coerced() -> None:
    with pytest.raises(TypeError, match="boolean"):
        _ = Field("age_at_diagnosis") == True  # noqa: E712
    with pytest.raises(TypeError, match="time of day"):
        _ = Field("diagnosis_date") >= dt.datetime(2020, 1, 1, 12)
    with pytest.raises(TypeError, match="list of values"):
        Field("stage").isin("IV")
    with pytest.raises(ValueError, match="at least one value"):
        Field("stage").isin([])
    with pytest.raises(ValueError, match="finite"):
        _ = Field("age_at_diagnosis") <= float("nan")
    # a number written as a string is not a number: refused before anything is sent
    with pytest.raises(InvalidCriterion, match="is a string, not a number"):
        validate(Field("age_at_diagnosis") >= "18")
    assert (Field("age_at_diagnosis") == np.int64(3)).to_json()["value"] == 3
    assert (Field("stage") != "IV") == Negation(Equals("stage", "IV"))


def test_from_json_validates_with_the_server_models() -> None:
    with pytest.raises(pydantic.ValidationError, match="unknown field 'stge'"):
        Criterion.from_json({"op": "eq", "field": "stge", "value": "IV"})
    with pytest.raises(pydantic.ValidationError):
        Criterion.from_json({"op": "like", "field": "stage", "value": "I%"})
    with pytest.raises(pydantic.ValidationError, match="Extra inputs"):
        Criterion.from_json({"op": "eq", "field": "stage", "value": "IV", "typo": 1})


# --- validation against a schema ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("typo", "meant"),
    [
        ("stge", "stage"),
        ("Stage", "stage"),
        ("egrf", "egfr"),
        ("age_at_diagnoss", "age_at_diagnosis"),
        ("topograhy", "topography"),
        ("vital_statuss", "vital_status"),
    ],
)
def test_unknown_field_suggests_the_field_meant(typo: str, meant: str) -> None:
    with pytest.raises(UnknownField) as err:
        validate(Field(typo) == "x")
    assert err.value.suggestions[0] == meant
    assert f"unknown field {typo!r}; did you mean {meant!r}" in str(err.value)
    assert "valid:" not in str(err.value)  # thirty-odd fields: too many to list
    assert isinstance(err.value, ValueError) and err.value.field == typo


def test_unknown_category_suggests_and_lists_short_category_lists() -> None:
    with pytest.raises(UnknownCategory) as err:
        validate((Field("sex") == "female") & (Field("stage") == "iv"))
    assert err.value.suggestions[0] == "IV" and err.value.field == "stage"
    assert "(valid: 0, I, II, III, IV, unknown)" in str(err.value)
    with pytest.raises(UnknownCategory, match="valid: positive, negative, not_tested"):
        validate(Field("egfr").isin(["positive", "unknown"]))


def test_unknown_code_points_to_startswith() -> None:
    with pytest.raises(UnknownCategory) as err:
        validate(Field("topography") == "C34")
    msg = str(err.value)
    assert "did you mean 'C34.0', 'C34.1' or 'C34.2'?" in msg
    assert "startswith('C34')" in msg and "valid:" not in msg
    with pytest.raises(UnknownCategory, match="no category of 'topography' starts with 'X1'"):
        validate(Field("topography").startswith("X1"))


@pytest.mark.parametrize(
    ("criterion", "message"),
    [
        (Field("stage").between("I", "IV"), "'between' needs a numeric or date field"),
        (Field("stage") >= "I", "needs a numeric or date field"),
        (Field("age_at_diagnosis").startswith("1"), "startswith needs a categorical field"),
        (Field("sex") == 1, "is not a string"),
        (Field("diagnosis_date") >= "2020-13-01", "is not 'YYYY-MM-DD'"),
        (Field("age_at_diagnosis").between(75, 18), "low 75 > high 18"),
        (Field("patient_id") == "x", "identifier and can never be queried"),
    ],
)
def test_misused_fields_are_refused_by_name(criterion: Criterion, message: str) -> None:
    with pytest.raises(CohortError, match=message):
        validate(criterion)


def _server_records(drop: str = "", stages: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """What GET /v1/schema returns (FieldInfo), built the way the gateway builds it."""
    out = []
    for f in FIELDS:
        if not f.queryable or f.name == drop:
            continue
        cats = list(stages) if (f.name == "stage" and stages) else list(f.categories) or None
        out.append(
            {
                "name": f.name,
                "kind": f.kind.value,
                "description": f.description,
                "categories": cats,
                "lower": f.lower,
                "upper": f.upper,
                "sites": ["oslo"],
            }
        )
    return out


def test_validation_uses_the_schema_it_is_given() -> None:
    """The gateway's schema decides, not the one this client was built with."""
    records = _server_records(drop="region", stages=("I", "II", "III", "IV"))
    ok = (Field("stage") == "IV") & (Field("sex") == "male")
    assert validate(ok, records) is ok
    assert validate(ok, pd.DataFrame(records)) is ok  # what VardeClient.schema() returns
    validate(Field("region") == "NO08")  # offline: known
    with pytest.raises(UnknownField, match="unknown field 'region'"):
        validate(Field("region") == "NO08", records)
    with pytest.raises(UnknownCategory, match=r"\(valid: I, II, III, IV\)"):
        validate(Field("stage") == "unknown", pd.DataFrame(records))
    with pytest.raises(ValueError, match="not a schema field"):
        Schema.from_records([{"name": "x", "kind": "text"}])


# --- the text form -------------------------------------------------------------------------------


def test_text_form_of_the_trial_cohort() -> None:
    text = (
        "topography^=C34 and stage=IV and age_at_diagnosis in 18..75"
        " and egfr in (positive, not_tested) and not sex=male"
    )
    assert parse_cohort_text(text) == (
        Field("topography").startswith("C34")
        & (Field("stage") == "IV")
        & Field("age_at_diagnosis").between(18, 75)
        & Field("egfr").isin(["positive", "not_tested"])
        & ~(Field("sex") == "male")
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("stage=I or stage=II and sex=male", lambda a, b, m: a | (b & m)),
        ("(stage=I or stage=II) and sex=male", lambda a, b, m: (a | b) & m),
        ("not stage=I and sex=male", lambda a, b, m: ~a & m),
        ("not (stage=I and sex=male)", lambda a, b, m: ~(a & m)),
        ("stage!=I", lambda a, b, m: ~a),
        ("STAGE=I", None),
        ("stage=I AND sex=male OR stage=II", lambda a, b, m: (a & m) | b),
        ("  stage = I  and  sex = 'male' ", lambda a, b, m: a & m),
    ],
)
def test_text_precedence_and_spelling(text: str, expected: Any) -> None:
    a, b, m = Field("stage") == "I", Field("stage") == "II", Field("sex") == "male"
    if expected is None:  # field names are case-sensitive, keywords are not
        with pytest.raises(UnknownField, match="did you mean 'stage'"):
            parse_cohort_text(text)
        return
    assert parse_cohort_text(text) == expected(a, b, m)


def test_text_values_take_the_field_kind() -> None:
    c = parse_cohort_text(
        'pdl1_tps=">=50%" and behaviour=3 and age_band="85+" and morphology in (8140/3, 8500/3)'
        " and diagnosis_date in 2020-01-01..2020-12-31"
        " and age_at_diagnosis>17.5 and age_at_diagnosis<=80"
    )
    assert c.to_json()["args"] == [
        {"op": "eq", "field": "pdl1_tps", "value": ">=50%"},
        {"op": "eq", "field": "behaviour", "value": "3"},
        {"op": "eq", "field": "age_band", "value": "85+"},
        {"op": "in", "field": "morphology", "values": ["8140/3", "8500/3"]},
        {"op": "between", "field": "diagnosis_date", "low": "2020-01-01", "high": "2020-12-31"},
        {"op": ">=", "field": "age_at_diagnosis", "value": 18},
        {"op": "<=", "field": "age_at_diagnosis", "value": 80},
    ]


@pytest.mark.parametrize(
    ("text", "error", "position", "token"),
    [
        ("", CohortSyntaxError, 0, "the end"),
        ("stge=IV", UnknownField, 0, "'stge'"),
        ("sex=male and stage=iv", UnknownCategory, 19, "'iv'"),
        ("egfr in (positive, unknown)", UnknownCategory, 19, "'unknown'"),
        ("stage=", CohortSyntaxError, 6, "the end"),
        ("stage IV", CohortSyntaxError, 6, "'IV'"),
        ("(stage=IV", CohortSyntaxError, 9, "the end"),
        ("stage=IV and", CohortSyntaxError, 12, "the end"),
        ("stage=IV sex=male", CohortSyntaxError, 9, "'sex'"),
        ("and stage=IV", CohortSyntaxError, 0, "'and'"),
        ("age_at_diagnosis=abc", CohortSyntaxError, 17, "'abc'"),
        ("age_at_diagnosis in 18", CohortSyntaxError, 22, "the end"),
        ("stage>I", InvalidCriterion, 5, "'>'"),
        ("diagnosis_date>=2020-13-01", InvalidCriterion, 16, "'2020-13-01'"),
        ('stage="IV', CohortSyntaxError, 6, "'\"IV'"),
        ("stage=IV)", CohortSyntaxError, 8, "')'"),
        ("stage=and", CohortSyntaxError, 6, "'and'"),
    ],
)
def test_text_errors_name_position_and_token(
    text: str, error: type[CohortError], position: int, token: str
) -> None:
    with pytest.raises(error) as err:
        parse_cohort_text(text)
    assert type(err.value) is error
    assert err.value.position == position
    assert str(err.value).startswith(f"at position {position} ({token}): "), str(err.value)


_WORDS = ["stage", "sex", "IV", "male", "18", "75", "and", "or", "not", "in", "age_at_diagnosis"]


@given(
    st.lists(
        st.one_of(st.sampled_from(_WORDS), st.sampled_from(list("()=!^<>,.'\" "))), max_size=14
    ).map(" ".join)
    | st.text(max_size=30)
)
@settings(max_examples=400, deadline=None)
def test_any_text_parses_or_raises_a_cohort_error(text: str) -> None:
    try:
        out = parse_cohort_text(text)
    except CohortError as err:
        assert err.position is not None and 0 <= err.position <= len(text)
    else:
        assert isinstance(out, Criterion)
        assert parse_cohort_text(format_cohort_text(out)) == out


def test_text_form_quotes_what_needs_quoting() -> None:
    c = (Field("pdl1_tps") == "<1%") | (Field("pdl1_tps") == "1-49%")
    assert format_cohort_text(c) == 'pdl1_tps="<1%" or pdl1_tps=1-49%'
    assert format_cohort_text(StartsWith("topography", "C34.")) == 'topography^="C34."'
    ranged = InRange("diagnosis_date", "2020-01-01", "2020-12-31")
    assert parse_cohort_text(format_cohort_text(ranged)) == ranged
    assert format_cohort_text(IsIn("stage", ("I", "IV"))) == "stage in (I, IV)"
