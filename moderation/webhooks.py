"""Signed webhook events to the platform: recorded, then delivered with retries.

Every event is a row in ``webhook_deliveries`` before it is sent, so an event survives a
worker crash and operators can list what failed. The body is JSON; the signature header
is ``X-Moderation-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`` with
the configured secret (the scheme Stripe and GitHub receivers already know), and
``X-Moderation-Delivery`` carries the delivery id so a receiver can drop duplicates
(delivery is at least once).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from moderation.errors import ConfigError, NotFound
from moderation.runtime import Runtime
from moderation.storage.tables import WebhookDeliveryRow

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Moderation-Signature"
DELIVERY_HEADER = "X-Moderation-Delivery"
EVENT_HEADER = "X-Moderation-Event"
# A receiver should refuse signatures older than this (replayed requests).
SIGNATURE_TOLERANCE_S = 300


class DeliveryFailed(Exception):
    """One attempt failed; the task retries it with backoff."""


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The signature header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(
    secret: str,
    body: bytes,
    header: str,
    *,
    now: float | None = None,
    tolerance_s: float = SIGNATURE_TOLERANCE_S,
) -> bool:
    """True if ``header`` signs ``body`` with ``secret`` recently enough (for receivers)."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def enqueue(rt: Runtime, event: str, content_id: str, data: dict[str, Any]) -> int | None:
    """Record an event and queue its delivery; None when no webhook is configured."""
    if not rt.settings.webhook_url:
        return None
    with rt.session() as s:
        row = WebhookDeliveryRow(
            event=event,
            content_id=content_id,
            status="pending",
            payload=data,
            attempts=0,
        )
        s.add(row)
        s.flush()
        delivery_id = row.id
    from moderation.queue import send_webhook

    send_webhook(delivery_id)
    return delivery_id


def deliver(rt: Runtime, delivery_id: int, *, final_attempt: bool) -> str:
    """Send one delivery; returns its status. Raises DeliveryFailed to be retried."""
    import httpx

    settings = rt.settings
    if not settings.webhook_url or settings.webhook_secret is None:
        raise ConfigError("webhook_url and webhook_secret must both be set to send webhooks")
    with rt.session() as s:
        row = s.get(WebhookDeliveryRow, delivery_id)
        if row is None:
            raise NotFound(f"no webhook delivery {delivery_id}")
        if row.status != "pending":
            return row.status
        payload = row.payload
        event, content_id = row.event, row.content_id
        row.attempts = (row.attempts or 0) + 1
    body = json.dumps(
        {"id": delivery_id, "event": event, "content_id": content_id, "data": payload},
        separators=(",", ":"),
        sort_keys=True,
    ).encode()
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(settings.webhook_secret.get_secret_value(), body, int(time.time())),
        DELIVERY_HEADER: str(delivery_id),
        EVENT_HEADER: event,
    }
    error: str | None = None
    status_code: int | None = None
    try:
        # Operator-configured URL: no redirects followed, nothing read beyond the status.
        response = httpx.post(
            settings.webhook_url,
            content=body,
            headers=headers,
            timeout=settings.webhook_timeout_s,
            follow_redirects=False,
        )
        status_code = response.status_code
        if not 200 <= status_code < 300:
            error = f"HTTP {status_code}"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"[:500]
    with rt.session() as s:
        row = s.get(WebhookDeliveryRow, delivery_id)
        assert row is not None
        row.response_status = status_code
        if error is None:
            row.status = "delivered"
            row.delivered_at = datetime.now(UTC)
            row.last_error = None
        else:
            row.last_error = error
            if final_attempt:
                row.status = "failed"
        status = row.status
    if error is not None and not final_attempt:
        raise DeliveryFailed(error)
    if error is not None:
        log.warning("webhook delivery %d failed for good: %s", delivery_id, error)
    return status
