"""API keys: rotation with a grace period (API and CLI), expiry, and digests-only storage."""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from moderation.api.app import create_app
from moderation.keys import create_key
from moderation.settings import get_settings
from moderation.storage.db import session_scope
from moderation.storage.tables import ApiKeyRow
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def client(database_url: str) -> TestClient:
    return TestClient(create_app(get_settings()))


@pytest.fixture(scope="module")
def admin(database_url: str) -> dict[str, str]:
    with session_scope(database_url) as s:
        secret = create_key(s, "admin", "rotation-admin", rate_limit="none")[0]
    return {"Authorization": f"Bearer {secret}"}


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def _new(client: TestClient, admin: dict[str, str], name: str, **extra: str) -> dict[str, object]:
    resp = client.post("/v1/keys", json={"role": "service", "name": name, **extra}, headers=admin)
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def _works(client: TestClient, secret: str) -> bool:
    # A service key may read items: 404 for an unknown one means it was let in.
    code = client.get("/v1/items/no-such-item", headers=_bearer(secret)).status_code
    assert code in (401, 404), code
    return code == 404


def test_rotation_keeps_the_old_secret_until_the_grace_ends(
    client: TestClient, admin: dict[str, str], uid: str
) -> None:
    key = _new(client, admin, f"rot-{uid}")
    resp = client.post(f"/v1/keys/{key['id']}/rotate", json={"grace": "2s"}, headers=admin)
    assert resp.status_code == 200, resp.text
    rotated = resp.json()
    assert rotated["id"] == key["id"] and rotated["role"] == "service"
    assert rotated["name"] == key["name"]
    assert rotated["key"] != key["key"] and rotated["previous_secret_expires_at"]
    assert _works(client, str(key["key"])) and _works(client, rotated["key"])
    time.sleep(2.2)
    assert not _works(client, str(key["key"]))
    assert _works(client, rotated["key"])
    listed = {k["id"]: k for k in client.get("/v1/keys", headers=admin).json()}
    assert listed[key["id"]]["previous_secret_expires_at"] is None
    assert listed[key["id"]]["rotated_at"]


def test_rotation_with_zero_grace_and_twice(
    client: TestClient, admin: dict[str, str], uid: str
) -> None:
    key = _new(client, admin, f"rot0-{uid}")
    first = client.post(f"/v1/keys/{key['id']}/rotate", headers=admin).json()  # default 24 h
    assert _works(client, str(key["key"]))
    # Rotating again keeps only the secret just replaced; the original one ends at once.
    second = client.post(f"/v1/keys/{key['id']}/rotate", json={"grace": "0s"}, headers=admin)
    assert second.status_code == 200
    assert not _works(client, str(key["key"]))
    assert not _works(client, first["key"])
    assert _works(client, second.json()["key"])


def test_rotation_is_admin_only_and_checked(
    client: TestClient, admin: dict[str, str], uid: str
) -> None:
    key = _new(client, admin, f"rotx-{uid}")
    own = client.post(f"/v1/keys/{key['id']}/rotate", headers=_bearer(str(key["key"])))
    assert own.status_code == 403
    assert client.post(f"/v1/keys/{key['id']}/rotate").status_code == 401
    bad = client.post(f"/v1/keys/{key['id']}/rotate", json={"grace": "soon"}, headers=admin)
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "grace"
    long = client.post(f"/v1/keys/{key['id']}/rotate", json={"grace": "90d"}, headers=admin)
    assert long.status_code == 422
    assert client.post("/v1/keys/999999/rotate", headers=admin).status_code == 404
    assert client.delete(f"/v1/keys/{key['id']}", headers=admin).status_code == 204
    revoked = client.post(f"/v1/keys/{key['id']}/rotate", headers=admin)
    assert revoked.status_code == 422


def test_expired_key_is_refused(client: TestClient, admin: dict[str, str], uid: str) -> None:
    key = _new(client, admin, f"exp-{uid}", expires_in="1s")
    assert _works(client, str(key["key"]))
    time.sleep(1.2)
    resp = client.get("/v1/items/x", headers=_bearer(str(key["key"])))
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "unauthorized"
    listed = {k["id"]: k for k in client.get("/v1/keys", headers=admin).json()}
    assert listed[key["id"]]["expired"] is True and listed[key["id"]]["expires_at"]


def test_database_never_holds_a_secret(
    client: TestClient, admin: dict[str, str], database_url: str, uid: str
) -> None:
    key = _new(client, admin, f"hash-{uid}")
    rotated = client.post(f"/v1/keys/{key['id']}/rotate", headers=admin).json()
    secrets_ = [str(key["key"]), rotated["key"]]
    with session_scope(database_url) as s:
        row = s.scalars(select(ApiKeyRow).where(ApiKeyRow.id == key["id"])).one()
        stored = json.dumps([str(getattr(row, c.name)) for c in ApiKeyRow.__table__.columns])
        audit = s.execute(select(ApiKeyRow.__table__.metadata.tables["audit_events"])).all()
    for secret in secrets_:
        # Only the 12-character prefix (to find the row) is kept, never the random part.
        assert secret not in stored and secret[12:] not in stored
        assert secret[4:] not in json.dumps([str(a) for a in audit])
    import hashlib

    assert row.key_hash == hashlib.sha256(rotated["key"].encode()).hexdigest()
    assert row.previous_key_hash == hashlib.sha256(str(key["key"]).encode()).hexdigest()


@pytest.mark.integration
def test_cli_create_rotate_list(database_url: str, uid: str) -> None:
    made = json.loads(
        run_cli(
            "keys",
            "create",
            "--role",
            "reviewer",
            "--name",
            f"cli-{uid}",
            "--expires-in",
            "7d",
            "--rate-limit",
            "5/second",
            "--json",
        ).stdout
    )
    rotated = json.loads(
        run_cli("keys", "rotate", str(made["id"]), "--grace", "1h", "--json").stdout
    )
    assert rotated["id"] == made["id"] and rotated["key"] != made["key"]
    assert rotated["previous_secret_expires_at"] and rotated["rate_limit"] == "5/second"
    listing = run_cli("keys", "list").stdout
    line = next(ln for ln in listing.splitlines() if f"cli-{uid}" in ln)
    assert "expires 20" in line and "old secret until" in line and "5/second" in line
    bad = run_cli("keys", "set-limit", str(made["id"]), "plenty", check=False)
    assert bad.returncode != 0 and "rate_limit" in (bad.stderr + bad.stdout)
