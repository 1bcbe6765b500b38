"""Training jobs on the gateway: validate, submit to the SuperLink, report progress.

Why a service object and not module state: the gateway process holds one, built
from its settings (where the SuperLink is, a working directory for progress
files), and tests swap it for one with a fake submitter. Jobs are kept in
memory in this first slice: a gateway restart forgets them (the sites' ledgers,
which are the authority on what was spent, do not).

Progress comes from the file the ServerApp rewrites after every round
(:func:`gateway.training.serverapp.write_status`): the SuperLink runs the
ServerApp beside the gateway, so a local file is the simplest honest channel.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pydantic import ValidationError

from gateway.training.deployment import write_app
from gateway.training.validation import check_job
from varde.errors import NotFound
from varde.release import Manifest
from varde.training import TrainingSpec, TrainingStatus


class Submitter(Protocol):
    """Something that starts a Flower run (e.g. :class:`LocalFederation`, or ``flwr run``)."""

    def submit(self, app_dir: Path, run_config: Mapping[str, object], timeout_s: float = 60) -> int:
        """Submit the app with this run config; return Flower's run id."""
        ...


@dataclass
class _Job:
    id: str
    researcher: str
    spec: TrainingSpec
    sites: list[str]
    progress: Path
    run_id: int | None = None
    error: str | None = None


class TrainingService:
    """Validated training jobs of this gateway and their progress."""

    def __init__(
        self,
        submitter: Submitter,
        workdir: Path,
        *,
        round_timeout_s: float = 120.0,
        connect_timeout_s: float = 60.0,
    ) -> None:
        self._submitter = submitter
        self._workdir = workdir
        self._app = write_app(workdir / "app")
        self._round_timeout_s = round_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()

    def start(
        self, spec: TrainingSpec, *, researcher: str, manifests: Mapping[str, Manifest]
    ) -> TrainingStatus:
        """Check the job against every site's manifest, then submit it; refuse saying why."""
        sites = check_job(spec, manifests)
        job_id = uuid.uuid4().hex
        spec = spec.model_copy(update={"sites": sites})
        job = _Job(job_id, researcher, spec, sites, self._workdir / f"{job_id}.json")
        with self._lock:
            self._jobs[job_id] = job
        try:
            job.run_id = self._submitter.submit(
                self._app,
                {
                    "job": spec.model_dump_json(),
                    "job-id": job_id,
                    "researcher": researcher,
                    "progress-file": str(job.progress),
                    "min-sites": spec.min_sites,
                    "expected-sites": len(sites),
                    "round-timeout": self._round_timeout_s,
                    "connect-timeout": self._connect_timeout_s,
                },
            )
        except (OSError, RuntimeError, ValueError) as err:
            job.error = f"could not submit the run to the SuperLink: {err}"
        return self._status(job)

    def status(self, job_id: str, *, researcher: str) -> TrainingStatus:
        """The job's progress; another researcher's job is as unknown as a missing one."""
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None or job.researcher != researcher:
            raise NotFound(f"unknown training job {job_id!r}")
        return self._status(job)

    def _status(self, job: _Job) -> TrainingStatus:
        if job.error is not None:
            return TrainingStatus(
                id=job.id, state="failed", rounds=job.spec.rounds, detail=job.error
            )
        if job.progress.exists():
            try:
                return TrainingStatus.model_validate_json(job.progress.read_text())
            except (ValidationError, OSError):
                pass  # being replaced right now: report what was known before
        return TrainingStatus(id=job.id, state="pending", rounds=job.spec.rounds)
