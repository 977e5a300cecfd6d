"""In-memory bank matching held by each worker, kept current from the database change log.

One :class:`~moderation.index.HammingIndex` per bank, searched at that bank's own radius:
256-bit PDQ hashes for image and video banks, 64-bit SimHashes (models.text_simhash) for
text banks. The bank's kind decides the width of its index and which entries go in.
A worker starts from a snapshot of the indexes on disk when a valid one exists (reading
~360 MB of arrays instead of 10 M database rows) and replays the change log from the
snapshot's sequence number; otherwise it loads from the database and writes a snapshot.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.image_robust import MIRROR_MARGIN
from models.text_simhash import validate_simhash_hex
from moderation.banks import DEFAULT_THRESHOLD, SIGNAL_FOR_KIND
from moderation.index import (
    HammingIndex,
    SnapshotError,
    hashes_from_hex,
    set_search_threads,
)
from moderation.policy import BankHit
from moderation.storage.tables import BankEntryHashRow, BankEntryRow, BankRow, ChangeRow
from moderation.video_align import AlignParams, align_arrays, extend_edges, segment_to_dict

log = logging.getLogger(__name__)

_CHUNK = 50_000  # bank entries per query on a full load
_CHANGE_CHUNK = 50_000  # change-log rows per query on a refresh
_IN_CHUNK = 500  # ids per IN (...) when fetching added entries
_RANGE_CHUNK = 10_000  # added ids per range query when they are dense (bulk imports)
# 2: entries may have extra reference hashes (bank_entry_hashes); 3: text banks' 64-bit
# SimHash indexes too (a format-2 snapshot has none, so it must not be restored).
SNAPSHOT_FORMAT = 3
# Width of the index of each signal type a bank holds (banks.SIGNAL_FOR_KIND).
SIGNAL_BITS = {"pdq": 256, "simhash": 64}
MATCHED_SIGNALS = tuple(SIGNAL_BITS)
_WIDTHS = frozenset(SIGNAL_BITS.values())
TEXT_KINDS = frozenset(k for k, sig in SIGNAL_FOR_KIND.items() if sig == "simhash")
MEDIA_KINDS = frozenset(k for k, sig in SIGNAL_FOR_KIND.items() if sig == "pdq")
IMAGE_KINDS = frozenset({"image"})
VIDEO_KINDS = frozenset({"video"})
# A video entry's sampled frames are extra reference hashes named by their time:
# "at_ms:12000" is the frame 12 s into the reference.
FRAME_PREFIX = "at_ms:"
# A reference video becomes a candidate for alignment when this many query frames hit it.
CANDIDATE_FRAMES = 2
# A found segment's ends move out over neighbouring frames this close to the reference
# (see video_align.extend_edges); chosen on the bench's seed 1.
EDGE_RADIUS = 112
# (times in seconds, (n, 32) uint8 PDQ codes) of the given video entries' frames.
ReferenceFrames = Callable[[Sequence[int]], dict[int, tuple[np.ndarray, np.ndarray]]]
# An index row of a reference hash that carries a margin (models.image_robust: the exact
# mirror) is stored under the entry id with this bit set, so the index needs no per-row
# payload: a hit on it is that entry, that many bits further away. Entry ids stay below.
MARGIN_FLAG = 1 << 31
FLAGGED_MARGIN = MIRROR_MARGIN
# The media index of text hits: an item's media are 0..n-1, its text is its own object.
TEXT_MEDIA_INDEX = -1
REFERENCE_MARGINS = {"mirror": MIRROR_MARGIN}
# A full load smaller than this is quick from the database; no snapshot is written.
SNAPSHOT_MIN_ROWS = 50_000
# A restart that replays more changes than this writes a fresh snapshot.
SNAPSHOT_REPLAY_REWRITE = 20_000
# Older snapshot versions are deleted only after this long, so a worker still reading one
# is not cut short.
SNAPSHOT_GRACE_S = 120.0


@dataclass(frozen=True)
class BankMeta:
    id: int
    name: str
    kind: str
    action: str
    threshold: int
    owner: str | None
    enabled: bool

    def hit(
        self,
        entry_id: int,
        distance: int,
        media_index: int,
        *,
        variant: str = "plain",
        review_band: int | None = None,
        segments: tuple[dict[str, float], ...] | None = None,
        score: float | None = None,
        threshold: int | None = None,
    ) -> BankHit:
        """A hit on this bank, carrying its threshold (or the one it was matched at), action
        and owner for the policy."""
        return BankHit(
            bank=self.name,
            entry_id=entry_id,
            distance=distance,
            threshold=self.threshold if threshold is None else threshold,
            action=self.action,  # type: ignore[arg-type]
            owner=self.owner,
            media_index=media_index,
            variant=variant,
            review_band=review_band,
            segments=segments,
            score=score,
        )


class BankMatcher:
    """Exact Hamming search over every PDQ (image, video) and SimHash (text) entry of every
    bank, with per-bank thresholds."""

    def __init__(self, *, search_threads: int | None = None) -> None:
        if search_threads is not None:
            set_search_threads(search_threads)
        self.indexes: dict[int, HammingIndex] = {}
        self.banks: dict[int, BankMeta] = {}
        self.last_seq = 0
        self.last_refresh = 0.0
        # How the last load went: {"source": "snapshot" | "database", "replayed": n, ...}.
        self.load_info: dict[str, Any] = {}
        self._lock = threading.Lock()

    @property
    def entries(self) -> int:
        """Live rows over every bank's index."""
        return sum(len(idx) for idx in self.indexes.values())

    # -- loading --------------------------------------------------------------------------

    def load(
        self,
        session: Session,
        snapshot_dir: str | os.PathLike[str] | None = None,
        *,
        snapshot_min_rows: int = SNAPSHOT_MIN_ROWS,
    ) -> None:
        """Load every bank's index: from the newest valid snapshot under ``snapshot_dir``
        plus the changes logged since, else from the database (then writing a snapshot if
        the banks hold at least ``snapshot_min_rows`` entries)."""
        started = time.perf_counter()
        store = _SnapshotStore.for_session(snapshot_dir, session) if snapshot_dir else None
        with self._lock:
            self._load_banks(session)
            restored = store.restore(session) if store is not None else None
            if restored is not None:
                self.indexes, self.last_seq, where = restored
                self.load_info = {"source": "snapshot", "snapshot": str(where)}
            else:
                self._load_from_database(session)
                self.load_info = {"source": "database"}
        replayed = self._replay(session)[1] if restored is not None else 0
        self.load_info.update(replayed=replayed, entries=self.entries)
        self.load_info["seconds"] = round(time.perf_counter() - started, 3)
        if store is None:
            return
        if (restored is None and self.entries >= snapshot_min_rows) or (
            restored is not None and replayed >= SNAPSHOT_REPLAY_REWRITE
        ):
            written = self._write_snapshot(session, store)
            self.load_info["snapshot_written"] = str(written) if written else None

    def write_snapshot(self, session: Session, snapshot_dir: str | os.PathLike[str]) -> Path | None:
        """Write the current indexes as a new snapshot version. Never raises on I/O errors:
        a snapshot is a cache, and a worker runs on without one. None if nothing was written
        (an empty change log, or a version at this seq is already there)."""
        return self._write_snapshot(session, _SnapshotStore.for_session(snapshot_dir, session))

    def _write_snapshot(self, session: Session, store: _SnapshotStore) -> Path | None:
        try:
            with self._lock:
                fingerprint = _change_fingerprint(session, self.last_seq)
                return store.write(self.indexes, self.last_seq, fingerprint)
        except OSError as exc:
            log.warning("could not write an index snapshot under %s: %s", store.dir, exc)
            return None

    def _load_from_database(self, session: Session) -> None:
        # The log head first: anything committed while loading replays on the next refresh
        # (an entry seen by both is skipped: replayed adds only insert ids not present).
        self.last_seq = session.scalar(select(func.max(ChangeRow.seq))) or 0
        self.indexes = {}
        last = 0
        while True:
            rows = session.execute(
                select(BankEntryRow.id, BankEntryRow.bank_id, BankEntryRow.value)
                .where(BankEntryRow.signal_type.in_(MATCHED_SIGNALS), BankEntryRow.id > last)
                .order_by(BankEntryRow.id)
                .limit(_CHUNK)
            ).all()
            if not rows:
                break
            self._add_rows(_with_extra_hashes(session, rows), skip_present=False)
            last = rows[-1][0]

    def _load_banks(self, session: Session) -> None:
        self.banks = {
            r.id: BankMeta(r.id, r.name, r.kind, r.action, r.threshold, r.owner, r.enabled)
            for r in session.scalars(select(BankRow))
        }

    def _bits_for(self, bank_id: int, value_bits: int) -> int:
        """Width of a bank's index: its kind's signal, else (a bank this matcher has not
        seen yet) its existing index's, else that of the values being added."""
        bank = self.banks.get(bank_id)
        if bank is not None and bank.kind in SIGNAL_FOR_KIND:
            return SIGNAL_BITS[SIGNAL_FOR_KIND[bank.kind]]
        index = self.indexes.get(bank_id)
        return index.bits if index is not None else value_bits

    def _index_for(self, bank_id: int, bits: int = 256) -> HammingIndex:
        index = self.indexes.get(bank_id)
        if index is None:
            index = self.indexes[bank_id] = HammingIndex(bits=bits)
        return index

    def _add_rows(self, rows: Sequence[Any], *, skip_present: bool) -> None:
        """Add ``(entry_id, bank_id, hex value)`` rows, one batch per bank. A value whose
        width is not the bank's (a PDQ hash stored in a text bank before text banks were
        matched) is skipped."""
        if not rows:
            return
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        banks = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
        values = [r[2] for r in rows]
        widths = np.fromiter(map(len, values), dtype=np.int64, count=len(rows)) * 4
        first = int(widths[0])
        uniform = first in _WIDTHS and bool((widths == first).all())
        codes = hashes_from_hex(values, first) if uniform else None  # one call in bulk loads
        for bank_id in np.unique(banks).tolist():
            mask = banks == bank_id
            bits = self._bits_for(bank_id, int(widths[mask][0]))
            fits = mask & (widths == bits) if bits in _WIDTHS else np.zeros_like(mask)
            if int(fits.sum()) < int(mask.sum()):
                log.warning(
                    "bank %s: skipping %d entries whose values are not %d-bit hashes",
                    bank_id,
                    int(mask.sum() - fits.sum()),
                    bits,
                )
                if not fits.any():
                    continue
            index = self._index_for(bank_id, bits)
            if index.bits != bits:
                continue  # the bank's kind changed under an old index; never mix widths
            if codes is not None and codes.shape[1] * 8 == bits:
                bank_ids, bank_codes = ids[fits], codes[fits]
            else:
                rows_at = np.flatnonzero(fits).tolist()
                bank_ids = ids[fits]
                bank_codes = hashes_from_hex([values[i] for i in rows_at], bits)
            if skip_present:
                new = ~index.contains_many(bank_ids)
                bank_ids, bank_codes = bank_ids[new], bank_codes[new]
            if len(bank_ids):
                index.add_many(bank_ids, bank_codes)

    # -- change log -------------------------------------------------------------------------

    def refresh(self, session: Session) -> set[str]:
        """Apply changes logged since the last refresh; returns the topics that changed."""
        return self._replay(session)[0]

    def _replay(self, session: Session) -> tuple[set[str], int]:
        topics: set[str] = set()
        applied = 0
        with self._lock:
            while True:
                changes = session.execute(
                    select(ChangeRow.seq, ChangeRow.topic, ChangeRow.ref_id, ChangeRow.op)
                    .where(ChangeRow.seq > self.last_seq)
                    .order_by(ChangeRow.seq)
                    .limit(_CHANGE_CHUNK)
                ).all()
                if changes:
                    self._apply(session, changes)
                    self.last_seq = changes[-1][0]
                    topics.update(topic for _, topic, _, _ in changes)
                    applied += len(changes)
                if len(changes) < _CHANGE_CHUNK:
                    break
            self.last_refresh = time.monotonic()
        return topics, applied

    def _apply(self, session: Session, changes: Sequence[Any]) -> None:
        if any(topic == "bank" for _, topic, _, _ in changes):
            self._load_banks(session)
        added = [ref for _, topic, ref, op in changes if topic == "bank_entry" and op == "add"]
        rows = _fetch_entries(session, added)
        # In log order, batching runs of the same operation.
        adds: list[int] = []
        removes: list[int] = []

        def flush() -> None:
            if adds:
                batch = [rows[r] for r in dict.fromkeys(adds)]
                self._add_rows(_with_extra_hashes(session, batch), skip_present=True)
                adds.clear()
            if removes:
                flagged = [r | MARGIN_FLAG for r in removes if r < MARGIN_FLAG]
                for index in self.indexes.values():
                    index.remove_many(removes + flagged)
                removes.clear()

        for _, topic, ref, op in changes:
            if topic == "bank_entry" and op == "add" and ref in rows:
                if removes:
                    flush()
                adds.append(ref)
            elif topic == "bank_entry" and op == "remove":
                if adds:
                    flush()
                removes.append(ref)
            elif topic == "bank" and op == "remove":
                flush()
                self.indexes.pop(ref, None)
        flush()

    # -- matching ---------------------------------------------------------------------------

    def match_pdq(
        self,
        value: str,
        *,
        review_band: int = 0,
        media_index: int = 0,
        bank_names: set[str] | None = None,
    ) -> list[BankHit]:
        """Hits within each enabled bank's threshold (plus the review band for block banks),
        by distance then entry id."""
        return self.match_pdq_many(
            [value], review_band=review_band, media_index=media_index, bank_names=bank_names
        )

    def match_pdq_many(
        self,
        values: Sequence[str | tuple[str, int, str]],
        *,
        review_band: int = 0,
        media_index: int = 0,
        bank_names: set[str] | None = None,
        kinds: frozenset[str] = MEDIA_KINDS,
    ) -> list[BankHit]:
        """:meth:`match_pdq` for several hashes of one media object (rotations, flips, crops,
        frames) in one scan per bank and margin: one hit per entry, at its smallest distance.

        A value is a hex hash or ``(hex, margin, variant name)``; a variant with a margin
        only matches within the radius minus its margin, and its reported distance
        includes the margin, so policy treats it like a plain hash that much further away.
        """
        searched = self._searched(kinds, bank_names)
        if not searched or not values:
            return []
        groups: dict[int, tuple[list[str], list[str]]] = {}
        for v in values:
            hex_value, margin, name = (v, 0, "plain") if isinstance(v, str) else v
            hexes, names = groups.setdefault(int(margin), ([], []))
            hexes.append(hex_value)
            names.append(name)
        hits: list[BankHit] = []
        for bank, index in searched:
            band = review_band if bank.action == "block" else 0
            # A video bank's threshold is per frame of a time-aligned run; one still frame
            # alone must be as close as an image bank's default asks.
            limit = bank.threshold
            if bank.kind in VIDEO_KINDS:
                limit = min(limit, DEFAULT_THRESHOLD["image"])
            best: dict[int, tuple[int, str]] = {}
            for margin, (hexes, names) in sorted(groups.items()):
                radius = limit + band - margin
                if radius < 0:
                    continue
                queries = hashes_from_hex(hexes)
                per_query = index.search_many(queries, radius)
                for name, found in zip(names, per_query, strict=True):
                    for row_id, distance in found:
                        d, entry_id, label = distance + margin, row_id, name
                        if row_id >= MARGIN_FLAG:
                            # The entry's stored mirror hash: the upload is its mirror image.
                            entry_id = row_id - MARGIN_FLAG
                            d += FLAGGED_MARGIN
                            label = "mirror" if name == "plain" else f"{name}+mirror"
                        if entry_id not in best or d < best[entry_id][0]:
                            best[entry_id] = (d, label)
            for entry_id, (distance, name) in best.items():
                if distance > limit + band:
                    continue  # a flagged reference row, beyond once its margin counts
                hits.append(
                    bank.hit(entry_id, distance, media_index, variant=name, threshold=limit)
                )
        hits.sort(key=lambda h: (h.distance, h.entry_id))
        return hits

    def match_video(
        self,
        frames: Sequence[tuple[float, str]],
        reference_frames: ReferenceFrames,
        *,
        review_band: int = 0,
        media_index: int = 0,
        bank_names: set[str] | None = None,
        params: AlignParams | None = None,
    ) -> list[BankHit]:
        """Time-aligned matches of a video's ``(t, pdq hex)`` frames in the video banks: one
        hit per reference entry, carrying each segment where the upload plays part of it.

        The index finds reference entries that several query frames hit; each candidate's
        frames (from ``reference_frames``) are then compared with every query frame and
        :func:`~moderation.video_align.align` keeps only runs that agree in time, so single
        colliding frames of look-alike videos never make a match.
        """
        searched = [(b, i) for b, i in self._searched(VIDEO_KINDS, bank_names) if i.bits == 256]
        if not searched or not frames:
            return []
        query_times = np.array([t for t, _ in frames], np.float64)
        codes = hashes_from_hex([h for _, h in frames])
        candidates: dict[int, tuple[BankMeta, int]] = {}
        for bank, index in searched:
            radius = bank.threshold + (review_band if bank.action == "block" else 0)
            support: dict[int, set[int]] = {}
            for q, found in enumerate(index.search_many(codes, radius)):
                for row_id, _ in found:
                    if row_id < MARGIN_FLAG:
                        support.setdefault(row_id, set()).add(q)
            for entry_id, hit_frames in support.items():
                if len(hit_frames) >= CANDIDATE_FRAMES:
                    candidates[entry_id] = (bank, radius)
        if not candidates:
            return []
        references = reference_frames(sorted(candidates))
        base = params or AlignParams()
        # The chance test's budget is per query, shared by every reference it is run on.
        base = replace(base, max_false_alarms=min(base.max_false_alarms, 1e-2 / len(candidates)))
        hits: list[BankHit] = []
        for entry_id, (bank, radius) in sorted(candidates.items()):
            if entry_id not in references:
                continue  # removed since the index saw it
            ref_times, ref_codes = references[entry_id]
            distances = hamming_matrix(codes, ref_codes)
            qi, ri = np.nonzero(distances <= radius)
            hit_q, hit_r, hit_d = query_times[qi], ref_times[ri], distances[qi, ri]
            params = replace(base, threshold=radius)
            duration = float(ref_times.max()) + params.sample_interval_s
            segments: list[dict[str, float]] = []
            medians: list[int] = []
            aligned = align_arrays(hit_q, hit_r, hit_d, query_times, params, ref_duration=duration)
            if radius < EDGE_RADIUS:
                aligned = extend_edges(
                    aligned,
                    query_times,
                    ref_times,
                    distances,
                    radius=EDGE_RADIUS,
                    jitter_s=params.jitter_s,
                    ref_duration=duration,
                )
            for seg in aligned:
                inside = (
                    (hit_q >= seg.query_start)
                    & (hit_q <= seg.query_end)
                    & (hit_r >= seg.ref_start - params.jitter_s)
                    & (hit_r <= seg.ref_end + params.jitter_s)
                )
                medians.append(int(np.median(hit_d[inside])) if inside.any() else radius)
                segments.append(segment_to_dict(seg))
            if segments:
                hits.append(
                    bank.hit(
                        entry_id,
                        min(medians),
                        media_index,
                        variant="segment",
                        segments=tuple(segments),
                        score=max(x["score"] for x in segments),
                    )
                )
        hits.sort(key=lambda h: (h.distance, h.entry_id))
        return hits

    def match_simhash(
        self,
        value: str,
        *,
        review_band: int = 0,
        bank_names: set[str] | None = None,
        media_index: int = TEXT_MEDIA_INDEX,
    ) -> list[BankHit]:
        """Text bank hits of one 64-bit SimHash (16 hex digits): every entry within its
        enabled text bank's threshold, plus ``review_band`` for ``block`` banks (as in
        :meth:`match_pdq_many`), by distance then entry id.

        ``media_index`` defaults to :data:`TEXT_MEDIA_INDEX` (-1): an item's text is its own
        object, so an allow-list text bank suppresses other text hits and never an image's
        (policy.decide groups allow-list suppression by media index).
        """
        query = hashes_from_hex([validate_simhash_hex(value)], SIGNAL_BITS["simhash"])
        hits: list[BankHit] = []
        for bank, index in self._searched(TEXT_KINDS, bank_names):
            if index.bits != SIGNAL_BITS["simhash"]:
                continue
            radius = bank.threshold + (review_band if bank.action == "block" else 0)
            for entry_id, distance in index.search_many(query, radius)[0]:
                if entry_id >= MARGIN_FLAG:
                    continue  # text entries have no flagged reference rows
                hits.append(bank.hit(entry_id, distance, media_index, review_band=review_band))
        hits.sort(key=lambda h: (h.distance, h.entry_id))
        return hits

    def _searched(
        self, kinds: frozenset[str], bank_names: set[str] | None
    ) -> list[tuple[BankMeta, HammingIndex]]:
        """Enabled banks of ``kinds`` (and in ``bank_names``) with a non-empty index."""
        out: list[tuple[BankMeta, HammingIndex]] = []
        for bank in self.banks.values():
            if not bank.enabled or bank.kind not in kinds:
                continue
            if bank_names is not None and bank.name not in bank_names:
                continue
            index = self.indexes.get(bank.id)
            if index is not None and len(index):
                out.append((bank, index))
        return out


def hamming_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distances between every row of ``a`` and of ``b`` (uint8 codes, same width)."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)), np.int32)
    x = (
        np.ascontiguousarray(a).view(np.uint64)[:, None, :]
        ^ np.ascontiguousarray(b).view(np.uint64)[None, :, :]
    )
    return np.bitwise_count(x).sum(axis=2, dtype=np.int32)


def load_reference_frames(
    session: Session, entry_ids: Sequence[int]
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """The sampled frames of video entries, in time order: ``id -> (seconds, codes)``."""
    rows: dict[int, list[tuple[float, str]]] = {}
    for i in range(0, len(entry_ids), _IN_CHUNK):
        chunk = list(entry_ids[i : i + _IN_CHUNK])
        query = select(BankEntryHashRow.entry_id, BankEntryHashRow.name, BankEntryHashRow.value)
        query = query.where(
            BankEntryHashRow.entry_id.in_(chunk), BankEntryHashRow.name.startswith(FRAME_PREFIX)
        )
        for entry_id, name, value in session.execute(query):
            # "at_ms:<ms>" or "at_ms:<ms>:<window>": every variant counts as that moment.
            t = int(name.removeprefix(FRAME_PREFIX).split(":", 1)[0]) / 1000.0
            rows.setdefault(entry_id, []).append((t, value))
    out = {}
    for entry_id, frames in rows.items():
        frames.sort()
        out[entry_id] = (
            np.array([t for t, _ in frames], np.float64),
            hashes_from_hex([v for _, v in frames]),
        )
    return out


def _fetch_entries(session: Session, ids: Sequence[int]) -> dict[int, Any]:
    """``id -> (id, bank_id, value)`` of the matched (PDQ, SimHash) entries among ``ids``
    that still exist. Dense runs of ids (a bulk import) are read with one range query each,
    others by IN."""
    wanted = sorted(set(ids))
    cols = (BankEntryRow.id, BankEntryRow.bank_id, BankEntryRow.value)
    matched = BankEntryRow.signal_type.in_(MATCHED_SIGNALS)
    out: dict[int, Any] = {}
    for start in range(0, len(wanted), _RANGE_CHUNK):
        window = wanted[start : start + _RANGE_CHUNK]
        lo, hi = window[0], window[-1]
        if hi - lo < 2 * len(window):
            members = set(window)
            query = select(*cols).where(matched, BankEntryRow.id >= lo, BankEntryRow.id <= hi)
            out.update((r[0], r) for r in session.execute(query) if r[0] in members)
            continue
        for i in range(0, len(window), _IN_CHUNK):
            query = select(*cols).where(matched, BankEntryRow.id.in_(window[i : i + _IN_CHUNK]))
            out.update((r[0], r) for r in session.execute(query))
    return out


def _with_extra_hashes(session: Session, rows: Sequence[Any]) -> list[Any]:
    """``rows`` of ``(entry_id, bank_id, value)`` plus one row per extra reference hash of
    those entries (same id and bank), ordered by id so the index appends in order."""
    if not rows:
        return []
    bank_of = {r[0]: r[1] for r in rows}
    ids = sorted(bank_of)
    cols = (BankEntryHashRow.entry_id, BankEntryHashRow.value, BankEntryHashRow.name)
    if ids[-1] - ids[0] < 4 * len(ids):  # dense (a load chunk, a bulk add): one range
        queries = [select(*cols).where(BankEntryHashRow.entry_id.between(ids[0], ids[-1]))]
    else:
        queries = [
            select(*cols).where(BankEntryHashRow.entry_id.in_(ids[i : i + _IN_CHUNK]))
            for i in range(0, len(ids), _IN_CHUNK)
        ]
    out: list[Any] = list(rows)
    for query in queries:
        for entry_id, value, name in session.execute(query):
            bank_id = bank_of.get(entry_id)
            if bank_id is None or entry_id >= MARGIN_FLAG:
                continue
            flag = MARGIN_FLAG if REFERENCE_MARGINS.get(name, 0) else 0
            out.append((entry_id | flag, bank_id, value))
    if len(out) > len(rows):
        out.sort(key=lambda r: r[0])
    return out


def _change_fingerprint(session: Session, seq: int) -> list[Any] | None:
    """What identifies change ``seq`` in this database's history (None if there is none)."""
    if not seq:
        return None
    row = session.execute(
        select(ChangeRow.topic, ChangeRow.ref_id, ChangeRow.op, ChangeRow.created_at).where(
            ChangeRow.seq == seq
        )
    ).first()
    if row is None:
        return None
    return [row[0], int(row[1]), row[2], str(row[3])]


def database_key(session: Session) -> str:
    """Short stable hash of the database URL (password hidden), naming its snapshots."""
    bind: Any = session.get_bind()
    engine_url = getattr(bind, "url", None) or bind.engine.url
    url = engine_url.render_as_string(hide_password=True)
    return hashlib.sha256(url.encode()).hexdigest()[:16]


class _SnapshotStore:
    """Snapshot versions of one database's indexes under ``root/db-<key>/``.

    Each version is a directory ``v-<seq>-<random>`` holding ``matcher.json`` and one
    HammingIndex snapshot per bank. It is written under a temporary name and renamed into
    place, so several workers may write at once: every visible version is complete, and a
    reader takes the newest one that the database's change log can bring up to date.
    """

    def __init__(self, root: Path, key: str) -> None:
        self.root = Path(root)
        self.key = key
        self.dir = self.root / f"db-{key}"

    @classmethod
    def for_session(cls, snapshot_dir: str | os.PathLike[str], session: Session) -> _SnapshotStore:
        return cls(Path(snapshot_dir), database_key(session))

    def versions(self) -> list[tuple[int, Path]]:
        """``(seq, path)`` of every version, highest seq first (newest first among equals)."""
        return [(seq, path) for seq, _, path in self._versions()]

    def _versions(self) -> list[tuple[int, float, Path]]:
        found: list[tuple[int, float, Path]] = []
        for path in self._iter("v-"):
            parts = path.name.split("-")
            if len(parts) == 3 and parts[1].isdigit():
                try:
                    found.append((int(parts[1]), path.stat().st_mtime, path))
                except OSError:
                    continue
        found.sort(key=lambda t: (t[0], t[1]), reverse=True)
        return found

    def restore(self, session: Session) -> tuple[dict[int, HammingIndex], int, Path] | None:
        """The newest version this database can continue from, loaded; None if none is.

        A version whose files are damaged, or whose history differs from the database's
        change log (the database was recreated), can never be used and is deleted. One
        ahead of the log is only skipped: the database may be a replica catching up.
        """
        head = session.scalar(select(func.max(ChangeRow.seq))) or 0
        for seq, path in self.versions():
            discard = True
            try:
                meta = json.loads((path / "matcher.json").read_text(encoding="utf-8"))
                if meta.get("format") != SNAPSHOT_FORMAT or meta.get("database") != self.key:
                    discard = False  # another software version may still read it
                    raise SnapshotError("written by another version or for another database")
                if int(meta["last_seq"]) != seq:
                    raise SnapshotError("its name and header disagree")
                if seq > head:
                    discard = False
                    raise SnapshotError(f"it is at change {seq}, the database only at {head}")
                if _change_fingerprint(session, seq) != meta.get("last_change"):
                    raise SnapshotError(f"change {seq} in the database is not the one it saw")
                indexes = {
                    int(bank_id): HammingIndex.load(path / f"bank-{int(bank_id)}")
                    for bank_id in meta["banks"]
                }
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("ignoring index snapshot %s: %s", path, exc)
                if discard:
                    shutil.rmtree(path, ignore_errors=True)
                continue
            return indexes, seq, path
        return None

    def write(
        self,
        indexes: dict[int, HammingIndex],
        last_seq: int,
        fingerprint: list[Any] | None,
    ) -> Path | None:
        if not last_seq or fingerprint is None:
            return None  # an empty change log means empty banks: nothing worth caching
        if any(seq == last_seq for seq, _ in self.versions()):
            return None  # another worker has written this state already
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".tmp-{os.getpid()}-{secrets.token_hex(6)}"
        tmp.mkdir()
        try:
            for bank_id, index in indexes.items():
                index.save(tmp / f"bank-{bank_id}")
            meta = {
                "format": SNAPSHOT_FORMAT,
                "database": self.key,
                "last_seq": last_seq,
                "last_change": fingerprint,
                "banks": sorted(indexes),
                "entries": sum(len(i) for i in indexes.values()),
                "written_at": time.time(),
            }
            (tmp / "matcher.json").write_text(json.dumps(meta), encoding="utf-8")
            final = self.dir / f"v-{last_seq:020d}-{secrets.token_hex(6)}"
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.prune(keep=final)
        return final

    def prune(self, keep: Path) -> None:
        """Keep ``keep`` and the most recently written other version; delete older versions
        and stale temporaries once they are past the grace period (a worker may still be
        reading one)."""
        now = time.time()
        others = sorted(
            ((mtime, path) for _, mtime, path in self._versions() if path != keep), reverse=True
        )
        old = [path for _, path in others[1:]] + list(self._iter(".tmp-"))
        for path in old:
            try:
                if now - path.stat().st_mtime > SNAPSHOT_GRACE_S:
                    shutil.rmtree(path, ignore_errors=True)
            except OSError:
                continue

    def _iter(self, prefix: str) -> Iterable[Path]:
        try:
            return [p for p in self.dir.iterdir() if p.name.startswith(prefix)]
        except OSError:
            return []
