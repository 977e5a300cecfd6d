"""The answer when the database cannot be written, and the catch-up once it is back.

``db_fail_mode`` decides: ``fail_closed`` (the default) answers "review" and holds the item
for human review; ``fail_open`` answers "allow" and re-checks the item later. Either way the
item waits in a Redis hash (the spool, keyed by content_id, so a resent item is held once),
and `drain` (a periodic task) stores it when the database answers again: fail_closed items
get a verdict of at least "review" and a review queue entry; fail_open items get the verdict
of a fresh moderation (a block if the re-check blocks).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from sqlalchemy import exc as sa_exc

from moderation.domain import Item, Reason, Verdict
from moderation.errors import ModerationError, Unavailable
from moderation.redis_conn import redis_client
from moderation.runtime import Runtime
from moderation.service import moderate_and_store, parse_item, record_failure

log = logging.getLogger(__name__)

SPOOL_KEY = "moderation:db-spool"
_LOCK_KEY = "moderation:db-spool:lock"
_LOCK_TTL_S = 300
REASON_SOURCE = "fail_mode"


def is_db_unavailable(exc: BaseException) -> bool:
    """The database did not answer (connection refused or lost, locked, pool exhausted)."""
    return isinstance(
        exc,
        sa_exc.OperationalError
        | sa_exc.InterfaceError
        | sa_exc.DisconnectionError
        | sa_exc.TimeoutError,
    )


def _reason(mode: str, detail: str) -> Reason:
    return Reason(
        source=REASON_SOURCE,
        category="database_unavailable",
        score=1.0,
        threshold=1.0,
        detail=f"{mode}: {detail}",
    )


def hold(rt: Runtime, payload: Any, error: BaseException) -> dict[str, Any]:
    """Answer per the fail mode and spool the item; raises InvalidInput for a bad payload and
    Unavailable when Redis cannot take the item either (the caller must retry)."""
    import redis

    item = parse_item(payload, rt.settings.limits)
    mode = rt.settings.db_fail_mode
    decision = "review" if mode == "fail_closed" else "allow"
    entry = {
        "item": item.model_dump(mode="json"),
        "mode": mode,
        "answered": decision,
        "held_at": time.time(),
        "error": f"{type(error).__name__}: {error}"[:500],
    }
    try:
        # HSETNX: a client resending the item during the outage does not hold it twice.
        redis_client(rt.settings).hsetnx(SPOOL_KEY, item.content_id, json.dumps(entry))
    except redis.RedisError as exc:
        raise Unavailable("the database and Redis are both unavailable; retry later") from exc
    log.warning("database unavailable: item %s held (%s)", item.content_id, mode)
    detail = (
        "the database is unavailable; held for review"
        if mode == "fail_closed"
        else "the database is unavailable; allowed, re-checked once it is back"
    )
    verdict = Verdict(
        content_id=item.content_id,
        decision=decision,  # type: ignore[arg-type]
        reasons=[_reason(mode, detail)],
        policy_version=rt.policy.version,
    )
    return verdict.model_dump()


def waiting(rt: Runtime) -> int:
    """Items held in the spool."""
    return int(redis_client(rt.settings).hlen(SPOOL_KEY))  # type: ignore[arg-type]


def drain(rt: Runtime, *, limit: int = 500) -> dict[str, Any]:
    """Store up to ``limit`` held items (one drainer at a time); stops while the database is
    still down. Each item is removed from the spool only after its verdict is stored, and
    storing is idempotent by content_id, so a crash in between stores nothing twice."""
    r = redis_client(rt.settings)
    token = uuid.uuid4().hex
    if not r.set(_LOCK_KEY, token, nx=True, ex=_LOCK_TTL_S):
        return {"stored": 0, "skipped": "another drain is running"}
    stored = failed = 0
    database_down = False
    try:
        for raw_id, raw in r.hscan_iter(SPOOL_KEY, count=100):
            if stored + failed >= limit:
                break
            entry = json.loads(raw)
            item = Item.model_validate(entry["item"])
            held = (
                _reason("fail_closed", "held for review while the database was unavailable")
                if entry.get("mode") == "fail_closed"
                else None
            )
            try:
                moderate_and_store(rt, item, held=held)
                stored += 1
            except ModerationError as exc:
                record_failure(rt, entry["item"], exc)
                failed += 1
            except Exception as exc:
                if is_db_unavailable(exc):
                    database_down = True
                    break
                raise
            r.hdel(SPOOL_KEY, raw_id)
    finally:
        if r.get(_LOCK_KEY) == token.encode():
            r.delete(_LOCK_KEY)
    left = int(r.hlen(SPOOL_KEY))  # type: ignore[arg-type]
    if stored or failed or database_down:
        log.info("spool drain: %d stored, %d failed, %d waiting", stored, failed, left)
    return {"stored": stored, "failed": failed, "waiting": left, "database_down": database_down}
