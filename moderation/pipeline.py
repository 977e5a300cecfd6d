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
from moderation.domain import Item, Verdict
from moderation.errors import UnsupportedMedia, from_signal_error
from moderation.media import load_media
from moderation.policy import BankHit, Signal, decide
from moderation.runtime import LoadedImageModel, Runtime
from moderation.settings import Settings


@dataclass
class MediaHashes:
    media_index: int
    hashes: ImageHashes

    @property
    def matchable(self) -> bool:
        return self.hashes.pdq_quality >= PDQ_MIN_QUALITY


@dataclass
class Analysis:
    signals: list[Signal] = field(default_factory=list)
    hits: list[BankHit] = field(default_factory=list)
    media: list[MediaHashes] = field(default_factory=list)


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
    return [
        Signal(
            source="keywords", category=h.category, score=h.score, detail=f"matched term {h.term!r}"
        )
        for h in rt.keywords.scan(text)
    ]


def image_model_signals(
    models: list[LoadedImageModel], images: list[tuple[int, Image.Image]]
) -> list[Signal]:
    """One signal per (model, mapped category, image): the best mapped label's probability.

    Each model sees all of an item's images in one batch.
    """
    signals: list[Signal] = []
    if not images:
        return signals
    pixels = [im for _, im in images]
    for m in models:
        clf = m.classifier
        regions: list[list[Detection]] | None = None
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
                signals.append(
                    Signal(
                        source=f"image_model:{m.name}",
                        category=category,
                        score=score,
                        detail=detail,
                    )
                )
    return signals


def analyse(rt: Runtime, item: Item) -> Analysis:
    out = Analysis()
    if item.text:
        out.signals.extend(text_signals(rt, item.text))
    limits = image_limits_from(rt.settings)
    band = rt.policy.matching.review_band
    images: list[tuple[int, Image.Image]] = []
    for i, ref in enumerate(item.media):
        name = f"media[{i}]"
        if ref.kind != "image":
            raise UnsupportedMedia(
                f"{name}: media kind {ref.kind!r} is not supported by this deployment yet",
                field=name,
            )
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
        out.media.append(MediaHashes(i, hashes))
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


def moderate(rt: Runtime, item: Item, *, started: float | None = None) -> tuple[Verdict, Analysis]:
    """Compute the verdict for one item (refreshing the bank index first if due)."""
    started = time.perf_counter() if started is None else started
    rt.refresh()
    analysis = analyse(rt, item)
    outcome = decide(rt.policy, analysis.signals, analysis.hits)
    verdict = Verdict(
        content_id=item.content_id,
        decision=outcome.decision,
        categories=outcome.categories,
        reasons=outcome.reasons,
        matches=outcome.matches,
        policy_version=rt.policy.version,
        latency_ms=round((time.perf_counter() - started) * 1000, 3),
    )
    return verdict, analysis
