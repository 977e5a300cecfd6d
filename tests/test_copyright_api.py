"""Works, claims, counter-notices, strikes and appeals through the HTTP API (TestClient),
with uploads moderated in-process on the test database."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from moderation import claims, retro_scan, review_queue, strikes
from moderation.anchoring import anchor_now
from moderation.api import works as api_works
from moderation.api.app import create_app
from moderation.api.claims import get_clock
from moderation.keys import create_key
from moderation.runtime import Runtime, build_runtime
from moderation.service import moderate_payload
from moderation.settings import get_settings
from moderation.storage.db import session_scope
from tests.conftest import run_cli
from tests.copyright_helpers import (
    auth,
    copy_b64,
    counter_notice,
    image_item,
    notice,
    original_b64,
)


class FakeClock:
    """The claims clock, moved by the test."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(scope="module")
def keys(database_url: str) -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    out = {}
    with session_scope(database_url) as s:
        for name, role in (
            ("holder", "rights_holder"),
            ("other", "rights_holder"),
            ("reviewer", "reviewer"),
            ("reviewer2", "reviewer"),
            ("ungranted", "reviewer"),
            ("service", "service"),
            ("admin", "admin"),
        ):
            secret, principal = create_key(s, role, f"cr-{name}-{tag}")
            out[name] = secret
            out[name + ".name"] = principal.name
            if role == "reviewer" and name != "ungranted":
                for queue in ("claims", "appeals"):
                    review_queue.grant(s, principal.key_id, queue)
    return out


@pytest.fixture(scope="module")
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="module")
def client(database_url: str, clock: FakeClock) -> Iterator[TestClient]:
    app = create_app(get_settings())
    app.dependency_overrides[get_clock] = lambda: clock
    yield TestClient(app)


@pytest.fixture(scope="module")
def rt(database_url: str) -> Runtime:
    return build_runtime(get_settings(), migrate=False)


def upload(rt: Runtime, item: dict[str, Any]) -> dict[str, Any]:
    rt.refresh(force=True)
    return moderate_payload(rt, item, queue_video=False)


def register(client: TestClient, key: str, seed: str, **fields: Any) -> dict[str, Any]:
    body = {"kind": "image", "title": f"photo {seed}", "data_b64": original_b64(seed), **fields}
    resp = client.post("/v1/works", json=body, headers=auth(key))
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def file_claim(client: TestClient, key: str, body: dict[str, Any]) -> Any:
    return client.post("/v1/claims", json=body, headers=auth(key))


# --- works -----------------------------------------------------------------------------------


def test_a_holder_registers_works_and_sees_only_its_own(
    client: TestClient, keys: dict[str, str], uid: str
) -> None:
    work = register(client, keys["holder"], f"own-{uid}", policy="track", territories=["de"])
    assert work["owner"] == keys["holder.name"] and work["policy"] == "track"
    assert work["territories"] == ["DE"] and work["bank"].endswith(".image.track")
    assert work["receipt"] == f"/v1/receipts/{work['id']}"
    mine = client.get("/v1/works", headers=auth(keys["holder"])).json()
    assert work["id"] in {w["id"] for w in mine}
    theirs = client.get("/v1/works", headers=auth(keys["other"])).json()
    assert work["id"] not in {w["id"] for w in theirs}
    assert work["id"] in {
        w["id"] for w in client.get("/v1/works", headers=auth(keys["admin"])).json()
    }
    # The receipt exists once anchored (409 before), for its owner only.
    pending = client.get(work["receipt"], headers=auth(keys["holder"]))
    assert pending.status_code == 409
    assert client.get(work["receipt"], headers=auth(keys["other"])).status_code == 404
    for role in ("reviewer", "service"):
        resp = client.post(
            "/v1/works", json={"kind": "text", "text": "x" * 50}, headers=auth(keys[role])
        )
        assert resp.status_code == 403, role


def test_invalid_works_are_refused_with_the_field(client: TestClient, keys: dict[str, str]) -> None:
    bad = client.post("/v1/works", json={"kind": "image"}, headers=auth(keys["holder"]))
    assert bad.status_code == 422 and "data_b64" in bad.json()["error"]["message"]
    bad = client.post(
        "/v1/works",
        json={"kind": "image", "data_b64": "bm90IGFuIGltYWdl"},
        headers=auth(keys["holder"]),
    )
    assert 400 <= bad.status_code < 500 and bad.json()["error"]["field"] == "data_b64"
    bad = client.post(
        "/v1/works",
        json={"kind": "text", "text": "a" * 40, "territories": ["Germany"]},
        headers=auth(keys["holder"]),
    )
    assert bad.status_code == 422 and "territories" in bad.json()["error"]["message"]


def test_another_holder_cannot_see_or_act_on_works_or_claims_on_any_route(
    client: TestClient, keys: dict[str, str], rt: Runtime, uid: str
) -> None:
    work = register(client, keys["holder"], f"iso-{uid}", policy="track")
    target = f"iso-item-{uid}"
    assert "error" not in upload(rt, image_item(target, f"up-{uid}", copy_b64(f"iso-{uid}")))
    claim = file_claim(client, keys["holder"], notice(work["id"], target))
    assert claim.status_code == 201, claim.text
    claim_id = claim.json()["id"]
    other = auth(keys["other"])
    wid = work["id"]
    calls = [
        ("GET", f"/v1/works/{wid}", None),
        ("DELETE", f"/v1/works/{wid}", None),
        ("POST", f"/v1/works/{wid}/scan", None),
        ("GET", f"/v1/receipts/{wid}", None),
        ("GET", f"/v1/claims/{claim_id}", None),
        ("POST", f"/v1/claims/{claim_id}/court-action", {"detail": "case 1"}),
        ("POST", "/v1/claims", notice(wid, target)),
    ]
    for method, path, body in calls:
        resp = client.request(method, path, json=body, headers=other)
        assert resp.status_code == 404, (method, path, resp.text)
        assert resp.json()["error"]["code"] == "not_found"
    assert claim_id not in {c["id"] for c in client.get("/v1/claims", headers=other).json()}
    assert wid not in {w["id"] for w in client.get("/v1/works", headers=other).json()}
    report = client.get("/v1/claims/report", headers=other).json()
    mine = client.get("/v1/claims/report", headers=auth(keys["holder"])).json()
    assert mine["notices"] >= 1 and report["notices"] == 0
    # Still there for the owner: nothing above touched it.
    assert client.get(f"/v1/works/{wid}", headers=auth(keys["holder"])).json()["status"] == "active"
    assert client.get(f"/v1/claims/{claim_id}", headers=auth(keys["holder"])).status_code == 200
    # Holders cannot decide claims or relay counter-notices.
    for path, body in (
        (f"/v1/claims/{claim_id}/decision", {"decision": "reject", "reason": "mine"}),
        (f"/v1/claims/{claim_id}/counter-notice", counter_notice()),
    ):
        assert client.post(path, json=body, headers=auth(keys["holder"])).status_code == 403


# --- upload-time matching ------------------------------------------------------------------------


def test_uploads_matching_a_work_get_the_holders_policy_and_name_the_work(
    client: TestClient, keys: dict[str, str], rt: Runtime, uid: str
) -> None:
    blocked = register(client, keys["holder"], f"blk-{uid}", policy="block")
    tracked = register(client, keys["holder"], f"trk-{uid}", policy="track")
    text = "The full lyrics of our registered song, line by line, verse and chorus " + uid
    resp = client.post(
        "/v1/works",
        json={"kind": "text", "text": text, "policy": "review"},
        headers=auth(keys["holder"]),
    )
    assert resp.status_code == 201, resp.text
    lyrics = resp.json()

    v = upload(rt, image_item(f"blk-item-{uid}", f"up-{uid}", copy_b64(f"blk-{uid}")))
    assert v["decision"] == "block", v
    [m] = [m for m in v["matches"] if m.get("work_id")]
    assert (m["work_id"], m["owner"], m["action"]) == (blocked["id"], keys["holder.name"], "block")

    v = upload(rt, image_item(f"trk-item-{uid}", f"up-{uid}", copy_b64(f"trk-{uid}")))
    assert v["decision"] == "allow", v  # track: allowed and recorded
    [m] = [m for m in v["matches"] if m.get("work_id")]
    assert (m["work_id"], m["action"]) == (tracked["id"], "track")

    v = upload(rt, {"content_id": f"txt-item-{uid}", "uploader_id": f"up-{uid}", "text": text})
    assert v["decision"] == "review", v
    assert lyrics["id"] in {m.get("work_id") for m in v["matches"]}

    dashboard = client.get("/v1/claims", headers=auth(keys["holder"])).json()
    states = {(c["content_id"], c["origin"]): c["state"] for c in dashboard}
    assert states[(f"blk-item-{uid}", "upload")] == "blocked"
    assert states[(f"trk-item-{uid}", "upload")] == "tracked"
    assert states[(f"txt-item-{uid}", "upload")] == "review"


def test_the_retroactive_scan_claims_accepted_copies_uploaded_before_the_work(
    client: TestClient,
    keys: dict[str, str],
    rt: Runtime,
    uid: str,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The scan runs here, batch by batch, not on a worker (the e2e test covers the task).
    monkeypatch.setattr(api_works, "queue_scan", lambda work_id: "not_queued")
    seed = f"old-{uid}"
    old = upload(rt, image_item(f"old-item-{uid}", f"up-{uid}", copy_b64(seed)))
    assert old["decision"] == "allow", old
    other = upload(rt, image_item(f"other-item-{uid}", f"up-{uid}", copy_b64(f"x-{uid}")))
    assert other["decision"] == "allow", other
    work = register(client, keys["holder"], seed, policy="block")
    settings = get_settings()
    with session_scope(database_url) as s:
        # Small batches, so the scan walks several of them.
        found: list[str] = []
        after = 0
        while True:
            step = retro_scan.scan_batch(s, settings, work["id"], after, limit=100)
            found.extend(step.claims)
            if step.next_after is None:
                break
            after = step.next_after
    assert len(found) == 1
    dashboard = client.get("/v1/claims", headers=auth(keys["holder"])).json()
    [claim] = [c for c in dashboard if c["work_id"] == work["id"]]
    assert claim["origin"] == "scan" and claim["state"] == "detected"
    assert found == [claim["id"]]
    assert claim["content_id"] == f"old-item-{uid}" and claim["match"]["distance"] <= 31
    with session_scope(database_url) as s:  # a second scan repeats nothing
        assert retro_scan.scan_all(s, settings, work["id"]) == []


# --- notices and verification --------------------------------------------------------------------


def test_invalid_notices_name_each_missing_field(
    client: TestClient, keys: dict[str, str], rt: Runtime, uid: str
) -> None:
    body = notice("wrk_x", "item_x")
    for name in ("signature", "good_faith", "explanation"):
        del body[name]
    del body["claimant"]["address"]
    resp = file_claim(client, keys["holder"], body)
    assert resp.status_code == 422
    err = resp.json()["error"]
    assert set(err["detail"]["missing"]) == {
        "signature",
        "good_faith",
        "explanation",
        "claimant.address",
    }
    for name in err["detail"]["missing"]:
        assert name in err["message"]
    resp = file_claim(client, keys["holder"], notice("wrk_x", "item_x", accuracy=False))
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "accuracy"
    resp = client.post("/v1/claims", content=b"{not json", headers=auth(keys["holder"]))
    assert resp.status_code == 422
    work = register(client, keys["holder"], f"inv-{uid}")
    resp = file_claim(client, keys["holder"], notice(work["id"], f"no-such-item-{uid}"))
    assert resp.status_code == 404 and resp.json()["error"]["field"] == "content_id"
    resp = file_claim(client, keys["holder"], notice(f"wrk_none{uid}", f"no-such-item-{uid}"))
    assert resp.status_code == 404 and resp.json()["error"]["field"] == "work_id"


def anchored_work(client: TestClient, keys: dict[str, str], seed: str) -> dict[str, Any]:
    work = register(client, keys["holder"], seed, policy="track")
    settings = get_settings()
    anchor_now(settings)
    wait_past_anchor(settings.resolved_database_url, work)
    return work


def wait_past_anchor(database_url: str, work: dict[str, Any]) -> None:
    """Block times are whole seconds and run ahead of the wall clock when blocks come faster
    than one a second (confirmations): wait until an upload now is strictly later."""
    with session_scope(database_url) as s:
        at = claims.anchored_at(s, work["owner"], work["sha256"])
    assert at is not None
    while datetime.now(UTC) <= at + timedelta(milliseconds=50):
        time.sleep(0.05)


def test_a_strong_match_with_precedence_is_taken_down_automatically(
    client: TestClient, keys: dict[str, str], rt: Runtime, uid: str, clock: FakeClock
) -> None:
    seed = f"auto-{uid}"
    work = anchored_work(client, keys, seed)
    target = f"auto-item-{uid}"
    upload(rt, image_item(target, f"up-{uid}", copy_b64(seed)))
    resp = file_claim(client, keys["holder"], notice(work["id"], target))
    assert resp.status_code == 201, resp.text
    claim = resp.json()
    assert claim["state"] == "taken_down" and claim["id"].startswith("clm_")
    assert claim["verification"]["automatic"] and claim["time_to_takedown_s"] is not None
    sor = claim["statement_of_reasons"]
    assert sor["restriction"] == "removal" and sor["automated_decision"] is True
    item = client.get(f"/v1/items/{target}", headers=auth(keys["service"])).json()
    assert item["removed"] is True
    assert item["restriction"]["statement_of_reasons"]["claim_id"] == claim["id"]
    assert item["verdict"]["decision"] == "allow"  # the verdict contract is unchanged
    with session_scope(get_settings().resolved_database_url) as s:
        assert strikes.live_strikes(s, f"up-{uid}", datetime.now(UTC)) == 1


def test_a_target_that_does_not_match_goes_to_review(
    client: TestClient, keys: dict[str, str], rt: Runtime, uid: str
) -> None:
    work = anchored_work(client, keys, f"nm-{uid}")
    target = f"nm-item-{uid}"
    upload(rt, image_item(target, f"up-{uid}", copy_b64(f"unrelated-{uid}")))
    claim = file_claim(client, keys["holder"], notice(work["id"], target)).json()
    assert claim["state"] == "needs_review" and claim["deadline"] is not None
    assert not claim["verification"]["strong_match"]
    assert (
        client.get(f"/v1/items/{target}", headers=auth(keys["service"])).json()["removed"] is False
    )
    queue = client.get("/v1/claims?state=needs_review", headers=auth(keys["reviewer"])).json()
    assert claim["id"] in {c["id"] for c in queue}
    # A reviewer not granted the claims queue neither sees nor decides it.
    ungranted = auth(keys["ungranted"])
    assert client.get("/v1/claims", headers=ungranted).status_code == 403
    assert client.get(f"/v1/claims/{claim['id']}", headers=ungranted).status_code == 403
    decision = {"decision": "reject", "reason": "no"}
    resp = client.post(f"/v1/claims/{claim['id']}/decision", json=decision, headers=ungranted)
    assert resp.status_code == 403
    assert client.get("/v1/appeals", headers=ungranted).status_code == 403


def test_a_work_anchored_after_the_upload_is_not_taken_down_automatically(
    client: TestClient, keys: dict[str, str], rt: Runtime, uid: str
) -> None:
    seed = f"late-{uid}"
    target = f"late-item-{uid}"
    upload(rt, image_item(target, f"up-{uid}", copy_b64(seed)))
    time.sleep(1.1)
    work = anchored_work(client, keys, seed)
    claim = file_claim(client, keys["holder"], notice(work["id"], target)).json()
    assert claim["state"] == "needs_review", claim
    v = claim["verification"]
    assert v["strong_match"] and not v["precedence"] and not v["automatic"]
    assert (
        client.get(f"/v1/items/{target}", headers=auth(keys["service"])).json()["removed"] is False
    )


# --- counter-notices, court actions, appeals, strikes -------------------------------------------


def taken_down(
    client: TestClient, keys: dict[str, str], rt: Runtime, seed: str, uploader: str
) -> dict[str, Any]:
    work = anchored_work(client, keys, seed)
    target = f"{seed}-item"
    upload(rt, image_item(target, uploader, copy_b64(seed)))
    claim = file_claim(client, keys["holder"], notice(work["id"], target)).json()
    assert claim["state"] == "taken_down", claim["verification"]
    return dict(claim)


def test_a_counter_notice_restores_after_the_business_days_unless_court_action(
    client: TestClient, keys: dict[str, str], rt: Runtime, uid: str, clock: FakeClock
) -> None:
    settings = get_settings()
    first = taken_down(client, keys, rt, f"cn1-{uid}", f"up1-{uid}")
    second = taken_down(client, keys, rt, f"cn2-{uid}", f"up2-{uid}")
    bad = client.post(
        f"/v1/claims/{first['id']}/counter-notice",
        json={"name": "x"},
        headers=auth(keys["service"]),
    )
    assert bad.status_code == 422 and "signature" in bad.json()["error"]["detail"]["missing"]
    clock.now = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)  # a Monday
    for claim in (first, second):
        resp = client.post(
            f"/v1/claims/{claim['id']}/counter-notice",
            json=counter_notice(),
            headers=auth(keys["service"]),
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["state"] == "countered"
        assert resp.json()["restore_after"] == datetime(2026, 12, 7, 10, 0, tzinfo=UTC).isoformat()
    court = client.post(
        f"/v1/claims/{second['id']}/court-action",
        json={"detail": "case 26-123"},
        headers=auth(keys["holder"]),
    )
    assert court.status_code == 200 and court.json()["state"] == "court_action"

    day9 = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
    assert first["id"] not in claims.run_restore_due(settings, clock=lambda: day9)["restored"]
    assert client.get(f"/v1/items/{first['content_id']}", headers=auth(keys["service"])).json()[
        "removed"
    ]
    day10 = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
    restored = claims.run_restore_due(settings, clock=lambda: day10)["restored"]
    assert first["id"] in restored and second["id"] not in restored
    item = client.get(f"/v1/items/{first['content_id']}", headers=auth(keys["service"])).json()
    assert item["removed"] is False and item["restriction"] is None
    assert client.get(f"/v1/items/{second['content_id']}", headers=auth(keys["service"])).json()[
        "removed"
    ]
    with session_scope(settings.resolved_database_url) as s:  # the restored claim's strike is gone
        assert strikes.live_strikes(s, f"up1-{uid}", day10) == 0
        assert strikes.live_strikes(s, f"up2-{uid}", day10) == 1


def test_appeals_are_decided_by_someone_other_than_the_first_reviewer(
    client: TestClient, keys: dict[str, str], rt: Runtime, uid: str
) -> None:
    work = register(client, keys["holder"], f"ap-{uid}", policy="track")  # never anchored
    target = f"ap-item-{uid}"
    upload(rt, image_item(target, f"up-{uid}", copy_b64(f"ap-{uid}")))
    claim = file_claim(client, keys["holder"], notice(work["id"], target)).json()
    assert claim["state"] == "needs_review"
    decided = client.post(
        f"/v1/claims/{claim['id']}/decision",
        json={"decision": "takedown", "reason": "clear copy"},
        headers=auth(keys["reviewer"]),
    )
    assert decided.status_code == 200 and decided.json()["state"] == "taken_down"
    assert decided.json()["statement_of_reasons"]["automated_decision"] is False
    bad = client.post("/v1/appeals", json={"content_id": target}, headers=auth(keys["service"]))
    assert bad.status_code == 422 and {"uploader_id", "reason"} <= set(
        bad.json()["error"]["detail"]["missing"]
    )
    appeal = client.post(
        "/v1/appeals",
        json={
            "content_id": target,
            "uploader_id": f"up-{uid}",
            "reason": "mine",
            "claim_id": claim["id"],
        },
        headers=auth(keys["service"]),
    )
    assert appeal.status_code == 201, appeal.text
    appeal_id = appeal.json()["id"]
    assert appeal_id in {
        a["id"]
        for a in client.get("/v1/appeals?state=open", headers=auth(keys["reviewer2"])).json()
    }
    decision = {"decision": "reverse", "reason": "licensed"}
    same = client.post(
        f"/v1/appeals/{appeal_id}/decision", json=decision, headers=auth(keys["reviewer"])
    )
    assert same.status_code == 403
    other = client.post(
        f"/v1/appeals/{appeal_id}/decision", json=decision, headers=auth(keys["reviewer2"])
    )
    assert other.status_code == 200 and other.json()["state"] == "reversed"
    assert (
        client.get(f"/v1/items/{target}", headers=auth(keys["service"])).json()["removed"] is False
    )
    assert (
        client.get(f"/v1/claims/{claim['id']}", headers=auth(keys["holder"])).json()["state"]
        == "restored"
    )


def test_live_strikes_suspend_uploads_and_expire(rt: Runtime, uid: str, database_url: str) -> None:
    settings = get_settings()
    uploader = f"repeat-{uid}"
    now = datetime.now(UTC)
    with session_scope(database_url) as s:
        for i in range(settings.strikes_to_suspend - 1):
            strikes.add_strike(s, uploader, f"clm_s{i}{uid}", now, settings.strike_expiry_days)
        strikes.add_strike(s, uploader, f"clm_old{uid}", now - timedelta(days=91), 90)
    ok = upload(rt, {"content_id": f"s1-{uid}", "uploader_id": uploader, "text": "hello"})
    assert "error" not in ok  # the expired strike does not count
    with session_scope(database_url) as s:
        strikes.add_strike(s, uploader, f"clm_new{uid}", now, settings.strike_expiry_days)
    refused = upload(rt, {"content_id": f"s2-{uid}", "uploader_id": uploader, "text": "hello"})
    assert (
        refused["error"]["code"] == "uploads_suspended"
        and refused["error"]["field"] == "uploader_id"
    )
    again = upload(rt, {"content_id": f"s1-{uid}", "uploader_id": uploader, "text": "hello"})
    assert again["decision"] == "allow"  # a stored verdict is still answered


def test_a_removed_work_stops_matching(
    client: TestClient, keys: dict[str, str], rt: Runtime, uid: str
) -> None:
    work = register(client, keys["holder"], f"rm-{uid}", policy="block")
    resp = client.delete(f"/v1/works/{work['id']}", headers=auth(keys["holder"]))
    assert resp.status_code == 204
    assert work["id"] not in {
        w["id"] for w in client.get("/v1/works", headers=auth(keys["holder"])).json()
    }
    got = client.get(f"/v1/works/{work['id']}", headers=auth(keys["holder"])).json()
    assert got["status"] == "removed"
    v = upload(rt, image_item(f"rm-item-{uid}", f"up-{uid}", copy_b64(f"rm-{uid}")))
    assert v["decision"] == "allow" and not any(m.get("work_id") for m in v["matches"])


def test_cli_registers_a_text_work_and_lists_claims(keys: dict[str, str], uid: str) -> None:
    text = f"An original poem about rivers and stones, long enough to hash {uid}"
    done = run_cli(
        "works",
        "add",
        "--owner",
        keys["holder.name"],
        "--kind",
        "text",
        "--policy",
        "track",
        "--text",
        text,
        "--json",
    )
    out = json.loads(done.stdout)
    assert (
        out["kind"] == "text" and out["policy"] == "track" and out["owner"] == keys["holder.name"]
    )
    assert out["retro_scan_claims"] == []
    listed = json.loads(run_cli("works", "list", "--owner", keys["holder.name"], "--json").stdout)
    assert out["id"] in {w["id"] for w in listed}
    bad = run_cli("works", "add", "--owner", "x", check=False)
    assert bad.returncode == 2 and "PATH or --text" in bad.stderr
    claims_out = run_cli("claims", "list", "--owner", keys["holder.name"], "--json")
    assert isinstance(json.loads(claims_out.stdout), list)
    restored = json.loads(run_cli("claims", "restore-due", "--json").stdout)
    assert "restored" in restored
