"""The Celery app that workers run (`celery -A workers.app worker` or `moderation worker`)."""

from __future__ import annotations

import logging

from celery import Celery
from celery.signals import worker_process_init

from moderation.queue import celery_config
from moderation.settings import get_settings


def create_app() -> Celery:
    app = Celery("moderation")
    app.conf.update(celery_config(get_settings()))
    app.conf.update(include=["workers.tasks"])
    return app


app = create_app()
log = logging.getLogger(__name__)


@worker_process_init.connect
def _after_fork(**_: object) -> None:
    # Connections, the runtime and model sessions must not be shared with the parent across
    # fork (model sessions are per process: models/image_classifier.py keys them by pid).
    from moderation.errors import ConfigError
    from moderation.runtime import get_runtime, reset_runtime
    from moderation.storage.db import dispose_engines

    dispose_engines()
    reset_runtime()
    rt = get_runtime()  # warm: load banks and lists before the first task, not during it
    try:
        rt.warm_up()  # and the image and text classifiers: load, verify, one inference each
    except ConfigError as exc:
        # Keep serving: items that need a model that failed (an image, or text) fail with
        # this same error, while the others are still moderated.
        log.critical("models failed to load: %s", exc.message)
