"""Helpers shared by CLI commands: settings, sessions, output."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from moderation.settings import Settings

json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


def settings() -> Settings:
    from moderation.settings import get_settings

    return get_settings()


@contextmanager
def session(migrate: bool = True) -> Iterator[Session]:
    from moderation.storage import db

    url = settings().resolved_database_url
    if migrate:
        db.migrate(url)
    with db.session_scope(url) as s:
        yield s


def emit(obj: Any, as_json: bool, text: str | None = None) -> None:
    if as_json:
        click.echo(json.dumps(obj, ensure_ascii=False, default=str))
    else:
        click.echo(
            text if text is not None else json.dumps(obj, ensure_ascii=False, indent=2, default=str)
        )
