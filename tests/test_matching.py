"""BankMatcher on a real database: per-bank radii, batched queries, change-log replay and
index snapshots (each test has its own SQLite file, so sequence numbers are its own)."""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from sqlalchemy import select, text

from moderation import banks
from moderation.banks import EntryInput
from moderation.matching import BankMatcher
from moderation.policy import BankHit
from moderation.settings import Settings
from moderation.storage import db
from moderation.storage.db import session_scope
from moderation.storage.tables import BankEntryRow, BankRow, Base


@pytest.fixture()
def url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'matching.db'}"
    db.migrate(url)
    return url


def hexof(n: int) -> str:
    return f"{n:064x}"


def near(base: int, d: int, rng: random.Random) -> int:
    """``base`` with exactly ``d`` distinct bits flipped."""
    for bit in rng.sample(range(256), d):
        base ^= 1 << bit
    return base


def make_bank(url: str, name: str, values: Sequence[int], **fields: object) -> list[int]:
    with session_scope(url) as s:
        banks.create_bank(s, name, **fields)  # type: ignore[arg-type]
        row = banks.get_bank_row(s, name)
        return banks.add_entries(s, row, [EntryInput(hexof(v)) for v in values])


def oracle(
    url: str,
    values: Sequence[str],
    *,
    review_band: int = 0,
    bank_names: set[str] | None = None,
    media_index: int = 0,
) -> list[BankHit]:
    """Brute force over the database: the hits match_pdq(_many) must return."""
    with session_scope(url) as s:
        bank_rows = {b.id: b for b in s.scalars(select(BankRow))}
        entries = s.execute(
            select(BankEntryRow.id, BankEntryRow.bank_id, BankEntryRow.value).where(
                BankEntryRow.signal_type == "pdq"
            )
        ).all()
    hits = []
    for entry_id, bank_id, value in entries:
        b = bank_rows[bank_id]
        if not b.enabled or b.kind not in ("image", "video"):
            continue
        if bank_names is not None and b.name not in bank_names:
            continue
        d = min((int(value, 16) ^ int(v, 16)).bit_count() for v in values)
        if d <= b.threshold + (review_band if b.action == "block" else 0):
            hits.append(
                BankHit(b.name, entry_id, d, b.threshold, b.action, b.owner, media_index)  # type: ignore[arg-type]
            )
    return sorted(hits, key=lambda h: (h.distance, h.entry_id))


def loaded(url: str, snapshot_dir: Path | None = None, **kw: int) -> BankMatcher:
    m = BankMatcher()
    with session_scope(url) as s:
        m.load(s, snapshot_dir, **kw)
    return m


def refreshed(m: BankMatcher, url: str) -> set[str]:
    with session_scope(url) as s:
        return m.refresh(s)


def populate(url: str, seed: int = 1) -> tuple[int, random.Random]:
    """Banks of every action around one anchor, at distances 0..40, plus random entries."""
    rng = random.Random(seed)
    anchor = rng.getrandbits(256)
    spread = [near(anchor, d, rng) for d in range(0, 41, 2)]
    noise = [rng.getrandbits(256) for _ in range(300)]
    make_bank(url, "block", spread + noise, action="block", threshold=10)
    make_bank(url, "review", spread[::2], action="review", threshold=20)
    make_bank(url, "track", spread[1::2], action="track", threshold=5, owner="studio")
    make_bank(url, "allow", spread[:3], action="allow", threshold=31)
    make_bank(url, "video", spread[5:9], kind="video", action="block", threshold=31)
    make_bank(url, "off", spread, action="block", threshold=31)
    with session_scope(url) as s:
        banks.update_bank(s, "off", enabled=False)
        banks.create_bank(s, "words", kind="text", action="block")
    return anchor, rng


def test_per_bank_thresholds_review_band_and_bank_names(url: str) -> None:
    anchor, rng = populate(url)
    m = loaded(url)
    queries = [hexof(anchor), hexof(near(anchor, 3, rng)), hexof(rng.getrandbits(256))]
    for q in queries:
        for band in (0, 4, 9):
            got = m.match_pdq(q, review_band=band, media_index=2)
            assert got == oracle(url, [q], review_band=band, media_index=2)
        for names in ({"block"}, {"track", "video"}, {"off"}, set()):
            assert m.match_pdq(q, review_band=3, bank_names=names) == oracle(
                url, [q], review_band=3, bank_names=names
            )
    hits = m.match_pdq(hexof(anchor), review_band=4)
    assert {h.bank for h in hits} == {"block", "review", "track", "allow", "video"}
    assert max(h.distance for h in hits if h.bank == "block") == 14  # threshold 10 + band 4
    assert max(h.distance for h in hits if h.bank == "track") == 2  # no band: 5 -> 2 (even d)
    assert all(h.owner == "studio" for h in hits if h.bank == "track")


def test_match_pdq_many_one_hit_per_entry_at_its_min_distance(url: str) -> None:
    anchor, rng = populate(url, seed=2)
    m = loaded(url)
    variants = [hexof(near(anchor, d, rng)) for d in (6, 1, 12)] + [hexof(rng.getrandbits(256))]
    got = m.match_pdq_many(variants, review_band=2, media_index=1)
    assert got == oracle(url, variants, review_band=2, media_index=1)
    keys = [(h.bank, h.entry_id) for h in got]
    assert len(keys) == len(set(keys))
    singles = [h for v in variants for h in m.match_pdq(v, review_band=2, media_index=1)]
    best: dict[tuple[str, int], BankHit] = {}
    for h in singles:
        if (h.bank, h.entry_id) not in best or h.distance < best[(h.bank, h.entry_id)].distance:
            best[(h.bank, h.entry_id)] = h
    assert got == sorted(best.values(), key=lambda h: (h.distance, h.entry_id))
    assert m.match_pdq_many([]) == []
    with pytest.raises(ValueError):
        m.match_pdq_many(["zz" * 32])


def test_empty_matcher_and_bad_hash(url: str) -> None:
    m = loaded(url)
    assert m.match_pdq(hexof(5)) == []
    make_bank(url, "b", [5], threshold=0)
    refreshed(m, url)
    assert [h.entry_id for h in m.match_pdq(hexof(5))] != []
    with pytest.raises(ValueError):
        m.match_pdq("00" * 31)


def test_refresh_replays_adds_removes_and_bank_changes(url: str) -> None:
    anchor, rng = populate(url, seed=3)
    m = loaded(url)
    q = [hexof(anchor), hexof(near(anchor, 4, rng))]
    assert m.match_pdq_many(q, review_band=3) == oracle(url, q, review_band=3)
    with session_scope(url) as s:
        block = banks.get_bank_row(s, "block")
        block_id = block.id
        added = banks.add_entries(s, block, [EntryInput(hexof(near(anchor, 1, rng)))])
        victim = next(e.id for e in banks.list_entries(s, block, limit=3))
        banks.remove_entry(s, block, victim)
        banks.update_bank(s, "review", threshold=8)
        banks.update_bank(s, "off", enabled=True)
        video_id = banks.get_bank_row(s, "video").id
        banks.delete_bank(s, "video")
        banks.create_bank(s, "late", action="review", threshold=31)
        banks.add_entries(s, banks.get_bank_row(s, "late"), [EntryInput(hexof(anchor))])
    topics = refreshed(m, url)
    assert topics == {"bank", "bank_entry"}
    assert video_id not in m.indexes
    assert added[0] in m.indexes[block_id] and victim not in m.indexes[block_id]
    assert m.match_pdq_many(q, review_band=3) == oracle(url, q, review_band=3)
    fresh = loaded(url)
    assert fresh.match_pdq_many(q, review_band=3) == m.match_pdq_many(q, review_band=3)
    assert refreshed(m, url) == set()


def test_replayed_add_of_an_entry_already_loaded_is_not_doubled(url: str) -> None:
    """load() reads the log head before the entries, so an entry added in between is both
    loaded and replayed; it must stay one row."""
    ids = make_bank(url, "b", [1, 2, 3], threshold=31)
    m = loaded(url)
    m.last_seq = 0  # replay the whole log over what is loaded
    refreshed(m, url)
    assert len(m.indexes[next(iter(m.indexes))]) == 3
    assert [h.entry_id for h in m.match_pdq(hexof(1))][:1] == [ids[0]]


# --- snapshots ----------------------------------------------------------------------------


def versions(snap: Path) -> list[Path]:
    return sorted(p for d in snap.glob("db-*") for p in d.glob("v-*"))


def churn(url: str, rng: random.Random, anchor: int) -> None:
    with session_scope(url) as s:
        block = banks.get_bank_row(s, "block")
        banks.add_entries(s, block, [EntryInput(hexof(near(anchor, 2, rng))) for _ in range(20)])
        for e in banks.list_entries(s, block, limit=5):
            banks.remove_entry(s, block, e.id)
        banks.delete_bank(s, "track")


def test_snapshot_written_on_full_load_then_used_on_restart(url: str, tmp_path: Path) -> None:
    anchor, rng = populate(url, seed=4)
    snap = tmp_path / "index"
    first = loaded(url, snap, snapshot_min_rows=0)
    assert first.load_info["source"] == "database"
    assert len(versions(snap)) == 1
    churn(url, rng, anchor)
    second = loaded(url, snap)
    assert second.load_info["source"] == "snapshot"
    assert second.load_info["replayed"] > 20
    q = [hexof(anchor), hexof(near(anchor, 3, rng))]
    assert second.match_pdq_many(q, review_band=5) == oracle(url, q, review_band=5)
    assert second.match_pdq_many(q, review_band=5) == loaded(url).match_pdq_many(q, review_band=5)
    assert second.last_seq == loaded(url).last_seq
    # Another snapshot at the newer seq; a third start replays nothing.
    with session_scope(url) as s:
        assert second.write_snapshot(s, snap) is not None
        assert second.write_snapshot(s, snap) is None  # that version exists already
    third = loaded(url, snap)
    assert third.load_info["source"] == "snapshot" and third.load_info["replayed"] == 0
    assert third.match_pdq_many(q, review_band=5) == oracle(url, q, review_band=5)


def test_small_banks_write_no_snapshot_and_none_disables(url: str, tmp_path: Path) -> None:
    populate(url, seed=5)
    loaded(url, tmp_path / "index")  # below SNAPSHOT_MIN_ROWS
    assert versions(tmp_path / "index") == []
    m = loaded(url, None, snapshot_min_rows=0)
    assert m.load_info["source"] == "database" and not (tmp_path / "index").exists()


def recreate(url: str) -> None:
    """The same URL, a new database: tables dropped (SQLite restarts their sequences)."""
    engine = db.get_engine(url)
    Base.metadata.drop_all(engine)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    db.migrate(url)


def test_snapshot_newer_than_the_database_log_is_ignored(url: str, tmp_path: Path) -> None:
    anchor, _ = populate(url, seed=6)
    snap = tmp_path / "index"
    loaded(url, snap, snapshot_min_rows=0)
    recreate(url)
    make_bank(url, "other", [anchor ^ 1], threshold=3)  # far fewer changes than before
    m = loaded(url, snap)
    assert m.load_info["source"] == "database"
    assert [h.bank for h in m.match_pdq(hexof(anchor))] == ["other"]
    # Kept (the database could be a replica catching up), but it blocks nothing: a snapshot
    # of this database is written and used next time.
    (ahead,) = versions(snap)
    loaded(url, snap, snapshot_min_rows=0)
    assert len(versions(snap)) == 2 and ahead in versions(snap)
    again = loaded(url, snap)
    assert again.load_info["source"] == "snapshot" and again.load_info["snapshot"] != str(ahead)
    assert [h.bank for h in again.match_pdq(hexof(anchor))] == ["other"]


def test_snapshot_of_a_different_history_is_ignored(url: str, tmp_path: Path) -> None:
    anchor, _ = populate(url, seed=7)
    snap = tmp_path / "index"
    first = loaded(url, snap, snapshot_min_rows=0)
    recreate(url)
    # Enough changes that the new log reaches the snapshot's seq, with other content.
    rng = random.Random(70)
    values = [rng.getrandbits(256) for _ in range(first.last_seq + 10)]
    make_bank(url, "other", values, threshold=31)
    m = loaded(url, snap)
    assert m.load_info["source"] == "database"
    assert m.match_pdq(hexof(values[0]))[0].bank == "other"
    assert all(h.bank == "other" for h in m.match_pdq(hexof(anchor), review_band=40))
    assert versions(snap) == []  # never usable again: deleted
    loaded(url, snap, snapshot_min_rows=0)
    assert loaded(url, snap).load_info["source"] == "snapshot"


@pytest.mark.parametrize("damage", ["truncate", "format", "database", "bank-missing"])
def test_damaged_snapshot_falls_back_to_the_database(
    url: str, tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    anchor, rng = populate(url, seed=8)
    snap = tmp_path / "index"
    loaded(url, snap, snapshot_min_rows=0)
    (version,) = versions(snap)
    meta_path = version / "matcher.json"
    meta = json.loads(meta_path.read_text())
    if damage == "truncate":
        prefix = next(version.glob("bank-*")) / "prefix.npy"
        prefix.write_bytes(prefix.read_bytes()[:-7])
    elif damage == "format":
        meta_path.write_text(json.dumps(dict(meta, format=99)))
    elif damage == "database":
        meta_path.write_text(json.dumps(dict(meta, database="0" * 16)))
    else:
        meta_path.write_text(json.dumps(dict(meta, banks=[*meta["banks"], 999])))
    with caplog.at_level(logging.WARNING, logger="moderation.matching"):
        m = loaded(url, snap)
    assert m.load_info["source"] == "database"
    assert "ignoring index snapshot" in caplog.text
    assert (version in versions(snap)) == (damage in ("format", "database"))
    q = [hexof(anchor), hexof(near(anchor, 5, rng))]
    assert m.match_pdq_many(q, review_band=2) == oracle(url, q, review_band=2)


def test_concurrent_snapshot_writers_leave_complete_versions(url: str, tmp_path: Path) -> None:
    anchor, _ = populate(url, seed=9)
    snap = tmp_path / "index"
    matchers = [loaded(url) for _ in range(4)]
    errors: list[BaseException] = []

    def write(m: BankMatcher) -> None:
        try:
            with session_scope(url) as s:
                m.write_snapshot(s, snap)
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(m,)) for m in matchers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert 1 <= len(versions(snap)) <= 4
    assert not [p for d in snap.glob("db-*") for p in d.iterdir() if p.name.startswith(".tmp")]
    m = loaded(url, snap)
    assert m.load_info["source"] == "snapshot"
    q = [hexof(anchor)]
    assert m.match_pdq_many(q, review_band=1) == oracle(url, q, review_band=1)


def test_settings_snapshot_dir_defaults_next_to_the_database(tmp_path: Path) -> None:
    assert Settings(var_dir=tmp_path).index_snapshot_dir == tmp_path / "index"
    assert Settings(var_dir=tmp_path, index_snapshot_dir="").index_snapshot_dir is None  # type: ignore[arg-type]
    assert Settings(var_dir=tmp_path, index_snapshot_dir=None).index_snapshot_dir is None
    assert Settings(index_snapshot_dir=tmp_path / "x").index_snapshot_dir == tmp_path / "x"


def test_fetch_entries_dense_runs_sparse_ids_and_missing(url: str) -> None:
    from moderation.matching import _fetch_entries

    dense = make_bank(url, "dense", list(range(1, 3001)), threshold=31)
    with session_scope(url) as s:
        banks.create_bank(s, "words", kind="text", action="block")
        words = banks.add_entries(s, banks.get_bank_row(s, "words"), [EntryInput("a" * 16)])
    sparse = [dense[0], dense[1500], dense[-1], words[0], 10**9]
    with session_scope(url) as s:
        got = _fetch_entries(s, [*dense[10:2010], *dense[10:20]])
        assert sorted(got) == sorted(dense[10:2010])
        assert got[dense[10]][2] == hexof(11)
        got = _fetch_entries(s, sparse)
        # Text (SimHash) entries are matched too; an unknown id is not there.
        assert sorted(got) == [dense[0], dense[1500], dense[-1], words[0]]
        assert got[words[0]][2] == "a" * 16
        assert _fetch_entries(s, []) == {}


def test_replay_of_a_bulk_import_and_removals(url: str) -> None:
    rng = random.Random(11)
    anchor = rng.getrandbits(256)
    make_bank(url, "b", [anchor], threshold=31)
    m = loaded(url)
    values = [near(anchor, rng.randrange(0, 60), rng) for _ in range(12_000)]
    ids = make_bank(url, "bulk", values, threshold=31, action="review")
    with session_scope(url) as s:
        bulk = banks.get_bank_row(s, "bulk")
        for entry_id in ids[::97]:
            banks.remove_entry(s, bulk, entry_id)
    refreshed(m, url)
    q = [hexof(anchor)]
    assert m.match_pdq_many(q) == oracle(url, q)
    assert len(m.match_pdq_many(q)) > 100


def test_old_versions_are_pruned(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import moderation.matching as matching

    monkeypatch.setattr(matching, "SNAPSHOT_GRACE_S", -1.0)
    _, rng = populate(url, seed=12)
    snap = tmp_path / "index"
    written = []
    for _ in range(4):
        m = loaded(url)
        with session_scope(url) as s:
            written.append(m.write_snapshot(s, snap))
        make_bank(url, f"more-{len(written)}", [rng.getrandbits(256)])
    assert None not in written and len(versions(snap)) == 2
    assert written[-1] in versions(snap) and written[-2] in versions(snap)
    assert loaded(url, snap).load_info["source"] == "snapshot"


# --- text banks (64-bit SimHash) -------------------------------------------------------------


def hex16(n: int) -> str:
    return f"{n:016x}"


def near64(base: int, d: int, rng: random.Random) -> int:
    for bit in rng.sample(range(64), d):
        base ^= 1 << bit
    return base


def make_text_bank(url: str, name: str, values: Sequence[int], **fields: object) -> list[int]:
    with session_scope(url) as s:
        banks.create_bank(s, name, kind="text", **fields)  # type: ignore[arg-type]
        row = banks.get_bank_row(s, name)
        return banks.add_entries(s, row, [EntryInput(hex16(v)) for v in values])


def text_oracle(
    url: str, value: str, *, review_band: int = 0, bank_names: set[str] | None = None
) -> list[BankHit]:
    """Brute force over the database: the hits match_simhash must return."""
    with session_scope(url) as s:
        bank_rows = {b.id: b for b in s.scalars(select(BankRow))}
        entries = s.execute(
            select(BankEntryRow.id, BankEntryRow.bank_id, BankEntryRow.value).where(
                BankEntryRow.signal_type == "simhash"
            )
        ).all()
    hits = []
    for entry_id, bank_id, stored in entries:
        b = bank_rows[bank_id]
        if not b.enabled or b.kind != "text" or len(stored) != 16:
            continue
        if bank_names is not None and b.name not in bank_names:
            continue
        d = (int(stored, 16) ^ int(value, 16)).bit_count()
        if d <= b.threshold + (review_band if b.action == "block" else 0):
            hits.append(
                BankHit(
                    b.name,
                    entry_id,
                    d,
                    b.threshold,
                    b.action,
                    b.owner,
                    -1,
                    review_band=review_band,  # type: ignore[arg-type]
                )
            )
    return sorted(hits, key=lambda h: (h.distance, h.entry_id))


def populate_text(url: str, seed: int) -> tuple[int, random.Random]:
    """Text banks around one 64-bit anchor at distances 0..12, an image bank holding the
    same bits as a PDQ hash, and a text bank with a legacy PDQ value (stored before text
    banks were matched)."""
    rng = random.Random(seed)
    anchor = rng.getrandbits(64)
    spread = [near64(anchor, d, rng) for d in range(13)]
    noise = [rng.getrandbits(64) for _ in range(200)]
    make_text_bank(url, "spam", spread + noise, action="block", threshold=5)
    make_text_bank(url, "watch", spread[::3], action="track", threshold=8)
    make_text_bank(url, "ok-texts", spread[:2], action="allow", threshold=2)
    make_bank(url, "pictures", [anchor, anchor << 192], threshold=31)
    with session_scope(url) as s:
        banks.create_bank(s, "legacy", kind="text", threshold=64)
        legacy = banks.get_bank_row(s, "legacy")
        banks.add_entries(s, legacy, [EntryInput(hexof(anchor)), EntryInput(hex16(anchor))])
    return anchor, rng


def test_text_banks_get_64_bit_indexes_and_match_simhash(url: str) -> None:
    anchor, rng = populate_text(url, seed=21)
    m = loaded(url)
    with session_scope(url) as s:
        ids = {b.name: b.id for b in s.scalars(select(BankRow))}
    assert m.indexes[ids["spam"]].bits == 64 and m.indexes[ids["pictures"]].bits == 256
    assert len(m.indexes[ids["legacy"]]) == 1  # the 64-hex value is skipped, not a crash
    for q in (hex16(anchor), hex16(near64(anchor, 3, rng)), hex16(rng.getrandbits(64))):
        for band in (0, 2):
            assert m.match_simhash(q, review_band=band) == text_oracle(url, q, review_band=band)
        assert m.match_simhash(q, bank_names={"watch"}) == text_oracle(url, q, bank_names={"watch"})
    hits = m.match_simhash(hex16(anchor), review_band=2)
    assert {h.bank for h in hits} == {"spam", "watch", "ok-texts", "legacy"}
    assert max(h.distance for h in hits if h.bank == "spam") == 7  # threshold 5 + band 2
    assert all(h.media_index == -1 for h in hits)
    # Image queries never see text banks, and text queries never see image banks.
    assert {h.bank for h in m.match_pdq(hexof(anchor), review_band=8)} == {"pictures"}
    with pytest.raises(ValueError):
        m.match_simhash(hexof(anchor))


def test_text_entries_replay_and_survive_snapshots(url: str, tmp_path: Path) -> None:
    anchor, rng = populate_text(url, seed=22)
    snap = tmp_path / "index"
    m = loaded(url, snap, snapshot_min_rows=0)
    assert m.load_info["source"] == "database" and len(versions(snap)) == 1
    q = hex16(anchor)
    with session_scope(url) as s:
        spam = banks.get_bank_row(s, "spam")
        (added,) = banks.add_entries(s, spam, [EntryInput(hex16(near64(anchor, 1, rng)))])
        victim = banks.list_entries(s, spam, limit=1)[0].id
        banks.remove_entry(s, spam, victim)
        banks.update_bank(s, "watch", threshold=12)
        banks.create_bank(s, "late", kind="text", action="review")
        banks.add_entries(s, banks.get_bank_row(s, "late"), [EntryInput(q)])
    assert refreshed(m, url) == {"bank", "bank_entry"}
    got = m.match_simhash(q, review_band=2)
    assert got == text_oracle(url, q, review_band=2)
    assert added in {h.entry_id for h in got} and victim not in {h.entry_id for h in got}
    assert any(h.bank == "late" for h in got)
    restored = loaded(url, snap)  # the first snapshot plus the replayed changes
    assert restored.load_info["source"] == "snapshot" and restored.load_info["replayed"] > 0
    assert restored.match_simhash(q, review_band=2) == got
    with session_scope(url) as s:
        written = restored.write_snapshot(s, snap)
    assert written is not None
    spam_id = next(b.id for b in restored.banks.values() if b.name == "spam")
    header = json.loads((written / f"bank-{spam_id}" / "header.json").read_text())
    assert header["bits"] == 64
    assert loaded(url, snap).match_simhash(q, review_band=2) == got
