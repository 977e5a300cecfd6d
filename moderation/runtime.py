"""Per-process state a worker (or the CLI) needs to moderate: policy, keyword lists, bank index,
image classifiers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.image_classifier import (
    ImageClassifier,
    ModelError,
    NudeNetDetector,
    OnnxDirectoryClassifier,
    OpenNSFWClassifier,
    TransformersDirectoryClassifier,
)
from moderation.errors import ConfigError
from moderation.keywords import KeywordMatcher
from moderation.matching import BankMatcher
from moderation.media import MediaPolicy
from moderation.policy import ImageModelSpec, Policy, load_policy
from moderation.settings import Settings, get_settings
from moderation.storage import db
from moderation.storage.tables import KeywordTermRow

PACKAGED_KEYWORDS = Path(__file__).parent / "data" / "keywords"


@dataclass(frozen=True)
class LoadedImageModel:
    """An enabled policy image model with its classifier, checked against the mapping."""

    spec: ImageModelSpec
    classifier: ImageClassifier
    labels_by_category: dict[str, list[str]]

    @property
    def name(self) -> str:
        return self.spec.name


def load_image_model(spec: ImageModelSpec, settings: Settings) -> LoadedImageModel:
    """Build one classifier from its policy entry; any problem is a ConfigError naming it."""
    threads, batch = settings.image_model_threads, settings.image_model_max_batch
    clf: ImageClassifier
    try:
        if spec.kind == "opennsfw":
            clf = OpenNSFWClassifier(
                name=spec.name, model_path=spec.path, threads=threads, max_batch=batch
            )
        elif spec.kind == "onnx_dir":
            assert spec.path is not None  # the policy validator requires it
            clf = OnnxDirectoryClassifier(
                spec.path,
                name=spec.name,
                threads=threads,
                max_batch=batch,
                expected_sha256=spec.sha256,
            )
        elif spec.kind == "transformers_dir":
            assert spec.path is not None
            clf = TransformersDirectoryClassifier(
                spec.path,
                name=spec.name,
                threads=threads,
                max_batch=batch,
                expected_sha256=spec.sha256,
            )
        else:
            clf = NudeNetDetector(name=spec.name, threads=threads, max_batch=batch)
    except ModelError as exc:
        raise ConfigError(f"image model {spec.name!r} ({spec.kind}): {exc}") from exc
    unknown = sorted(set(spec.categories) - set(clf.labels))
    if unknown:
        raise ConfigError(
            f"image model {spec.name!r} has no label(s) {unknown} named in its policy "
            f"categories; its labels are {list(clf.labels)}"
        )
    return LoadedImageModel(spec=spec, classifier=clf, labels_by_category=spec.labels_by_category())


def load_image_models(policy: Policy, settings: Settings) -> list[LoadedImageModel]:
    return [load_image_model(spec, settings) for spec in policy.enabled_image_models]


@dataclass
class Runtime:
    settings: Settings
    policy: Policy
    keywords: KeywordMatcher
    banks: BankMatcher
    media_policy: MediaPolicy
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _image_models: list[LoadedImageModel] | None = field(default=None, repr=False)

    @property
    def database_url(self) -> str:
        return self.settings.resolved_database_url

    def image_models(self) -> list[LoadedImageModel]:
        """The policy's enabled image classifiers, loaded on first use (or by warm_up)."""
        if self._image_models is None:
            with self._lock:
                if self._image_models is None:
                    self._image_models = load_image_models(self.policy, self.settings)
        return self._image_models

    def warm_up(self) -> None:
        """Load the image models and run each once, so the first task pays for neither."""
        for m in self.image_models():
            m.classifier.warm_up()

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
    banks = BankMatcher(search_threads=settings.index_search_threads)
    with db.session_scope(url) as s:
        banks.load(s, snapshot_dir=settings.index_snapshot_dir)
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
