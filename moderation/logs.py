"""Log lines (one JSON object per line, or text) and the context they carry: request, content,
task ids, bound per request or task and added to every line logged meanwhile."""

from __future__ import annotations

import logging
import re
import secrets
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token

# The fields a line carries when known; request_id always (null outside a request or task).
CONTEXT_FIELDS = ("request_id", "content_id", "task_id", "task")

_context: ContextVar[dict[str, str]] = ContextVar("moderation_log_context", default={})  # noqa: B039

# An incoming X-Request-ID is kept only if it is short and plain (it lands in logs and
# headers): letters, digits and . _ : - , 1 to 128 characters.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
# API keys (moderation.keys: "mod_" + 43 URL-safe characters; a 12-character key prefix
# stays readable) and bearer credentials, wherever a message or exception text carries one.
_SECRET_PATTERNS = (
    re.compile(r"mod_[A-Za-z0-9_\-]{16,}"),
    re.compile(r"(?i)(bearer\s+)[^\s\"',;]+"),
)
REDACTED = "[redacted]"


def new_request_id() -> str:
    return secrets.token_hex(16)


def is_valid_request_id(value: str) -> bool:
    return _REQUEST_ID.fullmatch(value) is not None


def accept_request_id(value: str | None) -> str:
    """The caller's request id if it is well-formed, else a new one."""
    if value is not None and is_valid_request_id(value):
        return value
    return new_request_id()


def current(name: str) -> str | None:
    """One field of the current log context (``request_id`` ...), if bound."""
    return _context.get().get(name)


def bind(**fields: str | None) -> Token[dict[str, str]]:
    """Add fields to the log context (None values are left out); undo with :func:`unbind`."""
    merged = dict(_context.get())
    merged.update({k: v for k, v in fields.items() if v is not None})
    return _context.set(merged)


def unbind(token: Token[dict[str, str]]) -> None:
    _context.reset(token)


@contextmanager
def bound(**fields: str | None) -> Iterator[None]:
    token = bind(**fields)
    try:
        yield
    finally:
        unbind(token)


class ContextFilter(logging.Filter):
    """Adds the bound context fields to each record (request_id always, the others if known)."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = _context.get()
        if not hasattr(record, "request_id"):
            record.request_id = ctx.get("request_id")
        for name in CONTEXT_FIELDS[1:]:
            if name in ctx and not hasattr(record, name):
                setattr(record, name, ctx[name])
        return True


class RedactSecrets(logging.Filter):
    """Replaces API keys, bearer tokens and configured secrets in messages and tracebacks."""

    def __init__(self, literals: Iterable[str] = ()) -> None:
        super().__init__()
        self.literals = [s for s in literals if len(s) >= 4]

    def scrub(self, text: str) -> str:
        for literal in self.literals:
            text = text.replace(literal, REDACTED)
        text = _SECRET_PATTERNS[0].sub(REDACTED, text)
        return _SECRET_PATTERNS[1].sub(lambda m: m.group(1) + REDACTED, text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self.scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None:
            # Format the traceback now, scrubbed, so the handler prints this text instead.
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text, record.exc_info = self.scrub(text), None
        return True


def json_formatter() -> logging.Formatter:
    from pythonjsonlogger.json import JsonFormatter

    return JsonFormatter(
        "{levelname}{name}{message}",
        style="{",
        rename_fields={"levelname": "level", "name": "logger", "exc_info": "exception"},
        timestamp=True,
        json_ensure_ascii=False,
    )


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


def configure_logging(
    fmt: str = "json",
    level: str | int = "INFO",
    *,
    secrets: Iterable[str] = (),
    stream: object = None,
) -> None:
    """Route every logger through one handler on the root logger (replacing its handlers):
    JSON lines or text, with the log context added and secrets redacted."""
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    handler.setFormatter(json_formatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    # On the handler, not the loggers: records of every logger pass through it.
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactSecrets(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    logging.captureWarnings(True)  # warnings become log lines too (logger "py.warnings")


def configured_secrets() -> list[str]:
    """Secret values from the settings that must never appear in a log line."""
    from moderation.settings import get_settings

    s = get_settings()
    return [s.webhook_secret.get_secret_value()] if s.webhook_secret is not None else []
