"""A real network for the integration tests: gateway + three node processes on 127.0.0.1.

Started once per test session (per xdist worker; the integration tests share the group
"network" so one worker runs them all against one network).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher.network import LocalNetwork
from nodes.ledger import Ledger
from varde_client import VardeClient

SITES = ["oslo", "bergen", "trondheim"]
ROWS = 20_000


@pytest.fixture(scope="session")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    net = LocalNetwork(workdir=tmp_path_factory.mktemp("net"), sites=SITES, rows=ROWS, seed=3)
    net.start()
    yield net
    net.stop()


@pytest.fixture(scope="session")
def client(network: LocalNetwork) -> Iterator[VardeClient]:
    with VardeClient(network.url, network.token, timeout=60) as c:
        yield c


@pytest.fixture(scope="session")
def small_network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    """One real node under a gateway in this process, so the test can act as a bad gateway."""
    net = LocalNetwork(
        workdir=tmp_path_factory.mktemp("small"),
        sites=["bergen"],
        rows=5_000,
        seed=5,
        inprocess_gateway=True,
    )
    net.start()
    yield net
    net.stop()


def ledger_of(network: LocalNetwork, site: str) -> Ledger:
    """Open a node's own ledger file (read side; the node process keeps writing it)."""
    return Ledger(f"sqlite:///{network.node_state(site) / 'ledger.sqlite'}")


def charges_everywhere(network: LocalNetwork) -> dict[str, int]:
    """How many charges each site's ledger holds."""
    out = {}
    for site in network.sites:
        led = ledger_of(network, site)
        try:
            out[site] = len(led.charges())
        finally:
            led.close()
    return out


def node_state(network: LocalNetwork, site: str) -> Path:
    return network.node_state(site)
