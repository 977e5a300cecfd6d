"""API keys: created once and shown once, stored as SHA-256 digests, each with one role.

A key may expire (``expires_at``) and may be rotated: rotation gives the same key (id, name,
role, grants, rate limit) a new secret and keeps accepting the old secret until a grace period
ends, so callers can switch over without downtime.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from moderation.errors import InvalidInput, NotFound, Unauthorized
from moderation.storage.tables import ApiKeyRow

ROLES = ("service", "rights_holder", "reviewer", "admin")
_PREFIX = "mod_"
# How long a rotated-out secret keeps working when the caller names no grace period.
DEFAULT_ROTATION_GRACE = timedelta(hours=24)
MAX_ROTATION_GRACE = timedelta(days=30)
# A per-key rate limit of "none" turns limiting off for that key (trusted batch callers).
UNLIMITED = "none"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id, name and role, and its own rate limit if it has one."""

    key_id: int
    name: str
    role: str
    rate_limit: str | None = None


def key_digest(secret: str) -> str:
    """The SHA-256 hex digest a key is stored and looked up by."""
    # Keys are 256 random bits, so a plain SHA-256 is enough (no password stretching needed).
    return hashlib.sha256(secret.encode()).hexdigest()


def _utc(at: datetime | None) -> datetime | None:
    # SQLite hands datetimes back without a zone; they were stored as UTC.
    return at if at is None or at.tzinfo is not None else at.replace(tzinfo=UTC)


def parse_duration(text: str, *, field: str = "duration") -> timedelta:
    """'90', '90s', '15m', '24h' or '7d' as a timedelta."""
    match = _DURATION.match(text)
    if match is None:
        raise InvalidInput(f"{field} must look like 90s, 15m, 24h or 7d", field=field)
    return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def check_rate_limit(text: str | None) -> str | None:
    """Validate a per-key limit ('none', or limits' notation such as '20/second;600/minute')."""
    if text is None:
        return None
    text = text.strip()
    if text.lower() == UNLIMITED:
        return UNLIMITED
    from limits import parse_many

    try:
        parsed = parse_many(text)
    except ValueError as exc:
        raise InvalidInput(
            "rate_limit must be 'none' or like '20/second;600/minute'", field="rate_limit"
        ) from exc
    if not parsed or len(text) > 128:
        raise InvalidInput("rate_limit must name at least one limit", field="rate_limit")
    return text


def _new_secret() -> str:
    return _PREFIX + secrets.token_urlsafe(32)


def _principal(row: ApiKeyRow) -> Principal:
    return Principal(row.id, row.name, row.role, row.rate_limit)


def create_key(
    session: Session,
    role: str,
    name: str | None = None,
    *,
    rate_limit: str | None = None,
    expires_in: timedelta | None = None,
) -> tuple[str, Principal]:
    """Create a key; the secret is returned here and never stored or shown again."""
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}", field="role")
    if expires_in is not None and expires_in <= timedelta(0):
        raise InvalidInput("expires_in must be positive", field="expires_in")
    secret = _new_secret()
    row = ApiKeyRow(
        name=(name or f"{role}-key")[:128],
        role=role,
        prefix=secret[:12],
        key_hash=key_digest(secret),
        rate_limit=check_rate_limit(rate_limit),
        expires_at=datetime.now(UTC) + expires_in if expires_in is not None else None,
    )
    session.add(row)
    session.flush()
    return secret, _principal(row)


def _live(expires_at: datetime | None, now: datetime) -> bool:
    at = _utc(expires_at)
    return at is None or at > now


def key_is_live(row: ApiKeyRow, now: datetime | None = None) -> bool:
    """Neither revoked nor past its expiry (console sessions end with their key)."""
    return row.revoked_at is None and _live(row.expires_at, now or datetime.now(UTC))


def authenticate(session: Session, secret: str) -> Principal:
    """The principal of a live key's current secret, or of its rotated-out one in grace."""
    if not secret.startswith(_PREFIX) or len(secret) > 128:
        raise Unauthorized("invalid API key")
    digest, prefix, now = key_digest(secret), secret[:12], datetime.now(UTC)
    rows = session.scalars(
        select(ApiKeyRow).where(
            or_(ApiKeyRow.prefix == prefix, ApiKeyRow.previous_prefix == prefix)
        )
    )
    for row in rows:
        if not key_is_live(row, now):
            continue
        if hmac.compare_digest(row.key_hash, digest):
            return _principal(row)
        if (
            row.previous_key_hash is not None
            and hmac.compare_digest(row.previous_key_hash, digest)
            and _live(row.previous_expires_at, now)
        ):
            return _principal(row)
    raise Unauthorized("invalid API key")


def _iso(at: datetime | None) -> str | None:
    at = _utc(at)
    return at.isoformat() if at is not None else None


def describe(row: ApiKeyRow) -> dict[str, object]:
    """A key's public fields (never its secret or digest)."""
    now = datetime.now(UTC)
    previous_live = row.previous_key_hash is not None and _live(row.previous_expires_at, now)
    return {
        "id": row.id,
        "name": row.name,
        "role": row.role,
        "prefix": row.prefix,
        "created_at": _iso(row.created_at),
        "expires_at": _iso(row.expires_at),
        "expired": not _live(row.expires_at, now),
        "revoked": row.revoked_at is not None,
        "rate_limit": row.rate_limit,
        "rotated_at": _iso(row.rotated_at),
        "previous_secret_expires_at": _iso(row.previous_expires_at) if previous_live else None,
    }


def list_keys(session: Session) -> list[dict[str, object]]:
    return [describe(r) for r in session.scalars(select(ApiKeyRow).order_by(ApiKeyRow.id))]


def _get(session: Session, key_id: int) -> ApiKeyRow:
    row = session.get(ApiKeyRow, key_id)
    if row is None:
        raise NotFound(f"no API key with id {key_id}", field="key_id")
    return row


def revoke_key(session: Session, key_id: int) -> None:
    _get(session, key_id).revoked_at = datetime.now(UTC)


def set_rate_limit(session: Session, key_id: int, rate_limit: str | None) -> dict[str, object]:
    """Set a key's own limit; None goes back to its role's default."""
    row = _get(session, key_id)
    row.rate_limit = check_rate_limit(rate_limit)
    return describe(row)


def rotate_key(
    session: Session, key_id: int, grace: timedelta = DEFAULT_ROTATION_GRACE
) -> tuple[str, dict[str, object]]:
    """A new secret for a live key; the current one keeps working for ``grace``, then 401.

    Only one old secret is kept: rotating again ends the previous grace at once.
    """
    if grace < timedelta(0) or grace > MAX_ROTATION_GRACE:
        raise InvalidInput(
            f"grace must be between 0 and {MAX_ROTATION_GRACE.days} days", field="grace"
        )
    row = _get(session, key_id)
    now = datetime.now(UTC)
    if not key_is_live(row, now):
        raise InvalidInput(f"key {key_id} is revoked or expired; create a new one", field="key_id")
    secret = _new_secret()
    row.previous_prefix, row.previous_key_hash = row.prefix, row.key_hash
    row.previous_expires_at = now + grace
    row.prefix, row.key_hash, row.rotated_at = secret[:12], key_digest(secret), now
    session.flush()
    return secret, describe(row)
