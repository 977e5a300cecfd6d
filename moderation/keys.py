"""API keys: created once and shown once, stored as SHA-256 digests, each with one role."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from moderation.errors import InvalidInput, NotFound, Unauthorized
from moderation.storage.tables import ApiKeyRow

ROLES = ("service", "rights_holder", "reviewer", "admin")
_PREFIX = "mod_"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id, name and role."""

    key_id: int
    name: str
    role: str


def _digest(secret: str) -> str:
    # Keys are 256 random bits, so a plain SHA-256 is enough (no password stretching needed).
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(session: Session, role: str, name: str | None = None) -> tuple[str, Principal]:
    """Create a key; the secret is returned here and never stored or shown again."""
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}", field="role")
    secret = _PREFIX + secrets.token_urlsafe(32)
    row = ApiKeyRow(
        name=(name or f"{role}-key")[:128], role=role, prefix=secret[:12], key_hash=_digest(secret)
    )
    session.add(row)
    session.flush()
    return secret, Principal(row.id, row.name, row.role)


def authenticate(session: Session, secret: str) -> Principal:
    if not secret.startswith(_PREFIX) or len(secret) > 128:
        raise Unauthorized("invalid API key")
    digest = _digest(secret)
    row = session.scalar(select(ApiKeyRow).where(ApiKeyRow.prefix == secret[:12]))
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.key_hash, digest):
        raise Unauthorized("invalid API key")
    return Principal(row.id, row.name, row.role)


def list_keys(session: Session) -> list[dict[str, object]]:
    return [
        {
            "id": r.id,
            "name": r.name,
            "role": r.role,
            "prefix": r.prefix,
            "created_at": r.created_at.isoformat(),
            "revoked": r.revoked_at is not None,
        }
        for r in session.scalars(select(ApiKeyRow).order_by(ApiKeyRow.id))
    ]


def revoke_key(session: Session, key_id: int) -> None:
    row = session.get(ApiKeyRow, key_id)
    if row is None:
        raise NotFound(f"no API key with id {key_id}", field="key_id")
    row.revoked_at = datetime.now(UTC)
