"""Tests for item validation (`parse_item`) and the `moderate_payload` task entry's error path."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from sqlalchemy import select

from moderation.errors import InputTooLarge, InvalidInput
from moderation.service import moderate_payload, parse_item
from moderation.settings import Limits
from moderation.storage.db import session_scope
from moderation.storage.tables import ItemRow, VerdictRow
from tests.images import jpeg, photo


def item(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "content_id": "c-1",
        "uploader_id": "u-1",
        "text": None,
        "media": [],
        "context": {},
    }
    base.update(overrides)
    return base


def img_b64(size: tuple[int, int] = (128, 128)) -> str:
    # A photo no test puts into a bank: the session database (and its banks) is shared.
    return base64.b64encode(jpeg(photo("immunohistochemistry", size))).decode()


# --- parse_item ---------------------------------------------------------------------------


def test_valid_item_parses() -> None:
    parsed = parse_item(
        item(
            text="hello",
            media=[{"kind": "image", "uri": "https://x/y.jpg"}],
            context={"surface": "feed"},
        ),
        Limits(),
    )
    assert parsed.content_id == "c-1"
    assert parsed.media[0].uri == "https://x/y.jpg"
    assert parsed.context == {"surface": "feed"}


@pytest.mark.parametrize("payload", [None, [], "a string", 42, [{"content_id": "x"}]])
def test_payload_not_an_object(payload: Any) -> None:
    with pytest.raises(InvalidInput) as exc:
        parse_item(payload, Limits())
    assert type(exc.value) is InvalidInput
    assert "JSON object" in exc.value.message


def test_missing_content_id() -> None:
    payload = item()
    del payload["content_id"]
    with pytest.raises(InvalidInput) as exc:
        parse_item(payload, Limits())
    assert type(exc.value) is InvalidInput
    assert exc.value.field == "content_id"
    assert "missing required field 'content_id'" in exc.value.message


def test_missing_uploader_id() -> None:
    payload = item()
    del payload["uploader_id"]
    with pytest.raises(InvalidInput) as exc:
        parse_item(payload, Limits())
    assert exc.value.field == "uploader_id"


def test_empty_content_id() -> None:
    with pytest.raises(InvalidInput) as exc:
        parse_item(item(content_id=""), Limits())
    assert type(exc.value) is InvalidInput
    assert exc.value.field == "content_id"
    assert "content_id" in exc.value.message
    assert "at least 1 character" in exc.value.message


def test_unknown_top_level_field() -> None:
    with pytest.raises(InvalidInput) as exc:
        parse_item(item(priority="high"), Limits())
    assert type(exc.value) is InvalidInput
    assert exc.value.field == "priority"
    assert "unknown field 'priority'" in exc.value.message


def test_unknown_field_in_media_object() -> None:
    with pytest.raises(InvalidInput) as exc:
        parse_item(item(media=[{"kind": "image", "uri": "https://x/a.jpg", "size": 3}]), Limits())
    assert type(exc.value) is InvalidInput
    assert exc.value.field == "media.0.size"
    assert "unknown field 'media.0.size'" in exc.value.message


@pytest.mark.parametrize(
    "media",
    [
        {"kind": "image", "uri": "https://x/a.jpg", "data_b64": "AAAA"},
        {"kind": "image"},
    ],
)
def test_media_needs_exactly_one_source(media: dict[str, Any]) -> None:
    ok = {"kind": "image", "uri": "https://x/ok.jpg"}
    with pytest.raises(InvalidInput) as exc:
        parse_item(item(media=[ok, media]), Limits())
    assert type(exc.value) is InvalidInput
    assert exc.value.field == "media.1"
    assert "exactly one of 'uri' or 'data_b64'" in exc.value.message


def test_wrong_media_kind() -> None:
    with pytest.raises(InvalidInput) as exc:
        parse_item(item(media=[{"kind": "audio", "uri": "https://x/a.mp3"}]), Limits())
    assert type(exc.value) is InvalidInput
    assert exc.value.field == "media.0.kind"
    assert "'image' or 'video'" in exc.value.message


def test_text_over_limit() -> None:
    limits = Limits(max_text_chars=10)
    assert parse_item(item(text="x" * 10), limits).text == "x" * 10
    with pytest.raises(InputTooLarge) as exc:
        parse_item(item(text="x" * 11), limits)
    assert exc.value.field == "text"
    assert "11 characters" in exc.value.message
    assert "10" in exc.value.message


def test_too_many_media() -> None:
    limits = Limits(max_media_items=2)
    media = [{"kind": "image", "uri": f"https://x/{i}.jpg"} for i in range(3)]
    assert len(parse_item(item(media=media[:2]), limits).media) == 2
    with pytest.raises(InputTooLarge) as exc:
        parse_item(item(media=media), limits)
    assert exc.value.field == "media"
    assert "3 media objects" in exc.value.message


def test_content_id_too_long() -> None:
    limits = Limits(max_id_chars=16)
    assert parse_item(item(content_id="c" * 16), limits).content_id == "c" * 16
    with pytest.raises(InputTooLarge) as exc:
        parse_item(item(content_id="c" * 17), limits)
    assert exc.value.field == "content_id"
    assert "longer than 16" in exc.value.message


def test_uploader_id_too_long() -> None:
    with pytest.raises(InputTooLarge) as exc:
        parse_item(item(uploader_id="u" * 300), Limits())
    assert exc.value.field == "uploader_id"


def test_context_too_large() -> None:
    limits = Limits(max_context_bytes=100)
    with pytest.raises(InputTooLarge) as exc:
        parse_item(item(context={"blob": "z" * 200}), limits)
    assert exc.value.field == "context"
    assert "100 bytes" in exc.value.message


# --- moderate_payload ---------------------------------------------------------------------


def stored_item(database_url: str, content_id: str) -> ItemRow | None:
    with session_scope(database_url) as s:
        return s.get(ItemRow, content_id)


def assert_failed(database_url: str, result: dict[str, Any], code: str) -> ItemRow:
    assert set(result) == {"content_id", "error"}
    assert result["error"]["code"] == code
    assert result["error"]["message"]
    row = stored_item(database_url, result["content_id"])
    assert row is not None
    assert row.status == "failed"
    assert row.error_code == code
    assert row.error_message == result["error"]["message"]
    with session_scope(database_url) as s:
        assert (
            s.scalar(select(VerdictRow).where(VerdictRow.content_id == result["content_id"]))
            is None
        )
    return row


def test_bad_payload_is_returned_and_recorded(runtime: Any, database_url: str, uid: str) -> None:
    cid = f"bad-{uid}"
    result = moderate_payload(runtime, item(content_id=cid, uploader_id=f"up-{uid}", extra=1))
    assert result["content_id"] == cid
    assert result["error"]["field"] == "extra"
    row = assert_failed(database_url, result, "invalid_input")
    assert row.uploader_id == f"up-{uid}"
    assert row.attempts == 1
    # A retry of the same bad item is counted, not lost or duplicated.
    moderate_payload(runtime, item(content_id=cid, uploader_id=f"up-{uid}", extra=1))
    again = stored_item(database_url, cid)
    assert again is not None
    assert again.attempts == 2


def test_payload_without_content_id_is_recorded_under_invalid_id(
    runtime: Any, database_url: str, uid: str
) -> None:
    payload = {"uploader_id": f"up-{uid}", "text": "no id"}
    result = moderate_payload(runtime, payload)
    assert result["content_id"].startswith("invalid-")
    assert result["error"]["field"] == "content_id"
    assert_failed(database_url, result, "invalid_input")
    # The id is derived from the payload: the same payload lands on the same record.
    assert moderate_payload(runtime, payload)["content_id"] == result["content_id"]


def test_non_object_payload_is_recorded(runtime: Any, database_url: str, uid: str) -> None:
    result = moderate_payload(runtime, [f"not an item {uid}"])
    assert result["content_id"].startswith("invalid-")
    assert_failed(database_url, result, "invalid_input")


def test_invalid_base64_is_invalid_input(runtime: Any, database_url: str, uid: str) -> None:
    result = moderate_payload(
        runtime,
        item(content_id=f"b64-{uid}", media=[{"kind": "image", "data_b64": "!!!not base64!!!"}]),
    )
    assert_failed(database_url, result, "invalid_input")
    assert "base64" in result["error"]["message"]
    assert result["error"]["field"] == "media[0]"


def test_truncated_jpeg_is_media_decode_error(runtime: Any, database_url: str, uid: str) -> None:
    data = jpeg(photo("astronaut", (256, 256)))
    truncated = base64.b64encode(data[: len(data) // 3]).decode()
    result = moderate_payload(
        runtime, item(content_id=f"trunc-{uid}", media=[{"kind": "image", "data_b64": truncated}])
    )
    assert_failed(database_url, result, "media_decode_error")
    assert result["error"]["field"] == "media[0]"


def test_image_over_byte_limit_is_input_too_large(database_url: str, uid: str) -> None:
    from moderation.runtime import build_runtime
    from moderation.settings import get_settings

    settings = get_settings().model_copy(update={"limits": Limits(max_media_bytes=2000)})
    rt = build_runtime(settings, migrate=False)
    data = img_b64((256, 256))
    assert len(base64.b64decode(data)) > 2000
    result = moderate_payload(
        rt, item(content_id=f"big-{uid}", media=[{"kind": "image", "data_b64": data}])
    )
    assert_failed(database_url, result, "input_too_large")
    assert "2000" in result["error"]["message"]


def test_text_over_limit_is_recorded_as_input_too_large(
    runtime: Any, database_url: str, uid: str
) -> None:
    limit = runtime.settings.limits.max_text_chars
    result = moderate_payload(runtime, item(content_id=f"long-{uid}", text="a" * (limit + 1)))
    assert_failed(database_url, result, "input_too_large")
    assert result["error"]["field"] == "text"


def test_offensive_chinese_text_with_zero_width_space_blocks(
    runtime: Any, database_url: str, uid: str
) -> None:
    cid = f"zh-{uid}"
    result = moderate_payload(runtime, item(content_id=cid, text="你这个傻\u200b逼"))
    assert "error" not in result
    assert result["content_id"] == cid
    assert result["decision"] == "block"
    assert result["policy_version"] == runtime.policy.version
    assert result["categories"]["offensive"] >= 0.9
    reasons = [r for r in result["reasons"] if r["category"] == "offensive"]
    assert reasons
    assert reasons[0]["source"] == "keywords"
    assert "傻逼" in reasons[0]["detail"]
    assert reasons[0]["score"] >= reasons[0]["threshold"]
    row = stored_item(database_url, cid)
    assert row is not None
    assert row.status == "done"
    assert row.error_code is None


def test_benign_text_and_image_allows(runtime: Any, uid: str) -> None:
    result = moderate_payload(
        runtime,
        item(
            content_id=f"ok-{uid}",
            text="a lovely day at the beach",
            media=[{"kind": "image", "data_b64": img_b64()}],
        ),
    )
    assert "error" not in result
    assert result["decision"] == "allow"
    assert result["reasons"] == []


def test_same_content_id_returns_identical_stored_verdict(
    runtime: Any, database_url: str, uid: str
) -> None:
    cid = f"idem-{uid}"
    first = moderate_payload(
        runtime,
        item(content_id=cid, text="你这个傻逼", media=[{"kind": "image", "data_b64": img_b64()}]),
    )
    assert "error" not in first
    # Different content under the same id: idempotency is by content_id, nothing recomputed.
    second = moderate_payload(runtime, item(content_id=cid, text="harmless"))
    assert second == first
    assert second["latency_ms"] == first["latency_ms"]
    with session_scope(database_url) as s:
        rows = s.scalars(select(VerdictRow).where(VerdictRow.content_id == cid)).all()
        assert len(rows) == 1
        row = s.get(ItemRow, cid)
        assert row is not None
        assert row.attempts == 1


def test_custom_term_reaches_a_running_runtime_through_the_change_log(
    runtime: Any, uid: str
) -> None:
    from moderation import keywords_store
    from moderation.storage import db

    text = f"buy zorbleflux{uid} today"
    assert runtime.keywords.scan(text) == []
    with db.session_scope(runtime.database_url) as s:
        term_id = keywords_store.add_term(s, "spam", f"zorbleflux{uid}", 0.7)
    runtime.refresh(force=True)
    assert [(h.category, h.score) for h in runtime.keywords.scan(text)] == [("spam", 0.7)]
    with db.session_scope(runtime.database_url) as s:
        keywords_store.remove_term(s, term_id)
    runtime.refresh(force=True)
    assert runtime.keywords.scan(text) == []
