"""The client's error tree: every gateway refusal and every site refusal becomes its typed error.

The gateway is replaced by an ``httpx.MockTransport`` answering with the bodies
the real routes send (``gateway/api/errors.py``); the integration test
``tests/integration/test_client_errors.py`` raises the same classes through a
real network.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, get_args

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.unit.varde_client.results import answer, cell, refusal, site
from varde import errors as server
from varde.budget import PureDP
from varde.release import SiteStatus
from varde_client import VardeClient
from varde_client import errors as client_errors
from varde_client.errors import (
    AuthenticationFailed,
    AwaitingApproval,
    BudgetExhausted,
    Conflict,
    EnvelopeRejected,
    FieldNotAvailable,
    Forbidden,
    InvalidQuery,
    NotFound,
    PolicyViolation,
    QueryRefused,
    ServerError,
    SiteUnavailable,
    VardeHTTPError,
    error_for,
    site_error,
)
from varde_client.frames import QueryResponse

QUERY = {"project": "p", "statistic": {"kind": "count"}, "privacy": {"mode": "dp", "epsilon": 0.5}}
NO_EGFR = "site 'trondheim' does not expose field(s) egfr, pdl1_tps"


def client_answering(status: int, body: Any) -> VardeClient:
    """A client whose gateway answers every request with ``status`` and ``body``."""

    def handler(_request: httpx.Request) -> httpx.Response:
        if isinstance(body, str):
            return httpx.Response(status, text=body)
        return httpx.Response(status, json=body)

    client = VardeClient("https://gateway.test", "token")
    client._http = httpx.Client(
        base_url="https://gateway.test", transport=httpx.MockTransport(handler)
    )
    return client


@pytest.mark.parametrize(
    ("status", "body", "cls"),
    [
        (
            401,
            {"error": "authentication_failed", "detail": "unknown or revoked token"},
            AuthenticationFailed,
        ),
        (
            422,
            {
                "error": "invalid_query",
                "detail": "privacy.epsilon: must be greater than 0",
                "errors": [{"loc": ["privacy", "epsilon"], "msg": "must be > 0", "type": "x"}],
            },
            InvalidQuery,
        ),
        (403, {"error": "forbidden", "detail": "researcher 'a' is not a member"}, Forbidden),
        (403, {"error": "policy_violation", "detail": "above the cap"}, PolicyViolation),
        (403, {"error": "field_not_available", "detail": NO_EGFR}, FieldNotAvailable),
        (404, {"error": "not_found", "detail": "unknown project 'x'"}, NotFound),
        (404, {"detail": "Not Found"}, NotFound),  # a route that does not exist
        (409, {"error": "budget_exhausted", "detail": "no epsilon left"}, BudgetExhausted),
        (409, {"error": "conflict", "detail": "no site released an answer"}, Conflict),
        (503, {"error": "node_unavailable", "detail": "no site connected"}, SiteUnavailable),
        (400, {"error": "envelope_rejected", "detail": "forged: bad signature"}, EnvelopeRejected),
        (500, {"error": "internal_error", "detail": "boom"}, ServerError),
        (502, "Bad Gateway", ServerError),  # a proxy's page, not JSON
        (403, {"error": "a_newer_reason", "detail": "no"}, Forbidden),  # unknown code: by status
        (418, {"error": "teapot", "detail": "no"}, VardeHTTPError),
    ],
)
def test_whole_query_refusals_raise_their_class(
    status: int, body: Any, cls: type[VardeHTTPError]
) -> None:
    with client_answering(status, body) as client, pytest.raises(VardeHTTPError) as info:
        client.query(QUERY)
    err = info.value
    assert type(err) is cls
    assert err.status == status and err.site is None
    detail = body if isinstance(body, str) else body["detail"]
    assert err.detail == detail and detail in str(err)


def test_the_old_attributes_are_kept() -> None:
    err = error_for(409, {"error": "budget_exhausted", "detail": "gone", "sites": []})
    assert (err.status, err.code, err.detail, err.sites) == (409, "budget_exhausted", "gone", [])
    assert isinstance(err, VardeHTTPError) and isinstance(err, Conflict)


def test_invalid_query_lists_each_problem() -> None:
    body = {
        "error": "invalid_query",
        "detail": "a; b",
        "errors": [
            {"loc": ["a"], "msg": "bad", "type": "t"},
            {"loc": ["b"], "msg": "bad", "type": "t"},
        ],
    }
    err = error_for(422, body)
    assert isinstance(err, InvalidQuery) and [e["loc"] for e in err.errors] == [["a"], ["b"]]


def test_every_site_refusing_raises_the_shared_reason_with_each_sites_error() -> None:
    rows = [
        refusal("oslo", "budget_exhausted", "project 'p' has 0.1 epsilon left at 'oslo'"),
        refusal("bergen", "budget_exhausted", "project 'p' has no epsilon budget at 'bergen'"),
    ]
    body = {
        "error": "budget_exhausted",
        "detail": "no site released an answer (...)",
        "sites": [r.model_dump(mode="json") for r in rows],
    }
    with client_answering(409, body) as client, pytest.raises(BudgetExhausted) as info:
        client.query(QUERY)
    err = info.value
    assert [row["site"] for row in err.sites] == ["oslo", "bergen"]  # the rows, as sent
    assert set(err.site_errors) == {"oslo", "bergen"}
    for name, sub in err.site_errors.items():
        assert isinstance(sub, BudgetExhausted) and sub.site == name and sub.status == 409
    assert "0.1 epsilon left" in err.site_errors["oslo"].detail


def test_field_not_available_names_the_fields() -> None:
    err = site_error({"site": "trondheim", "status": "field_not_available", "message": NO_EGFR})
    assert isinstance(err, FieldNotAvailable) and isinstance(err, PolicyViolation)
    assert err.fields == ["egfr", "pdl1_tps"] and err.site == "trondheim" and err.status == 403
    assert str(err) == f"403 field_not_available at trondheim: {NO_EGFR}"


@pytest.mark.parametrize(
    ("status", "cls", "http"),
    [
        ("policy_violation", PolicyViolation, 403),
        ("field_not_available", FieldNotAvailable, 403),
        ("budget_exhausted", BudgetExhausted, 409),
        ("invalid_query", InvalidQuery, 422),
        ("envelope_rejected", EnvelopeRejected, 400),
        ("unavailable", SiteUnavailable, 503),
        ("error", ServerError, 500),
        ("awaiting_approval", AwaitingApproval, 202),
    ],
)
def test_each_site_status_has_its_class(status: str, cls: type[VardeHTTPError], http: int) -> None:
    err = site_error({"site": "oslo", "status": status, "message": "why"})
    assert type(err) is cls and err.status == http and err.code == status and err.detail == "why"


def test_every_refusing_site_status_is_mapped() -> None:
    """A new SiteStatus in varde.release needs a class here (or it would read as ServerError)."""
    statuses = set(get_args(SiteStatus)) - {"ok"}
    mapped = {code for cls in client_errors._CLASSES for code in cls.codes}
    assert statuses <= mapped, statuses - mapped


def test_codes_come_from_the_servers_tree() -> None:
    for name in (
        "InvalidQuery",
        "AuthenticationFailed",
        "PolicyViolation",
        "FieldNotAvailable",
        "NotFound",
        "BudgetExhausted",
        "EnvelopeRejected",
    ):
        ours, theirs = getattr(client_errors, name), getattr(server, name)
        assert theirs.code in ours.codes and ours.default_status == theirs.status


def partial() -> QueryResponse:
    rows = [
        site("oslo", [cell([], 40.0)], PureDP(0.5)),
        refusal("trondheim", "field_not_available", NO_EGFR),
        refusal("bergen", "unavailable", "site 'bergen' did not answer within 30 s"),
    ]
    return QueryResponse(answer(rows, [cell([], 40.0)]))


def test_a_partial_answer_is_a_result_and_raise_for_refusals_types_each_site() -> None:
    res = partial()
    assert set(res.refusals) == {"trondheim", "bergen"}
    with pytest.raises(QueryRefused) as info:
        res.raise_for_refusals()
    err = info.value
    assert isinstance(err.site_errors["trondheim"], FieldNotAvailable)
    assert err.site_errors["trondheim"].fields == ["egfr", "pdl1_tps"]
    assert isinstance(err.site_errors["bergen"], SiteUnavailable)
    assert err.response is res and err.status == 200 and err.code == "refused"
    assert "2 of 3 site(s) refused, 1 answered" in err.detail
    assert res.frame().loc[0, "value"] == 40.0  # the answer that came is still there


def test_raise_for_refusals_returns_the_result_when_every_site_answered() -> None:
    res = QueryResponse(answer([site("oslo", [cell([], 4.0)], PureDP(0.5))], [cell([], 4.0)]))
    assert res.refusals == {} and res.raise_for_refusals() is res


def test_a_202_is_returned_and_its_wait_raised_on_demand() -> None:
    rows = [refusal("oslo", "awaiting_approval", "awaiting approval at oslo (request r1: big)")]
    with client_answering(202, answer(rows, None)) as client:
        res = client.query(QUERY)
    assert res.pending and res.status == 202
    with pytest.raises(QueryRefused) as info:
        res.raise_for_refusals()
    assert isinstance(info.value.site_errors["oslo"], AwaitingApproval)
    assert info.value.status == 202


@given(
    status=st.integers(400, 599),
    body=st.dictionaries(
        st.sampled_from(["error", "detail", "sites", "errors", "other"]),
        st.one_of(
            st.text(max_size=20), st.integers(), st.none(), st.lists(st.integers(), max_size=3)
        ),
    ),
)
def test_any_error_body_gives_a_typed_error_never_a_crash(
    status: int, body: dict[str, Any]
) -> None:
    err = error_for(status, body)
    assert isinstance(err, VardeHTTPError) and err.status == status
    assert isinstance(err.detail, str) and isinstance(err.site_errors, dict)


def test_other_calls_raise_typed_errors_too() -> None:
    calls: list[Callable[[VardeClient], object]] = [
        lambda c: c.budgets(),
        lambda c: c.preview(QUERY),
        lambda c: c.training("job"),
    ]
    for call in calls:
        with client_answering(401, {"error": "authentication_failed", "detail": "no"}) as client:
            with pytest.raises(AuthenticationFailed):
                call(client)
