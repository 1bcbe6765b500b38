"""The gateway's API against its own OpenAPI document, fuzzed with schemathesis.

Every operation of ``/operators/openapi.json`` (node routes included) is called with generated
requests (valid and not), authenticated as a researcher, against a real gateway app (SQLite in
a temporary directory) whose one enrolled site has published its manifest but is not connected:
anything that passes validation and the pre-check gets a clear 503, and nothing can be charged
anywhere. Checks: no 5xx other than the documented 503, every status and body as documented,
and no response that does not conform to its schema.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.admin import add_project, add_researcher
from gateway.app import create_app
from gateway.core.config import Settings
from gateway.core.db import Node
from gateway.state import GatewayState
from launcher.network import DEFAULT_POLICIES
from nodes.policy import Policy
from nodes.policy_check import load_policy
from varde.budget import PureDP

pytestmark = [pytest.mark.integration, pytest.mark.slow]

P = "nsclc-feasibility"


def _gateway() -> tuple[Any, str]:
    """A gateway app in a temporary directory, its one site not connected, and a token."""
    state = GatewayState.open(Settings(state_dir=Path(tempfile.mkdtemp(prefix="varde-schema-"))))
    add_project(state.sessions, P)
    token = add_researcher(state.sessions, "alice", [P])
    with state.sessions() as s:
        s.add(Node(site="oslo", public_key="unused"))
        s.commit()
    policy: Policy = load_policy(DEFAULT_POLICIES / "oslo.yaml")
    state.dispatcher._site("oslo").manifest = policy.manifest({P: PureDP(9.0)})
    return create_app(state=state), token


APP, TOKEN = _gateway()
CONFIG = SchemathesisConfig.from_dict(
    {
        # The query bodies are deep recursive unions (criteria in criteria, eight statistics,
        # five privacy forms): the coverage phase's boundary cases of them number in the
        # tens of thousands (over 10 minutes on two cores). Their examples and fuzzed bodies
        # still run; every other operation gets all three phases.
        "operations": [
            {
                "include-path-regex": "^/v1/queries(/preview)?$",
                "phases": {"coverage": {"enabled": False}},
            }
        ]
    }
)
schema = schemathesis.openapi.from_asgi(
    "/operators/openapi.json", APP, config=CONFIG
)  # node routes too


@pytest.fixture(scope="module")
def gateway() -> tuple[Any, str]:
    return APP, TOKEN


@schema.parametrize()
@settings(
    max_examples=10,  # generating a query body takes seconds (deep unions); calls take ms
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_every_operation_answers_as_documented(case: Any, gateway: tuple[Any, str]) -> None:
    _, token = gateway
    response = case.call(headers={"Authorization": f"Bearer {token}"})
    assert response.status_code < 500 or response.status_code == 503, response.text
    case.validate_response(
        response,
        checks=[status_code_conformance, content_type_conformance, response_schema_conformance],
    )


def test_the_document_lists_what_the_api_returns(gateway: tuple[Any, str]) -> None:
    app, _ = gateway
    doc = app.openapi()
    post = doc["paths"]["/v1/queries"]["post"]["responses"]
    assert {"200", "202", "401", "403", "404", "409", "422", "503"} <= set(post)
    body = doc["components"]["schemas"]["ValidationErrorBody"]["properties"]
    assert body["detail"]["type"] == "string" and body["errors"]["type"] == "array"
