"""Bank commands: create, add, remove, list, export, import; and `match`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from moderation.cli.common import emit, json_option, session, settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from moderation.matching import BankMatcher
    from moderation.policy import BankHit
    from moderation.storage.tables import BankRow

_paths = click.argument(
    "paths", nargs=-1, required=False, type=click.Path(dir_okay=False, path_type=Path)
)


def _read_image(path: Path):
    """The decoded image of ``path``, through the service's bounded decode."""
    from moderation.pipeline import decode_image_data, image_limits_from

    limits = image_limits_from(settings())
    return decode_image_data(_read_bounded(path, limits.max_bytes), limits, str(path))


def _read_bounded(path: Path, max_bytes: int) -> bytes:
    """A media file's bytes, refused before reading if it is over ``max_bytes``."""
    from moderation.errors import InputTooLarge

    try:
        size = path.stat().st_size
    except OSError as exc:
        raise click.ClickException(f"cannot read {path}: {exc.strerror}") from None
    if size > max_bytes:
        raise InputTooLarge(f"{path} is {size} bytes, over the limit of {max_bytes}")
    return path.read_bytes()


@click.group()
def bank() -> None:
    """Manage banks of known content."""


@bank.command("create")
@click.argument("name")
@click.option(
    "--kind", type=click.Choice(["image", "text", "video"]), default="image", show_default=True
)
@click.option("--threshold", type=int, default=None, help="Max distance (default per kind).")
@click.option(
    "--action",
    type=click.Choice(["block", "review", "track", "allow"]),
    default="block",
    show_default=True,
)
@click.option("--description", default="")
@json_option
def bank_create(
    name: str, kind: str, threshold: int | None, action: str, description: str, as_json: bool
) -> None:
    """Create a bank."""
    from moderation import audit, banks

    with session() as s:
        info = banks.create_bank(
            s, name, kind=kind, action=action, threshold=threshold, description=description
        )
        audit.record(s, "cli", "bank.create", "bank", name)
    emit(
        info.to_dict(),
        as_json,
        f"created bank {info.name} ({info.kind}, action {info.action}, threshold {info.threshold})",
    )


@bank.command("add")
@click.argument("name")
@_paths
@click.option(
    "--text",
    "texts",
    multiple=True,
    help="Text bank: a text to add (repeatable). Stored as its SimHash.",
)
@click.option(
    "--lines",
    "lines_file",
    type=click.Path(dir_okay=False, exists=True, allow_dash=True),
    default=None,
    help="Text bank: a UTF-8 file with one text per line ('-' for stdin); blank lines skipped.",
)
@click.option("--note", default="")
@json_option
def bank_add(
    name: str,
    paths: tuple[Path, ...],
    texts: tuple[str, ...],
    lines_file: str | None,
    note: str,
    as_json: bool,
) -> None:
    """Add entries to a bank; one line per input.

    Image and video banks: PATHS are images, hashed as uploads are. Text banks: each PATH is
    a UTF-8 text file holding one text, plus any --text and --lines texts; each is stored as
    its SimHash (too-short texts are refused).
    """
    from moderation import audit, banks

    if not (paths or texts or lines_file):
        raise click.UsageError("give PATHS, --text or --lines")
    with session() as s:
        row = banks.get_bank_row(s, name)
        if row.kind == "text":
            failed, count = _add_texts(s, row, paths, texts, lines_file, note, as_json)
        elif texts or lines_file:
            raise click.UsageError(
                f"bank {name} is a {row.kind} bank: --text and --lines are for text banks"
            )
        elif row.kind == "video":
            failed, count = _add_videos(s, row, paths, note, as_json), len(paths)
        else:
            failed, count = _add_images(s, row, paths, note, as_json), len(paths)
        audit.record(s, "cli", "bank.entry.add", "bank", name, count=count)
    if failed:
        raise SystemExit(1)


def _add_images(
    s: Session, row: BankRow, paths: tuple[Path, ...], note: str, as_json: bool
) -> bool:
    """Hash image files into an image or video bank, one commit each; True if any failed."""
    from models.image_robust import reference_variants
    from moderation import banks
    from moderation.errors import ModerationError
    from moderation.pipeline import hash_decoded

    failed = False
    for path in paths:
        try:
            decoded = _read_image(path)
            h = hash_decoded(decoded, str(path))
            [entry_id] = banks.add_entries(
                s, row, [banks.EntryInput(h.pdq, h.pdq_quality, note, str(path))]
            )
            banks.add_reference_hashes(s, entry_id, reference_variants(decoded.image))
            s.commit()
            emit({"path": str(path), "entry_id": entry_id}, as_json, f"{path}: entry {entry_id}")
        except (ModerationError, click.ClickException) as exc:
            failed = True
            msg = exc.message if isinstance(exc, ModerationError) else exc.format_message()
            emit({"path": str(path), "error": msg}, as_json, f"{path}: error: {msg}")
    return failed


def _add_videos(
    s: Session, row: BankRow, paths: tuple[Path, ...], note: str, as_json: bool
) -> bool:
    """Fingerprint video files into a video bank, one commit each; True if any failed."""
    from moderation.errors import ModerationError
    from moderation.video import add_video_entry, fingerprint_reference, video_limits_from

    limits = video_limits_from(settings())
    failed = False
    for path in paths:
        try:
            data = _read_bounded(path, limits.max_bytes)
            info, frames = fingerprint_reference(data, limits, str(path))
            entry_id = add_video_entry(s, row, frames, note, str(path))
            s.commit()
            emit(
                {"path": str(path), "entry_id": entry_id, "frames": len(frames)},
                as_json,
                f"{path}: entry {entry_id} ({len(frames)} frames, {info.duration_s:.1f} s)",
            )
        except (ModerationError, click.ClickException) as exc:
            s.rollback()
            failed = True
            msg = exc.message if isinstance(exc, ModerationError) else exc.format_message()
            emit({"path": str(path), "error": msg}, as_json, f"{path}: error: {msg}")
    return failed


def _text_inputs(
    paths: tuple[Path, ...], texts: tuple[str, ...], lines_file: str | None, max_chars: int
) -> list[tuple[str, str | None, str]]:
    """``(label, text or None, error)`` for each text to add, in order: files, then --text,
    then the lines of --lines."""
    out: list[tuple[str, str | None, str]] = []
    for path in paths:
        try:
            if path.stat().st_size > 4 * max_chars:
                out.append((str(path), None, f"file is over {4 * max_chars} bytes"))
                continue
            out.append((str(path), path.read_bytes().decode("utf-8"), ""))
        except OSError as exc:
            out.append((str(path), None, f"cannot read: {exc.strerror}"))
        except UnicodeDecodeError as exc:
            out.append((str(path), None, f"not UTF-8 text (byte {exc.start})"))
    out.extend((f"--text {i + 1}", t, "") for i, t in enumerate(texts))
    if lines_file is not None:
        with click.open_file(lines_file, "rb") as f:
            for n, raw in enumerate(f, 1):
                label = f"{lines_file}:{n}"
                try:
                    line = raw.decode("utf-8").strip()
                except UnicodeDecodeError as exc:
                    out.append((label, None, f"not UTF-8 text (byte {exc.start})"))
                    continue
                if line:
                    out.append((label, line, ""))
    return out


def _add_texts(
    s: Session,
    row: BankRow,
    paths: tuple[Path, ...],
    texts: tuple[str, ...],
    lines_file: str | None,
    note: str,
    as_json: bool,
) -> tuple[bool, int]:
    """Hash and add texts to a text bank in one transaction; (any input failed, inputs)."""
    from moderation import banks
    from moderation.errors import ModerationError

    max_chars = settings().limits.max_text_chars
    results: list[dict[str, object]] = []
    entries: list[banks.EntryInput] = []
    for label, text, error in _text_inputs(paths, texts, lines_file, max_chars):
        if text is not None:
            try:
                value = banks.simhash_of_text(text, max_chars)
                entries.append(banks.EntryInput(value, None, note, label))
                results.append({"input": label, "simhash": value})
                continue
            except ModerationError as exc:
                error = exc.message
        results.append({"input": label, "error": error})
    ids = iter(banks.add_entries(s, row, entries))
    for result in results:
        if "error" in result:
            emit(result, as_json, f"{result['input']}: error: {result['error']}")
        else:
            result["entry_id"] = next(ids)
            emit(
                result,
                as_json,
                f"{result['input']}: entry {result['entry_id']} (simhash {result['simhash']})",
            )
    return any("error" in r for r in results), len(results)


@bank.command("remove")
@click.argument("name")
@click.argument("entry_id", type=int)
def bank_remove(name: str, entry_id: int) -> None:
    """Remove one entry from a bank."""
    from moderation import audit, banks

    with session() as s:
        banks.remove_entry(s, banks.get_bank_row(s, name), entry_id)
        audit.record(s, "cli", "bank.entry.remove", "bank", name, entry_id=entry_id)
    click.echo(f"removed entry {entry_id} from {name}")


@bank.command("list")
@json_option
def bank_list(as_json: bool) -> None:
    """List banks with their sizes."""
    from moderation import banks

    with session() as s:
        infos = banks.list_banks(s)
    if as_json:
        for i in infos:
            emit(i.to_dict(), True)
        return
    for i in infos:
        click.echo(
            f"{i.name:24} {i.kind:6} {i.action:7} threshold {i.threshold:3}  "
            f"{i.size} entries{'' if i.enabled else '  (disabled)'}"
        )


_FORMATS = click.Choice(["txt", "csv", "jsonl", "hma"])


@bank.command("export")
@click.argument("name")
@click.option(
    "--format",
    "fmt",
    type=_FORMATS,
    default=None,
    help="txt (hex hash, with ',quality' when known), csv, jsonl or hma (HMA signal bodies). "
    "Default: from --out's suffix, else txt.",
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None)
def bank_export(name: str, fmt: str | None, out: Path | None) -> None:
    """Export a bank as a hash list, in entry order (see docs/hashlists.md)."""
    from moderation import banks, hashlist

    fmt = fmt or (hashlist.format_from_name(out.name) if out else "txt")
    with session() as s:
        lines = hashlist.format_lines(banks.iter_export_rows(s, banks.get_bank_row(s, name)), fmt)
        if out is None:
            sys.stdout.writelines(lines)
            sys.stdout.flush()
        else:
            with out.open("w", encoding="utf-8", newline="") as f:
                f.writelines(lines)


@bank.command("import")
@click.argument("name")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, allow_dash=True))
@click.option(
    "--format",
    "fmt",
    type=_FORMATS,
    default=None,
    help="Default: detected from the content (JSON lines, CSV with a header, else txt).",
)
@click.option(
    "--skip-bad",
    is_flag=True,
    help="Import the good lines and report the bad ones, instead of refusing the whole list.",
)
@click.option(
    "--source",
    default=None,
    help="Source recorded on entries whose line names none (default: the file name).",
)
@json_option
def bank_import(
    name: str, file: str, fmt: str | None, skip_bad: bool, source: str | None, as_json: bool
) -> None:
    """Import a hash list into a bank (entries already present are kept once).

    Any bad line refuses the whole list, naming the lines, unless --skip-bad.
    """
    from moderation import banks
    from moderation.errors import InvalidInput

    with click.open_file(file, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{file} is not UTF-8 text (byte {exc.start})") from None
    with session() as s:
        report = banks.import_hash_list(
            s,
            name,
            text,
            fmt=fmt,
            skip_bad=skip_bad,
            source=source if source is not None else Path(file).name,
            actor="cli",
        )
    imported, added, skipped = report["imported"], report["added"], report["skipped"]
    assert isinstance(imported, int) and isinstance(added, int) and isinstance(skipped, int)
    text_report = (
        f"imported {imported} entries into {name} ({report['format']}): "
        f"{added} new, {imported - added} already there"
    )
    if skipped:
        text_report += f"; skipped {skipped} bad lines"
    emit(report, as_json, text_report)
    if not as_json:
        errors = report["errors"]
        assert isinstance(errors, list)
        for err in errors[:50]:
            click.echo(f"  skipped line {err['line']}: {err['error']}", err=True)
        if skipped > 50:
            click.echo(f"  ... and {skipped - 50} more", err=True)


@click.command()
@_paths
@click.option(
    "--text",
    "texts",
    multiple=True,
    help="A text to match against the text banks (repeatable).",
)
@click.option("--bank", "bank_name", default=None, help="Only this bank.")
@json_option
def match(
    paths: tuple[Path, ...], texts: tuple[str, ...], bank_name: str | None, as_json: bool
) -> None:
    """Match image files (with the policy's robust variants) and video files (frames in
    time against video banks, each frame against image banks) and --text texts against
    text banks; one line per file or text."""
    from models.image_robust import query_variants
    from moderation import banks
    from moderation.errors import ModerationError
    from moderation.matching import BankMatcher
    from moderation.policy import load_policy
    from moderation.text_matching import item_simhash

    if not (paths or texts):
        raise click.UsageError("give PATHS or --text")
    conf = settings()
    use_variants = load_policy(conf.policy_path).matching.variants
    matcher = BankMatcher()
    with session() as s:
        if bank_name is not None:
            banks.get_bank_row(s, bank_name)
        matcher.load(s, snapshot_dir=conf.index_snapshot_dir)
    only = {bank_name} if bank_name else None
    for path in paths:
        if _is_video(path):
            _match_video(path, matcher, only, as_json)
            continue
        try:
            image = _read_image(path).image
        except (ModerationError, click.ClickException) as exc:
            msg = exc.message if isinstance(exc, ModerationError) else exc.format_message()
            emit({"path": str(path), "error": msg}, as_json, f"{path}: error: {msg}")
            continue
        variants = query_variants(image)
        if not use_variants:
            variants = variants[:1] if variants and variants[0].name == "plain" else []
        values = [(v.pdq, v.margin, v.name) for v in variants]
        _emit_hits({"path": str(path)}, matcher.match_pdq_many(values, bank_names=only), as_json)
    for i, text in enumerate(texts, 1):
        value = item_simhash(text)
        label: dict[str, object] = {"text": i, "simhash": value}
        if value is None:
            label["note"] = "too short for a SimHash: keyword lists only"
        hits = [] if value is None else matcher.match_simhash(value, bank_names=only)
        _emit_hits(label, hits, as_json)


def _is_video(path: Path) -> bool:
    from models.video_decode import looks_like_video

    try:
        with path.open("rb") as f:
            return looks_like_video(f.read(512))
    except OSError:
        return False  # reported by the image path


def _match_video(path: Path, matcher: BankMatcher, only: set[str] | None, as_json: bool) -> None:
    """One line for a video: time-aligned video bank matches, with their segments, and the
    image bank entries single frames matched (with the frame's time)."""
    from moderation.errors import ModerationError
    from moderation.matching import load_reference_frames
    from moderation.video import fingerprint_video, match_frames, video_limits_from

    limits = video_limits_from(settings())
    try:
        _, frames = fingerprint_video(_read_bounded(path, limits.max_bytes), limits, str(path))
        with session() as s:
            hits = match_frames(
                matcher, frames, lambda ids: load_reference_frames(s, ids), media_index=0
            )
    except (ModerationError, click.ClickException) as exc:
        msg = exc.message if isinstance(exc, ModerationError) else exc.format_message()
        emit({"path": str(path), "error": msg}, as_json, f"{path}: error: {msg}")
        return
    if only is not None:
        hits = [h for h in hits if h.bank in only]
    found: list[dict[str, object]] = []
    for h in hits:
        if h.segments:
            found.append(
                {
                    "bank": h.bank,
                    "entry_id": h.entry_id,
                    "score": h.score,
                    "segments": list(h.segments),
                }
            )
        else:
            at = h.variant.removeprefix("t=").removesuffix("s")
            found.append(
                {"bank": h.bank, "entry_id": h.entry_id, "distance": h.distance, "at": float(at)}
            )
    lines = [
        f"  {m['bank']} entry {m['entry_id']}: "
        + (
            ", ".join(
                f"{x['query_start']:.1f}-{x['query_end']:.1f} s = reference "
                f"{x['reference_start']:.1f}-{x['reference_end']:.1f} s (score {x['score']:.2f})"
                for x in m["segments"]  # type: ignore[attr-defined]
            )
            if "segments" in m
            else f"frame at {m['at']:.1f} s, distance {m['distance']}"
        )
        for m in found
    ]
    emit(
        {"path": str(path), "matches": found},
        as_json,
        f"{path}: " + ("\n".join(["", *lines]) if lines else "no match"),
    )


def _emit_hits(label: dict[str, object], hits: list[BankHit], as_json: bool) -> None:
    found = [{"bank": x.bank, "entry_id": x.entry_id, "distance": x.distance} for x in hits]
    name = label.get("path") or f"--text {label.get('text')}"
    emit(
        {**label, "matches": found},
        as_json,
        f"{name}: "
        + (
            ", ".join(f"{m['bank']}#{m['entry_id']} d={m['distance']}" for m in found)
            or str(label.get("note", "no match"))
        ),
    )
