"""A worker killed (SIGKILL) while it analyses a video: another worker finishes the item."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

vs = pytest.importorskip("moderation.video_synth")


def _other_db(url: str) -> str:
    """The test Redis on another database number, so the session's worker stays out."""
    base, _, db = url.rpartition("/")
    if not db.isdigit():
        pytest.skip(f"cannot pick a separate database on {url}")
    return f"{base}/{(int(db) + 1) % 16}"


def _start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "moderation", "worker", "-Q", "video", "-c", "1", "-P", "solo"],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def test_a_video_job_survives_its_worker_being_killed(
    runtime, redis_url: str, var_dir: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    import redis
    from celery import Celery

    from moderation.domain import Item, MediaRef, Verdict
    from moderation.pipeline import Analysis, PendingVideo
    from moderation.queue import VIDEO_TASK
    from moderation.service import _store, get_verdict
    from moderation.storage.tables import VideoJobRow

    url = _other_db(redis_url)
    redis.Redis.from_url(url).flushdb()
    video = tmp_path / "long.mp4"
    script = vs.reference_scripts(1, 120.0, seed=31, size=(320, 180))[0]
    video.write_bytes(vs.make_video(script, preset="ultrafast"))

    cid = f"kill-{uuid.uuid4().hex}"
    ref = MediaRef(kind="video", uri=f"file://{video}")
    with runtime.session() as s:
        _store(
            s,
            Item(content_id=cid, uploader_id="u", media=[ref]),
            Verdict(content_id=cid, decision="review", policy_version="t"),
            Analysis(videos=[PendingVideo(0, ref, 120.0)]),
        )

    env = dict(os.environ)
    env.update(
        MODERATION_REDIS_URL=url,
        MODERATION_BROKER_VISIBILITY_TIMEOUT_S="3",
        MODERATION_MEDIA_ROOTS=f'["{tmp_path}"]',
        MODERATION_ALLOWED_URI_SCHEMES='["file"]',
    )
    env.pop("MODERATION_WEBHOOK_URL", None)
    log = var_dir / f"kill-{cid}.log"
    first = _start_worker(env, log)
    second: subprocess.Popen[bytes] | None = None
    try:
        app = Celery("kill-test", broker=url, backend=url)
        app.conf.update(task_serializer="json", accept_content=["json"])
        app.send_task(VIDEO_TASK, args=[{"content_id": cid}], queue="video")

        deadline = time.monotonic() + 60
        status = None
        while time.monotonic() < deadline:
            with runtime.session() as s:
                job = s.get(VideoJobRow, cid)
                status = job.status if job is not None else None
            if status != "queued":
                break
            time.sleep(0.01)
        assert status == "running", f"the first worker never started the job:\n{log.read_text()}"
        first.send_signal(signal.SIGKILL)
        first.wait()

        second = _start_worker(env, log)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with runtime.session() as s:
                job = s.get(VideoJobRow, cid)
                assert job is not None
                if job.status in ("done", "failed"):
                    break
            time.sleep(0.2)
        with runtime.session() as s:
            job = s.get(VideoJobRow, cid)
            assert job is not None
            assert job.status == "done", log.read_text()[-3000:]
            assert job.attempts == 2  # started by the killed worker, finished by the other
            assert job.media[0]["frames"] >= 100
        verdict = get_verdict(runtime, cid)
        assert verdict is not None
        assert not any(r.source == "video" for r in verdict.reasons)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
