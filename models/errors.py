"""Exceptions raised by the signal extractors in ``models/`` (no dependency on ``moderation``)."""

from __future__ import annotations

__all__ = ["CorruptMedia", "MediaTooLarge", "SignalError", "UnsupportedFormat"]


class SignalError(ValueError):
    """Base for inputs a signal extractor refuses; retrying the same bytes cannot help."""


class MediaTooLarge(SignalError):
    """The media exceeds a configured byte, pixel, side or frame limit."""


class UnsupportedFormat(SignalError):
    """The bytes are not in a format this library decodes."""


class CorruptMedia(SignalError):
    """The bytes claim a supported format but are empty, truncated or malformed."""
