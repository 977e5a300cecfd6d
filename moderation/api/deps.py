"""Request dependencies: database session, the calling principal (rate-limited), role checks."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from moderation import rate_limit
from moderation.errors import Forbidden, Unauthorized, Unavailable
from moderation.fail_mode import is_db_unavailable
from moderation.keys import Principal, authenticate
from moderation.known_keys import KnownKeys
from moderation.settings import Settings
from moderation.storage import db

_bearer = HTTPBearer(auto_error=False, description="API key: `Authorization: Bearer mod_...`")


def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_session(settings: Settings = Depends(get_settings_dep)) -> Iterator[Session]:
    with db.session_scope(settings.resolved_database_url) as session:
        yield session


_known: dict[float, KnownKeys] = {}


def _known_keys(settings: Settings) -> KnownKeys:
    """This process's recently authenticated keys (one map per configured age limit)."""
    return _known.setdefault(settings.auth_outage_grace_s, KnownKeys(settings.auth_outage_grace_s))


def get_principal(
    creds: HTTPAuthorizationCredentials | None = Depends(_bearer),
    settings: Settings = Depends(get_settings_dep),
) -> Principal:
    if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    secret = creds.credentials
    try:
        with db.session_scope(settings.resolved_database_url) as session:
            principal = authenticate(session, secret)
    except Unauthorized:
        _known_keys(settings).forget(secret)
        raise
    except Exception as exc:
        if not is_db_unavailable(exc):
            raise
        # The database is down: a key seen recently still gets in (the task's fail mode
        # then answers for the item); any other key is told to retry.
        recalled = _known_keys(settings).recall(secret)
        if recalled is None:
            raise Unavailable("the database is unavailable; retry") from None
        principal = recalled
    else:
        _known_keys(settings).remember(secret, principal)
    # Every authenticated route passes here, so the per-key limit covers the whole API.
    rate_limit.enforce(settings, principal)
    return principal


def console_rate_limit(cookie: str) -> Callable[..., None]:
    """Dependency counting console requests against the signed-in key's rate limit."""

    def check(request: Request, settings: Settings = Depends(get_settings_dep)) -> None:
        from moderation import console_sessions

        token = request.cookies.get(cookie)
        if not token:
            return  # the sign-in page; pages without a session answer that themselves
        with db.session_scope(settings.resolved_database_url) as session:
            try:
                principal = console_sessions.resolve(session, token).principal
            except Unauthorized:
                return
        rate_limit.enforce(settings, principal)

    return check


def require(*roles: str) -> Callable[..., Principal]:
    """Dependency allowing only the given roles (checked server-side on every route)."""

    def check(principal: Principal = Depends(get_principal)) -> Principal:
        if principal.role not in roles:
            raise Forbidden(f"role {principal.role!r} may not use this route")
        return principal

    return check
