"""Training jobs seen from the researcher's side: results as pandas, a progress bar, job specs.

Training progress is drawn with ``rich.progress`` (already installed with
typer): a live bar in a terminal, and in Jupyter through rich's notebook
support (which uses ``ipywidgets`` when installed, and otherwise shows the bar
once the job ends). ``tqdm`` is not a dependency, so it is not used.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from varde.budget import Budget
from varde.study_fields import mentioned
from varde.training import TrainingSpec, TrainingStatus

FINAL_STATES = ("finished", "failed")
"""States after which a job changes no more."""


def _most(paid: list[Budget], measure: str) -> float:
    """The largest amount in ``measure`` among ``paid`` (0 when none is in it)."""
    return max((b.amount for b in paid if b.measure == measure), default=0.0)


class TrainingResult:
    """A training job's outcome (or its state so far) with pandas views."""

    def __init__(self, status: TrainingStatus) -> None:
        self.status = status

    @property
    def id(self) -> str:
        """The job id (``GET /v1/trainings/{id}``)."""
        return self.status.id

    @property
    def state(self) -> str:
        """``pending``, ``running``, ``finished`` or ``failed``."""
        return self.status.state

    @property
    def ok(self) -> bool:
        """True when the job finished all its rounds."""
        return self.status.state == "finished"

    @property
    def guarantee(self) -> str | None:
        """The coefficients' privacy guarantee per site, in words (None before round 1)."""
        return self.status.guarantee

    @property
    def coefficients(self) -> pd.Series:
        """The released model, by public design column (empty before round 1 ends)."""
        return pd.Series(self.status.coefficients or {}, name="coefficient", dtype=float)

    @property
    def sites(self) -> pd.DataFrame:
        """Per site: rounds it paid for, what they cost, why it stopped (if it did).

        ``spent`` is in ``measure``: ``epsilon``, or ``rho`` where the site's project
        accounts in zCDP (empty before the site's first round).
        """
        rows = [
            {
                "site": name,
                "rounds_completed": p.rounds_completed,
                "measure": p.measure or "",
                "spent": p.spent.amount if p.spent is not None else 0.0,
                "refusal": p.refusal or "",
            }
            for name, p in sorted(self.status.sites.items())
        ]
        columns = ["site", "rounds_completed", "measure", "spent", "refusal"]
        return pd.DataFrame(rows, columns=columns).set_index("site")

    @property
    def summary(self) -> pd.Series:
        """Job-level figures: rounds done, mean s/round, most epsilon (and rho) any site spent."""
        st = self.status
        per_round = st.seconds_per_round
        spent = [p.spent for p in st.sites.values() if p.spent is not None]
        return pd.Series(
            {
                "rounds_completed": float(st.round),
                "rounds": float(st.rounds),
                "seconds_per_round": sum(per_round) / len(per_round) if per_round else math.nan,
                "epsilon_spent_max": _most(spent, "epsilon"),
                "rho_spent_max": _most(spent, "rho"),
            },
            name="value",
            dtype=float,
        )

    @property
    def metrics(self) -> pd.DataFrame:
        """DP evaluation of the final model on held-out patients: ``network`` and each site.

        One row per scope (the pooled ``network`` row first), one column per
        metric (``auc``, ``accuracy``, ... or ``concordance``) and its 95% noise
        half-width ``<metric>_pm95`` (from the DP noise alone), plus what the
        evaluation cost: ``epsilon`` (the most any site of the scope paid) and,
        when some site's project accounts in zCDP, ``rho``; and, for a site that
        refused to evaluate, its ``refusal``. Empty until the job has evaluated.
        """
        found = self.status.metrics
        if found is None:
            return pd.DataFrame()
        scopes = ([("network", found.network)] if found.network is not None else []) + sorted(
            found.sites.items()
        )
        with_rho = any(b.measure == "rho" for _, m in scopes for b in m.charged.values())
        rows: dict[str, dict[str, Any]] = {}
        for scope, m in scopes:
            pm95 = {f"{k}_pm95": 1.96 * se for k, se in m.std_errors.items() if k in m.values}
            paid = list(m.charged.values())
            rows[scope] = {**m.values, **pm95, "epsilon": _most(paid, "epsilon")} | (
                {"rho": _most(paid, "rho")} if with_rho else {}
            )
        for site, why in sorted(found.refusals.items()):
            rows.setdefault(site, {})["refusal"] = why
        return pd.DataFrame.from_dict(rows, orient="index")

    def __repr__(self) -> str:
        return f"TrainingResult(id={self.id!r}, state={self.state!r}, round={self.status.round})"


class TrainingTimeout(TimeoutError):
    """The job was still going when the client stopped waiting; ``status`` is the last seen."""

    def __init__(self, status: TrainingStatus, waited_s: float) -> None:
        self.status = status
        super().__init__(
            f"training job {status.id} is still {status.state} (round {status.round} of "
            f"{status.rounds}) after {waited_s:.0f} s; ask again with "
            f"client.training({status.id!r})"
        )


def _site_line(status: TrainingStatus) -> str:
    """Spent per site, epsilon or rho as charged (a refusing site marked with its stop)."""
    parts = []
    for name, p in sorted(status.sites.items()):
        mark = " stopped" if p.refusal else ""
        unit = " rho" if p.measure == "rho" else ""
        spent = p.spent.amount if p.spent is not None else 0.0
        parts.append(f"{name} {spent:.3g}{unit}{mark}")
    return "eps " + ", ".join(parts) if parts else ""


class TrainingProgress:
    """A ``rich.progress`` bar for a training job: rounds, s/round, epsilon spent per site.

    Use as a context manager and call :meth:`update` with each status. Pass a
    ``console`` to draw elsewhere (the CLI draws on stderr; tests on a buffer).
    """

    def __init__(self, console: Console | None = None) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("rounds"),
            TextColumn("{task.fields[pace]}"),
            TextColumn("{task.fields[epsilon]}"),
            console=console,
        )
        self._task = self.progress.add_task("training", total=None, pace="", epsilon="")
        self.completed = 0
        self.total: int | None = None

    def update(self, status: TrainingStatus) -> None:
        """Show this status."""
        per_round = status.seconds_per_round
        pace = f"{sum(per_round) / len(per_round):.1f} s/round" if per_round else ""
        self.completed, self.total = status.round, status.rounds
        self.progress.update(
            self._task,
            description=f"{status.id[:8]} {status.state}",
            completed=status.round,
            total=status.rounds,
            pace=pace,
            epsilon=_site_line(status),
        )

    def __enter__(self) -> TrainingProgress:
        self.progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.progress.stop()


def training_spec(
    spec: TrainingSpec | Mapping[str, Any] | None,
    fields: Mapping[str, Any],
    declared: Callable[[], Mapping[str, Mapping[str, Any]]] | None = None,
) -> TrainingSpec:
    """A validated job from a spec, a dict, keyword fields, or a mix (keywords win).

    ``epsilon``, ``rho``, ``delta``, ``clip``, ``evaluation_epsilon`` and
    ``evaluation_rho`` may be given flat (in the dict or as keywords); they go
    into ``privacy``. A flat ``rho`` replaces an ``epsilon`` the spec carried (and
    its ``evaluation_epsilon``), and the other way round; both flat is an error.
    ``declared`` returns the study fields' declarations by name (what ``GET /v1/schema``
    lists), asked only when the job names a field the schema lacks.

    >>> training_spec(None, {"project": "p", "features": ["sex"], "rounds": 2,
    ...                      "epsilon": 1.5}).privacy.epsilon
    1.5
    >>> job = training_spec(None, {"project": "p", "features": ["sex"], "rounds": 2,
    ...                            "epsilon": 1.5})
    >>> training_spec(job, {"rho": 0.2}).privacy.budget_text()
    'rho 0.2'
    """
    if isinstance(spec, TrainingSpec):
        body: dict[str, Any] = spec.model_dump(mode="json", exclude_none=True)
    else:
        body = dict(spec or {})
    body.update(fields)
    privacy = dict(body.get("privacy") or {})
    flat = ("epsilon", "rho", "delta", "clip", "evaluation_epsilon", "evaluation_rho")
    for given, other in (("epsilon", "rho"), ("rho", "epsilon")):
        if given in body and other not in body:
            privacy.pop(other, None)
            privacy.pop(f"evaluation_{other}", None)
    for key in flat:
        if key in body:
            privacy[key] = body.pop(key)
    if privacy:
        body["privacy"] = privacy
    carried = {f.get("name") for f in body.get("study_fields") or [] if isinstance(f, Mapping)}
    wanted = mentioned(body) - carried
    if wanted and declared is not None:  # study fields: the declarations the sites publish
        found = declared()
        body["study_fields"] = [
            *(body.get("study_fields") or []),
            *(found[name] for name in sorted(wanted) if name in found),
        ]
    return TrainingSpec.model_validate(body)


class NoBar:
    """Stands in for a progress bar when none is drawn."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
