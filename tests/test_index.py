"""HammingIndex against a brute-force Python reference."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import numpy as np
import pytest

from moderation.index import MAX_ID, HammingIndex, SnapshotError, iter_shard_sizes, pack_hashes


def rand_hash(rng: random.Random, bits: int) -> bytes:
    return rng.getrandbits(bits).to_bytes(bits // 8, "big")


def flip(h: bytes, n: int, rng: random.Random) -> bytes:
    """``h`` with exactly ``n`` distinct bits flipped."""
    value = int.from_bytes(h, "big")
    for bit in rng.sample(range(len(h) * 8), n):
        value ^= 1 << bit
    return value.to_bytes(len(h), "big")


def brute(entries: dict[int, bytes], query: bytes, radius: int) -> list[tuple[int, int]]:
    q = int.from_bytes(query, "big")
    found = []
    for entry_id, h in entries.items():
        d = (int.from_bytes(h, "big") ^ q).bit_count()
        if d <= radius:
            found.append((entry_id, d))
    return sorted(found, key=lambda t: (t[1], t[0]))


def brute_rows(entries: dict[int, list[bytes]], query: bytes, radius: int) -> list[tuple[int, int]]:
    """Reference for ids with several rows: one result per id, at its smallest distance."""
    q = int.from_bytes(query, "big")
    found = []
    for entry_id, rows in entries.items():
        d = min((int.from_bytes(h, "big") ^ q).bit_count() for h in rows)
        if d <= radius:
            found.append((entry_id, d))
    return sorted(found, key=lambda t: (t[1], t[0]))


def populated(
    n: int, bits: int = 256, seed: int = 0
) -> tuple[HammingIndex, dict[int, bytes], random.Random]:
    """Random hashes plus planted neighbours at distances 0..40 of a few anchors."""
    rng = random.Random(seed)
    entries: dict[int, bytes] = {}
    for i in range(n):
        entries[i * 3 + 1] = rand_hash(rng, bits)
    anchors = list(entries.values())[:5]
    next_id = n * 3 + 10
    for anchor in anchors:
        for d in range(0, min(41, bits), 3):
            entries[next_id] = flip(anchor, d, rng)
            next_id += 1
    idx = HammingIndex(bits=bits)
    for entry_id, h in entries.items():
        idx.add(entry_id, h)
    return idx, entries, rng


@pytest.mark.parametrize("bits", [64, 128, 192, 256, 512])
def test_search_matches_brute_force(bits: int) -> None:
    idx, entries, rng = populated(2000, bits)
    assert len(idx) == len(entries)
    queries = [*list(entries.values())[:3], rand_hash(rng, bits)]
    for query in queries:
        for radius in (0, 1, 12, 31, bits // 4, bits // 2, bits - 1, bits):
            assert idx.search(query, radius) == brute(entries, query, radius), (bits, radius)


def test_crosses_scan_chunk_boundaries() -> None:
    idx, entries, _ = populated(40_000, 256, seed=3)
    for query in [*list(entries.values())[:2], list(entries.values())[-1]]:
        assert idx.search(query, 40) == brute(entries, query, 40)


def test_distance_exactly_radius_is_included() -> None:
    rng = random.Random(5)
    base = rand_hash(rng, 256)
    idx = HammingIndex()
    for d in range(0, 64):
        idx.add(d, flip(base, d, rng))
    for radius in (0, 1, 31, 32, 63):
        hits = idx.search(base, radius)
        assert [entry_id for entry_id, _ in hits] == list(range(radius + 1))
        assert hits[-1] == (radius, radius)


def test_complement_never_wraps_to_a_match() -> None:
    """Distance 256 must not alias to 0 in the packed byte-sum fast path."""
    rng = random.Random(6)
    h = rand_hash(rng, 256)
    complement = bytes(b ^ 0xFF for b in h)
    idx = HammingIndex()
    idx.add(1, complement)
    idx.add(2, h)
    for radius in (0, 31, 200, 254):
        assert idx.search(h, radius) == [(2, 0)]
    assert idx.search(h, 255) == [(2, 0)]
    assert idx.search(h, 256) == [(2, 0), (1, 256)]
    assert idx.search(h, 10_000) == [(2, 0), (1, 256)]


def test_results_sorted_by_distance_then_id() -> None:
    rng = random.Random(7)
    base = rand_hash(rng, 256)
    idx = HammingIndex()
    distances = {50: 1, 10: 2, 30: 1, 20: 2, 40: 2, 60: 6}
    for entry_id, d in distances.items():
        idx.add(entry_id, flip(base, d, rng))
    assert idx.search(base, 5) == [(30, 1), (50, 1), (10, 2), (20, 2), (40, 2)]


def test_random_add_remove_sequence_matches_reference() -> None:
    rng = random.Random(8)
    idx = HammingIndex()
    ref: dict[int, list[bytes]] = {}
    pool = [rand_hash(rng, 256) for _ in range(50)]
    for step in range(6000):
        op = rng.random()
        entry_id = rng.randrange(3000)
        if op < 0.6:
            h = flip(rng.choice(pool), rng.randrange(40), rng)
            idx.add(entry_id, h)
            ref.setdefault(entry_id, []).append(h)
        else:
            assert idx.remove(entry_id) == (entry_id in ref)
            ref.pop(entry_id, None)
        assert len(idx) == sum(len(v) for v in ref.values())
        if step % 500 == 0:
            q = rng.choice(pool)
            assert idx.search(q, 31) == brute_rows(ref, q, 31)
    for q in pool[:10]:
        assert idx.search(q, 31) == brute_rows(ref, q, 31)


def test_remove_missing_and_twice() -> None:
    idx = HammingIndex()
    assert idx.remove(1) is False
    idx.add(1, bytes(32))
    idx.add(2, bytes(32))
    assert idx.remove(1) is True
    assert idx.remove(1) is False
    assert 1 not in idx and 2 in idx
    assert idx.search(bytes(32), 0) == [(2, 0)]
    assert idx.remove(2) is True
    assert len(idx) == 0
    assert idx.search(bytes(32), 256) == []


def test_empty_index() -> None:
    idx = HammingIndex()
    assert len(idx) == 0
    assert idx.search(bytes(32), 31) == []
    assert idx.search_many(np.zeros((3, 32), np.uint8), 31) == [[], [], []]
    assert idx.search_many(np.zeros((0, 32), np.uint8), 31) == []


def test_an_id_may_have_several_rows_reported_once_at_min_distance() -> None:
    idx = HammingIndex()
    idx.add(7, bytes(32))
    idx.add(7, b"\xff" * 32)
    idx.add(7, b"\x01" + bytes(31))
    assert len(idx) == 3
    assert idx.search(b"\xff" * 32, 0) == [(7, 0)]
    assert idx.search(bytes(32), 31) == [(7, 0)]
    assert idx.search(b"\x03" + bytes(31), 31) == [(7, 1)]
    assert idx.remove(7) is True
    assert len(idx) == 0 and 7 not in idx
    assert idx.search(b"\xff" * 32, 256) == []


def test_sixty_four_bit_mode() -> None:
    idx = HammingIndex(bits=64)
    idx.add(1, (0).to_bytes(8, "big"))
    idx.add(2, (0b111).to_bytes(8, "big"))
    idx.add(3, (2**64 - 1).to_bytes(8, "big"))
    assert idx.search(bytes(8), 3) == [(1, 0), (2, 3)]
    assert idx.search(bytes(8), 64) == [(1, 0), (2, 3), (3, 64)]
    with pytest.raises(ValueError):
        idx.add(4, bytes(32))


def test_add_many_layouts_agree_with_add() -> None:
    rng = random.Random(9)
    hashes = [rand_hash(rng, 256) for _ in range(3000)]
    ids = list(range(100, 3100))
    one_by_one = HammingIndex()
    for i, h in zip(ids, hashes, strict=True):
        one_by_one.add(i, h)
    as_u8 = HammingIndex()
    as_u8.add_many(ids, np.frombuffer(b"".join(hashes), np.uint8).reshape(-1, 32))
    as_u64 = HammingIndex()
    as_u64.add_many(np.array(ids), pack_hashes(hashes))
    for q in [*hashes[:5], rand_hash(rng, 256)]:
        expected = one_by_one.search(q, 120)
        assert as_u8.search(q, 120) == expected
        assert as_u64.search(q, 120) == expected


def test_add_many_repeated_ids_are_rows_of_one_id() -> None:
    idx = HammingIndex()
    idx.add(1, bytes(32))
    batch = pack_hashes([b"\x01" + bytes(31), b"\x03" + bytes(31), b"\x07" + bytes(31)])
    idx.add_many([1, 2, 2], batch)
    assert len(idx) == 4
    assert idx.search(bytes(32), 3) == [(1, 0), (2, 2)]
    assert idx.remove_many([2, 99]) == 1
    assert idx.search(bytes(32), 3) == [(1, 0)]


def test_search_many_equals_search() -> None:
    idx, entries, rng = populated(5000, seed=10)
    queries = list(entries.values())[:20] + [rand_hash(rng, 256) for _ in range(17)]
    expected = [idx.search(q, 31) for q in queries]
    assert idx.search_many(pack_hashes(queries), 31) == expected
    assert idx.search_many(queries, 31) == expected
    u8 = np.frombuffer(b"".join(queries), np.uint8).reshape(-1, 32)
    assert idx.search_many(u8, 31) == expected


def test_grows_and_shrinks_without_losing_entries() -> None:
    rng = random.Random(11)
    idx = HammingIndex()
    ref = {i: rand_hash(rng, 256) for i in range(10_000)}
    for i, h in ref.items():
        idx.add(i, h)
    assert idx.capacity >= 10_000
    grown = idx.capacity
    for i in range(9_900):
        assert idx.remove(i)
        del ref[i]
    assert idx.capacity < grown
    q = next(iter(ref.values()))
    assert idx.search(q, 256) == brute(ref, q, 256)


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        HammingIndex(bits=100)
    with pytest.raises(ValueError):
        HammingIndex(bits=0)
    idx = HammingIndex()
    with pytest.raises(ValueError):
        idx.add(1, bytes(31))
    with pytest.raises(TypeError):
        idx.add(1, "00" * 32)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        idx.add(2**63, bytes(32))
    with pytest.raises(ValueError, match="uint32"):
        idx.add(MAX_ID + 1, bytes(32))
    with pytest.raises(ValueError):
        idx.add(-1, bytes(32))
    with pytest.raises(ValueError):
        idx.add_many([1, 2**70], np.zeros((2, 32), np.uint8))
    with pytest.raises(ValueError):
        idx.search(bytes(32), -1)
    with pytest.raises(ValueError):
        idx.search(bytes(8), 3)
    with pytest.raises(ValueError):
        idx.add_many([1, 2], np.zeros((3, 32), np.uint8))
    with pytest.raises(ValueError):
        idx.add_many([1], np.zeros((1, 8), np.uint64))
    with pytest.raises(ValueError):
        idx.add_many(np.array([1.5]), np.zeros((1, 32), np.uint8))
    with pytest.raises(ValueError):
        pack_hashes([bytes(31), bytes(33)])
    assert len(idx) == 0


def test_concurrent_adds_and_searches() -> None:
    idx = HammingIndex()
    rng = random.Random(12)
    base = rand_hash(rng, 256)
    errors: list[BaseException] = []

    def writer(offset: int) -> None:
        try:
            for i in range(2000):
                idx.add(
                    offset + i, base if i % 100 == 0 else rand_hash(random.Random(10**6 + i), 256)
                )
                if i % 3 == 0 and i and (i - 1) % 100:
                    assert idx.remove(offset + i - 1)
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    def reader() -> None:
        try:
            for _ in range(200):
                for entry_id, d in idx.search(base, 0):
                    assert d == 0 and entry_id % 100 == 0
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k * 10_000,)) for k in range(3)]
    threads.append(threading.Thread(target=reader))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(e for e, _ in idx.search(base, 0)) == [
        k * 10_000 + i for k in range(3) for i in range(0, 2000, 100)
    ]


# --- the 10 M layout: prefix scan, shards, tombstones, snapshots ---------------------------


def np_codes(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 32), dtype=np.uint8)


def np_flip(code: np.ndarray, d: int, rng: np.random.Generator) -> np.ndarray:
    """``code`` with exactly ``d`` distinct bits flipped."""
    bits = np.unpackbits(code)
    bits[rng.choice(bits.size, d, replace=False)] ^= 1
    return np.packbits(bits)


def np_brute(
    ids: np.ndarray, codes: np.ndarray, query: np.ndarray, radius: int
) -> list[tuple[int, int]]:
    """numpy reference: min distance per id over its rows, sorted by distance then id."""
    d = np.bitwise_count(codes ^ query).sum(axis=1)
    best: dict[int, int] = {}
    for i, dist in zip(ids[d <= radius].tolist(), d[d <= radius].tolist(), strict=True):
        best[i] = min(dist, best.get(i, dist))
    return sorted(best.items(), key=lambda t: (t[1], t[0]))


def planted(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` random rows (ids 1..n) plus, for 4 anchors, one row at every distance 0..40
    (so queries have hits at exactly the radius, one bit inside and one bit outside)."""
    rng = np.random.default_rng(seed)
    codes = np_codes(n, seed)
    anchors = codes[rng.choice(n, 4, replace=False)]
    extra = np.stack([np_flip(a, d, rng) for a in anchors for d in range(41)])
    ids = np.concatenate([np.arange(1, n + 1), np.arange(n + 1, n + 1 + len(extra))])
    return ids.astype(np.int64), np.concatenate([codes, extra]), anchors


def test_exact_against_numpy_brute_force_on_planted_neighbours() -> None:
    ids, codes, anchors = planted(200_000, seed=20)
    idx = HammingIndex(shard_rows=50_000)
    idx.add_many(ids, codes)
    assert len(idx) == len(ids)
    for anchor in anchors:
        for radius in (0, 1, 15, 30, 31, 32, 40):
            expected = np_brute(ids, codes, anchor, radius)
            assert idx.search(anchor.tobytes(), radius) == expected, radius
            # distance == radius included, radius + 1 excluded
            assert [d for _, d in expected].count(radius) >= 1
            assert all(d <= radius for _, d in expected)


def test_prefix_scan_never_drops_a_hit_whose_bits_differ_only_in_one_half() -> None:
    """All differing bits in the prefix, or all in the suffix: both must be found exactly."""
    base = np.zeros(32, np.uint8)
    idx = HammingIndex()
    prefix_only = base.copy()
    prefix_only[:4] = 0xFF  # 32 bits, all in the first 16 bytes
    suffix_only = base.copy()
    suffix_only[16:20] = 0xFF  # 32 bits, all in the last 16 bytes
    spread = base.copy()
    spread[[0, 31]] = 0x0F  # 8 bits, split
    idx.add_many([1, 2, 3], np.stack([prefix_only, suffix_only, spread]))
    assert idx.search(base.tobytes(), 31) == [(3, 8)]
    assert idx.search(base.tobytes(), 32) == [(3, 8), (1, 32), (2, 32)]
    assert idx.search(base.tobytes(), 200) == [(3, 8), (1, 32), (2, 32)]


def test_search_many_and_union_equal_per_query_search() -> None:
    ids, codes, anchors = planted(20_000, seed=21)
    idx = HammingIndex(shard_rows=3_000)
    idx.add_many(ids, codes)
    rng = np.random.default_rng(1)
    queries = np.concatenate([anchors, np.stack([np_flip(anchors[0], 5, rng)]), codes[:3]])
    per_query = [idx.search(q.tobytes(), 31) for q in queries]
    assert idx.search_many(queries, 31) == per_query
    best: dict[int, int] = {}
    for hits in per_query:
        for entry_id, d in hits:
            best[entry_id] = min(d, best.get(entry_id, d))
    assert idx.search_union(queries, 31) == sorted(best.items(), key=lambda t: (t[1], t[0]))
    assert idx.search_union(queries[:0], 31) == []


def check_invariants(idx: HammingIndex) -> None:
    for shard in idx._all_shards():
        if shard.sorted and shard.n > 1:
            assert np.all(shard.ids[1 : shard.n] >= shard.ids[: shard.n - 1])
        dead = 0 if shard.dead is None else int(shard.dead[: shard.n].sum())
        assert dead == shard.ndead
    assert len(idx) == sum(s.n - s.ndead for s in idx._all_shards())


def test_out_of_order_ids_tombstones_and_compaction_stay_exact() -> None:
    """Small shards and buffer, so a few thousand operations exercise every path: in-order
    appends, out-of-order rows in the buffer, buffer merges, tombstones, compaction and the
    merge of small shards."""
    rng = np.random.default_rng(22)
    pool = np_codes(40, seed=23)
    idx = HammingIndex(shard_rows=500, buffer_rows=32)
    ref_ids: list[int] = []
    ref_codes: list[np.ndarray] = []
    next_id = 0
    for step in range(400):
        op = rng.random()
        if op < 0.45:  # a batch of new ids, mostly increasing, some older ids (extra rows)
            k = int(rng.integers(1, 40))
            new = np.arange(next_id, next_id + k)
            next_id += k
            old = rng.integers(0, max(next_id, 1), size=int(rng.integers(0, 4)))
            batch = np.concatenate([new, old])
            rng.shuffle(batch) if rng.random() < 0.2 else None
            codes = np.stack(
                [np_flip(pool[rng.integers(40)], int(rng.integers(0, 40)), rng) for _ in batch]
            )
            if rng.random() < 0.5:
                idx.add_many(batch, codes)
            else:
                for i, c in zip(batch.tolist(), codes, strict=True):
                    idx.add(i, c.tobytes())
            ref_ids.extend(batch.tolist())
            ref_codes.extend(codes)
        else:  # remove a random handful of ids (some absent)
            victims = rng.integers(0, max(next_id, 1), size=int(rng.integers(1, 30)))
            present = set(ref_ids)
            expected = len({v for v in victims.tolist() if v in present})
            assert idx.remove_many(victims) == expected
            gone = set(victims.tolist())
            keep = [i for i, e in enumerate(ref_ids) if e not in gone]
            ref_ids = [ref_ids[i] for i in keep]
            ref_codes = [ref_codes[i] for i in keep]
        check_invariants(idx)
        assert len(idx) == len(ref_ids)
        if step % 25 == 0 or step == 399:
            ids = np.array(ref_ids, dtype=np.int64)
            codes = np.stack(ref_codes) if ref_codes else np.zeros((0, 32), np.uint8)
            for q in pool[:6]:
                assert idx.search(q.tobytes(), 31) == np_brute(ids, codes, q, 31)
            probe = rng.integers(0, next_id + 5, size=50)
            assert idx.contains_many(probe).tolist() == [p in set(ref_ids) for p in probe.tolist()]
    assert idx.shard_count <= 2 * len(ref_ids) // 500 + 3  # small shards were merged
    assert idx.dead_rows <= 0.25 * idx.capacity + 500


def test_compaction_reclaims_dead_rows_and_keeps_results() -> None:
    ids, codes, anchors = planted(20_000, seed=24)
    idx = HammingIndex(shard_rows=4_000)
    idx.add_many(ids, codes)
    before = idx.search(anchors[0].tobytes(), 31)
    victims = ids[(ids % 3 == 0) & (ids <= 20_000)]
    assert idx.remove_many(victims) == len(victims)
    assert idx.dead_rows < 0.25 * len(ids)  # compacted shards hold no tombstones
    keep = ~np.isin(ids, victims)
    assert idx.search(anchors[0].tobytes(), 31) == np_brute(ids[keep], codes[keep], anchors[0], 31)
    assert [h for h in before if h[0] not in set(victims.tolist())] == idx.search(
        anchors[0].tobytes(), 31
    )
    assert idx.remove_many(ids) == int(keep.sum())
    assert len(idx) == 0 and idx.search(anchors[0].tobytes(), 256) == []
    idx.add(5, anchors[0].tobytes())
    assert idx.search(anchors[0].tobytes(), 0) == [(5, 0)]


def test_largest_id_and_id_bounds() -> None:
    idx = HammingIndex()
    idx.add(MAX_ID, bytes(32))
    idx.add(0, bytes(32))
    assert idx.search(bytes(32), 0) == [(0, 0), (MAX_ID, 0)]
    assert MAX_ID in idx and (MAX_ID + 1) not in idx and -1 not in idx
    assert idx.remove(MAX_ID + 1) is False and idx.remove(-5) is False
    assert idx.remove(MAX_ID) is True


def test_memory_is_about_36_bytes_per_row() -> None:
    idx = HammingIndex()
    idx.add_many(np.arange(100_000), np_codes(100_000, seed=25))
    assert 36 * 100_000 <= idx.nbytes_resident() <= 40 * 100_000


def snapshot_state(idx: HammingIndex) -> list[tuple[int, int]]:
    return sorted(
        (int(i), d) for q in np_codes(3, seed=99) for i, d in idx.search(q.tobytes(), 256)
    )


def test_snapshot_round_trip(tmp_path: Path) -> None:
    ids, codes, anchors = planted(5_000, seed=26)
    idx = HammingIndex(shard_rows=1_000, buffer_rows=100)
    idx.add_many(ids, codes)
    idx.add_many([3, 2, 1], np_codes(3, seed=27))  # extra rows, out of order: the buffer
    idx.remove_many([10, 11, 12, 4_000])  # tombstones are not written
    idx.save(tmp_path / "snap")
    back = HammingIndex.load(tmp_path / "snap", shard_rows=1_000, buffer_rows=100)
    assert len(back) == len(idx)
    assert [r[0] for r in iter_shard_sizes(back)] == [
        r[0] - r[1] for r in iter_shard_sizes(idx) if r[0] > r[1]
    ]
    assert back.dead_rows == 0
    for q in [*anchors, *np_codes(3, seed=28)]:
        assert back.search(q.tobytes(), 31) == idx.search(q.tobytes(), 31)
    assert snapshot_state(back) == snapshot_state(idx)
    assert back.contains_many([1, 10, 4_000, 4_001]).tolist() == [True, False, False, True]
    # A loaded index keeps working: adds, removes, another save over the same path.
    back.add(ids.max() + 1, anchors[0].tobytes())
    assert back.remove(1)
    back.save(tmp_path / "snap")
    again = HammingIndex.load(tmp_path / "snap")
    assert snapshot_state(again) == snapshot_state(back)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snap"]  # no temporaries left


@pytest.mark.parametrize("bits", [64, 128, 192, 512])
def test_snapshot_round_trip_other_widths(tmp_path: Path, bits: int) -> None:
    idx, entries, _ = populated(300, bits, seed=bits)
    idx.save(tmp_path / "s")
    back = HammingIndex.load(tmp_path / "s")
    assert back.bits == bits
    q = next(iter(entries.values()))
    assert back.search(q, bits // 4) == brute(entries, q, bits // 4)


def test_empty_snapshot(tmp_path: Path) -> None:
    HammingIndex().save(tmp_path / "e")
    back = HammingIndex.load(tmp_path / "e")
    assert len(back) == 0 and back.search(bytes(32), 31) == []
    back.add(1, bytes(32))
    assert back.search(bytes(32), 0) == [(1, 0)]


def corrupt(path: Path, how: str) -> None:
    import json

    header = json.loads((path / "header.json").read_text())
    if how == "format":
        header["format"] = 999
    elif how == "kind":
        header["kind"] = "something else"
    elif how == "count":
        header["count"] += 1
    elif how == "bits":
        header["bits"] = 512
    if how in ("format", "kind", "count", "bits"):
        (path / "header.json").write_text(json.dumps(header))
    elif how == "header":
        (path / "header.json").write_text("{not json")
    elif how == "missing":
        (path / "suffix.npy").unlink()
    elif how == "truncated":
        data = (path / "prefix.npy").read_bytes()
        (path / "prefix.npy").write_bytes(data[:-100])
    elif how == "flipped":
        raw = bytearray((path / "ids.npy").read_bytes())
        raw[-3] ^= 0x10
        (path / "ids.npy").write_bytes(bytes(raw))
    elif how == "longer":
        with (path / "suffix.npy").open("ab") as f:
            f.write(b"\0" * 32)


@pytest.mark.parametrize(
    "how",
    ["format", "kind", "count", "bits", "header", "missing", "truncated", "flipped", "longer"],
)
def test_corrupt_or_mismatched_snapshot_is_rejected(tmp_path: Path, how: str) -> None:
    idx = HammingIndex()
    idx.add_many(np.arange(1_000), np_codes(1_000, seed=29))
    idx.save(tmp_path / "snap")
    corrupt(tmp_path / "snap", how)
    with pytest.raises(SnapshotError, match="index snapshot"):
        HammingIndex.load(tmp_path / "snap")


def test_missing_snapshot_is_a_snapshot_error(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match="no readable header"):
        HammingIndex.load(tmp_path / "nothing")


def test_concurrent_saves_to_one_path_leave_one_complete_snapshot(tmp_path: Path) -> None:
    indexes = []
    for k in range(4):
        idx = HammingIndex()
        idx.add_many(np.arange(k * 10_000, k * 10_000 + 2_000), np_codes(2_000, seed=30 + k))
        indexes.append(idx)
    errors: list[BaseException] = []

    def save(idx: HammingIndex) -> None:
        try:
            for _ in range(5):
                idx.save(tmp_path / "snap")
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=save, args=(i,)) for i in indexes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    back = HammingIndex.load(tmp_path / "snap")
    assert any(snapshot_state(back) == snapshot_state(i) for i in indexes)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snap"]


def test_bench_index_small_run_is_exact() -> None:
    from moderation.bench_index import run_index_bench

    out = run_index_bench(size=30_000, queries=10, restart_size=3_000, restart_changes=300)
    assert out["rows"] == 30_000
    assert out["exactness"]["mismatches"] == 0 and out["exactness"]["hits_checked"] > 0
    assert out["exactness"]["search_many_mismatches"] == 0
    assert out["snapshot"]["identical"] and out["incremental"]["exact_after_churn"]
    assert out["restart"]["source"] == "snapshot"
    assert out["restart"]["changes_replayed"] == 300
    assert out["restart"]["same_results_as_database_load"]
    assert "single query: p50" in out["summary"]


def test_bench_is_a_group_that_still_runs_the_load_benchmark_by_default() -> None:
    from click.testing import CliRunner

    from moderation.cli import cli

    out = CliRunner().invoke(cli, ["bench", "--help"]).output
    assert "--rate" in out and "--duration" in out and "index" in out
    out = CliRunner().invoke(cli, ["bench", "index", "--help"]).output
    assert "--size" in out and "--radius" in out and "--json" in out


def test_sixty_four_bit_index_for_text_simhashes(tmp_path: Path) -> None:
    """Text banks use 64-bit indexes: the whole code is the scanned prefix (no suffix), and
    out-of-order ids, several rows per id, removals, compaction, batched searches and
    snapshots stay exact against brute force."""
    rng = random.Random(64)
    idx = HammingIndex(bits=64, shard_rows=300, buffer_rows=16)
    assert (idx.prefix_bytes, idx.suffix_bytes) == (8, 0)
    anchors = [rand_hash(rng, 64) for _ in range(4)]
    rows: dict[int, list[bytes]] = {}
    order = list(range(1, 1500))
    rng.shuffle(order[:200])  # some ids arrive out of order (buffer, merges)
    for entry_id in order:
        h = (
            flip(rng.choice(anchors), rng.randrange(0, 20), rng)
            if entry_id % 4
            else rand_hash(rng, 64)
        )
        rows.setdefault(entry_id, []).append(h)
        idx.add(entry_id, h)
    for entry_id in rng.sample(sorted(rows), 40):  # extra rows for older ids
        extra = flip(anchors[0], rng.randrange(0, 12), rng)
        rows[entry_id].append(extra)
        idx.add(entry_id, extra)
    victims = rng.sample(sorted(rows), 500)
    assert idx.remove_many(victims) == 500
    for v in victims:
        del rows[v]
    assert len(idx) == sum(len(r) for r in rows.values())
    queries = [*anchors, rand_hash(rng, 64)]
    for radius in (0, 3, 5, 7, 12, 64):
        got = idx.search_many(queries, radius)
        assert got == [brute_rows(rows, q, radius) for q in queries], radius
    idx.save(tmp_path / "text")
    back = HammingIndex.load(tmp_path / "text")
    assert back.bits == 64
    assert back.search_many(queries, 7) == idx.search_many(queries, 7)
    with pytest.raises(ValueError):
        idx.add(1, bytes(32))  # a PDQ hash never goes into a text index
