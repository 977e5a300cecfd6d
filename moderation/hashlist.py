"""Hash-list interchange: bank entries in the formats hash-sharing programmes use.

Image and video banks hold PDQ hashes (64 hex digits); text banks hold 64-bit SimHashes of
normalised text (16 hex digits, models.text_simhash) in the same formats, with signal type
``simhash``. The bank's validator (banks.validate_signal_for) checks each value.

Formats (``docs/hashlists.md`` has examples and the sources):

- ``txt``: PDQ hex lists. Export writes ``<hex>,<quality>`` (``<hex>`` when the quality is
  unknown), the output of Meta's PDQ reference hasher without its filename column. Import
  also takes ``<hex>``, ``<hex> <quality>``, ``<hex>,<quality>,<filename>`` (the filename
  becomes the note), ``hash=<hex>,quality=<q>,...`` (``pdq-photo-hasher --details``) and
  ``<signal_type> <hex>`` (python-threatexchange's local-file exchange and
  ``threatexchange dataset -P -S``); ``#`` comments and blank lines are skipped.
- ``csv``: header ``signal_type,signal_str,quality,note`` (python-threatexchange's
  ``threatexchange dataset -P --csv`` columns ``signal_type,signal_str,...``, plus ours).
  Import finds columns by name: the signal in ``signal_str``, ``signal``, ``signal_value``
  (HMA's name), ``value`` or ``hash``; optional ``signal_type``, ``quality``, ``note``,
  ``collab``/``source`` (kept as the entry's source), ``category`` (a ``FALSE_POSITIVE``
  opinion is refused, never banked) and ``tags`` (appended to the note).
- ``jsonl``: one object per line, ``{"signal_type", "signal_str", "quality", "note"}``.
  Import also takes the same aliases as CSV, HMA's ``POST /c/bank/<bank>/signal`` body
  (``{"pdq": "<hex>"}``) and HMA's bank content objects (``{"id": ..., "signals": {...}}``).
- ``hma``: one HMA ``/c/bank/<bank>/signal`` body per line, ``{"pdq": "<hex>"}``: post each
  line to an HMA instance to load a bank into it. Imported like ``jsonl``.

Export is deterministic (entry id order, fixed field order, ``\\n`` line ends), and
export -> import into an empty bank -> export reproduces the file byte for byte.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from moderation.banks import EntryInput
from moderation.errors import InvalidInput, ModerationError

FORMATS = ("txt", "csv", "jsonl", "hma")
MEDIA_TYPES = {
    "txt": "text/plain; charset=utf-8",
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/x-ndjson",
    "hma": "application/x-ndjson",
}
CSV_HEADER = ("signal_type", "signal_str", "quality", "note")

# Column (CSV) and key (JSON) names accepted on import, first match wins.
_SIGNAL_NAMES = ("signal_str", "signal", "signal_value", "value", "hash", "pdq_hash")
_TYPE_NAMES = ("signal_type", "indicator_type")
_QUALITY_NAMES = ("quality", "pdq_quality")
_NOTE_NAMES = ("note", "notes", "comment", "description", "metadata")
_SOURCE_NAMES = ("source", "collab")
_HEADER_NAMES = frozenset(
    (*_SIGNAL_NAMES, *_TYPE_NAMES, *_QUALITY_NAMES, *_NOTE_NAMES, *_SOURCE_NAMES, "pdq", "simhash")
)
# Other programmes' names for the signal types our banks hold (ThreatExchange indicator types).
_TYPE_ALIASES = {"hash_pdq": "pdq", "pdq_hash": "pdq"}
# python-threatexchange SignalOpinionCategory names that do not mean "this is a match".
_NOT_A_MATCH = frozenset({"FALSE_POSITIVE", "NEGATIVE_CLASS"})

MAX_REPORTED_ERRORS = 1000
_TXT_FORMS = "expected '<hash>', '<hash>,<quality>', '<hash> <quality>' or '<signal_type> <hash>'"


class Row(NamedTuple):
    """One bank entry as exported."""

    signal_type: str
    value: str
    quality: int | None
    note: str


@dataclass(frozen=True)
class LineError:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "error": self.message}


@dataclass
class ParsedList:
    """Entries read from a hash list, and its bad lines (at most MAX_REPORTED_ERRORS kept)."""

    format: str
    entries: list[EntryInput] = field(default_factory=list)
    errors: list[LineError] = field(default_factory=list)
    bad_lines: int = 0

    def reject(self, line: int, message: str) -> None:
        self.bad_lines += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(LineError(line, message))


class _BadLine(Exception):
    """A problem with one line; becomes a LineError."""


# --- reading ---------------------------------------------------------------------------------


def detect_format(text: str) -> str:
    """``jsonl`` if the first record is a JSON object, ``csv`` if it is a header naming a
    signal column, else ``txt``."""
    for raw in text.splitlines():
        line = raw.strip().lstrip("\ufeff").strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("{"):
            return "jsonl"
        cells = [c.strip().strip('"') for c in line.split(",")]
        if any(len(c) >= 32 and _HEXISH.match(c) for c in cells):
            return "txt"  # a hash, not a header (e.g. pdq-photo-hasher's `hash,100,value.jpg`)
        return "csv" if {c.lower() for c in cells} & _HEADER_NAMES else "txt"
    return "txt"


def parse(
    text: str,
    fmt: str | None,
    validate: Callable[[str], str],
    signal_type: str = "pdq",
    *,
    skip_bad: bool = False,
    default_source: str = "",
) -> ParsedList:
    """Read a hash list for a bank holding ``signal_type`` signals.

    ``fmt=None`` detects the format. Every bad line is recorded with its line number; unless
    ``skip_bad``, any bad line refuses the whole list with :class:`InvalidInput` naming the
    lines (``detail["errors"]`` lists them). ``default_source`` is the source of entries whose
    line names none.
    """
    if fmt is None:
        fmt = detect_format(text)
    if fmt not in FORMATS:
        raise InvalidInput(
            f"unknown hash-list format {fmt!r}; use one of {', '.join(FORMATS)}", field="format"
        )
    out = ParsedList(fmt)
    reader = _read_txt if fmt == "txt" else _read_csv if fmt == "csv" else _read_jsonl
    for line_no, item in reader(text, signal_type):
        if isinstance(item, str):
            out.reject(line_no, item)
            continue
        value, quality, note, source = item
        try:
            checked = validate(value.strip())
        except (ValueError, ModerationError) as exc:
            message = exc.message if isinstance(exc, ModerationError) else str(exc)
            out.reject(line_no, message)
            continue
        out.entries.append(
            EntryInput(checked, quality, note, default_source if source is None else source)
        )
    if out.bad_lines and not skip_bad:
        raise InvalidInput(
            _summary(out),
            field="body",
            errors=[e.to_dict() for e in out.errors[:100]],
            bad_lines=out.bad_lines,
        )
    return out


def _summary(parsed: ParsedList) -> str:
    if parsed.bad_lines == 1:
        return str(parsed.errors[0])
    shown = "; ".join(str(e) for e in parsed.errors[:10])
    more = parsed.bad_lines - min(10, len(parsed.errors))
    tail = f"; and {more} more" if more > 0 else ""
    return f"{parsed.bad_lines} bad lines in the hash list: {shown}{tail}"


# (value, quality, note, source or None) of a good line, or the message of a bad one
_Item = tuple[str, int | None, str, str | None] | str


def _quality(raw: object) -> int | None:
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise _BadLine(f"quality {raw!r} is not an integer")
    try:
        q = int(raw)
    except ValueError:
        raise _BadLine(f"quality {raw!r} is not an integer") from None
    if not 0 <= q <= 100:
        raise _BadLine(f"quality {q} is outside 0..100")
    return q


def _check_type(raw: object, signal_type: str) -> None:
    if raw is None or raw == "":
        return
    name = str(raw).strip().lower()
    if _TYPE_ALIASES.get(name, name) != signal_type:
        raise _BadLine(f"signal_type {raw!r} cannot go in a {signal_type} bank")


def _check_category(raw: object) -> None:
    if isinstance(raw, str) and raw.strip().upper() in _NOT_A_MATCH:
        raise _BadLine(f"category {raw.strip()} says the hash is not a match; refusing to bank it")


def _join_note(note: str, tags: object) -> str:
    if isinstance(tags, list):
        tags = " ".join(str(t) for t in tags)
    if not isinstance(tags, str) or not tags.strip():
        return note
    return f"{note}; tags: {tags.strip()}" if note else f"tags: {tags.strip()}"


_HEXISH = re.compile(r"^[0-9A-Fa-f]+$")
_TYPE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _read_txt(text: str, signal_type: str) -> Iterator[tuple[int, _Item]]:
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if n == 1:
            line = line.lstrip("\ufeff").strip()
        if not line or line.startswith("#"):
            continue
        try:
            yield n, _txt_line(line, signal_type)
        except _BadLine as exc:
            yield n, str(exc)


def _txt_line(line: str, signal_type: str) -> _Item:
    if line.startswith("hash="):  # pdq-photo-hasher --details
        fields = dict(_key_values(line))
        return (
            fields.get("hash", ""),
            _quality(fields.get("quality")),
            fields.get("filename", ""),
            None,
        )
    if "," in line:  # <hash>,<quality>[,<filename>]: the PDQ reference hasher's output
        parts = line.split(",", 2)
        note = parts[2].strip() if len(parts) > 2 else ""
        return parts[0].strip(), _quality(parts[1].strip()), note, None
    parts = line.split()
    if len(parts) == 1:
        return parts[0], None, "", None
    if len(parts) == 2:
        first, second = parts
        if _TYPE_NAME.match(first) and not _HEXISH.match(first):  # <signal_type> <hash>
            _check_type(first, signal_type)
            return second, None, "", None
        return first, _quality(second), "", None  # <hash> <quality>
    raise _BadLine(f"{len(parts)} fields; {_TXT_FORMS}")


def _key_values(line: str) -> Iterator[tuple[str, str]]:
    rest = line
    while rest:
        key, _, rest = rest.partition("=")
        if key == "filename":  # the last field; may itself contain commas
            yield key, rest
            return
        value, _, rest = rest.partition(",")
        yield key.strip(), value.strip()


def _read_csv(text: str, signal_type: str) -> Iterator[tuple[int, _Item]]:
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        return
    except csv.Error as exc:
        yield 1, f"not CSV ({exc})"
        return
    col = {name: header.index(name) for name in reversed(header)}  # first wins

    def find(names: Iterable[str]) -> int | None:
        return next((col[n] for n in names if n in col), None)

    signal = find((*_SIGNAL_NAMES, signal_type))
    if signal is None:
        names = ", ".join(_SIGNAL_NAMES)
        raise InvalidInput(
            f"line 1: CSV hash list needs a header with a signal column (one of {names})",
            field="body",
        )
    kind, quality = find(_TYPE_NAMES), find(_QUALITY_NAMES)
    note, source = find(_NOTE_NAMES), find(_SOURCE_NAMES)
    category, tags = find(("category",)), find(("tags",))

    def cell(row: list[str], index: int | None) -> str | None:
        return row[index] if index is not None and index < len(row) else None

    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # e.g. a NUL byte; the reader cannot resync after it
            yield reader.line_num, f"not CSV ({exc})"
            return
        if not row or not any(c.strip() for c in row):
            continue
        # line_num counts physical lines, so blank lines and quoted newlines are counted.
        try:
            value = cell(row, signal)
            if not value:
                raise _BadLine("no signal in this row")
            _check_type(cell(row, kind), signal_type)
            _check_category(cell(row, category))
            yield (
                reader.line_num,
                (
                    value,
                    _quality((cell(row, quality) or "").strip()),
                    _join_note(cell(row, note) or "", cell(row, tags)),
                    cell(row, source),
                ),
            )
        except _BadLine as exc:
            yield reader.line_num, str(exc)


def _read_jsonl(text: str, signal_type: str) -> Iterator[tuple[int, _Item]]:
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if n == 1:
            line = line.lstrip("\ufeff").strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            yield n, f"not JSON ({exc.msg})"
            continue
        try:
            yield n, _json_entry(obj, signal_type)
        except _BadLine as exc:
            yield n, str(exc)


def _json_entry(obj: object, signal_type: str) -> _Item:
    if not isinstance(obj, dict):
        raise _BadLine("expected a JSON object with a string signal")
    signals = obj.get("signals")
    if isinstance(signals, dict):  # HMA bank content: {"id": 1, "signals": {"pdq": "..."}}
        return _hma_signal(signals, signal_type), None, "", None
    key = next((k for k in _SIGNAL_NAMES if k in obj), None)
    if key is None:
        if obj and all(isinstance(v, str) for v in obj.values()):  # HMA {"pdq": "..."}
            return _hma_signal(obj, signal_type), None, "", None
        raise _BadLine(f"expected an object with a string {' / '.join(_SIGNAL_NAMES[:3])}")
    value = obj[key]
    if not isinstance(value, str):
        raise _BadLine(f"{key} must be a string, got {type(value).__name__}")
    _check_type(next((obj[k] for k in _TYPE_NAMES if k in obj), None), signal_type)
    _check_category(obj.get("category"))
    quality = _quality(next((obj[k] for k in _QUALITY_NAMES if k in obj), None))
    note = next((obj[k] for k in _NOTE_NAMES if k in obj), "")
    if note is None:
        note = ""
    if not isinstance(note, str):
        note = json.dumps(note, ensure_ascii=False, sort_keys=True)
    source = next((obj[k] for k in _SOURCE_NAMES if k in obj), None)
    return (
        value,
        quality,
        _join_note(note, obj.get("tags")),
        None if source is None else str(source),
    )


def _hma_signal(signals: dict[str, Any], signal_type: str) -> str:
    for name, value in signals.items():
        if _TYPE_ALIASES.get(name.lower(), name.lower()) == signal_type:
            if not isinstance(value, str):
                raise _BadLine(f"{name} must be a string, got {type(value).__name__}")
            return value
    others = ", ".join(sorted(signals)) or "none"
    raise _BadLine(f"no {signal_type} signal in this object (has: {others})")


# --- writing ---------------------------------------------------------------------------------


def format_lines(rows: Iterable[Row | tuple[str, str, int | None, str]], fmt: str) -> Iterator[str]:
    """Serialise rows in export order, one line at a time (deterministic, ``\\n`` ends)."""
    if fmt not in FORMATS:
        raise InvalidInput(
            f"unknown hash-list format {fmt!r}; use one of {', '.join(FORMATS)}", field="format"
        )
    if fmt == "csv":
        yield ",".join(CSV_HEADER) + "\n"
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
    for st, val, q, note in rows:
        if fmt == "txt":
            yield f"{val},{q}\n" if q is not None else f"{val}\n"
        elif fmt == "csv":
            buf.seek(0)
            buf.truncate()
            writer.writerow([st, val, "" if q is None else q, note])
            yield buf.getvalue()
        elif fmt == "jsonl":
            record = {"signal_type": st, "signal_str": val, "quality": q, "note": note}
            yield json.dumps(record, ensure_ascii=False) + "\n"
        else:
            yield json.dumps({st: val}) + "\n"


def format_from_name(name: str) -> str:
    """The format a file name's suffix names (``.txt``, ``.csv``, ``.jsonl``), else txt."""
    lower = name.lower()
    for fmt in ("txt", "csv", "jsonl"):
        if lower.endswith("." + fmt):
            return fmt
    if lower.endswith((".ndjson", ".json")):
        return "jsonl"
    return "txt"
