"""Task definitions: small, idempotent, each one call into `moderation`."""

from __future__ import annotations

import logging
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from moderation.errors import ModerationError, TaskTimeout
from moderation.runtime import get_runtime
from moderation.service import error_result, moderate_payload, record_failure
from workers.app import app

log = logging.getLogger(__name__)

MAX_RETRIES = 3


@app.task(name="moderation.moderate", bind=True, acks_late=True, max_retries=MAX_RETRIES)
def moderate(self, item: Any) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Moderate one item; returns a verdict, or an error result naming the problem."""
    rt = get_runtime()
    try:
        return moderate_payload(rt, item)
    except SoftTimeLimitExceeded:
        err = TaskTimeout("moderation took longer than the task's soft time limit")
        return error_result(record_failure(rt, item, err), err)
    except Exception as exc:
        # An unexpected fault (database hiccup, bug): retry a bounded number of times,
        # then keep the item on record as failed instead of losing it.
        if self.request.retries < MAX_RETRIES:
            raise self.retry(exc=exc, countdown=0.5 * 2**self.request.retries) from exc
        log.exception("item failed after %d retries", MAX_RETRIES)
        err = ModerationError(f"internal error after {MAX_RETRIES} retries: {type(exc).__name__}")
        return error_result(record_failure(rt, item, err), err)
