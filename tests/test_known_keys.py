"""The API's memory of recently authenticated keys, used only while the database is down."""

from __future__ import annotations

import time

from moderation.keys import Principal
from moderation.known_keys import KnownKeys

SERVICE = Principal(1, "svc", "service")


def test_a_remembered_key_is_recalled_until_it_is_too_old() -> None:
    known = KnownKeys(max_age_s=0.2)
    known.remember("mod_secret", SERVICE)
    assert known.recall("mod_secret") == SERVICE
    assert known.recall("mod_other") is None
    time.sleep(0.25)
    assert known.recall("mod_secret") is None


def test_a_refused_key_is_forgotten_and_the_map_is_bounded() -> None:
    known = KnownKeys(max_age_s=60, max_keys=3)
    known.remember("mod_a", SERVICE)
    known.forget("mod_a")
    assert known.recall("mod_a") is None
    for name in ("mod_1", "mod_2", "mod_3", "mod_4"):
        known.remember(name, SERVICE)
    assert known.recall("mod_1") is None  # the oldest went first
    assert all(known.recall(n) == SERVICE for n in ("mod_2", "mod_3", "mod_4"))


def test_no_secret_is_held() -> None:
    known = KnownKeys(max_age_s=60)
    known.remember("mod_plaintext-secret", SERVICE)
    assert "mod_plaintext-secret" not in repr(known._seen)
