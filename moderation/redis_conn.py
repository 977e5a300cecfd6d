"""One plain Redis client per process for the service's own keys (delivery counts, spool)."""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

from moderation.errors import ConfigError
from moderation.settings import Settings

if TYPE_CHECKING:
    import redis

_clients: dict[tuple[int, str], redis.Redis] = {}
_lock = threading.Lock()


def redis_client(settings: Settings) -> redis.Redis:
    """A client on the broker's Redis, made anew after fork (sockets are not shared)."""
    import redis

    if not settings.redis_url:
        raise ConfigError("MODERATION_REDIS_URL is not set")
    key = (os.getpid(), settings.redis_url)
    client = _clients.get(key)
    if client is None:
        with _lock:
            client = _clients.get(key)
            if client is None:
                # Short timeouts: these calls sit on the task path, and an outage must fail
                # fast into the fault handling rather than hang the task.
                client = redis.Redis.from_url(
                    settings.redis_url,
                    socket_timeout=3.0,
                    socket_connect_timeout=2.0,
                    health_check_interval=30,
                )
                _clients[key] = client
    return client
