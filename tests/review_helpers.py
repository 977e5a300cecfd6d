"""Helpers for the review tests: queued items written straight to the database."""

from __future__ import annotations

import io
import random
from typing import Any

from PIL import Image, ImageDraw
from sqlalchemy import select

from moderation.domain import Reason, Verdict
from moderation.storage.db import session_scope
from moderation.storage.tables import ItemHashRow, ItemRow, ReviewItemRow, ReviewMediaRow
from moderation.verdicts import add_verdict


def unique_picture(seed: str, size: int = 512) -> Image.Image:
    """A picture no other test uses (the session database and banks are shared): random
    shapes, whose PDQ hash survives a re-encode and resize (a near-copy is within ~8 bits)."""
    rng = random.Random(seed)
    img = Image.new("RGB", (size, size), tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(img)
    for _ in range(30):
        x, y = rng.randrange(size), rng.randrange(size)
        w, h = rng.randrange(20, size // 2), rng.randrange(20, size // 2)
        colour = tuple(rng.randrange(256) for _ in range(3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([x, y, x + w, y + h], fill=colour)
    return img


def jpeg_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def queued_item(
    database_url: str,
    content_id: str,
    *,
    category: str = "violence",
    score: float = 0.6,
    text: str | None = "an item to review",
    uploader: str = "uploader-1",
    context: dict[str, Any] | None = None,
    picture: Image.Image | None = None,
    pdq: str | None = None,
) -> ReviewItemRow:
    """Store an item with a ``review`` verdict (which queues it) and return its queue row."""
    with session_scope(database_url) as s:
        s.add(
            ItemRow(
                content_id=content_id,
                uploader_id=uploader,
                status="done",
                text=text,
                media_count=1 if picture is not None else 0,
                context=context or {},
                attempts=1,
            )
        )
        s.flush()
        if pdq is not None:
            s.add(
                ItemHashRow(
                    content_id=content_id, media_index=0, signal_type="pdq", value=pdq, quality=100
                )
            )
        if picture is not None:
            s.add(
                ReviewMediaRow(
                    content_id=content_id, media_index=0, kind="image", jpeg=jpeg_bytes(picture)
                )
            )
        add_verdict(
            s,
            Verdict(
                content_id=content_id,
                decision="review",
                categories={category: score},
                reasons=[Reason(source="text", category=category, score=score, threshold=0.5)],
                policy_version="test",
            ),
        )
    with session_scope(database_url) as s:
        row = s.scalar(select(ReviewItemRow).where(ReviewItemRow.content_id == content_id))
        assert row is not None
        return row
