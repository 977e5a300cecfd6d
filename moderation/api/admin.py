"""Operator routes: API keys and custom keyword terms."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from moderation import audit, keywords_store
from moderation.api.deps import get_session, require
from moderation.keys import Principal, create_key, list_keys, revoke_key
from moderation.storage.tables import KeywordTermRow

router = APIRouter(prefix="/v1", tags=["admin"])
admin = require("admin")


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["service", "rights_holder", "reviewer", "admin"]
    name: str | None = Field(default=None, max_length=128)


class TermCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    category: str = Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")
    term: str = Field(min_length=1, max_length=256)
    score: float = Field(default=1.0, gt=0.0, le=1.0)


@router.get("/keys")
def get_keys(
    session: Session = Depends(get_session), _: Principal = Depends(admin)
) -> list[dict[str, Any]]:
    return list_keys(session)


@router.post("/keys", status_code=201)
def post_key(
    body: KeyCreate, session: Session = Depends(get_session), who: Principal = Depends(admin)
) -> dict[str, Any]:
    """Create a key; the secret is in this response only."""
    secret, p = create_key(session, body.role, body.name)
    audit.record(session, who.name, "key.create", "api_key", str(p.key_id), role=p.role)
    return {"id": p.key_id, "name": p.name, "role": p.role, "key": secret}


@router.delete("/keys/{key_id}", status_code=204)
def delete_key(
    key_id: int, session: Session = Depends(get_session), who: Principal = Depends(admin)
) -> None:
    revoke_key(session, key_id)
    audit.record(session, who.name, "key.revoke", "api_key", str(key_id))


@router.get("/keywords")
def get_terms(
    session: Session = Depends(get_session), _: Principal = Depends(admin)
) -> list[dict[str, Any]]:
    return [
        {"id": r.id, "category": r.category, "term": r.term, "score": r.score}
        for r in session.scalars(select(KeywordTermRow).order_by(KeywordTermRow.id))
    ]


@router.post("/keywords", status_code=201)
def post_term(
    body: TermCreate, session: Session = Depends(get_session), who: Principal = Depends(admin)
) -> dict[str, Any]:
    term_id = keywords_store.add_term(session, body.category, body.term, body.score)
    audit.record(session, who.name, "keyword.add", "keyword", str(term_id), category=body.category)
    return {"id": term_id, **body.model_dump()}


@router.delete("/keywords/{term_id}", status_code=204)
def delete_term(
    term_id: int, session: Session = Depends(get_session), who: Principal = Depends(admin)
) -> None:
    keywords_store.remove_term(session, term_id)
    audit.record(session, who.name, "keyword.remove", "keyword", str(term_id))
