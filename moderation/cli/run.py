"""Process commands: serve, worker, moderate."""

from __future__ import annotations

import base64
import logging
import sys
import uuid
from pathlib import Path

import click

from moderation.cli.common import emit, json_option, settings

log = logging.getLogger("moderation.cli")


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--concurrency", default=None, type=int, help="Worker processes (default: config).")
@click.option("--no-worker", is_flag=True, help="Do not start a local worker.")
def serve(host: str, port: int, concurrency: int | None, no_worker: bool) -> None:
    """Run the HTTP API; without MODERATION_REDIS_URL also an embedded Redis and a worker."""
    import os
    import signal

    import uvicorn

    from moderation.api.app import create_app
    from moderation.embedded import EmbeddedRedis, start_worker, stop_process
    from moderation.settings import get_settings
    from moderation.storage import db

    def _terminate(*_: object) -> None:
        raise SystemExit(0)

    # uvicorn re-raises SIGTERM after its graceful shutdown; turning it into SystemExit
    # lets the `finally` below stop the worker and the embedded Redis.
    signal.signal(signal.SIGTERM, _terminate)
    s = settings()
    _configure_logging(s.log_format, s.log_level)
    s.var_dir.mkdir(parents=True, exist_ok=True)
    db.migrate(s.resolved_database_url)
    redis = None
    if not s.redis_url:
        redis = EmbeddedRedis(s.var_dir)
        os.environ["MODERATION_REDIS_URL"] = redis.start()
        get_settings.cache_clear()
        s = get_settings()
        log.info("embedded Redis on %s", s.redis_url)
    proc = None
    if not no_worker:
        proc = start_worker(
            s.redis_url or "",
            concurrency=concurrency or s.worker_concurrency,
            pool=s.worker_pool,
            beat=True,
        )
    try:
        log.info("API on http://%s:%d (OpenAPI at /docs)", host, port)
        # log_config=None: uvicorn's loggers propagate to ours (one format); our request
        # middleware writes the access lines, with request ids.
        uvicorn.run(
            create_app(s),
            host=host,
            port=port,
            log_level=s.log_level.lower(),
            access_log=False,
            log_config=None,
        )
    finally:
        if proc is not None:
            stop_process(proc)
        if redis is not None:
            redis.stop()


@click.command()
@click.option("--concurrency", "-c", default=None, type=int, help="Processes (default: config).")
@click.option("--pool", "-P", default=None, type=click.Choice(["prefork", "solo", "threads"]))
@click.option("--queues", "-Q", default="moderate,video,anchor,maintenance", show_default=True)
@click.option("--loglevel", "-l", default="INFO", show_default=True)
@click.option("--hostname", "-n", default=None, help="Worker node name (default: unique).")
@click.option(
    "--beat",
    "-B",
    is_flag=True,
    help="Also run the periodic tasks (anchoring); start exactly one worker with it.",
)
def worker(
    concurrency: int | None,
    pool: str | None,
    queues: str,
    loglevel: str,
    hostname: str | None,
    beat: bool,
) -> None:
    """Run a Celery worker (scale out by running more, on more machines)."""
    import os

    from moderation.embedded import running_embedded_url
    from moderation.settings import get_settings
    from moderation.storage import db

    s = settings()
    # Before anything imports prometheus_client: its multiprocess mode is chosen at import.
    metrics_dir = _prepare_worker_metrics(s.var_dir) if s.worker_metrics_port is not None else None
    _configure_logging(s.log_format, loglevel)
    if not s.redis_url:
        url = running_embedded_url(s.var_dir)
        if url is None:
            raise click.ClickException(
                "set MODERATION_REDIS_URL, or start `moderation serve` here first to join its "
                "embedded Redis"
            )
        os.environ["MODERATION_REDIS_URL"] = url
        get_settings.cache_clear()
        s = get_settings()
    db.migrate(s.resolved_database_url)
    pool = pool or s.worker_pool
    from workers.app import app

    if pool != "prefork":
        # This process runs the tasks: load banks, lists and models before the first one,
        # and announce them to /readyz (prefork children do so after their fork).
        from moderation.runtime import get_runtime
        from workers.observability import warm_up_and_announce

        get_runtime()
        warm_up_and_announce()
    if metrics_dir is not None and s.worker_metrics_port is not None:
        _serve_worker_metrics(s.worker_metrics_address, s.worker_metrics_port)

    beat_args = ["--beat", "--schedule", str(s.var_dir / "celerybeat-schedule")] if beat else []
    # JSON logs: no banner either, so every line on the output is one JSON object.
    quiet = ["--quiet"] if s.log_format == "json" else []
    app.worker_main(
        [
            *quiet,
            "worker",
            *beat_args,
            "-Q",
            queues,
            "-c",
            str(concurrency or s.worker_concurrency),
            "-P",
            pool,
            "-l",
            loglevel,
            "-n",
            hostname or f"moderation-{os.getpid()}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )


def _configure_logging(fmt: str, level: str) -> None:
    from moderation.logs import configure_logging, configured_secrets

    configure_logging(fmt, level, secrets=configured_secrets())


def _prepare_worker_metrics(var_dir: Path) -> Path:
    """An empty directory for prometheus_client's multiprocess mode: this worker's pool
    processes write their samples there, its main process serves them all together."""
    import atexit
    import os
    import shutil

    if "prometheus_client" in sys.modules:
        raise click.ClickException("internal: prometheus_client was imported too early")
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    path = Path(given) if given else var_dir / "prometheus" / f"worker-{os.getpid()}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    if not given:
        atexit.register(shutil.rmtree, path, True)
    return path


def _serve_worker_metrics(address: str, port: int) -> None:
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    start_http_server(port, addr=address, registry=registry)
    log.info("worker metrics on http://%s:%d/metrics", address, port)


@click.command()
@click.option("--text", "-t", default=None, help="Text of the item.")
@click.option(
    "--image",
    "images",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Image file (repeatable).",
)
@click.option(
    "--video",
    "videos",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Video file (repeatable): its frames are analysed here too, and the final verdict "
    "printed.",
)
@click.option("--content-id", default=None, help="Content id (default: random).")
@click.option("--uploader-id", default="cli", show_default=True)
@json_option
def moderate(
    text: str | None,
    images: tuple[Path, ...],
    videos: tuple[Path, ...],
    content_id: str | None,
    uploader_id: str,
    as_json: bool,
) -> None:
    """Moderate one item in this process and print its verdict (with videos: the final one,
    after their frames are analysed here, as the video queue would)."""
    from moderation.runtime import get_runtime
    from moderation.service import moderate_payload

    media: list[dict[str, str]] = []
    for kind, paths in (("image", images), ("video", videos)):
        for path in paths:
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise click.ClickException(f"cannot read {path}: {exc.strerror}") from None
            media.append({"kind": kind, "data_b64": base64.b64encode(data).decode()})
    payload: dict[str, object] = {
        "content_id": content_id or f"cli-{uuid.uuid4().hex}",
        "uploader_id": uploader_id,
        "text": text,
        "media": media,
        "context": {},
    }
    rt = get_runtime()
    result = moderate_payload(rt, payload, queue_video=not videos)
    if videos and "error" not in result:
        from moderation.video_jobs import run_job

        result = run_job(rt, str(payload["content_id"]))
    if as_json:
        emit(result, True)
    elif "error" in result:
        click.echo(f"error ({result['error']['code']}): {result['error']['message']}")
    else:
        click.echo(
            f"{result['content_id']}: {result['decision'].upper()}"
            f"  (policy {result['policy_version']}, {result['latency_ms']:.1f} ms)"
        )
        for r in result["reasons"]:
            click.echo(
                f"  - {r['source']}/{r['category']}: {r['score']:g} >= {r['threshold']:g}"
                f"  {r['detail']}"
            )
        for m in result["matches"]:
            click.echo(
                f"  - match {m['bank']}#{m['entry_id']} distance {m['distance']} ({m['action']})"
            )
    if "error" in result:
        sys.exit(2)
