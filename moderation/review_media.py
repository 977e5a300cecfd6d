"""Previews of an item's media for reviewers: reduced JPEGs kept only for items in review."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from moderation.storage.tables import ReviewClipRow, ReviewMediaRow

if TYPE_CHECKING:
    from moderation.domain import Item
    from moderation.pipeline import Analysis

PREVIEW_SIDE = 512


def clip_mime(data: bytes) -> str | None:
    """video/mp4 or video/webm from the container's magic bytes; None for what browsers
    may not play (those items show their thumbnail)."""
    if len(data) >= 12 and data[4:8] == b"ftyp":
        return "video/mp4"
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return "video/webm"
    return None


def keep_clips(session: Session, content_id: str, clips: dict[int, bytes]) -> None:
    """Store an item's playable videos (replacing any kept before: jobs may be redelivered)."""
    session.execute(delete(ReviewClipRow).where(ReviewClipRow.content_id == content_id))
    for media_index, data in sorted(clips.items()):
        mime = clip_mime(data)
        if mime is not None:
            session.add(
                ReviewClipRow(content_id=content_id, media_index=media_index, mime=mime, data=data)
            )


def clip_indexes(session: Session, content_id: str) -> set[int]:
    return set(
        session.scalars(
            select(ReviewClipRow.media_index).where(ReviewClipRow.content_id == content_id)
        )
    )


def clip(session: Session, content_id: str, media_index: int) -> ReviewClipRow | None:
    return session.scalar(
        select(ReviewClipRow).where(
            ReviewClipRow.content_id == content_id, ReviewClipRow.media_index == media_index
        )
    )


def keep_previews(session: Session, item: Item, analysis: Analysis) -> None:
    """Store a JPEG per analysed picture (a video's thumbnail stands for the video)."""
    for mh in analysis.media:
        if mh.image is None:
            continue
        picture = mh.image.convert("RGB")
        picture.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
        buf = io.BytesIO()
        # A fresh encode drops every metadata block of the upload (EXIF, GPS, comments).
        picture.save(buf, format="JPEG", quality=80)
        kind = item.media[mh.media_index].kind if mh.media_index < len(item.media) else "image"
        session.add(
            ReviewMediaRow(
                content_id=item.content_id,
                media_index=mh.media_index,
                kind=kind,
                jpeg=buf.getvalue(),
            )
        )


def previews_of(session: Session, content_id: str) -> list[ReviewMediaRow]:
    return list(
        session.scalars(
            select(ReviewMediaRow)
            .where(ReviewMediaRow.content_id == content_id)
            .order_by(ReviewMediaRow.media_index)
        )
    )


def preview(session: Session, content_id: str, media_index: int) -> ReviewMediaRow | None:
    return session.scalar(
        select(ReviewMediaRow).where(
            ReviewMediaRow.content_id == content_id, ReviewMediaRow.media_index == media_index
        )
    )
