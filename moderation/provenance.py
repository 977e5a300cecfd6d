"""Provenance leaves and receipts: register originality hashes, build receipts once anchored.

``register_leaf`` is the one entry point for works (issue #7) and accepted originals; the
anchoring job (``moderation.anchoring``) batches what it registers. Receipts are built from
the stored leaf and its batch: the proof is rebuilt from the batch's leaf hashes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, cast

from sqlalchemy import Table, func, insert, select
from sqlalchemy.orm import Session

from chain.leaf import Leaf, encode_new_leaf, format_time
from chain.merkle import MerkleTree
from chain.receipt import AnchorRecord, ProofRecord, Receipt
from moderation.errors import Conflict, InvalidInput, NotAnchoredYet, NotFound
from moderation.storage.tables import AnchorBatchRow, AnchorLeafRow

if TYPE_CHECKING:
    from moderation.settings import Settings

__all__ = [
    "LeafInput",
    "file_hashes",
    "leaf_by_subject",
    "receipt_for",
    "receipts_for_batch",
    "register_leaf",
    "register_leaves",
]


@dataclass(frozen=True)
class LeafInput:
    """Originality hashes of one work or item, as callers hand them in."""

    subject_id: str
    owner: str
    sha256: str
    perceptual: tuple[tuple[str, str], ...] = ()


def file_hashes(path: Path, settings: Settings) -> tuple[str, tuple[tuple[str, str], ...]]:
    """SHA-256 of a file's bytes (streamed), plus PDQ and pHash when it is an image this
    service decodes (within the image limits)."""
    from models.errors import SignalError
    from models.image_hash import hash_image_bytes
    from moderation.pipeline import image_limits_from

    try:
        if path.stat().st_size > settings.limits.max_media_bytes:
            digest = hashlib.sha256()  # too big to be an image here: stream it
            with path.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            return digest.hexdigest(), ()
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}", field="path") from None
    sha256 = hashlib.sha256(data).hexdigest()
    try:
        hashes = hash_image_bytes(data, image_limits_from(settings))
    except SignalError:
        return sha256, ()  # not an image: the SHA-256 alone
    return sha256, (("pdq", hashes.pdq), ("phash", hashes.phash))


def register_leaf(
    session: Session,
    *,
    subject_id: str,
    owner: str,
    sha256: str,
    perceptual: Iterable[tuple[str, str]] = (),
    at: datetime | None = None,
) -> int:
    """Queue one work's or item's hashes for anchoring; returns the leaf id. Registering
    the same subject again with the same SHA-256 returns the first leaf (who had it first)."""
    item = LeafInput(subject_id, owner, sha256.lower(), tuple(perceptual))
    return register_leaves(session, [item], at=at)[0]


def register_leaves(
    session: Session, items: Sequence[LeafInput], *, at: datetime | None = None
) -> list[int]:
    """``register_leaf`` for many at once (one INSERT): ids in the order given."""
    when = format_time(at or datetime.now(UTC))
    ids = [s.subject_id for s in items]
    if len(set(ids)) != len(ids):
        raise InvalidInput("a subject id appears twice in one registration", field="subject_id")
    by_subject = {i.subject_id: i for i in items}
    leaf_ids: dict[str, int] = {}
    for chunk in _chunks(ids, 2000):
        for row in session.execute(
            select(
                AnchorLeafRow.subject_id,
                AnchorLeafRow.id,
                AnchorLeafRow.sha256,
                AnchorLeafRow.owner,
            ).where(AnchorLeafRow.subject_id.in_(chunk))
        ):
            leaf_ids[row.subject_id] = row.id
            item = by_subject[row.subject_id]
            if (row.sha256, row.owner) != (item.sha256.lower(), item.owner):
                raise Conflict(
                    f"{row.subject_id!r} is registered already with other content or owner",
                    field="subject_id",
                )
    rows = []
    created = datetime.now(UTC)
    for item in items:
        if item.subject_id in leaf_ids:
            continue
        try:
            leaf = encode_new_leaf(
                id=item.subject_id,
                sha256=item.sha256,
                owner=item.owner,
                at=when,
                perceptual=item.perceptual,
            )
        except ValueError as exc:
            raise InvalidInput(f"{item.subject_id[:80]!r}: {exc}") from None
        rows.append(
            {
                "subject_id": item.subject_id,
                "owner": item.owner,
                "sha256": item.sha256.lower(),
                "preimage": leaf.preimage.decode(),
                "salt": leaf.salt,
                "leaf_hash": leaf.hash.hex(),
                "status": "pending",
                "created_at": created,
            }
        )
    if rows:
        # A plain executemany (no RETURNING: SQLite would then insert row by row).
        session.execute(insert(cast(Table, AnchorLeafRow.__table__)), rows)
        fresh = [str(r["subject_id"]) for r in rows]
        for chunk in _chunks(fresh, 2000):
            found = session.execute(
                select(AnchorLeafRow.subject_id, AnchorLeafRow.id).where(
                    AnchorLeafRow.subject_id.in_(chunk)
                )
            )
            leaf_ids.update((subject, leaf_id) for subject, leaf_id in found)
    return [leaf_ids[s] for s in ids]


def _chunks(values: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for i in range(0, len(values), size):
        yield values[i : i + size]


@lru_cache(maxsize=8)
def _tree(batch_id: int, root: str, leaf_hashes: bytes) -> MerkleTree:
    # Keyed by the root too: a cached tree can never answer for another batch's leaves.
    return MerkleTree([leaf_hashes[i : i + 32] for i in range(0, len(leaf_hashes), 32)])


def _receipt(leaf: AnchorLeafRow, index: int, batch: AnchorBatchRow, tree: MerkleTree) -> Receipt:
    assert batch.chain_id is not None and batch.contract and batch.tx_hash
    assert batch.block_number is not None and batch.block_hash and batch.anchored_at
    assert batch.log_index is not None
    proof = tree.proof(index)
    return Receipt(
        leaf=Leaf.model_validate_json(leaf.preimage),
        proof=ProofRecord(
            leaf_index=proof.leaf_index,
            tree_size=proof.tree_size,
            path=tuple("0x" + h.hex() for h in proof.path),
        ),
        root=batch.root,
        anchor=AnchorRecord(
            chain_id=batch.chain_id,
            contract=batch.contract,
            transaction_hash=batch.tx_hash,
            block_number=batch.block_number,
            block_hash=batch.block_hash,
            log_index=batch.log_index,
            anchored_at=format_time(_utc(batch.anchored_at)),
        ),
    )


def _utc(at: datetime) -> datetime:
    # SQLite hands back naive datetimes; they were stored in UTC.
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def leaf_by_subject(session: Session, subject_id: str) -> AnchorLeafRow:
    row = session.scalar(select(AnchorLeafRow).where(AnchorLeafRow.subject_id == subject_id))
    if row is None:
        raise NotFound(f"no provenance leaf for {subject_id!r}", field="id")
    return row


def receipt_for(session: Session, leaf: AnchorLeafRow) -> Receipt:
    """The receipt of a leaf whose batch is confirmed; NotAnchoredYet before that."""
    batch = session.get(AnchorBatchRow, leaf.batch_id) if leaf.batch_id is not None else None
    if batch is None or batch.status != "confirmed":
        status = batch.status if batch is not None else "pending"
        raise NotAnchoredYet(
            f"{leaf.subject_id!r} is not anchored yet (batch {status}); try again later",
            status=status,
        )
    index = session.scalar(
        select(func.count())
        .select_from(AnchorLeafRow)
        .where(AnchorLeafRow.batch_id == batch.id, AnchorLeafRow.id < leaf.id)
    )
    return _receipt(leaf, int(index or 0), batch, _tree(batch.id, batch.root, batch.leaf_hashes))


def receipts_for_batch(session: Session, batch: AnchorBatchRow) -> Iterable[Receipt]:
    """Every receipt of a confirmed batch, building its tree once."""
    tree = _tree(batch.id, batch.root, batch.leaf_hashes)
    leaves = session.scalars(
        select(AnchorLeafRow).where(AnchorLeafRow.batch_id == batch.id).order_by(AnchorLeafRow.id)
    )
    for index, leaf in enumerate(leaves):
        yield _receipt(leaf, index, batch, tree)
