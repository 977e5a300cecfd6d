"""Request dependencies: database session, the calling principal (rate-limited), role checks."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from moderation import rate_limit
from moderation.errors import Forbidden, Unauthorized
from moderation.keys import Principal, authenticate
from moderation.settings import Settings
from moderation.storage import db

_bearer = HTTPBearer(auto_error=False, description="API key: `Authorization: Bearer mod_...`")


def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_session(settings: Settings = Depends(get_settings_dep)) -> Iterator[Session]:
    with db.session_scope(settings.resolved_database_url) as session:
        yield session


def get_principal(
    creds: HTTPAuthorizationCredentials | None = Depends(_bearer),
    settings: Settings = Depends(get_settings_dep),
) -> Principal:
    if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    with db.session_scope(settings.resolved_database_url) as session:
        principal = authenticate(session, creds.credentials)
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
