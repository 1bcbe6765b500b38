"""The API documents and docs pages: offline, split by audience, with examples that validate."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from gateway.api.examples import ENROLL_EXAMPLES, QUERY_EXAMPLES, TRAINING_EXAMPLES
from gateway.api.routes.nodes import EnrollRequest
from gateway.app import create_app
from gateway.core.config import Settings
from tests.unit.gateway.test_training_gateway import Client
from varde.query import Query
from varde.training import TrainingSpec


@pytest.fixture(scope="module")
def client() -> Client:
    return Client(create_app(Settings(state_dir=Path(tempfile.mkdtemp(prefix="varde-docs-")))))


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, m, op) for path, ops in doc["paths"].items() for m, op in ops.items()]


@pytest.mark.parametrize(
    ("examples", "model"),
    [(QUERY_EXAMPLES, Query), (TRAINING_EXAMPLES, TrainingSpec), (ENROLL_EXAMPLES, EnrollRequest)],
    ids=["query", "training", "enroll"],
)
def test_every_example_is_valid_input(
    examples: dict[str, dict[str, Any]], model: type[BaseModel]
) -> None:
    for name, example in examples.items():
        assert example["summary"], name
        model.model_validate(example["value"])  # raises, naming the field, if it rotted


def test_every_request_body_has_examples(client: Client) -> None:
    doc = client.get("/operators/openapi.json").json()
    bodies = [(p, m, op) for p, m, op in _operations(doc) if "requestBody" in op]
    assert len(bodies) >= 5
    missing = []
    for path, method, op in bodies:
        media = op["requestBody"]["content"]["application/json"]
        if path in ("/v1/nodes/poll", "/v1/nodes/releases", "/v1/nodes/whoami"):
            continue  # signed envelopes: made by a node's key, never typed by hand
        if not media.get("examples"):
            missing.append(f"{method.upper()} {path}")
    assert not missing, missing


def test_researchers_see_their_routes_and_operators_see_every_route(client: Client) -> None:
    researcher = client.get("/openapi.json").json()
    operators = client.get("/operators/openapi.json").json()
    mine = set(researcher["paths"])
    assert {"/v1/queries", "/v1/queries/preview", "/v1/schema", "/v1/budgets"} <= mine
    assert not [p for p in mine if p.startswith("/v1/nodes")]
    assert {"/v1/nodes/enroll", "/v1/nodes/poll", "/v1/nodes/releases"} <= set(operators["paths"])
    assert "SignedEnvelope" not in researcher["components"]["schemas"]
    assert "SignedEnvelope" in operators["components"]["schemas"]
    for path, method, op in _operations(researcher):
        assert op.get("description") or op.get("summary"), f"{method} {path} is undescribed"


@pytest.mark.parametrize("page", ["/docs", "/redoc", "/operators/docs"])
def test_docs_pages_load_nothing_from_outside_the_gateway(client: Client, page: str) -> None:
    resp = client.get(page)
    assert resp.status_code == 200 and "text/html" in resp.headers["content-type"]
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", resp.text)
    urls += re.findall(r"""url: ?["']([^"']+)["']""", resp.text)
    assert urls, resp.text
    assert not [u for u in urls if not u.startswith("/")], urls  # no CDN, no fonts service
    for url in urls:
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 100, url


def test_the_root_leads_to_the_docs(client: Client) -> None:
    resp = client.get("/", follow_redirects=False)
    assert resp.status_code in (302, 307) and resp.headers["location"] == "/docs"


def test_unions_keep_their_discriminator_in_the_document(client: Client) -> None:
    """Callable discriminators (for readable errors) still document ``kind`` and ``op``."""
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    statistic = schemas["Query"]["properties"]["statistic"]["discriminator"]
    assert statistic["propertyName"] == "kind"
    assert statistic["mapping"]["survival"] == "#/components/schemas/Survival"
    args = schemas["And"]["properties"]["args"]["items"]["discriminator"]
    assert args["propertyName"] == "op" and args["mapping"][">="] == "#/components/schemas/Ge"
