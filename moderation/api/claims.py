"""Takedown claims under /v1/claims: holders file and follow their own; reviewers decide the
ones waiting in the claims queue; the platform relays uploaders' counter-notices."""

from __future__ import annotations

import json
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from moderation import claims
from moderation.api.deps import get_session, get_settings_dep, require
from moderation.errors import InvalidInput
from moderation.keys import Principal
from moderation.settings import Settings
from moderation.storage import db

router = APIRouter(prefix="/v1/claims", tags=["claims"])
holders = require("rights_holder")
readers = require("rights_holder", "reviewer", "admin")
staff = require("reviewer", "admin")
platform = require("service", "admin")


def get_clock() -> claims.Clock:
    """The clock claims are timed by (tests override this dependency)."""
    return claims.system_clock


def owner_filter(principal: Principal) -> str | None:
    return principal.name if principal.role == "rights_holder" else None


async def json_body(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}") from None


def body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI for a route that parses its body itself (to name every missing field at once)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        # The notice models nest without cycles, so their $defs can be written in place.
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": inline(schema)}},
        }
    }


def _file(settings: Settings, owner: str, notice: claims.Notice, clock: claims.Clock) -> Any:
    outbox = claims.Outbox([])
    with db.session_scope(settings.resolved_database_url) as session:
        claim = claims.file_notice(session, settings, owner, notice, clock=clock, outbox=outbox)
        out = claims.claim_to_dict(claim)
    outbox.send()
    return out


@router.post(
    "",
    status_code=201,
    openapi_extra=body_schema(claims.Notice),
    responses={404: {"description": "unknown work or item"}, 422: {"description": "invalid"}},
)
async def file_claim(
    request: Request,
    settings: Settings = Depends(get_settings_dep),
    principal: Principal = Depends(holders),
    clock: claims.Clock = Depends(get_clock),
) -> dict[str, Any]:
    """File a takedown notice; acknowledged at once with its id and state (``taken_down``
    when verified automatically, else ``needs_review`` with a deadline). A 422 names every
    missing field under ``detail.missing``."""
    notice = claims.parse_model(claims.Notice, await json_body(request), "notice")
    result: dict[str, Any] = await run_in_threadpool(_file, settings, principal.name, notice, clock)
    return result


@router.get("")
def list_claims(
    state: str | None = Query(None, max_length=24),
    limit: int = Query(100, ge=1, le=1000),
    session: Session = Depends(get_session),
    principal: Principal = Depends(readers),
) -> list[dict[str, Any]]:
    """A holder's dashboard: its notices and the matches found at upload and by scans.
    Reviewers see every claim (``state=needs_review`` is the claims queue)."""
    claims.check_queue_grant(session, principal.key_id, principal.role, "claims")
    rows = claims.list_claims(session, owner_filter(principal), state=state, limit=limit)
    return [claims.claim_to_dict(c) for c in rows]


@router.get("/report")
def takedown_report(
    session: Session = Depends(get_session),
    principal: Principal = Depends(readers),
) -> dict[str, Any]:
    """Time from notice to takedown over the caller's notices (everyone's for staff)."""
    return claims.takedown_report(session, owner_filter(principal))


@router.get("/{claim_id}", responses={404: {"description": "no such claim, or not the caller's"}})
def get_claim(
    claim_id: str,
    session: Session = Depends(get_session),
    principal: Principal = Depends(readers),
) -> dict[str, Any]:
    claims.check_queue_grant(session, principal.key_id, principal.role, "claims")
    return claims.claim_to_dict(claims.get_claim(session, claim_id, owner_filter(principal)))


class ClaimDecision(BaseModel):
    model_config = ConfigDict(extra="forbid")
    decision: Literal["takedown", "reject"]
    reason: str = Field(min_length=1, max_length=2000)


def in_transaction(settings: Settings, act: Any) -> dict[str, Any]:
    outbox = claims.Outbox([])
    with db.session_scope(settings.resolved_database_url) as session:
        out: dict[str, Any] = act(session, outbox)
    outbox.send()
    return out


@router.post("/{claim_id}/decision", responses={404: {}, 409: {}})
async def decide_claim(
    claim_id: str,
    body: ClaimDecision,
    settings: Settings = Depends(get_settings_dep),
    principal: Principal = Depends(staff),
    clock: claims.Clock = Depends(get_clock),
) -> dict[str, Any]:
    """A reviewer's decision on a claim in the claims queue (reviewers need its grant)."""

    def act(session: Session, outbox: claims.Outbox) -> dict[str, Any]:
        claims.check_queue_grant(session, principal.key_id, principal.role, "claims")
        claim = claims.get_claim(session, claim_id, None)
        claims.decide_claim(
            session,
            settings,
            claim,
            body.decision,
            body.reason,
            actor=principal.name,
            now=clock(),
            outbox=outbox,
        )
        return claims.claim_to_dict(claim)

    result: dict[str, Any] = await run_in_threadpool(in_transaction, settings, act)
    return result


@router.post(
    "/{claim_id}/counter-notice",
    openapi_extra=body_schema(claims.CounterNotice),
    responses={404: {}, 409: {}, 422: {}},
)
async def counter_notice(
    claim_id: str,
    request: Request,
    settings: Settings = Depends(get_settings_dep),
    _: Principal = Depends(platform),
    clock: claims.Clock = Depends(get_clock),
) -> dict[str, Any]:
    """The uploader's counter-notice, relayed by the platform: the claimant is notified and
    the item comes back after the configured business days unless a court action is reported."""
    counter = claims.parse_model(claims.CounterNotice, await json_body(request), "counter-notice")

    def act(session: Session, outbox: claims.Outbox) -> dict[str, Any]:
        claim = claims.get_claim(session, claim_id, None)
        claims.counter_notify(session, settings, claim, counter, now=clock(), outbox=outbox)
        return claims.claim_to_dict(claim)

    result: dict[str, Any] = await run_in_threadpool(in_transaction, settings, act)
    return result


class CourtAction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    detail: str = Field(min_length=1, max_length=2000)


@router.post("/{claim_id}/court-action", responses={404: {}, 409: {}})
def court_action(
    claim_id: str,
    body: CourtAction,
    settings: Settings = Depends(get_settings_dep),
    principal: Principal = Depends(holders),
    clock: claims.Clock = Depends(get_clock),
) -> dict[str, Any]:
    """The claimant reports a court action against the uploader: the item stays down."""

    def act(session: Session, outbox: claims.Outbox) -> dict[str, Any]:
        claim = claims.get_claim(session, claim_id, principal.name)
        claims.report_court_action(session, claim, body.detail, now=clock())
        return claims.claim_to_dict(claim)

    # Committed before the answer (a yield dependency may commit after it is sent).
    return in_transaction(settings, act)
