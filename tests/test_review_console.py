"""The reviewer console over HTTP (no browser): sign-in, cookie flags, CSRF, CSP, escaping."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from moderation.api.app import create_app
from moderation.keys import create_key
from moderation.settings import get_settings
from moderation.storage.db import session_scope
from tests.review_helpers import queued_item, unique_picture


def key(database_url: str, role: str, name: str) -> tuple[str, int]:
    with session_scope(database_url) as s:
        secret, p = create_key(s, role, name)
    return secret, p.key_id


def grant(database_url: str, key_id: int, queue: str) -> None:
    from moderation import review_queue

    with session_scope(database_url) as s:
        review_queue.grant(s, key_id, queue)


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


@pytest.fixture()
def browser_like(database_url: str) -> TestClient:
    return TestClient(create_app(get_settings()), follow_redirects=True)


def test_sign_in_page_has_a_strict_policy(browser_like: TestClient) -> None:
    page = browser_like.get("/console")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert "<script>" not in page.text  # no inline script anywhere
    assert browser_like.get("/console/static/console.js").status_code == 200


@pytest.mark.parametrize(("role", "status"), [("service", 403), ("rights_holder", 403)])
def test_only_reviewers_and_admins_sign_in(
    browser_like: TestClient, database_url: str, role: str, status: int
) -> None:
    secret, _ = key(database_url, role, f"console-{role}")
    resp = browser_like.post("/console/sign-in", data={"key": secret})
    assert resp.status_code == status
    assert "mod_console" not in resp.cookies
    bad = browser_like.post("/console/sign-in", data={"key": "mod_nonsense"})
    assert bad.status_code == 401


def test_session_cookie_csrf_and_escaping(
    browser_like: TestClient, database_url: str, uid: str
) -> None:
    q = f"category:cons{uid}"
    hostile = '<img src=x onerror="alert(1)"><script>alert(2)</script>&amp;'
    row = queued_item(
        database_url,
        f"c-xss-{uid}",
        category=f"cons{uid}",
        text=hostile,
        picture=unique_picture(uid),
    )
    secret, key_id = key(database_url, "reviewer", f"console-rev-{uid}")
    grant(database_url, key_id, q)
    resp = browser_like.post("/console/sign-in", data={"key": secret}, follow_redirects=False)
    assert resp.status_code == 303
    cookie = resp.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
    assert secret not in cookie
    page = browser_like.get(resp.headers["location"])
    assert page.url.path == f"/console/items/{row.id}"
    assert hostile not in page.text
    assert "&lt;script&gt;alert(2)&lt;/script&gt;&amp;amp;" in page.text
    assert 'class="blurred"' in page.text
    media = browser_like.get(f"/console/items/{row.id}/media/0")
    assert media.headers["content-type"] == "image/jpeg"
    token = csrf_of(page.text)
    url = f"/console/items/{row.id}/decision"
    form = {"action": "remove", "policy": "violence.graphic"}
    assert browser_like.post(url, data=form).status_code == 403  # no CSRF token
    assert browser_like.post(url, data={**form, "csrf": "wrong"}).status_code == 403
    cross = browser_like.post(
        url, data={**form, "csrf": token}, headers={"Origin": "https://evil.example"}
    )
    assert cross.status_code == 403
    no_reason = browser_like.post(url, data={"action": "remove", "policy": "", "csrf": token})
    assert no_reason.status_code == 422 and "policy" in no_reason.text.lower()
    done = browser_like.post(url, data={**form, "csrf": token})
    assert done.status_code == 200 and "Nothing to review" in done.text
    metrics = browser_like.get("/console/metrics")
    assert f"console-rev-{uid}" in metrics.text and "Queues" in metrics.text
    out = browser_like.post("/console/sign-out", data={"csrf": token})
    assert "Sign in" in out.text
    assert browser_like.get(f"/console/items/{row.id}").url.path == "/console"


def test_other_reviewers_queue_is_hidden(
    browser_like: TestClient, database_url: str, uid: str
) -> None:
    row = queued_item(database_url, f"c-hidden-{uid}", category=f"hid{uid}")
    secret, key_id = key(database_url, "reviewer", f"console-hid-{uid}")
    grant(database_url, key_id, f"category:other{uid}")
    browser_like.post("/console/sign-in", data={"key": secret})
    assert browser_like.get(f"/console/items/{row.id}").status_code == 404
    assert browser_like.get(f"/console/items/{row.id}/media/0").status_code == 404


def test_bulk_decision_on_a_selection(
    browser_like: TestClient, database_url: str, uid: str
) -> None:
    q = f"category:cbulk{uid}"
    rows = [
        queued_item(database_url, f"c-bulk-{uid}-{i}", category=f"cbulk{uid}") for i in range(3)
    ]
    secret, key_id = key(database_url, "reviewer", f"console-bulk-{uid}")
    grant(database_url, key_id, q)
    browser_like.post("/console/sign-in", data={"key": secret})
    page = browser_like.get(f"/console/queues/{q}")
    assert page.status_code == 200
    assert all(r.content_id in page.text for r in rows)
    token = csrf_of(page.text)
    chosen = [rows[0].id, rows[2].id]
    resp = browser_like.post(
        f"/console/queues/{q}/bulk",
        data={
            "csrf": token,
            "item": chosen,
            "action": ["remove", "label"],
            "label": "spam",
            "policy": "spam",
        },
    )
    assert resp.status_code == 200, resp.text
    assert "2 of 2 decided" in resp.text
    assert rows[1].content_id in resp.text and rows[0].content_id not in resp.text
    from moderation.review_decisions import decisions_for

    with session_scope(database_url) as s:
        (d,) = decisions_for(s, rows[2].content_id)
        assert d.outcome == "remove" and [a["type"] for a in d.actions] == ["remove", "label"]
    other = browser_like.get(f"/console/queues/category:elsewhere{uid}")
    assert other.status_code == 403
