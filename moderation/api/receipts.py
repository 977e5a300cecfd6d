"""Provenance receipts under /v1/receipts: a rights holder reads its own, an admin any."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from sqlalchemy.orm import Session

from chain.receipt import Receipt
from moderation.api.deps import get_session, require
from moderation.errors import NotFound
from moderation.keys import Principal
from moderation.provenance import leaf_by_subject, receipt_for

router = APIRouter(prefix="/v1/receipts", tags=["receipts"])
holders = require("rights_holder", "admin")


@router.get(
    "/{subject_id:path}",
    response_model=Receipt,
    responses={404: {"description": "no such leaf, or not the caller's"}, 409: {}},
)
def get_receipt(
    subject_id: str,
    principal: Principal = Depends(holders),
    session: Session = Depends(get_session),
) -> dict[str, Any]:
    """The receipt of a work or item once its batch is confirmed (409 before). The owner is
    the rights holder's API key name."""
    leaf = leaf_by_subject(session, subject_id)
    if principal.role != "admin" and leaf.owner != principal.name:
        # The same answer as for an unknown id: others' ids are not revealed.
        raise NotFound(f"no provenance leaf for {subject_id!r}", field="id")
    return receipt_for(session, leaf).model_dump(mode="json")
