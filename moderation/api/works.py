"""Reference works under /v1/works: a rights holder registers and manages only its own."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from moderation import works
from moderation.api.deps import get_session, get_settings_dep, require
from moderation.errors import ModerationError
from moderation.keys import Principal
from moderation.settings import Settings
from moderation.storage import db

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/works", tags=["works"])
holders = require("rights_holder")
holders_or_admin = require("rights_holder", "admin")


def owner_filter(principal: Principal) -> str | None:
    """The owner a caller is limited to: its own key name, or None for an admin."""
    return None if principal.role == "admin" else principal.name


def queue_scan(work_id: str) -> str:
    """Start the work's retroactive scan; a queue outage leaves it to `moderation works scan`."""
    from moderation.queue import send_retro_scan

    try:
        send_retro_scan(work_id)
    except ModerationError as exc:
        log.warning("retroactive scan of %s not queued: %s", work_id, exc.message)
        return "not_queued"
    return "queued"


def _register(settings: Settings, owner: str, body: works.WorkCreate) -> dict[str, Any]:
    with db.session_scope(settings.resolved_database_url) as session:
        out = works.work_to_dict(works.register_work(session, settings, owner, body))
    # After commit, so the worker finds the work.
    out["retro_scan"] = queue_scan(str(out["id"]))
    return out


@router.post("", status_code=201, responses={404: {}, 409: {}, 413: {}, 422: {}})
async def register_work(
    body: works.WorkCreate,
    settings: Settings = Depends(get_settings_dep),
    principal: Principal = Depends(holders),
) -> dict[str, Any]:
    """Register a work in the caller's reference bank (policy block, review or track); it gets
    a provenance leaf (receipt at /v1/receipts/{id} once anchored) and a retroactive scan."""
    return await run_in_threadpool(_register, settings, principal.name, body)


@router.get("")
def list_works(
    limit: int = Query(100, ge=1, le=1000),
    session: Session = Depends(get_session),
    principal: Principal = Depends(holders_or_admin),
) -> list[dict[str, Any]]:
    return [
        works.work_to_dict(w)
        for w in works.list_works(session, owner_filter(principal), limit=limit)
    ]


@router.get("/{work_id}", responses={404: {"description": "no such work, or not the caller's"}})
def get_work(
    work_id: str,
    session: Session = Depends(get_session),
    principal: Principal = Depends(holders_or_admin),
) -> dict[str, Any]:
    return works.work_to_dict(works.get_work(session, work_id, owner_filter(principal)))


@router.delete("/{work_id}", status_code=204, responses={404: {}})
def remove_work(
    work_id: str,
    settings: Settings = Depends(get_settings_dep),
    principal: Principal = Depends(holders_or_admin),
) -> None:
    """Stop matching the work; its claims and provenance stay on record."""
    # Committed before the answer (a yield dependency may commit after it is sent).
    with db.session_scope(settings.resolved_database_url) as session:
        works.remove_work(session, work_id, owner_filter(principal), principal.name)


@router.post("/{work_id}/scan", status_code=202, responses={404: {}})
def rescan_work(
    work_id: str,
    session: Session = Depends(get_session),
    principal: Principal = Depends(holders_or_admin),
) -> dict[str, Any]:
    """Run the retroactive scan again (matches already claimed are not repeated)."""
    works.get_work(session, work_id, owner_filter(principal))
    return {"work_id": work_id, "retro_scan": queue_scan(work_id)}
