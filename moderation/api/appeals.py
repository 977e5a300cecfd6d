"""Appeals of moderation decisions under /v1/appeals (DSA Article 20): the platform files
them for its uploaders; a reviewer other than the original decider decides."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from moderation import claims
from moderation.api.claims import body_schema, get_clock, in_transaction, json_body
from moderation.api.deps import get_session, get_settings_dep, require
from moderation.keys import Principal
from moderation.settings import Settings

router = APIRouter(prefix="/v1/appeals", tags=["appeals"])
platform = require("service", "admin")
staff = require("reviewer", "admin")


@router.post("", status_code=201, openapi_extra=body_schema(claims.Appeal), responses={404: {}})
async def file_appeal(
    request: Request,
    settings: Settings = Depends(get_settings_dep),
    _: Principal = Depends(platform),
    clock: claims.Clock = Depends(get_clock),
) -> dict[str, Any]:
    """An uploader's complaint, queued in the ``appeals`` review queue."""
    appeal = claims.parse_model(claims.Appeal, await json_body(request), "appeal")

    def act(session: Session, outbox: claims.Outbox) -> dict[str, Any]:
        return claims.appeal_to_dict(claims.file_appeal(session, appeal, now=clock()))

    result: dict[str, Any] = await run_in_threadpool(in_transaction, settings, act)
    return result


@router.get("")
def list_appeals(
    state: str | None = Query(None, max_length=16),
    session: Session = Depends(get_session),
    principal: Principal = Depends(staff),
) -> list[dict[str, Any]]:
    claims.check_queue_grant(session, principal.key_id, principal.role, "appeals")
    return [claims.appeal_to_dict(a) for a in claims.list_appeals(session, state=state)]


class AppealDecision(BaseModel):
    model_config = ConfigDict(extra="forbid")
    decision: Literal["uphold", "reverse"]
    reason: str = Field(min_length=1, max_length=2000)


@router.post("/{appeal_id}/decision", responses={403: {}, 404: {}, 409: {}})
async def decide_appeal(
    appeal_id: str,
    body: AppealDecision,
    settings: Settings = Depends(get_settings_dep),
    principal: Principal = Depends(staff),
    clock: claims.Clock = Depends(get_clock),
) -> dict[str, Any]:
    """Uphold or reverse; reversing a takedown restores the item at once."""

    def act(session: Session, outbox: claims.Outbox) -> dict[str, Any]:
        claims.check_queue_grant(session, principal.key_id, principal.role, "appeals")
        row = claims.decide_appeal(
            session,
            settings,
            appeal_id,
            body.decision,
            body.reason,
            actor=principal.name,
            now=clock(),
            outbox=outbox,
        )
        return claims.appeal_to_dict(row)

    result: dict[str, Any] = await run_in_threadpool(in_transaction, settings, act)
    return result
