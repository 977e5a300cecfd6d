"""Celery configuration shared by workers and clients, and a client that sends tasks by name."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from moderation.errors import ConfigError, Unavailable
from moderation.settings import Settings, get_settings

if TYPE_CHECKING:
    from celery import Celery

MODERATE_TASK = "moderation.moderate"
VIDEO_TASK = "moderation.moderate_video"
WEBHOOK_TASK = "moderation.maintenance.deliver_webhook"
ANCHOR_TASK = "moderation.anchor.run"
RETRO_SCAN_TASK = "moderation.maintenance.retro_scan"
RESTORE_TASK = "moderation.maintenance.restore_due"
DRAIN_SPOOL_TASK = "moderation.maintenance.drain_db_spool"
QUEUES = ("moderate", "video", "anchor", "maintenance")
ROUTES = {
    "moderation.moderate": {"queue": "moderate"},
    "moderation.moderate_video": {"queue": "video"},
    "moderation.anchor.*": {"queue": "anchor"},
    "moderation.maintenance.*": {"queue": "maintenance"},
}


def celery_config(settings: Settings) -> dict[str, Any]:
    if not settings.redis_url:
        raise ConfigError("MODERATION_REDIS_URL is not set (the embedded Redis sets it in serve)")
    return {
        "broker_url": settings.redis_url,
        "result_backend": settings.redis_url,
        # JSON only on the wire: pickle would let anyone who can write to Redis run code.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "event_serializer": "json",
        "task_routes": ROUTES,
        "task_default_queue": "moderate",
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_track_started": False,
        "worker_prefetch_multiplier": 1,
        "worker_send_task_events": False,
        "task_send_sent_event": False,
        "result_expires": 3600,
        "result_extended": False,
        "broker_connection_retry_on_startup": True,
        # A Redis restart: workers and clients reconnect, retrying for as long as it takes
        # (None: no limit) rather than exiting after the default 100 attempts.
        "broker_connection_retry": True,
        "broker_connection_max_retries": None,
        "broker_transport_options": {
            # An unacknowledged task of a dead worker comes back after this long;
            # it must exceed the hard time limit or live tasks would run twice.
            "visibility_timeout": visibility_timeout(settings),
            # How often a running worker looks for such tasks. kombu's default sweep is
            # every 10 s x a throttle of 10 = 100 s; sweep every ~quarter of the timeout
            # instead (at most every 10 s: one cheap ZRANGE on Redis).
            "unacked_restore_interval": restore_interval(settings),
            "unacked_restore_throttle": 1,
            "socket_keepalive": True,
        },
        "result_backend_transport_options": {"retry_policy": {"timeout": 5.0}},
        "redis_socket_keepalive": True,
        "task_soft_time_limit": settings.task_soft_time_limit_s,
        "task_time_limit": settings.task_time_limit_s,
        # Run by a worker started with --beat (`moderation serve` starts its worker so).
        "beat_schedule": {
            "anchor": {
                "task": ANCHOR_TASK,
                "schedule": settings.anchor_tick_s,
                # A tick nobody took in time is dropped: the next one does the same work.
                "options": {"queue": "anchor", "expires": max(1.0, settings.anchor_tick_s)},
            },
            # Countered takedowns whose business-day wait is over come back online.
            "restore-due": {
                "task": RESTORE_TASK,
                "schedule": 300.0,
                "options": {"queue": "maintenance", "expires": 300.0},
            },
            # Items held while the database was down (moderation.fail_mode) are stored once
            # it is back; a no-op while none wait.
            "drain-db-spool": {
                "task": DRAIN_SPOOL_TASK,
                "schedule": settings.db_spool_drain_interval_s,
                "options": {"queue": "maintenance", "expires": settings.db_spool_drain_interval_s},
            },
        },
    }


def visibility_timeout(settings: Settings) -> int:
    """Seconds before an unacknowledged task (its worker died) is handed out again."""
    if settings.broker_visibility_timeout_s is not None:
        return max(1, int(settings.broker_visibility_timeout_s))
    return int(max(settings.task_time_limit_s, settings.video_task_time_limit_s) * 2 + 30)


def restore_interval(settings: Settings) -> int:
    """Seconds between a worker's sweeps for tasks whose worker died."""
    return max(1, min(10, visibility_timeout(settings) // 4))


_client: Celery | None = None
_client_lock = threading.Lock()


def client(settings: Settings | None = None) -> Celery:
    """A task-less Celery app for callers (API, bench); tasks are sent by name."""
    global _client
    if _client is None:
        with _client_lock:
            if _client is None:
                from celery import Celery

                app = Celery("moderation-client")
                app.conf.update(celery_config(settings or get_settings()))
                _client = app
    return _client


def reset_client() -> None:
    global _client
    _client = None


def moderate_via_queue(payload: dict[str, Any], *, timeout: float) -> dict[str, Any]:
    """Send one item to `moderation.moderate` and wait for its result (same thread)."""
    from celery.exceptions import TimeoutError as CeleryTimeout
    from kombu.exceptions import OperationalError as BrokerError
    from redis.exceptions import RedisError

    # Any error here means "not accepted": the caller retries, and the task is idempotent by
    # content_id, so a send that did reach Redis before the error is not moderated twice.
    try:
        result = client().send_task(MODERATE_TASK, args=[payload])
    except (BrokerError, RedisError, OSError, RuntimeError) as exc:
        if isinstance(exc, RuntimeError) and not _result_store_lost(exc):
            raise
        raise Unavailable(f"the queue is unavailable ({type(exc).__name__}); retry") from None
    try:
        value = result.get(timeout=timeout, interval=0.005, propagate=True)
    except CeleryTimeout:
        raise Unavailable(f"no verdict within {timeout:g} s; is a worker running?") from None
    except (BrokerError, RedisError, OSError, RuntimeError) as exc:
        if isinstance(exc, RuntimeError) and not _result_store_lost(exc):
            raise
        name = type(exc).__name__
        raise Unavailable(f"lost the queue waiting for the verdict ({name}); retry") from None
    if not isinstance(value, dict):
        raise Unavailable("the worker returned an unexpected result")
    return value


def _result_store_lost(exc: RuntimeError) -> bool:
    """Celery's Redis result consumer gave up reconnecting (it starts afresh on the next
    call): Redis is down, not a bug."""
    from redis.exceptions import RedisError

    return isinstance(exc.__cause__, RedisError | OSError) or "result store" in str(exc)


def send_video_job(content_id: str) -> None:
    """Queue the frame analysis of an item's videos (``video`` queue)."""
    client().send_task(VIDEO_TASK, args=[{"content_id": content_id}])


def send_webhook(delivery_id: int) -> None:
    """Queue one webhook delivery (``maintenance`` queue; retried with backoff)."""
    client().send_task(WEBHOOK_TASK, args=[delivery_id])


def send_retro_scan(work_id: str, after_id: int = 0) -> None:
    """Queue the next batch of a work's retroactive scan (``maintenance`` queue)."""
    client().send_task(RETRO_SCAN_TASK, args=[work_id, after_id])
