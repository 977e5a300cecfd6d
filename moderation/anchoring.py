"""The anchoring job: batch pending leaves into Merkle roots and follow each root's
transaction from pending to included to confirmed.

One cycle (``run_cycle``) is what the periodic task ``moderation.anchor.run`` does, under a
lock per signing key so one consumer sends at a time (one nonce sequence). A batch's
transaction is signed and stored before it is sent, so a crash can only lead to sending
the same transaction again, never to anchoring a root twice. A reorg that drops the
transaction (its receipt is gone, or sits in a block with another hash) sends the batch
back to pending and the same signed transaction out again; if its nonce has been used
meanwhile, the same root is signed anew.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from chain.errors import ChainError
from chain.merkle import MerkleTree
from moderation.errors import ConfigError, Unavailable
from moderation.storage import db
from moderation.storage.tables import AnchorBatchRow, AnchorLeafRow

if TYPE_CHECKING:
    from chain.ledger import Web3Ledger
    from moderation.settings import Settings

__all__ = [
    "CycleReport",
    "anchor_now",
    "open_ledger",
    "run_cycle",
    "run_periodic",
    "single_writer",
]

log = logging.getLogger(__name__)

OPEN = ("pending", "included")
REBROADCAST_AFTER_S = 30.0


class _Refused(ChainError):
    """The node refused even a freshly signed transaction (retried with backoff)."""


@dataclass
class CycleReport:
    """What one cycle did (returned by the task, printed by the CLI)."""

    batches_cut: int = 0
    sent: int = 0
    included: int = 0
    confirmed: int = 0
    reorgs: int = 0
    open_batches: int = 0
    errors: list[str] = field(default_factory=list)


_ledgers: dict[tuple[object, ...], Web3Ledger] = {}
_ledgers_lock = threading.Lock()


def open_ledger(settings: Settings, *, read_only: bool = False) -> Web3Ledger:
    """The configured ledger, one per process (the embedded chain replays at first open)."""
    key: tuple[object, ...] = (
        settings.anchor_backend,
        str(settings.anchor_chain_dir.resolve()),
        settings.anchor_rpc_url,
        settings.anchor_contract,
        read_only,
    )
    with _ledgers_lock:
        ledger = _ledgers.get(key)
        if ledger is None:
            ledger = _build_ledger(settings, read_only=read_only)
            _ledgers[key] = ledger
        return ledger


def _build_ledger(settings: Settings, *, read_only: bool) -> Web3Ledger:
    from chain.embedded import EmbeddedLedger
    from chain.ledger import GasSettings, connect_rpc, load_private_key

    gwei = 10**9
    gas = GasSettings(
        gas_limit=settings.anchor_gas_limit,
        max_fee_wei=None
        if settings.anchor_max_fee_gwei is None
        else int(settings.anchor_max_fee_gwei * gwei),
        priority_fee_wei=None
        if settings.anchor_priority_fee_gwei is None
        else int(settings.anchor_priority_fee_gwei * gwei),
    )
    try:
        if settings.anchor_backend == "embedded":
            ledger = EmbeddedLedger.open(settings.anchor_chain_dir, read_only=read_only)
            if settings.anchor_priority_fee_gwei is not None:
                ledger.gas = gas
            return ledger
        assert settings.anchor_rpc_url and settings.anchor_contract  # settings validate this
        key = None
        if not read_only:
            key = load_private_key(
                key_file=settings.anchor_key_file,
                env_var=None if settings.anchor_key_file else settings.anchor_key_env,
            )
        return connect_rpc(
            settings.anchor_rpc_url,
            settings.anchor_contract,
            private_key=key,
            gas=gas,
            timeout_s=settings.anchor_rpc_timeout_s,
        )
    except ChainError as exc:
        raise ConfigError(f"anchoring ledger: {exc}") from exc


def reset_ledgers() -> None:
    with _ledgers_lock:
        _ledgers.clear()


@contextlib.contextmanager
def single_writer(settings: Settings, ledger: Web3Ledger, *, wait_s: float = 0.0) -> Iterator[bool]:
    """Hold the lock of this chain and signing key; yields False when another consumer
    holds it. The embedded chain lives on one machine's disk, so a file lock under var_dir
    covers every process that can reach it (workers and CLI alike, Redis or not); an RPC
    chain's senders may be anywhere, so they share a Redis lock when Redis is configured."""
    name = f"moderation:anchor:{ledger.chain_id}:{ledger.signer or 'read'}"
    if settings.anchor_backend == "rpc" and settings.redis_url:
        import redis

        client = redis.Redis.from_url(settings.redis_url)
        # Expires on its own if the holder dies; a cycle takes seconds.
        lock = client.lock(name, timeout=600, blocking_timeout=wait_s or None)
        acquired = bool(lock.acquire(blocking=wait_s > 0))
        try:
            yield acquired
        finally:
            if acquired:
                with contextlib.suppress(Exception):
                    lock.release()
        return
    path = Path(settings.var_dir) / f"anchor-{ledger.chain_id}-{ledger.signer or 'read'}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        acquired = _flock(fd, wait_s)
        yield acquired
    finally:
        os.close(fd)  # closing releases the lock


def _flock(fd: int, wait_s: float) -> bool:
    import time

    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


def run_cycle(
    settings: Settings, ledger: Web3Ledger, *, now: datetime | None = None, force: bool = False
) -> CycleReport:
    """Cut due batches, send them, follow every open batch one step. Caller holds the lock.
    ``force`` cuts a batch of whatever is pending, due or not."""
    url = settings.resolved_database_url
    now = now or datetime.now(UTC)
    report = CycleReport()
    while _due(url, settings, now, force):
        try:
            _cut_batch(url, settings.anchor_max_batch)
        except _Refused as exc:
            report.errors.append(str(exc))
            break
        report.batches_cut += 1
        force = False
    with db.session_scope(url) as session:
        open_ids = list(
            session.scalars(
                select(AnchorBatchRow.id)
                .where(AnchorBatchRow.status.in_(OPEN))
                .order_by(AnchorBatchRow.id)
            )
        )
    for batch_id in open_ids:
        try:
            _step(url, settings, ledger, batch_id, now, report)
        except ChainError as exc:
            _record_failure(url, settings, batch_id, now, exc)
            report.errors.append(f"batch {batch_id}: {exc}")
    with db.session_scope(url) as session:
        report.open_batches = int(
            session.scalar(
                select(func.count())
                .select_from(AnchorBatchRow)
                .where(AnchorBatchRow.status.in_(OPEN))
            )
            or 0
        )
    if report.open_batches:
        try:
            ledger.advance()
        except ChainError as exc:
            report.errors.append(f"advance: {exc}")
    return report


def _due(url: str, settings: Settings, now: datetime, force: bool) -> bool:
    with db.session_scope(url) as session:
        count, oldest = session.execute(
            select(func.count(), func.min(AnchorLeafRow.created_at)).where(
                AnchorLeafRow.status == "pending"
            )
        ).one()
    if not count:
        return False
    if force or count >= settings.anchor_batch_size:
        return True
    oldest = oldest if oldest.tzinfo else oldest.replace(tzinfo=UTC)  # SQLite drops the zone
    return bool(now - oldest >= timedelta(seconds=settings.anchor_interval_s))


def _cut_batch(url: str, max_leaves: int) -> int:
    """Put up to ``max_leaves`` pending leaves (oldest first) into a new batch."""
    with db.session_scope(url) as session:
        rows = session.execute(
            select(AnchorLeafRow.id, AnchorLeafRow.leaf_hash)
            .where(AnchorLeafRow.status == "pending")
            .order_by(AnchorLeafRow.id)
            .limit(max_leaves)
        ).all()
        hashes = [bytes.fromhex(h) for _, h in rows]
        tree = MerkleTree(hashes)
        batch = AnchorBatchRow(
            root="0x" + tree.root.hex(),
            leaf_count=len(rows),
            leaf_hashes=b"".join(hashes),
            status="pending",
            attempts=0,
            reorgs=0,
        )
        session.add(batch)
        session.flush()
        ids = [leaf_id for leaf_id, _ in rows]
        moved = 0
        for i in range(0, len(ids), 5000):
            result = session.execute(
                update(AnchorLeafRow)
                .where(AnchorLeafRow.id.in_(ids[i : i + 5000]), AnchorLeafRow.status == "pending")
                .values(batch_id=batch.id, status="batched")
            )
            moved += int(getattr(result, "rowcount", 0) or 0)
        if moved != len(ids):
            # Another consumer batched some of them meanwhile (the lock was bypassed): undo.
            raise _Refused(f"{len(ids) - moved} leaves were batched by someone else; retrying")
        log.info("batch %d: %d leaves, root %s", batch.id, len(rows), batch.root)
        return batch.id


def _step(
    url: str,
    settings: Settings,
    ledger: Web3Ledger,
    batch_id: int,
    now: datetime,
    report: CycleReport,
) -> None:
    with db.session_scope(url) as session:
        batch = session.get(AnchorBatchRow, batch_id)
        assert batch is not None
        due = batch.next_attempt_at
        waiting = due is not None and (due if due.tzinfo else due.replace(tzinfo=UTC)) > now
        if waiting and batch.last_error:
            return  # backing off after a failure: leave the node alone until then
        inclusion = ledger.inclusion(batch.tx_hash) if batch.tx_hash is not None else None
        if inclusion is not None and not inclusion.succeeded:
            # Cannot happen with this contract; sign anew rather than wait forever.
            batch.last_error = f"transaction {batch.tx_hash} reverted"
            batch.raw_tx = batch.tx_hash = None
            inclusion = None
        if inclusion is None:
            if batch.status == "included":
                _reorged(batch, ledger, report, "its transaction is gone")
                waiting = False
            if not waiting:  # sent a moment ago and not mined yet: give it time
                _send(session, batch, ledger, report, now)
            return
        if batch.status == "included" and inclusion.block_hash != batch.block_hash:
            _reorged(batch, ledger, report, f"its block is now {inclusion.block_hash}")
        if batch.status == "pending":
            log_entry = next((e for e in inclusion.logs if e.root == batch.root), None)
            block = ledger.block(inclusion.block_number)
            if log_entry is None or block is None or block.hash != inclusion.block_hash:
                return  # the node is mid-reorg; look again next cycle
            batch.status = "included"
            batch.block_number = inclusion.block_number
            batch.block_hash = inclusion.block_hash
            batch.log_index = log_entry.log_index
            batch.gas_used = inclusion.gas_used
            batch.anchored_at = datetime.fromtimestamp(block.timestamp, UTC)
            report.included += 1
        assert batch.block_number is not None
        confirmations = ledger.head() - batch.block_number + 1
        if confirmations < settings.anchor_confirmations:
            return
        # Re-check by block number, as a verifier will: the block still has this hash and
        # its logs hold this root.
        block = ledger.block(batch.block_number)
        logs = ledger.anchored_logs(batch.block_number)
        if block is None or block.hash != batch.block_hash:
            _reorged(batch, ledger, report, "its block was replaced")
            return
        if not any(e.root == batch.root and e.log_index == batch.log_index for e in logs):
            _reorged(batch, ledger, report, "its log is not in its block")
            return
        batch.status = "confirmed"
        batch.confirmed_at = now
        batch.last_error = None
        session.execute(
            update(AnchorLeafRow)
            .where(AnchorLeafRow.batch_id == batch.id)
            .values(status="confirmed")
        )
        report.confirmed += 1
        log.info("batch %d confirmed in block %d", batch.id, batch.block_number)


def _reorged(batch: AnchorBatchRow, ledger: Web3Ledger, report: CycleReport, why: str) -> None:
    log.warning("batch %d: reorg (%s); anchoring root %s again", batch.id, why, batch.root)
    batch.status = "pending"
    batch.block_number = batch.block_hash = batch.log_index = batch.anchored_at = None
    batch.reorgs += 1
    report.reorgs += 1
    ledger.reset_nonces()


def _send(
    session: Session,
    batch: AnchorBatchRow,
    ledger: Web3Ledger,
    report: CycleReport,
    now: datetime,
) -> None:
    if batch.raw_tx is None:
        _sign(session, batch, ledger)
    assert batch.raw_tx is not None
    if not ledger.broadcast(batch.raw_tx):
        # Its nonce went to another transaction (a reorg reordered ours): same root, new tx.
        _sign(session, batch, ledger)
        assert batch.raw_tx is not None
        if not ledger.broadcast(batch.raw_tx):
            raise _Refused(f"the node refused a fresh transaction {batch.tx_hash}")
    batch.attempts += 1
    batch.last_error = None
    # Rebroadcast (same transaction) only if it is still not mined by then.
    batch.next_attempt_at = now + timedelta(seconds=REBROADCAST_AFTER_S)
    report.sent += 1


def _sign(session: Session, batch: AnchorBatchRow, ledger: Web3Ledger) -> None:
    """Sign and store (committed) before anything is sent."""
    sent = ledger.sign_anchor(bytes.fromhex(batch.root[2:]), batch.leaf_count)
    batch.chain_id = ledger.chain_id
    batch.contract = ledger.contract
    batch.signer = ledger.signer
    batch.nonce = sent.nonce
    batch.tx_hash = sent.transaction_hash
    batch.raw_tx = sent.raw_transaction
    session.commit()


def _record_failure(
    url: str, settings: Settings, batch_id: int, now: datetime, exc: Exception
) -> None:
    with db.session_scope(url) as session:
        batch = session.get(AnchorBatchRow, batch_id)
        if batch is None:
            return
        batch.attempts += 1
        batch.last_error = str(exc)[:2000]
        delay = min(settings.anchor_max_backoff_s, 2.0**batch.attempts)
        batch.next_attempt_at = now + timedelta(seconds=delay)
    log.warning("batch %d: %s; retrying in %.0f s", batch_id, exc, delay)


def run_periodic(settings: Settings) -> dict[str, object]:
    """One cycle if this process gets the key's lock (the periodic task's body)."""
    from dataclasses import asdict

    if not _has_work(settings.resolved_database_url):
        return asdict(CycleReport())  # without opening the chain: most ticks end here
    ledger = open_ledger(settings)
    with single_writer(settings, ledger) as acquired:
        if not acquired:
            return {"skipped": "another consumer holds the anchoring lock"}
        return asdict(run_cycle(settings, ledger))


def _has_work(url: str) -> bool:
    with db.session_scope(url) as session:
        pending = session.scalar(
            select(AnchorLeafRow.id).where(AnchorLeafRow.status == "pending").limit(1)
        )
        open_batch = session.scalar(
            select(AnchorBatchRow.id).where(AnchorBatchRow.status.in_(OPEN)).limit(1)
        )
    return pending is not None or open_batch is not None


def anchor_now(settings: Settings, *, timeout_s: float = 120.0) -> CycleReport:
    """Anchor everything pending now and wait until every open batch is confirmed (the
    embedded chain mines as it goes; a real chain takes its block time)."""
    import time

    ledger = open_ledger(settings)
    total = CycleReport()
    deadline = time.monotonic() + timeout_s
    force = True
    with single_writer(settings, ledger, wait_s=min(timeout_s, 60.0)) as acquired:
        if not acquired:
            raise Unavailable("another anchoring job holds the lock for this key; try again")
        while True:
            report = run_cycle(settings, ledger, force=force)
            force = False
            for name in ("batches_cut", "sent", "included", "confirmed", "reorgs"):
                setattr(total, name, getattr(total, name) + getattr(report, name))
            total.errors.extend(report.errors)
            total.open_batches = report.open_batches
            if not report.open_batches:
                return total
            if time.monotonic() > deadline:
                raise Unavailable(
                    f"{report.open_batches} batches not confirmed within {timeout_s:g} s"
                    + (f": {report.errors[-1]}" if report.errors else "")
                )
            if report.errors or settings.anchor_backend == "rpc":
                time.sleep(1.0)
