"""Helpers for the copyright tests: unique photos, notices, keys and uploads."""

from __future__ import annotations

import base64
import zlib
from typing import Any

import numpy as np
from PIL import Image

from tests.images import jpeg, near_copy, photo


def unique_photo(seed: str) -> Image.Image:
    """A photo no other test banks: a seeded smooth field over a faint real photo (over 1,770
    pairs of seeds the closest PDQs were 82 bits apart; near-copies stay within 26 bits)."""
    rng = np.random.default_rng(zlib.crc32(seed.encode()))
    field = np.repeat(rng.integers(0, 256, (12, 12, 1), dtype=np.uint8), 3, axis=2)
    noise = Image.fromarray(field).resize((320, 240), Image.Resampling.BICUBIC)
    return Image.blend(noise, photo("coffee", (320, 240)), 0.1)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def original_b64(seed: str) -> str:
    return b64(jpeg(unique_photo(seed)))


def copy_b64(seed: str) -> str:
    return b64(near_copy(unique_photo(seed)))


def auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def notice(work_id: str, content_id: str, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "claimant": {
            "name": "Studio Legal",
            "email": "legal@studio.example",
            "address": "1 Film Street, Berlin",
        },
        "work_id": work_id,
        "content_id": content_id,
        "explanation": "The upload is a copy of our registered photo.",
        "good_faith": True,
        "accuracy": True,
        "signature": "Jane Counsel",
    }
    body.update(changes)
    return body


def counter_notice() -> dict[str, Any]:
    return {
        "name": "Uploader Person",
        "address": "2 Side Road, Lyon",
        "email": "me@uploader.example",
        "explanation": "I shot this photo myself.",
        "good_faith_mistake": True,
        "consent_to_jurisdiction": True,
        "signature": "Uploader Person",
    }


def image_item(content_id: str, uploader: str, data_b64: str) -> dict[str, Any]:
    return {
        "content_id": content_id,
        "uploader_id": uploader,
        "media": [{"kind": "image", "data_b64": data_b64}],
    }
