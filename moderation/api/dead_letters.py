"""Admin routes for dead letters: list, replay, purge (moderation.dead_letters)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query
from sqlalchemy.orm import Session

from moderation import audit, dead_letters
from moderation.api.deps import get_session, require
from moderation.keys import Principal

router = APIRouter(prefix="/v1/admin", tags=["admin"])
admin = require("admin")


@router.get("/dead-letters")
def list_dead_letters(
    limit: int = Query(default=100, ge=1, le=1000),
    session: Session = Depends(get_session),
    _: Principal = Depends(admin),
) -> list[dict[str, Any]]:
    """Dead-lettered tasks, newest first, with payload, deliveries and last error."""
    return [dead_letters.as_dict(r) for r in dead_letters.list_letters(session, limit=limit)]


@router.post("/dead-letters/{letter_id}/replay")
def replay_dead_letter(
    letter_id: int, session: Session = Depends(get_session), who: Principal = Depends(admin)
) -> dict[str, Any]:
    """Send the task again under a new task id; the letter stays, marked replayed."""
    task_id = dead_letters.replay(session, letter_id)
    audit.record(session, who.name, "dead_letter.replay", "dead_letter", str(letter_id))
    return {"id": letter_id, "task_id": task_id}


@router.delete("/dead-letters/{letter_id}")
def purge_dead_letter(
    letter_id: int, session: Session = Depends(get_session), who: Principal = Depends(admin)
) -> dict[str, Any]:
    """Delete one dead letter."""
    dead_letters.get_letter(session, letter_id)
    count = dead_letters.purge(session, [letter_id])
    audit.record(session, who.name, "dead_letter.purge", "dead_letter", str(letter_id))
    return {"purged": count}
