"""Carry the request id from whoever sends a task (the API, or a task queueing another) to
the worker that runs it, in a message header: tasks need no extra argument."""

from __future__ import annotations

from typing import Any

from moderation import logs

HEADER = "moderation_request_id"


def _add_request_id(headers: dict[str, Any] | None = None, **_: Any) -> None:
    request_id = logs.current("request_id")
    if request_id is not None and headers is not None:
        headers.setdefault(HEADER, request_id)


def install_publish_hook() -> None:
    """Stamp every task sent from this process with the current request id (idempotent)."""
    from celery.signals import before_task_publish

    before_task_publish.connect(_add_request_id, weak=False, dispatch_uid="moderation-request-id")


def request_id_of(task_request: Any) -> str | None:
    """The request id a running task's message carries, if any and well-formed."""
    value = getattr(task_request, HEADER, None)
    if value is None:
        headers = getattr(task_request, "headers", None) or {}
        value = headers.get(HEADER)
    return value if isinstance(value, str) and logs.is_valid_request_id(value) else None


def content_id_of(args: Any) -> str | None:
    """The content id of a task whose first argument is an item or a video job."""
    if isinstance(args, list | tuple) and args and isinstance(args[0], dict):
        value = args[0].get("content_id")
        if isinstance(value, str) and len(value) <= 256:
            return value
    return None
