"""The node's Flower SuperNode: started beside the node, connecting out to the gateway's SuperLink.

Why with the node: the SuperNode runs the site's own ClientApp
(:mod:`nodes.training.clientapp`) next to the rows, with the node's own
policy, data and ledger as its ``--node-config``; the gateway only ever
reaches it through Flower's outbound connection. The process handling is
:mod:`varde.processes`, shared with the gateway's SuperLink.
"""

from __future__ import annotations

import json
import logging
import subprocess
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from varde.processes import (
    Processes,
    flower_env,
    free_port,
    is_loopback,
    split_address,
    tool,
    wait_port,
)

log = logging.getLogger("varde.node")


def node_config_arg(node_config: Mapping[str, str]) -> str:
    """``--node-config`` text: space-separated ``key="value"`` pairs (values JSON-quoted)."""
    return " ".join(f"{key}={json.dumps(value)}" for key, value in node_config.items())


def start_supernode(
    processes: Processes,
    home: Path,
    *,
    superlink: str,
    node_config: Mapping[str, str],
    insecure: bool = False,
    root_certificates: Path | None = None,
    log: Path | None = None,
    timeout_s: float = 30.0,
) -> subprocess.Popen[bytes]:
    """Start ``flower-supernode`` connecting OUT to ``superlink`` (``host:port``).

    ``node_config`` is what its ClientApp reads (site, policy, data, state dir);
    the SuperNode listens only on 127.0.0.1 (its runtime API, for its own
    ClientApp processes). ``insecure`` (plain text) is allowed to a loopback
    SuperLink only.
    """
    host, _port = split_address(superlink)
    if insecure and not is_loopback(host):
        raise ValueError(
            f"refusing plain text to the Flower SuperLink at {superlink}: --flower-insecure is "
            "for a SuperLink on 127.0.0.1 only (use TLS: --flower-root-certificates)"
        )
    home.mkdir(parents=True, exist_ok=True)
    runtime_port = free_port()
    if insecure:
        security = ["--insecure"]
    elif root_certificates is not None:
        security = ["--root-certificates", str(root_certificates)]
    else:
        security = []
    proc = processes.start(
        [
            tool("flower-supernode"),
            *security,
            "--superlink",
            superlink,
            "--host",
            "127.0.0.1",
            "--port",
            str(runtime_port),
            "--node-config",
            node_config_arg(node_config),
        ],
        env=flower_env(home),
        log=log or home / "supernode.log",
    )
    wait_port(runtime_port, proc, timeout_s)
    return proc


@dataclass
class SuperNodeSettings:
    """Where a node's Flower SuperNode connects (out) for federated training."""

    superlink: str
    """``host:port`` of the gateway's Flower SuperLink."""
    insecure: bool = False
    """Plain text: for a SuperLink on 127.0.0.1 only (refused otherwise)."""
    root_certificates: Path | None = None
    """CA certificate (PEM) that signed a TLS SuperLink's certificate."""

    def __post_init__(self) -> None:
        host, _port = split_address(self.superlink)  # ValueError: not host:port
        if self.insecure and not is_loopback(host):
            raise ValueError(
                f"refusing plain text to the Flower SuperLink at {self.superlink}: "
                "--flower-insecure is for a SuperLink on 127.0.0.1 only "
                "(use TLS: --flower-root-certificates)"
            )


class SuperNode:
    """The node's ``flower-supernode`` child: started with the node, stopped with it.

    Its ``--node-config`` is the node's own settings (site, policy file, data
    file, state directory), so each training round's ClientApp reads the same
    policy and pays from the same ledger the queries use. It only connects out
    (Flower retries while the SuperLink is away). If it exits, it is not
    restarted: the node logs it (queries go on) and :attr:`state` says so.

    Training rounds are charged by the ClientApp processes, not by this
    process, so the node would keep publishing stale budgets: while the
    SuperNode runs, a change of the ledger file calls ``on_ledger_change``
    (the node's :meth:`~nodes.context.NodeContext.charged`), checked every
    :attr:`LEDGER_CHECK_S` seconds.
    """

    LEDGER_CHECK_S = 2.0

    def __init__(
        self,
        settings: SuperNodeSettings,
        *,
        site: str,
        policy: Path,
        data: Path | None,
        state_dir: Path,
        on_ledger_change: Callable[[], None] | None = None,
        mapping: Path | None = None,
    ) -> None:
        self.settings = settings
        self.state_dir = state_dir
        self.on_ledger_change = on_ledger_change
        self.home = state_dir / "flower"
        self.node_config = {
            "site": site,
            "policy": str(policy.resolve()),
            "data": str(data.resolve()) if data is not None else "",
            "state-dir": str(state_dir.resolve()),
        }
        if mapping is not None:  # the ClientApp reads the rows through the same mapping
            self.node_config["mapping"] = str(mapping.resolve())
        self.processes = Processes()
        self.state = "not started"
        self._stopping = threading.Event()
        self._watch: threading.Thread | None = None

    @property
    def log_path(self) -> Path:
        """The SuperNode's own log."""
        return self.home / "supernode.log"

    def start(self) -> SuperNode:
        """Start the SuperNode (ValueError: plain text to a non-loopback SuperLink)."""
        proc = start_supernode(
            self.processes,
            self.home,
            superlink=self.settings.superlink,
            node_config=self.node_config,
            insecure=self.settings.insecure,
            root_certificates=self.settings.root_certificates,
            log=self.log_path,
        )
        self.state = f"running (pid {proc.pid}), connecting out to {self.settings.superlink}"
        log.info(
            "site %s: Flower SuperNode for training connects out to %s (log %s)",
            self.node_config["site"],
            self.settings.superlink,
            self.log_path,
        )
        self._watch = threading.Thread(
            target=self._wait, args=(proc,), name="supernode-watch", daemon=True
        )
        self._watch.start()
        return self

    def _ledger_stamp(self) -> tuple[tuple[int, int], ...]:
        stamps = []
        for name in ("ledger.sqlite", "ledger.sqlite-wal"):
            try:
                st = (self.state_dir / name).stat()
                stamps.append((st.st_mtime_ns, st.st_size))
            except OSError:
                stamps.append((0, 0))
        return tuple(stamps)

    def _wait(self, proc: subprocess.Popen[bytes]) -> None:
        stamp = self._ledger_stamp()
        while True:
            try:
                code = proc.wait(timeout=self.LEDGER_CHECK_S)
                break
            except subprocess.TimeoutExpired:
                now = self._ledger_stamp()
                if now != stamp and self.on_ledger_change is not None:
                    self.on_ledger_change()  # republish the budgets the rounds spent
                stamp = now
        if self._stopping.is_set():
            return
        self.state = f"exited with code {code}: no training at this site until the node restarts"
        log.error(
            "site %s: the Flower SuperNode %s (see %s); queries are not affected",
            self.node_config["site"],
            self.state,
            self.log_path,
        )

    def stop(self) -> None:
        """Stop the SuperNode and what it started."""
        self._stopping.set()
        self.processes.stop()
        if self._watch is not None:
            self._watch.join(timeout=5)
        self.state = "stopped"
