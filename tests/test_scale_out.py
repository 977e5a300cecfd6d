"""Scale-out with real processes: two workers as separate "hosts" (each its own working and
var directory; they share only Redis and the database) share the load, both see a bank
change within 1 s, and anchoring stays single-writer with both consuming the anchor queue.

The workers listen on queues private to this module (the session's worker never takes their
items, nor they its), plus one direct queue each, so a probe reaches a chosen worker."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.images import jpeg, near_copy

pytestmark = pytest.mark.integration

WORKERS = 2
MODERATE = "moderation.moderate"
ANCHOR = "moderation.anchor.run"


@dataclass
class Cluster:
    app: Any  # a Celery client on the shared Redis
    names: list[str]  # worker node names
    shared: str  # the queue every worker takes moderate items from
    direct: list[str]  # one queue per worker
    anchor: str  # the anchor queue both workers consume
    rpc_url: str
    contract: str
    procs: list[subprocess.Popen[bytes]]
    logs: list[Path]

    def moderate(self, item: dict[str, Any], queue: str, timeout: float = 60) -> dict[str, Any]:
        result = self.app.send_task(MODERATE, args=[item], queue=queue)
        return dict(result.get(timeout=timeout, interval=0.01))

    def processed(self) -> dict[str, int]:
        """Moderate tasks each worker has run (Celery's own per-worker counters)."""
        stats = self.app.control.inspect(destination=self.names, timeout=2.0).stats() or {}
        return {n: int(stats.get(n, {}).get("total", {}).get(MODERATE, 0)) for n in self.names}


def _item(uid: str, **kw: Any) -> dict[str, Any]:
    base = {
        "content_id": f"so-{uid}-{uuid.uuid4().hex[:8]}",
        "uploader_id": "scale",
        "text": None,
        "media": [],
        "context": {},
    }
    return base | kw


@pytest.fixture(scope="module")
def cluster(
    queue_env: str, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    from celery import Celery

    from chain.embedded import DEV_PRIVATE_KEY, EmbeddedChain
    from chain.rpc_server import serve_embedded
    from moderation.embedded import stop_process

    tag = uuid.uuid4().hex[:8]
    # Several hosts cannot share an embedded chain on one disk: they send to a node, and
    # their single-writer lock lives in Redis (moderation/anchoring.py).
    node = EmbeddedChain(tmp_path_factory.mktemp("node"))
    server, rpc_url = serve_embedded(node)
    shared, anchor = f"scale-{tag}", f"scale-anchor-{tag}"
    names, direct, procs, logs = [], [], [], []
    for n in range(WORKERS):
        host = tmp_path_factory.mktemp(f"host{n}")
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODERATION_ANCHOR")}
        env.update(
            MODERATION_VAR_DIR=str(host / "var"),
            MODERATION_REDIS_URL=queue_env,
            MODERATION_DATABASE_URL=database_url,
            MODERATION_ANCHOR_BACKEND="rpc",
            MODERATION_ANCHOR_RPC_URL=rpc_url,
            MODERATION_ANCHOR_CONTRACT=node.contract_address or "",
            MODERATION_ANCHOR_PRIVATE_KEY=DEV_PRIVATE_KEY,
            MODERATION_ANCHOR_CONFIRMATIONS="1",  # nothing mines empty blocks on this node
            MODERATION_ANCHOR_BATCH_SIZE="1",  # due as soon as a leaf waits
            MODERATION_ANCHOR_MAX_BATCH="5",  # so one run cuts several batches
        )
        name = f"scale{n}-{tag}@test"
        names.append(name)
        direct.append(f"scale-direct{n}-{tag}")
        logs.append(host / "worker.log")
        with logs[-1].open("wb") as log:
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable, "-m", "moderation", "worker", "-c", "1", "-P", "solo",
                        "-l", "INFO", "-n", name, "-Q", f"{shared},{direct[-1]},{anchor}",
                    ],
                    env=env, cwd=host, stdout=log, stderr=subprocess.STDOUT,
                )
            )  # fmt: skip
    app = Celery("scale-out-test", broker=queue_env, backend=queue_env)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
    )
    cluster = Cluster(
        app, names, shared, direct, anchor, rpc_url, node.contract_address or "", procs, logs
    )
    try:
        deadline = time.monotonic() + 90
        while len(app.control.ping(destination=names, timeout=0.5) or []) < WORKERS:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                pytest.fail("workers did not start:\n" + logs[0].read_text()[-3000:])
        yield cluster
    finally:
        for p in procs:
            p.terminate()  # all at once: each warm shutdown takes a while
        for p in procs:
            stop_process(p)
        server.shutdown()


def test_workers_on_separate_hosts_share_the_load(cluster: Cluster, uid: str) -> None:
    before = cluster.processed()
    n = 40
    results = [
        cluster.app.send_task(MODERATE, args=[_item(uid, text=f"hello {i}")], queue=cluster.shared)
        for i in range(n)
    ]
    verdicts = [r.get(timeout=60, interval=0.01) for r in results]
    assert all(v.get("decision") == "allow" for v in verdicts), verdicts
    after = cluster.processed()
    took = {name: after[name] - before[name] for name in cluster.names}
    assert sum(took.values()) == n  # each item ran exactly once, somewhere
    for name, count in took.items():
        assert count >= n // 10, f"{name} took {count} of {n}: {took}"


def test_a_bank_change_reaches_every_worker_within_one_second(cluster: Cluster, uid: str) -> None:
    from fastapi.testclient import TestClient

    from moderation.api.app import create_app
    from moderation.keys import create_key
    from moderation.settings import get_settings
    from moderation.storage import db

    settings = get_settings()
    with db.session_scope(settings.resolved_database_url) as s:
        key, _ = create_key(s, "admin", f"scale-{uid}")
    api = TestClient(create_app(settings), headers={"Authorization": f"Bearer {key}"})
    # A picture of this test's own (smooth random blobs): other tests bank skimage photos in
    # the same session database, and a probe must match only the bank made here.
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(int(uid, 16))
    blobs = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    original = Image.fromarray(blobs).resize((640, 480), Image.Resampling.BICUBIC)
    probe = [{"kind": "image", "data_b64": base64.b64encode(near_copy(original)).decode()}]
    bank = f"scale-{uid}"
    for queue in cluster.direct:
        before = cluster.moderate(_item(uid, media=probe), queue)
        assert not [m for m in before["matches"] if m["bank"] == bank], before

    # Steady background work on the shared queue: the workers refresh on their own clock
    # (index_refresh_interval_s), not because they were idle.
    stop = threading.Event()

    def background() -> None:
        while not stop.is_set():
            cluster.app.send_task(MODERATE, args=[_item(uid, text="busy")], queue=cluster.shared)
            time.sleep(0.1)

    loader = threading.Thread(target=background, daemon=True)
    loader.start()
    try:
        time.sleep(0.5)
        assert api.post("/v1/banks", json={"name": bank, "action": "block"}).status_code == 201
        data_b64 = base64.b64encode(jpeg(original)).decode()
        added = api.post(f"/v1/banks/{bank}/entries", json={"data_b64": data_b64})
        assert added.status_code == 201, added.text
        t0 = time.monotonic()
        started: dict[str, float] = {}  # add -> start of the first probe that matched
        answered: dict[str, float] = {}  # add -> that probe's verdict
        last: dict[str, dict[str, Any]] = {}

        def probe_until_matched(name: str, queue: str) -> None:
            # Probes back to back. The index refreshes when a probe starts, so the delay is
            # up to the start of the first probe that matched: its verdict time less its own
            # moderation (latency_ms), which on 2 busy cores can be hundreds of ms.
            while True:
                last[name] = cluster.moderate(_item(uid, media=probe), queue)
                now = time.monotonic() - t0
                if any(m["bank"] == bank for m in last[name]["matches"]) or now > 5:
                    answered[name] = now
                    started[name] = now - last[name].get("latency_ms", 0.0) / 1000
                    return

        probers = [
            threading.Thread(target=probe_until_matched, args=pair)
            for pair in zip(cluster.names, cluster.direct, strict=True)
        ]
        for t in probers:
            t.start()
        for t in probers:
            t.join()
    finally:
        stop.set()
        loader.join()
    for name, verdict in last.items():
        assert verdict["decision"] == "block", (name, verdict)
        ours = [m for m in verdict["matches"] if m["bank"] == bank]
        assert [m["entry_id"] for m in ours] == [added.json()["entry_id"]], (name, verdict)
    timing = f"probe started {started}, answered {answered} s after the add"
    assert max(started.values()) < 1.0, timing
    assert max(answered.values()) < 3.0, timing


def test_anchoring_stays_single_writer(cluster: Cluster, database_url: str, uid: str) -> None:
    from sqlalchemy import select

    from chain.ledger import connect_rpc
    from moderation.provenance import LeafInput, leaf_by_subject, register_leaves
    from moderation.storage.db import session_scope
    from moderation.storage.tables import AnchorBatchRow

    subjects = [f"scale-{uid}-{i}" for i in range(23)]
    with session_scope(database_url) as s:
        register_leaves(
            s,
            [LeafInput(x, "scale", hashlib.sha256(x.encode()).hexdigest()) for x in subjects],
        )
    outcomes: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    while True:
        # Several runs at once, taken by both workers: at most one may hold the key's lock.
        runs = [cluster.app.send_task(ANCHOR, queue=cluster.anchor) for _ in range(6)]
        outcomes += [r.get(timeout=120, interval=0.02) for r in runs]
        with session_scope(database_url) as s:
            leaves = [leaf_by_subject(s, x) for x in subjects]
            if all(leaf.status == "confirmed" for leaf in leaves):
                batch_ids = {leaf.batch_id for leaf in leaves}
                batches = list(
                    s.scalars(select(AnchorBatchRow).where(AnchorBatchRow.id.in_(batch_ids)))
                )
                break
        assert time.monotonic() < deadline, f"leaves not confirmed: {outcomes[-6:]}"
    assert not [o for o in outcomes if "error" in o], outcomes
    # 23 leaves, at most 5 per batch: at least 5 batches, each leaf in exactly one.
    assert len(batches) >= 5
    assert sum(b.leaf_count for b in batches) >= len(subjects)
    for b in batches:
        assert b.status == "confirmed" and b.tx_hash
        assert len(b.leaf_hashes) == 32 * b.leaf_count
    mine = {bytes.fromhex(leaf.leaf_hash) for leaf in leaves}
    packed = [b.leaf_hashes[i : i + 32] for b in batches for i in range(0, len(b.leaf_hashes), 32)]
    assert len([h for h in packed if h in mine]) == len(subjects)  # no leaf in two batches
    # On the chain: exactly one Anchored log (one transaction) per batch root.
    ledger = connect_rpc(cluster.rpc_url, cluster.contract)
    logs = [log for n in range(1, ledger.head() + 1) for log in ledger.anchored_logs(n)]
    roots = [log.root for log in logs]
    for b in batches:
        assert roots.count(b.root) == 1, f"root of batch {b.id} anchored {roots.count(b.root)}x"
        (log,) = [log for log in logs if log.root == b.root]
        assert log.transaction_hash == b.tx_hash and log.leaf_count == b.leaf_count
    assert len({log.transaction_hash for log in logs}) == len(logs)
