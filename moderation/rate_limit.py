"""Per-key rate limits, shared by every API process through Redis (moving windows).

Each key is limited by its own ``rate_limit`` when it has one, else by its role's default in
``settings.rate_limits``. A limit like ``20/second;600/minute`` allows a burst of 20 in any
second and 600 in any minute. When Redis cannot be reached the request is allowed and a
warning logged (fail open): the limiter protects capacity, and authentication and roles do
not depend on it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from functools import lru_cache
from typing import TYPE_CHECKING

from moderation.errors import RateLimited
from moderation.keys import UNLIMITED, Principal

if TYPE_CHECKING:
    from limits import RateLimitItem
    from limits.strategies import MovingWindowRateLimiter

    from moderation.settings import Settings

log = logging.getLogger(__name__)
_NAMESPACE = "moderation-ratelimit"
# After a Redis failure, requests skip the limiter this long instead of each waiting on it.
_BACKOFF_S = 5.0


class _Limiter:
    """One moving-window limiter on one storage, with a short back-off when it fails."""

    def __init__(self, storage_uri: str) -> None:
        from limits.storage import storage_from_string
        from limits.strategies import MovingWindowRateLimiter

        options: dict[str, float | str | bool] = {}
        if storage_uri.startswith(("redis://", "rediss://", "unix://")):
            storage_uri = storage_uri.replace("unix://", "redis+unix://", 1)
            options = {"socket_connect_timeout": 0.25, "socket_timeout": 0.25}
            options["key_prefix"] = _NAMESPACE
        self.storage_uri = storage_uri
        self.strategy: MovingWindowRateLimiter = MovingWindowRateLimiter(
            storage_from_string(storage_uri, **options)
        )
        self._down_until = 0.0
        self._lock = threading.Lock()

    def hit(self, items: list[RateLimitItem], key_id: int) -> float | None:
        """Count one request; seconds to wait if any limit is exhausted, else None."""
        if time.monotonic() < self._down_until:
            return None
        ident = str(key_id)
        try:
            for item in items:
                if not self.strategy.hit(item, _NAMESPACE, ident):
                    reset_at = self.strategy.get_window_stats(item, _NAMESPACE, ident).reset_time
                    return max(1.0, reset_at - time.time())
        except Exception as exc:  # any storage failure: allow, and stop asking for a moment
            with self._lock:
                self._down_until = time.monotonic() + _BACKOFF_S
            log.warning(
                "rate limiter storage unreachable, allowing requests for %.0f s: %s",
                _BACKOFF_S,
                exc,
            )
        return None


@lru_cache(maxsize=8)
def _limiter(storage_uri: str) -> _Limiter:
    return _Limiter(storage_uri)


@lru_cache(maxsize=256)
def _parse(text: str) -> list[RateLimitItem]:
    from limits import parse_many

    return list(parse_many(text))


def limit_for(settings: Settings, principal: Principal) -> str | None:
    """The key's own limit, else its role's default; None means unlimited."""
    text = principal.rate_limit or getattr(settings.rate_limits, principal.role, None)
    if not text or text.strip().lower() == UNLIMITED:
        return None
    return str(text)


def enforce(settings: Settings, principal: Principal) -> None:
    """Count one request of this key; raise RateLimited (429) once its limit is spent."""
    if not settings.rate_limits.enabled:
        return
    text = limit_for(settings, principal)
    if text is None:
        return
    limiter = _limiter(settings.redis_url or "memory://")
    wait = limiter.hit(_parse(text), principal.key_id)
    if wait is not None:
        retry_after = math.ceil(wait)
        raise RateLimited(
            f"rate limit {text!r} of this API key exceeded; retry in {retry_after} s",
            retry_after_s=retry_after,
            limit=text,
        )
