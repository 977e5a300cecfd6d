"""In-memory bank matching held by each worker, kept current from the database change log."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from moderation.index import HammingIndex, pack_hashes
from moderation.policy import BankHit
from moderation.storage.tables import BankEntryRow, BankRow, ChangeRow

_CHUNK = 20_000


@dataclass(frozen=True)
class BankMeta:
    id: int
    name: str
    kind: str
    action: str
    threshold: int
    owner: str | None
    enabled: bool


class BankMatcher:
    """Exact Hamming search over every PDQ entry of every bank, with per-bank thresholds.

    One index for all banks: a query is one scan at the widest radius any bank
    needs, then each hit is filtered by its own bank's threshold.
    """

    def __init__(self) -> None:
        self.index = HammingIndex(bits=256)
        self.banks: dict[int, BankMeta] = {}
        self.entry_bank: dict[int, int] = {}
        self.last_seq = 0
        self.last_refresh = 0.0
        self._lock = threading.Lock()

    def load(self, session: Session) -> None:
        """Full load; changes made while loading are replayed by the next refresh."""
        with self._lock:
            self.last_seq = session.scalar(select(func.max(ChangeRow.seq))) or 0
            self._load_banks(session)
            self.index = HammingIndex(bits=256)
            self.entry_bank = {}
            last = 0
            while True:
                rows = session.execute(
                    select(BankEntryRow.id, BankEntryRow.bank_id, BankEntryRow.value)
                    .where(BankEntryRow.signal_type == "pdq", BankEntryRow.id > last)
                    .order_by(BankEntryRow.id)
                    .limit(_CHUNK)
                ).all()
                if not rows:
                    break
                # Bulk insert: one numpy copy per chunk instead of one call per entry.
                self.index.add_many(
                    [r[0] for r in rows], pack_hashes(bytes.fromhex(r[2]) for r in rows)
                )
                self.entry_bank.update((r[0], r[1]) for r in rows)
                last = rows[-1][0]
            self.last_refresh = time.monotonic()

    def _load_banks(self, session: Session) -> None:
        self.banks = {
            r.id: BankMeta(r.id, r.name, r.kind, r.action, r.threshold, r.owner, r.enabled)
            for r in session.scalars(select(BankRow))
        }

    def _add(self, entry_id: int, bank_id: int, value: str) -> None:
        if entry_id in self.entry_bank:
            return
        self.index.add(entry_id, bytes.fromhex(value))
        self.entry_bank[entry_id] = bank_id

    def refresh(self, session: Session) -> set[str]:
        """Apply changes logged since the last refresh; returns the topics that changed."""
        with self._lock:
            changes = session.execute(
                select(ChangeRow.seq, ChangeRow.topic, ChangeRow.ref_id, ChangeRow.op)
                .where(ChangeRow.seq > self.last_seq)
                .order_by(ChangeRow.seq)
            ).all()
            self.last_refresh = time.monotonic()
            if not changes:
                return set()
            if any(topic == "bank" for _, topic, _, _ in changes):
                self._load_banks(session)
            added = [ref for _, topic, ref, op in changes if topic == "bank_entry" and op == "add"]
            rows: dict[int, tuple[int, str]] = {}
            for i in range(0, len(added), 500):
                for entry_id, bank_id, value in session.execute(
                    select(BankEntryRow.id, BankEntryRow.bank_id, BankEntryRow.value).where(
                        BankEntryRow.id.in_(added[i : i + 500]),
                        BankEntryRow.signal_type == "pdq",
                    )
                ):
                    rows[entry_id] = (bank_id, value)
            # In log order, so an add after a remove of the same id ends present.
            for _, topic, ref, op in changes:
                if topic != "bank_entry":
                    continue
                if op == "add" and ref in rows:
                    self._add(ref, *rows[ref])
                elif op == "remove" and self.entry_bank.pop(ref, None) is not None:
                    self.index.remove(ref)
            self.last_seq = changes[-1][0]
            return {topic for _, topic, _, _ in changes}

    def match_pdq(
        self,
        value: str,
        *,
        review_band: int = 0,
        media_index: int = 0,
        bank_names: set[str] | None = None,
    ) -> list[BankHit]:
        """Hits within each enabled bank's threshold plus the review band."""
        active = [b for b in self.banks.values() if b.enabled and b.kind in ("image", "video")]
        if bank_names is not None:
            active = [b for b in active if b.name in bank_names]
        if not active or len(self.index) == 0:
            return []
        radius = max(b.threshold for b in active) + review_band
        allowed = {b.id for b in active}
        hits: list[BankHit] = []
        for entry_id, distance in self.index.search(bytes.fromhex(value), radius):
            bank = self.banks.get(self.entry_bank.get(entry_id, -1))
            if bank is None or bank.id not in allowed:
                continue
            band = review_band if bank.action == "block" else 0
            if distance <= bank.threshold + band:
                hits.append(
                    BankHit(
                        bank=bank.name,
                        entry_id=entry_id,
                        distance=distance,
                        threshold=bank.threshold,
                        action=bank.action,  # type: ignore[arg-type]
                        owner=bank.owner,
                        media_index=media_index,
                    )
                )
        return hits
