"""Tests for the database side of banks, API keys and keyword terms (real SQLite/PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from moderation import banks, keys, keywords_store
from moderation.banks import EntryInput
from moderation.errors import Conflict, InvalidInput, NotFound, Unauthorized
from moderation.storage.db import session_scope
from moderation.storage.tables import ApiKeyRow, BankEntryRow, ChangeRow, KeywordTermRow


def pdq(n: int) -> str:
    return f"{n:064x}"


def last_seq(url: str) -> int:
    with session_scope(url) as s:
        return s.scalar(select(func.max(ChangeRow.seq))) or 0


def changes(url: str, topic: str, ref_ids: list[int], since: int = 0) -> list[tuple[int, str]]:
    """Change-log rows for these ids, logged after ``since`` (the log is shared by all tests)."""
    with session_scope(url) as s:
        rows = s.execute(
            select(ChangeRow.ref_id, ChangeRow.op)
            .where(ChangeRow.topic == topic, ChangeRow.ref_id.in_(ref_ids), ChangeRow.seq > since)
            .order_by(ChangeRow.seq)
        )
        return [(int(r), op) for r, op in rows]


# --- banks --------------------------------------------------------------------------------


def test_create_get_list_update_delete(database_url: str, uid: str) -> None:
    since = last_seq(database_url)
    name = f"bank-{uid}"
    with session_scope(database_url) as s:
        info = banks.create_bank(
            s, name, kind="image", action="review", owner="ops", description="known bad"
        )
        assert (info.name, info.kind, info.action, info.threshold, info.owner, info.size) == (
            name,
            "image",
            "review",
            banks.DEFAULT_THRESHOLD["image"],
            "ops",
            0,
        )
        assert info.enabled is True
        bank_id = info.id

    with session_scope(database_url) as s:
        got = banks.get_bank(s, name)
        assert got == info
        assert name in [b.name for b in banks.list_banks(s)]
        names = [b.name for b in banks.list_banks(s)]
        assert names == sorted(names)

    with session_scope(database_url) as s:
        row = banks.get_bank_row(s, name)
        banks.add_entries(s, row, [EntryInput(pdq(1)), EntryInput(pdq(2))])
        updated = banks.update_bank(
            s, name, action="block", threshold=20, enabled=False, description="changed"
        )
        assert (
            updated.action,
            updated.threshold,
            updated.enabled,
            updated.description,
            updated.size,
        ) == ("block", 20, False, "changed", 2)

    with session_scope(database_url) as s:
        listed = {b.name: b for b in banks.list_banks(s)}[name]
        assert listed.size == 2
        assert listed.threshold == 20
        # An update with nothing but the threshold keeps the action.
        assert banks.update_bank(s, name, threshold=25).action == "block"

    with session_scope(database_url) as s:
        entry_ids = list(s.scalars(select(BankEntryRow.id).where(BankEntryRow.bank_id == bank_id)))
        banks.delete_bank(s, name)

    with session_scope(database_url) as s:
        with pytest.raises(NotFound) as exc:
            banks.get_bank(s, name)
        assert exc.value.field == "bank"
        assert name not in [b.name for b in banks.list_banks(s)]
        assert s.scalars(select(BankEntryRow).where(BankEntryRow.bank_id == bank_id)).all() == []
    assert [op for _, op in changes(database_url, "bank", [bank_id], since)] == [
        "add",
        "update",
        "update",
        "remove",
    ]
    entry_changes = changes(database_url, "bank_entry", entry_ids, since)
    assert sorted(r for r, op in entry_changes if op == "remove") == sorted(entry_ids)


def test_duplicate_bank_name_conflicts(database_url: str, uid: str) -> None:
    with session_scope(database_url) as s:
        banks.create_bank(s, f"dup-{uid}")
    with session_scope(database_url) as s, pytest.raises(Conflict) as exc:
        banks.create_bank(s, f"dup-{uid}", action="track")
    assert exc.value.field == "name"
    assert f"dup-{uid}" in exc.value.message


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "has space"}, "name"),
        ({"name": "-leading-dash"}, "name"),
        ({"name": "x" * 129}, "name"),
        ({"name": "ok", "kind": "audio"}, "kind"),
        ({"name": "ok", "action": "delete"}, "action"),
        ({"name": "ok", "threshold": -1}, "threshold"),
        ({"name": "ok", "threshold": 129}, "threshold"),
    ],
)
def test_invalid_bank_fields(
    database_url: str, uid: str, kwargs: dict[str, object], field: str
) -> None:
    kwargs = dict(kwargs)
    name = str(kwargs.pop("name"))
    if name == "ok":
        name = f"ok-{uid}"
    with session_scope(database_url) as s, pytest.raises(InvalidInput) as exc:
        banks.create_bank(s, name, **kwargs)  # type: ignore[arg-type]
    assert exc.value.field == field
    with session_scope(database_url) as s:
        assert name not in [b.name for b in banks.list_banks(s)]


def test_update_validates_fields(database_url: str, uid: str) -> None:
    name = f"upd-{uid}"
    with session_scope(database_url) as s:
        banks.create_bank(s, name)
    with session_scope(database_url) as s, pytest.raises(InvalidInput) as exc:
        banks.update_bank(s, name, action="nuke")
    assert exc.value.field == "action"
    with session_scope(database_url) as s, pytest.raises(InvalidInput) as exc:
        banks.update_bank(s, name, threshold=500)
    assert exc.value.field == "threshold"
    with session_scope(database_url) as s, pytest.raises(NotFound):
        banks.update_bank(s, f"missing-{uid}", action="block")
    with session_scope(database_url) as s:
        assert banks.get_bank(s, name).action == "block"


def test_add_entries_is_idempotent_per_value_and_logs_changes(database_url: str, uid: str) -> None:
    since = last_seq(database_url)
    name = f"idem-{uid}"
    with session_scope(database_url) as s:
        banks.create_bank(s, name)
        bank = banks.get_bank_row(s, name)
        ids = banks.add_entries(
            s,
            bank,
            [
                EntryInput(pdq(10), 90, "a", "tester"),
                EntryInput(pdq(11)),
                EntryInput(pdq(10), 50, "dup in batch"),
            ],
        )
        assert ids[0] == ids[2]
        assert ids[0] != ids[1]

    with session_scope(database_url) as s:
        bank = banks.get_bank_row(s, name)
        again = banks.add_entries(
            s, bank, [EntryInput(pdq(11)), EntryInput(pdq(10)), EntryInput(pdq(12))]
        )
        assert again[:2] == [ids[1], ids[0]]
        assert again[2] not in ids
        assert banks.get_bank(s, name).size == 3
        first = s.get(BankEntryRow, ids[0])
        assert first is not None
        assert (first.quality, first.note, first.source, first.signal_type) == (
            90,
            "a",
            "tester",
            "pdq",
        )

    all_ids = [ids[0], ids[1], again[2]]
    logged = changes(database_url, "bank_entry", all_ids, since)
    # Exactly one "add" per new entry: re-adding a known hash logs nothing.
    assert sorted(r for r, op in logged if op == "add") == sorted(all_ids)

    with session_scope(database_url) as s:
        bank = banks.get_bank_row(s, name)
        banks.remove_entry(s, bank, ids[1])
    with session_scope(database_url) as s:
        assert s.get(BankEntryRow, ids[1]) is None
        assert banks.get_bank(s, name).size == 2
    assert changes(database_url, "bank_entry", [ids[1]], since) == [
        (ids[1], "add"),
        (ids[1], "remove"),
    ]


def test_same_hash_in_two_banks_gets_two_entries(database_url: str, uid: str) -> None:
    with session_scope(database_url) as s:
        a = banks.get_bank_row(s, banks.create_bank(s, f"a-{uid}").name)
        b = banks.get_bank_row(s, banks.create_bank(s, f"b-{uid}").name)
        [ia] = banks.add_entries(s, a, [EntryInput(pdq(99))])
        [ib] = banks.add_entries(s, b, [EntryInput(pdq(99))])
        assert ia != ib


def test_remove_entry_of_another_bank_is_not_found(database_url: str, uid: str) -> None:
    since = last_seq(database_url)
    with session_scope(database_url) as s:
        mine = banks.get_bank_row(s, banks.create_bank(s, f"mine-{uid}").name)
        theirs = banks.get_bank_row(s, banks.create_bank(s, f"theirs-{uid}").name)
        [their_entry] = banks.add_entries(s, theirs, [EntryInput(pdq(7))])
    with session_scope(database_url) as s, pytest.raises(NotFound) as exc:
        banks.remove_entry(s, mine, their_entry)
    assert exc.value.field == "entry_id"
    with session_scope(database_url) as s, pytest.raises(NotFound):
        banks.remove_entry(s, mine, 10**12)
    with session_scope(database_url) as s:
        assert s.get(BankEntryRow, their_entry) is not None
    assert changes(database_url, "bank_entry", [their_entry], since) == [(their_entry, "add")]


def test_iter_entries_yields_all_in_id_order(database_url: str, uid: str) -> None:
    with session_scope(database_url) as s:
        bank = banks.get_bank_row(s, banks.create_bank(s, f"iter-{uid}").name)
        other = banks.get_bank_row(s, banks.create_bank(s, f"iter-other-{uid}").name)
        ids = banks.add_entries(s, bank, [EntryInput(pdq(1000 + i)) for i in range(7)])
        banks.add_entries(s, other, [EntryInput(pdq(5000))])
    with session_scope(database_url) as s:
        bank = banks.get_bank_row(s, f"iter-{uid}")
        rows = list(banks.iter_entries(s, bank, batch=3))
        assert [r.id for r in rows] == sorted(ids)
        assert [r.value for r in rows] == [pdq(1000 + i) for i in range(7)]
        page = banks.list_entries(s, bank, after=rows[2].id, limit=2)
        assert [r.id for r in page] == [rows[3].id, rows[4].id]


def test_removed_entry_ids_are_never_reused(
    database_url: str, uid: str, request: pytest.FixtureRequest
) -> None:
    """The change log names entries by id, so an id must never come back for another hash.

    On SQLite this needs AUTOINCREMENT: a plain INTEGER PRIMARY KEY reuses the newest id.
    """
    with session_scope(database_url) as s:
        bank = banks.get_bank_row(s, banks.create_bank(s, f"reuse-{uid}").name)
        [old] = banks.add_entries(s, bank, [EntryInput(pdq(31337))])
    with session_scope(database_url) as s:
        banks.remove_entry(s, banks.get_bank_row(s, f"reuse-{uid}"), old)
    with session_scope(database_url) as s:
        [new] = banks.add_entries(
            s, banks.get_bank_row(s, f"reuse-{uid}"), [EntryInput(pdq(31338))]
        )
    assert new != old


def test_get_missing_bank_is_not_found(database_url: str, uid: str) -> None:
    with session_scope(database_url) as s, pytest.raises(NotFound):
        banks.get_bank_row(s, f"nope-{uid}")
    with session_scope(database_url) as s, pytest.raises(NotFound):
        banks.delete_bank(s, f"nope-{uid}")


# --- API keys -----------------------------------------------------------------------------


def test_create_key_authenticates_to_its_role(database_url: str, uid: str) -> None:
    made = {}
    with session_scope(database_url) as s:
        for role in keys.ROLES:
            made[role] = keys.create_key(s, role, f"{role}-{uid}")
    with session_scope(database_url) as s:
        for role, (secret, principal) in made.items():
            assert secret.startswith("mod_")
            assert len(secret) >= 40
            who = keys.authenticate(s, secret)
            assert who == principal
            assert (who.role, who.name) == (role, f"{role}-{uid}")
    assert len({secret for secret, _ in made.values()}) == len(keys.ROLES)


def test_create_key_rejects_unknown_role(database_url: str) -> None:
    with session_scope(database_url) as s, pytest.raises(InvalidInput) as exc:
        keys.create_key(s, "superuser")
    assert exc.value.field == "role"


def test_wrong_and_revoked_keys_are_unauthorized(database_url: str, uid: str) -> None:
    with session_scope(database_url) as s:
        secret, principal = keys.create_key(s, "service", f"svc-{uid}")
    tampered = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    with session_scope(database_url) as s:
        for bad in (tampered, "mod_" + "x" * 43, "not-a-key", "", secret + "x" * 200):
            with pytest.raises(Unauthorized):
                keys.authenticate(s, bad)
        assert keys.authenticate(s, secret).key_id == principal.key_id
    with session_scope(database_url) as s:
        keys.revoke_key(s, principal.key_id)
    with session_scope(database_url) as s, pytest.raises(Unauthorized):
        keys.authenticate(s, secret)
    with session_scope(database_url) as s:
        listed = {k["id"]: k for k in keys.list_keys(s)}
        assert listed[principal.key_id]["revoked"] is True
        with pytest.raises(NotFound):
            keys.revoke_key(s, 10**9)


def test_stored_key_row_holds_no_plaintext(database_url: str, uid: str) -> None:
    with session_scope(database_url) as s:
        secret, principal = keys.create_key(s, "admin", f"adm-{uid}")
    with session_scope(database_url) as s:
        row = s.get(ApiKeyRow, principal.key_id)
        assert row is not None
        assert row.key_hash != secret
        values = [str(getattr(row, c.key)) for c in ApiKeyRow.__table__.columns]
        assert not any(secret in v for v in values)
        # The stored prefix is only a short lookup handle, not enough to authenticate.
        assert len(row.prefix) < len(secret) // 2
        listed = [k for k in keys.list_keys(s) if k["id"] == principal.key_id]
        assert listed and secret not in repr(listed)


# --- keyword terms ------------------------------------------------------------------------


def test_keyword_terms_add_remove(database_url: str, uid: str) -> None:
    since = last_seq(database_url)
    term = f"badword{uid}"
    with session_scope(database_url) as s:
        term_id = keywords_store.add_term(s, "spam", term, 0.7)
    with session_scope(database_url) as s:
        row = s.get(KeywordTermRow, term_id)
        assert row is not None
        assert (row.category, row.term, row.score) == ("spam", term, 0.7)
    with session_scope(database_url) as s, pytest.raises(Conflict) as exc:
        keywords_store.add_term(s, "spam", term)
    assert exc.value.field == "term"
    with session_scope(database_url) as s:
        # The same term in another category is a different entry.
        other_id = keywords_store.add_term(s, "offensive", term)
        assert other_id != term_id
        keywords_store.remove_term(s, term_id)
    with session_scope(database_url) as s:
        assert s.get(KeywordTermRow, term_id) is None
        with pytest.raises(NotFound) as exc2:
            keywords_store.remove_term(s, term_id)
        assert exc2.value.field == "term_id"
    assert changes(database_url, "keyword", [term_id], since) == [
        (term_id, "add"),
        (term_id, "remove"),
    ]


# --- bulk import and export (hash lists) -----------------------------------------------------


def test_import_entries_in_bulk_logs_one_add_per_new_entry_in_id_order(
    database_url: str, uid: str
) -> None:
    since = last_seq(database_url)
    name = f"bulk-{uid}"
    with session_scope(database_url) as s:
        bank = banks.get_bank_row(s, banks.create_bank(s, name).name)
        [kept] = banks.add_entries(s, bank, [EntryInput(pdq(7), 60, "first")])
    entries = [EntryInput(pdq(100 + i), i % 101, f"n{i}", "list.txt") for i in range(2500)]
    entries.insert(10, EntryInput(pdq(7), 99, "already there"))
    entries.append(EntryInput(pdq(100), 1, "duplicate within the list"))
    with session_scope(database_url) as s:
        result = banks.import_entries(s, banks.get_bank_row(s, name), entries)
    assert len(result.ids) == len(entries)
    assert result.added == 2500
    assert result.ids[10] == kept
    assert result.ids[-1] == result.ids[0]
    new_ids = [i for i in result.ids if i != kept][:2500]
    assert new_ids == sorted(new_ids)  # input order is id order
    logged = changes(database_url, "bank_entry", new_ids, since)
    assert logged == [(i, "add") for i in new_ids]
    with session_scope(database_url) as s:
        bank = banks.get_bank_row(s, name)
        row = s.get(BankEntryRow, result.ids[0])
        assert row is not None
        assert (row.value, row.quality, row.note, row.source) == (pdq(100), 0, "n0", "list.txt")
        old = s.get(BankEntryRow, kept)
        assert old is not None and (old.quality, old.note) == (60, "first")
        exported = list(banks.iter_export_rows(s, bank, batch=700))
    assert exported[0] == ("pdq", pdq(7), 60, "first")
    assert exported[1:] == [("pdq", pdq(100 + i), i % 101, f"n{i}") for i in range(2500)]


def test_import_entries_of_nothing(database_url: str, uid: str) -> None:
    with session_scope(database_url) as s:
        bank = banks.get_bank_row(s, banks.create_bank(s, f"none-{uid}").name)
        assert banks.import_entries(s, bank, []) == banks.AddResult([], 0)


def test_delete_bank_logs_one_remove_per_entry(database_url: str, uid: str) -> None:
    name = f"gone-{uid}"
    with session_scope(database_url) as s:
        bank = banks.get_bank_row(s, banks.create_bank(s, name).name)
        ids = banks.add_entries(s, bank, [EntryInput(pdq(50 + i)) for i in range(5)])
    since = last_seq(database_url)
    with session_scope(database_url) as s:
        banks.delete_bank(s, name)
    assert changes(database_url, "bank_entry", ids, since) == [(i, "remove") for i in ids]


def test_text_banks_take_simhash_lists_not_pdq(database_url: str, uid: str) -> None:
    with session_scope(database_url) as s:
        text_bank = banks.get_bank_row(s, banks.create_bank(s, f"t-{uid}", kind="text").name)
        image_bank = banks.get_bank_row(s, banks.create_bank(s, f"i-{uid}").name)
        assert banks.validate_signal_for(text_bank)("A" * 16) == "a" * 16
        with pytest.raises(InvalidInput, match="not a simhash"):
            banks.validate_signal_for(text_bank)("f" * 64)
        assert banks.validate_signal_for(image_bank)("F" * 64) == "f" * 64
        with pytest.raises(InvalidInput, match="not a PDQ hash"):
            banks.validate_signal_for(image_bank)("f" * 16)


@pytest.mark.timeout(120)
def test_100k_line_hash_list_round_trips_exactly(tmp_path: Path) -> None:
    """Export -> import into an empty bank -> export is byte-identical at 100,000 lines.

    Its own SQLite file, so the shared test database stays small. Speed is measured in
    BENCHMARKS.md ("Hash-list import"), not asserted here.
    """
    import random

    from moderation import hashlist
    from moderation.storage import db

    url = f"sqlite:///{tmp_path}/hashlist-100k.db"
    db.migrate(url)
    rng = random.Random(100_000)
    values = {rng.randbytes(32).hex() for _ in range(100_000)}
    assert len(values) == 100_000
    qualities = [rng.choice([None, *range(101)]) for _ in values]
    source = [EntryInput(v, q) for v, q in zip(sorted(values), qualities, strict=True)]
    with db.session_scope(url) as s:
        banks.create_bank(s, "src")
        banks.create_bank(s, "dst")
        banks.import_entries(s, banks.get_bank_row(s, "src"), source)

    def export(name: str, fmt: str) -> str:
        with db.session_scope(url) as s:
            rows = banks.iter_export_rows(s, banks.get_bank_row(s, name))
            return "".join(hashlist.format_lines(rows, fmt))

    first = export("src", "txt")
    assert first.count("\n") == 100_000
    parsed = hashlist.parse(first, None, banks.validate_pdq)
    assert (parsed.format, parsed.bad_lines, len(parsed.entries)) == ("txt", 0, 100_000)
    with db.session_scope(url) as s:
        result = banks.import_entries(s, banks.get_bank_row(s, "dst"), parsed.entries)
    assert result.added == 100_000
    assert export("dst", "txt") == first
    with db.session_scope(url) as s:
        dst = banks.get_bank_row(s, "dst").id
        logged = s.scalar(
            select(func.count()).where(
                ChangeRow.topic == "bank_entry",
                ChangeRow.op == "add",
                ChangeRow.ref_id.in_(select(BankEntryRow.id).where(BankEntryRow.bank_id == dst)),
            )
        )
    assert logged == 100_000


@pytest.mark.parametrize("fmt", ["txt", "csv", "jsonl", "hma"])
def test_every_format_round_trips_through_an_empty_bank(
    database_url: str, uid: str, fmt: str
) -> None:
    from moderation import hashlist

    notes = ["", "plain", 'comma, "quote"', "two\nlines", "儿童保护 — 已核实", "tab\there"]
    entries = [
        EntryInput(pdq(7_000 + i), None if i % 7 == 0 else i % 101, notes[i % len(notes)])
        for i in range(300)
    ]

    def export(name: str) -> str:
        with session_scope(database_url) as s:
            rows = banks.iter_export_rows(s, banks.get_bank_row(s, name))
            return "".join(hashlist.format_lines(rows, fmt))

    src, dst = f"rt-src-{fmt}-{uid}", f"rt-dst-{fmt}-{uid}"
    with session_scope(database_url) as s:
        banks.import_entries(s, banks.get_bank_row(s, banks.create_bank(s, src).name), entries)
        banks.create_bank(s, dst)
    first = export(src)
    parsed = hashlist.parse(first, None, banks.validate_pdq)
    with session_scope(database_url) as s:
        banks.import_entries(s, banks.get_bank_row(s, dst), parsed.entries)
    assert export(dst) == first
