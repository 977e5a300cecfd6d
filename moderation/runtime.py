"""Per-process state a worker (or the CLI) needs to moderate: policy, keyword lists, bank index,
image and text classifiers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

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
from models.model_loading import ModelUnavailable
from models.text_classifier import TextClassifier
from moderation.errors import ConfigError
from moderation.keywords import KeywordMatcher
from moderation.matching import BankMatcher
from moderation.media import MediaPolicy
from moderation.policy import ImageModelSpec, ModelSpec, Policy, TextModelSpec, load_policy
from moderation.settings import Settings, get_settings
from moderation.storage import db
from moderation.storage.tables import KeywordTermRow

PACKAGED_KEYWORDS = Path(__file__).parent / "data" / "keywords"

SpecT = TypeVar("SpecT", bound=ModelSpec)
ClassifierT = TypeVar("ClassifierT", ImageClassifier, TextClassifier)


@dataclass(frozen=True)
class LoadedModel(Generic[SpecT, ClassifierT]):
    """An enabled policy model with its classifier, checked against the label mapping."""

    spec: SpecT
    classifier: ClassifierT
    labels_by_category: dict[str, list[str]]

    @property
    def name(self) -> str:
        return self.spec.name

    def category_scores(self, probs: Mapping[str, float]) -> dict[str, tuple[str, float]]:
        """Per mapped category: its most probable label and that label's probability."""
        out: dict[str, tuple[str, float]] = {}
        for category, labels in self.labels_by_category.items():
            label = max(labels, key=lambda lab: probs[lab])
            out[category] = (label, probs[label])
        return out


LoadedImageModel = LoadedModel[ImageModelSpec, ImageClassifier]


@dataclass(frozen=True)
class LoadedTextModel(LoadedModel[TextModelSpec, TextClassifier]):
    # The label meaning "violates any text category", if the model has one.
    overall_label: str | None = None

    def overall(self, probs: Mapping[str, float]) -> float:
        """Probability that the text violates any text category: the overall label's
        probability when the model has one, else the highest mapped category."""
        if self.overall_label is not None:
            return probs[self.overall_label]
        return max(score for _, score in self.category_scores(probs).values())


def _check_labels(family: str, spec: ModelSpec, labels: tuple[str, ...]) -> dict[str, list[str]]:
    """The spec's mapping by category, after checking that the model has every mapped label."""
    unknown = sorted(set(spec.categories) - set(labels))
    if unknown:
        raise ConfigError(
            f"{family} model {spec.name!r} has no label(s) {unknown} named in its policy "
            f"categories; its labels are {list(labels)}"
        )
    return spec.labels_by_category()


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
    return LoadedImageModel(
        spec=spec, classifier=clf, labels_by_category=_check_labels("image", spec, clf.labels)
    )


def load_image_models(policy: Policy, settings: Settings) -> list[LoadedImageModel]:
    return [load_image_model(spec, settings) for spec in policy.enabled_image_models]


def builtin_text_classifier(
    spec: TextModelSpec, threads: int, cache_dir: Path | None = None
) -> TextClassifier:
    """The service's own text model (kind ``builtin``): the one place it is constructed."""
    try:
        from models.text_builtin import BuiltinTextClassifier
    except ImportError as exc:
        raise ModelUnavailable(
            f"the builtin text model cannot be imported ({exc}); disable it in the policy "
            "or configure a transformers_dir model"
        ) from exc
    kwargs: dict[str, Any] = {"name": spec.name, "threads": threads, "cache_dir": cache_dir}
    if spec.path is not None:
        kwargs["directory"] = spec.path
    clf: TextClassifier = BuiltinTextClassifier(**kwargs)
    return clf


def load_text_model(spec: TextModelSpec, settings: Settings) -> LoadedTextModel:
    """Build one text classifier from its policy entry; any problem is a ConfigError."""
    # torch's thread count is process-wide: text and image models share the setting.
    threads = settings.image_model_threads
    clf: TextClassifier
    try:
        if spec.kind == "builtin":
            clf = builtin_text_classifier(spec, threads, settings.model_cache_dir)
        else:
            from models.text_hf import TransformersTextDirectoryClassifier

            assert spec.path is not None  # the policy validator requires it
            clf = TransformersTextDirectoryClassifier(
                spec.path, name=spec.name, threads=threads, expected_sha256=spec.sha256
            )
    except (ModelError, OSError) as exc:
        # OSError: the builtin model's artefacts missing or unreadable.
        raise ConfigError(f"text model {spec.name!r} ({spec.kind}): {exc}") from exc
    by_category = _check_labels("text", spec, clf.labels)
    overall = spec.overall_label or getattr(clf, "overall_label", None)
    if overall is not None and overall not in clf.labels:
        raise ConfigError(
            f"text model {spec.name!r} has no overall label {overall!r}; its labels are "
            f"{list(clf.labels)}"
        )
    return LoadedTextModel(
        spec=spec, classifier=clf, labels_by_category=by_category, overall_label=overall
    )


def load_text_models(policy: Policy, settings: Settings) -> list[LoadedTextModel]:
    return [load_text_model(spec, settings) for spec in policy.enabled_text_models]


@dataclass
class Runtime:
    settings: Settings
    policy: Policy
    keywords: KeywordMatcher
    banks: BankMatcher
    media_policy: MediaPolicy
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _image_models: list[LoadedImageModel] | None = field(default=None, repr=False)
    _text_models: list[LoadedTextModel] | None = field(default=None, repr=False)

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

    def text_models(self) -> list[LoadedTextModel]:
        """The policy's enabled text classifiers, loaded on first use (or by warm_up)."""
        if self._text_models is None:
            with self._lock:
                if self._text_models is None:
                    self._text_models = load_text_models(self.policy, self.settings)
        return self._text_models

    def warm_up(self) -> None:
        """Load the image and text models and run each once, so the first task pays for
        neither. Both kinds are tried even if one fails to load; then a ConfigError names
        every failure."""
        failures: list[str] = []
        loaders: list[Callable[[], list[LoadedImageModel] | list[LoadedTextModel]]] = [
            self.image_models,
            self.text_models,
        ]
        for load in loaders:
            try:
                for m in load():
                    m.classifier.warm_up()
            except ConfigError as exc:
                failures.append(exc.message)
        if failures:
            raise ConfigError("; ".join(failures))

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
