"""Celery queue depth, read from Redis when the API's /metrics is scraped."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from moderation.queue import QUEUES

log = logging.getLogger(__name__)

# kombu's Redis transport keeps a queue as a list per priority step: the plain name for the
# default step, the name + "\x06\x16" + step for the others (used when tasks set a priority).
_PRIORITY_SEP = "\x06\x16"
_PRIORITY_STEPS = (3, 6, 9)
# Messages taken by a worker and not yet acknowledged (acks_late): kombu's "unacked" hash.
_UNACKED_KEY = "unacked"


def _depth_families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
    depth = GaugeMetricFamily(
        "moderation_queue_depth",
        "Tasks waiting in each Celery queue (Redis list length)",
        labels=["queue"],
    )
    unacked = GaugeMetricFamily(
        "moderation_queue_unacked",
        "Tasks taken by workers and not yet acknowledged, all queues together",
    )
    return depth, unacked


class QueueDepthCollector(Collector):
    """LLEN of every Celery queue on the configured Redis, at scrape time."""

    def __init__(self) -> None:
        self.redis_url: str | None = None

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Names only: registering must not talk to Redis.
        yield from _depth_families()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth, unacked = _depth_families()
        if self.redis_url is None:
            return
        try:
            from moderation.redis_conn import redis_at

            with redis_at(self.redis_url, timeout=0.5).pipeline(transaction=False) as pipe:
                for queue in QUEUES:
                    pipe.llen(queue)
                    for step in _PRIORITY_STEPS:
                        pipe.llen(f"{queue}{_PRIORITY_SEP}{step}")
                pipe.hlen(_UNACKED_KEY)
                counts = pipe.execute()
        except Exception as exc:  # a scrape must not fail because Redis is down
            log.warning("queue depth unavailable: %s", type(exc).__name__)
            return
        per_queue = 1 + len(_PRIORITY_STEPS)
        for n, queue in enumerate(QUEUES):
            depth.add_metric([queue], sum(counts[n * per_queue : (n + 1) * per_queue]))
        unacked.add_metric([], counts[-1])
        yield depth
        yield unacked


_collector: QueueDepthCollector | None = None


def watch_queues(redis_url: str | None) -> None:
    """Report the depth of the queues on this Redis (the last app created in a process wins:
    one collector per process, since metric names must be unique in the registry)."""
    global _collector
    if _collector is None:
        _collector = QueueDepthCollector()
        REGISTRY.register(_collector)
    _collector.redis_url = redis_url
