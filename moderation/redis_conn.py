"""One plain Redis client per process for the service's own keys (delivery counts, spool)."""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

from moderation.errors import ConfigError
from moderation.settings import Settings

if TYPE_CHECKING:
    import redis

_clients: dict[tuple[int, str, float], redis.Redis] = {}
_lock = threading.Lock()


def redis_client(settings: Settings) -> redis.Redis:
    """A client on the broker's Redis for the task path (delivery counts, the spool)."""
    if not settings.redis_url:
        raise ConfigError("MODERATION_REDIS_URL is not set")
    # Short timeouts: an outage must fail fast into the fault handling, not hang the task.
    return redis_at(settings.redis_url, timeout=3.0)


def redis_at(url: str, *, timeout: float) -> redis.Redis:
    """One pooled client per process, URL and timeout; made anew after fork (sockets are
    not shared across processes)."""
    import redis

    key = (os.getpid(), url, timeout)
    client = _clients.get(key)
    if client is None:
        with _lock:
            client = _clients.get(key)
            if client is None:
                client = redis.Redis.from_url(
                    url,
                    socket_timeout=timeout,
                    socket_connect_timeout=min(timeout, 2.0),
                    health_check_interval=30,
                )
                _clients[key] = client
    return client
