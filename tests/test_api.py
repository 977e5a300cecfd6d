"""HTTP API tests through FastAPI's TestClient: auth, roles, banks, keywords, limits, OpenAPI.

A successful POST /v1/moderate needs a Celery worker; the integration tests cover it.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from moderation.api.app import create_app
from moderation.keys import ROLES, create_key
from moderation.settings import Limits, get_settings
from moderation.storage.db import session_scope
from tests.images import jpeg, photo

HEX64 = re.compile(r"^[0-9a-f]{64}$")


@pytest.fixture(scope="module")
def keys(database_url: str) -> dict[str, str]:
    with session_scope(database_url) as s:
        return {role: create_key(s, role, f"api-test-{role}")[0] for role in ROLES}


@pytest.fixture(scope="module")
def client(database_url: str) -> TestClient:
    return TestClient(create_app(get_settings()))


def auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def image_b64(name: str = "astronaut", size: tuple[int, int] = (256, 256)) -> str:
    return base64.b64encode(jpeg(photo(name, size))).decode()


def error(resp: Any) -> dict[str, Any]:
    body = resp.json()
    assert set(body) == {"error"}, body
    return dict(body["error"])


def new_bank(client: TestClient, keys: dict[str, str], name: str, **fields: Any) -> dict[str, Any]:
    resp = client.post("/v1/banks", json={"name": name, **fields}, headers=auth(keys["admin"]))
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def v1_routes(client: TestClient) -> list[tuple[str, str]]:
    """Every (method, concrete path) of /v1 in the OpenAPI document."""
    spec = client.get("/openapi.json").json()
    out = []
    for path, ops in spec["paths"].items():
        if not path.startswith("/v1/"):
            continue
        concrete = re.sub(r"\{[^}]+\}", "1", path)
        out.extend((method.upper(), concrete) for method in ops)
    return out


# --- authentication and roles -------------------------------------------------------------


def test_every_v1_route_needs_a_key(client: TestClient) -> None:
    routes = v1_routes(client)
    assert ("POST", "/v1/moderate") in routes
    assert ("POST", "/v1/banks") in routes
    for method, path in routes:
        resp = client.request(method, path)
        assert resp.status_code == 401, (method, path, resp.text)
        assert error(resp)["code"] == "unauthorized", (method, path)


def test_bad_keys_are_unauthorized(client: TestClient, keys: dict[str, str]) -> None:
    bad_headers = [
        auth("mod_" + "A" * 43),
        auth("not-a-key"),
        auth(keys["admin"] + "x"),
        {"Authorization": f"Basic {keys['admin']}"},
        {"Authorization": keys["admin"]},
    ]
    for method, path in v1_routes(client):
        for headers in bad_headers:
            resp = client.request(method, path, headers=headers)
            assert resp.status_code == 401, (method, path, headers, resp.text)
            assert error(resp)["code"] == "unauthorized"


@pytest.mark.parametrize(
    ("role", "list_status", "create_status"),
    [
        ("service", 403, 403),
        ("rights_holder", 403, 403),
        ("reviewer", 200, 403),
        ("admin", 200, 201),
    ],
)
def test_bank_role_matrix(
    client: TestClient,
    keys: dict[str, str],
    uid: str,
    role: str,
    list_status: int,
    create_status: int,
) -> None:
    headers = auth(keys[role])
    listed = client.get("/v1/banks", headers=headers)
    assert listed.status_code == list_status, listed.text
    name = f"role-{role}-{uid}"
    created = client.post("/v1/banks", json={"name": name}, headers=headers)
    assert created.status_code == create_status, created.text
    if create_status == 403:
        assert error(created)["code"] == "forbidden"
        # Nothing was created behind the refusal.
        admin_list = client.get("/v1/banks", headers=auth(keys["admin"])).json()
        assert name not in [b["name"] for b in admin_list]
    else:
        assert created.json()["name"] == name
    if list_status == 200:
        assert isinstance(listed.json(), list)
    else:
        assert error(listed)["code"] == "forbidden"


def test_rights_holder_cannot_moderate(client: TestClient, keys: dict[str, str]) -> None:
    resp = client.post(
        "/v1/moderate",
        json={"content_id": "x", "uploader_id": "u"},
        headers=auth(keys["rights_holder"]),
    )
    assert resp.status_code == 403
    assert error(resp)["code"] == "forbidden"
    resp = client.get("/v1/items/anything", headers=auth(keys["rights_holder"]))
    assert resp.status_code == 403


def test_admin_only_routes_refuse_other_roles(client: TestClient, keys: dict[str, str]) -> None:
    for role in ("service", "reviewer", "rights_holder"):
        headers = auth(keys[role])
        for method, path in [
            ("GET", "/v1/keys"),
            ("POST", "/v1/keys"),
            ("GET", "/v1/keywords"),
            ("DELETE", "/v1/keywords/1"),
            ("GET", "/v1/banks/x/entries"),
            ("GET", "/v1/banks/x/export"),
            ("GET", "/metrics"),
        ]:
            resp = client.request(method, path, headers=headers)
            assert resp.status_code == 403, (role, method, path, resp.text)
            assert error(resp)["code"] == "forbidden"


# --- banks --------------------------------------------------------------------------------


def test_create_get_patch_delete_bank(client: TestClient, keys: dict[str, str], uid: str) -> None:
    name = f"api-bank-{uid}"
    created = new_bank(client, keys, name, action="review", threshold=20, description="d")
    assert {k: created[k] for k in ("name", "kind", "action", "threshold", "size", "enabled")} == {
        "name": name,
        "kind": "image",
        "action": "review",
        "threshold": 20,
        "size": 0,
        "enabled": True,
    }
    got = client.get(f"/v1/banks/{name}", headers=auth(keys["reviewer"]))
    assert got.status_code == 200
    assert got.json() == created
    patched = client.patch(
        f"/v1/banks/{name}", json={"action": "block", "enabled": False}, headers=auth(keys["admin"])
    )
    assert patched.status_code == 200, patched.text
    assert (patched.json()["action"], patched.json()["enabled"], patched.json()["threshold"]) == (
        "block",
        False,
        20,
    )
    gone = client.delete(f"/v1/banks/{name}", headers=auth(keys["admin"]))
    assert gone.status_code == 204
    missing = client.get(f"/v1/banks/{name}", headers=auth(keys["admin"]))
    assert missing.status_code == 404
    assert error(missing)["code"] == "not_found"


def test_duplicate_bank_is_conflict(client: TestClient, keys: dict[str, str], uid: str) -> None:
    name = f"api-dup-{uid}"
    new_bank(client, keys, name)
    resp = client.post("/v1/banks", json={"name": name}, headers=auth(keys["admin"]))
    assert resp.status_code == 409
    err = error(resp)
    assert err["code"] == "conflict"
    assert err["field"] == "name"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "bad name!"}, "name"),
        ({"name": "ok-{uid}", "kind": "audio"}, "kind"),
        ({"name": "ok-{uid}", "action": "delete"}, "action"),
        ({"name": "ok-{uid}", "threshold": 500}, "threshold"),
        ({"name": "ok-{uid}", "colour": "red"}, "colour"),
        ({}, "name"),
    ],
)
def test_invalid_bank_is_422_with_field(
    client: TestClient, keys: dict[str, str], uid: str, body: dict[str, Any], field: str
) -> None:
    body = {k: (v.format(uid=uid) if isinstance(v, str) else v) for k, v in body.items()}
    resp = client.post("/v1/banks", json=body, headers=auth(keys["admin"]))
    assert resp.status_code == 422, resp.text
    err = error(resp)
    assert err["code"] == "invalid_input"
    assert err["field"] == field
    assert err["message"]


def test_add_entries_from_image_and_from_pdq(
    client: TestClient, keys: dict[str, str], uid: str
) -> None:
    name = f"api-entries-{uid}"
    new_bank(client, keys, name)
    h = auth(keys["admin"])
    data = image_b64()
    first = client.post(
        f"/v1/banks/{name}/entries", json={"data_b64": data, "note": "astro"}, headers=h
    )
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["bank"] == name
    assert HEX64.match(body["pdq"])
    assert isinstance(body["quality"], int)
    assert 0 <= body["quality"] <= 100
    # The same image again is the same entry.
    again = client.post(f"/v1/banks/{name}/entries", json={"data_b64": data}, headers=h)
    assert again.status_code == 201
    assert again.json()["entry_id"] == body["entry_id"]

    pdq = "ABCDEF0123456789" * 4
    by_hash = client.post(f"/v1/banks/{name}/entries", json={"pdq": pdq, "quality": 77}, headers=h)
    assert by_hash.status_code == 201, by_hash.text
    assert by_hash.json()["pdq"] == pdq.lower()
    assert by_hash.json()["quality"] == 77
    assert by_hash.json()["entry_id"] != body["entry_id"]

    listed = client.get(f"/v1/banks/{name}/entries", headers=h).json()
    assert [(e["value"], e["quality"]) for e in listed["entries"]] == [
        (body["pdq"], body["quality"]),
        (pdq.lower(), 77),
    ]
    assert listed["entries"][0]["note"] == "astro"
    assert client.get(f"/v1/banks/{name}", headers=h).json()["size"] == 2


@pytest.mark.parametrize(
    "body",
    [
        {"pdq": "f" * 64, "data_b64": "AAAA"},
        {"pdq": "f" * 64, "uri": "https://example.com/a.jpg"},
        {},
        {"pdq": "f" * 64, "quality": 101},
    ],
)
def test_entry_needs_exactly_one_valid_source(
    client: TestClient, keys: dict[str, str], uid: str, body: dict[str, Any]
) -> None:
    name = f"api-one-{uid}"
    new_bank(client, keys, name)
    resp = client.post(f"/v1/banks/{name}/entries", json=body, headers=auth(keys["admin"]))
    assert resp.status_code == 422, resp.text
    assert error(resp)["code"] == "invalid_input"
    assert client.get(f"/v1/banks/{name}", headers=auth(keys["admin"])).json()["size"] == 0


def test_bad_entries_name_the_problem(client: TestClient, keys: dict[str, str], uid: str) -> None:
    name = f"api-badentry-{uid}"
    new_bank(client, keys, name)
    h = auth(keys["admin"])
    resp = client.post(f"/v1/banks/{name}/entries", json={"pdq": "xyz"}, headers=h)
    assert resp.status_code == 422
    assert error(resp)["field"] == "pdq"
    resp = client.post(f"/v1/banks/{name}/entries", json={"data_b64": "%%%"}, headers=h)
    assert resp.status_code == 422
    assert "base64" in error(resp)["message"]
    raw = jpeg(photo("astronaut", (256, 256)))
    truncated = base64.b64encode(raw[: len(raw) // 3]).decode()
    resp = client.post(f"/v1/banks/{name}/entries", json={"data_b64": truncated}, headers=h)
    assert resp.status_code == 422
    assert error(resp)["code"] == "media_decode_error"
    resp = client.post(f"/v1/banks/no-such-{uid}/entries", json={"pdq": "f" * 64}, headers=h)
    assert resp.status_code == 404


@pytest.mark.parametrize("fmt", ["txt", "csv", "jsonl", "hma"])
def test_export_import_round_trip(
    client: TestClient, keys: dict[str, str], uid: str, fmt: str
) -> None:
    h = auth(keys["admin"])
    src, dst = f"api-src-{fmt}-{uid}", f"api-dst-{fmt}-{uid}"
    new_bank(client, keys, src)
    new_bank(client, keys, dst)
    hashes = [("0123456789abcdef" * 4, 90), ("f" * 64, None)]
    for value, quality in hashes:
        body: dict[str, Any] = {"pdq": value, "note": 'a "note", 注释'}
        if quality is not None:
            body["quality"] = quality
        assert client.post(f"/v1/banks/{src}/entries", json=body, headers=h).status_code == 201
    client.post(f"/v1/banks/{src}/entries", json={"data_b64": image_b64("camera")}, headers=h)

    exported = client.get(f"/v1/banks/{src}/export", params={"format": fmt}, headers=h)
    assert exported.status_code == 200
    assert f'filename="{src}.{fmt}"' in exported.headers["content-disposition"]
    # No format given: detected from the content.
    imported = client.post(f"/v1/banks/{dst}/import", content=exported.content, headers=h)
    assert imported.status_code == 200, imported.text
    assert imported.json() == {
        "bank": dst,
        "format": "jsonl" if fmt == "hma" else fmt,
        "imported": 3,
        "distinct": 3,
        "added": 3,
        "skipped": 0,
        "errors": [],
    }
    again_exported = client.get(f"/v1/banks/{dst}/export", params={"format": fmt}, headers=h)
    assert again_exported.content == exported.content  # byte-identical round trip

    def entries(bank: str) -> list[tuple[Any, ...]]:
        rows = client.get(f"/v1/banks/{bank}/entries", headers=h).json()["entries"]
        keep = {
            "txt": ("value", "quality"),
            "hma": ("value",),
            "csv": ("value", "quality", "note"),
            "jsonl": ("value", "quality", "note"),
        }[fmt]
        return [tuple(r[k] for k in keep) for r in rows]

    assert entries(dst) == entries(src)
    assert len(entries(dst)) == 3
    # Importing the same list again adds nothing new.
    again = client.post(
        f"/v1/banks/{dst}/import", params={"format": fmt}, content=exported.content, headers=h
    )
    assert again.status_code == 200
    assert (again.json()["imported"], again.json()["added"]) == (3, 0)
    assert client.get(f"/v1/banks/{dst}", headers=h).json()["size"] == 3


def test_import_bad_list_names_the_line(client: TestClient, keys: dict[str, str], uid: str) -> None:
    name = f"api-badimport-{uid}"
    new_bank(client, keys, name)
    h = auth(keys["admin"])
    body = ("f" * 64 + "\n" + "nothex" + "\n").encode()
    resp = client.post(f"/v1/banks/{name}/import", content=body, headers=h)
    assert resp.status_code == 422
    assert error(resp)["message"].startswith("line 2:")
    assert error(resp)["detail"]["errors"][0]["line"] == 2
    assert client.get(f"/v1/banks/{name}", headers=h).json()["size"] == 0
    resp = client.post(f"/v1/banks/{name}/import", content=b"\xff\xfe\x00", headers=h)
    assert resp.status_code == 422
    assert "UTF-8" in error(resp)["message"]


def test_import_skip_bad_imports_the_rest_and_lists_the_bad_lines(
    client: TestClient, keys: dict[str, str], uid: str
) -> None:
    name = f"api-skipbad-{uid}"
    new_bank(client, keys, name)
    h = auth(keys["admin"])
    body = "signal_type,signal_str,quality\n" + f"pdq,{'a' * 64},80\nmd5,{'b' * 32},\npdq,xyz,\n"
    strict = client.post(f"/v1/banks/{name}/import", content=body.encode(), headers=h)
    assert strict.status_code == 422
    assert error(strict)["message"].startswith("2 bad lines in the hash list: line 3:")
    assert error(strict)["detail"]["bad_lines"] == 2
    resp = client.post(
        f"/v1/banks/{name}/import",
        params={"skip_bad": "true", "source": "partner-feed"},
        content=body.encode(),
        headers=h,
    )
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert (out["format"], out["imported"], out["added"], out["skipped"]) == ("csv", 1, 1, 2)
    assert [e["line"] for e in out["errors"]] == [3, 4]
    assert "signal_type 'md5' cannot go in a pdq bank" in out["errors"][0]["error"]
    assert client.get(f"/v1/banks/{name}", headers=h).json()["size"] == 1


def test_import_and_export_refusals(client: TestClient, keys: dict[str, str], uid: str) -> None:
    h = auth(keys["admin"])
    resp = client.get(f"/v1/banks/missing-{uid}/export", headers=h)
    assert resp.status_code == 404
    resp = client.post(f"/v1/banks/missing-{uid}/import", content=b"f" * 64, headers=h)
    assert resp.status_code == 404
    text_bank = f"api-textbank-{uid}"
    new_bank(client, keys, text_bank, kind="text")
    resp = client.post(f"/v1/banks/{text_bank}/import", content=b"f" * 64, headers=h)
    assert resp.status_code == 422
    assert "simhash" in error(resp)["message"]
    name = f"api-fmt-{uid}"
    new_bank(client, keys, name)
    resp = client.get(f"/v1/banks/{name}/export", params={"format": "xml"}, headers=h)
    assert resp.status_code == 422
    resp = client.get(f"/v1/banks/{name}/export", params={"format": "csv"}, headers=h)
    assert resp.status_code == 200
    assert resp.text == "signal_type,signal_str,quality,note\n"
    assert resp.headers["content-type"].startswith("text/csv")


def test_delete_entry_then_404(client: TestClient, keys: dict[str, str], uid: str) -> None:
    name = f"api-del-{uid}"
    other = f"api-del-other-{uid}"
    new_bank(client, keys, name)
    new_bank(client, keys, other)
    h = auth(keys["admin"])
    entry_id = client.post(f"/v1/banks/{name}/entries", json={"pdq": "e" * 64}, headers=h).json()[
        "entry_id"
    ]
    # Not through another bank's URL.
    wrong = client.delete(f"/v1/banks/{other}/entries/{entry_id}", headers=h)
    assert wrong.status_code == 404
    first = client.delete(f"/v1/banks/{name}/entries/{entry_id}", headers=h)
    assert first.status_code == 204
    assert first.content == b""
    second = client.delete(f"/v1/banks/{name}/entries/{entry_id}", headers=h)
    assert second.status_code == 404
    assert error(second)["code"] == "not_found"
    assert client.get(f"/v1/banks/{name}", headers=h).json()["size"] == 0


# --- items, ops, OpenAPI, limits ----------------------------------------------------------


def test_unknown_item_is_404(client: TestClient, keys: dict[str, str], uid: str) -> None:
    resp = client.get(f"/v1/items/unknown-{uid}", headers=auth(keys["service"]))
    assert resp.status_code == 404
    err = error(resp)
    assert err["code"] == "not_found"
    assert err["field"] == "content_id"


def test_failed_item_is_visible(
    client: TestClient, keys: dict[str, str], runtime: Any, uid: str
) -> None:
    from moderation.service import moderate_payload

    cid = f"api-failed-{uid}"
    moderate_payload(runtime, {"content_id": cid, "uploader_id": "u", "bogus": 1})
    resp = client.get(f"/v1/items/{cid}", headers=auth(keys["reviewer"]))
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "failed"
    assert body["error"]["code"] == "invalid_input"
    assert body["verdict"] is None


def test_healthz_is_open(client: TestClient) -> None:
    resp = client.get("/healthz")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok"}
    assert resp.headers["x-content-type-options"] == "nosniff"


def test_metrics_needs_admin(client: TestClient, keys: dict[str, str]) -> None:
    resp = client.get("/metrics")
    assert resp.status_code == 401
    assert error(resp)["code"] == "unauthorized"
    resp = client.get("/metrics", headers=auth(keys["admin"]))
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    assert "# TYPE" in resp.text


def test_openapi_lists_moderate_with_request_body(client: TestClient) -> None:
    resp = client.get("/openapi.json")
    assert resp.status_code == 200
    spec = resp.json()
    post = spec["paths"]["/v1/moderate"]["post"]
    ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert {"content_id", "uploader_id", "text", "media", "context"} <= set(schema["properties"])
    assert {"content_id", "uploader_id"} <= set(schema["required"])
    assert post["requestBody"]["required"] is True
    assert "/v1/banks" in spec["paths"]


def test_openapi_refs_all_resolve(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    refs = set(re.findall(r'"\$ref":\s*"#/components/schemas/([^"]+)"', json.dumps(spec)))
    assert refs
    assert refs <= set(spec["components"]["schemas"])


def test_body_over_limit_is_413(database_url: str, keys: dict[str, str], uid: str) -> None:
    settings = get_settings().model_copy(update={"limits": Limits(max_payload_bytes=1000)})
    small = TestClient(create_app(settings))
    h = auth(keys["admin"])
    big = {"name": f"api-big-{uid}", "description": "x" * 1500}
    resp = small.post("/v1/banks", json=big, headers=h)
    assert resp.status_code == 413
    assert error(resp)["code"] == "input_too_large"
    resp = small.post(
        "/v1/moderate",
        content=b"{" + b" " * 2000 + b"}",
        headers={**auth(keys["service"]), "Content-Type": "application/json"},
    )
    assert resp.status_code == 413
    # Streamed without a Content-Length: refused while reading.
    resp = small.post(
        f"/v1/banks/{big['name']}/import", content=iter([b"f" * 64 + b"\n"] * 40), headers=h
    )
    assert resp.status_code == 413
    assert error(resp)["code"] == "input_too_large"
    # Under the limit the same app works.
    ok = small.post("/v1/banks", json={"name": big["name"]}, headers=h)
    assert ok.status_code == 201


def test_moderate_non_json_body_is_422(client: TestClient, keys: dict[str, str]) -> None:
    resp = client.post(
        "/v1/moderate",
        content=b"this is not json",
        headers={**auth(keys["service"]), "Content-Type": "application/json"},
    )
    assert resp.status_code == 422
    err = error(resp)
    assert err["code"] == "invalid_input"
    assert "JSON" in err["message"]
    resp = client.post("/v1/moderate", content=b"\xff\xfe{}", headers=auth(keys["admin"]))
    assert resp.status_code == 422
    assert error(resp)["code"] == "invalid_input"


# --- keywords -----------------------------------------------------------------------------


def test_keywords_admin_add_list_delete(client: TestClient, keys: dict[str, str], uid: str) -> None:
    h = auth(keys["admin"])
    term = f"spamword{uid}"
    resp = client.post(
        "/v1/keywords", json={"category": "spam", "term": term, "score": 0.8}, headers=h
    )
    assert resp.status_code == 201, resp.text
    created = resp.json()
    assert (created["category"], created["term"], created["score"]) == ("spam", term, 0.8)
    listed = client.get("/v1/keywords", headers=h).json()
    assert {"id": created["id"], "category": "spam", "term": term, "score": 0.8} in listed

    dup = client.post("/v1/keywords", json={"category": "spam", "term": term}, headers=h)
    assert dup.status_code == 409
    bad = client.post("/v1/keywords", json={"category": "Bad Cat", "term": "x"}, headers=h)
    assert bad.status_code == 422
    assert error(bad)["field"] == "category"
    bad = client.post("/v1/keywords", json={"category": "spam", "term": "y", "score": 0}, headers=h)
    assert bad.status_code == 422
    assert error(bad)["field"] == "score"

    assert client.delete(f"/v1/keywords/{created['id']}", headers=h).status_code == 204
    assert created["id"] not in [t["id"] for t in client.get("/v1/keywords", headers=h).json()]
    assert client.delete(f"/v1/keywords/{created['id']}", headers=h).status_code == 404


@pytest.mark.parametrize("role", ["service", "reviewer", "rights_holder"])
def test_keywords_non_admin_forbidden(
    client: TestClient, keys: dict[str, str], uid: str, role: str
) -> None:
    term = f"nope{uid}"
    resp = client.post(
        "/v1/keywords", json={"category": "spam", "term": term}, headers=auth(keys[role])
    )
    assert resp.status_code == 403
    assert error(resp)["code"] == "forbidden"
    listed = client.get("/v1/keywords", headers=auth(keys["admin"])).json()
    assert term not in [t["term"] for t in listed]
