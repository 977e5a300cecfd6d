"""Exact Hamming-radius search over fixed-width binary hashes, held in memory per worker.

Brute force on purpose: a linear scan is exact, needs no training or tuning, and at PDQ's
radius 31 beats multi-index hashing (Meta's own numbers). What makes 10 M hashes fit the
budget (p50 <= 15 ms on one core, <= 400 MB) is the layout, see docs/decisions.md:

* Rows live in **shards** of at most ``shard_rows`` rows. A shard keeps the first
  ``prefix_bytes`` of every hash in one C-contiguous ``uint8`` array that faiss scans
  (``faiss.hamming_range_search`` straight over the numpy memory: no faiss index object, no
  copy), the remaining bytes in a second array read only for the few candidates, and the
  ids as ``uint32``. 256-bit hashes cost 32 + 4 bytes per row and nothing per entry in
  Python objects.
* The prefix scan is a necessary condition: distance on a subset of the bits is at most
  the full distance, so every true hit survives it. On random 128-bit prefixes at radius 31
  about one row in 10^9 is a false candidate; the suffix check removes it.
* A shard's ids are **sorted** (bank entry ids come from an autoincrement, so they arrive in
  increasing order), which makes id -> rows a binary search. Ids that arrive out of order
  go to a small unsorted buffer shard that is merged into the last shard when it fills.
* Removal marks rows dead (a tombstone mask, allocated on a shard's first removal); a shard
  is rebuilt from its live rows once ``compact_fraction`` of it is dead (amortised O(1)).
"""

from __future__ import annotations

import errno
import json
import operator
import os
import secrets
import shutil
import threading
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

__all__ = [
    "MAX_ID",
    "HammingIndex",
    "SnapshotError",
    "hashes_from_hex",
    "pack_hashes",
    "set_search_threads",
]

# Entry ids are stored as uint32 (4 B/row; int64 would not fit 10 M rows in 400 MB).
MAX_ID = 2**32 - 1
SNAPSHOT_FORMAT = 1
SNAPSHOT_KIND = "moderation.HammingIndex"

DEFAULT_SHARD_ROWS = 1 << 20  # 16 MiB of 128-bit prefixes: growth and rebuilds stay small
DEFAULT_BUFFER_ROWS = 1 << 14  # out-of-order rows, looked up by a linear scan
DEFAULT_COMPACT_FRACTION = 0.25
_MIN_CAPACITY = 256
_READ_CHUNK = 1 << 24

HashArray = npt.NDArray[np.uint8] | npt.NDArray[np.uint64]
IdArray = npt.NDArray[np.uint32]
Rows = npt.NDArray[np.int64]

_search_threads = 1
_faiss_module: Any = None
_thread_state = threading.local()


class SnapshotError(ValueError):
    """A snapshot directory that is missing, incomplete, corrupt or of another format."""


def set_search_threads(threads: int) -> None:
    """OpenMP threads faiss may use per search (process-wide). Default 1: a worker is one
    process per core, and a single query does not parallelise in faiss anyway."""
    global _search_threads
    if int(threads) < 1:
        raise ValueError(f"search threads must be >= 1, got {threads}")
    _search_threads = int(threads)


def _faiss() -> Any:
    """faiss, imported on first use (CLI start-up must not pay for it), with the thread count
    applied in the calling thread (OpenMP keeps that setting per thread)."""
    global _faiss_module
    if _faiss_module is None:
        import faiss

        _faiss_module = faiss
    if getattr(_thread_state, "threads", None) != _search_threads:
        _faiss_module.omp_set_num_threads(_search_threads)
        _thread_state.threads = _search_threads
    return _faiss_module


def pack_hashes(hashes: Iterable[bytes], bits: int = 256) -> npt.NDArray[np.uint64]:
    """Stack raw hash bytes into an ``(n, bits // 64)`` uint64 array (same bytes in memory)."""
    nbytes = _check_bits(bits)
    items = list(hashes)
    bad = next((h for h in items if len(h) != nbytes), None)
    if bad is not None:
        raise ValueError(f"every hash must be {nbytes} bytes, got one of {len(bad)}")
    raw = b"".join(items)
    return np.frombuffer(raw, dtype=np.uint64).reshape(-1, nbytes // 8).copy()


def hashes_from_hex(values: Sequence[str], bits: int = 256) -> npt.NDArray[np.uint8]:
    """Hex strings (e.g. PDQ) as an ``(n, bits // 8)`` uint8 array; ValueError if malformed."""
    nbytes = _check_bits(bits)
    bad = next((v for v in values if len(v) != nbytes * 2), None)
    if bad is not None:
        raise ValueError(f"every hash must be {nbytes * 2} hex characters, got {len(bad)}")
    return np.frombuffer(bytes.fromhex("".join(values)), dtype=np.uint8).reshape(-1, nbytes)


class _Shard:
    """Rows ``[0, n)`` of preallocated arrays; ``dead`` marks tombstones."""

    __slots__ = ("dead", "ids", "n", "ndead", "prefix", "sorted", "suffix")

    def __init__(self, prefix_bytes: int, suffix_bytes: int, capacity: int, *, sorted_: bool):
        capacity = max(capacity, 1)
        self.prefix = np.empty((capacity, prefix_bytes), dtype=np.uint8)
        self.suffix = np.empty((capacity, suffix_bytes), dtype=np.uint8)
        self.ids: IdArray = np.empty(capacity, dtype=np.uint32)
        self.n = 0
        self.dead: npt.NDArray[np.bool_] | None = None
        self.ndead = 0
        self.sorted = sorted_

    @property
    def capacity(self) -> int:
        return len(self.ids)

    @property
    def live(self) -> int:
        return self.n - self.ndead

    @property
    def nbytes(self) -> int:
        extra = 0 if self.dead is None else self.dead.nbytes
        return self.prefix.nbytes + self.suffix.nbytes + self.ids.nbytes + extra

    def reserve(self, needed: int, limit: int) -> None:
        if needed <= self.capacity:
            return
        capacity = max(needed, min(max(limit, needed), 2 * self.capacity), _MIN_CAPACITY)
        n = self.n
        for name in ("prefix", "suffix", "ids"):
            old = getattr(self, name)
            new = np.empty((capacity, *old.shape[1:]), dtype=old.dtype)
            new[:n] = old[:n]
            setattr(self, name, new)
        if self.dead is not None:
            dead = np.zeros(capacity, dtype=np.bool_)
            dead[:n] = self.dead[:n]
            self.dead = dead

    def append(self, ids: IdArray, prefix: npt.NDArray[np.uint8], suffix: npt.NDArray[np.uint8]):
        n, k = self.n, len(ids)
        self.ids[n : n + k] = ids
        self.prefix[n : n + k] = prefix
        self.suffix[n : n + k] = suffix
        if self.dead is not None:
            self.dead[n : n + k] = False
        self.n = n + k

    def last_id(self) -> int:
        return int(self.ids[self.n - 1]) if self.n else -1

    def rows_of(self, keys: IdArray) -> Rows:
        """Rows (live or dead) holding any of ``keys`` (sorted, unique)."""
        n = self.n
        if n == 0 or len(keys) == 0:
            return np.empty(0, dtype=np.int64)
        ids = self.ids[:n]
        if not self.sorted:
            return np.flatnonzero(np.isin(ids, keys)).astype(np.int64)
        if keys[-1] < ids[0] or keys[0] > ids[n - 1]:
            return np.empty(0, dtype=np.int64)
        lo = np.searchsorted(ids, keys, side="left")
        hi = np.searchsorted(ids, keys, side="right")
        count = hi - lo
        found = count > 0
        if not found.any():
            return np.empty(0, dtype=np.int64)
        return _expand_ranges(lo[found], count[found])

    def alive(self, rows: Rows) -> Rows:
        return rows if self.dead is None else rows[~self.dead[rows]]

    def kill(self, rows: Rows) -> Rows:
        """Mark ``rows`` dead; returns those that were alive."""
        if self.dead is None:
            self.dead = np.zeros(self.capacity, dtype=np.bool_)
        rows = rows[~self.dead[rows]]
        self.dead[rows] = True
        self.ndead += len(rows)
        return rows

    def live_rows(self) -> tuple[IdArray, npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
        """``(ids, prefix, suffix)`` of the live rows (views when nothing is dead)."""
        n = self.n
        if self.ndead == 0 or self.dead is None:
            return self.ids[:n], self.prefix[:n], self.suffix[:n]
        keep = ~self.dead[:n]
        return self.ids[:n][keep], self.prefix[:n][keep], self.suffix[:n][keep]


class HammingIndex:
    """Rows ``(id, hash)``; :meth:`search` returns every id with a row within a radius.

    An id may have several rows (several hashes of one bank entry); a search reports each id
    once, at the smallest distance over its rows, and :meth:`remove` removes all of them.
    Ids are integers in ``[0, MAX_ID]``. All methods are thread-safe.
    """

    def __init__(
        self,
        bits: int = 256,
        *,
        prefix_bits: int | None = None,
        shard_rows: int = DEFAULT_SHARD_ROWS,
        buffer_rows: int = DEFAULT_BUFFER_ROWS,
        compact_fraction: float = DEFAULT_COMPACT_FRACTION,
    ) -> None:
        self.nbytes = _check_bits(bits)
        self.bits = bits
        if prefix_bits is None:
            self.prefix_bytes = _default_prefix_bytes(self.nbytes)
        else:
            if prefix_bits <= 0 or prefix_bits % 8 or prefix_bits > bits:
                raise ValueError(f"prefix_bits must be a multiple of 8 in (0, {bits}]")
            self.prefix_bytes = prefix_bits // 8
        self.suffix_bytes = self.nbytes - self.prefix_bytes
        if shard_rows < 1 or buffer_rows < 1:
            raise ValueError("shard_rows and buffer_rows must be >= 1")
        if not 0.0 < compact_fraction <= 1.0:
            raise ValueError("compact_fraction must be in (0, 1]")
        self.shard_rows = int(shard_rows)
        self.buffer_rows = int(buffer_rows)
        self.compact_fraction = float(compact_fraction)
        self._shards: list[_Shard] = [self._new_shard(_MIN_CAPACITY, sorted_=True)]
        self._buffer = self._new_shard(_MIN_CAPACITY, sorted_=False)
        self._live = 0
        self._lock = threading.Lock()

    # -- size and introspection ---------------------------------------------------------

    def __len__(self) -> int:
        """Live rows."""
        return self._live

    def __contains__(self, entry_id: object) -> bool:
        if not isinstance(entry_id, int | np.integer) or not 0 <= int(entry_id) <= MAX_ID:
            return False
        return bool(self.contains_many([int(entry_id)])[0])

    @property
    def capacity(self) -> int:
        """Rows allocated (>= len)."""
        return sum(s.capacity for s in self._all_shards())

    @property
    def shard_count(self) -> int:
        return sum(1 for s in self._all_shards() if s.n)

    @property
    def dead_rows(self) -> int:
        return sum(s.ndead for s in self._all_shards())

    def nbytes_resident(self) -> int:
        """Bytes of every array the index holds (allocated rows; untouched spare capacity is
        not resident in practice, so this is an upper bound)."""
        with self._lock:
            return sum(s.nbytes for s in self._all_shards())

    def _all_shards(self) -> list[_Shard]:
        return [*self._shards, self._buffer]

    def _new_shard(self, capacity: int, *, sorted_: bool) -> _Shard:
        return _Shard(self.prefix_bytes, self.suffix_bytes, capacity, sorted_=sorted_)

    # -- adding ---------------------------------------------------------------------------

    def add(self, entry_id: int, hash_bytes: bytes) -> None:
        """Add one row (an id already present gets another row)."""
        row = np.frombuffer(self._check_bytes(hash_bytes), dtype=np.uint8)[None, :]
        self.add_many([entry_id], row)

    def add_many(self, ids: Sequence[int] | npt.NDArray[np.integer], hashes: HashArray) -> None:
        """Add many rows; ``hashes`` is ``(n, bits // 8)`` uint8 or ``(n, bits // 64)`` uint64
        as produced by :func:`pack_hashes` (same bytes as :meth:`add`)."""
        codes = self._to_byte_rows(hashes)
        keys = _check_ids(ids, len(codes))
        if len(keys) == 0:
            return
        with self._lock:
            self._insert(keys, codes)

    def _insert(self, keys: IdArray, codes: npt.NDArray[np.uint8]) -> None:
        if len(keys) > 1 and not _is_sorted(keys):
            order = np.argsort(keys, kind="stable")
            keys, codes = keys[order], codes[order]
        last = self._shards[-1].last_id()
        split = int(np.searchsorted(keys, last, side="left")) if last >= 0 else 0
        if split < len(keys):
            self._append_in_order(keys[split:], codes[split:])
        if split:
            self._append_out_of_order(keys[:split], codes[:split])
        self._live += len(keys)

    def _append_in_order(self, keys: IdArray, codes: npt.NDArray[np.uint8]) -> None:
        pb, pos = self.prefix_bytes, 0
        while pos < len(keys):
            tail = self._shards[-1]
            room = self.shard_rows - tail.n
            if room <= 0:
                tail = self._new_shard(min(self.shard_rows, len(keys) - pos), sorted_=True)
                self._shards.append(tail)
                room = self.shard_rows
            take = min(room, len(keys) - pos)
            tail.reserve(tail.n + take, self.shard_rows)
            part = codes[pos : pos + take]
            tail.append(keys[pos : pos + take], part[:, :pb], part[:, pb:])
            pos += take

    def _append_out_of_order(self, keys: IdArray, codes: npt.NDArray[np.uint8]) -> None:
        buf, pb = self._buffer, self.prefix_bytes
        if buf.n + len(keys) <= self.buffer_rows:
            buf.reserve(buf.n + len(keys), self.buffer_rows)
            buf.append(keys, codes[:, :pb], codes[:, pb:])
            return
        # Buffer full: merge it, the new rows and the last shard into sorted shards.
        merged = self._sorted_shards(
            [self._shards[-1].live_rows(), buf.live_rows(), (keys, codes[:, :pb], codes[:, pb:])]
        )
        self._shards[-1:] = merged
        self._buffer = self._new_shard(_MIN_CAPACITY, sorted_=False)

    def _sorted_shards(
        self, parts: list[tuple[IdArray, npt.NDArray[np.uint8], npt.NDArray[np.uint8]]]
    ) -> list[_Shard]:
        """Sorted shards of at most ``shard_rows`` rows holding all rows of ``parts``."""
        ids = np.concatenate([p[0] for p in parts])
        prefix = np.concatenate([p[1] for p in parts])
        suffix = np.concatenate([p[2] for p in parts])
        if not _is_sorted(ids):
            order = np.argsort(ids, kind="stable")
            ids, prefix, suffix = ids[order], prefix[order], suffix[order]
        shards: list[_Shard] = []
        for start in range(0, len(ids), self.shard_rows):
            end = min(start + self.shard_rows, len(ids))
            shard = self._new_shard(end - start, sorted_=True)
            shard.append(ids[start:end], prefix[start:end], suffix[start:end])
            shards.append(shard)
        return shards or [self._new_shard(_MIN_CAPACITY, sorted_=True)]

    # -- removing -------------------------------------------------------------------------

    def remove(self, entry_id: int) -> bool:
        """Remove every row of ``entry_id``; False if it had none."""
        return self.remove_many([entry_id]) == 1

    def remove_many(self, ids: Sequence[int] | npt.NDArray[np.integer]) -> int:
        """Remove every row of each id; returns how many of the ids had rows."""
        keys = _lookup_keys(ids)
        if len(keys) == 0:
            return 0
        with self._lock:
            removed: list[IdArray] = []
            touched: list[_Shard] = []
            for shard in self._all_shards():
                rows = shard.rows_of(keys)
                if len(rows) == 0:
                    continue
                rows = shard.kill(rows)
                if len(rows):
                    removed.append(shard.ids[rows])
                    touched.append(shard)
            if not removed:
                return 0
            self._live -= sum(len(r) for r in removed)
            for shard in touched:
                self._maybe_compact(shard)
            return len(_sorted_unique(np.concatenate(removed)))

    def contains_many(self, ids: Sequence[int] | npt.NDArray[np.integer]) -> npt.NDArray[np.bool_]:
        """For each id, whether it has a live row (ids outside ``[0, MAX_ID]`` are False)."""
        arr = np.asarray(ids)
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise ValueError("entry ids must be integers")
        arr = arr.astype(np.int64).reshape(-1)
        out = np.zeros(len(arr), dtype=np.bool_)
        valid = (arr >= 0) & (arr <= MAX_ID)
        keys = _sorted_unique(arr[valid].astype(np.uint32))
        if len(keys) == 0:
            return out
        with self._lock:
            found = [s.ids[s.alive(s.rows_of(keys))] for s in self._all_shards()]
        present = _sorted_unique(np.concatenate(found))
        out[valid] = np.isin(arr[valid], present)
        return out

    def _maybe_compact(self, shard: _Shard) -> None:
        if shard.ndead == 0 or shard.ndead < self.compact_fraction * shard.n:
            return
        if shard is self._buffer:
            ids, prefix, suffix = shard.live_rows()
            fresh = self._new_shard(max(len(ids), _MIN_CAPACITY), sorted_=False)
            fresh.append(ids, prefix, suffix)
            self._buffer = fresh
            return
        i = next((k for k, s in enumerate(self._shards) if s is shard), -1)
        if i < 0:
            return  # already merged into a neighbour by this same removal
        parts = [shard.live_rows()]
        lo, hi = i, i + 1
        # A shard left under half full merges with its smaller neighbour when both fit in
        # one, so there are at most ~2 n / shard_rows shards.
        if shard.live < self.shard_rows // 2:
            near = [j for j in (i - 1, i + 1) if 0 <= j < len(self._shards)]
            if near:
                j = min(near, key=lambda k: self._shards[k].live)
                if shard.live + self._shards[j].live <= self.shard_rows:
                    parts.append(self._shards[j].live_rows())
                    lo, hi = min(i, j), max(i, j) + 1
        merged = self._sorted_shards(parts)
        if sum(s.n for s in merged) == 0 and len(self._shards) > hi - lo:
            merged = []
        self._shards[lo:hi] = merged

    # -- searching ------------------------------------------------------------------------

    def search(self, query: bytes, radius: int) -> list[tuple[int, int]]:
        """``(id, distance)`` for every id within ``radius`` bits, by distance then id."""
        q = np.frombuffer(self._check_bytes(query), dtype=np.uint8)[None, :]
        return self.search_many(q, radius)[0]

    def search_many(
        self, queries: HashArray | Sequence[bytes], radius: int
    ) -> list[list[tuple[int, int]]]:
        """:meth:`search` for each query, in one scan per shard (same layouts as
        :meth:`add_many`, or a sequence of bytes)."""
        q = self._queries(queries)
        qi, ids, dist = self._scan(q, radius)
        nq = len(q)
        if len(ids) == 0:
            return [[] for _ in range(nq)]
        qi, ids, dist = _min_per_key(qi, ids, dist)
        order = np.lexsort((ids, dist, qi))
        qi, ids, dist = qi[order], ids[order], dist[order]
        bounds = np.searchsorted(qi, np.arange(nq + 1)).tolist()
        pairs = list(zip(ids.tolist(), dist.tolist(), strict=True))
        return [pairs[bounds[k] : bounds[k + 1]] for k in range(nq)]

    def search_union(
        self, queries: HashArray | Sequence[bytes], radius: int
    ) -> list[tuple[int, int]]:
        """``(id, distance)`` for every id within ``radius`` of any query, at its smallest
        distance to any of them, by distance then id (e.g. the dihedral variants of one
        image, or the frames of one video)."""
        q = self._queries(queries)
        _, ids, dist = self._scan(q, radius)
        if len(ids) == 0:
            return []
        _, ids, dist = _min_per_key(np.zeros(len(ids), dtype=np.int64), ids, dist)
        order = np.lexsort((ids, dist))
        return list(zip(ids[order].tolist(), dist[order].tolist(), strict=True))

    def _queries(self, queries: HashArray | Sequence[bytes]) -> npt.NDArray[np.uint8]:
        if isinstance(queries, np.ndarray):
            return self._to_byte_rows(queries)
        rows = [self._check_bytes(q) for q in queries]
        return np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(-1, self.nbytes)

    def _scan(
        self, queries: npt.NDArray[np.uint8], radius: int
    ) -> tuple[Rows, npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Every live row within ``radius`` of a query: (query index, id, distance)."""
        radius = int(radius)
        if radius < 0:
            raise ValueError(f"radius must be >= 0, got {radius}")
        nq, pb = len(queries), self.prefix_bytes
        empty = np.empty(0, dtype=np.int64)
        if nq == 0:
            return empty, empty, empty
        qpre = np.ascontiguousarray(queries[:, :pb])
        qsuf = queries[:, pb:]
        # faiss keeps distances strictly below its radius.
        limit = min(radius, pb * 8) + 1
        out_q: list[Rows] = []
        out_id: list[npt.NDArray[np.int64]] = []
        out_d: list[npt.NDArray[np.int64]] = []
        with self._lock:
            for shard in self._all_shards():
                if shard.live == 0:
                    continue
                lims, dist, rows = _range_search(qpre, shard.prefix[: shard.n], limit)
                if len(rows) == 0:
                    continue
                qi = np.repeat(np.arange(nq, dtype=np.int64), np.diff(lims).astype(np.int64))
                if shard.ndead and shard.dead is not None:
                    keep = ~shard.dead[rows]
                    qi, dist, rows = qi[keep], dist[keep], rows[keep]
                if self.suffix_bytes and len(rows):
                    tail = np.bitwise_xor(shard.suffix[rows], qsuf[qi])
                    dist = dist + np.bitwise_count(tail).sum(axis=1, dtype=np.int64)
                    keep = dist <= radius
                    qi, dist, rows = qi[keep], dist[keep], rows[keep]
                if len(rows):
                    out_q.append(qi)
                    out_id.append(shard.ids[rows].astype(np.int64))
                    out_d.append(dist)
        if not out_q:
            return empty, empty, empty
        return np.concatenate(out_q), np.concatenate(out_id), np.concatenate(out_d)

    # -- snapshots --------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the live rows to directory ``path`` (``header.json`` + ``.npy`` files),
        atomically: a reader sees the old snapshot or the new one, never a mix."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.tmp-{os.getpid()}-{secrets.token_hex(6)}"
        tmp.mkdir()
        try:
            with self._lock:
                shards = [s for s in self._all_shards() if s.live]
                count = sum(s.live for s in shards)
                specs = {
                    "prefix": (np.uint8, (count, self.prefix_bytes)),
                    "suffix": (np.uint8, (count, self.suffix_bytes)),
                    "ids": (np.uint32, (count,)),
                }
                crcs = {name: 0 for name in specs}
                files = {name: open(tmp / f"{name}.npy", "wb") for name in specs}  # noqa: SIM115
                try:
                    for name, (dtype, shape) in specs.items():
                        _write_npy_header(files[name], np.dtype(dtype), shape)
                    for shard in shards:
                        ids, prefix, suffix = shard.live_rows()
                        for name, arr in (("prefix", prefix), ("suffix", suffix), ("ids", ids)):
                            data = _byte_view(np.ascontiguousarray(arr))
                            files[name].write(data)
                            crcs[name] = zlib.crc32(data, crcs[name])
                finally:
                    for f in files.values():
                        f.close()
                header = {
                    "kind": SNAPSHOT_KIND,
                    "format": SNAPSHOT_FORMAT,
                    "bits": self.bits,
                    "prefix_bytes": self.prefix_bytes,
                    "count": count,
                    "shards": [[s.live, s.sorted] for s in shards],
                    "crc32": crcs,
                    "written_at": time.time(),
                }
            (tmp / "header.json").write_text(json.dumps(header), encoding="utf-8")
            _replace_dir(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike[str], **options: Any) -> HammingIndex:
        """Read a snapshot written by :meth:`save`; :class:`SnapshotError` if it is missing,
        of another format, truncated or corrupt. ``options`` go to the constructor."""
        source = Path(path)
        try:
            header = json.loads((source / "header.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SnapshotError(f"index snapshot {source}: no readable header ({exc})") from None
        if not isinstance(header, dict) or header.get("kind") != SNAPSHOT_KIND:
            raise SnapshotError(f"index snapshot {source}: not a HammingIndex snapshot")
        if header.get("format") != SNAPSHOT_FORMAT:
            raise SnapshotError(
                f"index snapshot {source}: format {header.get('format')!r}, "
                f"this version reads {SNAPSHOT_FORMAT}"
            )
        try:
            bits, count = int(header["bits"]), int(header["count"])
            prefix_bytes = int(header["prefix_bytes"])
            layout = [(int(n), bool(s)) for n, s in header["shards"]]
            crcs = {k: int(v) for k, v in header["crc32"].items()}
            index = cls(bits, prefix_bits=prefix_bytes * 8, **options)
        except (KeyError, TypeError, ValueError) as exc:
            raise SnapshotError(f"index snapshot {source}: bad header ({exc})") from None
        if sum(n for n, _ in layout) != count or any(n <= 0 for n, _ in layout):
            raise SnapshotError(f"index snapshot {source}: shard sizes do not add up to {count}")
        shards = [index._new_shard(n, sorted_=s) for n, s in layout]
        specs: dict[str, tuple[np.dtype[Any], tuple[int, ...]]] = {
            "prefix": (np.dtype(np.uint8), (count, index.prefix_bytes)),
            "suffix": (np.dtype(np.uint8), (count, index.suffix_bytes)),
            "ids": (np.dtype(np.uint32), (count,)),
        }
        for name, (dtype, shape) in specs.items():
            try:
                with open(source / f"{name}.npy", "rb") as f:
                    _read_npy_header(f, dtype, shape, name)
                    crc = 0
                    for shard, (n, _) in zip(shards, layout, strict=True):
                        crc = _read_into(f, getattr(shard, name)[:n], crc, name)
                    if f.read(1):
                        raise SnapshotError(f"{name}.npy is longer than its header says")
            except OSError as exc:
                raise SnapshotError(
                    f"index snapshot {source}: cannot read {name}.npy ({exc})"
                ) from None
            except SnapshotError as exc:
                raise SnapshotError(f"index snapshot {source}: {exc}") from None
            if crc != crcs.get(name):
                raise SnapshotError(f"index snapshot {source}: {name}.npy checksum mismatch")
        for shard, (n, sorted_) in zip(shards, layout, strict=True):
            shard.n = n
            if sorted_ and not _is_sorted(shard.ids[:n]):
                raise SnapshotError(f"index snapshot {source}: a sorted shard is out of order")
        index._shards = [s for s in shards if s.sorted] or index._shards
        unsorted = [s for s in shards if not s.sorted]
        if len(unsorted) > 1:
            raise SnapshotError(f"index snapshot {source}: more than one unsorted shard")
        if unsorted:
            index._buffer = unsorted[0]
        index._live = count
        return index

    # -- input checks -----------------------------------------------------------------------

    def _check_bytes(self, hash_bytes: bytes) -> bytes:
        if not isinstance(hash_bytes, bytes | bytearray | memoryview):
            raise TypeError(f"hash must be bytes, got {type(hash_bytes).__name__}")
        if len(hash_bytes) != self.nbytes:
            raise ValueError(f"hash must be {self.nbytes} bytes, got {len(hash_bytes)}")
        return bytes(hash_bytes)

    def _to_byte_rows(self, hashes: HashArray) -> npt.NDArray[np.uint8]:
        arr = np.asarray(hashes)
        if arr.ndim != 2:
            raise ValueError(f"hashes must be a 2-D array, got shape {arr.shape}")
        if arr.dtype == np.uint8 and arr.shape[1] == self.nbytes:
            return np.ascontiguousarray(arr)
        if arr.dtype == np.uint64 and arr.shape[1] * 8 == self.nbytes:
            return np.ascontiguousarray(arr).view(np.uint8)
        raise ValueError(
            f"hashes must be uint8 (n, {self.nbytes}) or uint64 (n, {self.nbytes // 8}), "
            f"got {arr.dtype} {arr.shape}"
        )


def _range_search(
    queries: npt.NDArray[np.uint8], base: npt.NDArray[np.uint8], limit: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], Rows]:
    """faiss over raw arrays: rows of ``base`` at prefix distance < ``limit`` per query."""
    faiss = _faiss()
    nq = len(queries)
    res = faiss.RangeSearchResult(nq)
    faiss.hamming_range_search(
        faiss.swig_ptr(queries),
        faiss.swig_ptr(base),
        nq,
        len(base),
        limit,
        queries.shape[1],
        res,
    )
    lims = faiss.rev_swig_ptr(res.lims, nq + 1).astype(np.int64)
    total = int(lims[-1])
    if total == 0:
        empty = np.empty(0, dtype=np.int64)
        return lims, empty, empty
    dist = faiss.rev_swig_ptr(res.distances, total).astype(np.int64)
    rows = faiss.rev_swig_ptr(res.labels, total).astype(np.int64)
    return lims, dist, rows


def _min_per_key(
    qi: Rows, ids: npt.NDArray[np.int64], dist: npt.NDArray[np.int64]
) -> tuple[Rows, npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Keep one ``(query, id)`` pair each, at its smallest distance."""
    order = np.lexsort((dist, ids, qi))
    qi, ids, dist = qi[order], ids[order], dist[order]
    first = np.ones(len(ids), dtype=np.bool_)
    first[1:] = (qi[1:] != qi[:-1]) | (ids[1:] != ids[:-1])
    return qi[first], ids[first], dist[first]


def _expand_ranges(starts: npt.NDArray[np.intp], counts: npt.NDArray[np.intp]) -> Rows:
    """Concatenated ``range(start, start + count)`` for each pair, vectorised."""
    total = int(counts.sum())
    offsets = np.repeat(np.cumsum(counts) - counts, counts)
    return (np.repeat(starts, counts) + (np.arange(total) - offsets)).astype(np.int64)


def _sorted_unique(a: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """``np.unique`` by sorting (numpy 2.4's hash-based unique is ~10x slower here)."""
    a = np.sort(a)
    if len(a) < 2:
        return a
    keep = np.empty(len(a), dtype=np.bool_)
    keep[0] = True
    np.not_equal(a[1:], a[:-1], out=keep[1:])
    return a[keep]


def _is_sorted(a: npt.NDArray[Any]) -> bool:
    return bool(len(a) < 2 or np.all(a[1:] >= a[:-1]))


def _default_prefix_bytes(nbytes: int) -> int:
    # 128 bits: at radius 31 a random prefix is a false candidate ~1e-9 of the time, and
    # faiss has a dedicated 16-byte kernel. Longer hashes scan their first half.
    if nbytes <= 16:
        return nbytes
    return max(16, (nbytes // 2) // 8 * 8)


def _check_bits(bits: int) -> int:
    if bits <= 0 or bits % 64:
        raise ValueError(f"bits must be a positive multiple of 64, got {bits}")
    return bits // 8


def _check_ids(ids: Sequence[int] | npt.NDArray[np.integer], n: int) -> IdArray:
    arr = np.asarray(ids)
    if arr.ndim != 1 or len(arr) != n:
        raise ValueError(f"got {arr.size} ids for {n} hashes")
    if len(arr) == 0:
        return np.empty(0, dtype=np.uint32)
    if arr.dtype == object:  # Python ints too large for int64
        try:
            values = [operator.index(x) for x in arr.tolist()]
        except TypeError:
            raise ValueError("entry ids must be integers") from None
        bad = next(v for v in values if not 0 <= v <= MAX_ID)
        raise ValueError(f"entry ids must be in [0, {MAX_ID}] (uint32), got {bad}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError("entry ids must be integers")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi > MAX_ID:
        raise ValueError(f"entry ids must be in [0, {MAX_ID}] (uint32), got {lo if lo < 0 else hi}")
    return arr.astype(np.uint32)


def _lookup_keys(ids: Sequence[int] | npt.NDArray[np.integer]) -> IdArray:
    """Sorted unique uint32 keys of ``ids``, dropping ids that cannot be present."""
    arr = np.asarray(ids)
    if arr.size == 0:
        return np.empty(0, dtype=np.uint32)
    if arr.dtype == object:  # Python ints too large for int64: none can be present
        values = [operator.index(x) for x in arr.reshape(-1).tolist()]
        arr = np.array([v for v in values if 0 <= v <= MAX_ID], dtype=np.int64)
    elif not np.issubdtype(arr.dtype, np.integer):
        raise ValueError("entry ids must be integers")
    arr = arr.reshape(-1)
    arr = arr[(arr >= 0) & (arr <= MAX_ID)]
    return _sorted_unique(arr.astype(np.uint32))


def _write_npy_header(f: BinaryIO, dtype: np.dtype[Any], shape: tuple[int, ...]) -> None:
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(f, header)


def _read_npy_header(f: BinaryIO, dtype: np.dtype[Any], shape: tuple[int, ...], name: str):
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            got_shape, fortran, got_dtype = np.lib.format.read_array_header_1_0(f)
        else:
            got_shape, fortran, got_dtype = np.lib.format.read_array_header_2_0(f)
    except ValueError as exc:
        raise SnapshotError(f"{name}.npy is not a .npy file ({exc})") from None
    if tuple(got_shape) != shape or got_dtype != dtype or fortran:
        raise SnapshotError(
            f"{name}.npy holds {got_dtype} {tuple(got_shape)}, expected {dtype} {shape}"
        )


def _read_into(f: BinaryIO, dest: npt.NDArray[Any], crc: int, name: str) -> int:
    """Fill ``dest`` from ``f`` without an intermediate copy; returns the running crc32."""
    view = _byte_view(dest)
    pos = 0
    while pos < len(view):
        got = f.readinto(view[pos : pos + _READ_CHUNK])  # type: ignore[attr-defined]
        if not got:
            raise SnapshotError(f"{name}.npy is truncated")
        crc = zlib.crc32(view[pos : pos + got], crc)
        pos += got
    return crc


def _byte_view(arr: npt.NDArray[Any]) -> memoryview:
    """Flat writable bytes of a C-contiguous array (also for zero-width rows)."""
    flat: Any = arr.reshape(-1).view(np.uint8)
    return memoryview(flat)


def _replace_dir(tmp: Path, target: Path) -> None:
    """Move the finished directory ``tmp`` to ``target``, replacing an older one. Safe with
    several processes doing the same: each rename is atomic and every candidate complete."""
    for _ in range(20):
        try:
            os.rename(tmp, target)
            return
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.EISDIR):
                raise
        old = target.parent / f".{target.name}.old-{os.getpid()}-{secrets.token_hex(6)}"
        try:
            os.rename(target, old)
        except FileNotFoundError:
            continue
        try:
            os.rename(tmp, target)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.EISDIR):
                raise
            continue
        finally:
            shutil.rmtree(old, ignore_errors=True)
        return
    raise OSError(f"could not move snapshot into place at {target}")


def iter_shard_sizes(index: HammingIndex) -> Iterator[tuple[int, int, bool]]:
    """``(rows, dead rows, sorted)`` per non-empty shard, for tests and reports."""
    for shard in index._all_shards():
        if shard.n:
            yield shard.n, shard.ndead, shard.sorted
