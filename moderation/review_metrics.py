"""Review metrics: lease and decision counters, and queue depth and age read at scrape time."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import REGISTRY, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from moderation.storage.tables import ReviewDecisionRow

LEASES = Counter("moderation_review_leases_total", "Review items leased to a reviewer")
LEASE_EXPIRIES = Counter(
    "moderation_review_lease_expiries_total",
    "Leases that ran out before a decision (the item went back to its queue)",
)
DECISIONS = Counter(
    "moderation_review_decisions_total", "Review decisions", ["reviewer", "outcome"]
)


def note_take(*, lease_expired: bool) -> None:
    LEASES.inc()
    if lease_expired:
        LEASE_EXPIRIES.inc()


def note_decision(reviewer: str, outcome: str) -> None:
    DECISIONS.labels(reviewer=reviewer, outcome=outcome).inc()


def decisions_last_hour(session: Session) -> list[dict[str, Any]]:
    """Decisions per reviewer over the last hour (the console's metrics page)."""
    since = datetime.now(UTC) - timedelta(hours=1)
    rows = session.execute(
        select(ReviewDecisionRow.reviewer, func.count())
        .where(ReviewDecisionRow.decided_at >= since)
        .group_by(ReviewDecisionRow.reviewer)
        .order_by(ReviewDecisionRow.reviewer)
    )
    return [{"reviewer": r, "decisions": int(n)} for r, n in rows]


class QueueCollector(Collector):
    """Queue depth and oldest age, read from the database when /metrics is scraped."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from moderation import review_queue
        from moderation.storage import db

        depth = GaugeMetricFamily(
            "moderation_review_queue_depth", "Open items per review queue", labels=["queue"]
        )
        age = GaugeMetricFamily(
            "moderation_review_queue_oldest_seconds",
            "Age of the oldest open item per review queue",
            labels=["queue"],
        )
        try:
            with db.session_scope(self.database_url) as s:
                infos = review_queue.queue_infos(s, None)
        except Exception:  # a scrape must not fail because the database hiccuped
            infos = []
        for info in infos:
            depth.add_metric([info.queue], info.depth)
            age.add_metric([info.queue], info.oldest_age_s)
        yield depth
        yield age


_collector: QueueCollector | None = None


def register_queue_collector(database_url: str) -> None:
    """One collector per process, reading the database of the latest app created (a process
    serves one database; tests create apps on several)."""
    global _collector
    if _collector is None:
        _collector = QueueCollector(database_url)
        REGISTRY.register(_collector)
    _collector.database_url = database_url
