"""64-bit SimHash of normalised text, for near-duplicate matching in text banks.

A pure function of the text; the exact algorithm (so any implementation can reproduce a
value bit for bit, and ``tests/test_text_simhash.py`` checks this one against a slow
transcription of these steps):

1. **Normalise** with :func:`models.text_normalize.normalize` (invisible and format
   characters removed, NFKC, case folding, accents dropped, traditional -> simplified
   Chinese, leetspeak and look-alike letters, runs of 3+ equal non-digit characters
   squeezed, whitespace collapsed).
2. **Content**: keep only letters and digits (``str.isalnum``): punctuation, symbols, emoji,
   whitespace and combining marks are dropped, so changed punctuation, spacing or word
   joining is invisible. Then squeeze every run of 3+ equal characters, digits included,
   to one ("23333333" -> "23").
3. **Too short**: content of fewer than :data:`MIN_CONTENT_CHARS` (12) characters gets no
   SimHash (``None``).
4. **Shingles**: one at every position ``i`` of the content: ``n`` characters from ``i``,
   where ``n = 3`` if ``content[i]`` is CJK (:func:`models.text_normalize.is_cjk`: Han,
   kana, bopomofo, Hangul; one character is about a syllable or a word) and ``n = 4``
   otherwise (Latin and other letters, digits). A shingle that would run past the end is
   dropped.
5. **Shingle hash**: ``h = 0``; for each code point ``c`` of the shingle,
   ``h = fmix64((h * 0x9E3779B97F4A7C15 + c) mod 2**64)``, where ``fmix64`` is
   MurmurHash3's 64-bit finaliser.
6. **Weights**: a distinct shingle occurring ``m`` times in the content weighs
   ``1 + floor(log2(m))`` (``m.bit_length()``): 1, 2, 2, 3, 3, 3, 3, 4, ... An integer, so
   the sums below are exact in any implementation.
7. **Bits**: bit ``k`` (value ``2**k``) of the SimHash is 1 iff the shingles whose hash has
   bit ``k`` set weigh more than half of the total weight (a tie gives 0), which is
   Charikar's sum of +-weight per bit, thresholded at 0.
8. **Format**: 16 lower-case hex digits, most significant first (``format(h, "016x")``).

Why these choices (measured; BENCHMARKS.md "Text near-duplicates", docs/decisions.md):
4-character shingles for Latin keep long unrelated English texts apart (with 3-grams their
common trigrams pulled 1,000-2,000-character texts to a mean distance of 21 bits, with
4-grams 27); 3-character shingles for CJK keep a changed character cheaper (4-grams lost 10
to 15 points of recall at distance 5). fmix64 over the code points instead of a
cryptographic hash per shingle: the same quality of bits for this purpose, vectorised in
numpy (0.04 ms instead of 0.11-0.2 ms for 280 characters of hashing, 0.6 ms instead of
7 ms for 20,000). Sublinear weights instead of plain counts: the shingles every English
text repeats ("the ", "ing ") otherwise add up to a shared component in long texts (mean
distance of unrelated 1,000-2,000-character texts 26.0 bits with counts, 28.2 with these
weights; pairs within 10 bits: 25 against 1 in 720,000) for 0.03 less recall of a changed
word. Squeezing digit runs stops "2333333" (Chinese "lol") from outweighing the rest of a
short text.
"""

from __future__ import annotations

import re

import numpy as np
import numpy.typing as npt

from models.text_normalize import normalize

__all__ = [
    "MIN_CONTENT_CHARS",
    "SIMHASH_BITS",
    "SIMHASH_HEX_CHARS",
    "hamming_simhash",
    "shingle_hashes",
    "simhash_content",
    "simhash_of_content",
    "text_simhash",
    "validate_simhash_hex",
]

SIMHASH_BITS = 64
SIMHASH_HEX_CHARS = SIMHASH_BITS // 4
# Below this many letters and digits a text is a few words: too little content to call
# another text a copy of it (keyword lists are the tool for short phrases).
MIN_CONTENT_CHARS = 12
CJK_SHINGLE = 3
OTHER_SHINGLE = 4

_NOT_CONTENT = re.compile(r"[\W_]+")
_RUN = re.compile(r"(.)\1\1+")
_HEX_DIGITS = frozenset("0123456789abcdef")

# The code point ranges of models.text_normalize.is_cjk (a test keeps them equal).
_CJK_RANGES = np.array(
    [
        (0x2E80, 0x2FDF),
        (0x3040, 0x30FF),
        (0x3100, 0x312F),
        (0x31A0, 0x31BF),
        (0x31F0, 0x31FF),
        (0x3400, 0x4DBF),
        (0x4E00, 0x9FFF),
        (0xAC00, 0xD7AF),
        (0xF900, 0xFAFF),
        (0x20000, 0x3134F),
    ],
    dtype=np.uint64,
)
_CJK_LO = np.ascontiguousarray(_CJK_RANGES[:, 0])
_CJK_HI = np.ascontiguousarray(_CJK_RANGES[:, 1])

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_FMIX_1 = np.uint64(0xFF51AFD7ED558CCD)
_FMIX_2 = np.uint64(0xC4CEB9FE1A85EC53)
_S33 = np.uint64(33)

U64 = npt.NDArray[np.uint64]


def _fmix64(x: U64) -> U64:
    """MurmurHash3's 64-bit finaliser, in place on a uint64 array (wrapping arithmetic)."""
    x ^= x >> _S33
    x *= _FMIX_1
    x ^= x >> _S33
    x *= _FMIX_2
    x ^= x >> _S33
    return x


def _step(h: U64, c: U64) -> U64:
    """One shingle-hash round: ``fmix64(h * golden + c)``."""
    return _fmix64(h * _GOLDEN + c)


def _cjk_mask(cp: U64) -> npt.NDArray[np.bool_]:
    slot = np.searchsorted(_CJK_LO, cp, side="right").astype(np.int64) - 1
    inside = slot >= 0
    hi = _CJK_HI[np.maximum(slot, 0)]
    return inside & (cp <= hi)


def simhash_content(text: str) -> str:
    """Steps 1-2: the letters and digits of the normalised text, long runs squeezed."""
    return _RUN.sub(r"\1", _NOT_CONTENT.sub("", normalize(text)))


def shingle_hashes(content: str) -> U64:
    """Steps 4-5: the hash of every shingle of ``content``, in position order."""
    cp = np.frombuffer(content.encode("utf-32-le"), dtype="<u4").astype(np.uint64)
    n = len(cp)
    if n < CJK_SHINGLE:
        return np.empty(0, dtype=np.uint64)
    with np.errstate(over="ignore"):
        h3 = _fmix64(cp[: n - 2].copy())
        h3 = _step(h3, cp[1 : n - 1])
        h3 = _step(h3, cp[2:])  # 3-shingle at each i in [0, n - 3]
        h4 = _step(h3[: n - 3].copy(), cp[3:])  # 4-shingle at each i in [0, n - 4]
    cjk = _cjk_mask(cp[: n - 2])
    body = np.where(cjk[: n - 3], h3[: n - 3], h4)
    if cjk[n - 3]:  # the last position fits a 3-shingle only
        body = np.append(body, h3[n - 3])
    return body


def simhash_of_content(content: str) -> str | None:
    """Steps 3-8 on a content string from :func:`simhash_content`."""
    if len(content) < MIN_CONTENT_CHARS:
        return None
    keys, counts = np.unique(shingle_hashes(content), return_counts=True)
    # frexp's exponent of a positive integer is its bit length, exactly.
    weights = np.frexp(counts)[1].astype(np.int64)
    # Big-endian bytes unpacked: column 0 is bit 63, column 63 is bit 0.
    bits = np.unpackbits(keys.astype(">u8").view(np.uint8).reshape(-1, 8), axis=1)
    ones = weights @ bits.astype(np.int64)
    return np.packbits(2 * ones > int(weights.sum())).tobytes().hex()


def text_simhash(text: str) -> str | None:
    """The 64-bit SimHash of ``text`` as 16 hex digits, or None when it is too short."""
    return simhash_of_content(simhash_content(text))


def validate_simhash_hex(value: str) -> str:
    """``value`` lower-cased; ValueError unless it is exactly 16 hex digits."""
    if not isinstance(value, str):
        raise ValueError(f"simhash must be a string, got {type(value).__name__}")
    low = value.lower()
    if len(low) != SIMHASH_HEX_CHARS or not _HEX_DIGITS.issuperset(low):
        raise ValueError(f"simhash must be {SIMHASH_HEX_CHARS} hex characters, got {value[:80]!r}")
    return low


def hamming_simhash(a: str, b: str) -> int:
    """Bits that differ between two SimHash hex values."""
    return (int(validate_simhash_hex(a), 16) ^ int(validate_simhash_hex(b), 16)).bit_count()


def _bench(argv: list[str] | None = None) -> None:
    """``python -m models.text_simhash``: time the hash of 280 and 20,000 characters."""
    import argparse
    import timeit
    from functools import partial

    parser = argparse.ArgumentParser(description=_bench.__doc__)
    parser.add_argument("--reps", type=int, default=2000)
    args = parser.parse_args(argv)
    english = (
        "Congratulations! You have been selected to receive a free gift card worth $500. "
        "Click the link below and enter your details to claim your reward before it expires. "
    )
    chinese = "恭喜您获得五百元购物卡一张，请点击下方链接填写信息领取奖励，名额有限先到先得。"
    samples = {
        "280 chars English": (english * 4)[:280],
        "280 chars Chinese": (chinese * 8)[:280],
        "280 chars mixed": ((english[:70] + chinese[:35]) * 4)[:280],
        "20,000 chars English": (english * 200)[:20_000],
    }
    for name, text in samples.items():
        reps = args.reps if len(text) < 1000 else max(10, args.reps // 50)
        content = simhash_content(text)
        whole = min(timeit.repeat(partial(text_simhash, text), number=reps, repeat=5)) / reps
        part = min(timeit.repeat(partial(simhash_of_content, content), number=reps, repeat=5))
        print(
            f"{name:22} total {whole * 1e3:7.3f} ms   "
            f"(of which shingles + SimHash {part / reps * 1e3:6.3f} ms)"
        )


if __name__ == "__main__":
    _bench()
