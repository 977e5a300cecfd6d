"""From a validated item to signals, bank hits and a verdict; no database writes here."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from models.errors import SignalError
from models.image_decode import ImageLimits, decode_image
from models.image_hash import PDQ_MIN_QUALITY, ImageHashes, hash_image
from moderation.domain import Item, Verdict
from moderation.errors import UnsupportedMedia, from_signal_error
from moderation.media import load_media
from moderation.policy import BankHit, Signal, decide
from moderation.runtime import Runtime
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


def hash_image_data(data: bytes, limits: ImageLimits, field_name: str) -> ImageHashes:
    """The one canonical decode-and-hash path, shared by queries and bank entries."""
    try:
        return hash_image(decode_image(data, limits).image)
    except SignalError as exc:
        raise from_signal_error(exc, field_name) from exc


def text_signals(rt: Runtime, text: str) -> list[Signal]:
    return [
        Signal(
            source="keywords", category=h.category, score=h.score, detail=f"matched term {h.term!r}"
        )
        for h in rt.keywords.scan(text)
    ]


def analyse(rt: Runtime, item: Item) -> Analysis:
    out = Analysis()
    if item.text:
        out.signals.extend(text_signals(rt, item.text))
    limits = image_limits_from(rt.settings)
    band = rt.policy.matching.review_band
    for i, ref in enumerate(item.media):
        name = f"media[{i}]"
        if ref.kind != "image":
            raise UnsupportedMedia(
                f"{name}: media kind {ref.kind!r} is not supported by this deployment yet",
                field=name,
            )
        hashes = hash_image_data(load_media(ref, rt.media_policy, field=name), limits, name)
        mh = MediaHashes(i, hashes)
        out.media.append(mh)
        if mh.matchable:
            out.hits.extend(rt.banks.match_pdq(hashes.pdq, review_band=band, media_index=i))
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
