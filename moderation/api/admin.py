"""Operator routes: API keys and custom keyword terms."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from moderation import audit, keywords_store
from moderation.api.deps import get_session, require
from moderation.keys import (
    Principal,
    create_key,
    list_keys,
    parse_duration,
    revoke_key,
    rotate_key,
    set_rate_limit,
)
from moderation.storage.tables import KeywordTermRow

router = APIRouter(prefix="/v1", tags=["admin"])
admin = require("admin")


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["service", "rights_holder", "reviewer", "admin"]
    name: str | None = Field(default=None, max_length=128)
    # `limits` notation ("20/second;600/minute") or "none"; unset: the role's default.
    rate_limit: str | None = Field(default=None, max_length=128)
    expires_in: str | None = Field(default=None, max_length=32, description="e.g. 90d, 12h")


class KeyRotate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grace: str | None = Field(
        default=None, max_length=32, description="how long the old secret keeps working (24h)"
    )


class KeyLimit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rate_limit: str | None = Field(max_length=128)


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
    expires_in = parse_duration(body.expires_in, field="expires_in") if body.expires_in else None
    secret, p = create_key(
        session, body.role, body.name, rate_limit=body.rate_limit, expires_in=expires_in
    )
    audit.record(session, who.name, "key.create", "api_key", str(p.key_id), role=p.role)
    return {"id": p.key_id, "name": p.name, "role": p.role, "key": secret}


@router.post("/keys/{key_id}/rotate")
def post_rotate(
    key_id: int,
    body: KeyRotate | None = None,
    session: Session = Depends(get_session),
    who: Principal = Depends(admin),
) -> dict[str, Any]:
    """A new secret for the key (in this response only); the old one works until the grace ends."""
    grace = body.grace if body and body.grace else None
    if grace is None:
        secret, info = rotate_key(session, key_id)
    else:
        secret, info = rotate_key(session, key_id, parse_duration(grace, field="grace"))
    audit.record(session, who.name, "key.rotate", "api_key", str(key_id), grace=grace or "default")
    return {**info, "key": secret}


@router.put("/keys/{key_id}/rate-limit")
def put_rate_limit(
    key_id: int,
    body: KeyLimit,
    session: Session = Depends(get_session),
    who: Principal = Depends(admin),
) -> dict[str, Any]:
    """Set the key's own rate limit ("none": unlimited; null: back to the role's default)."""
    info = set_rate_limit(session, key_id, body.rate_limit)
    audit.record(session, who.name, "key.rate_limit", "api_key", str(key_id), limit=body.rate_limit)
    return info


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
