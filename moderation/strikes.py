"""Repeat infringers: strikes per uploader that expire, and the count that suspends uploads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from moderation.errors import Forbidden
from moderation.storage.tables import StrikeRow


class UploadsSuspended(Forbidden):
    """The uploader has as many live strikes as suspend uploads."""

    code = "uploads_suspended"
    http_status = 403


def expiry(created: datetime, days: int) -> datetime:
    return created + timedelta(days=days)


def is_live(expires_at: datetime, revoked: bool, now: datetime) -> bool:
    return not revoked and _utc(expires_at) > _utc(now)


def suspended(live_strikes: int, threshold: int) -> bool:
    return live_strikes >= threshold


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


# --- database edge ------------------------------------------------------------------------


def add_strike(
    session: Session, uploader_id: str, claim_id: str, now: datetime, expiry_days: int
) -> None:
    """One strike per claim (a redelivered takedown adds none)."""
    if session.scalar(select(StrikeRow.id).where(StrikeRow.claim_id == claim_id)) is None:
        session.add(
            StrikeRow(
                uploader_id=uploader_id,
                claim_id=claim_id,
                created_at=now,
                expires_at=expiry(now, expiry_days),
            )
        )


def revoke_strike(session: Session, claim_id: str, now: datetime) -> None:
    """A restored or reversed claim's strike stops counting."""
    session.execute(
        update(StrikeRow)
        .where(StrikeRow.claim_id == claim_id, StrikeRow.revoked_at.is_(None))
        .values(revoked_at=now)
    )


def live_strikes(session: Session, uploader_id: str, now: datetime) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(StrikeRow)
            .where(
                StrikeRow.uploader_id == uploader_id,
                StrikeRow.revoked_at.is_(None),
                StrikeRow.expires_at > now,
            )
        )
        or 0
    )


def check_uploads_allowed(
    session: Session, uploader_id: str, now: datetime, threshold: int
) -> None:
    """UploadsSuspended when the uploader has ``threshold`` live strikes or more."""
    count = live_strikes(session, uploader_id, now)
    if suspended(count, threshold):
        raise UploadsSuspended(
            f"uploads by {uploader_id!r} are suspended: {count} live copyright strikes "
            f"(the limit is {threshold})",
            field="uploader_id",
            strikes=count,
        )
