"""The /v1/review API: grants and roles, take/release/skip, decisions (several actions, bulk),
audit and statement of reasons, banks fed by decisions, quality figures, metrics."""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from moderation.api.app import create_app
from moderation.keys import create_key
from moderation.settings import get_settings
from moderation.storage.db import session_scope
from moderation.storage.tables import AuditEventRow, BankEntryRow, BankRow
from tests.images import near_copy
from tests.review_helpers import jpeg_bytes, queued_item, unique_picture

PDQ_A = "f" * 32 + "0" * 32


@pytest.fixture(scope="module")
def client(database_url: str) -> TestClient:
    return TestClient(create_app(get_settings()))


def new_key(database_url: str, role: str, name: str) -> tuple[str, int]:
    with session_scope(database_url) as s:
        secret, principal = create_key(s, role, name)
    return secret, principal.key_id


@pytest.fixture(scope="module")
def admin(database_url: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {new_key(database_url, 'admin', 'review-admin')[0]}"}


def reviewer(
    client: TestClient, database_url: str, admin: dict[str, str], name: str, *queues: str
) -> dict[str, str]:
    secret, key_id = new_key(database_url, "reviewer", name)
    for q in queues:
        resp = client.post("/v1/review/grants", json={"key_id": key_id, "queue": q}, headers=admin)
        assert resp.status_code == 201, resp.text
    return {"Authorization": f"Bearer {secret}"}


def decision(*actions: dict[str, Any], policy: str = "violence.graphic") -> dict[str, Any]:
    return {"actions": list(actions), "policy": policy, "note": "seen in full"}


def test_reviewer_without_grant_cannot_list_or_take(
    client: TestClient, database_url: str, admin: dict[str, str], uid: str
) -> None:
    q = f"category:secret{uid}"
    row = queued_item(database_url, f"r-grant-{uid}", category=f"secret{uid}")
    outsider = reviewer(client, database_url, admin, f"outsider-{uid}", f"category:other{uid}")
    insider = reviewer(client, database_url, admin, f"insider-{uid}", q)

    queues = client.get("/v1/review/queues", headers=outsider).json()
    assert q not in [x["queue"] for x in queues]
    resp = client.get(f"/v1/review/queues/{q}/items", headers=outsider)
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "forbidden"
    resp = client.post("/v1/review/take", params={"queue": q}, headers=outsider)
    assert resp.status_code == 403
    assert client.post("/v1/review/take", headers=outsider).status_code == 204
    assert client.get(f"/v1/review/items/{row.id}", headers=outsider).status_code == 404
    assert client.get(f"/v1/review/items/{row.id}/media/0", headers=outsider).status_code == 404
    resp = client.post(
        f"/v1/review/items/{row.id}/decision",
        json=decision({"type": "approve"}),
        headers=outsider,
    )
    assert resp.status_code == 404
    bulk = client.post(
        "/v1/review/decisions",
        json={"items": [row.id], "decision": decision({"type": "approve"})},
        headers=outsider,
    ).json()
    assert bulk["decided"] == 0 and bulk["results"][0]["error"]["code"] == "not_found"

    listed = client.get("/v1/review/queues", headers=insider).json()
    assert [x["queue"] for x in listed] == [q] and listed[0]["depth"] == 1
    items = client.get(f"/v1/review/queues/{q}/items", headers=insider).json()
    assert [i["id"] for i in items] == [row.id]
    taken = client.post("/v1/review/take", headers=insider)
    assert taken.status_code == 200 and taken.json()["id"] == row.id


@pytest.mark.parametrize("role", ["service", "rights_holder"])
def test_other_roles_are_refused(
    client: TestClient, database_url: str, admin: dict[str, str], role: str
) -> None:
    h = {"Authorization": f"Bearer {new_key(database_url, role, f'r-{role}')[0]}"}
    for method, path in [
        ("GET", "/v1/review/queues"),
        ("POST", "/v1/review/take"),
        ("GET", "/v1/review/items/1"),
        ("GET", "/v1/review/grants"),
        ("GET", "/v1/review/quality"),
    ]:
        resp = client.request(method, path, headers=h)
        assert resp.status_code == 403, (role, method, path, resp.text)


def test_only_admins_manage_grants(
    client: TestClient, database_url: str, admin: dict[str, str], uid: str
) -> None:
    h = reviewer(client, database_url, admin, f"self-granter-{uid}")
    _, key_id = new_key(database_url, "reviewer", f"target-{uid}")
    resp = client.post("/v1/review/grants", json={"key_id": key_id, "queue": "*"}, headers=h)
    assert resp.status_code == 403
    _, service_id = new_key(database_url, "service", f"svc-{uid}")
    resp = client.post(
        "/v1/review/grants", json={"key_id": service_id, "queue": "x"}, headers=admin
    )
    assert resp.status_code == 422
    resp = client.post("/v1/review/grants", json={"key_id": key_id, "queue": "a/b"}, headers=admin)
    assert resp.status_code == 422
    ok = client.post("/v1/review/grants", json={"key_id": key_id, "queue": "x"}, headers=admin)
    assert ok.status_code == 201
    assert {"key_id": key_id, "queue": "x"} in client.get("/v1/review/grants", headers=admin).json()
    gone = client.delete(
        "/v1/review/grants", params={"key_id": key_id, "queue": "x"}, headers=admin
    )
    assert gone.status_code == 204
    again = client.delete(
        "/v1/review/grants", params={"key_id": key_id, "queue": "x"}, headers=admin
    )
    assert again.status_code == 404


def test_take_shows_text_verdict_media_and_history(
    client: TestClient, database_url: str, admin: dict[str, str], uid: str
) -> None:
    q = f"category:show{uid}"
    queued_item(database_url, f"r-old-{uid}", category=f"other{uid}", uploader=f"up-{uid}")
    row = queued_item(
        database_url,
        f"r-show-{uid}",
        category=f"show{uid}",
        uploader=f"up-{uid}",
        text="<script>alert(1)</script>",
        picture=unique_picture(uid),
    )
    h = reviewer(client, database_url, admin, f"viewer-{uid}", q)
    item = client.post("/v1/review/take", headers=h).json()
    assert item["text"] == "<script>alert(1)</script>"  # JSON is data; escaping is the UI's job
    assert item["verdict"]["decision"] == "review"
    assert item["media"] == [{"media_index": 0, "kind": "image"}]
    assert [x["content_id"] for x in item["uploader_history"]] == [f"r-old-{uid}"]
    media = client.get(f"/v1/review/items/{row.id}/media/0", headers=h)
    assert media.status_code == 200
    assert media.headers["content-type"] == "image/jpeg"
    assert media.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in media.headers["content-security-policy"]
    assert media.content[:2] == b"\xff\xd8"


def test_decision_needs_a_policy_and_consistent_actions(
    client: TestClient, database_url: str, admin: dict[str, str], uid: str
) -> None:
    q = f"category:bad{uid}"
    row = queued_item(database_url, f"r-bad-{uid}", category=f"bad{uid}")
    h = reviewer(client, database_url, admin, f"bad-{uid}", q)
    url = f"/v1/review/items/{row.id}/decision"
    for body in [
        {"actions": [{"type": "remove"}]},
        decision({"type": "remove"}, policy="  "),
        decision(),
        decision({"type": "approve"}, {"type": "remove"}),
        decision({"type": "label"}),
        decision({"type": "age_restrict", "bank": "x"}),
        decision({"type": "nuke"}),
    ]:
        resp = client.post(url, json=body, headers=h)
        assert resp.status_code == 422, (body, resp.text)
    resp = client.post(url, json=decision({"type": "remove", "bank": f"nope-{uid}"}), headers=h)
    assert resp.status_code == 404
    # The refused decision left the item open.
    assert client.get(f"/v1/review/items/{row.id}", headers=h).json()["status"] == "open"


def test_several_actions_audit_statement_and_lease_respect(
    client: TestClient, database_url: str, admin: dict[str, str], uid: str
) -> None:
    q = f"category:multi{uid}"
    row = queued_item(database_url, f"r-multi-{uid}", category=f"multi{uid}")
    first = reviewer(client, database_url, admin, f"first-{uid}", q)
    second = reviewer(client, database_url, admin, f"second-{uid}", q, "escalations")
    assert client.post("/v1/review/take", headers=first).json()["id"] == row.id
    body = decision(
        {"type": "age_restrict"}, {"type": "label", "label": "graphic"}, {"type": "escalate"}
    )
    # Leased to the first reviewer: the second cannot decide it.
    resp = client.post(f"/v1/review/items/{row.id}/decision", json=body, headers=second)
    assert resp.status_code == 409
    done = client.post(f"/v1/review/items/{row.id}/decision", json=body, headers=first)
    assert done.status_code == 201, done.text
    assert done.json()["outcome"] == "age_restrict"
    assert done.json()["escalated_to"] == "escalations"
    again = client.post(f"/v1/review/items/{row.id}/decision", json=body, headers=first)
    assert again.status_code == 409
    item = client.get(f"/v1/review/items/{row.id}", headers=first).json()
    assert item["status"] == "decided"
    (d,) = item["decisions"]
    assert d["policy"] == "violence.graphic" and d["reviewer"] == f"first-{uid}"
    assert [a["type"] for a in d["actions"]] == ["age_restrict", "label", "escalate"]
    st = d["statement"]
    assert st["decision"] == "age_restrict" and st["ground"] == "violence.graphic"
    assert st["restrictions"] == ["age_restrict", "label"] and st["labels"] == ["graphic"]
    assert st["automated_detection"] is True and st["automated_decision"] is False
    with session_scope(database_url) as s:
        event = s.scalar(
            select(AuditEventRow).where(
                AuditEventRow.subject_id == row.content_id, AuditEventRow.action == "review.decide"
            )
        )
        assert event is not None and event.actor == f"first-{uid}"
        assert event.detail["policy"] == "violence.graphic"
    # The escalation queued it for the second reviewer, who overturns the restriction.
    esc = client.post("/v1/review/take", params={"queue": "escalations"}, headers=second).json()
    assert esc["content_id"] == row.content_id and esc["queue"] == "escalations"
    resp = client.post(
        f"/v1/review/items/{esc['id']}/decision",
        json=decision({"type": "approve"}, policy="newsworthy"),
        headers=second,
    )
    assert resp.status_code == 201
    quality = {q["reviewer"]: q for q in client.get("/v1/review/quality", headers=admin).json()}
    assert quality[f"first-{uid}"]["decisions"] == 1
    assert quality[f"second-{uid}"]["decisions"] == 1


def test_overturn_and_agreement_rates(
    client: TestClient, database_url: str, admin: dict[str, str], uid: str
) -> None:
    a = reviewer(client, database_url, admin, f"qa-a-{uid}", "*")
    b = reviewer(client, database_url, admin, f"qa-b-{uid}", "*")
    rows = [queued_item(database_url, f"r-qa-{uid}-{i}", category=f"qa{uid}") for i in range(2)]
    for i, row in enumerate(rows):
        outcome = "remove"
        resp = client.post(
            f"/v1/review/items/{row.id}/decision", json=decision({"type": outcome}), headers=a
        )
        assert resp.status_code == 201
        # An appeal brings it back; B agrees once and overturns once.
        with session_scope(database_url) as s:
            from moderation import review_queue

            appeal = review_queue.enqueue(s, row.content_id, f"appeals-{uid}", severity=0.5)
            appeal_id = appeal.id
        second = "remove" if i == 0 else "approve"
        resp = client.post(
            f"/v1/review/items/{appeal_id}/decision", json=decision({"type": second}), headers=b
        )
        assert resp.status_code == 201, resp.text
    quality = {q["reviewer"]: q for q in client.get("/v1/review/quality", headers=admin).json()}
    assert quality[f"qa-a-{uid}"]["overturn_rate"] == 0.5
    assert quality[f"qa-a-{uid}"]["second_looks"] == 2
    assert quality[f"qa-b-{uid}"]["agreement_rate"] == 0.5


def test_bulk_decision_each_item_on_its_own(
    client: TestClient, database_url: str, admin: dict[str, str], uid: str
) -> None:
    q = f"category:bulk{uid}"
    rows = [queued_item(database_url, f"r-bulk-{uid}-{i}", category=f"bulk{uid}") for i in range(3)]
    h = reviewer(client, database_url, admin, f"bulk-{uid}", q)
    other = reviewer(client, database_url, admin, f"bulk-other-{uid}", q)
    held = client.post("/v1/review/take", headers=other).json()["id"]
    resp = client.post(
        "/v1/review/decisions",
        json={"items": [r.id for r in rows], "decision": decision({"type": "remove"})},
        headers=h,
    )
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["decided"] == 2
    by_id = {r["item_id"]: r for r in out["results"]}
    assert by_id[held]["ok"] is False and by_id[held]["error"]["code"] == "conflict"
    assert client.get(f"/v1/review/queues/{q}/items", headers=h).json()[0]["id"] == held


def test_removal_adds_the_item_hashes_to_the_chosen_bank(
    client: TestClient, database_url: str, admin: dict[str, str], uid: str
) -> None:
    bank, allow = f"rv-block-{uid}", f"rv-allow-{uid}"
    assert client.post("/v1/banks", json={"name": bank}, headers=admin).status_code == 201
    resp = client.post("/v1/banks", json={"name": allow, "action": "allow"}, headers=admin)
    assert resp.status_code == 201
    row = queued_item(database_url, f"r-bank-{uid}", category=f"bank{uid}", pdq=PDQ_A)
    h = reviewer(client, database_url, admin, f"banker-{uid}", f"category:bank{uid}")
    wrong = client.post(
        f"/v1/review/items/{row.id}/decision",
        json=decision({"type": "approve", "bank": bank}),
        headers=h,
    )
    assert wrong.status_code == 422  # a block bank is not an allow list
    resp = client.post(
        f"/v1/review/items/{row.id}/decision",
        json=decision({"type": "remove", "bank": bank}),
        headers=h,
    )
    assert resp.status_code == 201, resp.text
    assert resp.json()["banked"] == {bank: 1}
    with session_scope(database_url) as s:
        bank_id = s.scalar(select(BankRow.id).where(BankRow.name == bank))
        entries = s.scalars(select(BankEntryRow).where(BankEntryRow.bank_id == bank_id)).all()
        assert [(e.value, e.source) for e in entries] == [(PDQ_A, f"review:{row.content_id}")]


def test_metrics_show_queue_depth_leases_and_decisions(
    client: TestClient, database_url: str, admin: dict[str, str], uid: str
) -> None:
    q = f"category:met{uid}"
    queued_item(database_url, f"r-met-{uid}", category=f"met{uid}")
    h = reviewer(client, database_url, admin, f"met-{uid}", q)
    item = client.post("/v1/review/take", headers=h).json()
    client.post(
        f"/v1/review/items/{item['id']}/decision", json=decision({"type": "remove"}), headers=h
    )
    queued_item(database_url, f"r-met2-{uid}", category=f"met{uid}")
    text = client.get("/metrics", headers=admin).text
    assert f'moderation_review_queue_depth{{queue="{q}"}} 1.0' in text
    assert "moderation_review_queue_oldest_seconds" in text
    assert "moderation_review_leases_total" in text
    assert "moderation_review_lease_expiries_total" in text
    assert f'moderation_review_decisions_total{{outcome="remove",reviewer="met-{uid}"}} 1.0' in text


# --- end to end: upload -> review -> remove with add-to-bank -> re-upload blocked ----------


@pytest.mark.integration
def test_removal_with_add_to_bank_blocks_a_near_copy_reupload(
    sender, client: TestClient, database_url: str, admin: dict[str, str], uid: str
) -> None:  # type: ignore[no-untyped-def]
    review_bank, block_bank = f"e2e-review-{uid}", f"e2e-block-{uid}"
    original = unique_picture(f"e2e-{uid}")
    data = base64.b64encode(jpeg_bytes(original)).decode()
    copy = base64.b64encode(near_copy(original)).decode()
    for name, action in ((review_bank, "review"), (block_bank, "block")):
        resp = client.post("/v1/banks", json={"name": name, "action": action}, headers=admin)
        assert resp.status_code == 201
    resp = client.post(f"/v1/banks/{review_bank}/entries", json={"data_b64": data}, headers=admin)
    assert resp.status_code == 201

    def upload(content_id: str, b64: str) -> dict[str, Any]:
        item = {
            "content_id": content_id,
            "uploader_id": f"e2e-up-{uid}",
            "media": [{"kind": "image", "data_b64": b64}],
        }
        deadline = time.monotonic() + 5
        while True:
            verdict = sender(item)
            if verdict.get("matches") or time.monotonic() > deadline:
                return verdict
            item["content_id"] = f"{content_id}-{time.monotonic_ns()}"

    first = upload(f"e2e-first-{uid}", data)
    assert first["decision"] == "review", first
    h = reviewer(client, database_url, admin, f"e2e-{uid}", f"bank:{review_bank}")
    taken = client.post("/v1/review/take", headers=h)
    assert taken.status_code == 200, taken.text
    item = taken.json()
    assert item["content_id"] == first["content_id"]
    assert item["media"] == [{"media_index": 0, "kind": "image"}]
    resp = client.post(
        f"/v1/review/items/{item['id']}/decision",
        json=decision({"type": "remove", "bank": block_bank}, policy="known-abuse"),
        headers=h,
    )
    assert resp.status_code == 201, resp.text
    assert resp.json()["banked"] == {block_bank: 1}

    deadline = time.monotonic() + 5
    while True:
        again = sender(
            {
                "content_id": f"e2e-copy-{uid}-{time.monotonic_ns()}",
                "uploader_id": f"e2e-up2-{uid}",
                "media": [{"kind": "image", "data_b64": copy}],
            }
        )
        if again["decision"] == "block" or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert again["decision"] == "block", again
    assert block_bank in [m["bank"] for m in again["matches"]]


@pytest.mark.integration
def test_a_video_sent_to_review_can_be_played_in_review(
    sender, client: TestClient, database_url: str, admin: dict[str, str], uid: str
) -> None:  # type: ignore[no-untyped-def]
    """A video bank match with action review: the final verdict queues the item, whose MP4
    is kept for playback next to its thumbnail."""
    vs = pytest.importorskip("moderation.video_synth")
    from models.video_decode import VideoLimits
    from moderation import banks
    from moderation.video import add_video_entry, fingerprint_reference

    script = vs.reference_scripts(1, 12.0, seed=int(uid[:6], 16), size=(320, 180))[0]
    data = vs.make_video(script, preset="ultrafast")
    bank = f"rv-videos-{uid}"
    _, frames = fingerprint_reference(data, VideoLimits())
    with session_scope(database_url) as s:
        banks.create_bank(s, bank, kind="video", action="review")
        add_video_entry(s, banks.get_bank_row(s, bank), frames, "", "ref.mp4")
    time.sleep(0.5)  # the worker's index refresh
    cid = f"rv-video-{uid}"
    first = sender(
        {
            "content_id": cid,
            "uploader_id": f"v-{uid}",
            "media": [{"kind": "video", "data_b64": base64.b64encode(data).decode()}],
        }
    )
    assert "error" not in first, first
    h = reviewer(client, database_url, admin, f"video-{uid}", f"bank:{bank}")
    deadline = time.monotonic() + 90
    while True:
        taken = client.post("/v1/review/take", headers=h)
        if taken.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert taken.status_code == 200, "the final verdict never queued the video"
    item = taken.json()
    assert item["content_id"] == cid
    assert item["media"] == [{"media_index": 0, "kind": "video", "clip": True}]
    played = client.get(f"/v1/review/items/{item['id']}/clips/0", headers=h)
    assert played.status_code == 200
    assert played.headers["content-type"] == "video/mp4" and played.content == data
    thumb = client.get(f"/v1/review/items/{item['id']}/media/0", headers=h)
    assert thumb.headers["content-type"] == "image/jpeg"
    with session_scope(database_url) as s:
        banks.delete_bank(s, bank)


def test_only_browser_playable_videos_are_kept() -> None:
    from moderation.review_media import clip_mime

    assert clip_mime(b"\x00\x00\x00\x20ftypisom" + b"\x00" * 20) == "video/mp4"
    assert clip_mime(b"\x1a\x45\xdf\xa3" + b"\x00" * 20) == "video/webm"
    assert clip_mime(b"RIFF....AVI LIST") is None
    assert clip_mime(b"") is None


def test_release_skip_and_extend_over_http(
    client: TestClient, database_url: str, admin: dict[str, str], uid: str
) -> None:
    q = f"category:rel{uid}"
    row = queued_item(database_url, f"r-rel-{uid}", category=f"rel{uid}")
    a = reviewer(client, database_url, admin, f"rel-a-{uid}", q)
    b = reviewer(client, database_url, admin, f"rel-b-{uid}", q)
    assert client.post("/v1/review/take", headers=a).json()["id"] == row.id
    assert client.post("/v1/review/take", headers=b).status_code == 204
    assert client.post(f"/v1/review/items/{row.id}/lease", headers=b).status_code == 409
    extended = client.post(f"/v1/review/items/{row.id}/lease", headers=a)
    assert extended.status_code == 200 and extended.json()["expires_at"]
    assert client.post(f"/v1/review/items/{row.id}/release", headers=b).status_code == 409
    assert client.post(f"/v1/review/items/{row.id}/release", headers=a).status_code == 204
    assert client.post("/v1/review/take", headers=b).json()["id"] == row.id
    assert client.post(f"/v1/review/items/{row.id}/skip", headers=b).status_code == 204
    # b skipped it: offered to a again, never to b.
    assert client.post("/v1/review/take", headers=b).status_code == 204
    assert client.post("/v1/review/take", headers=a).json()["id"] == row.id
