"""Text near-duplicate benchmark: SimHash speed, distances of edited copies and of unrelated
texts, on the labelled sets in ``../shared/data`` (read from a path, never copied here).

``moderation bench simhash --data ../shared/data`` prints the tables behind the text
bank threshold (BENCHMARKS.md, "Text near-duplicates").
"""

from __future__ import annotations

import csv
import html
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from models.text_normalize import is_cjk
from models.text_simhash import (
    MIN_CONTENT_CHARS,
    simhash_content,
    simhash_of_content,
    text_simhash,
)

THRESHOLDS = (3, 4, 5, 6, 7, 8)
# Pairs of "unrelated" texts whose 3-character shingle sets overlap this much are partial
# copies (a retweet with another @mention in front), not independent texts.
COPY_JACCARD = 0.5


def read_column(path: Path, column: str) -> list[str]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        return [html.unescape(row[column]) for row in csv.DictReader(f)]


def english(data: Path) -> list[str]:
    return read_column(data / "text/davidson/labeled_data.csv", "tweet")


def chinese(data: Path) -> list[str]:
    cold = data / "text/cold"
    return [t for name in ("train.csv", "dev.csv") for t in read_column(cold / name, "TEXT")]


def _as_int(value: str | None) -> int:
    assert value is not None
    return int(value, 16)


def hashes(contents: list[str]) -> np.ndarray:
    return np.array([_as_int(simhash_of_content(c)) for c in contents], dtype=np.uint64)


def trigrams(content: str) -> set[str]:
    return {content[i : i + 3] for i in range(len(content) - 2)}


def close_pairs(
    values: np.ndarray, radius: int, block: int = 1000
) -> Iterator[tuple[int, int, int]]:
    """``(distance, i, j)`` for every pair i < j within ``radius`` (blocked all-pairs)."""
    for start in range(0, len(values), block):
        d = np.bitwise_count(values[start : start + block, None] ^ values[None, :])
        rows, cols = np.nonzero(d <= radius)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            if r + start < c:
                yield int(d[r, c]), r + start, c


def unrelated_tail(contents: list[str], radius: int = 8) -> dict[str, object]:
    """All pairs of distinct contents: how many are within each threshold, split into
    partial copies (shingle Jaccard >= COPY_JACCARD) and the rest."""
    values = hashes(contents)
    other = np.zeros(radius + 1, dtype=np.int64)
    copies = np.zeros(radius + 1, dtype=np.int64)
    closest: list[tuple[int, str, str]] = []
    for d, i, j in close_pairs(values, radius):
        a, b = trigrams(contents[i]), trigrams(contents[j])
        if len(a & b) / max(1, len(a | b)) >= COPY_JACCARD:
            copies[d] += 1
        else:
            other[d] += 1
            closest.append((d, contents[i], contents[j]))
    rng = np.random.default_rng(0)
    sample = rng.integers(0, len(values), (200_000, 2))
    sample = sample[sample[:, 0] != sample[:, 1]]
    dist = np.bitwise_count(values[sample[:, 0]] ^ values[sample[:, 1]]).astype(np.float64)
    n = len(values)
    return {
        "texts": n,
        "pairs": n * (n - 1) // 2,
        "mean": float(dist.mean()),
        "sd": float(dist.std()),
        "unrelated_within": {t: int(other[: t + 1].sum()) for t in THRESHOLDS},
        "copies_within": {t: int(copies[: t + 1].sum()) for t in THRESHOLDS},
        "closest": sorted(closest)[:5],
    }


def concatenations(
    texts: list[str], lo: int, hi: int, sep: str, count: int, seed: int
) -> list[str]:
    """Texts of ``lo``..``hi`` content characters made of distinct source texts, none
    reused, so every pair is unrelated."""
    pool = list(dict.fromkeys(texts))
    random.Random(seed).shuffle(pool)
    out: list[str] = []
    i = 0
    while i < len(pool) and len(out) < count:
        parts: list[str] = []
        size = 0
        while i < len(pool) and size < lo:
            parts.append(pool[i])
            size += len(simhash_content(pool[i]))
            i += 1
        if lo <= size <= hi:
            out.append(sep.join(parts))
    return out


Edit = Callable[[str, random.Random], str]


def _words(text: str) -> list[str]:
    return text.split(" ")


def change_words(k: int, vocab: list[str]) -> Edit:
    def edit(text: str, rng: random.Random) -> str:
        words = _words(text)
        slots = [i for i, w in enumerate(words) if w.isalpha()]
        for i in rng.sample(slots, min(k, len(slots))):
            words[i] = rng.choice(vocab)
        return " ".join(words)

    return edit


def change_chars(k: int, alphabet: list[str]) -> Edit:
    def edit(text: str, rng: random.Random) -> str:
        chars = list(text)
        slots = [i for i, c in enumerate(chars) if is_cjk(c)]
        for i in rng.sample(slots, min(k, len(slots))):
            chars[i] = rng.choice(alphabet)
        return "".join(chars)

    return edit


def punctuation(text: str, rng: random.Random) -> str:
    return text.replace(",", "").replace(".", "!").replace("，", ",").replace("。", "!") + " !!!"


def zero_width(text: str, rng: random.Random) -> str:
    return "".join(c + ("\u200b" if rng.random() < 0.3 else "") for c in text)


def append_url(text: str, rng: random.Random) -> str:
    return f"{text} https://t.co/{rng.getrandbits(40):x}"


def traditional(text: str, rng: random.Random) -> str:
    import opencc

    return str(opencc.OpenCC("s2t").convert(text))


def spaced(text: str, rng: random.Random) -> str:
    return " ".join(text)


def edit_distances(texts: list[str], edit: Edit, seed: int) -> np.ndarray:
    rng = random.Random(seed)
    out = []
    for t in texts:
        a, b = text_simhash(t), text_simhash(edit(t, rng))
        if a is not None and b is not None:
            out.append((_as_int(a) ^ _as_int(b)).bit_count())
    return np.array(out, dtype=np.int64)


def _row(name: str, d: np.ndarray) -> str:
    cells = " | ".join(f"{np.mean(d <= t):.2f}" for t in THRESHOLDS)
    return f"| {name} | {len(d)} | {np.median(d):.0f} | {int(d.max())} | {cells} |"


def speed() -> list[str]:
    english_text = (
        "Congratulations! You have been selected to receive a free gift card worth $500. "
        "Click the link below and enter your details to claim your reward before it expires. "
    )
    chinese_text = "恭喜您获得五百元购物卡一张，请点击下方链接填写信息领取奖励，名额有限先到先得。"
    lines = []
    for name, text, reps in (
        ("280 chars English", (english_text * 4)[:280], 2000),
        ("280 chars Chinese", (chinese_text * 8)[:280], 2000),
        ("280 chars mixed", ((english_text[:70] + chinese_text[:35]) * 4)[:280], 2000),
        ("20,000 chars English", (english_text * 200)[:20_000], 40),
    ):
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(reps):
                text_simhash(text)
            best = min(best, (time.perf_counter() - start) / reps)
        lines.append(f"{name}: {best * 1e3:.3f} ms (normalise + SimHash, best of 5)")
    return lines


def index_speed(size: int, radius: int, queries: int = 50, seed: int = 0) -> str:
    """A text bank's 64-bit HammingIndex of ``size`` random SimHashes: one query's latency."""
    from moderation.index import HammingIndex

    rng = np.random.default_rng(seed)
    index = HammingIndex(bits=64)
    index.add_many(np.arange(size), rng.integers(0, 256, size=(size, 8), dtype=np.uint8))
    probes = rng.integers(0, 256, size=(queries + 1, 8), dtype=np.uint8)
    index.search(probes[0].tobytes(), radius)  # faiss imported, caches warm
    times = []
    for q in probes[1:]:
        start = time.perf_counter()
        index.search(q.tobytes(), radius)
        times.append(time.perf_counter() - start)
    per_row = index.nbytes_resident() / size
    return (
        f"64-bit index, {size:,} SimHashes, radius {radius}, one thread: "
        f"p50 {np.median(times) * 1e3:.2f} ms, p95 {np.percentile(times, 95) * 1e3:.2f} ms, "
        f"{per_row:.0f} bytes per row"
    )


def run(data: Path, seed: int = 1, index_size: int = 10_000_000) -> None:
    for line in speed():
        print(line)
    if index_size:
        print(index_speed(index_size, radius=7))
    en_raw, zh_raw = english(data), chinese(data)
    header = "| edit | texts | median | max | " + " | ".join(f"<= {t}" for t in THRESHOLDS) + " |"
    rule = "|---|---|---|---|" + "---|" * len(THRESHOLDS)

    vocab = sorted({w for t in en_raw[:5000] for w in t.lower().split() if w.isalpha()})
    alphabet = sorted({c for t in zh_raw[:5000] for c in t if is_cjk(c)})
    for lang, raw, sep, word_edit, edits in (
        (
            "English (Davidson tweets)",
            en_raw,
            " ",
            change_words(1, vocab),
            {
                "punctuation": punctuation,
                "zero-width": zero_width,
                "upper case": lambda t, r: t.upper(),
                "2 words changed": change_words(2, vocab),
                "URL appended": append_url,
            },
        ),
        (
            "Chinese (COLD)",
            zh_raw,
            "，",
            change_chars(1, alphabet),
            {
                "punctuation": punctuation,
                "zero-width": zero_width,
                "traditional": traditional,
                "spaced out": spaced,
                "2 chars changed": change_chars(2, alphabet),
                "URL appended": append_url,
            },
        ),
    ):
        print(f"\n{lang}: distance between a text and its edited copy (fraction within)\n")
        print(header)
        print(rule)
        base = concatenations(raw, 40, 280, sep, 1000, seed)
        for name, edit in edits.items():
            print(_row(f"{name}, 40-280 chars", edit_distances(base, edit, seed)))
        one = "1 word changed" if "English" in lang else "1 char changed"
        for lo, hi in ((12, 40), (40, 80), (80, 160), (160, 280), (280, 600), (1000, 2000)):
            texts = concatenations(raw, lo, hi, sep, 600, seed + lo)
            print(_row(f"{one}, {lo}-{hi} chars", edit_distances(texts, word_edit, seed)))

        contents = list(dict.fromkeys(simhash_content(t) for t in raw))
        contents = [c for c in contents if len(c) >= MIN_CONTENT_CHARS]
        tail = unrelated_tail(contents)
        print(
            f"\n{lang}, all pairs of {tail['texts']} distinct texts ({tail['pairs']:.2e} pairs): "
            f"mean {tail['mean']:.1f}, sd {tail['sd']:.2f}; pairs within t that are not "
            f"partial copies {tail['unrelated_within']}; partial copies {tail['copies_within']}"
        )
        closest = tail["closest"]
        assert isinstance(closest, list)
        for d, a, b in closest[:3]:
            print(f"   {d}: {a[:60]!r} / {b[:60]!r}")
        for lo, hi, count in ((160, 280, 3000), (1000, 2000, 1200)):
            docs = [simhash_content(t) for t in concatenations(raw, lo, hi, sep, count, seed + 7)]
            values = hashes(docs)
            d = np.bitwise_count(values[:, None] ^ values[None, :])[
                np.triu_indices(len(values), 1)
            ].astype(np.int64)
            within = {t: int((d <= t).sum()) for t in THRESHOLDS}
            print(
                f"{lang}, unrelated {lo}-{hi} chars, {len(d):.2e} pairs: mean {d.mean():.1f}, "
                f"min {d.min()}, within t {within}"
            )
