"""`moderation bench index`: the bank index at bank scale (10 M PDQ hashes by default).

Random 256-bit hashes, generated in chunks from a seed (so the brute-force check can make
them again without keeping a second copy), plus planted near neighbours of half the
queries at known distances. Reports build, memory (RSS delta and array bytes), snapshot
save and load (a worker restart), single-query latency on one thread, batched throughput,
incremental adds and removals, and a restart through BankMatcher on a real database at a
smaller size. Every search result on a sample of queries is checked against numpy brute
force over all 256 bits.
"""

from __future__ import annotations

import gc
import os
import platform
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from moderation.index import HammingIndex, iter_shard_sizes, set_search_threads

_CHUNK = 1 << 20
_PLANT_DISTANCES = (0, 4, 12, 20, 28, 31, 32, 36)
_VERIFY_QUERIES = 20


def rss_bytes() -> int | None:
    """Resident set size of this process (Linux ``/proc``), None elsewhere."""
    return _status_field("VmRSS")


def peak_rss_bytes() -> int | None:
    return _status_field("VmHWM")


def _status_field(name: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(name + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def _mb(n: int | None) -> float | None:
    return None if n is None else round(n / 1e6, 1)


def _pct(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values) * 1000
    p50, p95, p99 = np.percentile(arr, [50, 95, 99])
    return {
        "p50_ms": round(float(p50), 2),
        "p95_ms": round(float(p95), 2),
        "p99_ms": round(float(p99), 2),
        "max_ms": round(float(arr.max()), 2),
    }


def _flip(code: npt.NDArray[np.uint8], d: int, rng: np.random.Generator) -> npt.NDArray[np.uint8]:
    bits = np.unpackbits(code)
    bits[rng.choice(bits.size, d, replace=False)] ^= 1
    return np.packbits(bits)


class _Data:
    """The benchmark's rows: chunk ``k`` holds ids ``k * _CHUNK + 1 ..``, regenerated on
    demand from the seed, with the planted neighbours written in."""

    def __init__(self, size: int, n_anchors: int, seed: int) -> None:
        self.size, self.seed = size, seed
        rng = np.random.default_rng([seed, 1])
        self.anchors = rng.integers(0, 256, size=(n_anchors, 32), dtype=np.uint8)
        planted = min(size, n_anchors * len(_PLANT_DISTANCES))
        self.planted_ids = np.sort(rng.choice(size, planted, replace=False) + 1)
        shuffled = rng.permutation(self.planted_ids)
        self.planted_codes: dict[int, npt.NDArray[np.uint8]] = {}
        for i, entry_id in enumerate(shuffled.tolist()):
            anchor = self.anchors[i // len(_PLANT_DISTANCES)]
            d = _PLANT_DISTANCES[i % len(_PLANT_DISTANCES)]
            self.planted_codes[entry_id] = _flip(anchor, d, rng)

    def chunks(self) -> int:
        return (self.size + _CHUNK - 1) // _CHUNK

    def chunk(self, k: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8]]:
        start = k * _CHUNK
        m = min(_CHUNK, self.size - start)
        codes = np.random.default_rng([self.seed, 2, k]).integers(
            0, 256, size=(m, 32), dtype=np.uint8
        )
        ids = np.arange(start + 1, start + m + 1, dtype=np.int64)
        lo, hi = np.searchsorted(self.planted_ids, [start + 1, start + m + 1])
        for entry_id in self.planted_ids[lo:hi].tolist():
            codes[entry_id - start - 1] = self.planted_codes[entry_id]
        return ids, codes

    def brute_force(
        self, queries: npt.NDArray[np.uint8], radius: int, removed: set[int] | None = None
    ) -> list[list[tuple[int, int]]]:
        """Every row within ``radius`` over all 256 bits, by distance then id."""
        q64 = queries.view(np.uint64)
        found: list[list[tuple[int, int]]] = [[] for _ in queries]
        for k in range(self.chunks()):
            ids, codes = self.chunk(k)
            c64 = codes.view(np.uint64)
            for i in range(len(queries)):
                d = np.bitwise_count(c64 ^ q64[i]).sum(axis=1, dtype=np.int64)
                hit = np.flatnonzero(d <= radius)
                found[i].extend(zip(ids[hit].tolist(), d[hit].tolist(), strict=True))
        removed = removed or set()
        return [
            sorted((h for h in f if h[0] not in removed), key=lambda t: (t[1], t[0])) for f in found
        ]


def run_index_bench(
    *,
    size: int = 10_000_000,
    queries: int = 200,
    radius: int = 31,
    seed: int = 0,
    churn: int = 10_000,
    restart_size: int = 200_000,
    restart_changes: int = 3_000,
    workdir: str | os.PathLike[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the benchmark; returns a JSON-able dict (``summary`` is a printable table)."""
    say = progress or (lambda _msg: None)
    set_search_threads(1)
    import faiss  # loaded before the memory baseline: the library is not the index

    tmp = Path(tempfile.mkdtemp(prefix="moderation-bench-index-", dir=workdir))
    try:
        out: dict[str, Any] = {
            "size": size,
            "radius": radius,
            "threads": 1,
            "cpu": _cpu_model(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "faiss": faiss.__version__,
        }
        out.update(_index_part(size, queries, radius, seed, churn, tmp, say))
        if restart_size:
            say(f"restart through BankMatcher on SQLite at {restart_size:,} entries")
            out["restart"] = _restart_part(restart_size, restart_changes, seed, tmp)
            out["restart"]["extrapolated_10m_s"] = _extrapolate(out)
        out["summary"] = _summary(out)
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _index_part(
    size: int,
    n_queries: int,
    radius: int,
    seed: int,
    churn: int,
    tmp: Path,
    say: Callable[[str], None],
) -> dict[str, Any]:
    n_anchors = max(1, min(n_queries // 2, 100))
    data = _Data(size, n_anchors, seed)
    rng = np.random.default_rng([seed, 3])
    randoms = rng.integers(0, 256, size=(max(1, n_queries - n_anchors), 32), dtype=np.uint8)
    anchor_q = data.anchors[np.arange(n_queries // 2) % n_anchors]
    query_set = np.concatenate([anchor_q, randoms])[:n_queries]
    rng.shuffle(query_set)

    gc.collect()
    rss0 = rss_bytes()
    say(f"building {size:,} hashes")
    index = HammingIndex()
    build = 0.0
    for k in range(data.chunks()):
        ids, codes = data.chunk(k)
        t = time.perf_counter()
        index.add_many(ids, codes)
        build += time.perf_counter() - t
        del ids, codes
    gc.collect()
    rss1 = rss_bytes()
    res: dict[str, Any] = {
        "build_s": round(build, 2),
        "rows": len(index),
        "shards": index.shard_count,
        "memory": {
            "index_arrays_mb": _mb(index.nbytes_resident()),
            "rss_delta_mb": _mb(rss1 - rss0) if rss0 and rss1 else None,
            "bytes_per_row": round(index.nbytes_resident() / max(1, len(index)), 1),
            "process_rss_mb": _mb(rss1),
        },
    }

    say("checking results against brute force")
    verify = np.concatenate([data.anchors[: _VERIFY_QUERIES // 2], randoms[: _VERIFY_QUERIES // 2]])
    expected = data.brute_force(verify, radius)
    got = [index.search(q.tobytes(), radius) for q in verify]
    mismatches = sum(g != e for g, e in zip(got, expected, strict=True))
    res["exactness"] = {
        "queries_checked": len(verify),
        "hits_checked": sum(len(e) for e in expected),
        "mismatches": mismatches,
        "search_many_mismatches": sum(
            g != e for g, e in zip(index.search_many(verify, radius), expected, strict=True)
        ),
    }
    if mismatches:
        raise AssertionError(f"index results differ from brute force on {mismatches} queries")

    say(f"{n_queries} single queries at radius {radius}")
    for q in query_set[:5]:
        index.search(q.tobytes(), radius)  # warm-up
    times: list[float] = []
    hits = 0
    for q in query_set:
        qb = q.tobytes()
        t = time.perf_counter()
        found = index.search(qb, radius)
        times.append(time.perf_counter() - t)
        hits += len(found)
    res["single_query"] = {"queries": len(query_set), "mean_hits": round(hits / len(times), 2)}
    res["single_query"].update(_pct(times))

    batches: dict[str, Any] = {}
    for batch in (8, 64):
        calls = max(2, min(10, 512 // batch))
        per_call: list[float] = []
        for c in range(calls):
            qs = np.roll(query_set, c * batch, axis=0)[:batch]
            t = time.perf_counter()
            index.search_many(qs, radius)
            per_call.append(time.perf_counter() - t)
        p50 = float(np.median(per_call))
        batches[str(batch)] = {
            "call_p50_ms": _ms(p50),
            "per_query_ms": _ms(p50 / batch),
            "queries_per_s": round(batch / p50, 1),
        }
    t = time.perf_counter()
    index.search_union(query_set[:8], radius)
    batches["union_8_ms"] = _ms(time.perf_counter() - t)
    res["batched"] = batches

    say("snapshot save and load")
    snap = tmp / "snapshot"
    t = time.perf_counter()
    index.save(snap)
    res["snapshot"] = {"save_s": round(time.perf_counter() - t, 2)}
    res["snapshot"]["disk_mb"] = _mb(sum(p.stat().st_size for p in snap.iterdir()))
    before = [index.search(q.tobytes(), radius) for q in verify]
    shards_before = list(iter_shard_sizes(index))
    del index
    gc.collect()
    t = time.perf_counter()
    index = HammingIndex.load(snap)
    res["snapshot"]["load_warm_s"] = round(time.perf_counter() - t, 2)
    cold = _evict(snap)
    if cold:
        del index
        gc.collect()
        t = time.perf_counter()
        index = HammingIndex.load(snap)
        res["snapshot"]["load_cold_s"] = round(time.perf_counter() - t, 2)
    res["snapshot"]["identical"] = [
        index.search(q.tobytes(), radius) for q in verify
    ] == before and list(iter_shard_sizes(index)) == shards_before
    res["memory"]["rss_after_reload_mb"] = _mb(rss_bytes())

    say(f"incremental: add and remove {churn:,}")
    res["incremental"] = _churn(index, data, churn, radius, verify, rng)
    res["memory"]["peak_rss_mb"] = _mb(peak_rss_bytes())
    return res


def _evict(snap: Path) -> bool:
    """Drop the snapshot's pages from the page cache (a restart after a reboot reads the
    disk); False where the OS has no posix_fadvise."""
    if not hasattr(os, "posix_fadvise"):
        return False
    for p in snap.iterdir():
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return True


def _churn(
    index: HammingIndex,
    data: _Data,
    churn: int,
    radius: int,
    verify: npt.NDArray[np.uint8],
    rng: np.random.Generator,
) -> dict[str, Any]:
    size = data.size
    codes = rng.integers(0, 256, size=(churn, 32), dtype=np.uint8)
    out: dict[str, Any] = {}
    t = time.perf_counter()
    index.add_many(np.arange(size + 1, size + churn + 1), codes)
    out["add_batch_ms"] = _ms(time.perf_counter() - t)
    singles = min(1000, churn)
    t = time.perf_counter()
    for i in range(singles):
        index.add(size + churn + 1 + i, codes[i].tobytes())
    out["add_one_us"] = round((time.perf_counter() - t) / singles * 1e6, 1)
    # Extra hashes for old entries (ids below the newest): the out-of-order path, twice the
    # buffer so it is merged into the last shard once.
    old = rng.choice(size, min(size, 2 * 16_384), replace=False) + 1
    t = time.perf_counter()
    index.add_many(old, rng.integers(0, 256, size=(len(old), 32), dtype=np.uint8))
    out["add_out_of_order_batch_ms"] = _ms(time.perf_counter() - t)
    out["out_of_order_rows"] = len(old)
    # Removing an id removes all its rows: these ids are gone from here on.
    index.remove_many(old)
    index.remove_many(np.arange(size + 1, size + churn + singles + 1))

    pool = rng.choice(size, min(size, churn + 1000 + len(old)), replace=False) + 1
    pool = pool[~np.isin(pool, old)]
    victims, more = pool[:churn], pool[churn : churn + 1000]
    t = time.perf_counter()
    removed = index.remove_many(victims)
    out["remove_batch_ms"] = _ms(time.perf_counter() - t)
    t = time.perf_counter()
    for v in more.tolist():
        index.remove(v)
    out["remove_one_us"] = round((time.perf_counter() - t) / max(1, len(more)) * 1e6, 1)
    gone = {*old.tolist(), *victims.tolist(), *more.tolist()}
    expected = data.brute_force(verify[:6], radius, removed=gone)
    out["exact_after_churn"] = [index.search(q.tobytes(), radius) for q in verify[:6]] == expected
    out["removed"] = removed
    # Worst single pause: removing a third of the first shard triggers its compaction.
    first = np.arange(1, min(size, index.shard_rows) + 1)
    t = time.perf_counter()
    index.remove_many(first[first % 3 == 0])
    out["compaction_pause_ms"] = _ms(time.perf_counter() - t)
    return out


def _restart_part(n: int, changes: int, seed: int, tmp: Path) -> dict[str, Any]:
    from sqlalchemy import insert

    from moderation import banks
    from moderation.matching import BankMatcher
    from moderation.storage import db
    from moderation.storage.tables import BankEntryRow, ChangeRow

    url = f"sqlite:///{tmp / 'restart.db'}"
    db.migrate(url)
    rng = np.random.default_rng([seed, 4])
    with db.session_scope(url) as s:
        bank_id = banks.create_bank(s, "bench-index", kind="image", action="block").id
    t = time.perf_counter()
    with db.get_engine(url).begin() as conn:
        for start in range(0, n, 50_000):
            m = min(50_000, n - start)
            hexes = [c.tobytes().hex() for c in rng.integers(0, 256, (m, 32), dtype=np.uint8)]
            ids = range(start + 1, start + m + 1)
            conn.execute(
                insert(BankEntryRow),
                [
                    {"id": i, "bank_id": bank_id, "signal_type": "pdq", "value": h}
                    for i, h in zip(ids, hexes, strict=True)
                ],
            )
            conn.execute(
                insert(ChangeRow),
                [{"topic": "bank_entry", "ref_id": i, "op": "add"} for i in ids],
            )
    populate_s = time.perf_counter() - t
    snap = tmp / "index"

    def load(snapshot: Path | None, **kw: int) -> tuple[BankMatcher, float]:
        matcher = BankMatcher()
        t = time.perf_counter()
        with db.session_scope(url) as s:
            matcher.load(s, snapshot, **kw)
        return matcher, time.perf_counter() - t

    _, from_db = load(None)
    _, db_and_write = load(snap, snapshot_min_rows=0)
    # Churn through the ordinary bank API: adds and removals in the change log.
    adds = changes * 2 // 3
    hexes = [c.tobytes().hex() for c in rng.integers(0, 256, (adds, 32), dtype=np.uint8)]
    with db.session_scope(url) as s:
        row = banks.get_bank_row(s, "bench-index")
        banks.add_entries(s, row, [banks.EntryInput(h) for h in hexes])
        for entry_id in random.Random(seed).sample(range(1, n + 1), changes - adds):
            banks.remove_entry(s, row, entry_id)
    restarted, restart_s = load(snap)
    reference, _ = load(None)
    probes = [*hexes[:5], first_value(url)]
    same = all(
        restarted.match_pdq(p, review_band=4) == reference.match_pdq(p, review_band=4)
        for p in probes
    )
    return {
        "entries": n,
        "populate_db_s": round(populate_s, 2),
        "load_from_database_s": round(from_db, 2),
        "load_from_database_and_write_snapshot_s": round(db_and_write, 2),
        "changes_replayed": restarted.load_info.get("replayed"),
        "load_from_snapshot_and_replay_s": round(restart_s, 2),
        "source": restarted.load_info.get("source"),
        "same_results_as_database_load": same,
    }


def first_value(url: str) -> str:
    from sqlalchemy import select

    from moderation.storage import db
    from moderation.storage.tables import BankEntryRow

    with db.session_scope(url) as s:
        return str(s.scalar(select(BankEntryRow.value).order_by(BankEntryRow.id.desc())))


def _extrapolate(out: dict[str, Any]) -> dict[str, Any]:
    """Restart cost at 10 M from the measured parts (stated as an estimate)."""
    r = out["restart"]
    per_row_db = r["load_from_database_s"] / r["entries"]
    snap_small = max(0.0, r["load_from_snapshot_and_replay_s"])
    replay_per_change = snap_small / max(1, r["changes_replayed"] or 1)
    scale = 10_000_000 / out["size"]
    load_10m = out["snapshot"].get("load_cold_s", out["snapshot"]["load_warm_s"]) * scale
    return {
        "snapshot_load_s": round(load_10m, 2),
        "replay_per_1000_changes_s": round(replay_per_change * 1000, 3),
        "restart_with_snapshot_and_1000_changes_s": round(load_10m + replay_per_change * 1000, 2),
        "restart_without_snapshot_s": round(per_row_db * 10_000_000, 1),
        "note": "snapshot load measured at --size and scaled linearly; replay and database "
        "load rates measured on SQLite at the restart size (replay cost is an upper bound: it "
        "includes that size's own snapshot load)",
    }


def _summary(out: dict[str, Any]) -> str:
    m, s, q = out["memory"], out["snapshot"], out["single_query"]
    b, inc = out["batched"], out["incremental"]
    lines = [
        f"index of {out['rows']:,} 256-bit hashes, radius {out['radius']}, 1 thread, {out['cpu']}",
        f"build {out['build_s']} s in {out['shards']} shards; arrays {m['index_arrays_mb']} MB "
        f"({m['bytes_per_row']} B/row), RSS +{m['rss_delta_mb']} MB",
        f"exact: {out['exactness']['queries_checked']} queries, "
        f"{out['exactness']['hits_checked']} hits, {out['exactness']['mismatches']} mismatches",
        f"single query: p50 {q['p50_ms']} ms, p95 {q['p95_ms']} ms, p99 {q['p99_ms']} ms",
        f"batch 8: {b['8']['call_p50_ms']} ms/call ({b['8']['queries_per_s']} q/s); "
        f"batch 64: {b['64']['call_p50_ms']} ms/call ({b['64']['queries_per_s']} q/s)",
        f"snapshot: save {s['save_s']} s, {s['disk_mb']} MB; load {s['load_warm_s']} s warm, "
        f"{s.get('load_cold_s', '-')} s cold",
        f"add 10k batch {inc['add_batch_ms']} ms, one add {inc['add_one_us']} us; "
        f"remove 10k batch {inc['remove_batch_ms']} ms, one remove {inc['remove_one_us']} us; "
        f"compaction pause {inc['compaction_pause_ms']} ms",
    ]
    if "restart" in out:
        r = out["restart"]
        e = r["extrapolated_10m_s"]
        lines.append(
            f"restart at {r['entries']:,} on SQLite: database {r['load_from_database_s']} s, "
            f"snapshot + {r['changes_replayed']} changes {r['load_from_snapshot_and_replay_s']} s"
        )
        lines.append(
            f"estimated restart at 10 M: snapshot + 1000 changes "
            f"{e['restart_with_snapshot_and_1000_changes_s']} s, without snapshot "
            f"{e['restart_without_snapshot_s']} s"
        )
    return "\n".join(lines)
