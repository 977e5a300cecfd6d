"""The robustness benchmark's transforms, scoring and a small end-to-end run."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from moderation.bench_robustness import (
    TRANSFORMS,
    Matcher,
    _Case,
    _min_distances,
    _score,
    canonical,
    run_robustness,
)
from tests.images import photo


@pytest.fixture(scope="module")
def picture() -> Image.Image:
    return canonical(photo("coffee"))


def test_every_listed_transform_is_there() -> None:
    assert set(TRANSFORMS) == {
        "jpeg_q50", "jpeg_q20", "resize_50", "resize_25", "crop_5", "crop_10", "pad_20",
        "rotate_4", "rotate_90", "hflip", "watermark", "blur", "gamma", "noise", "greyscale",
        "screenshot",
    }  # fmt: skip


def test_transforms_change_geometry_as_named(picture: Image.Image) -> None:
    rng = np.random.default_rng(0)
    w, h = picture.size
    size = {name: TRANSFORMS[name](picture, rng).size for name in TRANSFORMS}
    assert size["resize_50"] == (round(w / 2), round(h / 2))
    assert size["crop_5"] == (w - round(w * 0.05), h - round(h * 0.05))
    assert size["crop_10"] == (w - round(w * 0.1), h - round(h * 0.1))
    assert size["pad_20"] == (w + round(w * 0.2), h + round(h * 0.2))
    assert size["rotate_90"] == (h, w)
    assert size["jpeg_q20"] == size["greyscale"] == size["rotate_4"] == (w, h)
    flipped = np.asarray(TRANSFORMS["hflip"](picture, rng))
    assert np.array_equal(flipped, np.asarray(picture)[:, ::-1])
    grey = np.asarray(TRANSFORMS["greyscale"](picture, rng)).astype(int)
    assert np.array_equal(grey[..., 0], grey[..., 1])


def test_min_distances_takes_the_best_pair_plus_its_margins() -> None:
    a, b = bytes(32), bytes([0xFF] * 32)
    one_bit = bytes([1]) + bytes(31)
    queries = [[(a, 0)], [(b, 0), (one_bit, 5)]]
    refs = [[(a, 0)], [(b, 0)]]
    d = _min_distances(queries, refs)
    assert d.tolist() == [[0, 256], [6, 0]]


def test_score_picks_the_largest_threshold_without_a_false_match() -> None:
    # Two positives at 10 and 40; a distractor 30 bits from reference 0.
    rows = [
        (_Case(0, 0, "jpeg_q50"), np.array([10, 200])),
        (_Case(0, 1, "crop_5"), np.array([200, 40])),
        (_Case(0, -1, None), np.array([30, 150])),
    ]
    result = _score("m", 256, rows, 0.9999, 1.0)
    assert result.threshold == 29 and result.false_matches == 0
    assert result.recall["jpeg_q50"] == 1.0 and result.recall["crop_5"] == 0.0
    assert result.deployed_threshold == 31 and result.deployed_false_matches == 1


def test_a_small_run_shows_plain_pdq_misses_flips_but_survives_jpeg() -> None:
    def pdq(img: Image.Image) -> list[tuple[bytes, int]]:
        from models.image_hash import hash_image

        return [(bytes.fromhex(hash_image(canonical(img)).pdq), 0)]

    report = run_robustness([Matcher("pdq", 256, pdq, pdq)], distractors_per_fold=40)
    (m,) = report["matchers"]
    assert report["references"] >= 40 and report["distractors"] == 80
    assert m["recall"]["jpeg_q50"] >= 0.9 and m["recall"]["greyscale"] >= 0.9
    assert m["recall"]["hflip"] <= 0.2 and m["recall"]["rotate_90"] <= 0.2
