"""The reaper stops a network and removes its directory once its starter is gone, however."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from launcher.reaper import alive


def test_a_killed_starter_leaves_no_process_and_no_directory(tmp_path: Path) -> None:
    workdir = tmp_path / "net"
    workdir.mkdir()
    (workdir / "ledger.sqlite").write_text("x")
    # a "network" process in a session of its own, as LocalNetwork starts them
    server = subprocess.Popen(["sleep", "300"], start_new_session=True)
    # the starter (a kernel) starts the reaper, then dies without running any hook
    starter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from launcher.reaper import watch; "
            f"watch(Path({str(workdir)!r}), [{server.pid}]); time.sleep(300)",
        ]
    )
    try:
        time.sleep(1.0)  # the reaper is up and watching
        assert server.poll() is None and workdir.exists()
        starter.kill()
        starter.wait(10)
        deadline = time.monotonic() + 30
        while (server.poll() is None or workdir.exists()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert server.poll() is not None, "the network outlived its starter"
        assert not workdir.exists()
        assert not alive(starter.pid)
    finally:
        for proc in (server, starter):
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
