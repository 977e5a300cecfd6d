"""The moderate use case: validate a payload, return a stored verdict or compute and store one."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from moderation.domain import Item, Reason, Verdict
from moderation.errors import InputTooLarge, InvalidInput, ModerationError
from moderation.pipeline import Analysis, moderate
from moderation.queue import send_video_job
from moderation.review_media import keep_previews
from moderation.runtime import Runtime
from moderation.settings import Limits
from moderation.storage.tables import ItemHashRow, ItemRow, VideoJobRow
from moderation.strikes import check_uploads_allowed
from moderation.text_matching import TEXT_MEDIA_INDEX, item_simhash
from moderation.verdicts import add_verdict, load_verdict
from moderation.video_jobs import create_job
from moderation.works import record_upload_matches

log = logging.getLogger(__name__)


def _describe(err: Any) -> str:
    loc = ".".join(str(p) for p in err.get("loc", ())) or "item"
    if err.get("type") == "extra_forbidden":
        return f"unknown field {loc!r}"
    if err.get("type") == "missing":
        return f"missing required field {loc!r}"
    return f"{loc}: {err.get('msg', 'invalid')}"


def parse_item(payload: Any, limits: Limits) -> Item:
    """Validate a raw payload against the contract and every input bound."""
    if not isinstance(payload, dict):
        raise InvalidInput("the item must be a JSON object")
    try:
        item = Item.model_validate(payload)
    except ValidationError as exc:
        errors = exc.errors()
        loc = errors[0].get("loc", ()) if errors else ()
        field = ".".join(str(p) for p in loc) or None
        raise InvalidInput("; ".join(_describe(e) for e in errors), field=field) from None
    for name in ("content_id", "uploader_id", "text"):
        if "\x00" in (getattr(item, name) or ""):
            raise InvalidInput(f"{name} contains a NUL character", field=name)
    for name in ("content_id", "uploader_id"):
        if len(getattr(item, name)) > limits.max_id_chars:
            raise InputTooLarge(
                f"{name} is longer than {limits.max_id_chars} characters", field=name
            )
    if item.text is not None and len(item.text) > limits.max_text_chars:
        raise InputTooLarge(
            f"text has {len(item.text)} characters, over the limit of {limits.max_text_chars}",
            field="text",
        )
    if len(item.media) > limits.max_media_items:
        raise InputTooLarge(
            f"{len(item.media)} media objects, over the limit of {limits.max_media_items}",
            field="media",
        )
    context = json.dumps(item.context, default=str)
    if len(context) > limits.max_context_bytes:
        raise InputTooLarge(f"context is over {limits.max_context_bytes} bytes", field="context")
    if "\\u0000" in context:
        raise InvalidInput("context contains a NUL character", field="context")
    return item


def get_verdict(rt: Runtime, content_id: str) -> Verdict | None:
    with rt.session() as s:
        return load_verdict(s, content_id)


def fallback_content_id(payload: Any) -> str:
    if isinstance(payload, dict):
        cid = payload.get("content_id")
        if isinstance(cid, str) and 0 < len(cid) <= 256 and "\x00" not in cid:
            return cid
    raw = json.dumps(payload, sort_keys=True, default=str).encode()
    return "invalid-" + hashlib.sha256(raw).hexdigest()[:32]


def record_failure(rt: Runtime, payload: Any, error: ModerationError) -> str:
    """Keep a failed item on record (never lost); returns the id it is recorded under."""
    content_id = fallback_content_id(payload)
    uploader = payload.get("uploader_id") if isinstance(payload, dict) else None
    with rt.session() as s:
        row = s.get(ItemRow, content_id)
        if row is None:
            row = ItemRow(
                content_id=content_id,
                uploader_id=str(uploader or "").replace("\x00", "")[:256],
                status="failed",
                context={},
                attempts=0,
            )
            s.add(row)
        if row.status != "done":
            row.status = "failed"
            row.error_code = error.code
            row.error_message = error.message[:2000]
        row.attempts = (row.attempts or 0) + 1
    return content_id


def _store(s: Session, item: Item, verdict: Verdict, analysis: Analysis) -> None:
    row = s.get(ItemRow, item.content_id)
    if row is None:
        row = ItemRow(content_id=item.content_id, attempts=0)
        s.add(row)
    row.uploader_id = item.uploader_id
    # An item with videos is pending until the video queue stores its final verdict.
    row.status = "pending" if analysis.videos else "done"
    row.text = item.text
    row.media_count = len(item.media)
    row.context = item.context
    row.error_code = row.error_message = None
    row.attempts = (row.attempts or 0) + 1
    s.flush()
    add_verdict(s, verdict)
    record_upload_matches(s, verdict)
    for mh in analysis.media:
        h = mh.hashes
        for signal_type, value, quality in (
            ("pdq", h.pdq, h.pdq_quality),
            ("phash", h.phash, None),
        ):
            s.add(
                ItemHashRow(
                    content_id=item.content_id,
                    media_index=mh.media_index,
                    signal_type=signal_type,
                    value=value,
                    quality=quality,
                )
            )
    if analysis.videos:
        create_job(s, item.content_id, analysis)
    if verdict.decision == "review" or analysis.videos:
        keep_previews(s, item, analysis)
    # The text's SimHash (cached from matching), so a reviewer's decision can bank it.
    text_hash = item_simhash(item.text) if item.text else None
    if text_hash is not None:
        s.add(
            ItemHashRow(
                content_id=item.content_id,
                media_index=TEXT_MEDIA_INDEX,
                signal_type="simhash",
                value=text_hash,
                quality=None,
            )
        )


def moderate_and_store(
    rt: Runtime, item: Item, *, queue_video: bool = True, held: Reason | None = None
) -> Verdict:
    """Idempotent by content_id: a repeated item returns the stored verdict unchanged.

    ``held``: the item was answered "review" while the database was down (fail_closed), so
    its stored verdict is at least "review", with this reason."""
    started = time.perf_counter()
    with rt.session() as s:
        stored = load_verdict(s, item.content_id)
        if stored is None:
            # Repeat infringers (moderation.strikes): a new upload is refused, a stored one
            # is still answered.
            check_uploads_allowed(
                s, item.uploader_id, datetime.now(UTC), rt.settings.strikes_to_suspend
            )
        job = s.get(VideoJobRow, item.content_id) if stored is not None else None
        requeue = job is not None and job.status == "queued"
    if stored is not None:
        if requeue and queue_video:
            # Stored, but perhaps never queued (a crash between commit and send): the video
            # job is idempotent, so sending it again is safe.
            send_video_job(item.content_id)
        return stored
    verdict, analysis = moderate(rt, item, started=started)
    if held is not None:
        verdict = _at_least_review(verdict, held)
    try:
        with rt.session() as s:
            _store(s, item, verdict, analysis)
        if analysis.videos and queue_video:
            send_video_job(item.content_id)
    except IntegrityError:
        # Another worker stored this content_id first (redelivery race): theirs wins.
        with rt.session() as s:
            stored = load_verdict(s, item.content_id)
        if stored is None:
            raise
        return stored
    return verdict


def _at_least_review(verdict: Verdict, reason: Reason) -> Verdict:
    if verdict.decision == "block":
        return verdict
    return verdict.model_copy(update={"decision": "review", "reasons": [*verdict.reasons, reason]})


def error_result(content_id: str, error: ModerationError) -> dict[str, Any]:
    return {"content_id": content_id, "error": error.to_dict()}


def moderate_payload(rt: Runtime, payload: Any, *, queue_video: bool = True) -> dict[str, Any]:
    """Task entry: a verdict dict, or ``{"content_id", "error": {...}}`` for a bad item."""
    try:
        item = parse_item(payload, rt.settings.limits)
        return moderate_and_store(rt, item, queue_video=queue_video).model_dump()
    except ModerationError as exc:
        content_id = record_failure(rt, payload, exc)
        log.info("item %s failed: %s %s", content_id, exc.code, exc.message)
        return error_result(content_id, exc)
