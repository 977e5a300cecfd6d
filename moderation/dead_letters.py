"""Dead letters: tasks that failed every delivery they were allowed, kept for operators.

Each delivery of a `moderation.moderate` task is counted in Redis by task id (a retry keeps
its id). A task whose worker process died under it (a crash in a decoder, an OOM kill) comes
back with acks_late and reject_on_worker_lost; past ``task_max_deliveries`` it is stored here
instead of run again, so one poison message cannot take workers down forever.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from moderation.errors import ModerationError, NotFound
from moderation.redis_conn import redis_client
from moderation.settings import Settings
from moderation.storage.tables import DeadLetterRow

log = logging.getLogger(__name__)

_DELIVERIES = "moderation:deliveries:"
_LAST_ERROR = "moderation:delivery-error:"
# Counters outlive any redelivery (visibility timeout) yet do not pile up forever.
_KEY_TTL_S = 7 * 24 * 3600
WORKER_LOST = "the worker process died while running this task (crash, OOM kill or SIGKILL)"


class DeadLettered(ModerationError):
    """The task failed every delivery it was allowed; it waits in the dead letters."""

    code = "dead_lettered"
    http_status = 500


def count_delivery(settings: Settings, task_id: str) -> int:
    """This delivery's number (1 for the first); 0 when Redis cannot count it right now."""
    import redis

    try:
        pipe = redis_client(settings).pipeline()
        pipe.incr(_DELIVERIES + task_id)
        pipe.expire(_DELIVERIES + task_id, _KEY_TTL_S)
        return int(pipe.execute()[0])
    except redis.RedisError as exc:
        # Counting is a safeguard; an item is not refused because the count failed.
        log.warning("could not count the delivery of task %s: %s", task_id, exc)
        return 0


def note_error(settings: Settings, task_id: str, error: str) -> None:
    """Keep a delivery's error, so the dead letter says what went wrong last."""
    import redis

    with contextlib.suppress(redis.RedisError):
        redis_client(settings).set(_LAST_ERROR + task_id, error[:4000], ex=_KEY_TTL_S)


def forget(settings: Settings, task_id: str) -> None:
    """A task finished: drop its delivery count and last error."""
    import redis

    with contextlib.suppress(redis.RedisError):
        redis_client(settings).delete(_DELIVERIES + task_id, _LAST_ERROR + task_id)


def last_error(settings: Settings, task_id: str) -> str | None:
    import redis

    try:
        raw = redis_client(settings).get(_LAST_ERROR + task_id)
    except redis.RedisError:
        return None
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else None


def _content_id(payload: Any) -> str | None:
    if isinstance(payload, dict) and isinstance(payload.get("content_id"), str):
        return str(payload["content_id"])[:256]
    return None


def store(
    session: Session,
    *,
    task_id: str,
    task_name: str,
    payload: Any,
    error: str,
    deliveries: int,
) -> DeadLetterRow:
    """Keep a dead letter (once per task id: a second call returns the first row)."""
    existing = session.scalar(select(DeadLetterRow).where(DeadLetterRow.task_id == task_id))
    if existing is not None:
        return existing
    row = DeadLetterRow(
        task_id=task_id,
        task_name=task_name,
        content_id=_content_id(payload),
        payload=payload,
        error=error[:4000],
        deliveries=deliveries,
        replay_count=0,
    )
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        # Two deliveries dead-lettered the same task at once: the first row stands.
        found = session.scalar(select(DeadLetterRow).where(DeadLetterRow.task_id == task_id))
        if found is None:
            raise
        return found
    return row


def as_dict(row: DeadLetterRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "task_id": row.task_id,
        "task_name": row.task_name,
        "content_id": row.content_id,
        "error": row.error,
        "deliveries": row.deliveries,
        "created_at": row.created_at.isoformat(),
        "replayed_at": row.replayed_at.isoformat() if row.replayed_at else None,
        "replay_count": row.replay_count,
        "payload": row.payload,
    }


def list_letters(session: Session, *, limit: int = 100) -> list[DeadLetterRow]:
    """Newest first."""
    query = select(DeadLetterRow).order_by(DeadLetterRow.id.desc()).limit(limit)
    return list(session.scalars(query))


def get_letter(session: Session, letter_id: int) -> DeadLetterRow:
    row = session.get(DeadLetterRow, letter_id)
    if row is None:
        raise NotFound(f"no dead letter {letter_id}", field="id")
    return row


def replay(session: Session, letter_id: int) -> str:
    """Send a dead letter's task again (a new task id, so a fresh delivery count)."""
    from moderation.queue import client

    row = get_letter(session, letter_id)
    result = client().send_task(row.task_name, args=[row.payload])
    row.replayed_at = datetime.now(UTC)
    row.replay_count = (row.replay_count or 0) + 1
    return str(result.id)


def purge(session: Session, letter_ids: list[int] | None) -> int:
    """Delete the given dead letters, or all of them when ``letter_ids`` is None."""
    query = delete(DeadLetterRow)
    if letter_ids is not None:
        query = query.where(DeadLetterRow.id.in_(letter_ids))
    return int(session.execute(query).rowcount or 0)  # type: ignore[attr-defined]
