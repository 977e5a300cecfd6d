"""Human review under /v1/review: queues, leases, decisions, grants and quality figures."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from moderation import audit, review_decisions, review_detail, review_media, review_queue
from moderation.api.deps import get_session, get_settings_dep, require
from moderation.errors import InvalidInput, ModerationError, NotFound
from moderation.keys import Principal
from moderation.review_decisions import DecisionInput
from moderation.settings import Settings

router = APIRouter(prefix="/v1/review", tags=["review"])
reviewers = require("reviewer", "admin")
admin = require("admin")

# Served previews are re-encoded JPEGs; these headers keep a browser from doing anything
# else with them (no sniffing, no embedding elsewhere, no caching on shared machines).
MEDIA_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Content-Disposition": "inline",
    "Cache-Control": "private, no-store",
    "X-Content-Type-Options": "nosniff",
}


def media_response(
    session: Session, item_id: int, granted_queues: set[str] | None, media_index: int, *, clip: bool
) -> Response:
    """A granted review item's preview (re-encoded JPEG) or playable video, with safe headers:
    the one way the API and the console serve an item's media."""
    row = review_queue.get_review_item(session, item_id, granted_queues)
    if clip:
        video = review_media.clip(session, row.content_id, media_index)
        if video is None:
            raise NotFound(
                f"item has no playable video at media {media_index}", field="media_index"
            )
        return Response(video.data, media_type=video.mime, headers=MEDIA_HEADERS)
    found = review_media.preview(session, row.content_id, media_index)
    if found is None:
        raise NotFound(f"item has no preview for media {media_index}", field="media_index")
    return Response(found.jpeg, media_type="image/jpeg", headers=MEDIA_HEADERS)


class BulkDecision(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[int] = Field(min_length=1)
    decision: DecisionInput


class GrantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key_id: int
    queue: str = Field(min_length=1, max_length=160)


def granted(session: Session, principal: Principal) -> set[str] | None:
    return review_queue.granted_queues(session, principal.key_id, principal.role)


@router.get("/queues")
def list_queues(
    session: Session = Depends(get_session), principal: Principal = Depends(reviewers)
) -> list[dict[str, Any]]:
    """The queues one is granted, with depth, items under lease and the oldest item's age."""
    return [
        {"queue": q.queue, "depth": q.depth, "leased": q.leased, "oldest_age_s": q.oldest_age_s}
        for q in review_queue.queue_infos(session, granted(session, principal))
    ]


@router.get("/queues/{queue}/items")
def list_queue_items(
    queue: str,
    limit: int = Query(default=100, ge=1, le=500),
    session: Session = Depends(get_session),
    principal: Principal = Depends(reviewers),
) -> list[dict[str, Any]]:
    """A granted queue's open items, highest priority first (to select for bulk actions)."""
    review_queue.require_queue(granted(session, principal), queue)
    return [review_detail.summary(r) for r in review_queue.list_open(session, queue, limit=limit)]


@router.post("/take", response_model=None)
def take(
    queue: list[str] | None = Query(default=None, max_length=50),
    session: Session = Depends(get_session),
    settings: Settings = Depends(get_settings_dep),
    principal: Principal = Depends(reviewers),
) -> dict[str, Any] | Response:
    """Lease the next item (from the given granted queues, else any granted); 204 if none."""
    row = review_queue.take_next(
        session,
        principal.key_id,
        granted(session, principal),
        queues=queue,
        lease_seconds=settings.review.lease_seconds,
    )
    # Commit before answering: FastAPI may run get_session's commit after the response
    # is sent, and a client acting on this answer must find the lease already stored.
    session.commit()
    if row is None:
        return Response(status_code=204)
    return review_detail.detail(session, row)


@router.get("/items/{item_id}")
def get_item(
    item_id: int, session: Session = Depends(get_session), principal: Principal = Depends(reviewers)
) -> dict[str, Any]:
    row = review_queue.get_review_item(session, item_id, granted(session, principal))
    return review_detail.detail(session, row)


@router.get("/items/{item_id}/media/{media_index}")
def get_media(
    item_id: int,
    media_index: int,
    session: Session = Depends(get_session),
    principal: Principal = Depends(reviewers),
) -> Response:
    """A preview of the item's media (a re-encoded JPEG, never the upload itself)."""
    return media_response(session, item_id, granted(session, principal), media_index, clip=False)


@router.get("/items/{item_id}/clips/{media_index}")
def get_clip(
    item_id: int,
    media_index: int,
    session: Session = Depends(get_session),
    principal: Principal = Depends(reviewers),
) -> Response:
    """A video of the item (MP4 or WebM as uploaded, within max_clip_bytes), to play."""
    return media_response(session, item_id, granted(session, principal), media_index, clip=True)


@router.post("/items/{item_id}/lease")
def extend_lease(
    item_id: int,
    session: Session = Depends(get_session),
    settings: Settings = Depends(get_settings_dep),
    principal: Principal = Depends(reviewers),
) -> dict[str, Any]:
    """Renew one's live lease for another lease period (a long video, a hard call)."""
    review_queue.get_review_item(session, item_id, granted(session, principal))
    expires = review_queue.extend_lease(
        session, item_id, principal.key_id, settings.review.lease_seconds
    )
    session.commit()
    return {"item_id": item_id, "expires_at": expires.isoformat()}


@router.post("/items/{item_id}/release", status_code=204)
def release(
    item_id: int, session: Session = Depends(get_session), principal: Principal = Depends(reviewers)
) -> None:
    review_queue.release(session, item_id, principal.key_id, granted(session, principal))
    session.commit()


@router.post("/items/{item_id}/skip", status_code=204)
def skip(
    item_id: int, session: Session = Depends(get_session), principal: Principal = Depends(reviewers)
) -> None:
    review_queue.skip(session, item_id, principal.key_id, granted(session, principal))
    session.commit()


@router.post("/items/{item_id}/decision", status_code=201)
def decide(
    item_id: int,
    body: DecisionInput,
    session: Session = Depends(get_session),
    principal: Principal = Depends(reviewers),
) -> dict[str, Any]:
    """Several actions on one item with a required policy reason."""
    result = review_decisions.decide(session, principal, granted(session, principal), item_id, body)
    session.commit()
    return result.to_dict()


@router.post("/decisions")
def decide_bulk(
    body: BulkDecision,
    session: Session = Depends(get_session),
    settings: Settings = Depends(get_settings_dep),
    principal: Principal = Depends(reviewers),
) -> dict[str, Any]:
    """One decision applied to each selected item; each succeeds or fails on its own."""
    if len(body.items) > settings.review.max_bulk_items:
        raise InvalidInput(
            f"at most {settings.review.max_bulk_items} items per bulk decision", field="items"
        )
    allowed = granted(session, principal)
    results: list[dict[str, Any]] = []
    for item_id in dict.fromkeys(body.items):
        # A savepoint per item: one refusal must not undo the others.
        nested = session.begin_nested()
        try:
            done = review_decisions.decide(session, principal, allowed, item_id, body.decision)
            nested.commit()
            results.append({"item_id": item_id, "ok": True, **done.to_dict()})
        except ModerationError as exc:
            nested.rollback()
            results.append({"item_id": item_id, "ok": False, "error": exc.to_dict()})
    session.commit()
    return {"results": results, "decided": sum(r["ok"] for r in results)}


@router.get("/quality")
def quality(
    session: Session = Depends(get_session), _: Principal = Depends(admin)
) -> list[dict[str, Any]]:
    """Per reviewer: decisions, agreement with the reviewer before, rate overturned later."""
    return review_decisions.quality(session)


@router.get("/grants")
def list_grants(
    session: Session = Depends(get_session), _: Principal = Depends(admin)
) -> list[dict[str, Any]]:
    return review_queue.list_grants(session)


@router.post("/grants", status_code=201)
def add_grant(
    body: GrantCreate,
    session: Session = Depends(get_session),
    principal: Principal = Depends(admin),
) -> dict[str, Any]:
    """Let a reviewer key work a queue ("*": every queue)."""
    review_queue.grant(session, body.key_id, body.queue)
    audit.record(
        session, principal.name, "review.grant", "api_key", str(body.key_id), queue=body.queue
    )
    return {"key_id": body.key_id, "queue": body.queue}


@router.delete("/grants", status_code=204)
def remove_grant(
    key_id: int = Query(),
    queue: str = Query(min_length=1, max_length=160),
    session: Session = Depends(get_session),
    principal: Principal = Depends(admin),
) -> None:
    review_queue.revoke_grant(session, key_id, queue)
    audit.record(
        session, principal.name, "review.revoke_grant", "api_key", str(key_id), queue=queue
    )
