"""Bank commands: create, add, remove, list, export, import; and `match`."""

from __future__ import annotations

from pathlib import Path

import click

from moderation.cli.common import emit, json_option, session, settings

_paths = click.argument(
    "paths", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path)
)


def _hash_file(path: Path):
    from moderation.pipeline import hash_image_data, image_limits_from

    limits = image_limits_from(settings())
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise click.ClickException(f"cannot read {path}: {exc.strerror}") from None
    if size > limits.max_bytes:
        from moderation.errors import InputTooLarge

        raise InputTooLarge(f"{path} is {size} bytes, over the limit of {limits.max_bytes}")
    return hash_image_data(path.read_bytes(), limits, str(path))


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
    from moderation import audit, banks
    from moderation.errors import ModerationError

    failed = False
    with session() as s:
        row = banks.get_bank_row(s, name)
        for path in paths:
            try:
                h = _hash_file(path)
                [entry_id] = banks.add_entries(
                    s, row, [banks.EntryInput(h.pdq, h.pdq_quality, note, str(path))]
                )
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


@bank.command("export")
@click.argument("name")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["txt", "csv", "jsonl"]),
    default=None,
    help="Default: from --out's suffix, else txt.",
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None)
def bank_export(name: str, fmt: str | None, out: Path | None) -> None:
    """Export a bank as a hash list (PDQ hex, CSV or JSON lines)."""
    from moderation import banks, hashlist

    fmt = fmt or (hashlist.format_from_name(out.name) if out else "txt")
    with session() as s:
        row = banks.get_bank_row(s, name)
        lines = hashlist.format_lines(
            ((e.signal_type, e.value, e.quality, e.note) for e in banks.iter_entries(s, row)), fmt
        )
        if out is None:
            for line in lines:
                click.echo(line, nl=False)
        else:
            with out.open("w", encoding="utf-8") as f:
                f.writelines(lines)


@bank.command("import")
@click.argument("name")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["txt", "csv", "jsonl"]), default=None)
@json_option
def bank_import(name: str, file: Path, fmt: str | None, as_json: bool) -> None:
    """Import a hash list into a bank (entries already present are kept once)."""
    from moderation import audit, banks, hashlist

    entries = hashlist.parse(
        file.read_text(encoding="utf-8"),
        fmt or hashlist.format_from_name(file.name),
        banks.validate_pdq,
    )
    with session() as s:
        ids = banks.add_entries(s, banks.get_bank_row(s, name), entries)
        audit.record(s, "cli", "bank.import", "bank", name, count=len(ids))
    emit({"bank": name, "imported": len(ids)}, as_json, f"imported {len(ids)} entries into {name}")


@click.command()
@_paths
@click.option("--bank", "bank_name", default=None, help="Only this bank.")
@json_option
def match(paths: tuple[Path, ...], bank_name: str | None, as_json: bool) -> None:
    """Match files against the banks; one line per file."""
    from moderation import banks
    from moderation.errors import ModerationError
    from moderation.matching import BankMatcher

    matcher = BankMatcher()
    with session() as s:
        if bank_name is not None:
            banks.get_bank_row(s, bank_name)
        matcher.load(s)
    only = {bank_name} if bank_name else None
    for path in paths:
        try:
            h = _hash_file(path)
        except (ModerationError, click.ClickException) as exc:
            msg = exc.message if isinstance(exc, ModerationError) else exc.format_message()
            emit({"path": str(path), "error": msg}, as_json, f"{path}: error: {msg}")
            continue
        hits = matcher.match_pdq(h.pdq, bank_names=only)
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
