"""Task definitions: small, idempotent, each one call into `moderation`."""

from __future__ import annotations

import logging
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from moderation import (
    anchoring,
    claims,
    dead_letters,
    fail_mode,
    fault_injection,
    retro_scan,
    video_jobs,
    webhooks,
)
from moderation.errors import ModerationError, TaskTimeout
from moderation.queue import MODERATE_TASK
from moderation.runtime import Runtime, get_runtime
from moderation.service import error_result, fallback_content_id, moderate_payload, record_failure
from moderation.settings import get_settings
from workers.app import app

log = logging.getLogger(__name__)

MAX_RETRIES = 3


@app.task(name="moderation.moderate", bind=True, acks_late=True, max_retries=MAX_RETRIES)
def moderate(self, item: Any) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Moderate one item; returns a verdict, or an error result naming the problem."""
    rt = get_runtime()
    task_id = str(self.request.id)
    deliveries = dead_letters.count_delivery(rt.settings, task_id)
    if deliveries > rt.settings.task_max_deliveries:
        # Delivered again and again without finishing: its worker keeps dying under it.
        error = dead_letters.last_error(rt.settings, task_id) or dead_letters.WORKER_LOST
        return _dead_letter(self, rt, item, error, deliveries)
    try:
        fault_injection.maybe_fail(rt.settings, item)
        result = moderate_payload(rt, item)
    except SoftTimeLimitExceeded:
        err = TaskTimeout("moderation took longer than the task's soft time limit")
        result = error_result(record_failure(rt, item, err), err)
    except Exception as exc:
        if fail_mode.is_db_unavailable(exc):
            # The database cannot be written: answer per the fail mode, hold the item in Redis.
            try:
                result = fail_mode.hold(rt, item, exc)
            except ModerationError as err:
                result = error_result(fallback_content_id(item), err)
        else:
            # An unexpected fault (a bug, a transient error): retry a bounded number of
            # times, then dead-letter the item with its error instead of losing it.
            error = f"{type(exc).__name__}: {exc}"
            dead_letters.note_error(rt.settings, task_id, error)
            if self.request.retries < MAX_RETRIES:
                raise self.retry(exc=exc, countdown=0.5 * 2**self.request.retries) from exc
            log.exception("item failed after %d retries", MAX_RETRIES)
            return _dead_letter(self, rt, item, error, deliveries)
    dead_letters.forget(rt.settings, task_id)
    return result


def _dead_letter(task: Any, rt: Runtime, item: Any, error: str, deliveries: int) -> dict[str, Any]:
    task_id = str(task.request.id)
    try:
        with rt.session() as s:
            dead_letters.store(
                s,
                task_id=task_id,
                task_name=MODERATE_TASK,
                payload=item,
                error=error,
                deliveries=deliveries,
            )
    except Exception as exc:
        if not fail_mode.is_db_unavailable(exc):
            raise
        # The database is down too: keep the message (a retry, same id) until it is back.
        raise task.retry(exc=exc, countdown=5.0, max_retries=None) from exc
    log.error("task %s dead-lettered after %d deliveries: %s", task_id, deliveries, error)
    err = dead_letters.DeadLettered(f"dead-lettered after {deliveries} deliveries: {error}"[:2000])
    return error_result(record_failure(rt, item, err), err)


@app.task(name="moderation.maintenance.drain_db_spool", acks_late=False)
def drain_db_spool() -> dict[str, Any]:
    """Store the items held while the database was down (periodic; a no-op when none are)."""
    rt = get_runtime()
    if not fail_mode.waiting(rt):
        return {"stored": 0, "waiting": 0}
    return fail_mode.drain(rt)


_settings = get_settings()


@app.task(
    name="moderation.moderate_video",
    bind=True,
    acks_late=True,
    max_retries=MAX_RETRIES,
    soft_time_limit=_settings.video_task_soft_time_limit_s,
    time_limit=_settings.video_task_time_limit_s,
)
def moderate_video(self, job: Any) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Analyse the frames of an item's videos and store its final verdict."""
    rt = get_runtime()
    content_id = str(job.get("content_id", "")) if isinstance(job, dict) else ""
    try:
        return video_jobs.run_job(rt, content_id)
    except SoftTimeLimitExceeded:
        err = TaskTimeout("video analysis took longer than the video task's soft time limit")
        return video_jobs.fail_job(rt, content_id, err)
    except ModerationError as exc:
        return error_result(content_id, exc)
    except Exception as exc:
        if self.request.retries < MAX_RETRIES:
            raise self.retry(exc=exc, countdown=0.5 * 2**self.request.retries) from exc
        log.exception("video job %s failed after %d retries", content_id, MAX_RETRIES)
        err = ModerationError(f"internal error after {MAX_RETRIES} retries: {type(exc).__name__}")
        return video_jobs.fail_job(rt, content_id, err)


@app.task(
    name="moderation.maintenance.deliver_webhook",
    bind=True,
    acks_late=True,
    max_retries=_settings.webhook_max_attempts - 1,
)
def deliver_webhook(self, delivery_id: int) -> str:  # type: ignore[no-untyped-def]
    """POST one signed event; retried with exponential backoff (1 s, 2 s, 4 s ... 5 min)."""
    rt = get_runtime()
    final = self.request.retries >= self.max_retries
    try:
        return webhooks.deliver(rt, int(delivery_id), final_attempt=final)
    except webhooks.DeliveryFailed as exc:
        raise self.retry(exc=exc, countdown=min(300.0, 2.0**self.request.retries)) from exc


# A cycle is seconds; the first in a process also replays the embedded chain's journal.
@app.task(name="moderation.anchor.run", acks_late=False, soft_time_limit=240, time_limit=300)
def anchor_run() -> dict[str, Any]:
    """One anchoring cycle (periodic, ``anchor`` queue): cut due batches, send their roots,
    follow open batches to confirmed. A lost tick is harmless: the next does the same."""
    try:
        return anchoring.run_periodic(get_settings())
    except ModerationError as exc:
        log.error("anchoring: %s", exc.message)
        return {"error": exc.to_dict()}


@app.task(name="moderation.maintenance.retro_scan", acks_late=True)
def retro_scan_batch(work_id: str, after_id: int = 0) -> dict[str, Any]:
    """One batch of a new work's scan of accepted items; queues the next batch itself."""
    return retro_scan.run_step(get_settings(), str(work_id), int(after_id))


@app.task(name="moderation.maintenance.restore_due", acks_late=True)
def restore_due_claims() -> dict[str, Any]:
    """Restore countered takedowns whose wait is over (periodic)."""
    return claims.run_restore_due(get_settings())
