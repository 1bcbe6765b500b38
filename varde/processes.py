"""Child processes of a Varde process (Flower's SuperLink and SuperNode), and loopback checks.

Why in ``varde/``, which otherwise holds only wire types: the gateway starts a
``flower-superlink`` beside itself and a node a ``flower-supernode`` beside
itself, ``gateway/`` and ``nodes/`` never import each other, and both need the
same careful process handling (sessions, process groups, death signals) and
the same answer to "is this address loopback?" (plain text is allowed there
only). Nothing here knows about rows, budgets or policies; the start-up of
each Flower process lives with its side: :mod:`gateway.training.deployment`
(SuperLink) and :mod:`nodes.training.supernode` (SuperNode).

Settings measured in ``../shared/DESIGN.md``: own ports, ``FLWR_HOME`` and
``UV_CACHE_DIR`` inside a working directory, telemetry and update checks off,
plain text (``--insecure``) on loopback only.

Each process starts in its own session, so :meth:`Processes.stop` ends it and
what it forks into its group by that one process-group id. On Linux each child
also gets ``PR_SET_PDEATHSIG`` (SIGTERM when the thread that started it dies),
so a parent killed with SIGKILL leaves no Flower process behind. Flower's
SuperExec helpers detach into sessions of their own; they watch their parent's
pid (``--parent-pid``) and exit within seconds of it.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an IP address) is this machine's loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) as its host and port; ValueError when malformed."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{address!r} is not host:port")
    return host.strip("[]"), int(port)


def flower_env(home: Path) -> dict[str, str]:
    """Environment for every Flower process: state under ``home``, nothing phoned home."""
    env = dict(os.environ)
    # `flwr run --format json` prints its JSON through rich, which forced colour (a Jupyter
    # kernel sets these for its children) wraps in escape codes the gateway cannot parse.
    for forced in ("FORCE_COLOR", "CLICOLOR_FORCE", "TTY_COMPATIBLE"):
        env.pop(forced, None)
    env.update(
        {
            "FLWR_HOME": str(home / "flwr"),
            "UV_CACHE_DIR": str(home / "uv-cache"),
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            # Flower starts its helpers (flower-superexec, flwr-clientapp) by name.
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        }
    )
    return env


def tool(name: str) -> str:
    """The console script ``name`` of this environment (next to its Python)."""
    return str(Path(sys.executable).with_name(name))


def wait_port(
    port: int, proc: subprocess.Popen[bytes], timeout_s: float, host: str = "127.0.0.1"
) -> None:
    """Return once ``host:port`` accepts connections; raise if ``proc`` exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s:g} s")


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGTERM the child when its parent dies (else None)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None

    def _set() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)

    return _set


@dataclass
class Processes:
    """Processes started here, each the leader of its own process group."""

    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[IO[bytes]] = field(default_factory=list)

    def start(
        self, args: list[str], *, env: Mapping[str, str], log: Path
    ) -> subprocess.Popen[bytes]:
        """Start ``args`` in a new session, output to ``log``."""
        log.parent.mkdir(parents=True, exist_ok=True)
        handle = log.open("ab")
        self.logs.append(handle)
        proc = subprocess.Popen(
            args,
            env=dict(env),
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent(),  # noqa: PLW1509 (only prctl, async-signal-safe)
        )
        self.procs.append(proc)
        return proc

    @staticmethod
    def kill(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
        """End ``proc`` and its process group: SIGTERM, then SIGKILL after ``timeout_s``."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=timeout_s)
                break
            except subprocess.TimeoutExpired:
                continue
        # Helpers of the group may outlive the leader by a moment; make sure they go.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def stop(self) -> None:
        """Stop every process (newest first) and close the logs."""
        for proc in reversed(self.procs):
            self.kill(proc)
        self.procs.clear()
        for handle in self.logs:
            handle.close()
        self.logs.clear()
