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

The process handling itself (sessions, process groups, ``FLWR_HOME``, ports)
is :mod:`varde.processes`, shared with the node, which starts its SuperNode
with it (:mod:`nodes.training.supernode`).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

from varde.processes import Processes, flower_env, free_port, is_loopback, tool, wait_port

__all__ = [
    "APP_NAME",
    "FlwrSubmitter",
    "LocalFederation",
    "TLSFiles",
    "start_superlink",
    "write_app",
]

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


@dataclass(frozen=True)
class TLSFiles:
    """A SuperLink's TLS: its certificate, key and the CA that signed it (PEM files)."""

    certfile: Path
    keyfile: Path
    ca_certfile: Path

    def superlink_args(self) -> list[str]:
        """The ``flower-superlink`` options for these files."""
        return [
            "--ssl-certfile",
            str(self.certfile),
            "--ssl-keyfile",
            str(self.keyfile),
            "--ssl-ca-certfile",
            str(self.ca_certfile),
        ]


def start_superlink(
    processes: Processes,
    home: Path,
    *,
    host: str = "127.0.0.1",
    port: int,
    tls: TLSFiles | None = None,
    timeout_s: float = 30.0,
) -> subprocess.Popen[bytes]:
    """Start ``flower-superlink`` on ``host:port`` (plain text on loopback only).

    Its state lives in memory; its log is ``home/superlink.log``.
    """
    if tls is None and not is_loopback(host):
        raise ValueError(
            f"refusing to run the Flower SuperLink without TLS on {host}: plain text is for "
            "127.0.0.1 only (give its certificate, key and CA, or bind to 127.0.0.1)"
        )
    home.mkdir(parents=True, exist_ok=True)
    proc = processes.start(
        [
            tool("flower-superlink"),
            *(tls.superlink_args() if tls is not None else ["--insecure"]),
            "--host",
            host,
            "--port",
            str(port),
            "--disable-runtime-dependency-installation",
        ],
        env=flower_env(home),
        log=home / "superlink.log",
    )
    wait_port(port, proc, timeout_s, host="127.0.0.1" if host in ("0.0.0.0", "::") else host)
    return proc


@dataclass
class FlwrSubmitter:
    """Submits runs to one SuperLink with ``flwr run`` (what the gateway uses).

    ``$FLWR_HOME/config.toml`` (under ``home``) names the SuperLink as the
    connection ``varde``; ``insecure`` is for loopback only (tests, the demo);
    ``root_certificates`` is the CA that signed a TLS SuperLink's certificate.
    """

    home: Path
    superlink: str
    insecure: bool = False
    root_certificates: Path | None = None

    @property
    def env(self) -> dict[str, str]:
        """Environment of the ``flwr`` CLI."""
        return flower_env(self.home)

    def write_config(self) -> None:
        """Point ``flwr`` at the SuperLink (rewritten on every submit: cheap, never stale)."""
        flwr_home = Path(self.env["FLWR_HOME"])
        flwr_home.mkdir(parents=True, exist_ok=True)
        connection: dict[str, object] = {"address": self.superlink, "insecure": self.insecure}
        if self.root_certificates is not None and not self.insecure:
            connection["root-certificates"] = str(self.root_certificates)
        (flwr_home / "config.toml").write_text(
            tomli_w.dumps({"superlink": {"default": "varde", "varde": connection}})
        )

    def submit(self, app_dir: Path, run_config: Mapping[str, object], timeout_s: float = 60) -> int:
        """Submit the app with ``flwr run`` and return Flower's run id."""
        self.write_config()
        config_file = self.home / f"run-config-{time.monotonic_ns()}.toml"
        config_file.write_text(tomli_w.dumps(dict(run_config)))
        done = subprocess.run(
            [tool("flwr"), "run", str(app_dir), "varde", "--run-config", str(config_file)]
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
    """A SuperLink run from this process, and the ``flwr`` submitter pointed at it.

    ``varde gateway serve --with-superlink`` runs one beside the gateway: ``host``
    is the gateway's bind address; anything but loopback needs ``tls``. Tests and
    benchmarks start SuperNodes next to it with :mod:`launcher.flower`.
    """

    home: Path
    port: int = 0
    host: str = "127.0.0.1"
    tls: TLSFiles | None = None
    processes: Processes = field(default_factory=Processes)

    @property
    def env(self) -> dict[str, str]:
        """Environment of every process of this federation."""
        return flower_env(self.home)

    @property
    def address(self) -> str:
        """Where this machine reaches the SuperLink (``host:port``)."""
        local = is_loopback(self.host) or self.host in ("0.0.0.0", "::", "")
        host = "127.0.0.1" if local else self.host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def start_superlink(self, timeout_s: float = 30.0) -> None:
        """Start the SuperLink; ``flwr`` (see :meth:`submitter`) is pointed at it.

        Raises ValueError for plain text on a non-loopback ``host``.
        """
        self.port = self.port or free_port()
        start_superlink(
            self.processes,
            self.home,
            host=self.host,
            port=self.port,
            tls=self.tls,
            timeout_s=timeout_s,
        )
        self.submitter().write_config()

    def submitter(self) -> FlwrSubmitter:
        """A submitter for this federation's SuperLink (plain text only without TLS)."""
        return FlwrSubmitter(
            home=self.home,
            superlink=self.address,
            insecure=self.tls is None,
            root_certificates=self.tls.ca_certfile if self.tls is not None else None,
        )

    def submit(self, app_dir: Path, run_config: Mapping[str, object], timeout_s: float = 60) -> int:
        """Submit the app to this federation with ``flwr run``; Flower's run id."""
        return self.submitter().submit(app_dir, run_config, timeout_s)

    def stop(self) -> None:
        """Stop every process this federation started."""
        self.processes.stop()
