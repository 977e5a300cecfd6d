"""Banks of known content: create, add, remove, list, export and import entries (database side)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from moderation.errors import Conflict, InvalidInput, NotFound
from moderation.storage.tables import BankEntryRow, BankRow, ChangeRow

BANK_KINDS = ("image", "text", "video")
BANK_ACTIONS = ("block", "review", "track", "allow")
DEFAULT_THRESHOLD = {"image": 31, "text": 3, "video": 31}
SIGNAL_FOR_KIND = {"image": "pdq", "text": "simhash", "video": "pdq"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class BankInfo:
    id: int
    name: str
    kind: str
    action: str
    threshold: int
    owner: str | None
    description: str
    enabled: bool
    size: int

    def to_dict(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class EntryInput:
    """One hash to put into a bank (already validated for its signal type)."""

    value: str
    quality: int | None = None
    note: str = ""
    source: str = ""


def _info(row: BankRow, size: int) -> BankInfo:
    return BankInfo(
        row.id,
        row.name,
        row.kind,
        row.action,
        row.threshold,
        row.owner,
        row.description,
        row.enabled,
        size,
    )


def _log(session: Session, topic: str, ref_id: int, op: str) -> None:
    session.add(ChangeRow(topic=topic, ref_id=ref_id, op=op))


def validate_bank_fields(kind: str, action: str, threshold: int | None) -> int:
    if kind not in BANK_KINDS:
        raise InvalidInput(f"bank kind must be one of {', '.join(BANK_KINDS)}", field="kind")
    if action not in BANK_ACTIONS:
        raise InvalidInput(f"bank action must be one of {', '.join(BANK_ACTIONS)}", field="action")
    if threshold is None:
        return DEFAULT_THRESHOLD[kind]
    if not 0 <= threshold <= 128:
        raise InvalidInput("threshold must be between 0 and 128 bits", field="threshold")
    return threshold


def create_bank(
    session: Session,
    name: str,
    *,
    kind: str = "image",
    action: str = "block",
    threshold: int | None = None,
    owner: str | None = None,
    description: str = "",
) -> BankInfo:
    if not _NAME.match(name):
        raise InvalidInput(
            "bank name must be 1-128 letters, digits, '_', '.' or '-', starting with a letter "
            "or digit",
            field="name",
        )
    threshold = validate_bank_fields(kind, action, threshold)
    if session.scalar(select(BankRow.id).where(BankRow.name == name)) is not None:
        raise Conflict(f"bank {name!r} already exists", field="name")
    row = BankRow(
        name=name,
        kind=kind,
        action=action,
        threshold=threshold,
        owner=owner,
        description=description[:2000],
        enabled=True,
    )
    session.add(row)
    session.flush()
    _log(session, "bank", row.id, "add")
    return _info(row, 0)


def get_bank_row(session: Session, name: str) -> BankRow:
    row = session.scalar(select(BankRow).where(BankRow.name == name))
    if row is None:
        raise NotFound(f"no bank named {name!r}", field="bank")
    return row


def bank_size(session: Session, bank_id: int) -> int:
    return (
        session.scalar(
            select(func.count()).select_from(BankEntryRow).where(BankEntryRow.bank_id == bank_id)
        )
        or 0
    )


def get_bank(session: Session, name: str) -> BankInfo:
    row = get_bank_row(session, name)
    return _info(row, bank_size(session, row.id))


def list_banks(session: Session) -> list[BankInfo]:
    sizes = dict(
        session.execute(
            select(BankEntryRow.bank_id, func.count()).group_by(BankEntryRow.bank_id)
        ).all()
    )
    rows = session.scalars(select(BankRow).order_by(BankRow.name))
    return [_info(r, sizes.get(r.id, 0)) for r in rows]


def update_bank(
    session: Session,
    name: str,
    *,
    action: str | None = None,
    threshold: int | None = None,
    enabled: bool | None = None,
    description: str | None = None,
) -> BankInfo:
    row = get_bank_row(session, name)
    new_threshold = validate_bank_fields(
        row.kind, action or row.action, threshold if threshold is not None else row.threshold
    )
    row.action = action or row.action
    row.threshold = new_threshold
    if enabled is not None:
        row.enabled = enabled
    if description is not None:
        row.description = description[:2000]
    _log(session, "bank", row.id, "update")
    session.flush()
    return _info(row, bank_size(session, row.id))


def delete_bank(session: Session, name: str) -> None:
    row = get_bank_row(session, name)
    entry_ids = session.scalars(select(BankEntryRow.id).where(BankEntryRow.bank_id == row.id))
    for entry_id in entry_ids:
        _log(session, "bank_entry", entry_id, "remove")
    session.query(BankEntryRow).filter(BankEntryRow.bank_id == row.id).delete()
    _log(session, "bank", row.id, "remove")
    session.delete(row)


def add_entries(session: Session, bank: BankRow, entries: Iterable[EntryInput]) -> list[int]:
    """Add hashes to a bank; a hash already in the bank keeps its existing entry id."""
    signal = SIGNAL_FOR_KIND[bank.kind]
    batch = list(entries)
    existing: dict[str, int] = {}
    values = list({e.value for e in batch})
    for i in range(0, len(values), 500):
        chunk = values[i : i + 500]
        existing.update(
            session.execute(
                select(BankEntryRow.value, BankEntryRow.id).where(
                    BankEntryRow.bank_id == bank.id,
                    BankEntryRow.signal_type == signal,
                    BankEntryRow.value.in_(chunk),
                )
            ).all()
        )
    new_rows: dict[str, BankEntryRow] = {}
    for e in batch:
        if e.value not in existing and e.value not in new_rows:
            new_rows[e.value] = BankEntryRow(
                bank_id=bank.id,
                signal_type=signal,
                value=e.value,
                quality=e.quality,
                note=e.note[:2000],
                source=e.source[:2000],
            )
    session.add_all(new_rows.values())
    session.flush()
    for row in new_rows.values():
        existing[row.value] = row.id
        _log(session, "bank_entry", row.id, "add")
    return [existing[e.value] for e in batch]


def validate_pdq(value: str) -> str:
    """A PDQ hash as 64 lowercase hex characters, or InvalidInput."""
    from models.image_hash import validate_pdq_hex

    try:
        return validate_pdq_hex(value)
    except ValueError as exc:
        raise InvalidInput(f"not a PDQ hash: {exc}", field="pdq") from None


def list_entries(
    session: Session, bank: BankRow, *, after: int = 0, limit: int = 100
) -> list[BankEntryRow]:
    return list(
        session.scalars(
            select(BankEntryRow)
            .where(BankEntryRow.bank_id == bank.id, BankEntryRow.id > after)
            .order_by(BankEntryRow.id)
            .limit(limit)
        )
    )


def remove_entry(session: Session, bank: BankRow, entry_id: int) -> None:
    row = session.get(BankEntryRow, entry_id)
    if row is None or row.bank_id != bank.id:
        raise NotFound(f"bank {bank.name!r} has no entry {entry_id}", field="entry_id")
    session.delete(row)
    _log(session, "bank_entry", entry_id, "remove")


def iter_entries(session: Session, bank: BankRow, *, batch: int = 5000) -> Iterator[BankEntryRow]:
    """All entries of a bank in id order, fetched in batches (exports can be large)."""
    last = 0
    while True:
        rows = list(
            session.scalars(
                select(BankEntryRow)
                .where(BankEntryRow.bank_id == bank.id, BankEntryRow.id > last)
                .order_by(BankEntryRow.id)
                .limit(batch)
            )
        )
        if not rows:
            return
        yield from rows
        last = rows[-1].id
