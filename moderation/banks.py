"""Banks of known content: create, add, remove, list, export and import entries (database side)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, cast

from sqlalchemy import Table, func, insert, select, text
from sqlalchemy.orm import Session

from moderation.errors import Conflict, InputTooLarge, InvalidInput, NotFound
from moderation.storage.tables import BankEntryHashRow, BankEntryRow, BankRow, ChangeRow, utcnow

BANK_KINDS = ("image", "text", "video")
BANK_ACTIONS = ("block", "review", "track", "allow")
# Text: bits of a 64-bit SimHash (models.text_simhash). 5, not 3: no pair of unrelated texts
# within 6 bits among 7.3e8 pairs of real English and Chinese posts, while 5 instead of 3
# catches about twice as many copies with a changed word (BENCHMARKS.md, decisions.md).
# A video bank's threshold is the PDQ radius of one frame inside a time-aligned run; the
# alignment's chance test, not the radius, keeps unrelated videos apart, so it is far wider
# than an image bank's (chosen on `moderation bench video --seed 1`; see BENCHMARKS.md).
DEFAULT_THRESHOLD = {"image": 31, "text": 5, "video": 100}
SIGNAL_FOR_KIND = {"image": "pdq", "text": "simhash", "video": "pdq"}
# Largest threshold per kind: a distance cannot exceed the hash's width.
MAX_THRESHOLD = {"image": 128, "text": 64, "video": 128}
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


class ReferenceHash(Protocol):
    """What :func:`add_reference_hashes` needs of a models.image_robust.HashVariant."""

    @property
    def name(self) -> str: ...
    @property
    def pdq(self) -> str: ...


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
    if not 0 <= threshold <= MAX_THRESHOLD[kind]:
        raise InvalidInput(
            f"threshold must be between 0 and {MAX_THRESHOLD[kind]} bits for a {kind} bank",
            field="threshold",
        )
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
    entry_ids = list(
        session.scalars(
            select(BankEntryRow.id).where(BankEntryRow.bank_id == row.id).order_by(BankEntryRow.id)
        )
    )
    _log_many(session, "bank_entry", entry_ids, "remove", utcnow())
    session.query(BankEntryRow).filter(BankEntryRow.bank_id == row.id).delete()
    _log(session, "bank", row.id, "remove")
    session.delete(row)


@dataclass(frozen=True)
class AddResult:
    """Entry ids for each input in input order, and how many entries were created."""

    ids: list[int]
    added: int


# Core tables for the bulk paths (executemany without ORM objects).
_ENTRIES = cast(Table, BankEntryRow.__table__)
_CHANGES = cast(Table, ChangeRow.__table__)
# Rows per IN (...) lookup; well under SQLite's bound-parameter limit.
_LOOKUP_CHUNK = 500
# Rows per executemany call; SQLAlchemy sends them as multi-row INSERTs of up to 1000.
_INSERT_CHUNK = 10_000


def add_entries(session: Session, bank: BankRow, entries: Iterable[EntryInput]) -> list[int]:
    """Add hashes to a bank; a hash already in the bank keeps its existing entry id.

    Returns one entry id per input, in input order.
    """
    return import_entries(session, bank, entries).ids


def import_entries(session: Session, bank: BankRow, entries: Iterable[EntryInput]) -> AddResult:
    """:func:`add_entries` for any number of entries, in bulk.

    New entries are inserted with multi-row INSERT ... RETURNING, and each gets its
    ``changes`` row (topic ``bank_entry``, op ``add``, in id order) in the same transaction,
    which is what workers replay. Duplicates within ``entries`` are added once (the first
    one's quality and note win).
    """
    signal = SIGNAL_FOR_KIND[bank.kind]
    batch = list(entries)
    existing = _existing_ids(session, bank, signal, {e.value for e in batch})
    fresh: dict[str, EntryInput] = {}
    for e in batch:
        if e.value not in existing and e.value not in fresh:
            fresh[e.value] = e
    if fresh:
        now = utcnow()
        insert_chunk = (
            _insert_entries_pg
            if session.get_bind().dialect.name == "postgresql"
            else _insert_entries_many
        )
        new = list(fresh.values())
        for i in range(0, len(new), _INSERT_CHUNK):
            created = insert_chunk(session, bank.id, signal, new[i : i + _INSERT_CHUNK], now)
            existing.update((value, entry_id) for entry_id, value in created)
            new_ids = sorted(entry_id for entry_id, _ in created)
            _log_many(session, "bank_entry", new_ids, "add", now)
    return AddResult([existing[e.value] for e in batch], len(fresh))


def _insert_entries_many(
    session: Session, bank_id: int, signal: str, entries: list[EntryInput], now: datetime
) -> list[tuple[int, str]]:
    """(id, value) of the inserted rows: executemany, sent as multi-row INSERT ... RETURNING."""
    rows = [
        {
            "bank_id": bank_id,
            "signal_type": signal,
            "value": e.value,
            "quality": e.quality,
            "note": e.note[:2000],
            "source": e.source[:2000],
            "created_at": now,
        }
        for e in entries
    ]
    returning = insert(_ENTRIES).returning(_ENTRIES.c.id, _ENTRIES.c.value)
    return [(int(i), str(v)) for i, v in session.execute(returning, rows)]


# PostgreSQL: one statement over arrays. psycopg parses every placeholder of a multi-row
# VALUES list in Python (about 50 us a row measured here), so arrays are several times
# faster. ORDER BY the ordinality hands out ids (and change seqs) in input order.
_PG_INSERT_ENTRIES = text(
    """
    INSERT INTO bank_entries (bank_id, signal_type, value, quality, note, source, created_at)
    SELECT :bank_id, :signal, t.value, t.quality, t.note, t.source, :now
    FROM unnest(
        CAST(:values AS text[]), CAST(:qualities AS integer[]),
        CAST(:notes AS text[]), CAST(:sources AS text[])
    ) WITH ORDINALITY AS t(value, quality, note, source, n)
    ORDER BY t.n
    RETURNING id, value
    """
)
_PG_INSERT_CHANGES = text(
    """
    INSERT INTO changes (topic, ref_id, op, created_at)
    SELECT :topic, t.ref_id, :op, :at
    FROM unnest(CAST(:ref_ids AS bigint[])) WITH ORDINALITY AS t(ref_id, n)
    ORDER BY t.n
    """
)


def _insert_entries_pg(
    session: Session, bank_id: int, signal: str, entries: list[EntryInput], now: datetime
) -> list[tuple[int, str]]:
    result = session.execute(
        _PG_INSERT_ENTRIES,
        {
            "bank_id": bank_id,
            "signal": signal,
            "now": now,
            "values": [e.value for e in entries],
            "qualities": [e.quality for e in entries],
            "notes": [e.note[:2000] for e in entries],
            "sources": [e.source[:2000] for e in entries],
        },
    )
    return [(int(i), str(v)) for i, v in result]


def _existing_ids(session: Session, bank: BankRow, signal: str, values: set[str]) -> dict[str, int]:
    if (
        not values
        or session.scalar(select(BankEntryRow.id).where(BankEntryRow.bank_id == bank.id).limit(1))
        is None
    ):
        return {}  # an empty bank (the usual import target) needs no lookups
    found: dict[str, int] = {}
    ordered = sorted(values)
    postgres = session.get_bind().dialect.name == "postgresql"
    step = _PG_LOOKUP_CHUNK if postgres else _LOOKUP_CHUNK
    for i in range(0, len(ordered), step):
        chunk = ordered[i : i + step]
        rows = (
            session.execute(_PG_LOOKUP, {"bank_id": bank.id, "signal": signal, "values": chunk})
            if postgres
            else session.execute(
                select(BankEntryRow.value, BankEntryRow.id).where(
                    BankEntryRow.bank_id == bank.id,
                    BankEntryRow.signal_type == signal,
                    BankEntryRow.value.in_(chunk),
                )
            )
        )
        for value, entry_id in rows:
            found.setdefault(value, entry_id)
    return found


# PostgreSQL: an IN list of bound parameters is compared row by row (1 s a query against
# 100,000 fresh rows whose statistics are not yet analysed); a join on an array is not.
_PG_LOOKUP_CHUNK = 10_000
_PG_LOOKUP = text(
    """
    SELECT e.value, e.id
    FROM unnest(CAST(:values AS text[])) AS v(value)
    JOIN bank_entries AS e
      ON e.bank_id = :bank_id AND e.signal_type = :signal AND e.value = v.value
    """
)


def _log_many(session: Session, topic: str, ref_ids: list[int], op: str, at: datetime) -> None:
    if not ref_ids:
        return
    if session.get_bind().dialect.name == "postgresql":
        # Workers read the log as "seq > the last seq I saw". PostgreSQL hands out sequence
        # values at insert time, so a long transaction (a bulk import) could commit its seqs
        # after a later, shorter one had committed higher ones, and a worker polling between
        # the two would skip them for good. Holding the table's EXCLUSIVE lock (readers still
        # read) from here to commit means every seq allocated before ours is committed first
        # and none after ours commits before ours.
        session.execute(text("LOCK TABLE changes IN EXCLUSIVE MODE"))
        session.execute(
            _PG_INSERT_CHANGES, {"topic": topic, "ref_ids": ref_ids, "op": op, "at": at}
        )
        return
    session.execute(
        insert(_CHANGES),
        [{"topic": topic, "ref_id": ref_id, "op": op, "created_at": at} for ref_id in ref_ids],
    )


def import_hash_list(
    session: Session,
    name: str,
    text: str,
    *,
    fmt: str | None,
    skip_bad: bool,
    source: str,
    actor: str,
    max_errors: int | None = None,
) -> dict[str, object]:
    """Parse a hash list (moderation.hashlist) into bank ``name``, audit it, and report."""
    from moderation import audit, hashlist

    bank = get_bank_row(session, name)
    parsed = hashlist.parse(
        text,
        fmt,
        validate_signal_for(bank),
        SIGNAL_FOR_KIND[bank.kind],
        skip_bad=skip_bad,
        default_source=source,
    )
    result = import_entries(session, bank, parsed.entries)
    audit.record(
        session,
        actor,
        "bank.import",
        "bank",
        name,
        count=len(result.ids),
        added=result.added,
        skipped=parsed.bad_lines,
    )
    return {
        "bank": name,
        "format": parsed.format,
        "imported": len(result.ids),
        "distinct": len(set(result.ids)),
        "added": result.added,
        "skipped": parsed.bad_lines,
        "errors": [e.to_dict() for e in parsed.errors[:max_errors]],
    }


def add_reference_hashes(session: Session, entry_id: int, variants: Iterable[ReferenceHash]) -> int:
    """Store an entry's extra reference hashes (models.image_robust.reference_variants).

    Call it in the transaction that added the entry, so a worker replaying the entry's
    change log row sees them too. An entry that already has some keeps them (the same
    image added twice). Returns how many were stored.
    """
    existing = session.scalar(
        select(func.count())
        .select_from(BankEntryHashRow)
        .where(BankEntryHashRow.entry_id == entry_id)
    )
    if existing:
        return 0
    rows = [{"entry_id": entry_id, "name": v.name, "value": validate_pdq(v.pdq)} for v in variants]
    if rows:
        session.execute(insert(BankEntryHashRow), rows)
    return len(rows)


def validate_pdq(value: str) -> str:
    """A PDQ hash as 64 lowercase hex characters, or InvalidInput."""
    from models.image_hash import validate_pdq_hex

    try:
        return validate_pdq_hex(value)
    except ValueError as exc:
        raise InvalidInput(f"not a PDQ hash: {exc}", field="pdq") from None


def validate_simhash(value: str) -> str:
    """A text SimHash as 16 lowercase hex characters, or InvalidInput."""
    from models.text_simhash import validate_simhash_hex

    try:
        return validate_simhash_hex(value)
    except ValueError as exc:
        raise InvalidInput(f"not a simhash: {exc}", field="simhash") from None


def simhash_of_text(text: str, max_chars: int) -> str:
    """The SimHash a text bank stores for ``text`` (the same function items are matched
    with); InputTooLarge over ``max_chars``, InvalidInput when too short to have one."""
    from models.text_simhash import MIN_CONTENT_CHARS, simhash_content, simhash_of_content

    if len(text) > max_chars:
        raise InputTooLarge(
            f"text has {len(text)} characters, over the limit of {max_chars}", field="text"
        )
    if "\x00" in text:
        raise InvalidInput("text contains a NUL character", field="text")
    content = simhash_content(text)
    value = simhash_of_content(content)
    if value is None:
        raise InvalidInput(
            f"text has {len(content)} letters or digits after normalisation; a text bank "
            f"entry needs at least {MIN_CONTENT_CHARS} (shorter texts are for keyword lists)",
            field="text",
        )
    return value


def check_entry_signal(bank: BankRow, signal: str) -> None:
    """InvalidInput unless ``bank`` holds ``signal`` entries (pdq for image and video banks,
    simhash for text banks)."""
    held = SIGNAL_FOR_KIND[bank.kind]
    if signal != held:
        what = (
            "a text ('text') or a SimHash ('simhash')"
            if held == "simhash"
            else ("an image ('data_b64', 'uri') or a PDQ hash ('pdq')")
        )
        raise InvalidInput(
            f"bank {bank.name!r} is a {bank.kind} bank and holds {held} signals: give {what}",
            field="bank",
        )


_VALIDATORS: dict[str, Callable[[str], str]] = {"pdq": validate_pdq, "simhash": validate_simhash}


def validate_signal_for(bank: BankRow) -> Callable[[str], str]:
    """The validator for the signal type ``bank`` holds, for hash-list import: PDQ (64 hex
    digits) for image and video banks, SimHash (16 hex digits) for text banks."""
    return _VALIDATORS[SIGNAL_FOR_KIND[bank.kind]]


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


def iter_export_rows(
    session: Session, bank: BankRow, *, batch: int = 10_000
) -> Iterator[tuple[str, str, int | None, str]]:
    """(signal_type, value, quality, note) of every entry in id order, for hash-list export.

    Reads only those columns, in keyset-paginated batches, so exporting millions of entries
    streams in constant memory.
    """
    last = 0
    while True:
        rows = session.execute(
            select(
                BankEntryRow.id,
                BankEntryRow.signal_type,
                BankEntryRow.value,
                BankEntryRow.quality,
                BankEntryRow.note,
            )
            .where(BankEntryRow.bank_id == bank.id, BankEntryRow.id > last)
            .order_by(BankEntryRow.id)
            .limit(batch)
        ).all()
        if not rows:
            return
        for _, signal_type, value, quality, note in rows:
            yield signal_type, value, quality, note or ""
        last = rows[-1][0]
