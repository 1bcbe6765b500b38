"""Training jobs on the gateway: validate, submit to the SuperLink, store, report progress.

Why a service object and not module state: the gateway process holds one, built
from its settings (where the SuperLink is, a working directory for progress
files, the gateway's database), and tests swap it for one with a fake submitter.

Jobs are rows of the gateway's database (:class:`gateway.core.db.TrainingJob`):
who asked for what, at which sites, Flower's run id, and the last status the
gateway saw, so a gateway restart forgets nothing (the sites' ledgers, which
are the authority on what was spent, never depended on the gateway anyway).

Progress comes from the file the ServerApp rewrites after every round
(:func:`gateway.training.serverapp.write_status`): the SuperLink runs the
ServerApp beside the gateway, so a local file is the simplest honest channel.
Every read merges that file into the stored row, and a finished or failed
job's row is final.

After a restart. The ServerApp runs under the SuperLink, not inside the
gateway, so a job may well keep running while the gateway restarts. A job
this process did not submit and whose last status is not final is therefore
*checked*, never assumed dead or alive:

1. the SuperLink is asked (``flwr ls --run-id``, for a
   :class:`~gateway.training.deployment.FlwrSubmitter`; a submitter with a
   ``run_state(run_id)`` method is asked the same way). Pending, starting or
   running there: the job is reported as its progress file says. Finished
   there but the file never said so: ``failed``, "gateway restarted during the
   job" and Flower's own verdict.
2. If the SuperLink cannot be asked (unreachable, or the run unknown to it),
   the progress file's age decides: the ServerApp rewrites it at least once per
   ``max(round timeout, connect timeout)``, so a file older than that plus a
   minute of slack belongs to a ServerApp that is gone: ``failed``, "gateway
   restarted during the job", with how long it has been silent. A younger file
   is reported as it stands.

The same two checks apply to a job this process did submit once its progress
file has been silent for that long (its ServerApp crashed, or the SuperLink
lost the run): the detail then starts "the job's ServerApp stopped reporting".

The verdict ``failed`` is stored, so it is final: a ServerApp that somehow
resumed could not be trusted to have the history the job reports anyway.
What the sites spent stays in the status (``sites``), and their ledgers remain
the authority on it.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, ValidationError
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from gateway.core.db import TrainingJob, make_engine, make_sessionmaker
from gateway.training.deployment import FlwrSubmitter, write_app
from gateway.training.validation import check_job
from varde.envelope import utcnow
from varde.errors import NotFound
from varde.release import Manifest
from varde.training import JobState, TrainingSpec, TrainingStatus

RESTARTED = "gateway restarted during the job"
"""Start of the detail of a job found dead after a gateway restart."""

FINAL_STATES: frozenset[str] = frozenset({"finished", "failed"})

STALE_SLACK_S = 60.0
"""Added to the longest silence a live ServerApp can keep (see the module docstring)."""

PROBE_EVERY_S = 15.0
"""How long a SuperLink's "still running" answer is trusted before asking again."""


class Submitter(Protocol):
    """Something that starts a Flower run (e.g. :class:`LocalFederation`, or ``flwr run``)."""

    def submit(self, app_dir: Path, run_config: Mapping[str, object], timeout_s: float = 60) -> int:
        """Submit the app with this run config; return Flower's run id."""
        ...


class TrainingJobInfo(BaseModel):
    """One line of ``GET /v1/trainings``: what was asked, where, and how far it got."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    project: str
    model: str
    features: list[str]
    rounds: int
    epsilon: float
    """The job's epsilon per site (0 for a job stated in rho)."""
    sites: list[str]
    state: JobState
    round: int
    run_id: int | None
    created_at: dt.datetime
    updated_at: dt.datetime
    detail: str | None = None
    rho: float | None = None
    """The job's zCDP rho per site, for a job stated in rho."""


def parse_flwr_ls(stdout: str, run_id: int) -> str | None:
    r"""Flower's status (``running``, ``finished:failed``, ...) of ``run_id`` in ``flwr ls`` JSON.

    >>> parse_flwr_ls('Listing...\n{"success": true, "runs": [{"run-id": "7", '
    ...               '"status": "finished:completed"}]}', 7)
    'finished:completed'
    >>> parse_flwr_ls("error", 7) is None
    True
    """
    start = stdout.find("{")
    if start < 0:
        return None
    try:
        payload = json.loads(stdout[start:])
        for run in payload.get("runs", []):
            if int(run["run-id"]) == run_id:
                return str(run["status"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return None


def flwr_run_state(submitter: FlwrSubmitter, run_id: int, timeout_s: float = 20.0) -> str | None:
    """Ask the submitter's SuperLink about ``run_id`` (``flwr ls``); None if it cannot say."""
    submitter.write_config()
    flwr = str(Path(sys.executable).with_name("flwr"))
    try:
        done = subprocess.run(
            [flwr, "ls", "varde", "--run-id", str(run_id), "--format", "json"],
            env=submitter.env,
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return parse_flwr_ls(done.stdout.decode(errors="replace"), run_id)


def _aware(moment: dt.datetime) -> dt.datetime:
    """SQLite gives back naive datetimes; every stored one is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


class TrainingService:
    """Validated training jobs of this gateway, stored in its database, and their progress.

    Args:
        submitter: Starts Flower runs.
        workdir: The FAB and the progress files (``<job id>.json``).
        sessions: The gateway's database; None (tests, benchmarks) keeps the jobs
            in ``workdir/trainings.sqlite``.
        round_timeout_s: What the ServerApp waits for a round's replies.
        connect_timeout_s: What the ServerApp waits for SuperNodes before round 1.
    """

    def __init__(
        self,
        submitter: Submitter,
        workdir: Path,
        *,
        sessions: sessionmaker[Session] | None = None,
        round_timeout_s: float = 120.0,
        connect_timeout_s: float = 60.0,
    ) -> None:
        self._submitter = submitter
        self._workdir = workdir
        self._app = write_app(workdir / "app")
        self._own_engine: Engine | None = None
        if sessions is None:
            self._own_engine = make_engine(f"sqlite:///{(workdir / 'trainings.sqlite').resolve()}")
            sessions = make_sessionmaker(self._own_engine)
        self._sessions = sessions
        self._round_timeout_s = round_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self.stale_after_s = max(round_timeout_s, connect_timeout_s) + STALE_SLACK_S
        """Silence after which a job this process did not submit counts as gone."""
        self._live: set[str] = set()
        self._confirmed: dict[str, float] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        """Release the database this service opened itself (not the gateway's)."""
        if self._own_engine is not None:
            self._own_engine.dispose()

    # --- submission ---------------------------------------------------------------------------

    def start(
        self, spec: TrainingSpec, *, researcher: str, manifests: Mapping[str, Manifest]
    ) -> TrainingStatus:
        """Check the job against every site's manifest, store it, then submit it.

        A refused job is neither stored nor submitted. The row is committed
        before the submission, so a gateway that dies while ``flwr run`` runs
        still knows the job (and reports it failed on the next read).
        """
        sites = check_job(spec, manifests)
        job_id = uuid.uuid4().hex
        spec = spec.model_copy(update={"sites": sites})
        pending = TrainingStatus(id=job_id, state="pending", rounds=spec.rounds)
        with self._sessions.begin() as s:
            s.add(
                TrainingJob(
                    id=job_id,
                    researcher=researcher,
                    project=spec.project,
                    spec=spec.model_dump(mode="json"),
                    sites=sites,
                    state="pending",
                    status=pending.model_dump(mode="json"),
                )
            )
        with self._lock:
            self._live.add(job_id)
        try:
            run_id = self._submitter.submit(
                self._app,
                {
                    "job": spec.model_dump_json(),
                    "job-id": job_id,
                    "researcher": researcher,
                    "progress-file": str(self._progress_file(job_id)),
                    "min-sites": spec.min_sites,
                    "expected-sites": len(sites),
                    "round-timeout": self._round_timeout_s,
                    "connect-timeout": self._connect_timeout_s,
                },
            )
        except (OSError, RuntimeError, ValueError, subprocess.TimeoutExpired) as err:
            failed = pending.model_copy(
                update={
                    "state": "failed",
                    "detail": f"could not submit the run to the SuperLink: {err}",
                }
            )
            self._store(job_id, failed)
            return failed
        with self._sessions.begin() as s:
            row = s.get(TrainingJob, job_id)
            assert row is not None
            row.run_id = str(run_id)
            row.updated_at = utcnow()
        return self.status(job_id, researcher=researcher)

    # --- reading ------------------------------------------------------------------------------

    def status(self, job_id: str, *, researcher: str) -> TrainingStatus:
        """The job's progress; another researcher's job is as unknown as a missing one."""
        with self._sessions() as s:
            row = s.get(TrainingJob, job_id)
        if row is None or row.researcher != researcher:
            raise NotFound(f"unknown training job {job_id!r}")
        return self._refresh(row)

    def jobs(self, *, researcher: str, limit: int = 50) -> list[TrainingJobInfo]:
        """The researcher's jobs, newest first, each with its progress merged in."""
        stmt = (
            select(TrainingJob)
            .where(TrainingJob.researcher == researcher)
            .order_by(TrainingJob.created_at.desc(), TrainingJob.id)
            .limit(limit)
        )
        with self._sessions() as s:
            rows = list(s.scalars(stmt))
        out = []
        for row in rows:
            status = self._refresh(row)
            # The stored spec is read as data, not re-validated: a job stored by an
            # older gateway must still be listed after the spec model grows.
            spec: dict[str, Any] = row.spec
            privacy: dict[str, Any] = spec.get("privacy") or {}
            out.append(
                TrainingJobInfo(
                    id=row.id,
                    project=row.project,
                    model=str(spec.get("model", "logistic")),
                    features=[str(f) for f in spec.get("features", [])],
                    rounds=int(spec.get("rounds", status.rounds)),
                    epsilon=float(privacy.get("epsilon") or 0.0),
                    rho=float(privacy["rho"]) if privacy.get("rho") is not None else None,
                    sites=list(row.sites),
                    state=status.state,
                    round=status.round,
                    run_id=int(row.run_id) if row.run_id is not None else None,
                    created_at=_aware(row.created_at),
                    updated_at=_aware(row.updated_at),
                    detail=status.detail,
                )
            )
        return out

    def _progress_file(self, job_id: str) -> Path:
        return self._workdir / f"{job_id}.json"

    def _read_progress(self, job_id: str) -> tuple[TrainingStatus | None, float | None]:
        """What the ServerApp last wrote, and when (epoch seconds); None while there is none."""
        path = self._progress_file(job_id)
        try:
            return TrainingStatus.model_validate_json(path.read_text()), path.stat().st_mtime
        except (ValidationError, OSError):
            return None, None  # not written yet, or being replaced right now

    def _refresh(self, row: TrainingJob) -> TrainingStatus:
        """The stored status merged with the live progress; stored again if it changed."""
        spec_rounds = int(row.spec.get("rounds", 0))
        stored = (
            TrainingStatus.model_validate(row.status)
            if row.status is not None
            else TrainingStatus(id=row.id, state="pending", rounds=spec_rounds)
        )
        if row.state in FINAL_STATES:
            return stored
        live, written_at = self._read_progress(row.id)
        current = live if live is not None else stored
        last = written_at if written_at is not None else _aware(row.updated_at).timestamp()
        restarted = row.id not in self._live
        if current.state not in FINAL_STATES and (
            restarted or time.time() - last > self.stale_after_s
        ):
            verdict = self._gone_verdict(row, current, last, restarted=restarted)
            if verdict is not None:
                again, _ = self._read_progress(row.id)  # it may have ended meanwhile
                if again is not None and again.state in FINAL_STATES:
                    current = again
                else:
                    current = current.model_copy(update={"state": "failed", "detail": verdict})
        if current != stored:
            self._store(row.id, current)
        return current

    def _gone_verdict(
        self, row: TrainingJob, current: TrainingStatus, last: float, *, restarted: bool
    ) -> str | None:
        """None if the job's run may still be going; else why it is not (see the module doc).

        Asked for every job an earlier gateway process submitted, and for this
        process's own jobs once their ServerApp has been silent for longer than
        it can be while alive.
        """
        cause = RESTARTED if restarted else "the job's ServerApp stopped reporting"
        with self._lock:
            confirmed = self._confirmed.get(row.id)
        if confirmed is not None and time.monotonic() - confirmed < PROBE_EVERY_S:
            return None
        where = f"last report: round {current.round} of {current.rounds}"
        run_state = self._run_state(int(row.run_id)) if row.run_id is not None else None
        if run_state is not None:
            if not run_state.startswith("finished"):
                with self._lock:
                    self._confirmed[row.id] = time.monotonic()
                return None
            return f"{cause}; Flower reports the run {run_state} ({where})"
        silent = time.time() - last
        if silent <= self.stale_after_s:
            return None
        return (
            f"{cause}; the SuperLink could not confirm the run and its ServerApp has "
            f"reported nothing for {silent:.0f} s ({where})"
        )

    def _run_state(self, run_id: int) -> str | None:
        """Flower's status of the run, if the SuperLink can be asked."""
        if isinstance(self._submitter, FlwrSubmitter):
            return flwr_run_state(self._submitter, run_id)
        probe: Callable[[int], str | None] | None = getattr(self._submitter, "run_state", None)
        return probe(run_id) if callable(probe) else None

    def _store(self, job_id: str, status: TrainingStatus) -> None:
        body: dict[str, Any] = status.model_dump(mode="json")
        with self._sessions.begin() as s:
            row = s.get(TrainingJob, job_id)
            if row is None or row.state in FINAL_STATES:
                return  # final is final (another reader may have stored it first)
            row.state = status.state
            row.status = body
            row.updated_at = utcnow()
