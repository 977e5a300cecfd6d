"""Contrast sets for the text model: balanced cues, disjoint dev, no overlap with the suite."""

from __future__ import annotations

import json
import re
from pathlib import Path

from moderation import text_contrast as tc

SUITE = Path(__file__).parent / "data" / "functional_text.jsonl"

HATEFUL = [
    ("immigrants are a drain on our economy.", "train"),
    ("women should not be allowed to drive.", "train"),
    ("jews control the banks.", "dev"),
]
NEUTRAL = [("many muslims fast during ramadan.", "train"), ("deaf people use sign language", "dev")]


def _en() -> list[tc.ContrastText]:
    return tc.english_contrast(HATEFUL, NEUTRAL, seed=0)


def test_negation_words_occur_on_both_sides_in_equal_measure() -> None:
    negated = [t for t in _en() if t.kind == "negate"]
    violating = sum(t.hate == 1.0 or t.insult for t in negated)
    assert 0.4 < violating / len(negated) < 0.6
    # A dignity predicate denied is hate; a derogatory one denied is not.
    texts = {t.text.lower(): t.hate for t in negated}
    assert any("cannot be trusted" in k and v == 1.0 for k, v in texts.items())
    assert any("should not be locked up" in k and v == 0.0 for k, v in texts.items())
    said = [t for t in _en() if "an idiot" in t.text]
    assert {t.insult for t in said} == {True, False}
    assert all(t.insult == ("not" not in t.text and "n't" not in t.text) for t in said)
    assert all(t.hate == 0.0 for t in said)  # an insult is offensive, not hate


def test_frames_reject_and_endorse_the_same_statement() -> None:
    out = _en()
    framed = [t for t in out if "drain on our economy" in t.text]
    kinds = {(t.kind, t.hate) for t in framed}
    assert ("endorse", 1.0) in kinds
    assert {("reject", 0.0), ("report", 0.0)} & kinds
    # Endorsing frames also wrap neutral statements, as benign.
    assert any(t.kind == "endorse" and t.hate == 0.0 and "ramadan" in t.text for t in out)
    # A framed sentence keeps its own split: the dev sentence never reaches training.
    assert all(t.split == "dev" for t in out if "control the banks" in t.text)


def test_sexism_follows_the_women_named() -> None:
    out = _en()
    assert any(t.about_women for t in out if "allowed to drive" in t.text)
    assert not any(t.about_women for t in out if "control the banks" in t.text)


def test_dev_predicates_and_frames_are_unseen_in_training() -> None:
    out = _en()
    for kind, frames in (("reject", tc.EN_REJECT + tc.EN_REPORT), ("endorse", tc.EN_ENDORSE)):
        pattern = {f: re.compile(re.escape(f).replace(r"\{s\}", ".*"), re.I) for f in frames}
        used = {"train": set(), "dev": set()}
        for t in out:
            if t.kind in (kind, "report" if kind == "reject" else kind):
                for f, rx in pattern.items():
                    if rx.fullmatch(t.text):
                        used[t.split].add(f)
        assert used["train"] and used["dev"] and not used["train"] & used["dev"], kind
    preds = {"train": set(), "dev": set()}
    for t in out:
        if t.kind in ("assert", "negate"):
            ends = [
                p
                for p in tc.EN_DEROGATORY + tc.EN_DIGNITY
                if re.search(rf"\b{re.escape(p)}\b", t.text.lower())
            ]
            if ends:
                preds[t.split].add(max(ends, key=len))
    assert preds["train"] and preds["dev"] and not preds["train"] & preds["dev"]


def test_same_seed_same_texts() -> None:
    assert _en() == _en()
    zh = tc.chinese_contrast([("河南人都是骗子", "train")], [("今天天气很好", "train")], seed=0)
    assert zh == tc.chinese_contrast([("河南人都是骗子", "train")], [("今天天气很好", "train")], 0)
    assert {t.hate for t in zh if "骗子" in t.text and t.kind != "assert"} == {0.0, 1.0}


def _grams(text: str, n: int) -> set[tuple[str, ...]]:
    words = re.findall(r"[a-z']+", text.lower())
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def test_no_template_copies_the_functional_suite() -> None:
    """The suite judges the model; templates that share four words in a row with one of its
    sentences (or, in Chinese, six characters) would turn it into training data."""
    suite = [json.loads(line)["text"] for line in SUITE.read_text(encoding="utf-8").splitlines()]
    suite_en = set().union(*(_grams(t, 4) for t in suite))
    templates = (
        tc.EN_REJECT + tc.EN_REPORT + tc.EN_ENDORSE + tc.EN_ASSERT_FRAMES + tc.EN_NEGATE_FRAMES
    )
    for frame in templates:
        for part in re.split(r"\{\w+\}", frame):
            assert not _grams(part, 4) & suite_en, frame
    zh_templates = tc.ZH_REJECT + tc.ZH_REPORT + tc.ZH_ENDORSE
    for frame in zh_templates:
        for part in re.split(r"\{\w+\}", frame):
            part = re.sub(r"[，。“”？！、]", "", part)
            for i in range(len(part) - 5):
                assert not any(part[i : i + 6] in s for s in suite), frame
