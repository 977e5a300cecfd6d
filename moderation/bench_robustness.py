"""Near-copy robustness benchmark: recall at >= 99.99 % precision per transform.

The set is built from scikit-image's bundled photos in two folds: in each fold half of
the photos (whole, plus quadrant tiles of the larger ones) are the references, and
thousands of windows, blends and mosaics of the other half are the distractors. Every
reference is transformed 17 ways; a matcher must find each transform's own reference
while no distractor and no transform may come within the threshold of a wrong one.
One threshold per matcher for the whole set (a deployment has one, not one per
transform), the largest that keeps precision >= 99.99 %.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps

__all__ = ["TRANSFORMS", "Matcher", "default_matchers", "format_table", "run_robustness"]

Transform = Callable[[Image.Image, np.random.Generator], Image.Image]

# Photos, not drawings: logos, line art and synthetic shapes hash featureless.
PHOTOS = (
    "astronaut",
    "brick",
    "camera",
    "cell",
    "chelsea",
    "clock",
    "coffee",
    "coins",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "page",
    "retina",
    "rocket",
    "text",
)
DEPLOYED_THRESHOLD = 31
# References PDQ itself calls featureless are never matched by the service (quality < 50).
MIN_REFERENCE_QUALITY = 50


def _jpeg(quality: int) -> Transform:
    def apply(img: Image.Image, _: np.random.Generator) -> Image.Image:
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=quality)
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")

    return apply


def _resize(scale: float) -> Transform:
    def apply(img: Image.Image, _: np.random.Generator) -> Image.Image:
        w, h = img.size
        return img.resize(
            (max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS
        )

    return apply


def _crop(fraction: float) -> Transform:
    """Remove ``fraction`` of width and of height, split at random between the two sides."""

    def apply(img: Image.Image, rng: np.random.Generator) -> Image.Image:
        w, h = img.size
        cut_w, cut_h = round(w * fraction), round(h * fraction)
        left, top = int(rng.integers(0, cut_w + 1)), int(rng.integers(0, cut_h + 1))
        return img.crop((left, top, left + w - cut_w, top + h - cut_h))

    return apply


def _pad(fraction: float) -> Transform:
    """A solid border adding ``fraction`` to each dimension, placed off-centre."""

    def apply(img: Image.Image, rng: np.random.Generator) -> Image.Image:
        w, h = img.size
        pw, ph = round(w * fraction), round(h * fraction)
        colour = ((0, 0, 0), (255, 255, 255), (128, 128, 128))[int(rng.integers(0, 3))]
        canvas = Image.new("RGB", (w + pw, h + ph), colour)
        canvas.paste(img, (int(rng.integers(0, pw + 1)), int(rng.integers(0, ph + 1))))
        return canvas

    return apply


def _rotate(degrees: float) -> Transform:
    def apply(img: Image.Image, _: np.random.Generator) -> Image.Image:
        if degrees % 90 == 0:
            return img.rotate(degrees, expand=True)
        # Same canvas, black corners: what a tilted re-upload usually looks like.
        return img.rotate(degrees, resample=Image.Resampling.BICUBIC, expand=False)

    return apply


def _watermark(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = img.size
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    size = max(12, h // 8)
    font = ImageFont.load_default(size=size)
    text = "© reupload.example"
    x, y = (
        int(rng.integers(0, max(1, w // 4))),
        int(rng.integers(h // 2, max(h // 2 + 1, h - size))),
    )
    draw.text(
        (x, y),
        text,
        font=font,
        fill=(255, 255, 255, 150),
        stroke_width=2,
        stroke_fill=(0, 0, 0, 150),
    )
    return Image.alpha_composite(img.convert("RGBA"), layer).convert("RGB")


def _blur(img: Image.Image, _: np.random.Generator) -> Image.Image:
    return img.filter(ImageFilter.GaussianBlur(radius=max(1.0, max(img.size) / 256)))


def _gamma(img: Image.Image, _: np.random.Generator) -> Image.Image:
    lut = [round(255 * (i / 255) ** 0.6) for i in range(256)] * 3
    return img.point(lut)


def _noise(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    arr = np.asarray(img, dtype=np.float32)
    noisy = arr + rng.normal(0, 12, arr.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def _greyscale(img: Image.Image, _: np.random.Generator) -> Image.Image:
    return ImageOps.grayscale(img).convert("RGB")


def _screenshot(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The photo shown at 80 % inside a window: grey frame, dark title bar, off-centre."""
    w, h = img.size
    inner = img.resize((round(w * 0.8), round(h * 0.8)), Image.Resampling.BILINEAR)
    bar = max(8, h // 12)
    canvas = Image.new("RGB", (w, h + bar), (236, 236, 236))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((0, 0, w, bar), fill=(40, 44, 52))
    x = int(rng.integers(w // 20, w - inner.width - w // 20 + 1))
    y = bar + int(rng.integers(h // 20, h - inner.height - h // 20 + 1))
    canvas.paste(inner, (x, y))
    return canvas


TRANSFORMS: dict[str, Transform] = {
    "jpeg_q50": _jpeg(50),
    "jpeg_q20": _jpeg(20),
    "resize_50": _resize(0.5),
    "resize_25": _resize(0.25),
    "crop_5": _crop(0.05),
    "crop_10": _crop(0.10),
    "pad_20": _pad(0.20),
    "rotate_4": _rotate(4),
    "rotate_90": _rotate(90),
    "hflip": lambda img, _: ImageOps.mirror(img),
    "watermark": _watermark,
    "blur": _blur,
    "gamma": _gamma,
    "noise": _noise,
    "greyscale": _greyscale,
    "screenshot": _screenshot,
}


# A hash with the bits it costs to match through it (0 for the plain hash; more for
# variants such as flips, so they must come closer than the plain hash to count).
Weighted = tuple[bytes, int]


@dataclass(frozen=True)
class Matcher:
    """How one method hashes a reference and a query; distance is the min over pairs."""

    name: str
    bits: int
    reference: Callable[[Image.Image], list[Weighted]]
    query: Callable[[Image.Image], list[Weighted]]


@dataclass
class _Case:
    fold: int
    ref: int  # index into the fold's references; -1 for a distractor
    transform: str | None


@dataclass
class _Fold:
    references: list[Image.Image] = field(default_factory=list)
    queries: list[Image.Image] = field(default_factory=list)
    cases: list[_Case] = field(default_factory=list)


def load_photos() -> dict[str, Image.Image]:
    """The bundled scikit-image photos as RGB."""
    import skimage.data

    out = {}
    for name in PHOTOS:
        arr = getattr(skimage.data, name)()
        img = Image.fromarray(arr)
        out[name] = img.convert("RGB")
    return out


def _references(photo: Image.Image) -> list[Image.Image]:
    refs = [photo]
    w, h = photo.size
    if min(w, h) >= 400:
        hw, hh = w // 2, h // 2
        refs += [photo.crop((x, y, x + hw, y + hh)) for x in (0, hw) for y in (0, hh)]
    return [r for r in refs if _pdq_quality(r) >= MIN_REFERENCE_QUALITY]


def _distinct(refs: list[Image.Image], min_distance: int = 80) -> list[Image.Image]:
    """Drop references that are near-copies of an earlier one under any rotation or flip.

    A bank holds distinct works; two mirror-image quadrants of a symmetric photo
    (the retina) would make every flipped query "match the wrong reference".
    """
    import pdqhash

    kept: list[Image.Image] = []
    seen: list[npt.NDArray[np.uint8]] = []
    for ref in refs:
        arr = np.ascontiguousarray(np.asarray(ref.convert("RGB")))
        variants = np.asarray(pdqhash.compute_dihedral(arr)[0], dtype=np.uint8)
        if all((variants != s[None, :]).sum(axis=1).min() >= min_distance for s in seen):
            kept.append(ref)
            seen.append(variants[0])
    return kept


def _pdq_quality(img: Image.Image) -> int:
    import pdqhash

    return int(pdqhash.compute(np.ascontiguousarray(np.asarray(img.convert("RGB"))))[1])


def _distractors(
    photos: Sequence[Image.Image], n: int, rng: np.random.Generator
) -> list[Image.Image]:
    """Windows at many scales and aspect ratios, blends and 2x2 mosaics of ``photos``."""
    out: list[Image.Image] = []
    while len(out) < n:
        kind = rng.random()
        a = photos[int(rng.integers(0, len(photos)))]
        w, h = a.size
        if kind < 0.7:
            cw = int(w * rng.uniform(0.2, 0.9))
            ch = int(h * rng.uniform(0.2, 0.9))
            x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            img = a.crop((x, y, x + cw, y + ch))
            if rng.random() < 0.3:
                img = ImageOps.mirror(img)
        elif kind < 0.85:
            b = photos[int(rng.integers(0, len(photos)))].resize(a.size)
            img = Image.blend(a, b, float(rng.uniform(0.3, 0.7)))
        else:
            side = 256
            img = Image.new("RGB", (2 * side, 2 * side))
            for i in range(4):
                p = photos[int(rng.integers(0, len(photos)))]
                pw, ph = p.size
                s = min(pw, ph, int(min(pw, ph) * rng.uniform(0.3, 1.0)))
                x, y = int(rng.integers(0, pw - s + 1)), int(rng.integers(0, ph - s + 1))
                img.paste(
                    p.crop((x, y, x + s, y + s)).resize((side, side)),
                    ((i % 2) * side, (i // 2) * side),
                )
        out.append(img)
    return out


def build_folds(distractors_per_fold: int, seed: int = 7) -> list[_Fold]:
    photos = load_photos()
    names = list(photos)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(names))
    halves = [[names[i] for i in order[::2]], [names[i] for i in order[1::2]]]
    folds = []
    for f, (mine, theirs) in enumerate(((halves[0], halves[1]), (halves[1], halves[0]))):
        fold = _Fold()
        for name in mine:
            fold.references.extend(_references(photos[name]))
        fold.references = _distinct(fold.references)
        for r, ref in enumerate(fold.references):
            for t_name, transform in TRANSFORMS.items():
                fold.queries.append(transform(ref, rng))
                fold.cases.append(_Case(f, r, t_name))
        for img in _distractors([photos[n] for n in theirs], distractors_per_fold, rng):
            fold.queries.append(img)
            fold.cases.append(_Case(f, -1, None))
        folds.append(fold)
    return folds


def _pack(
    hashes: list[list[Weighted]],
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Stack per-image hash lists into one uint64 matrix, owner index and penalty."""
    flat = [h for hs in hashes for h, _ in hs]
    pen = np.asarray([p for hs in hashes for _, p in hs], dtype=np.int64)
    owner = np.repeat(np.arange(len(hashes)), [len(hs) for hs in hashes])
    words = np.frombuffer(b"".join(flat), dtype=np.uint64).reshape(len(flat), -1)
    return words, owner, pen


def _min_distances(
    queries: list[list[Weighted]], refs: list[list[Weighted]]
) -> npt.NDArray[np.int64]:
    """``(n_queries, n_refs)`` minimum penalised Hamming distance over every hash pair."""
    qw, qo, qp = _pack(queries)
    rw, ro, rp = _pack(refs)
    pair = qp[:, None] + rp[None, :]
    for k in range(qw.shape[1]):
        pair += np.bitwise_count(qw[:, k : k + 1] ^ rw[None, :, k]).astype(np.int64)
    per_ref = np.full((len(qw), len(refs)), 1 << 30, dtype=np.int64)
    np.minimum.at(per_ref.T, ro, pair.T)
    out = np.full((len(queries), len(refs)), 1 << 30, dtype=np.int64)
    np.minimum.at(out, qo, per_ref)
    return out


@dataclass
class MatcherResult:
    name: str
    threshold: int
    precision: float
    recall: dict[str, float]
    overall: float
    false_matches: int
    hash_ms: float
    # The same at the service's default bank threshold (31 of 256 bits, scaled for pHash).
    deployed_threshold: int = 0
    deployed_overall: float = 0.0
    deployed_false_matches: int = 0
    deployed_recall: dict[str, float] = field(default_factory=dict)


def _score(
    name: str,
    bits: int,
    rows: list[tuple[_Case, npt.NDArray[np.int64]]],
    min_precision: float,
    hash_ms: float,
) -> MatcherResult:
    true_d: list[tuple[str, int]] = []
    wrong: list[int] = []  # one entry per wrong (query, reference) pair, its distance
    for case, dists in rows:
        if case.ref >= 0:
            true_d.append((case.transform or "", int(dists[case.ref])))
            others = np.delete(dists, case.ref)
        else:
            others = dists
        wrong.extend(int(d) for d in others if d <= bits)
    wrong_sorted = np.sort(np.asarray(wrong, dtype=np.int64))
    best_t, best_p = -1, 1.0
    all_true = np.asarray([d for _, d in true_d])
    for t in range(bits + 1):
        tp = int((all_true <= t).sum())
        fp = int(np.searchsorted(wrong_sorted, t, side="right"))
        if tp == 0:
            continue
        p = tp / (tp + fp)
        if p >= min_precision:
            best_t, best_p = t, p
    names = list(TRANSFORMS)
    by_transform = {n: [d for t_name, d in true_d if t_name == n] for n in names}
    recall = {n: float(np.mean(np.asarray(ds) <= best_t)) for n, ds in by_transform.items() if ds}
    fp = int(np.searchsorted(wrong_sorted, best_t, side="right")) if best_t >= 0 else 0
    deployed = round(DEPLOYED_THRESHOLD * bits / 256)
    return MatcherResult(
        name,
        best_t,
        best_p,
        recall,
        float(np.mean(all_true <= best_t)),
        fp,
        hash_ms,
        deployed,
        float(np.mean(all_true <= deployed)),
        int(np.searchsorted(wrong_sorted, deployed, side="right")),
        {n: float(np.mean(np.asarray(ds) <= deployed)) for n, ds in by_transform.items() if ds},
    )


def canonical(img: Image.Image) -> Image.Image:
    """What :func:`models.image_decode.decode_image` hands the hashers: RGB, 512 px side."""
    from models.image_decode import HASH_TARGET_SIDE, RESAMPLE, fit_size

    img = img.convert("RGB")
    size = fit_size(img.width, img.height, HASH_TARGET_SIDE)
    return img if size == img.size else img.resize(size, RESAMPLE)


def _plain_pdq(img: Image.Image) -> list[Weighted]:
    from models.image_hash import hash_image

    return [(bytes.fromhex(hash_image(canonical(img)).pdq), 0)]


def _phash(img: Image.Image) -> list[Weighted]:
    import imagehash

    bits = imagehash.phash(canonical(img)).hash.flatten()
    return [(np.packbits(bits).tobytes(), 0)]


def _ours_reference(img: Image.Image) -> list[Weighted]:
    from models.image_robust import reference_variants

    c = canonical(img)
    extra = [(bytes.fromhex(v.pdq), v.margin) for v in reference_variants(c)]
    return _plain_pdq(c) + extra


def _ours_query(img: Image.Image) -> list[Weighted]:
    from models.image_robust import query_variants

    return [(bytes.fromhex(v.pdq), v.margin) for v in query_variants(canonical(img))]


def default_matchers() -> list[Matcher]:
    """This service's matcher beside plain PDQ and plain pHash (64 bits)."""
    return [
        Matcher("ours", 256, _ours_reference, _ours_query),
        Matcher("pdq", 256, _plain_pdq, _plain_pdq),
        Matcher("phash", 64, _phash, _phash),
    ]


def run_robustness(
    matchers: Sequence[Matcher] | None = None,
    *,
    distractors_per_fold: int = 2000,
    min_precision: float = 0.9999,
    seed: int = 7,
) -> dict[str, object]:
    """Build the set, hash it with every matcher, report recall per transform at the threshold."""
    started = time.perf_counter()
    matchers = default_matchers() if matchers is None else matchers
    folds = build_folds(distractors_per_fold, seed)
    results = []
    for m in matchers:
        rows: list[tuple[_Case, npt.NDArray[np.int64]]] = []
        hash_time, hashed = 0.0, 0
        for fold in folds:
            refs = [m.reference(img) for img in fold.references]
            t0 = time.perf_counter()
            queries = [m.query(img) for img in fold.queries]
            hash_time += time.perf_counter() - t0
            hashed += len(fold.queries)
            dist = _min_distances(queries, refs)
            rows.extend(zip(fold.cases, dist, strict=True))
        results.append(_score(m.name, m.bits, rows, min_precision, 1000 * hash_time / hashed))
    n_refs = sum(len(f.references) for f in folds)
    n_distractors = sum(1 for f in folds for c in f.cases if c.ref < 0)
    return {
        "references": n_refs,
        "transformed_queries": n_refs * len(TRANSFORMS),
        "distractors": n_distractors,
        "min_precision": min_precision,
        "seconds": round(time.perf_counter() - started, 1),
        "matchers": [r.__dict__ for r in results],
    }


def format_table(report: dict[str, object]) -> str:
    """Markdown table: one row per transform, one column per matcher."""
    matchers = report["matchers"]
    assert isinstance(matchers, list)
    names = [f"{m['name']} | {m['name']} @{m['deployed_threshold']}" for m in matchers]
    head = "| transform | " + " | ".join(names) + " |"
    lines = [head, "|---" * (2 * len(matchers) + 1) + "|"]
    for name in TRANSFORMS:
        cells = [f"{m['recall'][name]:.3f} | {m['deployed_recall'][name]:.3f}" for m in matchers]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    rows = (
        ("overall", "deployed_overall", "**overall**"),
        ("threshold", "deployed_threshold", "threshold (bits)"),
        ("false_matches", "deployed_false_matches", "false matches at the threshold"),
        ("hash_ms", None, "query hashing, ms per image"),
    )
    for key, deployed_key, label in rows:
        cells = [
            _cell(key, m[key]) + " | " + (_cell(key, m[deployed_key]) if deployed_key else "")
            for m in matchers
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(key: str, value: object) -> str:
    if "overall" in key:
        return f"{value:.3f}"
    return f"{value:.1f}" if key == "hash_ms" else str(value)
