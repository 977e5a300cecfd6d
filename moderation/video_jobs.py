"""The asynchronous half of a video item: frames analysed on the ``video`` queue.

``moderation.moderate`` answers a video item at once from its text and thumbnails and
records a job (:func:`create_job`); ``moderation.moderate_video`` runs :func:`run_job`,
which samples, classifies and matches every video of the item, merges that with the first
pass into the final verdict, stores it in place of the first and queues a webhook event.
Jobs are idempotent by content id: a redelivered or repeated job returns the stored result.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import delete
from sqlalchemy.orm import Session

from moderation import webhooks
from moderation.domain import MediaRef, Reason, Verdict
from moderation.errors import ModerationError, NotFound
from moderation.matching import load_reference_frames
from moderation.media import load_media
from moderation.pipeline import Analysis
from moderation.policy import BankHit, Signal, decide
from moderation.review_media import keep_clips
from moderation.runtime import Runtime
from moderation.storage.tables import ItemHashRow, ItemRow, VideoJobRow
from moderation.verdicts import load_verdict, replace_verdict
from moderation.video import VideoAnalysis, analyse_video, video_limits_from, video_media_policy
from moderation.works import name_works_of, record_upload_matches

log = logging.getLogger(__name__)

# Progress is written at most this often (seconds): a row update per frame batch would
# make the database the bottleneck of a long video.
PROGRESS_INTERVAL_S = 0.5


def create_job(s: Session, content_id: str, analysis: Analysis) -> None:
    """Record the pending frame work of an item (in the transaction storing its first verdict)."""
    s.add(
        VideoJobRow(
            content_id=content_id,
            status="queued",
            progress=0.0,
            base={
                "signals": [asdict(x) for x in analysis.signals],
                "hits": [asdict(h) for h in analysis.hits],
            },
            media=[
                {
                    "media_index": v.media_index,
                    "ref": v.ref.model_dump(exclude_none=True),
                    "duration_s": v.duration_s,
                }
                for v in analysis.videos
            ],
            attempts=0,
        )
    )


def job_status(s: Session, content_id: str) -> dict[str, Any] | None:
    """What ``GET /v1/items/{id}`` shows of an item's video job (None: it has none)."""
    job = s.get(VideoJobRow, content_id)
    if job is None:
        return None
    return {
        "status": job.status,
        "progress": round(job.progress, 3),
        "media": [
            {k: v for k, v in m.items() if k != "ref"}  # never echo inline media back
            for m in job.media
        ],
        "attempts": job.attempts,
        "error": {"code": job.error_code, "message": job.error_message} if job.error_code else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }


def run_job(rt: Runtime, content_id: str) -> dict[str, Any]:
    """Analyse an item's videos and store its final verdict; returns that verdict."""
    with rt.session() as s:
        job = s.get(VideoJobRow, content_id)
        if job is None:
            raise NotFound(f"no video job for item {content_id!r}", field="content_id")
        if job.status in ("done", "failed"):
            return _stored_verdict(s, content_id)
        job.status = "running"
        job.attempts = (job.attempts or 0) + 1
        media = list(job.media)
        base = dict(job.base)
    rt.refresh()
    results: list[VideoAnalysis] = []
    total = sum(max(m.get("duration_s") or 0.0, 0.001) for m in media)
    done = 0.0
    last_write = 0.0
    error: ModerationError | None = None
    limits = video_limits_from(rt.settings)
    policy = video_media_policy(rt.media_policy, rt.settings)
    models = rt.image_models() if rt.policy.enabled_image_models else []

    duration = 0.0
    clips: dict[int, bytes] = {}

    def progress(fraction: float) -> None:
        nonlocal last_write
        now = time.monotonic()
        if now - last_write < PROGRESS_INTERVAL_S:
            return
        last_write = now
        _set_progress(rt, content_id, (done + fraction * duration) / total)

    def reference_frames(ids: Sequence[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        with rt.session() as s:
            return load_reference_frames(s, ids)

    for m in media:
        index = int(m["media_index"])
        duration = max(m.get("duration_s") or 0.0, 0.001)
        try:
            data = load_media(MediaRef(**m["ref"]), policy, field=f"media[{index}]")
            if len(data) <= rt.settings.review.max_clip_bytes:
                clips[index] = data  # playable in the review console if the item goes there
            results.append(
                analyse_video(
                    data,
                    index,
                    limits=limits,
                    models=models,
                    matcher=rt.banks,
                    reference_frames=reference_frames,
                    review_band=rt.policy.matching.review_band,
                    progress=progress,
                )
            )
        except ModerationError as exc:
            # A video that cannot be analysed goes to a person, never silently through.
            log.info("item %s media[%d]: %s %s", content_id, index, exc.code, exc.message)
            error = exc
        done += duration
    verdict = _final_verdict(rt, content_id, base, results, error)
    if verdict.decision == "review" and clips:
        # Before the verdict, which queues the item: a reviewer who takes it at once must
        # find its clip. Its own transaction keeps the large blobs out of the verdict's.
        with rt.session() as s:
            keep_clips(s, content_id, clips)
    _store_final(rt, content_id, verdict, results, error)
    webhooks.enqueue(rt, "verdict.final", content_id, verdict.model_dump())
    return verdict.model_dump()


def _final_verdict(
    rt: Runtime,
    content_id: str,
    base: dict[str, Any],
    results: list[VideoAnalysis],
    error: ModerationError | None,
) -> Verdict:
    signals = [Signal(**x) for x in base.get("signals", [])]
    hits = [BankHit(**h) for h in base.get("hits", [])]
    for r in results:
        signals.extend(r.signals)
        hits.extend(r.hits)
    # A thumbnail's still match on an entry that the frames matched in time says less
    # than the segment: keep the segment.
    aligned = {(h.bank, h.entry_id, h.media_index) for h in hits if h.segments}
    hits = [h for h in hits if h.segments or (h.bank, h.entry_id, h.media_index) not in aligned]
    outcome = decide(rt.policy, signals, hits)
    decision = outcome.decision
    reasons = list(outcome.reasons)
    if error is not None:
        reasons.append(
            Reason(
                source="video",
                category="unanalysed",
                score=0.0,
                threshold=0.0,
                detail=f"{error.field or 'video'}: {error.message}",
            )
        )
        if decision == "allow":
            decision = "review"
    with rt.session() as s:
        item = s.get(ItemRow, content_id)
        received = item.received_at if item is not None else None
    latency = 0.0
    if received is not None:
        if received.tzinfo is None:  # SQLite keeps no zone; it was stored as UTC
            received = received.replace(tzinfo=UTC)
        latency = (datetime.now(UTC) - received).total_seconds() * 1000
    return Verdict(
        content_id=content_id,
        decision=decision,
        categories=outcome.categories,
        reasons=reasons,
        matches=name_works_of(rt, outcome.matches),
        policy_version=rt.policy.version,
        latency_ms=round(latency, 3),
    )


def _store_final(
    rt: Runtime,
    content_id: str,
    verdict: Verdict,
    results: list[VideoAnalysis],
    error: ModerationError | None,
) -> None:
    with rt.session() as s:
        replace_verdict(s, verdict)
        record_upload_matches(s, verdict)
        item = s.get(ItemRow, content_id)
        if item is not None:
            item.status = "done"
        # Redelivered after a crash between analysis and commit: replace, never duplicate.
        s.execute(
            delete(ItemHashRow).where(
                ItemHashRow.content_id == content_id, ItemHashRow.at_ms.is_not(None)
            )
        )
        for r in results:
            for f in r.frames:
                s.add(
                    ItemHashRow(
                        content_id=content_id,
                        media_index=r.media_index,
                        signal_type="pdq",
                        value=f.pdq,
                        quality=f.quality,
                        at_ms=round(f.t * 1000),
                    )
                )
        job = s.get(VideoJobRow, content_id)
        if job is not None:
            job.status = "failed" if error is not None else "done"
            job.progress = 1.0
            job.finished_at = datetime.now(UTC)
            job.error_code = error.code if error is not None else None
            job.error_message = error.message[:2000] if error is not None else None
            by_index = {r.media_index: r for r in results}
            media = []
            for m in job.media:
                entry = {k: v for k, v in m.items() if k != "ref"}
                ref = dict(m["ref"])
                ref.pop("data_b64", None)  # inline media is not kept once analysed
                entry["ref"] = ref
                done_video = by_index.get(int(m["media_index"]))
                if done_video is not None:
                    entry.update(
                        frames=len(done_video.frames), seconds=round(done_video.seconds, 3)
                    )
                media.append(entry)
            job.media = media


def _set_progress(rt: Runtime, content_id: str, fraction: float) -> None:
    with rt.session() as s:
        job = s.get(VideoJobRow, content_id)
        if job is not None and job.status == "running":
            job.progress = min(0.99, max(job.progress, fraction))


def _stored_verdict(s: Session, content_id: str) -> dict[str, Any]:
    verdict = load_verdict(s, content_id)
    if verdict is None:
        raise NotFound(f"item {content_id!r} has no verdict", field="content_id")
    return verdict.model_dump()


def fail_job(rt: Runtime, content_id: str, error: ModerationError) -> dict[str, Any]:
    """A job that cannot finish (time limit, repeated faults): the item goes to review with
    the error as a reason, so nothing is left pending forever or passed unseen."""
    with rt.session() as s:
        job = s.get(VideoJobRow, content_id)
        if job is None:
            raise NotFound(f"no video job for item {content_id!r}", field="content_id")
        if job.status in ("done", "failed"):
            return _stored_verdict(s, content_id)
        base = dict(job.base)
    verdict = _final_verdict(rt, content_id, base, [], error)
    _store_final(rt, content_id, verdict, [], error)
    webhooks.enqueue(rt, "verdict.final", content_id, verdict.model_dump())
    return verdict.model_dump()
