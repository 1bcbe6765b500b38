"""Flower's deployment engine on one machine: SuperLink, SuperNodes and run submission.

Why a module for this: tests, the benchmark and (later) the gateway all need to
start a ``flower-superlink``, submit the training FAB with ``flwr run`` and stop
everything again, with the settings measured in ``../shared/DESIGN.md``:
``--insecure`` on 127.0.0.1 only, own ports, ``FLWR_HOME`` and ``UV_CACHE_DIR``
inside a working directory, telemetry and update checks off, and runtime
dependency installation (``uv sync``) off, because the FAB carries no code and
every process runs in this environment.

The FAB is only a ``pyproject.toml`` naming ``gateway.training.serverapp:app``
and ``nodes.training.clientapp:app``: sites run their installed code.

Each process starts in its own session, so :meth:`Processes.stop` ends it and
what it forks into its group by that one process-group id. Flower's SuperExec
helpers detach into sessions of their own; they watch their parent's pid
(``--parent-pid``) and exit within seconds of it, taking their ClientApp and
ServerApp processes with them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import tomli_w

APP_NAME = "varde-training"

_FAB_PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "{name}"
version = "0.1.0"
description = "Varde federated training (code is installed at each site, not shipped)"
license = "Apache-2.0"
dependencies = []

[tool.flwr.app]
publisher = "varde"

[tool.flwr.app.components]
serverapp = "{serverapp}"
clientapp = "{clientapp}"

[tool.flwr.app.config]
job = ""
job-id = ""
researcher = ""
progress-file = ""
min-sites = 1
expected-sites = 0
round-timeout = 120
connect-timeout = 60
"""


def write_app(
    directory: Path,
    *,
    serverapp: str = "gateway.training.serverapp:app",
    clientapp: str = "nodes.training.clientapp:app",
    name: str = APP_NAME,
) -> Path:
    """Write the FAB source (one ``pyproject.toml``) into ``directory`` and return it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "pyproject.toml").write_text(
        _FAB_PYPROJECT.format(name=name, serverapp=serverapp, clientapp=clientapp)
    )
    return directory


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def flower_env(home: Path) -> dict[str, str]:
    """Environment for every Flower process: state under ``home``, nothing phoned home."""
    env = dict(os.environ)
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


def _tool(name: str) -> str:
    """The console script ``name`` of this environment (next to its Python)."""
    return str(Path(sys.executable).with_name(name))


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s:g} s")


@dataclass
class Processes:
    """Processes started here, each the leader of its own process group."""

    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[IO[bytes]] = field(default_factory=list)

    def start(
        self, args: list[str], *, env: Mapping[str, str], log: Path
    ) -> subprocess.Popen[bytes]:
        """Start ``args`` in a new session, output to ``log``."""
        handle = log.open("wb")
        self.logs.append(handle)
        proc = subprocess.Popen(
            args,
            env=dict(env),
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
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


@dataclass
class FlwrSubmitter:
    """Submits runs to one SuperLink with ``flwr run`` (what the gateway uses).

    ``$FLWR_HOME/config.toml`` (under ``home``) names the SuperLink as the
    connection ``varde``; ``insecure`` is for loopback only (tests, the demo).
    """

    home: Path
    superlink: str
    insecure: bool = False

    @property
    def env(self) -> dict[str, str]:
        """Environment of the ``flwr`` CLI."""
        return flower_env(self.home)

    def write_config(self) -> None:
        """Point ``flwr`` at the SuperLink (rewritten on every submit: cheap, never stale)."""
        flwr_home = Path(self.env["FLWR_HOME"])
        flwr_home.mkdir(parents=True, exist_ok=True)
        connection: dict[str, object] = {"address": self.superlink, "insecure": self.insecure}
        (flwr_home / "config.toml").write_text(
            tomli_w.dumps({"superlink": {"default": "varde", "varde": connection}})
        )

    def submit(self, app_dir: Path, run_config: Mapping[str, object], timeout_s: float = 60) -> int:
        """Submit the app with ``flwr run`` and return Flower's run id."""
        self.write_config()
        config_file = self.home / f"run-config-{time.monotonic_ns()}.toml"
        config_file.write_text(tomli_w.dumps(dict(run_config)))
        done = subprocess.run(
            [_tool("flwr"), "run", str(app_dir), "varde", "--run-config", str(config_file)]
            + ["--format", "json"],
            env=self.env,
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace")
            raise RuntimeError(f"flwr run failed ({done.returncode}): {output}")
        payload = json.loads(done.stdout.decode())
        return int(payload["run-id"])


@dataclass
class LocalFederation:
    """A SuperLink and its SuperNodes on 127.0.0.1 (tests, benchmarks, the demo)."""

    home: Path
    port: int = 0
    processes: Processes = field(default_factory=Processes)

    @property
    def env(self) -> dict[str, str]:
        """Environment of every process of this federation."""
        return flower_env(self.home)

    def start_superlink(self, timeout_s: float = 30.0) -> None:
        """Start the SuperLink; ``flwr`` (see :meth:`submitter`) is pointed at it."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self.submitter().write_config()
        proc = self.processes.start(
            [
                _tool("flower-superlink"),
                "--insecure",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--disable-runtime-dependency-installation",
            ],
            env=self.env,
            log=self.home / "superlink.log",
        )
        _wait_port(self.port, proc, timeout_s)

    def start_supernode(
        self, name: str, node_config: Mapping[str, str], timeout_s: float = 30.0
    ) -> subprocess.Popen[bytes]:
        """Start one SuperNode; ``node_config`` is what its ClientApp reads (paths, site)."""
        runtime_port = free_port()
        config = " ".join(f"{key}={json.dumps(value)}" for key, value in node_config.items())
        proc = self.processes.start(
            [
                _tool("flower-supernode"),
                "--insecure",
                "--superlink",
                f"127.0.0.1:{self.port}",
                "--host",
                "127.0.0.1",
                "--port",
                str(runtime_port),
                "--node-config",
                config,
            ],
            env=self.env,
            log=self.home / f"supernode-{name}.log",
        )
        _wait_port(runtime_port, proc, timeout_s)
        return proc

    def submitter(self) -> FlwrSubmitter:
        """A submitter for this federation's SuperLink (insecure: loopback only)."""
        return FlwrSubmitter(home=self.home, superlink=f"127.0.0.1:{self.port}", insecure=True)

    def submit(self, app_dir: Path, run_config: Mapping[str, object], timeout_s: float = 60) -> int:
        """Submit the app to this federation with ``flwr run``; Flower's run id."""
        return self.submitter().submit(app_dir, run_config, timeout_s)

    def stop(self) -> None:
        """Stop every process this federation started."""
        self.processes.stop()
