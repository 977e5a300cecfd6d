"""Near-duplicate text matching: an item's text against the text banks (64-bit SimHash).

The SimHash algorithm is in :mod:`models.text_simhash`; the banks' indexes are in the
worker's :class:`~moderation.matching.BankMatcher`. A text too short for a SimHash
(``models.text_simhash.MIN_CONTENT_CHARS``) is matched by keyword lists only.
"""

from __future__ import annotations

import functools

from models.text_simhash import SIMHASH_BITS, text_simhash
from moderation.matching import SIGNAL_BITS, TEXT_MEDIA_INDEX
from moderation.policy import BankHit
from moderation.runtime import Runtime

__all__ = ["TEXT_MEDIA_INDEX", "item_simhash", "text_bank_hits", "text_review_band"]


@functools.lru_cache(maxsize=16)
def item_simhash(text: str) -> str | None:
    """The SimHash of an item's text (None if too short), computed once per item: the
    pipeline matches it and the service records it, so the second call is a cache hit."""
    return text_simhash(text)


def text_review_band(review_band: int) -> int:
    """The policy's review band (bits of a 256-bit PDQ hash) scaled to a 64-bit SimHash:
    the default 8 becomes 2. The same band on 64 bits would reach 8 bits past a text
    bank's threshold, where unrelated texts start to meet (BENCHMARKS.md)."""
    return review_band * SIMHASH_BITS // SIGNAL_BITS["pdq"]


def text_bank_hits(rt: Runtime, text: str) -> list[BankHit]:
    """Hits of ``text`` in the enabled text banks, each at its own threshold (plus the
    scaled review band for ``block`` banks), with media index ``TEXT_MEDIA_INDEX``."""
    if not text:
        return []
    value = item_simhash(text)
    if value is None:
        return []
    band = text_review_band(rt.policy.matching.review_band)
    return rt.banks.match_simhash(value, review_band=band)
