"""Operator commands: keys, db, demo, bench."""

from __future__ import annotations

import click

from moderation.cli.common import emit, json_option, session, settings


@click.group()
def keys() -> None:
    """Manage API keys."""


@keys.command("create")
@click.option(
    "--role", required=True, type=click.Choice(["service", "rights_holder", "reviewer", "admin"])
)
@click.option("--name", default=None)
@json_option
def keys_create(role: str, name: str | None, as_json: bool) -> None:
    """Create a key and print it once (it is stored hashed)."""
    from moderation import audit
    from moderation.keys import create_key

    with session() as s:
        secret, p = create_key(s, role, name)
        audit.record(s, "cli", "key.create", "api_key", str(p.key_id), role=role)
    emit({"id": p.key_id, "name": p.name, "role": p.role, "key": secret}, as_json, secret)


@keys.command("list")
@json_option
def keys_list(as_json: bool) -> None:
    """List keys (never their secrets)."""
    from moderation.keys import list_keys

    with session() as s:
        rows = list_keys(s)
    for r in rows:
        emit(
            r,
            as_json,
            f"{r['id']:4} {r['role']:14} {r['name']:24} {r['prefix']}..."
            f"{'  revoked' if r['revoked'] else ''}",
        )


@keys.command("revoke")
@click.argument("key_id", type=int)
def keys_revoke(key_id: int) -> None:
    """Revoke a key."""
    from moderation import audit
    from moderation.keys import revoke_key

    with session() as s:
        revoke_key(s, key_id)
        audit.record(s, "cli", "key.revoke", "api_key", str(key_id))
    click.echo(f"revoked key {key_id}")


@click.group("db")
def db_group() -> None:
    """Database schema."""


@db_group.command("upgrade")
def db_upgrade() -> None:
    """Apply migrations up to the newest revision."""
    from moderation.storage import db

    url = settings().resolved_database_url
    db.migrate(url)
    click.echo("database is at the newest revision")


@click.command()
@json_option
def demo(as_json: bool) -> None:
    """Moderate a bundled sample set (English and Chinese text, photos and near-copies)."""
    from moderation.demo import run_demo

    run_demo(as_json=as_json)


@click.command()
@click.option("--rate", default=20.0, show_default=True, help="Offered items per second.")
@click.option("--duration", default=30.0, show_default=True, help="Seconds of load.")
@click.option("--warmup", default=20, show_default=True, help="Items sent before measuring.")
@click.option("--concurrency", default=None, type=int, help="Worker processes to start.")
@click.option("--pool", default=None, type=click.Choice(["prefork", "solo", "threads"]))
@json_option
def bench(
    rate: float,
    duration: float,
    warmup: int,
    concurrency: int | None,
    pool: str | None,
    as_json: bool,
) -> None:
    """Drive `moderation.moderate` through Celery and Redis at a fixed rate; print percentiles."""
    from moderation.bench import run_bench

    result = run_bench(
        rate=rate, duration=duration, warmup=warmup, concurrency=concurrency, pool=pool
    )
    emit(result, as_json, result.get("summary"))
