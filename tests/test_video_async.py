"""A video item end to end through Redis and a real worker: the first verdict at once, the
frames on the `video` queue, the final verdict stored, readable and sent as a signed webhook."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import pytest

from moderation import webhooks

pytestmark = pytest.mark.integration

vs = pytest.importorskip("moderation.video_synth")
SIZE = (320, 180)


@pytest.fixture(scope="module")
def reference() -> tuple[Any, bytes]:
    script = vs.reference_scripts(1, 24.0, seed=21, size=SIZE)[0]
    return script, vs.make_video(script, preset="ultrafast")


def _video_item(data: bytes, **kw: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "content_id": f"vid-{uuid.uuid4().hex}",
        "uploader_id": "u-video",
        "text": "weekend trip",
        "media": [{"kind": "video", "data_b64": base64.b64encode(data).decode()}],
        "context": {},
    }
    item.update(kw)
    return item


def _wait_done(runtime, content_id: str, timeout: float = 60.0) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    from moderation.storage.tables import ItemRow
    from moderation.video_jobs import job_status

    deadline = time.monotonic() + timeout
    seen_progress: list[float] = []
    while time.monotonic() < deadline:
        with runtime.session() as s:
            item = s.get(ItemRow, content_id)
            status = job_status(s, content_id)
            if status is not None:
                seen_progress.append(status["progress"])
            if item is not None and item.status == "done":
                assert status is not None
                status["seen_progress"] = seen_progress
                return status
        time.sleep(0.1)
    raise AssertionError(f"{content_id} still pending after {timeout} s")


@pytest.fixture()
def video_bank(runtime, uid: str, reference):  # type: ignore[no-untyped-def]
    from models.video_decode import VideoLimits
    from moderation import banks
    from moderation.video import add_video_entry, fingerprint_reference

    _, data = reference
    name = f"async-videos-{uid}"
    _, frames = fingerprint_reference(data, VideoLimits())
    with runtime.session() as s:
        banks.create_bank(s, name, kind="video", action="block", owner="studio-1")
        entry_id = add_video_entry(s, banks.get_bank_row(s, name), frames, "", "ref.mp4")
    yield name, entry_id
    with runtime.session() as s:
        banks.delete_bank(s, name)


def test_first_verdict_at_once_then_the_final_one_with_the_matched_segment(
    sender, runtime, reference, video_bank, webhook_receiver
) -> None:  # type: ignore[no-untyped-def]
    script, _ = reference
    name, entry_id = video_bank
    clip = vs.make_clip(script, 6.3, 12.0, vs.TRANSFORMS["logo"], preset="ultrafast")
    item = _video_item(clip)

    first = sender(item)
    # The thumbnail alone is a frame of the banked video: blocked at once, frames pending.
    assert first["decision"] == "block"
    assert [m["entry_id"] for m in first["matches"] if m["bank"] == name] == [entry_id]
    assert "segments" not in first["matches"][0] and "score" not in first["matches"][0]
    pending = [r for r in first["reasons"] if r["source"] == "video"]
    assert pending and pending[0]["category"] == "pending"
    assert "queued for frame analysis" in pending[0]["detail"]

    status = _wait_done(runtime, item["content_id"])
    assert status["status"] == "done" and status["progress"] == 1.0
    assert status["media"][0]["frames"] >= 10
    assert "ref" not in status["media"][0]  # inline media is never echoed back

    from moderation.service import get_verdict

    final = get_verdict(runtime, item["content_id"])
    assert final is not None and final.decision == "block"
    [match] = [m for m in final.matches if m.bank == name]
    assert match.entry_id == entry_id and match.owner == "studio-1"
    assert match.segments is not None and match.score is not None
    [segment] = match.segments
    assert segment.reference_start == pytest.approx(6.3, abs=1.0)
    assert segment.query_start == pytest.approx(0.0, abs=1.0)
    assert segment.query_end == pytest.approx(11.0, abs=1.0)
    assert match.score == segment.score
    assert any("s of the upload matching" in r.detail for r in final.reasons)

    # The same verdict went out as a signed webhook.
    deadline = time.monotonic() + 20
    while not webhook_receiver.events_for(item["content_id"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    [(headers, body)] = webhook_receiver.events_for(item["content_id"])
    assert webhooks.verify(webhook_receiver.secret, body, headers[webhooks.SIGNATURE_HEADER])
    assert not webhooks.verify("wrong-secret", body, headers[webhooks.SIGNATURE_HEADER])
    event = json.loads(body)
    assert event["event"] == "verdict.final" == headers[webhooks.EVENT_HEADER]
    assert event["data"]["decision"] == "block"
    [sent] = event["data"]["matches"]
    assert sent["segments"][0]["reference_start"] == pytest.approx(6.3, abs=1.0)
    assert set(sent["segments"][0]) == {
        "query_start",
        "query_end",
        "reference_start",
        "reference_end",
        "score",
    }

    # A repeat of the item returns the stored (final) verdict and queues nothing new.
    again = sender(item)
    assert again["decision"] == "block"


@pytest.fixture(scope="module")
def api(database_url: str):  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from moderation.api.app import create_app
    from moderation.keys import create_key
    from moderation.settings import get_settings
    from moderation.storage.db import session_scope

    with session_scope(database_url) as s:
        secret = create_key(s, "service", "video-async-test")[0]
    return TestClient(create_app(get_settings())), {"Authorization": f"Bearer {secret}"}


def test_item_api_shows_pending_then_done(sender, runtime, reference, api) -> None:  # type: ignore[no-untyped-def]
    _, data = reference
    item = _video_item(data, text=None)
    first = sender(item)
    assert first["decision"] == "review"
    client, headers = api
    body = client.get(f"/v1/items/{item['content_id']}", headers=headers).json()
    assert body["status"] in ("pending", "done")
    assert body["video"]["status"] in ("queued", "running", "done")
    _wait_done(runtime, item["content_id"])
    body = client.get(f"/v1/items/{item['content_id']}", headers=headers).json()
    assert body["status"] == "done"
    assert body["video"]["progress"] == 1.0
    assert body["verdict"]["decision"] == "allow"  # benign photos, no bank: released
    assert not any(r["source"] == "video" for r in body["verdict"]["reasons"])


def test_an_mp4_cut_short_is_refused_at_once_naming_the_media(sender, reference) -> None:  # type: ignore[no-untyped-def]
    # PyAV writes the index (moov) last, so the cut loses it: nothing can be decoded.
    _, data = reference
    out = sender(_video_item(data[: int(len(data) * 0.6)]))
    assert out["error"]["field"] == "media[0]"
    assert out["error"]["code"] == "media_decode_error"


def test_a_job_that_cannot_finish_goes_to_review_with_its_error(runtime, queue_env) -> None:  # type: ignore[no-untyped-def]
    """The task's time limit (or repeated faults) end in a review verdict, never in limbo."""
    from moderation.domain import Item, MediaRef, Verdict
    from moderation.errors import TaskTimeout
    from moderation.pipeline import Analysis, PendingVideo
    from moderation.service import _store, get_verdict
    from moderation.storage.tables import ItemRow
    from moderation.video_jobs import fail_job, job_status

    cid = f"vid-{uuid.uuid4().hex}"
    ref = MediaRef(kind="video", uri="https://videos.example/x.mp4")
    item = Item(content_id=cid, uploader_id="u", media=[ref])
    analysis = Analysis(videos=[PendingVideo(0, ref, 30.0)])
    first = Verdict(content_id=cid, decision="allow", policy_version="t")
    with runtime.session() as s:
        _store(s, item, first, analysis)
    out = fail_job(runtime, cid, TaskTimeout("video analysis took too long"))
    assert out["decision"] == "review"
    assert any(
        r["source"] == "video" and r["category"] == "unanalysed" and "too long" in r["detail"]
        for r in out["reasons"]
    )
    with runtime.session() as s:
        assert s.get(ItemRow, cid).status == "done"
        status = job_status(s, cid)
    assert status is not None and status["status"] == "failed"
    assert status["error"]["code"] == "timeout"
    stored = get_verdict(runtime, cid)
    assert stored is not None and stored.decision == "review"
    # Idempotent: failing it again changes nothing.
    assert fail_job(runtime, cid, TaskTimeout("again"))["decision"] == "review"


def test_a_review_verdict_finds_its_clip_already_kept(runtime, uid: str, reference) -> None:  # type: ignore[no-untyped-def]
    """The final verdict queues the item only once its clip is stored: a reviewer who takes
    it the moment it is queued can play it (run in-process to watch the queue insert)."""
    from sqlalchemy import event, select

    from models.video_decode import VideoLimits
    from moderation import banks
    from moderation.domain import Item, MediaRef, Verdict
    from moderation.pipeline import Analysis, PendingVideo
    from moderation.service import _store
    from moderation.storage.tables import ReviewClipRow, ReviewItemRow
    from moderation.video import add_video_entry, fingerprint_reference
    from moderation.video_jobs import run_job

    _, data = reference
    bank = f"clip-first-{uid}"
    _, frames = fingerprint_reference(data, VideoLimits())
    with runtime.session() as s:
        banks.create_bank(s, bank, kind="video", action="review")
        add_video_entry(s, banks.get_bank_row(s, bank), frames, "", "ref.mp4")
    cid = f"vid-{uuid.uuid4().hex}"
    ref = MediaRef(kind="video", data_b64=base64.b64encode(data).decode())
    with runtime.session() as s:
        _store(
            s,
            Item(content_id=cid, uploader_id="u", media=[ref]),
            Verdict(content_id=cid, decision="allow", policy_version="t"),
            Analysis(videos=[PendingVideo(0, ref, 24.0)]),
        )
    clips_when_queued: list[list[int]] = []

    def on_insert(mapper, connection, target) -> None:  # type: ignore[no-untyped-def]
        if target.content_id == cid:
            found = connection.execute(
                select(ReviewClipRow.media_index).where(ReviewClipRow.content_id == cid)
            )
            clips_when_queued.append(list(found.scalars()))

    event.listen(ReviewItemRow, "before_insert", on_insert)
    try:
        out = run_job(runtime, cid)
    finally:
        event.remove(ReviewItemRow, "before_insert", on_insert)
        with runtime.session() as s:
            banks.delete_bank(s, bank)
    assert out["decision"] == "review", out
    assert clips_when_queued == [[0]]


def test_garbage_sent_as_a_video_is_a_clear_error(sender) -> None:  # type: ignore[no-untyped-def]
    out = sender(_video_item(b"\x00\x00\x00\x18ftypmp42" + b"\xff" * 4000))
    assert out["error"]["field"] == "media[0]"
    assert out["error"]["code"] in ("media_decode_error", "unsupported_media")


def test_a_webhook_refused_once_is_retried_and_delivered(
    worker, webhook_receiver, database_url: str
) -> None:  # type: ignore[no-untyped-def]
    from moderation.runtime import build_runtime
    from moderation.settings import get_settings
    from moderation.storage.tables import WebhookDeliveryRow

    rt = build_runtime(get_settings(), migrate=False)  # after the receiver set the URL
    cid = f"hook-{uuid.uuid4().hex}"
    webhook_receiver.fail_first[cid] = 1
    delivery = webhooks.enqueue(rt, "test.event", cid, {"n": 1})
    assert delivery is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with rt.session() as s:
            row = s.get(WebhookDeliveryRow, delivery)
            assert row is not None
            if row.status != "pending":
                break
        time.sleep(0.1)
    assert (row.status, row.attempts, row.response_status) == ("delivered", 2, 204)
    [(headers, body)] = webhook_receiver.events_for(cid)
    assert headers[webhooks.DELIVERY_HEADER] == str(delivery)
    assert json.loads(body)["data"] == {"n": 1}


def test_signatures_are_checked_for_body_secret_and_age() -> None:
    body = b'{"a":1}'
    header = webhooks.sign("k", body, 1_000_000)
    assert webhooks.verify("k", body, header, now=1_000_010)
    assert not webhooks.verify("k", b'{"a":2}', header, now=1_000_010)
    assert not webhooks.verify("other", body, header, now=1_000_010)
    assert not webhooks.verify("k", body, header, now=1_000_000 + 301)  # replayed later
    assert not webhooks.verify("k", body, "garbage", now=1_000_010)
