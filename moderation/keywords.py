"""Keyword lists matched with Aho-Corasick over normalised text (Chinese and English).

List files are ``<category>.txt``, UTF-8, one term per line::

    # comment lines and blank lines are ignored
    term                 score 1.0
    term<TAB>0.7         score in (0, 1]
    !term                drop a term loaded from an earlier directory

Terms go through the same `normalize` + `collapse_separators` as input text.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import ahocorasick

from models.text_normalize import (
    collapse_separators,
    collapse_separators_with_map,
    is_cjk,
    is_word_char,
    normalize,
)

__all__ = ["DEFAULT_DIR", "KeywordHit", "KeywordMatcher"]

DEFAULT_DIR = Path(__file__).resolve().parent / "data" / "keywords"

_EDGE_SEPARATORS_RE = re.compile(r"^[\W_]+|[\W_]+$")
_DOUBLED_RE = re.compile(r"([^\W\d_])\1")
# Below this many letters a de-doubled variant ("ass" -> "as") collides with real words.
_MIN_DEDOUBLED_LEN = 5


@dataclass(frozen=True)
class KeywordHit:
    """One list term found in a text.

    ``start``/``end`` are a half-open range in ``normalize(text)`` (not the raw input), also for
    hits found only in the separator-collapsed form.
    """

    category: str
    term: str
    score: float
    start: int
    end: int


@dataclass(frozen=True)
class _Entry:
    category: str
    term: str
    score: float
    needs_boundary: bool


def _term_key(term: str) -> str:
    """The canonical form of a list term: normalised, collapsed, edge punctuation stripped."""
    return _EDGE_SEPARATORS_RE.sub("", collapse_separators(normalize(term)))


def _search_keys(term: str, key: str) -> set[str]:
    keys = {key}
    plain = _EDGE_SEPARATORS_RE.sub("", normalize(term))
    if plain:
        keys.add(plain)
    if any(is_cjk(ch) for ch in key):
        return keys
    # People run words together ("fuckyou") and spaced-out letters collapse to one word.
    keys.add(key.replace(" ", ""))
    # Letter runs of 3+ collapse to one, so "killll" arrives as "kil"; match it via "kil".
    dedoubled = _DOUBLED_RE.sub(r"\1", key)
    if dedoubled != key and len(dedoubled.replace(" ", "")) >= _MIN_DEDOUBLED_LEN:
        keys.add(dedoubled)
        keys.add(dedoubled.replace(" ", ""))
    return keys


def _parse_score(raw: str, where: str) -> float:
    try:
        score = float(raw)
    except ValueError:
        raise ValueError(f"{where}: score {raw!r} is not a number") from None
    if not math.isfinite(score) or not 0.0 < score <= 1.0:
        raise ValueError(f"{where}: score {raw!r} is outside (0, 1]")
    return score


class KeywordMatcher:
    """Immutable multi-category keyword matcher; build with `from_directories` or `default`."""

    def __init__(self, entries: Mapping[tuple[str, str], tuple[str, float]]) -> None:
        """``entries`` maps (category, canonical key) to (term as written, score)."""
        self._entries: dict[tuple[str, str], tuple[str, float]] = dict(entries)
        index: dict[str, list[_Entry]] = {}
        for (category, key), (term, score) in self._entries.items():
            entry = _Entry(category, term, score, not any(is_cjk(ch) for ch in key))
            for search_key in _search_keys(term, key):
                index.setdefault(search_key, []).append(entry)
        self._automaton: ahocorasick.Automaton | None = None
        if index:
            automaton = ahocorasick.Automaton()
            for search_key, found in index.items():
                automaton.add_word(search_key, (len(search_key), tuple(found)))
            automaton.make_automaton()
            self._automaton = automaton
        self._categories = tuple(sorted({category for category, _ in self._entries}))

    @classmethod
    def from_directories(
        cls, dirs: Iterable[Path], extra: Iterable[tuple[str, str, float]] = ()
    ) -> KeywordMatcher:
        """Load ``*.txt`` lists; later directories, then ``extra`` (category, term, score) win."""
        entries: dict[tuple[str, str], tuple[str, float]] = {}
        for directory in dirs:
            directory = Path(directory)
            if not directory.is_dir():
                raise FileNotFoundError(f"keyword directory not found: {directory}")
            for path in sorted(directory.glob("*.txt")):
                _load_file(path, entries)
        for category, term, score in extra:
            where = f"extra term {term!r} in {category!r}"
            key = _term_key(term)
            if not key:
                raise ValueError(f"{where}: term is empty after normalisation")
            entries[(category, key)] = (term, _parse_score(str(score), where))
        return cls(entries)

    @classmethod
    def default(cls) -> KeywordMatcher:
        """The packaged lists in ``moderation/data/keywords/`` (built once, shared)."""
        return _default_matcher()

    @property
    def categories(self) -> tuple[str, ...]:
        """Sorted names of the categories that have at least one term."""
        return self._categories

    def entries(self) -> list[tuple[str, str, float]]:
        """Every active (category, term as written, score), sorted."""
        return sorted((cat, term, score) for (cat, _), (term, score) in self._entries.items())

    def __len__(self) -> int:
        return len(self._entries)

    def scan(self, text: str) -> list[KeywordHit]:
        """Hits in ``text``, one per (category, term), ordered by position."""
        return self.scan_normalized(normalize(text))

    def scan_normalized(self, normalized: str) -> list[KeywordHit]:
        """`scan` for a text already passed through `normalize` (the text models' input)."""
        if self._automaton is None:
            return []
        found: dict[tuple[str, str], KeywordHit] = {}
        self._search(normalized, None, found)
        collapsed, index = collapse_separators_with_map(normalized)
        if collapsed != normalized:
            self._search(collapsed, index, found)
        return sorted(found.values(), key=lambda h: (h.start, h.end, h.category, h.term))

    def _search(
        self, text: str, index: list[int] | None, found: dict[tuple[str, str], KeywordHit]
    ) -> None:
        assert self._automaton is not None
        for last, (length, matched) in self._automaton.iter(text):
            start = last - length + 1
            at_boundary = (start == 0 or not is_word_char(text[start - 1])) and (
                last + 1 == len(text) or not is_word_char(text[last + 1])
            )
            span = (start, last + 1) if index is None else (index[start], index[last] + 1)
            for entry in matched:
                if entry.needs_boundary and not at_boundary:
                    continue
                if (entry.category, entry.term) not in found:
                    found[(entry.category, entry.term)] = KeywordHit(
                        entry.category, entry.term, entry.score, *span
                    )

    @staticmethod
    def scores(hits: Iterable[KeywordHit]) -> dict[str, float]:
        """The highest score per category among ``hits``."""
        best: dict[str, float] = {}
        for hit in hits:
            if hit.score > best.get(hit.category, 0.0):
                best[hit.category] = hit.score
        return best


def _load_file(path: Path, entries: dict[tuple[str, str], tuple[str, float]]) -> None:
    category = path.stem
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not valid UTF-8 ({exc})") from None
    for lineno, raw in enumerate(lines, start=1):
        line = raw.strip(" \r\n")  # keep a leading TAB: it means an empty term, not a term
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{path}:{lineno}"
        remove = line.startswith("!")
        if remove:
            line = line[1:]
        term, tab, raw_score = line.rpartition("\t")
        if not tab:
            term = line
        term = term.strip()
        if not term:
            raise ValueError(f"{where}: empty term")
        key = _term_key(term)
        if not key:
            raise ValueError(f"{where}: term {term!r} is empty after normalisation")
        if remove:
            if tab:
                raise ValueError(f"{where}: a removal line takes no score")
            entries.pop((category, key), None)
            continue
        score = _parse_score(raw_score.strip(), where) if tab else 1.0
        entries[(category, key)] = (term, score)


@functools.lru_cache(maxsize=1)
def _default_matcher() -> KeywordMatcher:
    return KeywordMatcher.from_directories([DEFAULT_DIR])
