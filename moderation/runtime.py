"""Per-process state a worker (or the CLI) needs to moderate: policy, keyword lists, bank index."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from moderation.keywords import KeywordMatcher
from moderation.matching import BankMatcher
from moderation.media import MediaPolicy
from moderation.policy import Policy, load_policy
from moderation.settings import Settings, get_settings
from moderation.storage import db
from moderation.storage.tables import KeywordTermRow

PACKAGED_KEYWORDS = Path(__file__).parent / "data" / "keywords"


@dataclass
class Runtime:
    settings: Settings
    policy: Policy
    keywords: KeywordMatcher
    banks: BankMatcher
    media_policy: MediaPolicy
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def database_url(self) -> str:
        return self.settings.resolved_database_url

    def session(self) -> AbstractContextManager[Session]:
        return db.session_scope(self.database_url)

    def refresh(self, *, force: bool = False) -> None:
        """Pick up bank and keyword changes; one indexed query when nothing changed."""
        interval = 0.0 if force else self.settings.index_refresh_interval_s
        if time.monotonic() - self.banks.last_refresh < interval:
            return
        with self.session() as s:
            # The bank matcher reads the whole change log; keyword changes ride along.
            if "keyword" in self.banks.refresh(s):
                self.keywords = build_keywords(self.settings, s)


def build_keywords(settings: Settings, session: Session) -> KeywordMatcher:
    dirs = [PACKAGED_KEYWORDS]
    if settings.keyword_lists_dir is not None:
        dirs.append(settings.keyword_lists_dir)
    extra = [(r.category, r.term, r.score) for r in session.scalars(select(KeywordTermRow))]
    return KeywordMatcher.from_directories(dirs, extra)


def build_runtime(settings: Settings | None = None, *, migrate: bool = True) -> Runtime:
    settings = settings or get_settings()
    url = settings.resolved_database_url
    if migrate:
        db.migrate(url)
    banks = BankMatcher()
    with db.session_scope(url) as s:
        banks.load(s)
        # After load(): a term added in between is in the change log and replays later.
        keywords = build_keywords(settings, s)
    return Runtime(
        settings=settings,
        policy=load_policy(settings.policy_path),
        keywords=keywords,
        banks=banks,
        media_policy=MediaPolicy.from_settings(settings),
    )


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def get_runtime(factory: Callable[[], Runtime] = build_runtime) -> Runtime:
    """The process-wide runtime, built on first use (after any fork)."""
    global _runtime
    if _runtime is None:
        with _runtime_lock:
            if _runtime is None:
                _runtime = factory()
    return _runtime


def reset_runtime() -> None:
    global _runtime
    _runtime = None
