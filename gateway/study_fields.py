"""Study fields at the gateway: complete a researcher's query with what the sites declare.

A researcher names a study field (``"field": "trial_arm"``) as they name a schema field.
Only the sites know what it is: each publishes the declarations of the study fields it
exposes in its manifest (per project). Before a query body is validated, a
request-scoped dependency (:func:`gateway.api.routes.queries.study_fields_from_sites`)
sets :func:`published` as the resolver :func:`varde.study_fields.complete` adds those
declarations with,
so the query is checked against them here and carries them to every site, each of which
checks them against its own policy. A name no site declares stays unknown (a 422 naming
it); sites that declare one name differently make the query ambiguous (a 422 naming the
sites). A site that does not expose a field the query reads is refused by name, at that
site only (:func:`varde.terms.check_query`).
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.state import GatewayState
from varde.release import Manifest
from varde.study_fields import StudyField, merge_declarations


def published(
    manifests: Mapping[str, Manifest | None], project: str, names: set[str]
) -> list[StudyField]:
    """The sites' declarations of ``names`` for ``project`` (one per name; see the module)."""
    per_site: dict[str, list[StudyField]] = {}
    for site, manifest in manifests.items():
        terms = manifest.projects.get(project) if manifest is not None else None
        if terms is not None and terms.study_fields:
            per_site[site] = terms.study_fields
    return merge_declarations(project, names, per_site)


def manifests_of(state: GatewayState) -> dict[str, Manifest | None]:
    """Every connected site's last manifest."""
    return {site: state.dispatcher.manifest(site) for site in state.dispatcher.sites()}
