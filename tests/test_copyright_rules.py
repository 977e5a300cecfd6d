"""Pure copyright rules, no servers: notice validation, verification, business days, strikes,
statements of reasons."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from moderation import claims, strikes
from moderation.claims import Evidence, StoredHash, add_business_days, compare, verify
from moderation.errors import InvalidInput
from moderation.statements import takedown_statement
from moderation.works import WorkCreate, bank_name_for

T0 = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)  # a Friday


def valid_notice() -> dict[str, Any]:
    return {
        "claimant": {"name": "Studio A", "email": "legal@studio.example", "address": "1 Road"},
        "work_id": "wrk_1",
        "content_id": "item-1",
        "explanation": "a copy of our photo",
        "good_faith": True,
        "accuracy": True,
        "signature": "A. Lawyer",
    }


def test_a_valid_notice_parses() -> None:
    notice = claims.parse_model(claims.Notice, valid_notice(), "notice")
    assert notice.claimant.email == "legal@studio.example"


def test_an_invalid_notice_names_every_missing_field() -> None:
    body = valid_notice()
    for name in ("signature", "explanation", "accuracy"):
        del body[name]
    del body["claimant"]["email"]
    body["good_faith"] = False
    with pytest.raises(InvalidInput) as info:
        claims.parse_model(claims.Notice, body, "notice")
    err = info.value.to_dict()
    assert set(err["detail"]["missing"]) == {
        "signature",
        "explanation",
        "accuracy",
        "claimant.email",
    }
    assert err["detail"]["invalid"] == [
        {"field": "good_faith", "message": "must be true (the statement is required)"}
    ]
    for name in ("signature", "explanation", "accuracy", "claimant.email", "good_faith"):
        assert name in err["message"]


def test_a_notice_must_be_an_object_and_have_a_real_email() -> None:
    with pytest.raises(InvalidInput):
        claims.parse_model(claims.Notice, ["x"], "notice")
    body = valid_notice()
    body["claimant"]["email"] = "nobody"
    with pytest.raises(InvalidInput, match=r"claimant\.email"):
        claims.parse_model(claims.Notice, body, "notice")


def test_a_counter_notice_needs_its_statements() -> None:
    with pytest.raises(InvalidInput) as info:
        claims.parse_model(claims.CounterNotice, {"name": "U"}, "counter-notice")
    missing = set(info.value.detail["missing"])
    assert {"good_faith_mistake", "consent_to_jurisdiction", "signature", "email"} <= missing


def evidence(distance: int | None, anchored: datetime | None) -> Evidence:
    return Evidence(distance, 31, anchored, T0)


def test_verification_needs_a_strong_match_and_precedence() -> None:
    assert verify(evidence(4, T0 - timedelta(hours=1))).automatic
    no_match = verify(evidence(None, T0 - timedelta(hours=1)))
    assert not no_match.automatic and "does not match" in no_match.reasons[0]
    weak = verify(evidence(60, T0 - timedelta(hours=1)))
    assert not weak.automatic and not weak.strong_match
    late = verify(evidence(4, T0 + timedelta(seconds=1)))
    assert not late.automatic and late.strong_match and not late.precedence
    assert "anchored after" in late.reasons[0]
    unanchored = verify(evidence(4, None))
    assert not unanchored.automatic and "not anchored" in unanchored.reasons[0]
    # Naive times (SQLite) are UTC.
    assert verify(Evidence(4, 31, (T0 - timedelta(1)).replace(tzinfo=None), T0)).automatic


def test_business_days_skip_weekends() -> None:
    assert add_business_days(T0, 0) == T0
    assert add_business_days(T0, 1) == T0 + timedelta(days=3)  # Friday -> Monday
    assert add_business_days(T0, 10) == T0 + timedelta(days=14)
    assert add_business_days(T0, 14) == T0 + timedelta(days=20)
    saturday = T0 + timedelta(days=1)
    assert add_business_days(saturday, 1) == T0 + timedelta(days=3)
    with pytest.raises(ValueError):
        add_business_days(T0, -1)


def test_compare_images_text_and_video() -> None:
    a = "f" * 64
    b = "f" * 63 + "0"  # 4 bits away
    assert compare("image", [StoredHash("pdq", a)], [StoredHash("pdq", b)]).distance == 4  # type: ignore[union-attr]
    assert compare("image", [StoredHash("pdq", a)], [StoredHash("simhash", "0" * 16)]) is None
    assert (
        compare(
            "text", [StoredHash("simhash", "0" * 16)], [StoredHash("simhash", "1" + "0" * 15)]
        ).distance
        == 1
    )  # type: ignore[union-attr]
    refs = [StoredHash("pdq", a, t) for t in range(0, 10_000, 250)]
    two = [StoredHash("pdq", b, 1000), StoredHash("pdq", b, 2000)]
    assert compare("video", refs, two) is None  # two look-alike frames are no match
    run = [StoredHash("pdq", b, t) for t in (1000, 2000, 3000, 4000)]
    found = compare("video", refs, run)
    assert found is not None and found.frames == 4 and found.segment is not None
    assert found.segment["query_start"] == 1.0 and found.segment["query_end"] == 4.0


def test_strikes_expire_and_suspend_at_the_count() -> None:
    assert strikes.expiry(T0, 90) == T0 + timedelta(days=90)
    assert strikes.is_live(T0 + timedelta(days=90), False, T0 + timedelta(days=89))
    assert not strikes.is_live(T0 + timedelta(days=90), False, T0 + timedelta(days=90))
    assert not strikes.is_live(T0 + timedelta(days=90), True, T0)
    assert strikes.suspended(3, 3) and not strikes.suspended(2, 3)


def test_statement_of_reasons_has_the_article_17_fields() -> None:
    s = takedown_statement(
        claim_id="clm_1",
        content_id="item-1",
        work_id="wrk_1",
        work_title="Sunrise",
        territories=[],
        claimant="Studio A",
        distance=6,
        automated=True,
        at=T0,
    ).model_dump()
    for key in ("restriction", "facts", "automated_detection", "automated_decision", "ground"):
        assert s[key] not in (None, "")
    assert s["automated_detection"] and s["automated_decision"]
    assert s["territorial_scope"] == ["worldwide"]
    assert any("counter-notice" in r and "clm_1" in r for r in s["redress"])
    assert any("Article 20" in r for r in s["redress"])


def test_work_input_rules_and_bank_names() -> None:
    with pytest.raises(ValueError):
        WorkCreate.model_validate({"kind": "text", "pdq": "0" * 64})
    with pytest.raises(ValueError):
        WorkCreate.model_validate({"kind": "image", "text": "hello", "data_b64": "x"})
    work = WorkCreate.model_validate(
        {"kind": "image", "pdq": "0" * 64, "territories": ["de", "FR"]}
    )
    assert work.territories == ["DE", "FR"]
    name = bank_name_for("Studio A / films", "image", "block")
    assert name.startswith("works.Studio-A-films-") and name.endswith(".image.block")
    assert bank_name_for("a", "image", "block") != bank_name_for("a", "image", "track")
