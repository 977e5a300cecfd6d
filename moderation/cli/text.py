"""Text model commands: `classify text` (score JSON lines) and `eval text` (measure them).

Both run the policy's text models (`text_models:`), through the same normalisation and
label-to-category mapping as the task (`moderation.pipeline.score_texts`). Input is JSON
lines, read and written one batch at a time; `-` is stdin or stdout.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

import click

from moderation.cli.common import json_option, settings

if TYPE_CHECKING:
    from moderation.pipeline import TextScores
    from moderation.runtime import LoadedTextModel

DEFAULT_BATCH = 32


@dataclass(frozen=True)
class Row:
    line: int
    id: Any
    text: str
    label: int | None = None
    group: str | None = None


class BadLine(ValueError):
    """One input line that cannot be used; the message names the problem."""


_in_option = click.option(
    "--in",
    "input_path",
    required=True,
    help="JSON lines file, or - for stdin.",
)
_model_option = click.option(
    "--model",
    "model_name",
    default=None,
    help="Only this text model of the policy (enabled or not). Default: every enabled one.",
)
_batch_option = click.option(
    "--batch",
    default=DEFAULT_BATCH,
    show_default=True,
    type=click.IntRange(1, 4096),
    help="Texts per model call.",
)
_skip_bad_option = click.option(
    "--skip-bad",
    is_flag=True,
    help="Report bad lines on stderr and go on, instead of stopping at the first one.",
)


def _parse(raw: bytes, n: int, *, max_chars: int, labelled: bool, by: str | None) -> Row | None:
    """One line as a Row; None for a blank line; BadLine naming the problem otherwise."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadLine(f"not UTF-8 (byte {exc.start})") from None
    if not line.strip():
        return None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise BadLine(f"not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise BadLine("not a JSON object")
    ident = obj.get("id")
    if ident is None and not labelled:  # classify needs an id, eval takes one optionally
        raise BadLine("missing 'id'")
    if ident is not None and (isinstance(ident, bool) or not isinstance(ident, str | int)):
        raise BadLine("'id' must be a string or an integer")
    if "text" not in obj:
        raise BadLine("missing 'text'")
    text = obj["text"]
    if not isinstance(text, str):
        raise BadLine("'text' must be a string")
    if len(text) > max_chars:
        raise BadLine(f"text has {len(text)} characters, over the limit of {max_chars}")
    label: int | None = None
    if labelled:
        if "label" not in obj:
            raise BadLine("missing 'label'")
        label = obj["label"]
        if isinstance(label, bool):
            label = int(label)
        if label not in (0, 1) or not isinstance(label, int):
            raise BadLine(f"'label' must be 0 or 1, got {obj['label']!r}")
    group = None
    if by is not None:
        value = obj.get(by)
        group = (
            "(none)" if value is None else value if isinstance(value, str) else json.dumps(value)
        )
    return Row(line=n, id=ident, text=text, label=label, group=group)


def _rows(
    stream: IO[bytes], source: str, *, labelled: bool, by: str | None, skip_bad: bool
) -> Iterator[Row]:
    """The usable lines of ``stream``; a bad one stops with an error naming it, or with
    ``skip_bad`` is reported on stderr and skipped."""
    max_chars = settings().limits.max_text_chars
    for n, raw in enumerate(stream, start=1):
        try:
            row = _parse(raw, n, max_chars=max_chars, labelled=labelled, by=by)
        except BadLine as exc:
            _bad(source, n, str(exc), skip_bad)
            continue
        if row is not None:
            yield row


def _bad(source: str, line: int, problem: str, skip_bad: bool) -> None:
    if not skip_bad:
        raise click.ClickException(f"{source} line {line}: {problem}")
    click.echo(f"{source} line {line}: {problem} (skipped)", err=True)


def _batches(rows: Iterator[Row], size: int) -> Iterator[list[Row]]:
    batch: list[Row] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _models(model_name: str | None) -> list[LoadedTextModel]:
    """The policy's text models to run: every enabled one, or the one named."""
    from moderation.errors import ConfigError
    from moderation.policy import load_policy
    from moderation.runtime import load_text_model, load_text_models

    s = settings()
    policy = load_policy(s.policy_path)
    if model_name is None:
        if not policy.enabled_text_models:
            raise ConfigError("the policy enables no text model (text_models:)")
        return load_text_models(policy, s)
    for spec in policy.text_models:
        if spec.name == model_name:
            return [load_text_model(spec, s)]
    names = [m.name for m in policy.text_models]
    raise click.BadParameter(f"the policy has no text model {model_name!r} (it has {names})")


def _scored(
    models: list[LoadedTextModel], batches: Iterator[list[Row]], source: str, skip_bad: bool
) -> Iterator[tuple[Row, TextScores]]:
    """Each row with its scores. A text too long for a model's windows is a bad line."""
    from moderation.errors import InputTooLarge
    from moderation.pipeline import score_texts

    for batch in batches:
        try:
            yield from zip(batch, score_texts(models, [r.text for r in batch]), strict=True)
        except InputTooLarge:
            for row in batch:  # find the line(s) again, one by one
                try:
                    yield row, score_texts(models, [row.text])[0]
                except InputTooLarge as exc:
                    _bad(source, row.line, exc.message, skip_bad)


def _r(x: float) -> float:
    return round(float(x), 6)


# --- classify ------------------------------------------------------------------------------


@click.group()
def classify() -> None:
    """Score inputs with the policy's models."""


@classify.command("text")
@_in_option
@click.option("--out", "output_path", default="-", show_default=True, help="Output, - for stdout.")
@_model_option
@_batch_option
@_skip_bad_option
def classify_text(
    input_path: str, output_path: str, model_name: str | None, batch: int, skip_bad: bool
) -> None:
    """Score JSON lines {"id", "text"} with the policy's text models.

    Writes one line per text: {"id", "score", "categories": {name: score}}. `score`
    (0..1) is the probability that the text violates any text category: a model's overall
    label when it has one (`overall_label`), else its highest mapped category; the highest
    over the models. `categories` are the policy's categories after its label mapping.
    Texts are normalised as the task normalises them; an empty one scores 0.
    """
    models = _models(model_name)
    with (
        click.open_file(input_path, "rb") as inp,
        click.open_file(output_path, "w", encoding="utf-8") as out,
    ):
        rows = _rows(inp, input_path, labelled=False, by=None, skip_bad=skip_bad)
        for row, scores in _scored(models, _batches(rows, batch), input_path, skip_bad):
            out.write(
                json.dumps(
                    {
                        "id": row.id,
                        "score": _r(scores.score),
                        "categories": {k: _r(v) for k, v in scores.categories.items()},
                    },
                    ensure_ascii=False,
                )
                + "\n"
            )
            out.flush()


# --- eval ----------------------------------------------------------------------------------


@click.group("eval")
def eval_group() -> None:
    """Measure the policy's models on labelled data."""


@eval_group.command("text")
@_in_option
@click.option(
    "--threshold",
    type=click.FloatRange(0.0, 1.0),
    default=None,
    help="Flag at score >= T. Default: the lowest review threshold of the models' categories.",
)
@click.option(
    "--by", "by", default=None, help="Also report accuracy per value of this field of the lines."
)
@_model_option
@_batch_option
@_skip_bad_option
@json_option
def eval_text(
    input_path: str,
    threshold: float | None,
    by: str | None,
    model_name: str | None,
    batch: int,
    skip_bad: bool,
    as_json: bool,
) -> None:
    """Measure the text models on JSON lines {"text", "label": 0|1, "id"?}.

    Prints ROC AUC of `score` (as `classify text` computes it), and accuracy, precision,
    recall, F1 and the confusion matrix of "score >= threshold" against the labels.
    """
    models = _models(model_name)
    if threshold is None:
        from moderation.policy import load_policy

        policy = load_policy(settings().policy_path)
        categories = sorted({c for m in models for c in m.labels_by_category})
        threshold = min(policy.thresholds(c).review for c in categories)
        source = "the lowest review threshold of " + ", ".join(categories)
    else:
        source = "--threshold"
    labels: list[int] = []
    scores: list[float] = []
    groups: list[str | None] = []
    with click.open_file(input_path, "rb") as inp:
        rows = _rows(inp, input_path, labelled=True, by=by, skip_bad=skip_bad)
        for row, s in _scored(models, _batches(rows, batch), input_path, skip_bad):
            assert row.label is not None
            labels.append(row.label)
            scores.append(s.score)
            groups.append(row.group)
    if not labels:
        raise click.ClickException(f"{input_path} has no labelled lines")
    report = text_metrics(labels, scores, threshold, groups if by is not None else None)
    report = {
        "models": [m.name for m in models],
        "threshold_from": source,
        **report,
    }
    if by is not None:
        report["by"] = {"field": by, "groups": report.pop("groups")}
    if as_json:
        click.echo(json.dumps(report, ensure_ascii=False))
    else:
        click.echo(_format_report(report))


def text_metrics(
    labels: list[int], scores: list[float], threshold: float, groups: list[str | None] | None
) -> dict[str, Any]:
    """Metrics of ``scores`` against 0/1 ``labels``; ``roc_auc`` is None with one class."""
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        precision_recall_fscore_support,
        roc_auc_score,
    )

    predicted = [int(s >= threshold) for s in scores]
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predicted, average="binary", pos_label=1, zero_division=0
    )
    (tn, fp), (fn, tp) = confusion_matrix(labels, predicted, labels=[0, 1]).tolist()
    out: dict[str, Any] = {
        "n": len(labels),
        "positives": sum(labels),
        "threshold": threshold,
        "roc_auc": _r(roc_auc_score(labels, scores)) if len(set(labels)) == 2 else None,
        "accuracy": _r(accuracy_score(labels, predicted)),
        "precision": _r(precision),
        "recall": _r(recall),
        "f1": _r(f1),
        "confusion": {"tn": tn, "fp": fp, "fn": fn, "tp": tp},
    }
    if groups is not None:
        per: dict[str, list[int]] = {}
        for g, y, p in zip(groups, labels, predicted, strict=True):
            n, correct, positives, flagged = per.setdefault(str(g), [0, 0, 0, 0])
            per[str(g)] = [n + 1, correct + int(y == p), positives + y, flagged + p]
        out["groups"] = {
            g: {"n": n, "accuracy": _r(c / n), "positives": pos, "flagged": fl}
            for g, (n, c, pos, fl) in sorted(per.items())
        }
    return out


def _format_report(r: dict[str, Any]) -> str:
    c = r["confusion"]
    auc = "n/a (one class only)" if r["roc_auc"] is None else f"{r['roc_auc']:.4f}"
    lines = [
        f"models: {', '.join(r['models'])}",
        f"lines: {r['n']} ({r['positives']} labelled 1)",
        f"threshold: {r['threshold']:g} ({r['threshold_from']})",
        f"ROC AUC:   {auc}",
        f"accuracy:  {r['accuracy']:.4f}",
        f"precision: {r['precision']:.4f}",
        f"recall:    {r['recall']:.4f}",
        f"F1:        {r['f1']:.4f}",
        "confusion matrix (rows: label, columns: predicted):",
        "             pred 0   pred 1",
        f"  label 0  {c['tn']:7d}  {c['fp']:7d}",
        f"  label 1  {c['fn']:7d}  {c['tp']:7d}",
    ]
    if "by" in r:
        groups = r["by"]["groups"]
        width = max(len(g) for g in groups)
        lines.append(f"accuracy by {r['by']['field']}:")
        lines.extend(
            f"  {g:<{width}}  {v['accuracy']:.3f}  (n={v['n']}, labelled 1: {v['positives']}, "
            f"flagged: {v['flagged']})"
            for g, v in groups.items()
        )
    return "\n".join(lines)
