"""One exception hierarchy for the service, mapped once to HTTP codes and task errors."""

from __future__ import annotations

from typing import Any


class ModerationError(Exception):
    """Base of every error the service raises on purpose.

    ``code`` is a stable machine-readable name (it appears in task results and
    HTTP bodies); ``http_status`` is the one place the HTTP mapping lives.
    """

    code = "internal_error"
    http_status = 500
    # Extra HTTP response headers (RateLimited's Retry-After); None for most errors.
    headers: dict[str, str] | None = None

    def __init__(self, message: str, *, field: str | None = None, **detail: Any) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.detail = detail

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        if self.detail:
            body["detail"] = self.detail
        return body


class InvalidInput(ModerationError):
    """The caller sent something malformed; retrying the same input cannot help."""

    code = "invalid_input"
    http_status = 422


class InputTooLarge(InvalidInput):
    code = "input_too_large"
    http_status = 413


class UnsupportedMedia(InvalidInput):
    code = "unsupported_media"
    http_status = 415


class MediaDecodeError(InvalidInput):
    code = "media_decode_error"
    http_status = 422


class MediaFetchDenied(InvalidInput):
    """A media URI points somewhere the service may not fetch from."""

    code = "media_fetch_denied"
    http_status = 422


class MediaFetchFailed(ModerationError):
    """A permitted fetch failed (network, status code); may succeed on retry."""

    code = "media_fetch_failed"
    http_status = 502


class NotFound(ModerationError):
    code = "not_found"
    http_status = 404


class Conflict(ModerationError):
    code = "conflict"
    http_status = 409


class NotAnchoredYet(Conflict):
    """A provenance leaf is registered but its batch is not confirmed on the chain yet."""

    code = "not_anchored_yet"
    http_status = 409


class Unauthorized(ModerationError):
    code = "unauthorized"
    http_status = 401


class Forbidden(ModerationError):
    code = "forbidden"
    http_status = 403


class RateLimited(ModerationError):
    """An API key spent its rate limit; ``headers`` carries Retry-After for the HTTP reply."""

    code = "rate_limited"
    http_status = 429

    def __init__(self, message: str, *, retry_after_s: int, **detail: Any) -> None:
        super().__init__(message, retry_after_s=retry_after_s, **detail)
        self.headers = {"Retry-After": str(retry_after_s)}


class ConfigError(ModerationError):
    code = "config_error"
    http_status = 500


class TaskTimeout(ModerationError):
    code = "timeout"
    http_status = 504


class Unavailable(ModerationError):
    """A dependency (queue, database, worker) did not answer in time."""

    code = "unavailable"
    http_status = 503


def from_signal_error(exc: Exception, field: str | None = None) -> ModerationError:
    """Map an error raised by the `models` library onto this hierarchy."""
    from models import errors as m

    if isinstance(exc, m.MediaTooLarge):
        return InputTooLarge(str(exc), field=field)
    if isinstance(exc, m.UnsupportedFormat):
        return UnsupportedMedia(str(exc), field=field)
    return MediaDecodeError(str(exc), field=field)


def _all_subclasses(cls: type[ModerationError]) -> list[type[ModerationError]]:
    out = [cls]
    for sub in cls.__subclasses__():
        out.extend(_all_subclasses(sub))
    return out


def http_status_for_code(code: str) -> int:
    """HTTP status for an error code carried in a task result."""
    for cls in _all_subclasses(ModerationError):
        if cls.code == code:
            return cls.http_status
    return 500
