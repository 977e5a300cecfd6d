"""The anchoring job, receipts, the CLI and the HTTP route, on the embedded chain and the
test database (shared by the session: every id is unique)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from chain.receipt import parse_receipt, verify_offline
from chain.verify import verify_on_chain
from moderation.anchoring import anchor_now, open_ledger, run_cycle, single_writer
from moderation.api.app import create_app
from moderation.errors import Conflict, InvalidInput
from moderation.keys import create_key
from moderation.provenance import (
    LeafInput,
    leaf_by_subject,
    receipt_for,
    register_leaf,
    register_leaves,
)
from moderation.settings import get_settings
from moderation.storage.db import session_scope
from moderation.storage.tables import AnchorBatchRow
from tests.conftest import run_cli
from tests.images import jpeg, photo


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, check=check, timeout=180)


def register(database_url: str, uid: str, n: int, owner: str = "studio") -> list[str]:
    subjects = [f"work-{uid}-{i}" for i in range(n)]
    with session_scope(database_url) as s:
        register_leaves(
            s,
            [
                LeafInput(x, owner, f"{i + 1:064x}", (("pdq", "ab" * 32),))
                for i, x in enumerate(subjects)
            ],
        )
    return subjects


def receipt_of(database_url: str, subject: str) -> Any:
    with session_scope(database_url) as s:
        return receipt_for(s, leaf_by_subject(s, subject))


def test_register_is_idempotent_and_first_come(database_url: str, uid: str) -> None:
    with session_scope(database_url) as s:
        first = register_leaf(s, subject_id=f"w-{uid}", owner="a", sha256="AB" * 32)
        again = register_leaf(s, subject_id=f"w-{uid}", owner="a", sha256="ab" * 32)
        assert first == again
        with pytest.raises(Conflict, match="registered already"):
            register_leaf(s, subject_id=f"w-{uid}", owner="b", sha256="ab" * 32)
        with pytest.raises(InvalidInput, match="sha256"):
            register_leaf(s, subject_id=f"x-{uid}", owner="a", sha256="not hex")
        with pytest.raises(InvalidInput, match="twice"):
            register_leaves(s, [LeafInput(f"y-{uid}", "a", "ab" * 32)] * 2)


def test_anchor_now_confirms_and_every_receipt_verifies(database_url: str, uid: str) -> None:
    settings = get_settings()
    subjects = register(database_url, uid, 300)
    with session_scope(database_url) as s, pytest.raises(Conflict, match="not anchored yet"):
        receipt_for(s, leaf_by_subject(s, subjects[0]))
    report = anchor_now(settings)
    assert report.confirmed >= 1 and not report.open_batches
    ledger = open_ledger(settings, read_only=True)
    roots = set()
    for subject in subjects[::37]:
        receipt = receipt_of(database_url, subject)
        roots.add(receipt.root)
        assert verify_offline(receipt).valid
        check = verify_on_chain(receipt, ledger, min_confirmations=settings.anchor_confirmations)
        assert check.valid, check.reason
    assert len(roots) == 1  # one transaction for the whole batch
    with session_scope(database_url) as s:
        batch = s.scalar(select(AnchorBatchRow).where(AnchorBatchRow.root == roots.pop()))
        assert batch is not None and batch.leaf_count >= 300 and batch.gas_used
        assert batch.attempts == 1 and batch.reorgs == 0


def test_a_reorg_is_survived_and_the_root_confirmed_later(database_url: str, uid: str) -> None:
    settings = get_settings()
    ledger = open_ledger(settings)
    subjects = register(database_url, uid, 5)
    with single_writer(settings, ledger, wait_s=30) as acquired:
        assert acquired
        snapshot = ledger.chain.snapshot()  # type: ignore[attr-defined]
        run_cycle(settings, ledger, force=True)
        run_cycle(settings, ledger)
        with session_scope(database_url) as s:
            leaf = leaf_by_subject(s, subjects[0])
            batch = s.get(AnchorBatchRow, leaf.batch_id)
            assert batch is not None and batch.status == "included"
            first_block, first_hash, tx = batch.block_number, batch.block_hash, batch.tx_hash
        assert first_block is not None
        # The block with our transaction is orphaned; the other fork is longer.
        ledger.chain.revert(snapshot)  # type: ignore[attr-defined]
        ledger.chain.mine(2)  # type: ignore[attr-defined]
        assert ledger.inclusion(tx or "") is None
        reorgs = 0
        for _ in range(12):
            report = run_cycle(settings, ledger)
            reorgs += report.reorgs
            with session_scope(database_url) as s:
                batch = s.get(AnchorBatchRow, leaf.batch_id)
                assert batch is not None
                if batch.status == "confirmed":
                    break
        assert batch.status == "confirmed" and reorgs == 1 and batch.reorgs == 1
        assert batch.block_number is not None and batch.block_number > first_block
        assert batch.block_hash != first_hash
    for subject in subjects:
        receipt = receipt_of(database_url, subject)
        check = verify_on_chain(receipt, ledger, min_confirmations=settings.anchor_confirmations)
        assert check.valid, check.reason
        assert receipt.anchor.block_number > first_block


def test_one_consumer_per_key(tmp_path: Path) -> None:
    from chain.embedded import DEV_PRIVATE_KEY, EmbeddedChain
    from chain.rpc_server import serve_embedded

    settings = get_settings()
    ledger = open_ledger(settings)
    with single_writer(settings, ledger) as first, single_writer(settings, ledger) as second:
        assert first and not second
    with single_writer(settings, ledger) as again:
        assert again
    # An RPC chain's senders share a Redis lock (when Redis is configured).
    node = EmbeddedChain(tmp_path)
    server, url = serve_embedded(node)
    try:
        rpc = settings.model_copy(
            update={
                "anchor_backend": "rpc",
                "anchor_rpc_url": url,
                "anchor_contract": node.contract_address,
                "redis_url": settings.redis_url or "redis://127.0.0.1:6379/15",
            }
        )
        import redis

        from chain.ledger import connect_rpc

        try:
            redis.Redis.from_url(rpc.redis_url or "", socket_connect_timeout=0.5).ping()
        except redis.exceptions.ConnectionError:
            pytest.skip("Redis not reachable: the file lock path is covered above")
        sender = connect_rpc(url, node.contract_address or "", private_key=DEV_PRIVATE_KEY)
        with single_writer(rpc, sender) as a, single_writer(rpc, sender) as b:
            assert a and not b
        with single_writer(rpc, sender) as c:
            assert c
    finally:
        server.shutdown()


def test_a_node_outage_is_retried_with_backoff(
    database_url: str, uid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chain.errors import LedgerUnavailable

    settings = get_settings()
    ledger = open_ledger(settings)
    subjects = register(database_url, uid, 3)
    calls = {"n": 0}
    real = type(ledger).broadcast

    def flaky(self: Any, raw: str) -> bool:
        calls["n"] += 1
        raise LedgerUnavailable("connection refused")

    monkeypatch.setattr(type(ledger), "broadcast", flaky)
    with single_writer(settings, ledger, wait_s=30):
        report = run_cycle(settings, ledger, force=True)
        assert report.errors and "connection refused" in report.errors[0]
        with session_scope(database_url) as s:
            batch = s.get(AnchorBatchRow, leaf_by_subject(s, subjects[0]).batch_id)
            assert batch is not None and batch.status == "pending" and batch.next_attempt_at
            assert batch.raw_tx and batch.last_error
            signed_hash = batch.tx_hash
            batch.next_attempt_at = None  # the backoff has passed
        monkeypatch.setattr(type(ledger), "broadcast", real)
    anchor_now(settings)
    receipt = receipt_of(database_url, subjects[0])
    # The transaction signed before the outage is the one that landed: one per root.
    assert receipt.anchor.transaction_hash == signed_hash


def test_anchoring_through_a_json_rpc_node(
    tmp_path: Path, database_url: str, uid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """anchor_backend = rpc: the key from the environment, the node over HTTP."""
    from chain.embedded import DEV_PRIVATE_KEY, EmbeddedChain
    from chain.rpc_server import serve_embedded

    node = EmbeddedChain(tmp_path / "node")
    server, url = serve_embedded(node)
    try:
        monkeypatch.setenv(f"TEST_ANCHOR_KEY_{uid}", DEV_PRIVATE_KEY)
        settings = get_settings().model_copy(
            update={
                "anchor_backend": "rpc",
                "anchor_rpc_url": url,
                "anchor_contract": node.contract_address,
                "anchor_key_env": f"TEST_ANCHOR_KEY_{uid}",
                "anchor_confirmations": 1,  # nothing mines empty blocks on this node
            }
        )
        subjects = register(database_url, uid, 4)
        report = anchor_now(settings, timeout_s=60)
        assert report.confirmed >= 1
        receipt = receipt_of(database_url, subjects[0])
        ledger = open_ledger(settings, read_only=True)
        assert receipt.anchor.contract == node.contract_address
        assert verify_on_chain(receipt, ledger).valid
    finally:
        server.shutdown()


def test_rpc_backend_needs_a_node_and_a_contract() -> None:
    from pydantic import ValidationError

    from moderation.settings import Settings

    with pytest.raises(ValidationError, match="anchor_rpc_url"):
        Settings(anchor_backend="rpc")


# --- CLI ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def anchored(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two files anchored by `moderation anchor` in its own process."""
    tmp = tmp_path_factory.mktemp("anchor-cli")
    image, text = tmp / "photo.jpg", tmp / "notes.txt"
    image.write_bytes(jpeg(photo("rocket")))
    text.write_text(f"an original text {os.getpid()} {tmp}")
    out = tmp / "receipts"
    done = cli(
        "anchor", str(image), str(text), "--owner", "cli-studio", "--out", str(out), "--json"
    )
    return {"result": json.loads(done.stdout), "out": out, "image": image}


def test_cli_anchor_writes_a_receipt_per_file(anchored: dict[str, Any]) -> None:
    results = anchored["result"]["receipts"]
    assert [Path(r["path"]).name for r in results] == ["photo.jpg", "notes.txt"]
    image = parse_receipt(Path(results[0]["receipt"]).read_bytes())
    assert [p.alg for p in image.leaf.perceptual] == ["pdq", "phash"]
    text = parse_receipt(Path(results[1]["receipt"]).read_bytes())
    assert text.leaf.perceptual == () and text.leaf.owner == "cli-studio"
    assert image.root == text.root and image.anchor == text.anchor


def test_cli_verify_in_a_fresh_process_offline_and_on_chain(anchored: dict[str, Any]) -> None:
    path = anchored["result"]["receipts"][0]["receipt"]
    offline = cli("verify", path)
    assert offline.stdout.startswith("VALID (offline)")
    # A new process replays the embedded chain's journal: the receipt still verifies there.
    on_chain = json.loads(cli("verify", path, "--chain", "--confirmations", "3", "--json").stdout)
    assert on_chain["valid"] and on_chain["confirmations"] >= 3


def test_cli_verify_against_a_json_rpc_node(anchored: dict[str, Any]) -> None:
    from chain.embedded import EmbeddedChain
    from chain.rpc_server import serve_embedded

    path = anchored["result"]["receipts"][1]["receipt"]
    server, url = serve_embedded(EmbeddedChain(get_settings().anchor_chain_dir, read_only=True))
    try:
        done = cli("verify", path, "--rpc", url, "--confirmations", "3")
        assert done.stdout.startswith(f"VALID ({url})"), done.stdout
        bad = cli("verify", path, "--rpc", "http://127.0.0.1:9", "--json", check=False)
        assert (
            bad.returncode == 1 and "cannot check on the chain" in json.loads(bad.stdout)["reason"]
        )
    finally:
        server.shutdown()


def test_cli_chain_deploy_on_a_json_rpc_node(tmp_path: Path) -> None:
    from chain.embedded import DEV_PRIVATE_KEY, EmbeddedChain
    from chain.ledger import connect_rpc
    from chain.rpc_server import serve_embedded

    server, url = serve_embedded(EmbeddedChain(tmp_path))
    try:
        env = dict(os.environ, MODERATION_ANCHOR_PRIVATE_KEY=DEV_PRIVATE_KEY)
        done = subprocess.run(
            [sys.executable, "-m", "moderation", "chain", "deploy", "--rpc", url, "--json"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        address = json.loads(done.stdout)["contract"]
        connect_rpc(url, address).check_contract()
        assert DEV_PRIVATE_KEY[2:] not in done.stdout + done.stderr
        no_key = dict(env, MODERATION_ANCHOR_PRIVATE_KEY="")
        failed = subprocess.run(
            [sys.executable, "-m", "moderation", "chain", "deploy", "--rpc", url],
            env=no_key,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert failed.returncode != 0 and "no private key" in failed.stderr
    finally:
        server.shutdown()


def _changed(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def _flip(hex_value: str) -> str:
    last = hex_value[-1]
    return hex_value[:-1] + ("0" if last != "0" else "1")


def test_cli_verify_fails_with_a_reason_for_any_changed_field(
    anchored: dict[str, Any], tmp_path: Path
) -> None:
    path = Path(anchored["result"]["receipts"][0]["receipt"])
    text = path.read_text()
    r = parse_receipt(text)
    cases = {
        "leaf sha256": _changed(text, r.leaf.sha256, _flip(r.leaf.sha256)),
        "salt": _changed(text, r.leaf.salt, _flip(r.leaf.salt)),
        "owner": _changed(text, '"owner": "cli-studio"', '"owner": "cli-studiO"'),
        "path node": _changed(text, r.proof.path[0], _flip(r.proof.path[0])),
        "root": _changed(text, r.root, _flip(r.root)),
        "transaction": _changed(text, r.anchor.transaction_hash, _flip(r.anchor.transaction_hash)),
        "block hash": _changed(text, r.anchor.block_hash, _flip(r.anchor.block_hash)),
        "block number": _changed(
            text,
            f'"block_number": {r.anchor.block_number}',
            f'"block_number": {r.anchor.block_number + 1}',
        ),
        "contract": _changed(text, r.anchor.contract, _flip(r.anchor.contract)),
        "time": _changed(
            text, r.anchor.anchored_at, r.anchor.anchored_at.replace(":", ":0", 1)[:-2] + "Z"
        ),
        "tree size": _changed(
            text, f'"tree_size": {r.proof.tree_size}', f'"tree_size": {r.proof.tree_size + 1}'
        ),
        "uppercase hex": _changed(text, r.root, r.root.upper().replace("0X", "0x")),
    }
    for name, changed in cases.items():
        bad = tmp_path / f"{name.replace(' ', '-')}.json"
        bad.write_text(changed)
        done = cli("verify", str(bad), "--chain", "--json", check=False)
        assert done.returncode == 1, (name, done.stdout, done.stderr)
        result = json.loads(done.stdout)
        assert not result["valid"] and result["reason"], name
    missing = cli("verify", str(tmp_path / "nope.json"), check=False)
    assert missing.returncode == 1 and "cannot read" in missing.stdout


def test_every_changed_value_byte_fails_on_chain(anchored: dict[str, Any]) -> None:
    """Each character of every value in a receipt, changed: never still valid."""
    from chain.errors import InvalidReceipt

    path = Path(anchored["result"]["receipts"][1]["receipt"])
    text = path.read_text()
    settings = get_settings()
    ledger = open_ledger(settings, read_only=True)
    body = json.loads(text)
    values: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
        else:
            values.append(json.dumps(node, ensure_ascii=False).strip('"'))

    walk(body)
    positions = sorted(
        {i for v in values for start in _find_all(text, v) for i in range(start, start + len(v))}
    )
    assert len(positions) > 500
    for pos in positions:
        new = "7" if text[pos] != "7" else "8"
        changed = text[:pos] + new + text[pos + 1 :]
        try:
            receipt = parse_receipt(changed)
        except InvalidReceipt:
            continue
        check = verify_on_chain(receipt, ledger, min_confirmations=1)
        assert not check.valid, (pos, text[max(0, pos - 30) : pos + 10])


def _find_all(text: str, value: str) -> list[int]:
    out, start = [], text.find(value)
    while value and start != -1:
        out.append(start)
        start = text.find(value, start + 1)
    return out


# --- HTTP -----------------------------------------------------------------------------------


def test_receipts_route_is_owner_only(database_url: str, uid: str) -> None:
    settings = get_settings()
    with session_scope(database_url) as s:
        holder, _ = create_key(s, "rights_holder", f"holder-{uid}")
        other, _ = create_key(s, "rights_holder", f"other-{uid}")
        admin, _ = create_key(s, "admin", f"admin-{uid}")
        reviewer, _ = create_key(s, "reviewer", f"reviewer-{uid}")
    (subject,) = register(database_url, uid, 1, owner=f"holder-{uid}")
    client = TestClient(create_app(settings))

    def get(key: str, sid: str = subject) -> Any:
        return client.get(f"/v1/receipts/{sid}", headers={"Authorization": f"Bearer {key}"})

    pending = get(holder)
    assert pending.status_code == 409 and pending.json()["error"]["code"] == "not_anchored_yet"
    anchor_now(settings)
    mine = get(holder)
    assert mine.status_code == 200, mine.text
    receipt = parse_receipt(mine.text)
    assert receipt.leaf.id == subject and verify_offline(receipt).valid
    assert get(admin).json() == mine.json()
    for key, status in ((other, 404), (reviewer, 403)):
        resp = get(key)
        assert resp.status_code == status, resp.text
    assert get(other).json()["error"]["code"] == "not_found"
    assert get(holder, "no-such-work-" + uid).status_code == 404
    assert client.get(f"/v1/receipts/{subject}").status_code == 401


# --- the periodic task ----------------------------------------------------------------------


@pytest.mark.integration
def test_the_periodic_task_runs_on_the_anchor_queue(
    worker: Any, queue_env: str, database_url: str, uid: str
) -> None:
    from celery import Celery
    from sqlalchemy import update

    from moderation.queue import ANCHOR_TASK, celery_config
    from moderation.storage.tables import AnchorLeafRow

    subjects = register(database_url, uid, 2)
    # Due by the interval trigger (anchor_interval_s) without waiting for it.
    with session_scope(database_url) as s:
        s.execute(
            update(AnchorLeafRow)
            .where(AnchorLeafRow.subject_id.in_(subjects))
            .values(created_at=datetime.now(UTC) - timedelta(days=1))
        )
    app = Celery("outside-caller", broker=queue_env, backend=queue_env)
    app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"])
    schedule = celery_config(get_settings())["beat_schedule"]["anchor"]
    assert schedule["task"] == ANCHOR_TASK and schedule["options"]["queue"] == "anchor"
    cut = 0
    for _ in range(20):
        result = app.send_task(ANCHOR_TASK, queue="anchor").get(timeout=120)
        assert "error" not in result, result
        cut += result.get("batches_cut", 0)
        with session_scope(database_url) as s:
            if leaf_by_subject(s, subjects[0]).status == "confirmed":
                break
    assert cut >= 1
    receipt = receipt_of(database_url, subjects[1])
    assert verify_on_chain(receipt, open_ledger(get_settings(), read_only=True)).valid


def test_bench_anchor_runs_in_a_scratch_directory() -> None:
    done = cli("bench", "anchor", "--leaves", "500", "--verify-rounds", "200", "--json")
    result = json.loads(done.stdout)
    assert result["leaves_per_transaction"] == 500 and result["batches"] == 1
    assert result["gas_per_batch"] > 21_000 and result["verify_offline_us"]["p50"] > 0
