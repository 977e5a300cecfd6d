"""Per-key rate limits against the real Redis: burst, 429 with a clear error, recovery after
the window, independent keys, per-key overrides, sharing across processes, Redis down."""

from __future__ import annotations

import logging
import subprocess
import sys
import time

import pytest
from fastapi.testclient import TestClient

from moderation.api.app import create_app
from moderation.keys import create_key
from moderation.settings import RateLimitSettings, Settings, get_settings
from moderation.storage.db import session_scope
from tests.conftest import free_port

ROUTE = "/v1/keywords"  # an admin GET that does little else


def _settings(redis_url: str | None, **defaults: str) -> Settings:
    limits = RateLimitSettings(**defaults)
    return get_settings().model_copy(update={"redis_url": redis_url, "rate_limits": limits})


def _key(database_url: str, name: str, rate_limit: str | None = None) -> str:
    with session_scope(database_url) as s:
        return create_key(s, "admin", name, rate_limit=rate_limit)[0]


def _get(client: TestClient, secret: str) -> int:
    return client.get(ROUTE, headers={"Authorization": f"Bearer {secret}"}).status_code


def test_burst_then_429_then_allowed_after_the_window(
    queue_env: str, database_url: str, uid: str
) -> None:
    client = TestClient(create_app(_settings(queue_env, admin="5/second")))
    secret = _key(database_url, f"rl-burst-{uid}")
    assert [_get(client, secret) for _ in range(5)] == [200] * 5
    resp = client.get(ROUTE, headers={"Authorization": f"Bearer {secret}"})
    assert resp.status_code == 429
    err = resp.json()["error"]
    assert err["code"] == "rate_limited"
    assert "5/second" in err["message"]
    assert err["detail"]["retry_after_s"] == 1
    time.sleep(1.1)
    assert _get(client, secret) == 200


def test_429_carries_retry_after_header(queue_env: str, database_url: str, uid: str) -> None:
    client = TestClient(create_app(_settings(queue_env, admin="1/minute")))
    secret = _key(database_url, f"rl-header-{uid}")
    assert _get(client, secret) == 200
    resp = client.get(ROUTE, headers={"Authorization": f"Bearer {secret}"})
    assert resp.status_code == 429
    assert 1 <= int(resp.headers["Retry-After"]) <= 60


def test_keys_are_limited_independently(queue_env: str, database_url: str, uid: str) -> None:
    client = TestClient(create_app(_settings(queue_env, admin="3/minute")))
    first, second = _key(database_url, f"rl-a-{uid}"), _key(database_url, f"rl-b-{uid}")
    assert [_get(client, first) for _ in range(4)] == [200, 200, 200, 429]
    assert [_get(client, second) for _ in range(3)] == [200, 200, 200]
    assert _get(client, second) == 429


def test_per_key_override_beats_the_role_default(
    queue_env: str, database_url: str, uid: str
) -> None:
    client = TestClient(create_app(_settings(queue_env, admin="2/minute")))
    default = _key(database_url, f"rl-default-{uid}")
    wider = _key(database_url, f"rl-wider-{uid}", rate_limit="6/minute")
    unlimited = _key(database_url, f"rl-none-{uid}", rate_limit="none")
    assert [_get(client, default) for _ in range(3)] == [200, 200, 429]
    assert [_get(client, wider) for _ in range(7)] == [200] * 6 + [429]
    assert all(_get(client, unlimited) == 200 for _ in range(10))


def test_set_limit_through_the_admin_api(queue_env: str, database_url: str, uid: str) -> None:
    client = TestClient(create_app(_settings(queue_env, admin="2/minute")))
    boss = _key(database_url, f"rl-boss-{uid}", rate_limit="none")
    target = _key(database_url, f"rl-target-{uid}")
    h = {"Authorization": f"Bearer {boss}"}
    key_id = next(
        k["id"]
        for k in client.get("/v1/keys", headers=h).json()
        if k["name"].endswith(f"target-{uid}")
    )
    bad = client.put(f"/v1/keys/{key_id}/rate-limit", json={"rate_limit": "lots"}, headers=h)
    assert bad.status_code == 422
    assert bad.json()["error"]["field"] == "rate_limit"
    ok = client.put(f"/v1/keys/{key_id}/rate-limit", json={"rate_limit": "4/minute"}, headers=h)
    assert ok.status_code == 200 and ok.json()["rate_limit"] == "4/minute"
    assert [_get(client, target) for _ in range(5)] == [200] * 4 + [429]


def test_limit_is_shared_across_processes(queue_env: str, database_url: str, uid: str) -> None:
    """Another process spends the key's budget through Redis; this one then sees 429."""
    secret = _key(database_url, f"rl-shared-{uid}")
    script = (
        "from fastapi.testclient import TestClient\n"
        "from moderation.api.app import create_app\n"
        "from moderation.settings import RateLimitSettings, get_settings\n"
        f"s = get_settings().model_copy(update={{'redis_url': {queue_env!r}, "
        "'rate_limits': RateLimitSettings(admin='4/minute')})\n"
        "c = TestClient(create_app(s))\n"
        f"codes = [c.get({ROUTE!r}, headers={{'Authorization': 'Bearer {secret}'}}).status_code"
        " for _ in range(4)]\n"
        "assert codes == [200] * 4, codes\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    client = TestClient(create_app(_settings(queue_env, admin="4/minute")))
    assert _get(client, secret) == 429


def test_redis_down_allows_and_logs(
    database_url: str, uid: str, caplog: pytest.LogCaptureFixture
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    client = TestClient(create_app(_settings(dead, admin="1/minute")))
    secret = _key(database_url, f"rl-down-{uid}")
    with caplog.at_level(logging.WARNING, logger="moderation.rate_limit"):
        started = time.monotonic()
        codes = [_get(client, secret) for _ in range(5)]
        elapsed = time.monotonic() - started
    assert codes == [200] * 5
    assert any("rate limiter storage unreachable" in r.message for r in caplog.records)
    # One failed attempt, then the back-off: the requests do not each wait on Redis.
    assert elapsed < 3.0


def test_console_pages_count_against_the_key(queue_env: str, database_url: str, uid: str) -> None:
    client = TestClient(create_app(_settings(queue_env, reviewer="3/minute")))
    with session_scope(database_url) as s:
        secret = create_key(s, "reviewer", f"rl-console-{uid}")[0]
    signed = client.post("/console/sign-in", data={"key": secret}, follow_redirects=False)
    assert signed.status_code == 303
    codes = [client.get("/console/metrics").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    # The same key's budget covers the API too.
    assert client.get("/v1/banks", headers={"Authorization": f"Bearer {secret}"}).status_code == 429
