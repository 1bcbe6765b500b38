"""Stop a network and remove its directory once the process that started it is gone.

Why a process of its own: a notebook's demo network (:mod:`launcher.notebook`) is
stopped by the kernel's ``atexit`` hook, but a Jupyter kernel being shut down is
killed a few seconds later, and a kernel that crashes or is killed runs no hook at
all. The gateway and nodes run in their own sessions, so nothing else would stop
them. This watcher, started beside the network in a session of its own, waits for
the starter to exit (however it exits), then sends each process group SIGTERM
(SIGKILL after a grace period) and removes the network's directory.

Run as ``python -m launcher.reaper PARENT_PID WORKDIR PGID [PGID ...]``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

POLL_S = 0.5
GRACE_S = 15.0


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def reap(parent: int, workdir: Path, groups: list[int]) -> None:
    """Wait for ``parent`` to exit; then stop ``groups`` and remove ``workdir``."""
    while alive(parent):
        time.sleep(POLL_S)
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    while any(_group_alive(g) for g in groups) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    shutil.rmtree(workdir, ignore_errors=True)


def watch(workdir: Path, groups: list[int]) -> subprocess.Popen[bytes]:
    """Start the watcher for this process, ``workdir`` and the process ``groups``."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "launcher.reaper",
            str(os.getpid()),
            str(workdir),
            *map(str, groups),
        ],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


if __name__ == "__main__":
    reap(int(sys.argv[1]), Path(sys.argv[2]), [int(g) for g in sys.argv[3:]])
