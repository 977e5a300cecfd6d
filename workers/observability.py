"""Worker-side operations, wired through Celery signals so tasks need no change: log lines
with the task's request and content ids, task latency and error metrics, the heartbeat that
/readyz reads."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from contextvars import Token
from typing import Any

from celery.signals import (
    setup_logging,
    task_postrun,
    task_prerun,
    worker_process_shutdown,
    worker_shutdown,
)

from moderation import logs, metrics
from moderation.readiness import Heartbeat
from moderation.settings import get_settings
from moderation.task_context import content_id_of, install_publish_hook, request_id_of

log = logging.getLogger(__name__)

# Tasks queued by a task (video job, webhook, next scan batch) carry its request id on.
install_publish_hook()


@setup_logging.connect
def _configure_logging(loglevel: Any = None, **_: Any) -> None:
    # Connected: Celery leaves the root logger to us (no hijacking, one format everywhere).
    s = get_settings()
    logs.configure_logging(s.log_format, loglevel or s.log_level, secrets=logs.configured_secrets())


# task id -> (start time, log context token); entries live only while the task runs.
_running: dict[str, tuple[float, Token[dict[str, str]]]] = {}


@task_prerun.connect
def _task_started(task_id: str, task: Any, args: Any = None, **_: Any) -> None:
    token = logs.bind(
        request_id=request_id_of(task.request),
        task_id=task_id,
        task=task.name,
        content_id=content_id_of(args),
    )
    _running[task_id] = (time.perf_counter(), token)


def _outcome(state: str | None, retval: Any) -> str:
    if state == "RETRY":
        return "retry"
    if state != "SUCCESS":
        return "failure"
    if isinstance(retval, dict) and isinstance(retval.get("error"), dict):
        metrics.ERRORS.labels(str(retval["error"].get("code", "internal_error"))).inc()
        return "error"
    return "ok"


@task_postrun.connect
def _task_finished(
    task_id: str, task: Any, retval: Any = None, state: str | None = None, **_: Any
) -> None:
    started, token = _running.pop(task_id, (None, None))
    outcome = _outcome(state, retval)
    if outcome == "failure":
        metrics.ERRORS.labels("task_failure").inc()
    if started is not None:
        metrics.TASK_LATENCY.labels(task=task.name, outcome=outcome).observe(
            time.perf_counter() - started
        )
    if token is not None:
        # ValueError: bound in another context (not expected); then leave it.
        with contextlib.suppress(ValueError):
            logs.unbind(token)


_heartbeat: Heartbeat | None = None


def warm_up_and_announce() -> None:
    """Load and try the models in this process, then announce the result in Redis (every
    process that runs tasks: prefork children, or the solo/threads worker itself)."""
    global _heartbeat
    from moderation.errors import ConfigError
    from moderation.runtime import get_runtime

    status = "loaded"
    try:
        get_runtime().warm_up()  # the image and text classifiers: load, verify, one inference
    except ConfigError as exc:
        # Keep serving: items that need a model that failed (an image, or text) fail with
        # this same error, while the others are still moderated. /readyz shows it.
        log.critical("models failed to load: %s", exc.message)
        status = "failed"
    s = get_settings()
    if s.redis_url:
        _heartbeat = Heartbeat(s.redis_url, s.worker_heartbeat_s, status).start()


@worker_process_shutdown.connect
@worker_shutdown.connect
def _withdraw(**_: Any) -> None:
    global _heartbeat
    if _heartbeat is not None:
        _heartbeat.stop()
        _heartbeat = None
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())
