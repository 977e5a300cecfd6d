"""Text models: a tiny BERT built here (one word drives one label) through the generic loader,
the policy, the task path and the `classify text` / `eval text` commands; the functional
suite in tests/data/functional_text.jsonl."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from models.model_loading import ModelConfigError, ModelIntegrityError
from models.text_hf import TextTooLong, TransformersTextDirectoryClassifier
from models.text_normalize import normalize
from moderation.domain import Item
from moderation.errors import ConfigError
from moderation.pipeline import analyse, moderate
from moderation.runtime import Runtime, build_runtime
from moderation.service import moderate_payload

FUNCTIONAL = Path(__file__).parent / "data" / "functional_text.jsonl"

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = [
    "you",
    "are",
    "a",
    "the",
    "people",
    "say",
    "hello",
    "dolt",
    "vermin",
    "你",
    "是",
    "蠢",
    "猪",
]
LABELS = ["neutral", "insult", "hate"]
# Word -> the hidden dimension it lights up; classifier row k reads dimension k.
DRIVERS = {"dolt": 1, "蠢": 1, "vermin": 2}
WINDOW = 16  # tokens per window, specials included

# The tiny model's probabilities (softmax over neutral/insult/hate), measured once and
# explained by the construction below: a driver word anywhere gives its label ~0.873.
P_DRIVEN = 0.873
P_IDLE = 0.107

POLICY_CATEGORIES = (
    "categories:\n"
    "  offensive: {review: 0.6, block: 0.9}\n"
    "  hate: {review: 0.5, block: 0.9}\n"
    "  sexism: {review: 0.6, block: 0.95}\n"
)


def build_tiny_bert(directory: Path, *, multi_label: bool = False) -> Path:
    """A 1-layer BERT (hidden 8) whose label follows one word, with a WordPiece tokenizer.

    Every word embeds to 0 except the drivers, which light one dimension. Queries and keys
    are 0, so attention is a plain mean over the tokens: the [CLS] vector carries the
    drivers present anywhere in the window, the feed-forward block adds nothing, the pooler
    is the identity, and classifier row k reads dimension k.
    """
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    vocab = {w: i for i, w in enumerate(SPECIALS + WORDS)}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, handle_chinese_chars=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=WINDOW,
    ).save_pretrained(directory)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=1,
        intermediate_size=16,
        max_position_embeddings=64,
        id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
        problem_type="multi_label_classification" if multi_label else None,
    )
    model = BertForSequenceClassification(config)
    eye = torch.eye(8)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.fill_(1.0 if "LayerNorm.weight" in name else 0.0)
        for word, dim in DRIVERS.items():
            model.bert.embeddings.word_embeddings.weight[vocab[word], dim] = 1.0
        layer = model.bert.encoder.layer[0]
        layer.attention.self.value.weight.copy_(eye)
        layer.attention.output.dense.weight.copy_(eye)
        model.bert.pooler.dense.weight.copy_(eye)
        model.classifier.weight[1, 1] = 4.0
        model.classifier.weight[2, 2] = 4.0
        model.classifier.bias.copy_(torch.tensor([0.0, -2.0, -2.0]))
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("bert") / "tiny-bert")


def tiny_model_entry(path: Path, **extra: Any) -> dict[str, Any]:
    return {
        "name": "tiny",
        "kind": "transformers_dir",
        "path": str(path),
        "categories": {"insult": "offensive", "hate": "hate"},
        **extra,
    }


def write_policy(tmp_path: Path, text_models: list[dict[str, Any]]) -> Path:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        'version: "test-text-models"\n'
        + POLICY_CATEGORIES
        + "text_models: "
        + json.dumps(text_models)
        + "\n",
        encoding="utf-8",
    )
    return policy


def runtime_with(tmp_path: Path, text_models: list[dict[str, Any]]) -> Runtime:
    from moderation.settings import get_settings

    policy = write_policy(tmp_path, text_models)
    settings = get_settings().model_copy(update={"policy_path": policy})
    return build_runtime(settings, migrate=False)


def text_item(content_id: str, text: str) -> Item:
    return Item(content_id=content_id, uploader_id="u1", text=text)


# --- the generic loader --------------------------------------------------------------------


def test_one_word_drives_one_label(tiny_bert: Path) -> None:
    clf = TransformersTextDirectoryClassifier(tiny_bert)
    assert clf.name == "tiny-bert" and clf.labels == tuple(LABELS) and not clf.multi_label
    assert clf.window == WINDOW
    texts = ["hello you", "you are a dolt", "people say vermin", "你是蠢猪", ""]
    out = clf.classify_batch(texts)
    for o in out:
        assert set(o) == set(LABELS) and sum(o.values()) == pytest.approx(1.0, abs=1e-6)
    benign, insult, hate, zh_insult, empty = out
    assert insult["insult"] == pytest.approx(P_DRIVEN, abs=1e-3) and insult["hate"] < 0.01
    assert hate["hate"] == pytest.approx(P_DRIVEN, abs=1e-3) and hate["insult"] < 0.01
    assert zh_insult["insult"] == pytest.approx(P_DRIVEN, abs=1e-3)
    assert benign["insult"] == pytest.approx(P_IDLE, abs=1e-3)
    assert benign["hate"] == pytest.approx(benign["insult"])
    assert empty == pytest.approx(benign)
    # Batched equals one at a time.
    for text, batched in zip(texts, out, strict=True):
        assert clf.classify(text) == pytest.approx(batched, abs=1e-6)


def test_scores_equal_the_model_run_by_hand(tiny_bert: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(tiny_bert, local_files_only=True)
    with torch.no_grad():
        ref = torch.softmax(model(**tok(["you are a dolt"], return_tensors="pt")).logits, -1)
    got = TransformersTextDirectoryClassifier(tiny_bert).classify("you are a dolt")
    assert [got[label] for label in LABELS] == pytest.approx(ref[0].tolist(), abs=1e-6)


def test_long_text_is_windowed_not_truncated(tiny_bert: Path) -> None:
    clf = TransformersTextDirectoryClassifier(tiny_bert, max_windows=8)
    body = WINDOW - 2
    assert clf.overlap == body // 4
    # The driver sits far past the first window: truncation would miss it.
    late = " ".join(["hello"] * 40 + ["dolt"])
    inputs, owner = clf.windows([late, "hello"])
    assert owner.tolist().count(0) > 1 and owner.tolist().count(1) == 1
    assert int(inputs["attention_mask"].sum(dim=1).max()) == WINDOW
    first_window_only = clf.classify(" ".join(["hello"] * 40))
    scores = clf.classify(late)
    assert scores["insult"] == pytest.approx(P_DRIVEN, abs=1e-3)
    assert first_window_only["insult"] == pytest.approx(P_IDLE, abs=1e-3)


def test_windows_are_bounded(tiny_bert: Path) -> None:
    clf = TransformersTextDirectoryClassifier(tiny_bert, max_windows=4)
    body = WINDOW - 2
    # Fits only without overlap: the overlap is dropped, nothing is left out.
    fits = " ".join(["hello"] * (4 * body - 1) + ["vermin"])
    _, owner = clf.windows([fits])
    assert len(owner) == 4
    assert clf.classify(fits)["hate"] == pytest.approx(P_DRIVEN, abs=1e-3)
    with pytest.raises(TextTooLong, match="more than the 4"):
        clf.classify(" ".join(["hello"] * (4 * body + 1)))


def test_multi_label_model_uses_sigmoid(tmp_path: Path) -> None:
    clf = TransformersTextDirectoryClassifier(build_tiny_bert(tmp_path / "ml", multi_label=True))
    assert clf.multi_label
    out = clf.classify("you are a dolt")
    assert out["neutral"] == pytest.approx(0.5, abs=1e-6)  # logit 0: sigmoid, not softmax
    assert out["insult"] > 0.8 and out["hate"] < 0.1


def test_sha256_pin_and_missing_files(tmp_path: Path, tiny_bert: Path) -> None:
    sha = hashlib.sha256((tiny_bert / "model.safetensors").read_bytes()).hexdigest()
    TransformersTextDirectoryClassifier(tiny_bert, expected_sha256=sha)
    with pytest.raises(ModelIntegrityError, match="refusing to load"):
        TransformersTextDirectoryClassifier(tiny_bert, expected_sha256="e" * 64)
    with pytest.raises(ModelConfigError, match="not a directory"):
        TransformersTextDirectoryClassifier(tmp_path / "nowhere")
    no_weights = tmp_path / "no-weights"
    shutil.copytree(tiny_bert, no_weights)
    (no_weights / "model.safetensors").unlink()
    (no_weights / "pytorch_model.bin").write_bytes(b"a pickle would run code")
    with pytest.raises(ModelConfigError, match="only safetensors"):
        TransformersTextDirectoryClassifier(no_weights)
    no_tokenizer = tmp_path / "no-tokenizer"
    shutil.copytree(tiny_bert, no_tokenizer)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (no_tokenizer / name).unlink()
    with pytest.raises(ModelConfigError, match=r"has no tokenizer\.json"):
        TransformersTextDirectoryClassifier(no_tokenizer)


# --- policy, runtime and the task path ----------------------------------------------------


def test_tiny_model_through_the_policy_to_a_verdict(
    tmp_path: Path, tiny_bert: Path, database_url: str, uid: str
) -> None:
    rt = runtime_with(tmp_path, [tiny_model_entry(tiny_bert)])
    # Leetspeak and case fold exactly as for the keyword lists, before the model sees it.
    verdict, _ = moderate(rt, text_item(f"txt-{uid}-1", "YOU are a D0LT"))
    assert verdict.decision == "review"  # 0.873: above offensive's review 0.6, below 0.9
    assert verdict.categories["offensive"] == pytest.approx(P_DRIVEN, abs=1e-3)
    assert verdict.categories["offensive"] > verdict.categories["hate"]
    (reason,) = verdict.reasons
    assert (reason.source, reason.category, reason.threshold) == (
        "text_model:tiny",
        "offensive",
        0.6,
    )
    assert reason.detail.startswith("insult=0.87")

    verdict, _ = moderate(rt, text_item(f"txt-{uid}-2", "people say VERMIN"))
    assert verdict.decision == "review"
    assert verdict.categories["hate"] > verdict.categories["offensive"]
    assert [r.category for r in verdict.reasons] == ["hate"]

    # Traditional Chinese folds to simplified like the keyword path ("豬" -> "猪").
    verdict, _ = moderate(rt, text_item(f"txt-{uid}-3", "你是蠢豬"))
    assert verdict.categories["offensive"] == pytest.approx(P_DRIVEN, abs=1e-3)

    verdict, analysis = moderate(rt, text_item(f"txt-{uid}-4", "hello you"))
    assert verdict.decision == "allow" and verdict.reasons == []
    assert {s.source for s in analysis.signals} == {"text_model:tiny"}
    assert verdict.categories == pytest.approx({"offensive": P_IDLE, "hate": P_IDLE}, abs=1e-3)


def test_keywords_and_model_signals_come_together(
    tmp_path: Path, tiny_bert: Path, database_url: str
) -> None:
    rt = runtime_with(tmp_path, [tiny_model_entry(tiny_bert)])
    analysis = analyse(rt, text_item("kw-and-model", "傻逼 你是蠢猪"))
    sources = {s.source for s in analysis.signals}
    assert sources == {"keywords", "text_model:tiny"}


def test_empty_text_calls_no_model(
    tmp_path: Path, tiny_bert: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = runtime_with(tmp_path, [tiny_model_entry(tiny_bert)])
    (model,) = rt.text_models()
    calls: list[list[str]] = []
    real = model.classifier.classify_batch

    def spy(texts: list[str]) -> list[dict[str, float]]:
        calls.append(list(texts))
        return real(texts)

    monkeypatch.setattr(model.classifier, "classify_batch", spy)
    for text in ["", " \u200b\u200d ", "\t"]:
        assert analyse(rt, text_item("empty", text)).signals == []
    assert calls == []
    analyse(rt, text_item("one", "Hello\u200b YOU"))
    assert calls == [["hello you"]]  # normalised once, as the keyword layer sees it


def test_text_too_long_for_the_model_is_input_too_large(
    tmp_path: Path, tiny_bert: Path, database_url: str, uid: str
) -> None:
    rt = runtime_with(tmp_path, [tiny_model_entry(tiny_bert)])
    # 48 windows of 14 tokens with overlap 3: 2,000 words need ~180.
    result = moderate_payload(
        rt, {"content_id": f"long-{uid}", "uploader_id": "u", "text": "hello " * 2000}
    )
    assert result["error"]["code"] == "input_too_large"
    assert result["error"]["field"] == "text"
    assert "windows" in result["error"]["message"]


def test_disabled_text_model_is_not_loaded(tmp_path: Path, database_url: str) -> None:
    rt = runtime_with(tmp_path, [tiny_model_entry(tmp_path / "does-not-exist", enabled=False)])
    assert rt.text_models() == []
    verdict, _ = moderate(rt, text_item("disabled", "you are a dolt"))
    assert verdict.decision == "allow" and verdict.categories == {}


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"categories": {"insult": "offensive", "slur": "hate"}}, "no label(s) ['slur']"),
        ({"overall_label": "toxic"}, "no overall label 'toxic'"),
        ({"path": "nowhere"}, "not a directory"),
        ({"sha256": "0" * 64}, "refusing to load"),
    ],
)
def test_text_model_load_problems_are_config_errors(
    tmp_path: Path, tiny_bert: Path, database_url: str, entry: dict[str, Any], expected: str
) -> None:
    rt = runtime_with(tmp_path, [tiny_model_entry(tiny_bert) | entry])
    with pytest.raises(ConfigError) as exc:
        rt.text_models()
    assert expected in exc.value.message and "'tiny'" in exc.value.message
    # The task path reports the same error for an item with text.
    with pytest.raises(ConfigError):
        moderate(rt, text_item("cfg", "hello"))


def test_builtin_model_that_cannot_load_is_a_clear_config_error(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A None entry makes the import fail whether or not the builtin model is present.
    monkeypatch.setitem(sys.modules, "models.text_builtin", None)
    rt = runtime_with(
        tmp_path,
        [{"name": "builtin", "kind": "builtin", "categories": {"offensive": "offensive"}}],
    )
    with pytest.raises(ConfigError) as exc:
        rt.text_models()
    assert "text model 'builtin' (builtin)" in exc.value.message
    assert "cannot be imported" in exc.value.message


def test_warm_up_tries_every_model_and_names_the_failures(
    tmp_path: Path, tiny_bert: Path, database_url: str
) -> None:
    good = runtime_with(tmp_path, [tiny_model_entry(tiny_bert)])
    good.warm_up()
    first = good.text_models()
    good.warm_up()
    assert good.text_models() is first and len(first) == 1

    bad = runtime_with(tmp_path, [tiny_model_entry(tmp_path / "gone")])
    with pytest.raises(ConfigError) as exc:
        bad.warm_up()
    assert "text model 'tiny'" in exc.value.message
    assert bad.image_models() is not None  # the image models were still loaded


# --- classify text / eval text -------------------------------------------------------------


@pytest.fixture()
def tiny_policy(tmp_path: Path, tiny_bert: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """MODERATION_POLICY_PATH at a policy with the tiny model, for in-process CLI runs."""
    from moderation.settings import get_settings

    policy = write_policy(tmp_path, [tiny_model_entry(tiny_bert)])
    monkeypatch.setenv("MODERATION_POLICY_PATH", str(policy))
    get_settings.cache_clear()
    yield policy
    monkeypatch.undo()
    get_settings.cache_clear()


def run_cli(*args: str, stdin: str | None = None) -> Result:
    from moderation.cli import cli

    return CliRunner().invoke(cli, list(args), input=stdin, catch_exceptions=False)


def jsonl(rows: list[Any]) -> str:
    return "".join(
        (r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows
    )


@pytest.mark.parametrize("command", ["classify", "eval"])
def test_text_commands_have_help(command: str) -> None:
    result = run_cli(command, "text", "--help")
    assert result.exit_code == 0
    assert result.output.startswith(f"Usage: cli {command} text [OPTIONS]")
    assert "--skip-bad" in result.output and "--model" in result.output


def test_classify_text_exact_output(tmp_path: Path, tiny_policy: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(
        jsonl(
            [
                {"id": "a", "text": "you are a dolt"},
                {"id": 7, "text": "people say vermin", "extra": "ignored"},
                "",
                {"id": "c", "text": "hello"},
                {"id": "d", "text": "\u200b"},
            ]
        ),
        encoding="utf-8",
    )
    out = tmp_path / "out.jsonl"
    result = run_cli("classify", "text", "--in", str(src), "--out", str(out), "--batch", "2")
    assert result.exit_code == 0, result.output
    lines = out.read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    assert [list(r) for r in rows] == [["id", "score", "categories"]] * 4
    assert [r["id"] for r in rows] == ["a", 7, "c", "d"]
    assert all(list(r["categories"]) == ["hate", "offensive"] for r in rows)
    a, b, c, d = rows
    # No overall label: score is the highest mapped category.
    assert a["score"] == a["categories"]["offensive"] == pytest.approx(P_DRIVEN, abs=1e-3)
    assert a["categories"]["hate"] < 0.01
    assert b["score"] == b["categories"]["hate"] == pytest.approx(P_DRIVEN, abs=1e-3)
    assert c["score"] == pytest.approx(P_IDLE, abs=1e-3)
    assert d == {"id": "d", "score": 0.0, "categories": {"hate": 0.0, "offensive": 0.0}}
    assert lines[0] == json.dumps(a)  # compact, one object per line, six decimals at most
    assert len(str(a["score"]).split(".")[1]) <= 6


def test_classify_score_from_the_overall_label(
    tmp_path: Path, tiny_bert: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moderation.settings import get_settings

    # `neutral` stands in for an overall label here: the score follows it, not the categories.
    policy = write_policy(tmp_path, [tiny_model_entry(tiny_bert, overall_label="neutral")])
    monkeypatch.setenv("MODERATION_POLICY_PATH", str(policy))
    get_settings.cache_clear()
    try:
        result = run_cli("classify", "text", "--in", "-", stdin=jsonl([{"id": 1, "text": "hello"}]))
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    (row,) = [json.loads(line) for line in result.output.splitlines()]
    assert row["score"] == pytest.approx(1 - 2 * P_IDLE, abs=1e-3)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{not json", "not JSON"),
        ('["a list"]', "not a JSON object"),
        ('{"text": "no id"}', "missing 'id'"),
        ('{"id": null, "text": "no id"}', "missing 'id'"),
        ('{"id": "x"}', "missing 'text'"),
        ('{"id": true, "text": "t"}', "'id' must be a string or an integer"),
        ('{"id": "x", "text": 5}', "'text' must be a string"),
        ('{"id": "x", "text": "' + "a" * 51 + '"}', "text has 51 characters, over the limit of 50"),
    ],
)
def test_classify_bad_line_stops_naming_it(
    tmp_path: Path, tiny_policy: Path, monkeypatch: pytest.MonkeyPatch, line: str, problem: str
) -> None:
    from moderation.settings import get_settings

    monkeypatch.setenv("MODERATION_LIMITS__MAX_TEXT_CHARS", "50")
    get_settings.cache_clear()
    src = tmp_path / "in.jsonl"
    src.write_text(jsonl([{"id": "ok", "text": "hello"}, line]), encoding="utf-8")
    result = run_cli("classify", "text", "--in", str(src))
    assert result.exit_code == 1
    assert f"{src} line 2: {problem}" in result.output


def test_classify_skip_bad_reports_and_goes_on(tmp_path: Path, tiny_policy: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_bytes(
        jsonl([{"id": "a", "text": "hello"}, "{oops", {"id": "b"}]).encode()
        + b'{"id": "c", "text": "\xff"}\n'
        + jsonl([{"id": "d", "text": "you are a dolt"}]).encode()
    )
    result = run_cli("classify", "text", "--in", str(src), "--skip-bad")
    assert result.exit_code == 0
    ids = [json.loads(line)["id"] for line in result.stdout.splitlines()]
    assert ids == ["a", "d"]
    assert f"{src} line 2: not JSON" in result.stderr
    assert f"{src} line 3: missing 'text' (skipped)" in result.stderr
    assert f"{src} line 4: not UTF-8" in result.stderr


def test_classify_unknown_model_and_model_choice(tmp_path: Path, tiny_policy: Path) -> None:
    result = run_cli("classify", "text", "--in", "-", "--model", "nope", stdin="")
    assert result.exit_code == 2 and "no text model 'nope'" in result.output
    result = run_cli(
        "classify", "text", "--in", "-", "--model", "tiny", stdin=jsonl([{"id": 1, "text": "hi"}])
    )
    assert result.exit_code == 0 and json.loads(result.stdout)["id"] == 1


def test_classify_through_stdin_and_stdout_as_a_process(tiny_policy: Path) -> None:
    env = dict(os.environ, MODERATION_POLICY_PATH=str(tiny_policy), HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "-m", "moderation", "classify", "text", "--in", "-", "--out", "-"],
        input=jsonl([{"id": "z", "text": "你是蠢猪"}, {"id": "y", "text": "hello"}]),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["id"] for r in rows] == ["z", "y"]
    assert rows[0]["categories"]["offensive"] == pytest.approx(P_DRIVEN, abs=1e-3)


def test_text_metrics_against_a_hand_computed_example() -> None:
    from moderation.cli.text import text_metrics

    labels = [0, 0, 1, 1, 0, 1]
    scores = [0.1, 0.4, 0.35, 0.8, 0.7, 0.9]
    # Pairs (positive, negative) ranked right: 0.35 beats 0.1 only; 0.8 and 0.9 beat all 3.
    # AUC = (1 + 3 + 3) / 9. At 0.5: predicted 0,0,0,1,1,1 -> tn 2, fp 1, fn 1, tp 2.
    m = text_metrics(labels, scores, 0.5, ["x", "x", "y", "y", "y", None])
    assert m["roc_auc"] == pytest.approx(7 / 9, abs=1e-6)
    assert m["confusion"] == {"tn": 2, "fp": 1, "fn": 1, "tp": 2}
    assert m["accuracy"] == pytest.approx(4 / 6, abs=1e-6)
    assert m["precision"] == pytest.approx(2 / 3, abs=1e-6)
    assert m["recall"] == pytest.approx(2 / 3, abs=1e-6)
    assert m["f1"] == pytest.approx(2 / 3, abs=1e-6)
    assert m["n"] == 6 and m["positives"] == 3 and m["threshold"] == 0.5
    assert m["groups"] == {
        "None": {"n": 1, "accuracy": 1.0, "positives": 1, "flagged": 1},
        "x": {"n": 2, "accuracy": 1.0, "positives": 0, "flagged": 0},
        "y": {"n": 3, "accuracy": pytest.approx(1 / 3, abs=1e-6), "positives": 2, "flagged": 2},
    }
    # One class only: AUC is undefined, not an exception.
    assert text_metrics([1, 1], [0.2, 0.9], 0.5, None)["roc_auc"] is None


def test_eval_text_end_to_end(tmp_path: Path, tiny_policy: Path) -> None:
    src = tmp_path / "eval.jsonl"
    src.write_text(
        jsonl(
            [
                {"text": "you are a dolt", "label": 1, "kind": "insult"},
                {"id": "x", "text": "people say vermin", "label": 1, "kind": "hate"},
                {"text": "hello you", "label": 0, "kind": "benign"},
                {"text": "say hello", "label": 1, "kind": "benign"},  # a miss
                {"text": "你是蠢猪", "label": True, "kind": "insult"},  # JSON true is 1
                {"text": "the people", "label": 0},
            ]
        ),
        encoding="utf-8",
    )
    result = run_cli("eval", "text", "--in", str(src), "--json", "--by", "kind")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    # Threshold: the lowest review threshold of the mapped categories (hate 0.5, offensive 0.6).
    assert report["threshold"] == 0.5
    assert report["threshold_from"] == "the lowest review threshold of hate, offensive"
    assert report["models"] == ["tiny"] and report["n"] == 6 and report["positives"] == 4
    assert report["confusion"] == {"tn": 2, "fp": 0, "fn": 1, "tp": 3}
    # The miss scores like the negatives (a tie), the three hits above them: (3*2 + 0.5*2)/8.
    assert report["roc_auc"] == pytest.approx(7 / 8, abs=1e-6)
    assert report["accuracy"] == pytest.approx(5 / 6, abs=1e-6)
    assert report["by"]["field"] == "kind"
    assert report["by"]["groups"]["benign"] == {
        "n": 2,
        "accuracy": 0.5,
        "positives": 1,
        "flagged": 0,
    }
    assert report["by"]["groups"]["(none)"]["n"] == 1

    result = run_cli("eval", "text", "--in", str(src), "--threshold", "0.95")
    assert result.exit_code == 0
    text = result.stdout
    assert "threshold: 0.95 (--threshold)" in text
    assert "  label 1        4        0" in text  # nothing reaches 0.95

    bad = tmp_path / "bad.jsonl"
    bad.write_text(jsonl([{"text": "hello", "label": 2}]), encoding="utf-8")
    result = run_cli("eval", "text", "--in", str(bad))
    assert result.exit_code == 1 and "line 1: 'label' must be 0 or 1, got 2" in result.output
    result = run_cli("eval", "text", "--in", str(bad), "--skip-bad")
    assert result.exit_code == 1 and "has no labelled lines" in result.output


# --- the functional suite ------------------------------------------------------------------

FUNCTIONALITY_LABELS = {
    "slur_free_hate": 1,
    "offensive_insult": 1,
    "sexism": 1,
    "negated_hate": 0,
    "counter_speech": 0,
    "quoted_hate": 0,
    "identity_neutral": 0,
    "profanity_not_hate": 0,
    "benign": 0,
}


def test_functional_suite_is_well_formed() -> None:
    rows = [json.loads(line) for line in FUNCTIONAL.read_text(encoding="utf-8").splitlines()]
    assert 120 <= len(rows) <= 200
    assert len({r["id"] for r in rows}) == len(rows) == len({r["text"] for r in rows})
    for r in rows:
        assert set(r) == {"id", "text", "label", "functionality", "lang"}
        assert r["label"] == FUNCTIONALITY_LABELS[r["functionality"]], r
    for functionality in FUNCTIONALITY_LABELS:
        langs = [r["lang"] for r in rows if r["functionality"] == functionality]
        assert langs.count("en") >= 8 and langs.count("zh") >= 8, functionality


def test_eval_by_functionality_on_the_suite(tiny_policy: Path) -> None:
    result = run_cli("eval", "text", "--in", str(FUNCTIONAL), "--by", "functionality", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    groups = report["by"]["groups"]
    assert set(groups) == set(FUNCTIONALITY_LABELS)
    assert sum(g["n"] for g in groups.values()) == report["n"]
    # The tiny model flags exactly the lines with one of its driver words.
    expected: dict[str, int] = dict.fromkeys(FUNCTIONALITY_LABELS, 0)
    for line in FUNCTIONAL.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        words = normalize(row["text"]).replace("'", " ").split()
        if {"dolt", "vermin"} & {w.strip(".,!?") for w in words} or "蠢" in row["text"]:
            expected[row["functionality"]] += 1
    assert {name: g["flagged"] for name, g in groups.items()} == expected
    assert sum(expected.values()) >= 3


def test_default_policy_on_the_functional_suite() -> None:
    # Floors a little under what the committed model measures (accuracy 0.648, ROC AUC 0.723,
    # models/cards/text.md): a retrained model that over-blocks more fails here. Far from the
    # 0.80 goal: counter-speech and negation are flagged (see the card).
    result = run_cli("eval", "text", "--in", str(FUNCTIONAL), "--by", "functionality", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["models"] == ["builtin"]
    assert report["accuracy"] >= 0.62
    assert report["roc_auc"] >= 0.70
    groups = report["by"]["groups"]
    # Benign text and identity terms used neutrally are (nearly) never flagged.
    assert groups["benign"]["flagged"] <= 1
    assert groups["identity_neutral"]["flagged"] <= 1
