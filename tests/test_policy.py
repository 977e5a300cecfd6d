"""Tests for moderation.policy: the pure `decide()` function and policy file loading."""

from __future__ import annotations

from pathlib import Path

import pytest

from moderation.errors import ConfigError
from moderation.policy import (
    DEFAULT_POLICY_PATH,
    BankHit,
    MatchingRules,
    Policy,
    Signal,
    Thresholds,
    decide,
    load_policy,
)


def make_policy(*, review_band: int = 8, bank_actions: dict[str, str] | None = None) -> Policy:
    return Policy(
        version="test-1",
        categories={"offensive": Thresholds(review=0.6, block=0.9)},
        default=Thresholds(review=0.4, block=0.8),
        matching=MatchingRules(review_band=review_band, bank_actions=bank_actions or {}),
    )


def hit(
    bank: str = "csam",
    entry_id: int = 1,
    distance: int = 0,
    threshold: int = 31,
    action: str = "block",
    media_index: int = 0,
    owner: str | None = None,
) -> BankHit:
    return BankHit(
        bank=bank,
        entry_id=entry_id,
        distance=distance,
        threshold=threshold,
        action=action,
        owner=owner,
        media_index=media_index,
    )  # type: ignore[arg-type]


# --- keyword / classifier signals ---------------------------------------------------------


def test_signal_at_block_threshold_blocks_with_full_reason() -> None:
    sig = Signal(source="keywords", category="offensive", score=0.9, detail="matched term 'x'")
    out = decide(make_policy(), [sig], [])
    assert out.decision == "block"
    assert len(out.reasons) == 1
    r = out.reasons[0]
    assert (r.source, r.category, r.score, r.threshold, r.detail) == (
        "keywords",
        "offensive",
        0.9,
        0.9,
        "matched term 'x'",
    )
    assert out.categories == {"offensive": 0.9}
    assert out.matches == []


def test_signal_above_block_threshold_blocks() -> None:
    out = decide(make_policy(), [Signal("keywords", "offensive", 0.99)], [])
    assert out.decision == "block"
    assert out.reasons[0].threshold == 0.9


def test_signal_between_review_and_block_reviews() -> None:
    out = decide(make_policy(), [Signal("keywords", "offensive", 0.75, "d")], [])
    assert out.decision == "review"
    assert len(out.reasons) == 1
    assert out.reasons[0].threshold == 0.6
    assert out.reasons[0].score == 0.75
    assert out.reasons[0].detail == "d"


def test_signal_at_review_threshold_reviews() -> None:
    assert decide(make_policy(), [Signal("keywords", "offensive", 0.6)], []).decision == "review"


def test_signal_below_review_allows_without_reason_but_keeps_score() -> None:
    out = decide(make_policy(), [Signal("keywords", "offensive", 0.59)], [])
    assert out.decision == "allow"
    assert out.reasons == []
    assert out.categories == {"offensive": 0.59}


def test_unknown_category_uses_default_thresholds() -> None:
    policy = make_policy()
    # 0.5 is below offensive's review (0.6) but at/above the default's review (0.4).
    out = decide(policy, [Signal("classifier", "weird", 0.5)], [])
    assert out.decision == "review"
    assert out.reasons[0].threshold == 0.4
    out = decide(policy, [Signal("classifier", "weird", 0.8)], [])
    assert out.decision == "block"
    assert out.reasons[0].threshold == 0.8
    assert decide(policy, [Signal("classifier", "offensive", 0.5)], []).decision == "allow"


def test_categories_keep_max_score_per_category() -> None:
    out = decide(
        make_policy(),
        [
            Signal("keywords", "offensive", 0.3),
            Signal("classifier", "offensive", 0.7),
            Signal("classifier", "spam", 0.1),
        ],
        [],
    )
    assert out.categories == {"offensive": 0.7, "spam": 0.1}


# --- bank hits ----------------------------------------------------------------------------


def test_block_bank_within_threshold_blocks_with_hash_match_reason() -> None:
    out = decide(
        make_policy(), [], [hit(bank="known-bad", entry_id=42, distance=10, owner="ncmec")]
    )
    assert out.decision == "block"
    assert len(out.matches) == 1
    m = out.matches[0]
    assert (m.bank, m.entry_id, m.distance, m.action, m.owner) == (
        "known-bad",
        42,
        10,
        "block",
        "ncmec",
    )
    [r] = out.reasons
    assert r.source == "hash_match"
    assert r.category == "known-bad"
    assert r.score == 10.0
    assert r.threshold == 31.0
    assert "42" in r.detail


def test_block_hit_exactly_at_threshold_still_blocks() -> None:
    out = decide(make_policy(), [], [hit(distance=31, threshold=31)])
    assert out.decision == "block"
    assert out.matches[0].action == "block"


def test_block_hit_inside_review_band_is_softened_to_review() -> None:
    policy = make_policy(review_band=8)
    for distance in (32, 39):  # threshold < distance <= threshold + band
        out = decide(policy, [], [hit(distance=distance, threshold=31, entry_id=7)])
        assert out.decision == "review", distance
        [m] = out.matches
        assert m.action == "review"
        assert m.distance == distance
        [r] = out.reasons
        assert r.source == "hash_match"
        assert r.threshold == 39.0
        assert "review band" in r.detail


def test_track_bank_allows_but_lists_match() -> None:
    out = decide(
        make_policy(),
        [],
        [hit(bank="rights-x", entry_id=5, distance=3, action="track", owner="studio")],
    )
    assert out.decision == "allow"
    [m] = out.matches
    assert (m.bank, m.entry_id, m.action, m.owner) == ("rights-x", 5, "track", "studio")
    assert out.reasons == []


def test_review_bank_within_threshold_reviews() -> None:
    out = decide(make_policy(), [], [hit(bank="maybe", action="review", distance=4)])
    assert out.decision == "review"
    assert out.matches[0].action == "review"


def test_allow_hit_suppresses_other_hits_on_same_media_only() -> None:
    hits = [
        hit(bank="allow-list", entry_id=1, distance=2, action="allow", media_index=0),
        hit(bank="known-bad", entry_id=2, distance=1, action="block", media_index=0),
        hit(bank="tracked", entry_id=3, distance=0, action="track", media_index=0),
    ]
    out = decide(make_policy(), [], hits)
    assert out.decision == "allow"
    assert [(m.bank, m.action) for m in out.matches] == [("allow-list", "allow")]

    # The same block hit on another media object of the item is not suppressed.
    hits.append(hit(bank="known-bad", entry_id=2, distance=1, action="block", media_index=1))
    out = decide(make_policy(), [], hits)
    assert out.decision == "block"
    assert sorted((m.bank, m.action) for m in out.matches) == [
        ("allow-list", "allow"),
        ("known-bad", "block"),
    ]


def test_allow_hit_outside_its_threshold_does_not_suppress() -> None:
    hits = [
        hit(bank="allow-list", entry_id=1, distance=20, threshold=10, action="allow"),
        hit(bank="known-bad", entry_id=2, distance=1, action="block"),
    ]
    out = decide(make_policy(), [], hits)
    assert out.decision == "block"
    assert [m.bank for m in out.matches] == ["known-bad"]


def test_bank_actions_override_the_banks_own_action() -> None:
    policy = make_policy(bank_actions={"shared-list": "track", "soft": "block"})
    out = decide(policy, [], [hit(bank="shared-list", action="block", distance=0)])
    assert out.decision == "allow"
    assert out.matches[0].action == "track"
    out = decide(policy, [], [hit(bank="soft", action="review", distance=0)])
    assert out.decision == "block"
    assert out.matches[0].action == "block"


def test_decision_is_max_over_signals_and_hits() -> None:
    policy = make_policy()
    review_signal = Signal("keywords", "offensive", 0.7)
    block_signal = Signal("keywords", "offensive", 0.95)
    track = hit(bank="t", action="track", distance=0)
    block = hit(bank="b", entry_id=9, action="block", distance=0)
    review = hit(bank="r", entry_id=8, action="review", distance=0)

    assert decide(policy, [review_signal], [track]).decision == "review"
    assert decide(policy, [review_signal], [block]).decision == "block"
    assert decide(policy, [block_signal], [review]).decision == "block"
    out = decide(policy, [review_signal], [review, track])
    assert out.decision == "review"
    assert {r.source for r in out.reasons} == {"keywords", "hash_match"}
    assert len(out.matches) == 2


def test_decide_is_pure() -> None:
    policy = make_policy()
    signals = [Signal("keywords", "offensive", 0.95)]
    hits = [hit(distance=35)]
    first = decide(policy, signals, hits)
    second = decide(policy, signals, hits)
    assert first == second
    assert signals == [Signal("keywords", "offensive", 0.95)]
    assert hits == [hit(distance=35)]


# --- load_policy --------------------------------------------------------------------------


def test_load_packaged_policy() -> None:
    policy = load_policy()
    assert policy.version
    assert policy == load_policy(DEFAULT_POLICY_PATH)
    assert policy.thresholds("offensive").block >= policy.thresholds("offensive").review
    assert policy.thresholds("no-such-category") == policy.default


def test_load_policy_bad_yaml(tmp_path: Path) -> None:
    p = tmp_path / "policy.yaml"
    p.write_text("version: [unclosed\ncategories: {", encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_policy(p)
    assert "not valid YAML" in exc.value.message
    assert str(p) in exc.value.message


def test_load_policy_block_below_review(tmp_path: Path) -> None:
    p = tmp_path / "policy.yaml"
    p.write_text(
        'version: "v1"\ncategories:\n  hate: {review: 0.9, block: 0.5}\n', encoding="utf-8"
    )
    with pytest.raises(ConfigError) as exc:
        load_policy(p)
    assert "hate" in exc.value.message
    assert "block threshold must not be below the review threshold" in exc.value.message


def test_load_policy_unknown_key(tmp_path: Path) -> None:
    p = tmp_path / "policy.yaml"
    p.write_text('version: "v1"\nthreshholds: {}\n', encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_policy(p)
    assert "threshholds" in exc.value.message


def test_load_policy_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_policy(tmp_path / "nope.yaml")
    assert "nope.yaml" in exc.value.message


def test_load_policy_empty_version(tmp_path: Path) -> None:
    p = tmp_path / "policy.yaml"
    p.write_text('version: ""\n', encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_policy(p)
    assert "version" in exc.value.message


# --- image_models -------------------------------------------------------------------------


def write_policy(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "policy.yaml"
    p.write_text('version: "v1"\ncategories:\n  sexual: {review: 0.6, block: 0.9}\n' + body)
    return p


def test_packaged_policy_enables_opennsfw_for_sexual() -> None:
    policy = load_policy()
    assert [(m.name, m.kind, m.enabled, m.categories) for m in policy.image_models] == [
        ("opennsfw", "opennsfw", True, {"nsfw": "sexual"})
    ]
    assert policy.enabled_image_models == policy.image_models
    assert policy.version != "2026-11-22.1"  # bumped when image_models was added


def test_policy_without_image_models_has_none(tmp_path: Path) -> None:
    assert load_policy(write_policy(tmp_path, "")).image_models == []
    assert make_policy().image_models == []


def test_image_model_relative_path_is_resolved_against_the_policy_file(tmp_path: Path) -> None:
    p = write_policy(
        tmp_path,
        "image_models:\n"
        "  - {name: v, kind: onnx_dir, path: models/v, categories: {violence: violence,"
        " weapon: violence}}\n"
        "  - {name: w, kind: transformers_dir, path: /srv/w, enabled: false,"
        " categories: {nsfw: sexual}}\n",
    )
    v, w = load_policy(p).image_models
    assert v.path == (tmp_path / "models" / "v").resolve()
    assert v.labels_by_category() == {"violence": ["violence", "weapon"]}
    assert w.path == Path("/srv/w") and not w.enabled
    assert [m.name for m in load_policy(p).enabled_image_models] == ["v"]


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("{name: m, kind: tensorflow, categories: {x: sexual}}", "kind"),
        ("{name: m, kind: onnx_dir, categories: {x: sexual}}", "needs a 'path'"),
        ("{name: m, kind: transformers_dir, categories: {x: sexual}}", "needs a 'path'"),
        ("{name: m, kind: opennsfw, categories: {}}", "categories"),
        ("{name: m, kind: opennsfw}", "categories"),
        ("{name: m, kind: opennsfw, categories: {nsfw: Sexual Content}}", "'Sexual Content'"),
        ("{name: m, kind: opennsfw, categories: {nsfw: ''}}", "empty category"),
        ("{name: 'bad name', kind: opennsfw, categories: {nsfw: sexual}}", "bad name"),
        ("{name: m, kind: nudenet, path: x, categories: {A: sexual}}", "takes no 'path'"),
        ("{name: m, kind: opennsfw, sha256: abc, categories: {nsfw: sexual}}", "sha256"),
        (
            f"{{name: m, kind: opennsfw, sha256: {'a' * 64}, categories: {{nsfw: sexual}}}}",
            "takes no 'sha256'",
        ),
        ("{name: m, kind: opennsfw, categories: {nsfw: sexual}, enabeld: true}", "enabeld"),
    ],
)
def test_bad_image_model_entries(tmp_path: Path, entry: str, expected: str) -> None:
    p = write_policy(tmp_path, f"image_models:\n  - {entry}\n")
    with pytest.raises(ConfigError) as exc:
        load_policy(p)
    assert expected in exc.value.message
    assert "image_models" in exc.value.message


def test_duplicate_image_model_names(tmp_path: Path) -> None:
    p = write_policy(
        tmp_path,
        "image_models:\n"
        "  - {name: a, kind: opennsfw, categories: {nsfw: sexual}}\n"
        "  - {name: a, kind: nudenet, categories: {FACE_MALE: faces}}\n",
    )
    with pytest.raises(ConfigError, match="repeated: \\['a'\\]"):
        load_policy(p)


def test_image_model_may_map_to_a_new_category_with_default_thresholds(tmp_path: Path) -> None:
    p = write_policy(
        tmp_path,
        "image_models:\n  - {name: m, kind: opennsfw, categories: {nsfw: adult_content}}\n",
    )
    policy = load_policy(p)
    assert policy.image_models[0].categories == {"nsfw": "adult_content"}
    assert policy.thresholds("adult_content") == policy.default


def test_image_model_signal_goes_through_category_thresholds() -> None:
    policy = make_policy()
    sig = Signal(source="image_model:opennsfw", category="offensive", score=0.7, detail="x")
    out = decide(policy, [sig], [])
    assert out.decision == "review" and out.reasons[0].source == "image_model:opennsfw"


# --- text_models --------------------------------------------------------------------------


def test_packaged_policy_enables_the_builtin_text_model() -> None:
    policy = load_policy()
    assert [
        (m.name, m.kind, m.enabled, m.overall_label, m.categories) for m in policy.text_models
    ] == [
        (
            "builtin",
            "builtin",
            True,
            "any",
            {"offensive": "offensive", "hate": "hate", "sexism": "sexism"},
        )
    ]
    assert policy.enabled_text_models == [m for m in policy.text_models if m.enabled]
    for category in ("offensive", "hate", "sexism"):
        assert category in policy.categories
    assert policy.version not in ("2026-11-22.1", "2026-11-22.2")  # bumped for text_models


def test_text_models_default_to_none_and_resolve_paths(tmp_path: Path) -> None:
    assert load_policy(write_policy(tmp_path, "")).text_models == []
    p = write_policy(
        tmp_path,
        "text_models:\n"
        "  - {name: xlmr, kind: transformers_dir, path: models/xlmr, overall_label: toxic,"
        " categories: {insult: offensive, identity_attack: hate, threat: violence}}\n"
        "  - {name: builtin, kind: builtin, enabled: false, categories: {hate: hate}}\n",
    )
    policy = load_policy(p)
    xlmr, builtin = policy.text_models
    assert xlmr.path == (tmp_path / "models" / "xlmr").resolve()
    assert xlmr.overall_label == "toxic" and builtin.path is None
    assert [m.name for m in policy.enabled_text_models] == ["xlmr"]
    # Image and text models keep separate lists and may share a name.
    p = write_policy(
        tmp_path,
        "image_models: [{name: m, kind: opennsfw, categories: {nsfw: sexual}}]\n"
        "text_models: [{name: m, kind: builtin, categories: {hate: hate}}]\n",
    )
    assert load_policy(p).text_models[0].name == "m"


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("{name: m, kind: fasttext, categories: {x: hate}}", "kind"),
        ("{name: m, kind: transformers_dir, categories: {x: hate}}", "needs a 'path'"),
        ("{name: m, kind: builtin, categories: {}}", "categories"),
        ("{name: m, kind: builtin, categories: {hate: Hate Speech}}", "'Hate Speech'"),
        ("{name: m, kind: builtin, categories: {hate: ''}}", "empty category"),
        ("{name: 'a b', kind: builtin, categories: {hate: hate}}", "text_model:<name>"),
        (f"{{name: m, kind: builtin, sha256: {'a' * 64}, categories: {{x: hate}}}}", "sha256"),
        (
            "{name: m, kind: transformers_dir, path: p, sha256: xyz, categories: {x: hate}}",
            "sha256",
        ),
        ("{name: m, kind: builtin, overall_label: '', categories: {x: hate}}", "overall_label"),
        ("{name: m, kind: builtin, categories: {x: hate}, enabled: yes, extra: 1}", "extra"),
    ],
)
def test_bad_text_model_entries(tmp_path: Path, entry: str, expected: str) -> None:
    p = write_policy(tmp_path, f"text_models:\n  - {entry}\n")
    with pytest.raises(ConfigError) as exc:
        load_policy(p)
    assert expected in exc.value.message
    assert "text_models" in exc.value.message


def test_duplicate_text_model_names(tmp_path: Path) -> None:
    p = write_policy(
        tmp_path,
        "text_models:\n"
        "  - {name: a, kind: builtin, categories: {hate: hate}}\n"
        "  - {name: a, kind: transformers_dir, path: x, categories: {toxic: offensive}}\n",
    )
    with pytest.raises(ConfigError, match="text_models: names must be unique; repeated: \\['a'\\]"):
        load_policy(p)
