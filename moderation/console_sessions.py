"""Reviewer console sessions: a reviewer key exchanged for a random cookie token and a CSRF
token; only the token's SHA-256 is stored, so a database leak opens no session."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from moderation.errors import Forbidden, Unauthorized
from moderation.keys import Principal, authenticate, key_is_live
from moderation.review_queue import utc
from moderation.storage.tables import ApiKeyRow, ConsoleSessionRow

CONSOLE_ROLES = ("reviewer", "admin")


@dataclass(frozen=True)
class ConsoleSession:
    principal: Principal
    csrf_token: str


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def sign_in(session: Session, api_key: str, hours: float) -> tuple[str, ConsoleSession]:
    """A new session for a reviewer or admin key: (cookie token, session)."""
    principal = authenticate(session, api_key.strip())
    if principal.role not in CONSOLE_ROLES:
        raise Forbidden("the console is for reviewer and admin keys")
    now = datetime.now(UTC)
    session.execute(delete(ConsoleSessionRow).where(ConsoleSessionRow.expires_at < now))
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    session.add(
        ConsoleSessionRow(
            token_hash=_digest(token),
            key_id=principal.key_id,
            csrf_token=csrf,
            created_at=now,
            expires_at=now + timedelta(hours=hours),
        )
    )
    return token, ConsoleSession(principal, csrf)


def resolve(session: Session, token: str | None) -> ConsoleSession:
    """The live session of a cookie token; a revoked key ends its sessions at once."""
    if not token or len(token) > 128:
        raise Unauthorized("sign in first")
    row = session.get(ConsoleSessionRow, _digest(token))
    if row is None or utc(row.expires_at) <= datetime.now(UTC):
        raise Unauthorized("your console session has ended: sign in again")
    key = session.scalar(select(ApiKeyRow).where(ApiKeyRow.id == row.key_id))
    if key is None or not key_is_live(key) or key.role not in CONSOLE_ROLES:
        raise Unauthorized("your console session has ended: sign in again")
    return ConsoleSession(Principal(key.id, key.name, key.role, key.rate_limit), row.csrf_token)


def check_csrf(current: ConsoleSession, sent: str | None) -> None:
    if not sent or not hmac.compare_digest(current.csrf_token, sent):
        raise Forbidden("missing or wrong CSRF token: reload the page")


def sign_out(session: Session, token: str | None) -> None:
    if token:
        session.execute(
            delete(ConsoleSessionRow).where(ConsoleSessionRow.token_hash == _digest(token))
        )
