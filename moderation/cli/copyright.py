"""Copyright commands: register works, list claims, scan, restore countered items."""

from __future__ import annotations

import base64
from pathlib import Path

import click

from moderation.cli.common import emit, json_option, session, settings


@click.group("works")
def works_group() -> None:
    """Rights holders' reference works."""


@works_group.command("add")
@click.argument("path", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--owner", required=True, help="The rights holder (its API key name).")
@click.option(
    "--kind", type=click.Choice(["image", "video", "text"]), default="image", show_default=True
)
@click.option(
    "--policy", type=click.Choice(["block", "review", "track"]), default="block", show_default=True
)
@click.option("--title", default="", help="The work's title.")
@click.option("--territory", "territories", multiple=True, help="ISO 3166-1 code (repeatable).")
@click.option("--text", "text", default=None, help="A text work's text (instead of PATH).")
@click.option("--scan/--no-scan", default=True, show_default=True, help="Scan old uploads now.")
@json_option
def works_add(
    path: Path | None,
    owner: str,
    kind: str,
    policy: str,
    title: str,
    territories: tuple[str, ...],
    text: str | None,
    scan: bool,
    as_json: bool,
) -> None:
    """Register the file at PATH (or --text) as a work in OWNER's reference bank, with a
    provenance leaf; --scan matches items already accepted against it in this process."""
    from moderation import retro_scan, works
    from moderation.errors import InvalidInput

    if (path is None) == (text is None):
        raise InvalidInput("give a PATH or --text", field="path")
    fields: dict[str, object] = {
        "kind": kind,
        "policy": policy,
        "title": title,
        "territories": list(territories),
    }
    if text is not None:
        fields["text"] = text
    else:
        assert path is not None
        try:
            fields["data_b64"] = base64.b64encode(path.read_bytes()).decode()
        except OSError as exc:
            raise InvalidInput(f"cannot read {path}: {exc.strerror}", field="path") from None
    try:
        body = works.WorkCreate.model_validate(fields)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    s = settings()
    with session() as db:
        out = works.work_to_dict(works.register_work(db, s, owner, body))
    if scan:
        with session(migrate=False) as db:
            out["retro_scan_claims"] = retro_scan.scan_all(db, s, str(out["id"]))
    emit(out, as_json, f"{out['id']}  {out['kind']}  {out['policy']}  bank {out['bank']}")


@works_group.command("list")
@click.option("--owner", default=None, help="Only this holder's works.")
@json_option
def works_list(owner: str | None, as_json: bool) -> None:
    """Registered works, newest first."""
    from moderation import works

    with session() as db:
        rows = [works.work_to_dict(w) for w in works.list_works(db, owner)]
    emit(
        rows,
        as_json,
        "\n".join(f"{w['id']}  {w['owner']}  {w['kind']}  {w['policy']}" for w in rows),
    )


@click.group("claims")
def claims_group() -> None:
    """Takedown claims and counter-notices."""


@claims_group.command("list")
@click.option("--owner", default=None, help="Only this holder's claims.")
@click.option("--state", default=None, help="Only claims in this state (e.g. needs_review).")
@json_option
def claims_list(owner: str | None, state: str | None, as_json: bool) -> None:
    """Claims, newest first."""
    from moderation import claims

    with session() as db:
        rows = [claims.claim_to_dict(c) for c in claims.list_claims(db, owner, state=state)]
    emit(
        rows,
        as_json,
        "\n".join(f"{c['id']}  {c['state']}  {c['work_id']}  {c['content_id']}" for c in rows),
    )


@claims_group.command("restore-due")
@json_option
def claims_restore_due(as_json: bool) -> None:
    """Restore countered items whose business-day wait is over (also run every 5 minutes by
    the worker's beat)."""
    from moderation import claims

    with session():
        pass  # migrate first
    out = claims.run_restore_due(settings())
    emit(out, as_json, f"restored {len(out['restored'])}")
