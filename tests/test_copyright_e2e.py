"""The copyright flow end to end through a real worker, Redis, database, embedded chain and
webhook receiver: a work blocks a near-copy at upload, its retroactive scan finds an older
copy, a notice takes that copy down automatically, a counter-notice restores it after the
business-day wait (driven by a test clock), and the report shows the time to takedown."""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from moderation import claims
from moderation.anchoring import anchor_now
from moderation.api.app import create_app
from moderation.api.claims import get_clock
from moderation.keys import create_key
from moderation.provenance import register_leaf
from moderation.settings import get_settings
from moderation.storage.db import session_scope
from tests.conftest import WebhookReceiver
from tests.copyright_helpers import auth, copy_b64, counter_notice, image_item, notice, original_b64

pytestmark = pytest.mark.integration


def wait_for(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def events(receiver: WebhookReceiver, content_id: str, event: str) -> list[dict[str, Any]]:
    return [
        json.loads(body)["data"]
        for headers, body in receiver.events_for(content_id)
        if headers.get("X-Moderation-Event") == event
    ]


def test_holder_flow_from_registration_to_restore(
    worker: Any,
    sender: Callable[..., dict[str, Any]],
    webhook_receiver: WebhookReceiver,
    database_url: str,
) -> None:
    uid = uuid.uuid4().hex[:10]
    settings = get_settings()
    holder_name = f"e2e-holder-{uid}"
    with session_scope(database_url) as s:
        holder = create_key(s, "rights_holder", holder_name)[0]
        service = create_key(s, "service", f"e2e-service-{uid}")[0]
    # The claims clock: real time until the test sets it (the business-day wait).
    clock_now: list[datetime | None] = [None]
    app = create_app(settings)
    app.dependency_overrides[get_clock] = lambda: lambda: clock_now[0] or datetime.now(UTC)
    client = TestClient(app)
    seed = f"e2e-{uid}"
    original = base64.b64decode(original_b64(seed))
    uploader = f"uploader-{uid}"

    # The holder proved it had the photo first: its hash anchored before anyone uploaded it.
    with session_scope(database_url) as s:
        sha256 = hashlib.sha256(original).hexdigest()
        register_leaf(s, subject_id=f"file:{sha256}:{uid}", owner=holder_name, sha256=sha256)
    anchor_now(settings)
    with session_scope(database_url) as s:
        first_proof = claims.anchored_at(s, holder_name, sha256)
    assert first_proof is not None
    while datetime.now(UTC) <= first_proof + timedelta(milliseconds=50):
        time.sleep(0.05)

    # A copy uploaded before the work is registered goes through.
    old_copy = f"old-copy-{uid}"
    assert sender(image_item(old_copy, uploader, copy_b64(seed)))["decision"] == "allow"

    # The holder registers the work; its retroactive scan runs on the maintenance queue.
    resp = client.post(
        "/v1/works",
        json={
            "kind": "image",
            "title": "Sunrise",
            "policy": "block",
            "data_b64": original_b64(seed),
        },
        headers=auth(holder),
    )
    assert resp.status_code == 201, resp.text
    work = resp.json()
    assert work["retro_scan"] == "queued"

    # A near-copy uploaded now is blocked at upload, naming the work and its owner.
    time.sleep(0.5)  # the worker's index refresh interval
    verdict = sender(image_item(f"new-copy-{uid}", f"other-{uid}", copy_b64(seed)))
    assert verdict["decision"] == "block", verdict
    [m] = [m for m in verdict["matches"] if m.get("work_id") == work["id"]]
    assert m["owner"] == holder_name and m["action"] == "block"

    def detected() -> list[dict[str, Any]]:
        dashboard = client.get("/v1/claims", headers=auth(holder)).json()
        return [c for c in dashboard if c["origin"] == "scan" and c["content_id"] == old_copy]

    [found] = wait_for(detected, what="the retroactive scan's claim")
    assert found["work_id"] == work["id"] and found["state"] == "detected"

    # A notice against the old copy: strong match + the holder's earlier proof -> down at once.
    started = time.monotonic()
    resp = client.post("/v1/claims", json=notice(work["id"], old_copy), headers=auth(holder))
    assert resp.status_code == 201, resp.text
    claim = resp.json()
    assert claim["state"] == "taken_down", claim["verification"]
    assert time.monotonic() - started < 5
    item = client.get(f"/v1/items/{old_copy}", headers=auth(service)).json()
    assert item["removed"] is True
    [sent] = wait_for(lambda: events(webhook_receiver, old_copy, "item.taken_down"), what="event")
    sor = sent["statement_of_reasons"]
    assert sent["uploader_id"] == uploader and sor["claim_id"] == claim["id"]
    for field in ("restriction", "facts", "automated_detection", "automated_decision", "ground"):
        assert sor[field] not in (None, ""), field
    assert any("Article 20" in r for r in sor["redress"])

    # The uploader counter-notifies; the claimant hears of it; restore after 10 business days.
    clock_now[0] = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)  # a Wednesday
    resp = client.post(
        f"/v1/claims/{claim['id']}/counter-notice", json=counter_notice(), headers=auth(service)
    )
    assert resp.status_code == 200, resp.text
    restore_after = datetime.fromisoformat(resp.json()["restore_after"])
    assert restore_after == datetime(2026, 12, 9, 15, 0, tzinfo=UTC)
    wait_for(lambda: events(webhook_receiver, old_copy, "claim.counter_notice"), what="event")
    before = restore_after - timedelta(minutes=1)
    assert claims.run_restore_due(settings, clock=lambda: before)["restored"] == []
    assert client.get(f"/v1/items/{old_copy}", headers=auth(service)).json()["removed"]
    done = claims.run_restore_due(settings, clock=lambda: restore_after)
    assert claim["id"] in done["restored"]
    assert client.get(f"/v1/items/{old_copy}", headers=auth(service)).json()["removed"] is False
    wait_for(lambda: events(webhook_receiver, old_copy, "item.restored"), what="event")

    # The report shows the time from notice to takedown.
    report = client.get("/v1/claims/report", headers=auth(holder)).json()
    assert report["notices"] == 1 and report["taken_down"] == 1 and report["within_24h"] == 1.0
    took = report["time_to_takedown_s"]["max"]
    assert took is not None and 0 <= took < 5
    print(f"time to takedown: {took:.3f} s")
