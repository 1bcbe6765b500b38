"""Check a training job against every site's public manifest before anything starts.

Why before: a job that some site will refuse on its first message wastes every
other site's budget on a model that cannot be the one the researcher asked
for, so the gateway refuses early, naming each site and its reason. The node
still enforces its own policy and ledger on every round; this is the friendly
refusal, not the guarantee.

Per site: it must have sent a manifest (it is connected) and its public terms
must admit the job: :func:`varde.terms.check_training`, the very check each
node runs on its own policy (project, model, fields, the dearest round and the
evaluation under the per-query cap, budget left for the whole job, all in the
measure the site's project accounts in).
"""

from __future__ import annotations

from collections.abc import Mapping

from varde.errors import BudgetExhausted, NodeUnavailable, PolicyViolation, VardeError
from varde.release import Manifest
from varde.terms import check_training
from varde.training import TrainingSpec


def _site_problem(spec: TrainingSpec, site: str, manifest: Manifest | None) -> VardeError | None:
    if manifest is None:
        return NodeUnavailable(f"site {site!r} is not connected to the gateway")
    try:
        check_training(manifest, spec)
    except VardeError as err:
        return err
    return None


def check_job(spec: TrainingSpec, manifests: Mapping[str, Manifest]) -> list[str]:
    """The sites the job will run at; raise one error naming every site that would refuse.

    The error's class is the weightiest problem's: a policy refusal (403) before an
    exhausted budget (409) before an unreachable site (503); the message lists all.
    """
    sites = list(spec.sites) if spec.sites is not None else sorted(manifests)
    if not sites:
        raise NodeUnavailable("no site is connected to the gateway")
    problems = [
        problem
        for site in sites
        if (problem := _site_problem(spec, site, manifests.get(site))) is not None
    ]
    if problems:
        order = (PolicyViolation, BudgetExhausted, NodeUnavailable)
        kind = next(k for k in order if any(isinstance(p, k) for p in problems))
        raise kind("; ".join(p.message for p in problems))
    return sites
