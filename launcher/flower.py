"""A SuperLink and its SuperNodes on one machine, for tests, benchmarks and the demo.

Why here: the SuperLink is the gateway's (:class:`gateway.training.deployment.LocalFederation`)
and a SuperNode is a node's (:func:`nodes.training.supernode.start_supernode`); only the
launcher may start both sides together.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping

from gateway.training.deployment import LocalFederation
from nodes.training.supernode import start_supernode


def start_local_supernode(
    federation: LocalFederation, name: str, node_config: Mapping[str, str], timeout_s: float = 30.0
) -> subprocess.Popen[bytes]:
    """Start one SuperNode connecting to ``federation``'s SuperLink, in its process group.

    ``node_config`` is what its ClientApp reads (site, policy, data, state dir); it
    is stopped with :meth:`LocalFederation.stop`.
    """
    tls = federation.tls
    return start_supernode(
        federation.processes,
        federation.home,
        superlink=federation.address,
        node_config=node_config,
        insecure=tls is None,
        root_certificates=tls.ca_certfile if tls is not None else None,
        log=federation.home / f"supernode-{name}.log",
        timeout_s=timeout_s,
    )
