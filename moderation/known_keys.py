"""Keys that authenticated recently, remembered per API process so that the API can keep
authenticating them while the database is down (the fail mode then decides the answer).

Only consulted when the database cannot be reached: with the database up every request is
checked against it, so a revocation takes effect at once. A key the database refuses is
forgotten here at once too. Entries hold a SHA-256 digest, never the secret.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from moderation.keys import Principal, key_digest

_MAX_KEYS = 10_000


class KnownKeys:
    """A bounded, thread-safe map of key digest to principal, with an age limit."""

    def __init__(self, max_age_s: float, max_keys: int = _MAX_KEYS) -> None:
        self.max_age_s = max_age_s
        self.max_keys = max_keys
        self._seen: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, secret: str, principal: Principal) -> None:
        with self._lock:
            digest = key_digest(secret)
            self._seen[digest] = (principal, time.monotonic())
            self._seen.move_to_end(digest)
            while len(self._seen) > self.max_keys:
                self._seen.popitem(last=False)

    def forget(self, secret: str) -> None:
        with self._lock:
            self._seen.pop(key_digest(secret), None)

    def recall(self, secret: str) -> Principal | None:
        """The principal of a key seen within ``max_age_s``, else None."""
        with self._lock:
            found = self._seen.get(key_digest(secret))
        if found is None or time.monotonic() - found[1] > self.max_age_s:
            return None
        return found[0]
