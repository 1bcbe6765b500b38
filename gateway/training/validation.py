"""Check a training job against every site's public manifest before anything starts.

Why before: a job that some site will refuse on its first message wastes every
other site's budget on a model that cannot be the one the researcher asked
for, so the gateway refuses early, naming each site and its reason. The node
still enforces its own policy and ledger on every round; this is the friendly
refusal, not the guarantee.

Per site: it must have sent a manifest (it is connected), serve the project,
expose every field the job reads, accept the first (dearest) round under its
per-query cap, and have epsilon left for the whole job. Round costs come from
:func:`varde.training.round_costs`, the same maths the sites charge with.
"""

from __future__ import annotations

from collections.abc import Mapping

from varde.errors import BudgetExhausted, NodeUnavailable, PolicyViolation, VardeError
from varde.release import Manifest
from varde.training import TrainingSpec, round_costs


def _site_problem(spec: TrainingSpec, site: str, manifest: Manifest | None) -> VardeError | None:
    if manifest is None:
        return NodeUnavailable(f"site {site!r} is not connected to the gateway")
    terms = manifest.projects.get(spec.project)
    if terms is None:
        return PolicyViolation(f"site {site!r} does not serve project {spec.project!r}")
    hidden = sorted(spec.fields_read() - set(manifest.fields))
    if hidden:
        return PolicyViolation(f"site {site!r} does not expose field(s) {', '.join(hidden)}")
    costs = round_costs(spec)
    if costs[0] > terms.max_epsilon_per_query:
        return PolicyViolation(
            f"site {site!r}: round 1 costs epsilon {costs[0]:.4g}, above the per-query cap "
            f"{terms.max_epsilon_per_query} of project {spec.project!r} (use more rounds or "
            "a smaller epsilon)"
        )
    if sum(costs) > terms.epsilon_remaining:
        return BudgetExhausted(
            f"site {site!r} has epsilon {terms.epsilon_remaining:.4g} left for project "
            f"{spec.project!r}, the job needs {sum(costs):.4g}"
        )
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
