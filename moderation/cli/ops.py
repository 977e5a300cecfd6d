"""Operator commands: keys, db, demo, bench (a group: the load benchmark, `bench index`)."""

from __future__ import annotations

from pathlib import Path

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
@click.option(
    "--rate-limit",
    default=None,
    help="This key's limit, e.g. '20/second;600/minute', or 'none' (default: the role's).",
)
@click.option("--expires-in", default=None, help="End of life, e.g. 90d or 12h (default: never).")
@json_option
def keys_create(
    role: str, name: str | None, rate_limit: str | None, expires_in: str | None, as_json: bool
) -> None:
    """Create a key and print it once (it is stored hashed)."""
    from moderation import audit
    from moderation.keys import create_key, parse_duration

    expiry = parse_duration(expires_in, field="expires_in") if expires_in else None
    with session() as s:
        secret, p = create_key(s, role, name, rate_limit=rate_limit, expires_in=expiry)
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
            f"  expires {r['expires_at'] or 'never'}"
            f"{'  EXPIRED' if r['expired'] else ''}{'  revoked' if r['revoked'] else ''}"
            f"  limit {r['rate_limit'] or 'role default'}"
            + (
                f"  old secret until {r['previous_secret_expires_at']}"
                if r["previous_secret_expires_at"]
                else ""
            ),
        )


@keys.command("rotate")
@click.argument("key_id", type=int)
@click.option(
    "--grace", default="24h", show_default=True, help="How long the old secret keeps working."
)
@json_option
def keys_rotate(key_id: int, grace: str, as_json: bool) -> None:
    """Give a key a new secret (printed once); the old one works until the grace ends."""
    from moderation import audit
    from moderation.keys import parse_duration, rotate_key

    with session() as s:
        secret, info = rotate_key(s, key_id, parse_duration(grace, field="grace"))
        audit.record(s, "cli", "key.rotate", "api_key", str(key_id), grace=grace)
    emit({**info, "key": secret}, as_json, secret)


@keys.command("set-limit")
@click.argument("key_id", type=int)
@click.argument("rate_limit")
@json_option
def keys_set_limit(key_id: int, rate_limit: str, as_json: bool) -> None:
    """Set a key's rate limit ('20/second;600/minute', 'none', or 'default' for the role's)."""
    from moderation import audit
    from moderation.keys import set_rate_limit

    limit = None if rate_limit == "default" else rate_limit
    with session() as s:
        info = set_rate_limit(s, key_id, limit)
        audit.record(s, "cli", "key.rate_limit", "api_key", str(key_id), limit=limit)
    emit(info, as_json, f"key {key_id}: rate limit {info['rate_limit'] or 'role default'}")


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


@click.group(invoke_without_command=True)
@click.option("--rate", default=20.0, show_default=True, help="Offered items per second.")
@click.option("--duration", default=30.0, show_default=True, help="Seconds of load.")
@click.option("--warmup", default=20, show_default=True, help="Items sent before measuring.")
@click.option("--concurrency", default=None, type=int, help="Worker processes to start.")
@click.option("--pool", default=None, type=click.Choice(["prefork", "solo", "threads"]))
@json_option
@click.pass_context
def bench(
    ctx: click.Context,
    rate: float,
    duration: float,
    warmup: int,
    concurrency: int | None,
    pool: str | None,
    as_json: bool,
) -> None:
    """Benchmarks. Without a subcommand: drive `moderation.moderate` through Celery and Redis
    at a fixed rate and print latency percentiles."""
    if ctx.invoked_subcommand is not None:
        return
    from moderation.bench import run_bench

    result = run_bench(
        rate=rate, duration=duration, warmup=warmup, concurrency=concurrency, pool=pool
    )
    emit(result, as_json, result.get("summary"))


@bench.command("load")
@click.option("--target", default="task", show_default=True, type=click.Choice(["task", "http"]))
@click.option(
    "--mix",
    default="design",
    show_default=True,
    type=click.Choice(["text", "design"]),
    help="text: 280 characters; design: those plus one 1280x720 JPEG (the DESIGN item).",
)
@click.option("--rate", default=20.0, show_default=True, help="Offered items per second.")
@click.option(
    "--duration", default="60s", show_default=True, help="Length of the load: 90, 90s, 10m, 1h."
)
@click.option("--items", default=None, type=int, help="Items to send (instead of --duration).")
@click.option("--workers", default=1, show_default=True, help="Worker processes to start.")
@click.option("--warmup", default=20, show_default=True, help="Items sent before measuring.")
@click.option("--interval", default=10.0, show_default=True, help="Seconds per report row.")
@click.option("--timeout", default=30.0, show_default=True, help="Seconds before an item fails.")
@click.option("--memory-every", default=5.0, show_default=True, help="Seconds between RSS samples.")
@click.option("--bank-size", default=10_000, show_default=True, help="Random hashes banked.")
@click.option(
    "--find-saturation",
    is_flag=True,
    help="Step the rate up by --step-factor until throughput stops following it, then hold "
    "50 % and 80 % of the capacity for --duration each.",
)
@click.option("--start-rate", default=10.0, show_default=True, help="First step's rate.")
@click.option("--step-factor", default=1.25, show_default=True)
@click.option("--step-duration", default=15.0, show_default=True, help="Seconds per step.")
@click.option("--max-rate", default=2000.0, show_default=True)
@click.option(
    "--attach",
    is_flag=True,
    help="Load a running deployment (MODERATION_REDIS_URL, --api-url) instead of starting one.",
)
@click.option("--api-url", default=None, help="With --attach: the API's base URL.")
@click.option(
    "--api-key", default=None, help="With --attach: a service key (or MODERATION_BENCH_API_KEY)."
)
@click.option("--watch-pid", multiple=True, type=int, help="With --attach: a PID whose RSS to log.")
@json_option
def bench_load(
    target: str,
    mix: str,
    rate: float,
    duration: str,
    items: int | None,
    workers: int,
    warmup: int,
    interval: float,
    timeout: float,
    memory_every: float,
    bank_size: int,
    find_saturation: bool,
    start_rate: float,
    step_factor: float,
    step_duration: float,
    max_rate: float,
    attach: bool,
    api_url: str | None,
    api_key: str | None,
    watch_pid: tuple[int, ...],
    as_json: bool,
) -> None:
    """Open-loop load at a fixed rate against the task or the HTTP API: latency percentiles
    per interval, throughput, errors by code, RSS of workers and API over time."""
    from contextlib import nullcontext

    from moderation.bench_load import LoadOptions, parse_duration, run_load, run_saturation
    from moderation.bench_stack import attached_stack, own_stack

    if rate <= 0 or (items is not None and items < 1) or workers < 1:
        raise click.BadParameter("--rate > 0, --items and --workers >= 1")
    opts = LoadOptions(
        target=target,
        mix=mix,
        rate=rate,
        duration_s=parse_duration(duration),
        items=items,
        warmup=warmup,
        interval_s=interval,
        timeout_s=timeout,
        memory_period_s=memory_every,
    )
    stack_cm = (
        nullcontext(attached_stack(api_url=api_url, api_key=api_key, watch_pids=watch_pid))
        if attach
        else own_stack(workers=workers, with_api=target == "http", bank_size=bank_size)
    )
    with stack_cm as stack:
        if find_saturation:
            result = run_saturation(
                stack,
                opts,
                start_rate=start_rate,
                factor=step_factor,
                max_rate=max_rate,
                step_s=step_duration,
            )
        else:
            result = run_load(stack, opts)
    emit(result, as_json, result["summary"])


@bench.command("index")
@click.option("--size", default=10_000_000, show_default=True, help="Hashes in the index.")
@click.option("--queries", default=200, show_default=True, help="Single queries timed.")
@click.option("--radius", default=31, show_default=True, help="Hamming radius.")
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--restart-size",
    default=200_000,
    show_default=True,
    help="Entries in the SQLite database for the BankMatcher restart (0 skips it).",
)
@json_option
def bench_index(
    size: int, queries: int, radius: int, seed: int, restart_size: int, as_json: bool
) -> None:
    """The bank index at scale: build, memory, exactness, query latency on one thread,
    batches, snapshot save/load, incremental changes, worker restart."""
    from moderation.bench_index import run_index_bench

    if size < 1 or queries < 1 or radius < 0:
        raise click.BadParameter("--size and --queries must be >= 1, --radius >= 0")
    result = run_index_bench(
        size=size,
        queries=queries,
        radius=radius,
        seed=seed,
        restart_size=restart_size,
        progress=None if as_json else lambda msg: click.echo(f"... {msg}", err=True),
    )
    emit(result, as_json, result["summary"])


@bench.command("robustness")
@click.option(
    "--distractors",
    default=2000,
    show_default=True,
    help="Distractor images per fold (two folds).",
)
@click.option("--precision", default=0.9999, show_default=True, help="Precision to hold.")
@click.option("--seed", default=7, show_default=True)
@json_option
def bench_robustness(distractors: int, precision: float, seed: int, as_json: bool) -> None:
    """Near-copy recall per transform at the threshold keeping precision >= --precision,
    for this service's matcher, plain PDQ and plain pHash (scikit-image photos)."""
    from moderation.bench_robustness import format_table, run_robustness

    if distractors < 1 or not 0 < precision <= 1:
        raise click.BadParameter("--distractors must be >= 1 and 0 < --precision <= 1")
    report = run_robustness(distractors_per_fold=distractors, min_precision=precision, seed=seed)
    summary = (
        f"{report['references']} references, {report['transformed_queries']} transformed "
        f"queries, {report['distractors']} distractors, precision >= {precision}\n"
        + format_table(report)
    )
    emit(report, as_json, summary)


@bench.command("simhash")
@click.option(
    "--data",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=Path("../shared/data"),
    show_default=True,
    help="The labelled data directory (read, never copied).",
)
@click.option("--seed", default=1, show_default=True)
@click.option("--index-size", default=10_000_000, show_default=True, help="0 skips the index.")
def bench_simhash(data: Path, seed: int, index_size: int) -> None:
    """Text near-duplicates: SimHash speed, distances of edited copies and of unrelated
    texts, and a 64-bit index at --index-size (tables behind the text-bank threshold)."""
    from moderation.bench_text import run

    run(data, seed, index_size)


@bench.command("text")
@click.option("--reps", default=300, show_default=True, help="Single-text calls per model.")
@click.option("--batches", default=30, show_default=True, help="Batches of 32 per model.")
@click.option(
    "--path-reps", default=300, show_default=True, help="Runs of the text path of moderate."
)
@json_option
def bench_text(reps: int, batches: int, path_reps: int, as_json: bool) -> None:
    """Text models: one text and batches of 32 on one thread, and what the budget item's
    text adds inside `moderate` (keywords, models, SimHash and text banks)."""
    from moderation.bench_text_model import format_table, run

    if min(reps, batches, path_reps) < 1:
        raise click.BadParameter("--reps, --batches and --path-reps must be >= 1")
    report = run(reps=reps, batches=batches, path_reps=path_reps)
    emit(report, as_json, format_table(report))


@bench.command("video")
@click.option("--seconds", default=60.0, show_default=True, help="Length of the 720p video.")
@click.option("--reps", default=3, show_default=True, help="Timed runs of the throughput video.")
@click.option(
    "--gop",
    default=250,
    show_default=True,
    help="Keyframe interval of the throughput video (x264's default 250; phones use ~30).",
)
@click.option("--references", default=12, show_default=True, help="Reference videos banked.")
@click.option("--reference-seconds", default=60.0, show_default=True)
@click.option("--distractors", default=12, show_default=True, help="Unrelated videos queried.")
@click.option("--seed", default=0, show_default=True, help="Thresholds were set on seed 1.")
@click.option("--skip-throughput", is_flag=True, help="Only the matching part.")
@click.option("--skip-matching", is_flag=True, help="Only the throughput part.")
@json_option
def bench_video(
    seconds: float,
    reps: int,
    gop: int,
    references: int,
    reference_seconds: float,
    distractors: int,
    seed: int,
    skip_throughput: bool,
    skip_matching: bool,
    as_json: bool,
) -> None:
    """Video: seconds per 720p video minute (sampled, classified, hashed, matched), and clip
    matching recall, boundary error and false matches over re-upload transforms."""
    from moderation.bench_video import format_table, run_matching, run_throughput

    if (
        seconds <= 0
        or reps < 1
        or gop < 1
        or references < 1
        or reference_seconds < 25
        or distractors < 0
    ):
        raise click.BadParameter(
            "--seconds > 0, --reps >= 1, --gop >= 1, --references >= 1, --reference-seconds >= 25 "
            "(clips are up to 20 s, at up to 1.1x speed) and --distractors >= 0"
        )
    report: dict[str, object] = {}
    if not skip_throughput:
        report["throughput"] = run_throughput(seconds=seconds, reps=reps, seed=seed, gop=gop)
    if not skip_matching:
        report["matching"] = run_matching(
            references=references,
            reference_seconds=reference_seconds,
            distractors=distractors,
            seed=seed,
            progress=None if as_json else click.echo,
        )
    emit(report, as_json, format_table(report))


@bench.command("anchor")
@click.option("--leaves", default=100_000, show_default=True, help="Leaves anchored end to end.")
@click.option(
    "--verify-rounds", default=10_000, show_default=True, help="Offline verifications timed."
)
@click.option("--confirmations", default=3, show_default=True, help="Blocks until confirmed.")
@json_option
def bench_anchor(leaves: int, verify_rounds: int, confirmations: int, as_json: bool) -> None:
    """Provenance on the embedded chain (scratch database and chain): leaves per second from
    registration to confirmed, receipts, offline verification time, gas per batch."""
    from moderation.bench_anchor import run_anchor_bench

    if leaves < 1 or verify_rounds < 100 or confirmations < 1:
        raise click.BadParameter("--leaves >= 1, --verify-rounds >= 100, --confirmations >= 1")
    result = run_anchor_bench(
        leaves=leaves, verify_rounds=verify_rounds, confirmations=confirmations
    )
    emit(result, as_json, result["summary"])
