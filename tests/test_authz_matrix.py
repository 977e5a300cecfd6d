"""Authorization matrix: every route of the app times every caller, allowed or denied.

The expected matrix is written out below, by hand, from the roles' intended powers; it is not
read from the code under test. A route with no row fails the test, so every new route must be
classified here. Callers: no key, a revoked key, an expired key, and one key of each role.
Denied means 401 (no or bad credentials) or 403 (wrong role); for console pages, which answer
a browser, an unauthenticated GET is a 303 back to the sign-in page. Allowed means anything
else (a 404 for the made-up ids below, a 422 for an empty body: the request got past auth).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from moderation import console_sessions, review_queue
from moderation.api.app import create_app
from moderation.keys import create_key, revoke_key
from moderation.settings import get_settings
from moderation.storage import db

PUBLIC = "public"  # no credentials needed
KEY = "key"  # Authorization: Bearer <API key>
CONSOLE = "console"  # the console's session cookie (and CSRF token on POST)
SIGN_IN = "sign_in"  # an API key posted in the console's sign-in form

SVC, RH, REV, ADM = "service", "rights_holder", "reviewer", "admin"
CALLERS = ("none", "revoked", "expired", SVC, RH, REV, ADM)

# (method, path) -> (how the caller proves who it is, the roles allowed).
EXPECTED: dict[tuple[str, str], tuple[str, frozenset[str]]] = {
    # Open for probes and docs; they reveal nothing about content.
    ("GET", "/healthz"): (PUBLIC, frozenset()),
    ("GET", "/readyz"): (PUBLIC, frozenset()),
    ("GET", "/openapi.json"): (PUBLIC, frozenset()),
    ("GET", "/docs"): (PUBLIC, frozenset()),
    ("GET", "/docs/oauth2-redirect"): (PUBLIC, frozenset()),
    ("GET", "/redoc"): (PUBLIC, frozenset()),
    ("GET", "/console/static/{path}"): (PUBLIC, frozenset()),
    # Operations.
    ("GET", "/metrics"): (KEY, frozenset({ADM})),
    ("GET", "/v1/admin/dead-letters"): (KEY, frozenset({ADM})),
    ("POST", "/v1/admin/dead-letters/{letter_id}/replay"): (KEY, frozenset({ADM})),
    ("DELETE", "/v1/admin/dead-letters/{letter_id}"): (KEY, frozenset({ADM})),
    # Moderation: the platform submits; reviewers may read verdicts.
    ("POST", "/v1/moderate"): (KEY, frozenset({SVC, ADM})),
    ("GET", "/v1/items/{content_id}"): (KEY, frozenset({SVC, REV, ADM})),
    # Banks: reviewers may look at the list and a bank, only admins change or read entries.
    ("GET", "/v1/banks"): (KEY, frozenset({REV, ADM})),
    ("POST", "/v1/banks"): (KEY, frozenset({ADM})),
    ("GET", "/v1/banks/{name}"): (KEY, frozenset({REV, ADM})),
    ("PATCH", "/v1/banks/{name}"): (KEY, frozenset({ADM})),
    ("DELETE", "/v1/banks/{name}"): (KEY, frozenset({ADM})),
    ("POST", "/v1/banks/{name}/entries"): (KEY, frozenset({ADM})),
    ("GET", "/v1/banks/{name}/entries"): (KEY, frozenset({ADM})),
    ("DELETE", "/v1/banks/{name}/entries/{entry_id}"): (KEY, frozenset({ADM})),
    ("GET", "/v1/banks/{name}/export"): (KEY, frozenset({ADM})),
    ("POST", "/v1/banks/{name}/import"): (KEY, frozenset({ADM})),
    # Keys and keyword terms: admins only.
    ("GET", "/v1/keys"): (KEY, frozenset({ADM})),
    ("POST", "/v1/keys"): (KEY, frozenset({ADM})),
    ("DELETE", "/v1/keys/{key_id}"): (KEY, frozenset({ADM})),
    ("POST", "/v1/keys/{key_id}/rotate"): (KEY, frozenset({ADM})),
    ("PUT", "/v1/keys/{key_id}/rate-limit"): (KEY, frozenset({ADM})),
    ("GET", "/v1/keywords"): (KEY, frozenset({ADM})),
    ("POST", "/v1/keywords"): (KEY, frozenset({ADM})),
    ("DELETE", "/v1/keywords/{term_id}"): (KEY, frozenset({ADM})),
    # Provenance receipts: for rights holders (and admins).
    ("GET", "/v1/receipts/{subject_id:path}"): (KEY, frozenset({RH, ADM})),
    # Review API: reviewers and admins; quality and grants are admin business.
    ("GET", "/v1/review/queues"): (KEY, frozenset({REV, ADM})),
    ("GET", "/v1/review/queues/{queue}/items"): (KEY, frozenset({REV, ADM})),
    ("POST", "/v1/review/take"): (KEY, frozenset({REV, ADM})),
    ("GET", "/v1/review/items/{item_id}"): (KEY, frozenset({REV, ADM})),
    ("GET", "/v1/review/items/{item_id}/media/{media_index}"): (KEY, frozenset({REV, ADM})),
    ("GET", "/v1/review/items/{item_id}/clips/{media_index}"): (KEY, frozenset({REV, ADM})),
    ("POST", "/v1/review/items/{item_id}/lease"): (KEY, frozenset({REV, ADM})),
    ("POST", "/v1/review/items/{item_id}/release"): (KEY, frozenset({REV, ADM})),
    ("POST", "/v1/review/items/{item_id}/skip"): (KEY, frozenset({REV, ADM})),
    ("POST", "/v1/review/items/{item_id}/decision"): (KEY, frozenset({REV, ADM})),
    ("POST", "/v1/review/decisions"): (KEY, frozenset({REV, ADM})),
    ("GET", "/v1/review/quality"): (KEY, frozenset({ADM})),
    ("GET", "/v1/review/grants"): (KEY, frozenset({ADM})),
    ("POST", "/v1/review/grants"): (KEY, frozenset({ADM})),
    ("DELETE", "/v1/review/grants"): (KEY, frozenset({ADM})),
    # Copyright: rights holders register works and file claims (in their own name only, so
    # not admins); staff decide; the platform relays uploaders' counter-notices and appeals.
    ("POST", "/v1/works"): (KEY, frozenset({RH})),
    ("GET", "/v1/works"): (KEY, frozenset({RH, ADM})),
    ("GET", "/v1/works/{work_id}"): (KEY, frozenset({RH, ADM})),
    ("DELETE", "/v1/works/{work_id}"): (KEY, frozenset({RH, ADM})),
    ("POST", "/v1/works/{work_id}/scan"): (KEY, frozenset({RH, ADM})),
    ("POST", "/v1/claims"): (KEY, frozenset({RH})),
    ("GET", "/v1/claims"): (KEY, frozenset({RH, REV, ADM})),
    ("GET", "/v1/claims/report"): (KEY, frozenset({RH, REV, ADM})),
    ("GET", "/v1/claims/{claim_id}"): (KEY, frozenset({RH, REV, ADM})),
    ("POST", "/v1/claims/{claim_id}/decision"): (KEY, frozenset({REV, ADM})),
    ("POST", "/v1/claims/{claim_id}/counter-notice"): (KEY, frozenset({SVC, ADM})),
    ("POST", "/v1/claims/{claim_id}/court-action"): (KEY, frozenset({RH})),
    ("POST", "/v1/appeals"): (KEY, frozenset({SVC, ADM})),
    ("GET", "/v1/appeals"): (KEY, frozenset({REV, ADM})),
    ("POST", "/v1/appeals/{appeal_id}/decision"): (KEY, frozenset({REV, ADM})),
    # Reviewer console: reviewer and admin sessions only.
    ("GET", "/console"): (PUBLIC, frozenset()),
    ("POST", "/console/sign-in"): (SIGN_IN, frozenset({REV, ADM})),
    ("GET", "/console/next"): (CONSOLE, frozenset({REV, ADM})),
    ("GET", "/console/items/{item_id}"): (CONSOLE, frozenset({REV, ADM})),
    ("GET", "/console/items/{item_id}/media/{media_index}"): (CONSOLE, frozenset({REV, ADM})),
    ("GET", "/console/items/{item_id}/clips/{media_index}"): (CONSOLE, frozenset({REV, ADM})),
    ("POST", "/console/items/{item_id}/decision"): (CONSOLE, frozenset({REV, ADM})),
    ("POST", "/console/items/{item_id}/skip"): (CONSOLE, frozenset({REV, ADM})),
    ("GET", "/console/queues/{queue}"): (CONSOLE, frozenset({REV, ADM})),
    ("POST", "/console/queues/{queue}/bulk"): (CONSOLE, frozenset({REV, ADM})),
    ("GET", "/console/metrics"): (CONSOLE, frozenset({REV, ADM})),
    ("POST", "/console/sign-out"): (CONSOLE, frozenset({REV, ADM})),
}

# Made-up values for path parameters: nothing by these names exists.
_PARAM_VALUES = {"media_index": "0", "queue": "matrix-queue", "path": "console.css"}


def app_routes(app: FastAPI) -> set[tuple[str, str]]:
    """Every (method, path template) the app answers, HEAD aside, mounts as `{path}`."""
    found: set[tuple[str, str]] = set()

    def add(path: str, methods: set[str] | None) -> None:
        for method in methods or {"GET"}:
            if method != "HEAD":
                found.add((method, path))

    for route in app.routes:
        candidates = getattr(route, "effective_candidates", None)
        if candidates is not None:  # FastAPI >= 0.165 wraps each included router
            for c in candidates():
                add(c.path, set(c.methods))
        elif hasattr(route, "app") and not hasattr(route, "methods"):  # a Mount
            add(route.path + "/{path}", None)
        else:
            add(route.path, getattr(route, "methods", None))
    return found


def concrete(path: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1).split(":")[0]
        return _PARAM_VALUES.get(name, "999999" if name.endswith("id") else "matrix-none")

    return re.sub(r"\{([^}]+)\}", value, path)


class Caller:
    def __init__(self, name: str, role: str | None, secret: str | None) -> None:
        self.name, self.role, self.secret = name, role, secret
        self.cookie: str | None = None
        self.csrf: str | None = None


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[TestClient, dict[str, Caller]]]:
    # Its own database: the matrix calls every route with every role (take, next, sign-out),
    # which must not lease or change what other test modules rely on.
    url = f"sqlite:///{tmp_path_factory.mktemp('authz') / 'matrix.db'}"
    db.migrate(url)
    settings = get_settings().model_copy(update={"database_url": url, "redis_url": None})
    client = TestClient(create_app(settings), raise_server_exceptions=False)
    callers: dict[str, Caller] = {"none": Caller("none", None, None)}
    from datetime import timedelta

    with db.session_scope(url) as s:
        for role in (SVC, RH, REV, ADM):
            callers[role] = Caller(
                role, role, create_key(s, role, f"matrix-{role}", rate_limit="none")[0]
            )
        callers["revoked"] = Caller(
            "revoked", ADM, create_key(s, ADM, "matrix-revoked", rate_limit="none")[0]
        )
        expired, _ = create_key(
            s, ADM, "matrix-expired", rate_limit="none", expires_in=timedelta(seconds=2)
        )
        callers["expired"] = Caller("expired", ADM, expired)
        review_queue.grant(s, s.scalar(_key_id("matrix-reviewer")), review_queue.ALL_QUEUES)
    started = time.monotonic()
    # Console sessions first, while every key is still live; those of the revoked and the
    # expired key must end with their key.
    for caller in callers.values():
        if caller.secret is None:
            continue
        resp = client.post("/console/sign-in", data={"key": caller.secret}, follow_redirects=False)
        token = resp.cookies.get(console_sessions_cookie())
        if token:
            caller.cookie = token
            with db.session_scope(url) as s:
                caller.csrf = console_sessions.resolve(s, token).csrf_token
    with db.session_scope(url) as s:
        revoke_key(s, s.scalar(_key_id("matrix-revoked")))
    time.sleep(max(0.0, 2.2 - (time.monotonic() - started)))
    yield client, callers


def _key_id(name: str) -> Any:
    from sqlalchemy import select

    from moderation.storage.tables import ApiKeyRow

    return select(ApiKeyRow.id).where(ApiKeyRow.name == name)


def console_sessions_cookie() -> str:
    from moderation.api.console import COOKIE

    return COOKIE


def test_every_route_has_a_row(world: tuple[TestClient, dict[str, Caller]]) -> None:
    client, _ = world
    routes = app_routes(client.app)  # type: ignore[arg-type]
    missing = sorted(routes - set(EXPECTED))
    stale = sorted(set(EXPECTED) - routes)
    assert not missing, f"classify these routes in EXPECTED: {missing}"
    assert not stale, f"these rows name no route any more: {stale}"


def test_sessions_only_for_console_roles(world: tuple[TestClient, dict[str, Caller]]) -> None:
    _, callers = world
    assert {c.name for c in callers.values() if c.cookie} == {REV, ADM, "revoked", "expired"}


def _call(client: TestClient, method: str, path: str, kind: str, caller: Caller) -> int:
    url = concrete(path)
    if kind == SIGN_IN:
        data = {"key": caller.secret or ""}
        return client.post(url, data=data, follow_redirects=False).status_code
    headers: dict[str, str] = {}
    cookies: dict[str, str] = {}
    if kind == CONSOLE:
        if caller.cookie:
            cookies = {console_sessions_cookie(): caller.cookie}
    elif caller.secret:
        headers["Authorization"] = f"Bearer {caller.secret}"
    client.cookies.clear()
    for name, value in cookies.items():
        client.cookies.set(name, value, path="/console")
    if kind == CONSOLE and method == "POST":
        resp = client.post(url, data={"csrf": caller.csrf or ""}, follow_redirects=False)
    else:
        body = {"json": {}} if method in ("POST", "PUT", "PATCH") else {}
        resp = client.request(method, url, headers=headers, follow_redirects=False, **body)
    client.cookies.clear()
    redirect = resp.headers.get("location", "").rstrip("/")
    if method == "GET" and resp.status_code == 303 and redirect == "/console":
        return 401  # a page sending the browser back to sign in: its way of saying 401
    return resp.status_code


def _expectation(kind: str, allowed: frozenset[str], caller: Caller) -> int | None:
    """The status a denial must have, or None when the caller must get through."""
    if kind == PUBLIC:
        return None
    if caller.name in ("none", "revoked", "expired"):
        return 401
    if kind == CONSOLE and caller.role not in allowed:
        return 401  # these roles cannot hold a console session at all
    return None if caller.role in allowed else 403


# Sign-out ends the caller's session, so it runs last.
_ORDER = sorted(EXPECTED, key=lambda r: (r == ("POST", "/console/sign-out"), r))


@pytest.mark.parametrize("route", _ORDER, ids=[f"{m} {p}" for m, p in _ORDER])
def test_matrix(route: tuple[str, str], world: tuple[TestClient, dict[str, Caller]]) -> None:
    client, callers = world
    method, path = route
    kind, allowed = EXPECTED[route]
    wrong = []
    for caller in callers.values():
        status = _call(client, method, path, kind, caller)
        want = _expectation(kind, allowed, caller)
        ok = status not in (401, 403, 429) if want is None else status == want
        if not ok:
            wrong.append(f"{caller.name}: got {status}, want {want or 'allowed'}")
    assert not wrong, f"{method} {path}: " + "; ".join(wrong)


def test_revoked_and_expired_keys_lost_their_console_sessions(
    world: tuple[TestClient, dict[str, Caller]],
) -> None:
    client, callers = world
    for name in ("revoked", "expired"):
        client.cookies.set(console_sessions_cookie(), callers[name].cookie or "", path="/console")
        resp = client.get("/console/metrics", follow_redirects=False)
        client.cookies.clear()
        assert resp.status_code == 303 and resp.headers["location"] == "/console", name


def test_static_files_exist() -> None:
    # The static mount's row is checked with a real file.
    assert (Path(__file__).resolve().parents[1] / "moderation/console/static/console.css").exists()
