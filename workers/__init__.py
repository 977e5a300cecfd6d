"""Celery app, task definitions and worker entry points; thin wrappers over `moderation`."""
