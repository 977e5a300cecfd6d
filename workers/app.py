"""The Celery app that workers run (`celery -A workers.app worker` or `moderation worker`)."""

from __future__ import annotations

from celery import Celery
from celery.signals import worker_process_init

from moderation.queue import celery_config
from moderation.settings import get_settings
from workers import observability


def create_app() -> Celery:
    app = Celery("moderation")
    app.conf.update(celery_config(get_settings()))
    app.conf.update(include=["workers.tasks"])
    return app


app = create_app()


@worker_process_init.connect
def _after_fork(**_: object) -> None:
    # Connections, the runtime and model sessions must not be shared with the parent across
    # fork (model sessions are per process: models/image_classifier.py keys them by pid).
    from moderation.runtime import get_runtime, reset_runtime
    from moderation.storage.db import dispose_engines

    dispose_engines()
    reset_runtime()
    get_runtime()  # warm: load banks and lists before the first task, not during it
    observability.warm_up_and_announce()  # and the models, then tell /readyz about them
