"""Check a training job against every site's public manifest before anything starts.

Why before: a job that some site will refuse on its first message wastes every
other site's budget on a model that cannot be the one the researcher asked
for, so the gateway refuses early, naming each site and its reason. The node
still enforces its own policy and ledger on every round; this is the friendly
refusal, not the guarantee.

Per site: it must have sent a manifest (it is connected), serve the project,
allow the job's model for that project (``training`` in its policy), expose
every field the job reads, accept the first (dearest) round and the
evaluation under its per-query cap, and have budget left for the whole job.
Caps and budget are read in the measure the site's project accounts in
(``ProjectTerms.accounting``): epsilon, or rho for ``zcdp`` (``max_rho_per_query``,
``rho_remaining``), since that is what the site will charge whatever measure
the researcher stated the job in. Costs come from
:func:`varde.training.round_costs` with that measure, the same maths the sites
charge with, and refusals name the site and the measure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from varde.errors import BudgetExhausted, NodeUnavailable, PolicyViolation, VardeError
from varde.release import Manifest
from varde.training import TrainingSpec, round_costs


def _site_problem(spec: TrainingSpec, site: str, manifest: Manifest | None) -> VardeError | None:
    if manifest is None:
        return NodeUnavailable(f"site {site!r} is not connected to the gateway")
    terms = manifest.projects.get(spec.project)
    if terms is None:
        return PolicyViolation(f"site {site!r} does not serve project {spec.project!r}")
    if spec.model not in terms.training:
        allowed = ", ".join(terms.training) or "none"
        return PolicyViolation(
            f"site {site!r} does not allow training {spec.model!r} models for project "
            f"{spec.project!r} (allowed there: {allowed})"
        )
    hidden = sorted(spec.fields_read() - set(manifest.fields))
    if hidden:
        return PolicyViolation(f"site {site!r} does not expose field(s) {', '.join(hidden)}")
    zcdp = terms.accounting == "zcdp"
    measure: Literal["epsilon", "rho"] = "rho" if zcdp else "epsilon"
    costs = round_costs(spec, measure)
    cap = (terms.max_rho_per_query or 0.0) if zcdp else terms.max_epsilon_per_query
    left = terms.rho_remaining if zcdp else terms.epsilon_remaining
    if costs[0] > cap:
        return PolicyViolation(
            f"site {site!r}: round 1 costs {measure} {costs[0]:.4g}, above the per-query cap "
            f"{cap} of project {spec.project!r} (use more rounds or a smaller "
            f"{spec.privacy.measure})"
        )
    evaluation = costs[-1] if spec.privacy.evaluation_budget() > 0 else 0.0
    if evaluation > cap:
        return PolicyViolation(
            f"site {site!r}: the final evaluation costs {measure} {evaluation:.4g}, above the "
            f"per-query cap {cap} of project {spec.project!r} (set a "
            f"smaller privacy.evaluation_{spec.privacy.measure})"
        )
    # Each charge is rounded up to 1e-9 by the site's ledger.
    if sum(costs) > left + 1e-12:
        return BudgetExhausted(
            f"site {site!r} has {measure} {left:.4g} left for project "
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
