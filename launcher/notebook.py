"""A notebook's network: the gateway named in the environment, or a demo network of its own.

The notebooks in ``notebooks/`` open with :func:`connect` and end with
:meth:`NotebookNetwork.close`. With ``VARDE_GATEWAY`` and ``VARDE_TOKEN`` set
(``./dev demo`` prints both; the test suite sets them for its shared network)
the notebook talks to that gateway and starts nothing. With neither set it
starts what ``varde demo`` starts (:class:`~launcher.network.LocalNetwork`: a
gateway and three nodes on 127.0.0.1, each node on a copy of its policy with the
demo's own project added) in a temporary directory, and :meth:`close` stops it
and removes the directory. One of the two set without the other is an error
naming the missing one, never a silent fallback to a network of our own.

Why in ``launcher``: starting a network imports both sides, which only this
package may do; the notebooks' questions themselves use only ``varde_client``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from launcher.demo import DEMO_PROJECT, SITES, USER_PROJECT
from launcher.network import LocalNetwork
from launcher.reaper import watch
from varde_client import VardeClient

GATEWAY_VAR = "VARDE_GATEWAY"
TOKEN_VAR = "VARDE_TOKEN"


@dataclass(repr=False)
class NotebookNetwork:
    """The client a notebook asks with, and the network it started (None: it started none).

    Its repr is :meth:`describe`, so a notebook cell ending in it says where it is connected.
    """

    client: VardeClient
    network: LocalNetwork | None = None
    workdir: Path | None = None
    reaper: subprocess.Popen[bytes] | None = None
    """Stops the network and removes ``workdir`` if this kernel exits without :meth:`close`."""

    @property
    def started_here(self) -> bool:
        """True when this notebook started the network (and :meth:`close` stops it)."""
        return self.network is not None

    def describe(self) -> str:
        """One line for the notebook: which gateway, and whether it is ours to stop."""
        if self.network is None:
            return f"Connected to the running gateway at {self.client.url}."
        return (
            f"Started a demo network at {self.client.url} (gateway and nodes "
            f"{', '.join(self.network.sites)}; stopped by close())."
        )

    def __repr__(self) -> str:
        return self.describe()

    def close(self) -> None:
        """Close the client; stop the network and remove its directory if we started it.

        Safe to call twice. It is also registered with :mod:`atexit`, so a kernel
        shut down before the last cell still stops its network.
        """
        self.client.close()
        if self.network is not None:
            self.network.terminate()  # all at once: see LocalNetwork.terminate
            self.network = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
        if self.reaper is not None:  # nothing left for it to do
            self.reaper.kill()
            self.reaper.wait(5)
            self.reaper = None


def gateway_from_env(env: Mapping[str, str]) -> tuple[str, str] | None:
    """``(url, token)`` from ``VARDE_GATEWAY`` and ``VARDE_TOKEN``, or None when neither is set.

    >>> gateway_from_env({})
    >>> gateway_from_env({"VARDE_GATEWAY": "http://127.0.0.1:8700", "VARDE_TOKEN": "vr_x"})
    ('http://127.0.0.1:8700', 'vr_x')
    >>> gateway_from_env({"VARDE_GATEWAY": "http://127.0.0.1:8700"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: VARDE_GATEWAY is set but VARDE_TOKEN is not: set both ... or neither ...
    """
    url, token = env.get(GATEWAY_VAR, ""), env.get(TOKEN_VAR, "")
    if not url and not token:
        return None
    if not (url and token):
        have, missing = (GATEWAY_VAR, TOKEN_VAR) if url else (TOKEN_VAR, GATEWAY_VAR)
        raise ValueError(
            f"{have} is set but {missing} is not: set both (./dev demo prints them) or neither "
            "(the notebook starts its own network)"
        )
    return url, token


def connect(
    *,
    training: bool = False,
    rows: int = 50_000,
    seed: int = 0,
    env: Mapping[str, str] | None = None,
) -> NotebookNetwork:
    """The gateway in ``env`` (default ``os.environ``), or a demo network started here.

    ``training`` starts a Flower SuperLink and SuperNodes with our own network
    (``./dev demo --train`` for a running one); ``rows`` and ``seed`` size the
    synthetic registries of our own network (the demo's defaults).
    """
    found = gateway_from_env(os.environ if env is None else env)
    if found is not None:
        return NotebookNetwork(client=VardeClient(*found, timeout=120))
    workdir = Path(tempfile.mkdtemp(prefix="varde-notebook-"))
    network = LocalNetwork(
        workdir=workdir,
        sites=SITES,
        rows=rows,
        seed=seed,
        training=training,
        extra_projects={DEMO_PROJECT: USER_PROJECT},
    )
    try:
        network.start()
    except BaseException:
        network.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    opened = NotebookNetwork(
        client=VardeClient(network.url, network.token, timeout=120),
        network=network,
        workdir=workdir,
        reaper=watch(workdir, network.process_groups()),  # if the kernel dies before close()
    )
    atexit.register(opened.close)
    return opened
