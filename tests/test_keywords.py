"""Tests for moderation.keywords: list loading, matching and false-positive guards."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from models.text_normalize import is_cjk, normalize
from moderation.keywords import DEFAULT_DIR, KeywordHit, KeywordMatcher

CATEGORIES = ("hate", "offensive", "self_harm", "sexual", "spam", "violence")


@pytest.fixture(scope="module")
def matcher() -> KeywordMatcher:
    return KeywordMatcher.default()


def found(matcher: KeywordMatcher, text: str) -> set[tuple[str, str]]:
    return {(hit.category, hit.term) for hit in matcher.scan(text)}


@pytest.mark.parametrize(
    ("text", "category", "term"),
    [
        ("你个傻\u200b逼", "offensive", "傻逼"),
        ("ｆｕｃｋ ｙｏｕ", "offensive", "fuck you"),
        ("FUCK YOU", "offensive", "fuck you"),
        ("腦殘", "offensive", "脑残"),
        ("殺了你全家", "violence", "杀了你全家"),
        ("f.u.c.k y.o.u", "offensive", "fuck you"),
        ("f u c k y o u", "offensive", "fuck you"),
        ("fuckyou", "offensive", "fuck you"),
        ("fuck_you!", "offensive", "fuck you"),
        ("傻 逼", "offensive", "傻逼"),
        ("傻-逼", "offensive", "傻逼"),
        ("傻。逼", "offensive", "傻逼"),
        ("fuuuuuck youuuu", "offensive", "fuck you"),
        ("kiiiill myself", "self_harm", "kill myself"),
        ("eat sh1t", "offensive", "eat shit"),
        ("you b1tch", "offensive", "bitch"),
        ("fuсk уоu", "offensive", "fuck you"),  # Cyrillic homoglyphs
        ("I’m going to kill you", "violence", "i'm going to kill you"),
        ("我真的想自杀了", "self_harm", "想自杀"),
        ("兼职日结，加微信了解", "spam", "加微信"),
        ("FREE BITCOIN!!! click here to claim", "spam", "free bitcoin"),
        ("同城约炮", "sexual", "约炮"),
        ("你是sb吗", "offensive", "sb"),
    ],
)
def test_evasions_are_caught(matcher: KeywordMatcher, text: str, category: str, term: str) -> None:
    assert (category, term) in found(matcher, text)


@pytest.mark.parametrize(
    "text",
    [
        "class",
        "assistant",
        "Scunthorpe",
        "grape",
        "therapist",
        "hello world",
        "The assistant took the class to Scunthorpe to pick grapes.",
        "My therapist recommends rapeseed oil and a classic bass line.",
        "Sussex and Essex are counties; Dickens wrote about them.",
        "国家统计局今天发布数据，2024年国内生产总值同比增长百分之五。",
        "市政府宣布地铁新线路将于明年开通，方便市民出行。",
        "今天天氣很好，我們一起去公園散步吧。",
        "2024年",
        "",
    ],
)
def test_ordinary_text_has_no_hits(matcher: KeywordMatcher, text: str) -> None:
    assert matcher.scan(text) == []


def test_offsets_index_the_normalised_text(matcher: KeywordMatcher) -> None:
    text = "嘿 你个傻\u200b逼"
    (hit,) = matcher.scan(text)
    assert normalize(text)[hit.start : hit.end] == "傻逼"

    text = "well F.U.C.K y.o.u then"
    (hit,) = matcher.scan(text)
    assert hit.term == "fuck you"
    assert normalize(text)[hit.start : hit.end] == "f.u.c.k y.o.u"


def test_hits_are_deduplicated_and_ordered(matcher: KeywordMatcher) -> None:
    hits = matcher.scan("傻逼 傻 逼 傻逼, fuck you and fuck you")
    assert [(h.category, h.term) for h in hits] == [
        ("offensive", "傻逼"),
        ("offensive", "fuck you"),
    ]
    assert hits[0].start == 0


def test_one_text_can_hit_several_categories(matcher: KeywordMatcher) -> None:
    hits = matcher.scan("傻逼，我要杀了你，加微信")
    assert {"offensive", "violence", "spam"} <= {h.category for h in hits}


def test_scores_takes_the_maximum_per_category() -> None:
    hits = [
        KeywordHit("offensive", "idiot", 0.6, 0, 5),
        KeywordHit("offensive", "傻逼", 1.0, 6, 8),
        KeywordHit("spam", "加微信", 0.8, 9, 12),
    ]
    assert KeywordMatcher.scores(hits) == {"offensive": 1.0, "spam": 0.8}
    assert KeywordMatcher.scores([]) == {}


def test_hit_is_immutable() -> None:
    hit = KeywordHit("spam", "刷单", 0.8, 0, 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        hit.score = 1.0  # type: ignore[misc]


def test_packaged_lists_load(matcher: KeywordMatcher) -> None:
    assert matcher.categories == CATEGORIES
    assert sorted(p.stem for p in DEFAULT_DIR.glob("*.txt")) == list(CATEGORIES)
    per_category: dict[str, int] = {}
    for category, _term, score in matcher.entries():
        assert 0.0 < score <= 1.0
        per_category[category] = per_category.get(category, 0) + 1
    assert all(10 <= n <= 40 for n in per_category.values()), per_category
    assert KeywordMatcher.default() is KeywordMatcher.default()


def test_packaged_files_start_with_a_comment_header() -> None:
    for path in DEFAULT_DIR.glob("*.txt"):
        first, second = path.read_text(encoding="utf-8").splitlines()[:2]
        assert first.startswith("#") and second.startswith("#"), path.name


def test_every_packaged_term_matches_itself(matcher: KeywordMatcher) -> None:
    # Catches list typos: a term that normalises into something that cannot match.
    misses = []
    for category, term, _score in matcher.entries():
        contexts = [term, term.upper()]
        contexts.append(f"他说{term}了" if any(is_cjk(c) for c in term) else f"so {term}, ok")
        misses += [
            (category, text) for text in contexts if (category, term) not in found(matcher, text)
        ]
    assert misses == []


def test_extra_terms_add_and_override(tmp_path: Path) -> None:
    custom = KeywordMatcher.from_directories(
        [DEFAULT_DIR], extra=[("spam", "蓝色药丸", 0.7), ("offensive", "傻逼", 0.5)]
    )
    hits = {(h.category, h.term): h.score for h in custom.scan("蓝色藥丸 傻逼")}
    assert hits == {("spam", "蓝色药丸"): 0.7, ("offensive", "傻逼"): 0.5}
    with pytest.raises(ValueError, match="outside"):
        KeywordMatcher.from_directories([], extra=[("spam", "x", 2.0)])


def test_override_directory_extends_and_overrides(tmp_path: Path) -> None:
    (tmp_path / "offensive.txt").write_text(
        "# site overrides\nidiot\t1.0\n!ass\nnincompoop\t0.6\n", encoding="utf-8"
    )
    (tmp_path / "scam.txt").write_text("蓝色药丸\t0.9\n", encoding="utf-8")
    custom = KeywordMatcher.from_directories([DEFAULT_DIR, tmp_path])
    scores = {
        (h.category, h.term): h.score for h in custom.scan("idiot ass nincompoop 傻逼 蓝色药丸")
    }
    assert scores == {
        ("offensive", "idiot"): 1.0,
        ("offensive", "nincompoop"): 0.6,
        ("offensive", "傻逼"): 1.0,
        ("scam", "蓝色药丸"): 0.9,
    }
    assert "scam" in custom.categories
    assert ("offensive", "ass") in found(KeywordMatcher.default(), "kiss my ass")


def test_list_authors_can_write_any_variant(tmp_path: Path) -> None:
    (tmp_path / "offensive.txt").write_text("ＦＵＣＫ ＹＯＵ\n傻 逼\n腦殘\n", encoding="utf-8")
    custom = KeywordMatcher.from_directories([tmp_path])
    assert found(custom, "fuck you, 脑残, 傻逼") == {
        ("offensive", "ＦＵＣＫ ＹＯＵ"),
        ("offensive", "傻 逼"),
        ("offensive", "腦殘"),
    }


def test_word_boundaries_apply_to_latin_terms_only(tmp_path: Path) -> None:
    custom = KeywordMatcher.from_directories(
        [], extra=[("offensive", "ass", 1.0), ("offensive", "cunt", 1.0), ("x", "逼", 1.0)]
    )
    assert custom.scan("class assistant Scunthorpe") == []
    assert found(custom, "ass, 你ass") == {("offensive", "ass")}
    assert found(custom, "傻逼们") == {("x", "逼")}


@pytest.mark.parametrize(
    ("content", "line"),
    [
        ("ok\n\nbad\t1.5\n", 3),
        ("# header\nbad\tabc\n", 2),
        ("bad\t0\n", 1),
        ("bad\t-0.5\n", 1),
        ("bad\tnan\n", 1),
        ("ok\nbad\t\n", 2),
        ("\t0.5\n", 1),
        ("\u200b\n", 1),
        ("!gone\t0.5\n", 1),
    ],
)
def test_bad_line_names_file_and_line(tmp_path: Path, content: str, line: int) -> None:
    (tmp_path / "spam.txt").write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=rf"spam\.txt:{line}:"):
        KeywordMatcher.from_directories([tmp_path])


def test_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        KeywordMatcher.from_directories([tmp_path / "nope"])


def test_empty_matcher_finds_nothing() -> None:
    empty = KeywordMatcher.from_directories([])
    assert empty.scan("fuck you 傻逼") == []
    assert empty.categories == ()
    assert len(empty) == 0
