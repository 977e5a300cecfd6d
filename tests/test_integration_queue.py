"""End to end through a real Redis and a real Celery worker process: the task contract."""

from __future__ import annotations

import base64
import time
import uuid
from typing import Any

import pytest

from tests.images import jpeg, near_copy, patch_png_size, photo, png

pytestmark = pytest.mark.integration


def _item(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "content_id": f"it-{uuid.uuid4().hex}",
        "uploader_id": "u1",
        "text": None,
        "media": [],
        "context": {},
    }
    base.update(kw)
    return base


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _image(data: bytes) -> dict[str, Any]:
    return {
        "content_id": "x",
        "uploader_id": "u",
        "media": [{"kind": "image", "data_b64": _b64(data)}],
    }


def test_evasive_chinese_text_is_blocked_with_the_term(sender) -> None:  # type: ignore[no-untyped-def]
    verdict = sender(_item(text="你这个傻\u200b逼，滚"))
    assert verdict["decision"] == "block"
    assert set(verdict) >= {
        "content_id",
        "decision",
        "categories",
        "reasons",
        "matches",
        "policy_version",
        "latency_ms",
    }
    assert any("傻逼" in r["detail"] and r["source"] == "keywords" for r in verdict["reasons"])
    assert verdict["categories"]["offensive"] >= 0.9


def test_benign_item_is_allowed(sender) -> None:  # type: ignore[no-untyped-def]
    # A photo no other test puts into a bank (the session database is shared).
    img = jpeg(photo("immunohistochemistry", (512, 512)))
    verdict = sender(
        _item(
            text="A lovely day at the beach 今天天气很好",
            media=[{"kind": "image", "data_b64": _b64(img)}],
        )
    )
    assert verdict["decision"] == "allow"
    assert verdict["reasons"] == [] and verdict["matches"] == []


def test_repeated_content_id_returns_the_stored_verdict(sender) -> None:  # type: ignore[no-untyped-def]
    item = _item(text="fuck you")
    first = sender(item)
    second = sender(dict(item, text="a different text that would be allowed"))
    assert first == second  # same latency_ms too: nothing was computed twice
    assert second["decision"] == "block"


def test_bank_entry_added_via_api_matches_within_one_second(sender, uid) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from moderation.api.app import create_app
    from moderation.keys import create_key
    from moderation.settings import get_settings
    from moderation.storage import db

    settings = get_settings()
    with db.session_scope(settings.resolved_database_url) as s:
        key, _ = create_key(s, "admin", "it-admin")
    api = TestClient(create_app(settings), headers={"Authorization": f"Bearer {key}"})
    original = photo("coffee")
    query = near_copy(original)
    # Before the entry exists the near-copy is allowed.
    assert sender(_item(media=[{"kind": "image", "data_b64": _b64(query)}]))["decision"] == "allow"

    bank = f"it-bad-{uid}"
    assert api.post("/v1/banks", json={"name": bank, "action": "block"}).status_code == 201
    added = api.post(f"/v1/banks/{bank}/entries", json={"data_b64": _b64(jpeg(original))})
    assert added.status_code == 201, added.text
    entry_id = added.json()["entry_id"]
    t0 = time.monotonic()
    while True:
        verdict = sender(_item(media=[{"kind": "image", "data_b64": _b64(query)}]))
        elapsed = time.monotonic() - t0
        if verdict["matches"] or elapsed > 5:
            break
    assert verdict["decision"] == "block", verdict
    assert verdict["matches"][0]["bank"] == bank
    assert verdict["matches"][0]["entry_id"] == entry_id
    assert 0 <= verdict["matches"][0]["distance"] <= 31
    assert elapsed < 1.0, f"entry took {elapsed:.2f} s to reach the worker"


@pytest.mark.parametrize(
    ("item", "code", "field"),
    [
        ({"uploader_id": "u", "media": []}, "invalid_input", "content_id"),
        ({"content_id": "x", "uploader_id": "u", "surprise": 1}, "invalid_input", "surprise"),
        (
            {
                "content_id": "x",
                "uploader_id": "u",
                "media": [{"kind": "image", "data_b64": "!!!not base64!!!"}],
            },
            "invalid_input",
            "media[0]",
        ),
        (
            {
                "content_id": "x",
                "uploader_id": "u",
                "media": [{"kind": "image", "data_b64": base64.b64encode(b"GIF89a\x01").decode()}],
            },
            "media_decode_error",
            "media[0]",
        ),
        (
            {
                "content_id": "x",
                "uploader_id": "u",
                "media": [{"kind": "image", "uri": "http://169.254.169.254/latest/meta-data"}],
            },
            "media_fetch_denied",
            "media[0]",
        ),
        (
            {
                "content_id": "x",
                "uploader_id": "u",
                "media": [{"kind": "image", "uri": "file:///etc/passwd"}],
            },
            "media_fetch_denied",
            "media[0]",
        ),
        ({"content_id": "x", "uploader_id": "u", "text": "a" * 20_001}, "input_too_large", "text"),
        ("not an object", "invalid_input", None),
        (_image(jpeg(photo("astronaut", (64, 64)))[:300]), "media_decode_error", "media[0]"),
        (_image(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj"), "unsupported_media", "media[0]"),
        (
            _image(patch_png_size(png(photo("astronaut", (8, 8))), 30_000, 30_000)),
            "input_too_large",
            "media[0]",
        ),
        (
            {"content_id": "x", "uploader_id": "u", "media": [{"kind": "image", "data_b64": ""}]},
            "invalid_input",
            "media[0]",
        ),
        ({"content_id": "x", "uploader_id": "u", "text": "nul\x00byte"}, "invalid_input", "text"),
    ],
)
def test_bad_items_get_error_results_and_the_worker_keeps_going(
    sender, item: Any, code: str, field: str | None
) -> None:  # type: ignore[no-untyped-def]
    from moderation.settings import get_settings
    from moderation.storage import db
    from moderation.storage.tables import ItemRow

    if isinstance(item, dict) and "content_id" in item:
        item = dict(item, content_id=f"bad-{uuid.uuid4().hex}")
    result = sender(item)
    assert result["error"]["code"] == code, result
    if field is not None:
        assert result["error"].get("field") == field
    assert result["error"]["message"]
    with db.session_scope(get_settings().resolved_database_url) as s:
        row = s.get(ItemRow, result["content_id"])
        assert row is not None and row.status == "failed" and row.error_code == code
    # The worker survived: the next good item gets a verdict.
    assert sender(_item(text="hello"))["decision"] == "allow"


def test_http_moderate_goes_through_the_worker(worker, queue_env) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from moderation.api.app import create_app
    from moderation.keys import create_key
    from moderation.settings import get_settings
    from moderation.storage import db

    settings = get_settings()
    with db.session_scope(settings.resolved_database_url) as s:
        key, _ = create_key(s, "service", "it-service")
    api = TestClient(create_app(settings), headers={"Authorization": f"Bearer {key}"})
    item = _item(text="ｆｕｃｋ ｙｏｕ")
    r = api.post("/v1/moderate", json=item)
    assert r.status_code == 200, r.text
    assert r.json()["decision"] == "block"
    stored = api.get(f"/v1/items/{item['content_id']}")
    assert stored.status_code == 200 and stored.json()["status"] == "done"
    assert stored.json()["verdict"]["decision"] == "block"
    bad = api.post("/v1/moderate", json={"content_id": "z", "uploader_id": "u", "extra": 1})
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "invalid_input"
    assert "extra" in bad.json()["error"]["message"]
