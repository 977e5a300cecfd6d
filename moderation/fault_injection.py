"""FOR TESTS ONLY: faults injected on purpose, to test poison-message handling for real.

``MODERATION_FAULT_INJECTION`` is a comma-separated list of rules:

- ``crash_on:<prefix>``: the worker process exits at once (``os._exit``, no cleanup, as a
  crash in a native decoder would) on every item whose content_id starts with the prefix;
- ``raise_on:<prefix>``: the task raises an unexpected exception (a bug) on such items.

Unset by default; never set it in production.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from moderation.settings import Settings

log = logging.getLogger(__name__)

CRASH_EXIT_CODE = 70


class InjectedFault(RuntimeError):
    """The exception ``raise_on`` raises."""


def _matches(rule: str, kind: str, content_id: str) -> bool:
    prefix = rule.removeprefix(f"{kind}:")
    return rule.startswith(f"{kind}:") and bool(prefix) and content_id.startswith(prefix)


def maybe_fail(settings: Settings, payload: Any) -> None:
    """Exit the process, or raise, if an injected fault matches this payload."""
    spec = settings.fault_injection
    content_id = payload.get("content_id") if isinstance(payload, dict) else None
    if not spec or not isinstance(content_id, str):
        return
    for rule in (r.strip() for r in spec.split(",")):
        if _matches(rule, "crash_on", content_id):
            log.critical("fault injection: crashing on item %s", content_id)
            os._exit(CRASH_EXIT_CODE)
        if _matches(rule, "raise_on", content_id):
            raise InjectedFault(f"fault injection: raising on item {content_id}")
