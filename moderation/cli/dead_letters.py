"""`moderation dead-letters`: tasks that failed every allowed delivery (list, replay, purge)."""

from __future__ import annotations

import click

from moderation.cli.common import emit, json_option, session


@click.group("dead-letters")
def dead_letters_group() -> None:
    """Inspect, replay or purge dead-lettered tasks (poison messages)."""


@dead_letters_group.command("list")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10_000))
@json_option
def dead_letters_list(limit: int, as_json: bool) -> None:
    """List dead letters, newest first, with their last error."""
    from moderation import dead_letters

    with session() as s:
        rows = [dead_letters.as_dict(r) for r in dead_letters.list_letters(s, limit=limit)]
    if as_json:
        emit(rows, True)
        return
    if not rows:
        click.echo("no dead letters")
    for r in rows:
        replayed = f"  replayed {r['replay_count']}x" if r["replay_count"] else ""
        click.echo(
            f"{r['id']:5} {r['created_at'][:19]} {r['task_name']} {r['content_id'] or '-'}"
            f"  {r['deliveries']} deliveries{replayed}\n      {r['error']}"
        )


@dead_letters_group.command("replay")
@click.argument("letter_ids", type=int, nargs=-1, required=True)
@json_option
def dead_letters_replay(letter_ids: tuple[int, ...], as_json: bool) -> None:
    """Send dead letters' tasks again (new task ids; the letters stay, marked replayed)."""
    from moderation import audit, dead_letters

    sent = {}
    with session() as s:
        for letter_id in letter_ids:
            sent[letter_id] = dead_letters.replay(s, letter_id)
            audit.record(s, "cli", "dead_letter.replay", "dead_letter", str(letter_id))
    emit(
        {"replayed": [{"id": k, "task_id": v} for k, v in sent.items()]},
        as_json,
        "\n".join(f"{k}: sent as task {v}" for k, v in sent.items()),
    )


@dead_letters_group.command("purge")
@click.argument("letter_ids", type=int, nargs=-1)
@click.option("--all", "purge_all", is_flag=True, help="Delete every dead letter.")
@json_option
def dead_letters_purge(letter_ids: tuple[int, ...], purge_all: bool, as_json: bool) -> None:
    """Delete the given dead letters (or --all)."""
    from moderation import audit, dead_letters

    if not letter_ids and not purge_all:
        raise click.UsageError("name dead letter ids, or pass --all")
    with session() as s:
        count = dead_letters.purge(s, None if purge_all else list(letter_ids))
        audit.record(
            s,
            "cli",
            "dead_letter.purge",
            "dead_letter",
            "all" if purge_all else ",".join(map(str, letter_ids)),
        )
    emit({"purged": count}, as_json, f"purged {count}")
