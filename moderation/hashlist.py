"""Hash-list interchange: read and write bank entries as text, CSV or JSON lines.

Formats (chosen by file suffix or name):
- ``txt``: one hash per line, optionally ``,quality`` (the PDQ hex lists that
  ThreatExchange, NCMEC and StopNCII share).
- ``csv``: header ``signal_type,signal,quality,note``.
- ``jsonl``: one object per line with ``signal_type``, ``signal``, ``quality``, ``note``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator

from moderation.banks import EntryInput
from moderation.errors import InvalidInput, ModerationError

FORMATS = ("txt", "csv", "jsonl")


def _quality(raw: object, where: str) -> int | None:
    if raw in (None, ""):
        return None
    try:
        q = int(str(raw))
    except ValueError:
        raise InvalidInput(f"{where}: quality {raw!r} is not an integer") from None
    if not 0 <= q <= 100:
        raise InvalidInput(f"{where}: quality {q} is outside 0..100")
    return q


def parse(
    text: str, fmt: str, validate: Callable[[str], str], signal_type: str = "pdq"
) -> list[EntryInput]:
    """Parse a hash list; every malformed line is an error naming its line number."""
    if fmt not in FORMATS:
        raise InvalidInput(f"unknown hash-list format {fmt!r}; use one of {', '.join(FORMATS)}")
    out: list[EntryInput] = []

    def value(raw: str, where: str) -> str:
        try:
            return validate(raw.strip())
        except (ValueError, ModerationError) as exc:
            raise InvalidInput(f"{where}: {exc}") from None

    if fmt == "txt":
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            sig, _, q = line.partition(",")
            out.append(EntryInput(value(sig, f"line {n}"), _quality(q.strip(), f"line {n}")))
    elif fmt == "csv":
        reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
        if not reader.fieldnames or "signal" not in reader.fieldnames:
            raise InvalidInput("CSV hash list needs a header with a 'signal' column")
        for row in reader:
            # line_num counts physical lines, so blank lines and quoted newlines are counted.
            where = f"line {reader.line_num}"
            st = (row.get("signal_type") or signal_type).strip()
            if st != signal_type:
                raise InvalidInput(f"{where}: signal_type {st!r}, expected {signal_type!r}")
            out.append(
                EntryInput(
                    value(row["signal"] or "", where),
                    _quality(row.get("quality"), where),
                    (row.get("note") or ""),
                )
            )
    else:
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            where = f"line {n}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidInput(f"{where}: not JSON ({exc.msg})") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("signal"), str):
                raise InvalidInput(f"{where}: expected an object with a string 'signal'")
            st = obj.get("signal_type", signal_type)
            if st != signal_type:
                raise InvalidInput(f"{where}: signal_type {st!r}, expected {signal_type!r}")
            out.append(
                EntryInput(
                    value(obj["signal"], where),
                    _quality(obj.get("quality"), where),
                    str(obj.get("note", "")),
                )
            )
    return out


def format_lines(rows: Iterable[tuple[str, str, int | None, str]], fmt: str) -> Iterator[str]:
    """Serialise (signal_type, value, quality, note) rows, one line at a time."""
    if fmt not in FORMATS:
        raise InvalidInput(f"unknown hash-list format {fmt!r}; use one of {', '.join(FORMATS)}")
    if fmt == "csv":
        yield "signal_type,signal,quality,note\n"
    for st, val, q, note in rows:
        if fmt == "txt":
            yield f"{val},{q}\n" if q is not None else f"{val}\n"
        elif fmt == "csv":
            buf = io.StringIO()
            csv.writer(buf, lineterminator="\n").writerow([st, val, "" if q is None else q, note])
            yield buf.getvalue()
        else:
            yield (
                json.dumps(
                    {"signal_type": st, "signal": val, "quality": q, "note": note},
                    ensure_ascii=False,
                )
                + "\n"
            )


def format_from_name(name: str) -> str:
    for fmt in FORMATS:
        if name.lower().endswith("." + fmt):
            return fmt
    return "txt"
