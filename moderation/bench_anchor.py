"""`moderation bench anchor`: leaves through the whole anchoring path on the embedded chain.

Runs in a scratch directory (its own SQLite database and chain), never the service's:
register N leaves, anchor them in one transaction until confirmed, build every receipt,
then time offline verification of one receipt and the chain's replay after a restart.
"""

from __future__ import annotations

import hashlib
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from moderation.settings import Settings


def run_anchor_bench(*, leaves: int, verify_rounds: int, confirmations: int) -> dict[str, Any]:
    from sqlalchemy import select

    from chain.embedded import EmbeddedChain
    from chain.receipt import parse_receipt, verify_offline
    from moderation.anchoring import anchor_now, open_ledger, reset_ledgers
    from moderation.provenance import LeafInput, receipts_for_batch, register_leaves
    from moderation.storage import db
    from moderation.storage.tables import AnchorBatchRow

    with tempfile.TemporaryDirectory(prefix="bench-anchor-") as tmp:
        settings = Settings(
            var_dir=Path(tmp),
            database_url=None,
            redis_url=None,
            anchor_backend="embedded",
            anchor_batch_size=leaves,
            anchor_max_batch=max(leaves, 1),
            anchor_confirmations=confirmations,
        )
        url = settings.resolved_database_url
        db.migrate(url)
        t = time.perf_counter()
        ledger = open_ledger(settings)
        chain_start_s = time.perf_counter() - t

        items = [
            LeafInput(
                f"bench-{i}",
                f"owner-{i % 97}",
                hashlib.sha256(i.to_bytes(8, "big")).hexdigest(),
                (("pdq", hashlib.sha256(b"pdq" + i.to_bytes(8, "big")).hexdigest()),),
            )
            for i in range(leaves)
        ]
        t0 = time.perf_counter()
        with db.session_scope(url) as session:
            register_leaves(session, items)
        t1 = time.perf_counter()
        report = anchor_now(settings, timeout_s=600)
        t2 = time.perf_counter()
        with db.session_scope(url) as session:
            batches = list(session.scalars(select(AnchorBatchRow).order_by(AnchorBatchRow.id)))
            texts: list[str] = []
            for batch in batches:
                texts.extend(r.to_json() for r in receipts_for_batch(session, batch))
        t3 = time.perf_counter()

        sample = texts[len(texts) // 2]
        assert verify_offline(parse_receipt(sample)).valid
        times = []
        for _ in range(verify_rounds):
            s = time.perf_counter()
            verify_offline(parse_receipt(sample))
            times.append(time.perf_counter() - s)
        times.sort()

        t = time.perf_counter()
        EmbeddedChain(settings.anchor_chain_dir, read_only=True)
        replay_s = time.perf_counter() - t
        reset_ledgers()
        del ledger

    per_batch = [b.leaf_count for b in batches]
    gas = [b.gas_used for b in batches if b.gas_used is not None]
    result: dict[str, Any] = {
        "leaves": leaves,
        "batches": len(batches),
        "leaves_per_transaction": max(per_batch) if per_batch else 0,
        "confirmations": confirmations,
        "chain_start_s": round(chain_start_s, 3),
        "register_s": round(t1 - t0, 3),
        "anchor_until_confirmed_s": round(t2 - t1, 3),
        "end_to_end_s": round(t2 - t0, 3),
        "leaves_per_s": round(leaves / (t2 - t0), 1),
        "receipts_built_s": round(t3 - t2, 3),
        "receipt_bytes": len(sample.encode()),
        "proof_hashes": len(parse_receipt(sample).proof.path),
        "verify_offline_us": {
            "p50": round(statistics.median(times) * 1e6, 1),
            "p99": round(times[int(len(times) * 0.99) - 1] * 1e6, 1),
            "max": round(times[-1] * 1e6, 1),
        },
        "gas_per_batch": gas[0] if len(set(gas)) == 1 else gas,
        "chain_replay_after_restart_s": round(replay_s, 3),
        "cycles_errors": report.errors,
    }
    result["summary"] = (
        f"{leaves} leaves in {len(batches)} transaction(s) ({result['leaves_per_transaction']} "
        f"per transaction), confirmed after {confirmations} blocks\n"
        f"  end to end (register -> confirmed): {result['end_to_end_s']} s "
        f"= {result['leaves_per_s']} leaves/s  (register {result['register_s']} s, "
        f"anchor {result['anchor_until_confirmed_s']} s; chain start {result['chain_start_s']} s)\n"
        f"  receipts: all built in {result['receipts_built_s']} s, "
        f"{result['receipt_bytes']} bytes, {result['proof_hashes']} proof hashes\n"
        f"  offline verification of one receipt (parse + proof): "
        f"p50 {result['verify_offline_us']['p50']} µs, p99 {result['verify_offline_us']['p99']} "
        f"µs, max {result['verify_offline_us']['max']} µs over {verify_rounds}\n"
        f"  gas per batch: {result['gas_per_batch']}; "
        f"chain replay after a restart: {result['chain_replay_after_restart_s']} s"
    )
    return result
