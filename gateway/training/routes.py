"""``POST /v1/trainings``, ``GET /v1/trainings[/{id}]``: federated training jobs.

Registered in :mod:`gateway.app` with ``app.include_router(routes.router)``;
the :class:`~gateway.training.service.TrainingService` is taken from
``app.state.varde_training`` (absent: training is not configured, 503). The
researcher is authenticated first (each route lists that dependency first), so
an anonymous caller gets 401 whatever the gateway's configuration.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from gateway.api.deps import CurrentResearcher, State
from gateway.api.errors import responses
from gateway.api.examples import TRAINING_EXAMPLES
from gateway.study_fields import published
from gateway.training.service import TrainingJobInfo, TrainingService
from varde.errors import Forbidden, NodeUnavailable
from varde.release import Manifest
from varde.study_fields import resolve_with
from varde.training import TrainingSpec, TrainingStatus

router = APIRouter(prefix="/v1/trainings", tags=["trainings"])


def get_training_service(request: Request) -> TrainingService:
    """The gateway's training service, or 503 when this gateway has none."""
    service = getattr(request.app.state, "varde_training", None)
    if not isinstance(service, TrainingService):
        raise NodeUnavailable("federated training is not configured on this gateway")
    return service


def site_manifests(state: State) -> dict[str, Manifest]:
    """The last manifest of every site the gateway has heard from."""
    dispatcher = state.dispatcher
    return {s: m for s in dispatcher.sites() if (m := dispatcher.manifest(s)) is not None}


Trainings = Annotated[TrainingService, Depends(get_training_service)]
Manifests = Annotated[dict[str, Manifest], Depends(site_manifests)]


async def study_fields_of_sites(manifests: Manifests) -> None:
    """Let the job body be completed with the study fields the sites declare.

    Async so FastAPI awaits it in the request's own task, before it validates the body
    (:func:`varde.study_fields.complete`); see :mod:`gateway.study_fields`.
    """
    resolve_with(lambda project, names: published(manifests, project, names))


@router.post(
    "",
    dependencies=[Depends(study_fields_of_sites)],
    status_code=202,
    response_model=TrainingStatus,
    responses=responses(401, 403, 409, 422, 503),
)
async def post_training(
    researcher: CurrentResearcher,
    spec: Annotated[TrainingSpec, Body(openapi_examples=TRAINING_EXAMPLES)],
    service: Trainings,
    manifests: Manifests,
) -> TrainingStatus:
    """Validate a training job against every site's policy, then start it.

    Nothing starts, and nothing is charged anywhere, if any site would refuse.
    """
    if spec.project not in researcher.projects:
        raise Forbidden(
            f"researcher {researcher.name!r} is not a member of project {spec.project!r}"
        )
    return await run_in_threadpool(
        service.start, spec, researcher=researcher.name, manifests=manifests
    )


@router.get("", response_model=list[TrainingJobInfo], responses=responses(401, 422, 503))
async def list_trainings(
    researcher: CurrentResearcher,
    service: Trainings,
    limit: Annotated[int, Query(ge=1, le=500, description="At most this many jobs.")] = 50,
) -> list[TrainingJobInfo]:
    """Your training jobs, newest first, each with its state as of now."""
    return await run_in_threadpool(service.jobs, researcher=researcher.name, limit=limit)


@router.get("/{job_id}", response_model=TrainingStatus, responses=responses(401, 404, 503))
async def get_training(
    researcher: CurrentResearcher, job_id: str, service: Trainings
) -> TrainingStatus:
    """Progress of one of your jobs: round, epsilon or rho spent and refusals per site, model."""
    return await run_in_threadpool(service.status, job_id, researcher=researcher.name)
