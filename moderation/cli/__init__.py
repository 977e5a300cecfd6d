"""The `moderation` command line; heavy libraries are imported inside commands only."""

from __future__ import annotations

import sys

import click

from moderation.cli.banks import bank, match
from moderation.cli.copyright import claims_group, works_group
from moderation.cli.dead_letters import dead_letters_group
from moderation.cli.ops import bench, db_group, demo, keys
from moderation.cli.provenance import anchor, chain_group, verify
from moderation.cli.run import moderate, serve, worker
from moderation.cli.text import classify, eval_group
from moderation.cli.train import train
from moderation.errors import ModerationError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="moderation")
def cli() -> None:
    """Content moderation and copyright service."""


for command in (serve, worker, moderate, bank, match, keys, db_group, demo, bench, anchor, verify):
    cli.add_command(command)
cli.add_command(classify)
cli.add_command(eval_group)
cli.add_command(train)
cli.add_command(chain_group)
cli.add_command(dead_letters_group)
cli.add_command(works_group)
cli.add_command(claims_group)


def main() -> None:
    try:
        cli.main(prog_name="moderation", standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except ModerationError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(2)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
