"""A video work: registered through the API, matched in time at upload (the final verdict
names the work and the segment), and a notice against the clip verified by its frames."""

from __future__ import annotations

import base64
import time
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from moderation.api.app import create_app
from moderation.keys import create_key
from moderation.settings import get_settings
from moderation.storage.db import session_scope
from moderation.storage.tables import ItemRow
from tests.copyright_helpers import auth, notice

vs = pytest.importorskip("moderation.video_synth")
pytestmark = pytest.mark.integration
SIZE = (320, 180)


def test_a_video_work_matches_a_clip_and_a_notice_is_checked_on_its_frames(
    worker: Any, sender: Any, database_url: str
) -> None:
    uid = uuid.uuid4().hex[:10]
    script = vs.reference_scripts(1, 20.0, seed=77, size=SIZE)[0]
    reference = vs.make_video(script, preset="ultrafast")
    clip = vs.make_clip(script, 5.0, 11.0, vs.TRANSFORMS["logo"], preset="ultrafast")
    with session_scope(database_url) as s:
        holder = create_key(s, "rights_holder", f"video-holder-{uid}")[0]
    client = TestClient(create_app(get_settings()))
    resp = client.post(
        "/v1/works",
        json={
            "kind": "video",
            "title": "Trailer",
            "policy": "review",
            "data_b64": base64.b64encode(reference).decode(),
        },
        headers=auth(holder),
    )
    assert resp.status_code == 201, resp.text
    work = resp.json()
    assert work["bank"].endswith(".video.review")

    time.sleep(0.5)  # the worker's index refresh interval
    content_id = f"clip-{uid}"
    first = sender(
        {
            "content_id": content_id,
            "uploader_id": f"u-{uid}",
            "media": [{"kind": "video", "data_b64": base64.b64encode(clip).decode()}],
        },
        timeout=60,
    )
    assert "error" not in first, first
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        with session_scope(database_url) as s:
            row = s.get(ItemRow, content_id)
            if row is not None and row.status == "done":
                break
        time.sleep(0.2)
    item = client.get(f"/v1/items/{content_id}", headers=auth(holder))
    # Items are for the platform and staff; the holder reads its dashboard.
    assert item.status_code == 403
    dashboard = client.get("/v1/claims", headers=auth(holder)).json()
    [seen] = [c for c in dashboard if c["content_id"] == content_id and c["origin"] == "upload"]
    assert seen["work_id"] == work["id"] and seen["state"] == "review"
    [segment] = seen["match"]["segments"]
    assert segment["reference_start"] == pytest.approx(5.0, abs=1.0)

    # Not anchored: the frames match, so it waits for a reviewer with the segment found.
    claim = client.post("/v1/claims", json=notice(work["id"], content_id), headers=auth(holder))
    assert claim.status_code == 201, claim.text
    body = claim.json()
    assert body["state"] == "needs_review" and body["verification"]["strong_match"]
    # The time-aligned segment found at upload.
    found = body["match"]["segment"]
    assert found["reference_start"] == pytest.approx(5.0, abs=1.0)
    assert found["reference_end"] == pytest.approx(15.0, abs=1.5)  # 11 s from 5 s in
