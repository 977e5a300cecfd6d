"""Bank commands: create, add, remove, list, export, import; and `match`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from moderation.cli.common import emit, json_option, session, settings

_paths = click.argument(
    "paths", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path)
)


def _read_image(path: Path):
    """The decoded image of ``path``, through the service's bounded decode."""
    from moderation.pipeline import decode_image_data, image_limits_from

    limits = image_limits_from(settings())
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise click.ClickException(f"cannot read {path}: {exc.strerror}") from None
    if size > limits.max_bytes:
        from moderation.errors import InputTooLarge

        raise InputTooLarge(f"{path} is {size} bytes, over the limit of {limits.max_bytes}")
    return decode_image_data(path.read_bytes(), limits, str(path))


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
@click.option("--note", default="")
@json_option
def bank_add(name: str, paths: tuple[Path, ...], note: str, as_json: bool) -> None:
    """Hash files and add them to a bank; one line per file."""
    from models.image_robust import reference_variants
    from moderation import audit, banks
    from moderation.errors import ModerationError
    from moderation.pipeline import hash_decoded

    failed = False
    with session() as s:
        row = banks.get_bank_row(s, name)
        for path in paths:
            try:
                decoded = _read_image(path)
                h = hash_decoded(decoded, str(path))
                [entry_id] = banks.add_entries(
                    s, row, [banks.EntryInput(h.pdq, h.pdq_quality, note, str(path))]
                )
                banks.add_reference_hashes(s, entry_id, reference_variants(decoded.image))
                s.commit()
                emit(
                    {"path": str(path), "entry_id": entry_id}, as_json, f"{path}: entry {entry_id}"
                )
            except (ModerationError, click.ClickException) as exc:
                failed = True
                msg = exc.message if isinstance(exc, ModerationError) else exc.format_message()
                emit({"path": str(path), "error": msg}, as_json, f"{path}: error: {msg}")
        audit.record(s, "cli", "bank.entry.add", "bank", name, count=len(paths))
    if failed:
        raise SystemExit(1)


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
    help="txt (PDQ hex,quality), csv, jsonl or hma (HMA signal bodies). "
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
@click.option("--bank", "bank_name", default=None, help="Only this bank.")
@json_option
def match(paths: tuple[Path, ...], bank_name: str | None, as_json: bool) -> None:
    """Match files against the banks (with the policy's robust variants); one line per file."""
    from models.image_robust import query_variants
    from moderation import banks
    from moderation.errors import ModerationError
    from moderation.matching import BankMatcher
    from moderation.policy import load_policy

    conf = settings()
    use_variants = load_policy(conf.policy_path).matching.variants
    matcher = BankMatcher()
    with session() as s:
        if bank_name is not None:
            banks.get_bank_row(s, bank_name)
        matcher.load(s, snapshot_dir=conf.index_snapshot_dir)
    only = {bank_name} if bank_name else None
    for path in paths:
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
        hits = matcher.match_pdq_many(values, bank_names=only)
        found = [{"bank": x.bank, "entry_id": x.entry_id, "distance": x.distance} for x in hits]
        emit(
            {"path": str(path), "matches": found},
            as_json,
            f"{path}: "
            + (
                ", ".join(f"{m['bank']}#{m['entry_id']} d={m['distance']}" for m in found)
                or "no match"
            ),
        )
