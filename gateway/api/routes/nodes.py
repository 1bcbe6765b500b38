"""The node-facing side: enrollment, long-poll for work, signed releases.

Every call after enrollment is a signed envelope verified against the key the
site pinned at enrollment; anything forged, replayed, expired or misaddressed
is refused with 400; a site the operator revoked is refused with 403 (audited:
it is authenticated). Nothing is written to the gateway's database before a
caller is authenticated (a valid enrollment token, or a valid signature of an
enrolled site), so an anonymous caller cannot grow it: refusals before that
point are logged, and only events of authenticated callers are audited.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool

from gateway.admin import SITE_PATTERN, node_info
from gateway.api.deps import State
from gateway.api.errors import responses
from gateway.api.examples import ENROLL_EXAMPLES
from gateway.core.db import EnrollmentToken, GatewayAudit, Node
from gateway.core.security import token_hash
from gateway.queries import keep_evidence
from gateway.state import GATEWAY_ID, GatewayState
from varde.crypto import load_public_key
from varde.envelope import Payload, SignedEnvelope, open_envelope, peek, utcnow
from varde.errors import AuthenticationFailed, EnvelopeRejected, Forbidden, InvalidQuery
from varde.release import Manifest, SiteRelease

router = APIRouter(prefix="/v1/nodes", tags=["nodes"])
log = logging.getLogger("varde.gateway")


class EnrollRequest(BaseModel):
    """A new site presenting its one-time token and its public key."""

    token: str = Field(min_length=8, max_length=200)
    site: Annotated[str, Field(pattern=SITE_PATTERN)]
    public_key: str


class EnrollResponse(BaseModel):
    """The gateway key the site must pin."""

    site: str
    gateway_public_key: str


class PollBody(BaseModel):
    """What a node says when it asks for work."""

    wait: float = Field(default=20.0, ge=0, le=60)
    manifest: Manifest
    releases: list[SignedEnvelope] = Field(
        default=[], description="Signed releases of work answered since the last poll."
    )
    node_version: str = Field(default="", max_length=40, description="The node's Varde version.")
    node_state: str = Field(
        default="",
        max_length=40,
        description="What the node says it does: serving, deny-all (its policy serves no project).",
    )


class WhoAmI(BaseModel):
    """The gateway's view of a signed caller (``varde node doctor`` checks its key with it)."""

    site: str
    key_fingerprint: str
    enrolled_at: dt.datetime
    server_time: dt.datetime = Field(description="The gateway's clock (to measure clock skew).")


class PollResponse(BaseModel):
    """Work for the polling site: signed work items (empty when the wait ran out)."""

    work: list[SignedEnvelope]


class ReleaseAck(BaseModel):
    """A release was verified; ``delivered``: a query was still waiting for it."""

    accepted: bool
    delivered: bool


def _audit(state: GatewayState, kind: str, site: str, detail: str) -> None:
    with state.sessions() as s:
        s.add(GatewayAudit(kind=kind, site=site, detail=detail))
        s.commit()


PRESENCE_EVERY_S = 10.0
"""Write a node's last-seen time at most this often (a poll is much more frequent under load)."""

_presence: dict[str, tuple[float, str, str]] = {}
"""Per site: when this process last wrote its presence, and the version and state written."""


def _check_admitted(state: GatewayState, site: str, kind: str) -> None:
    """Refuse (403, audited) an authenticated envelope of a revoked site.

    Read from the database on every envelope, not cached: ``varde admin
    revoke`` runs in another process (and replicas share the database).
    """
    with state.sessions() as s:
        node = s.get(Node, site)
        revoked = node.revoked_at if node is not None else None
        if revoked is None:
            return
        s.add(GatewayAudit(kind="revoked_refused", site=site, detail=f"{kind} refused"))
        s.commit()
    log.warning("%s of revoked site %r refused", kind, site)
    raise Forbidden(
        f"site {site!r} was revoked by the network operator on {revoked:%Y-%m-%d %H:%M} UTC: "
        "ask them to re-admit it with a new enrollment token, then enroll again "
        "(varde node init, or varde node run --enroll-token)"
    )


def _note_presence(state: GatewayState, site: str, version: str, node_state: str) -> None:
    """Record when ``site`` was last seen, its version and state (throttled per process)."""
    now = time.monotonic()
    last = _presence.get(site)
    if last is not None and now - last[0] < PRESENCE_EVERY_S and last[1:] == (version, node_state):
        return
    _presence[site] = (now, version, node_state)
    with state.sessions() as s:
        node = s.get(Node, site)
        if node is None:
            return
        node.last_seen = utcnow()
        node.version = version or None
        node.state = node_state or None
        s.commit()


def _enroll(state: GatewayState, req: EnrollRequest) -> EnrollResponse:
    try:
        load_public_key(req.public_key)
    except ValueError as err:
        raise InvalidQuery(f"public_key: {err}") from err
    with state.sessions() as s:
        tok = s.get(EnrollmentToken, token_hash(req.token))
        if tok is None or tok.used_at is not None:
            log.warning("enrollment of %r refused: unknown or used token", req.site)
            raise AuthenticationFailed("unknown or already used enrollment token")
        expires = tok.expires_at if tok.expires_at.tzinfo else tok.expires_at.replace(tzinfo=dt.UTC)
        if expires <= utcnow():
            raise AuthenticationFailed("enrollment token expired")
        if tok.site != req.site:
            raise AuthenticationFailed(f"this token enrolls site {tok.site!r}, not {req.site!r}")
        tok.used_at = utcnow()
        node = s.get(Node, req.site)
        if node is None:
            s.add(Node(site=req.site, public_key=req.public_key))
        else:  # a new key (rotation), or re-admission after a revocation
            node.public_key = req.public_key
            node.revoked_at = None
        s.commit()
    _presence.pop(req.site, None)
    state.pin_node_key(req.site, req.public_key)
    _audit(state, "enrolled", req.site, req.public_key)
    return EnrollResponse(site=req.site, gateway_public_key=state.public_key)


@router.post("/enroll", response_model=EnrollResponse, responses=responses(401, 422))
async def enroll(
    req: Annotated[EnrollRequest, Body(openapi_examples=ENROLL_EXAMPLES)], state: State
) -> EnrollResponse:
    """Pin a site's key with a one-time token; return the gateway key for the site to pin."""
    return await run_in_threadpool(_enroll, state, req)


def _open(state: GatewayState, envelope: SignedEnvelope, kind: str) -> Payload:
    claimed = peek(envelope).header.sender
    key = state.node_key(claimed)
    if key is None:
        log.warning("%s envelope from unknown sender %r refused", kind, claimed[:60])
        raise EnvelopeRejected("unknown_sender", f"no enrolled site {claimed!r}")
    try:
        payload = open_envelope(
            envelope,
            sender_key=key,
            recipient=GATEWAY_ID,
            kinds=(kind,),  # type: ignore[arg-type]
            seen_nonce=state.dispatcher.seen_nonce,  # shared by replicas on PostgreSQL
        )
    except EnvelopeRejected as err:  # not authenticated: logged, not written
        log.warning("%s envelope claiming %r refused: %s", kind, claimed[:60], err.message)
        raise
    _check_admitted(state, claimed, kind)
    return payload


_WORK = TypeAdapter(dict[str, list[SignedEnvelope]])


@router.post("/poll", response_model=PollResponse, responses=responses(400, 403, 422))
async def poll(envelope: SignedEnvelope, state: State, request: Request) -> Response:
    """Long-poll: return signed work for the calling site as soon as there is any."""
    payload = await run_in_threadpool(_open, state, envelope, "poll")
    try:
        body = PollBody.model_validate(payload.body)
    except ValidationError as err:
        raise InvalidQuery(f"poll body: {err.errors()[0]['msg']}") from err
    site = payload.header.sender
    if body.manifest.site != site:
        raise EnvelopeRejected("misaddressed", "manifest names another site")
    await run_in_threadpool(_note_presence, state, site, body.node_version, body.node_state)
    for release_env in body.releases:
        try:
            await _accept_release(state, release_env)
        except (EnvelopeRejected, InvalidQuery) as err:
            log.warning("dropped a release piggybacked by %s: %s", site, err.message)
    wait = min(body.wait, state.settings.poll_wait_max_s)
    batch = await state.dispatcher.next_batch(site, wait, body.manifest, request.is_disconnected)
    return Response(_WORK.dump_json({"work": batch}), media_type="application/json")


def _whoami(state: GatewayState, envelope: SignedEnvelope) -> WhoAmI:
    payload = _open(state, envelope, "hello")
    with state.sessions() as s:
        node = s.get(Node, payload.header.sender)
        if node is None:  # enrolled a moment ago, gone now: as if never enrolled
            raise EnvelopeRejected("unknown_sender", f"no enrolled site {payload.header.sender!r}")
        info = node_info(node)
    return WhoAmI(
        site=info.site,
        key_fingerprint=info.key_fingerprint,
        enrolled_at=info.enrolled_at,
        server_time=utcnow(),
    )


@router.post("/whoami", response_model=WhoAmI, responses=responses(400, 403, 422))
async def whoami(envelope: SignedEnvelope, state: State) -> WhoAmI:
    """Check a node's key: a signed ``hello`` answered with what the gateway pinned for it.

    ``varde node doctor`` uses it (and ``server_time`` for clock skew); it
    hands out no work, so a doctor run beside the running node takes nothing
    from it.
    """
    return await run_in_threadpool(_whoami, state, envelope)


@router.post("/releases", response_model=ReleaseAck, responses=responses(400, 403, 422))
async def post_release(envelope: SignedEnvelope, state: State) -> dict[str, Any]:
    """Accept a site's signed release for a query that is waiting for it."""
    return await _accept_release(state, envelope)


async def _accept_release(state: GatewayState, envelope: SignedEnvelope) -> dict[str, Any]:
    """Verify a signed release and hand it to the query waiting for it (or keep it as evidence).

    Releases arrive on their own (``POST /v1/nodes/releases``) or piggybacked on
    the node's next poll, which saves one request per query per site.
    """
    payload = await run_in_threadpool(_open, state, envelope, "release")
    try:
        release = SiteRelease.model_validate(payload.body)
    except ValidationError as err:
        raise InvalidQuery(f"release body: {err.errors()[0]['msg']}") from err
    if release.site != payload.header.sender:
        await run_in_threadpool(
            _audit, state, "envelope_rejected", payload.header.sender, "site mismatch"
        )
        raise EnvelopeRejected("misaddressed", "release names another site than its signer")
    delivered = await state.dispatcher.deliver(release, envelope)
    log.info(  # under the researcher's request id the node returned, not the poll's own
        "release of %s from %s: %s (%s)",
        release.query_id,
        release.site,
        release.status,
        "delivered" if delivered else "no query waits: kept as evidence",
        extra={"request_id": release.request_id, "query_id": release.query_id},
    )
    if not delivered:  # late or unsolicited: keep it as evidence on its own
        await run_in_threadpool(keep_evidence, state, release, envelope)
    if release.project:
        state.dispatcher.note_budget(release.site, release.project, release.budget_remaining)
    return {"accepted": True, "delivered": delivered}
