"""The built-in text classifier (models/text_builtin.py) and its training (train_text)."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from models.model_loading import ModelConfigError, ModelIntegrityError
from models.text_builtin import (
    DEFAULT_WEIGHTS_DIR,
    ENCODER_SHA256,
    LABELS,
    NEGATED,
    BuiltinTextClassifier,
    ChineseNgramModel,
    TextTooLong,
    char_ngrams,
    encoder_dir,
    make_torch_encoder,
    ngram_keys,
    pack_rows,
    read_encoder,
    route,
    windows,
)
from models.text_normalize import normalize
from tests.shared_data import DATA_DIR

DATA = DATA_DIR


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("text-model-cache")


@pytest.fixture(scope="module")
def clf(cache: Path) -> BuiltinTextClassifier:
    return BuiltinTextClassifier(cache_dir=cache)


def scores(clf: BuiltinTextClassifier, texts: list[str]) -> list[dict[str, float]]:
    # As the service calls it: on normalised text.
    return clf.classify_batch([normalize(t) for t in texts])


def score(clf: BuiltinTextClassifier, text: str, label: str = "any") -> float:
    return scores(clf, [text])[0][label]


# --- ordering on real sentences -------------------------------------------------------------


# Examples checked against the committed model: clear cases, and the functional cases it gets
# right. What it gets wrong is pinned below as a known limitation (see models/cards/text.md).
HARMFUL_EN = [
    "I hate all muslims, they are vermin",
    "you are a worthless piece of shit",
    "kill all jews",
    "immigrants are a plague on this country",
]
BENIGN_EN = [
    "The meeting is moved to 3pm tomorrow, see you there",
    "Thanks for the help yesterday, the soup recipe was great",
    "My jewish neighbours invited us for dinner",
    "Our team won the match on Saturday",
]
HARMFUL_ZH = ["你这个傻逼，滚回你的老家去", "黑人都是垃圾，滚出中国", "田园女权就是想要特权"]
BENIGN_ZH = [
    "今天天气很好，我们一起去公园散步吧",
    "谢谢你昨天的帮助，汤很好喝",
    "这家餐厅的菜很好吃",
    "女性科学家在这个领域做出了巨大贡献",
]


def test_harmful_scores_above_benign_in_english_and_chinese(clf: BuiltinTextClassifier) -> None:
    for harmful, benign in ((HARMFUL_EN, BENIGN_EN), (HARMFUL_ZH, BENIGN_ZH)):
        bad = [s["any"] for s in scores(clf, harmful)]
        good = [s["any"] for s in scores(clf, benign)]
        assert min(bad) >= 0.5 > max(good), (bad, good)


def _limitation(reason: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, reason=f"known limitation: {reason}")


_NAMING = _limitation(
    "counter-speech that names the slur and condemns it with a word that is itself an insult "
    "('disgusting') scores as hate; see models/cards/text.md"
)
_ZH_LEXICAL = _limitation(
    "the Chinese path is an n-gram model: a denied or condemned insult keeps much of the "
    "insult's weight; see models/cards/text.md"
)
_MUSLIMS = "I hate all muslims, they are vermin"
_IMMIGRANTS = "Immigrants are criminals who should be deported"
_GAY = "Gay people are disgusting perverts"
_ZH_BLACK = "黑人都是垃圾，滚出中国"
_ZH_HENAN = "河南人都是骗子"


@pytest.mark.parametrize(
    ("hateful", "answer"),
    [
        (_MUSLIMS, "I don't hate muslims"),
        (_MUSLIMS, "We stand with our muslim neighbours against hate"),
        pytest.param(_MUSLIMS, "Calling muslims vermin is disgusting and wrong", marks=_NAMING),
        (_IMMIGRANTS, "Immigrants are not criminals"),
        (_IMMIGRANTS, "Saying immigrants are criminals is a lie"),
        (_GAY, "Gay people are not perverts"),
        (_GAY, "My coworker said gay people are perverts and I told him he was wrong"),
        (_ZH_BLACK, "我们应该尊重每一个民族"),
        pytest.param(_ZH_BLACK, "黑人不是垃圾，他们和我们一样", marks=_ZH_LEXICAL),
        (_ZH_HENAN, "河南人不是骗子"),
        pytest.param(_ZH_HENAN, "说河南人都是骗子就是地域歧视", marks=_ZH_LEXICAL),
    ],
)
def test_negation_and_counter_speech_score_below_the_hate_they_answer(
    clf: BuiltinTextClassifier, hateful: str, answer: str
) -> None:
    high = score(clf, hateful, "hate")
    assert high >= 0.5
    assert score(clf, answer, "hate") < high - 0.3


@pytest.mark.parametrize(
    "text",
    [
        "Muslims are not human.",
        "Jews do not belong in this country",
        "Refugees do not deserve any help",
        "Women should never be allowed to vote",
        "黑人不是人",
        "女人不配当领导",
    ],
)
def test_hate_phrased_as_a_negation_is_still_hate(clf: BuiltinTextClassifier, text: str) -> None:
    # Training on negated hate alone taught "not means benign"; the contrast sets deny
    # dignity predicates as well, so a denial can be the hate itself.
    assert score(clf, text, "hate") >= 0.5


FUNCTIONAL = Path(__file__).parent / "data" / "functional_text.jsonl"


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_negated_hate_scores_below_hate_in_the_functional_suite(
    clf: BuiltinTextClassifier, lang: str
) -> None:
    # The suite's sentences are not pairs, so compare the two groups: negations of hate
    # ("河南人不是骗子...") must rank below slur-free hate on average, and most of them must.
    rows = [json.loads(line) for line in FUNCTIONAL.read_text(encoding="utf-8").splitlines()]
    group = {
        kind: [r["text"] for r in rows if r["lang"] == lang and r["functionality"] == kind]
        for kind in ("slur_free_hate", "negated_hate")
    }
    hate = [s["hate"] for s in scores(clf, group["slur_free_hate"])]
    negated = [s["hate"] for s in scores(clf, group["negated_hate"])]
    assert np.mean(negated) < np.mean(hate) - 0.05, (np.mean(negated), np.mean(hate))
    below_median_hate = sum(n < np.median(hate) for n in negated)
    assert below_median_hate > len(negated) / 2, (negated, hate)


def test_chinese_negation_marks_the_ngrams_in_scope() -> None:
    grams = char_ngrams("黑人不是垃圾，是人", (1, 2), negation=4)
    assert {"¬垃", "¬圾", "¬垃圾"} <= set(grams)
    assert "垃圾" not in grams and "黑人" in grams and "是人" in grams  # scope ends at "，"
    assert char_ngrams("黑人不是垃圾", (1, 2)) == char_ngrams("黑人不是垃圾", (1, 2), negation=0)


def test_categories_point_the_right_way(clf: BuiltinTextClassifier) -> None:
    insult, hate, sexist_en, sexist_zh, benign_zh = scores(
        clf,
        [
            "you are a worthless piece of shit",
            "immigrants are a plague on this country",
            "women belong in the kitchen",
            "田园女权就是想要特权",
            "我妈妈是一名医生",
        ],
    )
    assert insult["offensive"] >= 0.5 > insult["hate"]  # an insult, not hate
    assert hate["hate"] >= 0.5
    assert sexist_en["sexism"] >= 0.5 and sexist_zh["sexism"] >= 0.5
    assert benign_zh["sexism"] < 0.5
    for s in (insult, hate, sexist_en, sexist_zh, benign_zh):
        assert s["any"] == max(s.values())


# --- contract ------------------------------------------------------------------------------


def test_labels_and_overall_label(clf: BuiltinTextClassifier) -> None:
    assert clf.labels == LABELS == ("offensive", "hate", "sexism", "any")
    assert clf.overall_label == "any"
    out = scores(clf, ["hello"])[0]
    assert set(out) == set(LABELS)
    assert all(0.0 <= v <= 1.0 for v in out.values())


def test_empty_and_whitespace_texts_score_zero(clf: BuiltinTextClassifier) -> None:
    out = clf.classify_batch(["", "   ", "\n\t", "hello"])
    for s in out[:3]:
        assert s == dict.fromkeys(LABELS, 0.0)
    assert out[3]["any"] < 0.5
    # Texts with no letters still score (MiniLM sees [UNK] and punctuation) without error.
    assert set(clf.classify_batch(["🙂🙂 !!! 123"])[0]) == set(LABELS)


def test_batch_equals_singles(clf: BuiltinTextClassifier) -> None:
    texts = [normalize(t) for t in HARMFUL_EN + BENIGN_ZH + BENIGN_EN + HARMFUL_ZH]
    texts += ["word " * 300, "你好 hello 世界 this is mixed 文本", ""]
    # Several sentences (one run per text under int8) beside one-sentence texts.
    texts += [normalize(" ".join([*BENIGN_EN[:3], HARMFUL_EN[0]])), normalize(HARMFUL_EN[1])]
    batch = clf.classify_batch(texts)
    singles = [clf.classify(t) for t in texts]
    for b, s in zip(batch, singles, strict=True):
        for label in LABELS:
            assert b[label] == pytest.approx(s[label], abs=1e-6)


# --- long texts ----------------------------------------------------------------------------

BENIGN_SENTENCES = [
    "The committee met on Tuesday to review the budget for the new library.",
    "Volunteers planted forty trees along the river path last spring.",
    "The recipe calls for two cups of flour, one egg and a pinch of salt.",
    "Our train left the station a few minutes late because of the rain.",
    "She practised the piano every evening before dinner.",
]


def _benign_text(chars: int) -> str:
    out: list[str] = []
    i = 0
    while sum(len(s) + 1 for s in out) < chars:
        out.append(BENIGN_SENTENCES[i % len(BENIGN_SENTENCES)])
        i += 1
    return " ".join(out)


def test_one_hateful_sentence_at_the_end_of_a_long_text_is_found(
    clf: BuiltinTextClassifier,
) -> None:
    benign = _benign_text(5000)
    assert len(benign) >= 5000
    hateful = benign + " I hate all muslims, they are vermin."
    low, high = scores(clf, [benign, hateful])
    assert low["any"] < 0.5
    assert high["any"] >= 0.5


def test_long_chinese_text_is_windowed_too(clf: BuiltinTextClassifier) -> None:
    benign = "今天天气很好，我们一起去公园散步，然后在湖边吃了午饭。" * 80
    low, high = scores(clf, [benign, benign + "你这个傻逼，滚回你的老家去"])
    assert low["any"] < 0.5 <= high["any"]


def test_too_many_windows_is_refused_not_truncated(cache: Path) -> None:
    small = BuiltinTextClassifier(cache_dir=cache, max_windows=3)
    small.classify_batch([_benign_text(1000)])  # ~210 tokens: 2 windows
    with pytest.raises(TextTooLong):
        small.classify_batch([_benign_text(3000)])
    with pytest.raises(TextTooLong):
        small.classify_batch(["今天天气很好" * 100])


def test_windows_cover_everything_with_overlap() -> None:
    assert windows(0, 126, 32) == [(0, 0)]
    assert windows(126, 126, 32) == [(0, 126)]
    spans = windows(1000, 126, 32)
    assert spans[0][0] == 0 and spans[-1][1] == 1000
    for (_, a1), (b0, b1) in itertools.pairwise(spans):
        assert b0 < a1 and a1 - b0 >= 32 and b1 - b0 == 126


# --- routing and the Chinese path --------------------------------------------------------------


def test_routing_by_script() -> None:
    assert route("hello world") == ("hello world", None)
    assert route("你这个傻逼") == (None, "你这个傻逼")
    assert route("你是sb") == ("sb", "你是sb")  # mixed: both paths, the higher score wins
    mostly_chinese = "今天天气很好，我们一起去公园散步吧 ok"
    assert route(mostly_chinese) == (None, mostly_chinese)
    en, zh = route("fuck you 傻逼")
    assert en == "fuck you" and zh == "fuck you 傻逼"
    assert route("🙂") == ("🙂", None)
    # A Chinese sentence is blanked with the punctuation inside and after it: the English
    # path reads no orphaned commas, the Chinese path the whole text.
    mixed = "we watched the sunset. 我们烤鱼、打牌,看日落。next time a tent! 下次过夜。bye (ok)"
    en, zh = route(mixed)
    assert en == "we watched the sunset. next time a tent! bye (ok)" and zh == mixed


def test_char_ngrams_match_scikit_learn() -> None:
    from sklearn.feature_extraction.text import CountVectorizer

    analyzer = CountVectorizer(analyzer="char", ngram_range=(1, 3), lowercase=False)
    for text in ["你这个  傻逼", "ab", "a", "", "混合 text 文本\t\tok"]:
        assert char_ngrams(text, (1, 3)) == analyzer.build_analyzer()(text)


def _string_logits(model: ChineseNgramModel, text: str) -> np.ndarray:
    """The Chinese model's logits counted over n-gram strings, as scikit-learn does."""
    from collections import Counter

    vocab = {str(term): i for i, term in enumerate(model.terms)}
    grams = char_ngrams(text, model.ngram_range, model.negation)
    counts = Counter(vocab[g] for g in grams if g in vocab)
    if not counts:
        return model.intercept.copy()
    idx = np.fromiter(counts.keys(), np.int64, len(counts))
    x = (1.0 + np.log(np.fromiter(counts.values(), np.float64, len(counts)))) * model.idf[idx]
    x /= np.linalg.norm(x)
    return np.asarray(x @ model.coef[idx] + model.intercept, np.float64)


def test_ngram_keys_are_one_to_one_with_the_ngram_strings() -> None:
    for text in ["黑人不是垃圾，是人", "不是¬垃圾 ok", "ab", "a", "", "😀不是  😀"]:
        grams = char_ngrams(text, (1, 3), negation=4)
        keys = ngram_keys(text, (1, 3), negation=4)
        assert len(keys) == len(grams)
        # Equal keys exactly where the n-grams are equal (a literal "¬" aside).
        for (g1, k1), (g2, k2) in itertools.combinations(zip(grams, keys, strict=True), 2):
            if NEGATED not in g1 + g2:
                assert (k1 == k2) == (g1 == g2), (g1, g2)


def test_chinese_logits_by_key_equal_counting_ngram_strings() -> None:
    vocab = ["垃", "圾", "垃圾", "¬垃", "¬垃圾", "¬", "¬a", "a", "人", "是人", "¬¬a"]
    rng = np.random.default_rng(0)
    model = ChineseNgramModel(
        vocab,
        rng.uniform(1, 3, len(vocab)),
        rng.normal(size=(len(LABELS), len(vocab))),
        rng.normal(size=len(LABELS)),
        (1, 3),
        negation=4,
    )
    alphabet = list("垃圾人是不没a¬ ，")
    texts = ["", "xyz", "黑人不是垃圾，是人", "¬a 不¬a"]
    texts += ["".join(rng.choice(alphabet, size=int(rng.integers(1, 30)))) for _ in range(300)]
    # Scored together, as a post's windows and sentences are, and each on its own.
    together = model.window_logits(texts)
    for text, row in zip(texts, together, strict=True):
        assert np.array_equal(row, _string_logits(model, text)), text
        assert np.array_equal(model.window_logits([text])[0], row), text


def test_chinese_model_refuses_what_keys_cannot_hold() -> None:
    one = np.ones(1)
    with pytest.raises(ModelConfigError, match="n-gram range"):
        ChineseNgramModel(["a"], one, np.ones((len(LABELS), 1)), one, (1, 4))
    with pytest.raises(ModelConfigError, match="at most 4 characters"):
        ChineseNgramModel(["abcde"], one, np.ones((len(LABELS), 1)), one, (1, 3))
    two = np.ones(2)
    with pytest.raises(ModelConfigError, match="repeats a term"):
        ChineseNgramModel(["ab", "ab"], two, np.ones((len(LABELS), 2)), one, (1, 3))


def test_packaged_chinese_model_scores_cold_dev_as_counting_strings(
    clf: BuiltinTextClassifier,
) -> None:
    import csv

    path = DATA / "text" / "cold" / "dev.csv"
    if not path.exists():
        pytest.skip(f"{path} not present")
    with path.open(encoding="utf-8-sig") as f:
        texts = [normalize(r["TEXT"]) for r, _ in zip(csv.DictReader(f), range(500), strict=False)]
    for start in range(0, len(texts), 10):
        chunk = texts[start : start + 10]
        for text, row in zip(chunk, clf.zh.window_logits(chunk), strict=True):
            assert np.array_equal(row, _string_logits(clf.zh, text)), text


# --- integrity -----------------------------------------------------------------------------


def _copy_encoder(dest: Path) -> Path:
    dest.mkdir()
    for name in ENCODER_SHA256:
        shutil.copyfile(encoder_dir() / name, dest / name)
    return dest


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", ["model.safetensors", "tokenizer.json", "vocab.txt"])
def test_encoder_file_not_matching_its_pin_refuses_to_load(
    tmp_path: Path, cache: Path, name: str
) -> None:
    enc = _copy_encoder(tmp_path / "encoder")
    BuiltinTextClassifier(encoder_dir=enc, cache_dir=cache)  # the intact copy loads
    target = enc / name
    _flip_byte(target, target.stat().st_size // 2)
    with pytest.raises(ModelIntegrityError, match="sha256"):
        BuiltinTextClassifier(encoder_dir=enc, cache_dir=cache)


def test_tampered_artefact_refuses_to_load(tmp_path: Path, cache: Path) -> None:
    weights = tmp_path / "weights"
    shutil.copytree(DEFAULT_WEIGHTS_DIR, weights)
    _flip_byte(weights / "zh_ngram.npz", 100)
    with pytest.raises(ModelIntegrityError, match="sha256"):
        BuiltinTextClassifier(directory=weights, cache_dir=cache)


def test_onnx_cache_is_keyed_and_reused(clf: BuiltinTextClassifier, cache: Path) -> None:
    clf.warm_up()
    path = clf.onnx_path
    assert path.exists() and path.parent == cache
    assert clf.quantization in path.name
    before = path.stat().st_mtime_ns
    again = BuiltinTextClassifier(cache_dir=cache)
    again.warm_up()
    assert again.onnx_path == path and path.stat().st_mtime_ns == before
    assert not list(cache.glob(".build-*"))  # no temporary left behind


def test_onnx_fp32_equals_torch(cache: Path) -> None:
    texts = [normalize(t) for t in HARMFUL_EN + BENIGN_EN] + ["word " * 200]
    onnx = BuiltinTextClassifier(cache_dir=cache, quantization="fp32", backend="onnx")
    torch = BuiltinTextClassifier(cache_dir=cache, backend="torch")
    a = onnx.english_probabilities(texts)
    b = torch.english_probabilities(texts)
    assert np.abs(a - b).max() < 1e-4


def test_packed_sequences_pool_as_if_each_ran_alone(cache: Path) -> None:
    # Packed rows must keep sentences apart (attention within a segment, positions from 0):
    # the ONNX fp32 graph's pooled states equal the torch module's on each sequence alone.
    import torch

    onnx = BuiltinTextClassifier(cache_dir=cache, quantization="fp32", backend="onnx")
    texts = [
        normalize(" ".join([*BENIGN_EN[:3], HARMFUL_EN[0]])),
        normalize(HARMFUL_EN[1]),
        normalize(_benign_text(900) + " " + HARMFUL_EN[2]),
    ]
    seqs: list[list[int]] = []
    owners: list[int] = []
    for i, text in enumerate(texts):
        for seq in onnx._english_sequences(text):
            seqs.append(seq)
            owners.append(i)
    assert len(seqs) > 8 and max(map(len, seqs)) == onnx.spec.window_tokens
    files = read_encoder(encoder_dir(), ("config.json", "model.safetensors"), ENCODER_SHA256)
    module = make_torch_encoder(
        files["config.json"], files["model.safetensors"], onnx.spec, onnx.adapter
    )
    with torch.inference_mode():
        alone = np.stack(
            [module(torch.tensor([s]), torch.ones((1, len(s)), dtype=torch.long))[0] for s in seqs]
        )
    packed = onnx._pooled(seqs, owners)
    assert np.abs(packed - alone).max() < 1e-4


def test_int8_runs_a_short_texts_sentences_as_one_packed_row(cache: Path) -> None:
    clf = BuiltinTextClassifier(cache_dir=cache)
    run = clf._encoder()
    shapes: list[tuple[int, ...]] = []

    def counting(*arrays: np.ndarray) -> np.ndarray:
        shapes.append(arrays[0].shape)
        return run(*arrays)

    clf._run = counting
    text = normalize(" ".join([*BENIGN_EN[:3], HARMFUL_EN[0]]))
    n_tokens = sum(map(len, clf._english_sequences(text)))
    clf.english_probabilities([text, normalize(HARMFUL_EN[1])])
    # One call per text (int8 never mixes texts), the first text's four sentences in one row.
    assert shapes[0] == (1, n_tokens) and len(shapes) == 2


def test_pack_rows_fills_rows_in_order_within_the_limit_and_owner() -> None:
    rows = pack_rows([5, 6, 4, 10, 3, 20, 2], [0, 0, 0, 0, 1, 1, 1], limit=16)
    assert rows == [[0, 1, 2], [3], [4], [5], [6]]
    assert pack_rows([], [], limit=8) == []
    assert pack_rows([3, 3], [0, 0], limit=6) == [[0, 1]]


def test_heavy_libraries_are_imported_lazily() -> None:
    code = (
        "import sys, models.text_builtin, moderation.cli.train, moderation.train_text\n"
        "heavy = {'torch', 'transformers', 'onnxruntime', 'onnx', 'sklearn', 'tokenizers'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


# --- training ------------------------------------------------------------------------------


@pytest.mark.skipif(
    not (DATA / "text").is_dir(), reason=f"{DATA} is not here (set MODERATION_TEST_DATA_DIR)"
)
def test_train_on_a_tiny_subsample_writes_a_model_that_loads(tmp_path: Path) -> None:
    from moderation.train_text import TrainOptions, train

    options = TrainOptions(max_per_set=40, epochs=1.0, quantization="fp32")
    started = time.perf_counter()
    metrics = train(DATA, tmp_path / "a", seed=7, options=options)
    assert time.perf_counter() - started < 60
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["labels"] == list(LABELS)
    assert config["encoder"]["quantization"] == "fp32"
    assert metrics["data"]["cold"] == {"train": 40, "dev": 40}
    assert "auc_offensive" in metrics["dev"]["davidson"]
    model = BuiltinTextClassifier(directory=tmp_path / "a", cache_dir=tmp_path / "cache")
    out = model.classify_batch(["hello", "你好", ""])
    assert [set(s) for s in out] == [set(LABELS)] * 3

    # Seeded: the same run writes the same artefacts, byte for byte.
    train(DATA, tmp_path / "b", seed=7, options=options)
    for name in ("encoder_adapter.npz", "zh_ngram.npz"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
