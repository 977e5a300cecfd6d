"""From a validated item to signals, bank hits and a verdict; no database writes here."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from PIL import Image

from models.errors import SignalError
from models.image_classifier import Detection, NudeNetDetector
from models.image_decode import DecodedImage, ImageLimits, decode_frames, decode_image
from models.image_hash import PDQ_MIN_QUALITY, ImageHashes, hash_image
from models.image_robust import HashVariant, query_variants, reference_variants
from models.text_normalize import normalize
from moderation.domain import Item, MediaRef, Reason, Verdict
from moderation.errors import UnsupportedMedia, from_signal_error
from moderation.media import load_media
from moderation.metrics import timed_model
from moderation.policy import BankHit, Signal, decide
from moderation.runtime import LoadedImageModel, LoadedTextModel, Runtime
from moderation.settings import Settings
from moderation.text_matching import text_bank_hits
from moderation.works import name_works_of


@dataclass
class MediaHashes:
    media_index: int
    hashes: ImageHashes
    # The decoded (reduced) picture, kept so an item sent to review can show a preview.
    image: Image.Image | None = None

    @property
    def matchable(self) -> bool:
        return self.hashes.pdq_quality >= PDQ_MIN_QUALITY


@dataclass(frozen=True)
class PendingVideo:
    """A video whose frames are left to the ``video`` queue; its thumbnail is analysed now."""

    media_index: int
    ref: MediaRef
    duration_s: float


@dataclass
class Analysis:
    signals: list[Signal] = field(default_factory=list)
    hits: list[BankHit] = field(default_factory=list)
    media: list[MediaHashes] = field(default_factory=list)
    videos: list[PendingVideo] = field(default_factory=list)


def image_limits_from(settings: Settings) -> ImageLimits:
    lim = settings.limits
    return ImageLimits(
        max_bytes=lim.max_media_bytes,
        max_pixels=lim.max_image_pixels,
        max_side=lim.max_image_side,
        max_frames=lim.max_image_frames,
    )


def decode_image_data(data: bytes, limits: ImageLimits, field_name: str) -> DecodedImage:
    """The one canonical decode: bounded, upright RGB, longest side 512 (see image_decode).

    Its image feeds both the hashes and the classifiers, so each upload is decoded once.
    """
    try:
        return decode_image(data, limits)
    except SignalError as exc:
        raise from_signal_error(exc, field_name) from exc


def hash_decoded(
    decoded: DecodedImage, field_name: str, *, pdq: tuple[str, int] | None = None
) -> ImageHashes:
    """Hashes of a decoded image: the single place queries and bank entries are hashed."""
    try:
        return hash_image(decoded.image, pdq=pdq)
    except SignalError as exc:
        raise from_signal_error(exc, field_name) from exc


def hash_image_data(data: bytes, limits: ImageLimits, field_name: str) -> ImageHashes:
    """The one canonical decode-and-hash path, shared by queries and bank entries."""
    return hash_decoded(decode_image_data(data, limits, field_name), field_name)


def hash_reference_image(
    data: bytes, limits: ImageLimits, field_name: str
) -> tuple[ImageHashes, list[HashVariant]]:
    """A bank entry's hashes from its image: the plain ones, plus the extra reference
    hashes (border-stripped, central window) that crop and border robustness meet."""
    decoded = decode_image_data(data, limits, field_name)
    return hash_decoded(decoded, field_name), reference_variants(decoded.image)


# An animation is matched on every frame up to the frame limit (a harmless first frame must
# not hide a banked one) but classified on at most this many, evenly spaced: each costs a
# model run (~12 ms), each hash well under 1 ms.
CLASSIFIED_FRAMES = 4


def later_frames(data: bytes, first: DecodedImage, limits: ImageLimits) -> list[Image.Image]:
    """Frames 2..N of an animation (N = the frame limit), decoded like the first.

    A frame that cannot be decoded ends the list: the first frame already gave a result.
    """
    try:
        frames = decode_frames(data, limits)
    except SignalError:
        return []
    return [f.image for f in frames[1:]]


def frame_variants(frames: list[Image.Image]) -> list[HashVariant]:
    """The plain PDQ hash of each later frame, distinct ones only, named by frame number."""
    out: list[HashVariant] = []
    seen: set[str] = set()
    for n, frame in enumerate(frames, start=2):
        h = hash_image(frame)
        if h.pdq not in seen:
            seen.add(h.pdq)
            out.append(HashVariant(f"frame_{n}", h.pdq, h.pdq_quality))
    return out


def sample_frames(frames: list[Image.Image], k: int) -> list[Image.Image]:
    """Up to ``k`` frames spread evenly over ``frames``, the last included."""
    if k <= 0 or not frames:
        return []
    if len(frames) <= k:
        return frames
    step = len(frames) / k
    return [frames[min(len(frames) - 1, round((j + 1) * step) - 1)] for j in range(k)]


def text_signals(rt: Runtime, text: str) -> list[Signal]:
    """Keyword hits and text model scores, both on the same normalised text."""
    normalized = normalize(text)
    signals = [
        Signal(
            source="keywords", category=h.category, score=h.score, detail=f"matched term {h.term!r}"
        )
        for h in rt.keywords.scan_normalized(normalized)
    ]
    if normalized and rt.policy.enabled_text_models:
        signals.extend(text_model_signals(rt.text_models(), normalized))
    return signals


def classify_normalized(
    models: list[LoadedTextModel], texts: list[str]
) -> list[list[dict[str, float]]]:
    """Per model, ``{label: probability}`` for each already-normalised, non-empty text.

    A text too long for a model's windows is an ``input_too_large`` error on ``text``.
    """
    out: list[list[dict[str, float]]] = []
    try:
        for m in models:
            with timed_model(m.name, "text"):
                out.append(m.classifier.classify_batch(texts))
    except SignalError as exc:
        raise from_signal_error(exc, "text") from exc
    return out


@dataclass(frozen=True)
class TextScores:
    """The text models' view of one text (``moderation classify text``)."""

    # Probability that the text violates any text category: per model its overall label, or
    # its highest mapped category (LoadedTextModel.overall); the highest over the models.
    score: float
    # Per category after the policy mapping, the highest over the models, as in a verdict.
    categories: dict[str, float]


def score_texts(models: list[LoadedTextModel], texts: list[str]) -> list[TextScores]:
    """Score raw texts with the text models, normalised exactly as the task normalises them.

    A text that is empty after normalisation goes to no model and scores 0 everywhere.
    """
    normalized = [normalize(t) for t in texts]
    todo = [i for i, t in enumerate(normalized) if t]
    names = sorted({c for m in models for c in m.labels_by_category})
    scores = [0.0] * len(texts)
    categories = [dict.fromkeys(names, 0.0) for _ in texts]
    results = classify_normalized(models, [normalized[i] for i in todo])
    for m, per_text in zip(models, results, strict=True):
        for i, probs in zip(todo, per_text, strict=True):
            scores[i] = max(scores[i], m.overall(probs))
            for category, (_, score) in m.category_scores(probs).items():
                categories[i][category] = max(categories[i][category], score)
    return [TextScores(s, c) for s, c in zip(scores, categories, strict=True)]


def text_model_signals(models: list[LoadedTextModel], normalized: str) -> list[Signal]:
    """One signal per (model, mapped category): the best mapped label's probability."""
    return [
        Signal(
            source=f"text_model:{m.name}",
            category=category,
            score=score,
            detail=f"{label}={score:.4f}",
        )
        for m, (probs,) in zip(models, classify_normalized(models, [normalized]), strict=True)
        for category, (label, score) in m.category_scores(probs).items()
    ]


def image_model_signals(
    models: list[LoadedImageModel], images: list[tuple[int, Image.Image]]
) -> list[Signal]:
    """One signal per (model, mapped category, image): the best mapped label's probability.

    Each model sees all of an item's images in one batch.
    """
    return [s for _, s in indexed_image_model_signals(models, images)]


def indexed_image_model_signals(
    models: list[LoadedImageModel], images: list[tuple[int, Image.Image]], kind: str = "image"
) -> list[tuple[int, Signal]]:
    """:func:`image_model_signals`, each with the position in ``images`` it is about
    (``kind`` labels the model latency metric: ``image`` or ``video_frame``)."""
    signals: list[tuple[int, Signal]] = []
    if not images:
        return signals
    pixels = [im for _, im in images]
    for m in models:
        clf = m.classifier
        regions: list[list[Detection]] | None = None
        with timed_model(m.name, kind):
            if isinstance(clf, NudeNetDetector):
                regions = clf.detect_batch(pixels)
                results = [dict(zip(clf.labels, clf.scores(r), strict=True)) for r in regions]
            else:
                results = clf.classify_batch(pixels)
        for n, ((media_index, _), scores) in enumerate(zip(images, results, strict=True)):
            for category, labels in m.labels_by_category.items():
                label = max(labels, key=lambda lab: scores[lab])
                score = scores[label]
                detail = f"media[{media_index}]: {label}={score:.4f}"
                if regions is not None:
                    best = [d for d in regions[n] if d.label == label]
                    if best:
                        box = max(best, key=lambda d: d.score).box
                        detail += f" at (x, y, w, h)={box}"
                signal = Signal(
                    source=f"image_model:{m.name}", category=category, score=score, detail=detail
                )
                signals.append((n, signal))
    return signals


def analyse(rt: Runtime, item: Item) -> Analysis:
    out = Analysis()
    if item.text:
        out.signals.extend(text_signals(rt, item.text))
        out.hits.extend(text_bank_hits(rt, item.text))
    limits = image_limits_from(rt.settings)
    band = rt.policy.matching.review_band
    images: list[tuple[int, Image.Image]] = []
    for i, ref in enumerate(item.media):
        name = f"media[{i}]"
        if ref.kind == "video":
            out.videos.append(analyse_thumbnail(rt, i, ref, out, images))
            continue
        if ref.kind != "image":
            raise UnsupportedMedia(f"{name}: media kind {ref.kind!r} is not supported", field=name)
        data = load_media(ref, rt.media_policy, field=name)
        decoded = decode_image_data(data, limits, name)
        if rt.policy.matching.variants:
            variants = query_variants(decoded.image, min_quality=0)
            plain = variants[0]
            hashes = hash_decoded(decoded, name, pdq=(plain.pdq, plain.quality))
        else:
            hashes = hash_decoded(decoded, name)
            variants = [HashVariant("plain", hashes.pdq, hashes.pdq_quality)]
        later = later_frames(data, decoded, limits) if decoded.frames > 1 else []
        variants += frame_variants(later)
        out.media.append(MediaHashes(i, hashes, decoded.image))
        matchable = [v for v in variants if v.quality >= PDQ_MIN_QUALITY]
        if matchable:
            out.hits.extend(
                rt.banks.match_pdq_many(
                    [(v.pdq, v.margin, v.name) for v in matchable],
                    review_band=band,
                    media_index=i,
                )
            )
        images.append((i, decoded.image))
        images.extend((i, frame) for frame in sample_frames(later, CLASSIFIED_FRAMES - 1))
    if images and rt.policy.enabled_image_models:
        out.signals.extend(image_model_signals(rt.image_models(), images))
    return out


def analyse_thumbnail(
    rt: Runtime,
    media_index: int,
    ref: MediaRef,
    out: Analysis,
    images: list[tuple[int, Image.Image]],
) -> PendingVideo:
    """Probe a video and treat its thumbnail like an image; the frames are left for later."""
    from moderation.video import thumbnail, video_limits_from, video_media_policy

    name = f"media[{media_index}]"
    data = load_media(ref, video_media_policy(rt.media_policy, rt.settings), field=name)
    info, frame = thumbnail(data, video_limits_from(rt.settings), name)
    if frame is not None:
        pdq, quality = frame.pdq, frame.quality
        hashes = hash_image(frame.image, pdq=(pdq, quality))
        out.media.append(MediaHashes(media_index, hashes, frame.image))
        if quality >= PDQ_MIN_QUALITY:
            out.hits.extend(
                rt.banks.match_pdq_many(
                    [(pdq, 0, f"t={frame.t:.1f}s")],
                    review_band=rt.policy.matching.review_band,
                    media_index=media_index,
                )
            )
        images.append((media_index, frame.image))
    return PendingVideo(media_index, ref, info.duration_s)


def pending_reasons(policy_hold: bool, videos: list[PendingVideo]) -> list[Reason]:
    """The reason a first verdict carries while frames are analysed (``video`` source)."""
    return [
        Reason(
            source="video",
            category="pending",
            score=0.0,
            threshold=0.0,
            detail=f"media[{v.media_index}]: {v.duration_s:.1f} s of video queued for frame "
            "analysis" + ("; held for review until it is done" if policy_hold else ""),
        )
        for v in videos
    ]


def moderate(rt: Runtime, item: Item, *, started: float | None = None) -> tuple[Verdict, Analysis]:
    """Compute the verdict for one item (refreshing the bank index first if due).

    An item with videos gets its first verdict here, from its text, images and video
    thumbnails; held for review while the frames are pending if the policy says so.
    """
    started = time.perf_counter() if started is None else started
    rt.refresh()
    analysis = analyse(rt, item)
    outcome = decide(rt.policy, analysis.signals, analysis.hits)
    decision = outcome.decision
    reasons = outcome.reasons
    if analysis.videos:
        hold = rt.policy.video.hold_for_review
        reasons = reasons + pending_reasons(hold, analysis.videos)
        if hold and decision == "allow":
            decision = "review"
    verdict = Verdict(
        content_id=item.content_id,
        decision=decision,
        categories=outcome.categories,
        reasons=reasons,
        matches=name_works_of(rt, outcome.matches),
        policy_version=rt.policy.version,
        latency_ms=round((time.perf_counter() - started) * 1000, 3),
    )
    return verdict, analysis
