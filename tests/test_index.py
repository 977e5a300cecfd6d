"""HammingIndex against a brute-force Python reference."""

from __future__ import annotations

import random
import threading

import numpy as np
import pytest

from moderation.index import HammingIndex, pack_hashes


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
    ref: dict[int, bytes] = {}
    pool = [rand_hash(rng, 256) for _ in range(50)]
    for step in range(6000):
        op = rng.random()
        entry_id = rng.randrange(3000)
        if op < 0.6:
            h = flip(rng.choice(pool), rng.randrange(40), rng)
            idx.add(entry_id, h)
            ref[entry_id] = h
        else:
            assert idx.remove(entry_id) == (entry_id in ref)
            ref.pop(entry_id, None)
        assert len(idx) == len(ref)
        if step % 500 == 0:
            q = rng.choice(pool)
            assert idx.search(q, 31) == brute(ref, q, 31)
    for q in pool[:10]:
        assert idx.search(q, 31) == brute(ref, q, 31)


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


def test_add_existing_id_replaces_its_hash() -> None:
    idx = HammingIndex()
    idx.add(7, bytes(32))
    idx.add(7, b"\xff" * 32)
    assert len(idx) == 1
    assert idx.search(b"\xff" * 32, 0) == [(7, 0)]
    assert idx.search(bytes(32), 31) == []


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


def test_add_many_upserts_and_last_duplicate_wins() -> None:
    idx = HammingIndex()
    idx.add(1, bytes(32))
    batch = pack_hashes([b"\x01" + bytes(31), b"\x03" + bytes(31), b"\x07" + bytes(31)])
    idx.add_many([1, 2, 2], batch)
    assert len(idx) == 2
    assert idx.search(bytes(32), 3) == [(1, 1), (2, 3)]


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
