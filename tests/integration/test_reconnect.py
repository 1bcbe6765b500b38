"""A node's connection survives: a network cut, a proxy that drops idle requests, a gateway restart.

A real gateway and node process; the node reaches the gateway through a TCP
proxy in this test, which can cut every connection (and refuse new ones) or
drop connections idle for longer than a second, as hospital proxies do with
long polls. After each, a query is answered again, and the node's ledger holds
exactly one charge per answered query.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from launcher.network import LocalNetwork
from nodes.ledger import Ledger

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.xdist_group("reconnect"),
]


class TcpProxy:
    """Forwards 127.0.0.1:port to the gateway; can cut all links or time idle ones out."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.down = threading.Event()
        self.idle_timeout: float | None = None
        self._links: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.down.is_set():
                client.close()  # the network is cut: nothing gets through
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._links += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                src.settimeout(self.idle_timeout)
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:  # timed out (idle), or cut
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def cut(self) -> None:
        """Break every connection now and refuse new ones until :meth:`restore`."""
        self.down.set()
        with self._lock:
            links, self._links = self._links, []
        for s in links:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def restore(self) -> None:
        self.down.clear()

    def close(self) -> None:
        self._closed = True
        self.cut()
        self.listener.close()


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalNetwork, TcpProxy]]:
    net = LocalNetwork(workdir=tmp_path_factory.mktemp("reconnect"), sites=["bergen"], rows=3000)
    net.ensure_data()
    net.ensure_policies()
    net.start_gateway()
    proxy = TcpProxy(net.port)
    net.node_gateway["bergen"] = proxy.url
    try:
        net.start_node("bergen")
        net.wait_connected()
        yield net, proxy
    finally:
        proxy.close()
        net.stop()


def _ask(net: LocalNetwork, epsilon: float) -> tuple[str, float]:
    """One count at bergen (a new epsilon: never a cached repeat); its status and seconds."""
    started = time.monotonic()
    resp = httpx.post(
        f"{net.url}/v1/queries",
        json={
            "project": "nsclc-feasibility",
            "statistic": {"kind": "count"},
            "privacy": {"mode": "dp", "epsilon": epsilon},
        },
        headers={"Authorization": f"Bearer {net.token}"},
        timeout=90,
    )
    if resp.status_code == 503:  # no site connected at the moment
        return "unavailable", time.monotonic() - started
    resp.raise_for_status()
    [site] = resp.json()["sites"]
    return site["status"], time.monotonic() - started


def _answered_within(net: LocalNetwork, epsilon: float, limit: float) -> float:
    """Ask until bergen answers (the gateway may still count it as connected); seconds taken."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        status, _ = _ask(net, epsilon)
        if status == "ok":
            return time.monotonic() - started
        epsilon += 0.001
        time.sleep(0.2)
    raise AssertionError(f"bergen did not answer within {limit} s")


def _charges(net: LocalNetwork) -> int:
    ledger = Ledger(f"sqlite:///{net.node_state('bergen') / 'ledger.sqlite'}")
    try:
        return len(ledger.charges())
    finally:
        ledger.close()


def test_network_cut_proxy_timeouts_and_gateway_restart(
    net: tuple[LocalNetwork, TcpProxy], tmp_path: Path
) -> None:
    network, proxy = net
    assert _ask(network, 0.1)[0] == "ok"
    answered = 1
    # a cut of five seconds: the node's long poll breaks, its retries are refused
    proxy.cut()
    time.sleep(5)
    proxy.restore()
    took = _answered_within(network, 0.2, 60)
    answered += 1
    print(f"answered {took:.1f} s after a 5 s cut ended")
    assert took < 30, took  # the cap (15 s) plus the query's own round trip
    # a proxy that drops connections idle for over a second: every long poll is cut
    proxy.idle_timeout = 1.0
    time.sleep(3)
    took = _answered_within(network, 0.3, 60)
    answered += 1
    print(f"answered in {took:.1f} s through a proxy dropping idle links")
    proxy.idle_timeout = None
    # the gateway restarts (same state, same port): the node reconnects by itself
    network.stop_process("gateway")
    time.sleep(1)
    network._start_replica(0, network.port, 60)
    took = _answered_within(network, 0.4, 60)
    answered += 1
    print(f"answered {took:.1f} s after the gateway restarted")
    assert took < 30, took
    headers = {"Authorization": f"Bearer {network.token}"}
    [site] = httpx.get(f"{network.url}/v1/sites", headers=headers).json()
    assert site["connected"] and site["state"] == "serving" and site["version"]
    # each answered query charged once, whatever broke in between (refusals charge nothing)
    assert _charges(network) == answered
