"""`moderation train`: reproduce the built-in models from labelled data."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import click

from moderation.cli.common import emit, json_option


def _packaged_text_weights() -> Path:
    """``models/weights/text`` of the installed ``models`` package (nothing imported)."""
    spec = importlib.util.find_spec("models")
    if spec is None or not spec.submodule_search_locations:
        return Path("models/weights/text")
    return Path(next(iter(spec.submodule_search_locations))) / "weights" / "text"


@click.group()
def train() -> None:
    """Train the built-in models."""


@train.command("text")
@click.option(
    "--data",
    "data_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("../shared/data"),
    show_default=True,
    help="Labelled data (layout of ../shared/data: text/davidson, text/cold, ...).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=_packaged_text_weights,
    show_default="the packaged models/weights/text",
    help="Where to write config.json, encoder_adapter.npz and zh_ngram.npz.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--epochs", type=float, default=3.0, show_default=True)
@click.option("--threads", type=int, default=2, show_default=True, help="torch threads.")
@click.option(
    "--quantization",
    type=click.Choice(["auto", "int8", "fp32"]),
    default="auto",
    show_default=True,
    help="auto: int8 unless it loses over 0.01 dev ROC AUC on an English set and label "
    "with 50+ examples of each class.",
)
@click.option("--max-per-set", type=int, default=None, help="Subsample every split (quick runs).")
@json_option
def train_text(
    data_dir: Path,
    out_dir: Path,
    seed: int,
    epochs: float,
    threads: int,
    quantization: str,
    max_per_set: int | None,
    as_json: bool,
) -> None:
    """Train the built-in text classifier (deterministic for a seed on one machine)."""
    from moderation.train_text import TrainOptions, train

    if not as_json:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if not data_dir.is_dir():
        raise click.ClickException(f"data directory {data_dir} does not exist")
    options = TrainOptions(
        epochs=epochs, threads=threads, quantization=quantization, max_per_set=max_per_set
    )
    metrics = train(data_dir, out_dir, seed, options)
    emit(metrics, as_json)
