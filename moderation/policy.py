"""The versioned policy: maps category scores and bank matches to allow / review / block."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from moderation.domain import DECISION_RANK, BankAction, Decision, Match, Reason, Segment
from moderation.errors import ConfigError

DEFAULT_POLICY_PATH = Path(__file__).parent / "data" / "policy.yaml"


class Thresholds(BaseModel):
    model_config = ConfigDict(extra="forbid")

    review: float = Field(ge=0.0)
    block: float = Field(ge=0.0)

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if self.block < self.review:
            raise ValueError("block threshold must not be below the review threshold")
        return self


class MatchingRules(BaseModel):
    model_config = ConfigDict(extra="forbid")

    review_band: int = Field(default=0, ge=0, le=64)
    bank_actions: dict[str, BankAction] = Field(default_factory=dict)
    # Match queries through border-stripped, rotated, flipped and cropped variants too
    # (models/image_robust.py); off means the plain PDQ hash only.
    variants: bool = True


class VideoRules(BaseModel):
    """How a video item is answered while its frames are analysed on the ``video`` queue."""

    model_config = ConfigDict(extra="forbid")

    # True: the first verdict is at least `review` until the frames are done (nothing goes
    # live unseen). False: the first verdict is what the text and thumbnail decide, and the
    # item's status says `pending` until the final verdict replaces it.
    hold_for_review: bool = True


ImageModelKind = Literal["opennsfw", "onnx_dir", "transformers_dir", "nudenet"]
# `builtin`: the MiniLM encoder and heads that ship with the service (models/text_builtin.py).
TextModelKind = Literal["builtin", "transformers_dir"]
# Kinds loaded from a directory named by `path`; the others ship in a wheel.
DIRECTORY_KINDS: frozenset[str] = frozenset({"onnx_dir", "transformers_dir"})
# A category is a verdict key: lower-case identifier, as the packaged categories are.
CATEGORY_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ModelSpec(BaseModel):
    """What image and text model entries share: a model and how its labels map to categories.

    A category's score from one model is the highest probability of the labels mapped to
    it (e.g. ``violence`` and ``weapon`` both -> ``violence``); labels not mapped are
    computed but ignored. ``path`` (directory kinds) is resolved against the policy file's
    directory when relative. ``sha256`` pins the weights file (``model.onnx`` or
    ``model.safetensors``; for models that ship with the service the pin lives in the code).
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    path: Path | None = None
    enabled: bool = True
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    categories: dict[str, str] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not MODEL_NAME_RE.match(v):
            raise ValueError(
                f"model name {v!r} must be 1-64 letters, digits, '_', '.' or '-' "
                "(it appears in verdicts as image_model:<name> or text_model:<name>)"
            )
        return v

    @field_validator("path")
    @classmethod
    def _resolve(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        base = (info.context or {}).get("base_dir")
        if v is not None and not v.is_absolute() and base is not None:
            return (Path(base) / v).resolve()
        return v

    @field_validator("categories")
    @classmethod
    def _categories(cls, v: dict[str, str]) -> dict[str, str]:
        for label, category in v.items():
            if not label:
                raise ValueError("a model label must not be empty")
            if not category:
                raise ValueError(f"label {label!r} maps to an empty category name")
        return v

    def _check_kind(self, kind: str, *, no_path: bool, no_sha256: str | None) -> None:
        """Kind rules: directory kinds need `path`; `no_path` / `no_sha256` forbid them."""
        if kind in DIRECTORY_KINDS and self.path is None:
            raise ValueError(f"model {self.name!r} of kind {kind} needs a 'path' directory")
        if no_path and self.path is not None:
            raise ValueError(f"model {self.name!r}: kind {kind} takes no 'path'")
        if no_sha256 is not None and self.sha256 is not None:
            raise ValueError(f"model {self.name!r}: kind {kind} takes no 'sha256' ({no_sha256})")

    def labels_by_category(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for label, category in self.categories.items():
            out.setdefault(category, []).append(label)
        return out


class ImageModelSpec(ModelSpec):
    """One image classifier (``image_models:``)."""

    kind: ImageModelKind

    @model_validator(mode="after")
    def _path_fits_kind(self) -> ImageModelSpec:
        self._check_kind(
            self.kind,
            no_path=self.kind == "nudenet",
            no_sha256=None
            if self.kind in DIRECTORY_KINDS
            else "opennsfw's is pinned in the code; use kind onnx_dir for another build of a model",
        )
        return self


class TextModelSpec(ModelSpec):
    """One text classifier (``text_models:``), run on the normalised text of every item.

    ``overall_label`` names the label, if any, meaning "violates any text category" (the
    ``score`` of ``moderation classify text``); it need not be mapped to a category. For the
    ``builtin`` kind the model itself names it, and ``path`` optionally points at another
    directory of its artefacts.
    """

    kind: TextModelKind
    overall_label: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _path_fits_kind(self) -> TextModelSpec:
        self._check_kind(
            self.kind,
            no_path=False,
            no_sha256=None if self.kind in DIRECTORY_KINDS else "its pins live in the code",
        )
        return self


def _check_models(field: str, models: Sequence[ModelSpec], categories: Mapping[str, Any]) -> None:
    """Unique names, and every mapped category known to the policy or a valid new name."""
    names = [m.name for m in models]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{field}: names must be unique; repeated: {dupes}")
    for i, m in enumerate(models):
        for label, category in m.categories.items():
            # A category the policy lists, or a new one (it gets the default thresholds).
            if category not in categories and not CATEGORY_RE.match(category):
                raise ValueError(
                    f"{field}[{i}] ({m.name!r}): label {label!r} maps to {category!r}, "
                    "which is neither a category of this policy nor a valid category name "
                    "(lower-case letters, digits and '_', starting with a letter)"
                )


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str = Field(min_length=1, max_length=64)
    categories: dict[str, Thresholds] = Field(default_factory=dict)
    default: Thresholds = Thresholds(review=0.6, block=0.95)
    matching: MatchingRules = Field(default_factory=MatchingRules)
    video: VideoRules = Field(default_factory=VideoRules)
    image_models: list[ImageModelSpec] = Field(default_factory=list)
    text_models: list[TextModelSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _models_consistent(self) -> Policy:
        _check_models("image_models", self.image_models, self.categories)
        _check_models("text_models", self.text_models, self.categories)
        return self

    def thresholds(self, category: str) -> Thresholds:
        return self.categories.get(category, self.default)

    @property
    def enabled_image_models(self) -> list[ImageModelSpec]:
        return [m for m in self.image_models if m.enabled]

    @property
    def enabled_text_models(self) -> list[TextModelSpec]:
        return [m for m in self.text_models if m.enabled]


@dataclass(frozen=True)
class Signal:
    """A score for one category from one source (keyword list, classifier, ...)."""

    source: str
    category: str
    score: float
    detail: str = ""


@dataclass(frozen=True)
class BankHit:
    """A raw index hit before policy: the bank's own action and threshold."""

    bank: str
    entry_id: int
    distance: int
    threshold: int
    action: BankAction
    owner: str | None = None
    media_index: int = 0
    # Which hash of the query matched (models.image_robust); its margin is in `distance`.
    variant: str = "plain"
    # The review band for this hit's signal when it differs from the policy's (bits of a
    # 256-bit PDQ hash): a 64-bit SimHash hit carries the band scaled to its width.
    review_band: int | None = None
    # A video match: its time-aligned segments (domain.Segment fields) and their best score.
    segments: tuple[dict[str, float], ...] | None = None
    score: float | None = None


@dataclass(frozen=True)
class Outcome:
    decision: Decision
    categories: dict[str, float]
    reasons: list[Reason]
    matches: list[Match]


def load_policy(path: Path | None = None) -> Policy:
    """Read and validate a policy file; a bad file is a ConfigError naming the problem."""
    path = path or DEFAULT_POLICY_PATH
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read policy file {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"policy file {path} is not valid YAML: {exc}") from exc
    try:
        # Relative model paths are relative to the policy file, not the working directory.
        return Policy.model_validate(raw, context={"base_dir": path.parent.resolve()})
    except ValidationError as exc:
        raise ConfigError(f"policy file {path} is invalid: {exc}") from exc


def decide(policy: Policy, signals: list[Signal], hits: list[BankHit]) -> Outcome:
    """Apply the policy to signals and bank hits. Pure: no I/O."""
    categories: dict[str, float] = {}
    for s in signals:
        categories[s.category] = max(categories.get(s.category, 0.0), s.score)

    decision: Decision = "allow"
    reasons: list[Reason] = []

    def escalate(to: Decision) -> None:
        nonlocal decision
        if DECISION_RANK[to] > DECISION_RANK[decision]:
            decision = to

    for s in sorted(signals, key=lambda s: (-s.score, s.category, s.source)):
        t = policy.thresholds(s.category)
        crossed: tuple[Decision, float] | None = (
            ("block", t.block)
            if s.score >= t.block
            else ("review", t.review)
            if s.score >= t.review
            else None
        )
        if crossed is not None:
            escalate(crossed[0])
            reasons.append(
                Reason(
                    source=s.source,
                    category=s.category,
                    score=s.score,
                    threshold=crossed[1],
                    detail=s.detail,
                )
            )

    # An allow-list hit on a media object suppresses every other bank hit on it.
    allowed_media = {
        h.media_index for h in hits if h.action == "allow" and h.distance <= h.threshold
    }
    matches: list[Match] = []
    for h in sorted(hits, key=lambda h: (h.distance, h.bank, h.entry_id)):
        if h.action != "allow" and h.media_index in allowed_media:
            continue
        action: BankAction = policy.matching.bank_actions.get(h.bank, h.action)
        in_band = h.distance > h.threshold
        band = policy.matching.review_band if h.review_band is None else h.review_band
        # Only a block bank has a review band; anything else beyond its threshold is no match.
        if in_band and (action != "block" or h.distance > h.threshold + band):
            continue
        effective: BankAction = "review" if in_band and action == "block" else action
        matches.append(
            Match(
                bank=h.bank,
                entry_id=h.entry_id,
                distance=h.distance,
                action=effective,
                owner=h.owner,
                score=h.score,
                segments=[Segment.model_validate(x) for x in h.segments]
                if h.segments is not None
                else None,
            )
        )
        if effective in ("block", "review"):
            escalate(effective)
            limit = h.threshold + (band if in_band else 0)
            reasons.append(
                Reason(
                    source="hash_match",
                    category=h.bank,
                    score=float(h.distance),
                    threshold=float(limit),
                    detail=f"entry {h.entry_id} at distance {h.distance} (bank action {action}"
                    + (_segment_detail(h.segments[0]) if h.segments else "")
                    + (
                        f", via the {h.variant} variant"
                        if h.variant not in ("plain", "segment")
                        else ""
                    )
                    + (", inside the review band" if in_band else "")
                    + ")",
                )
            )
    return Outcome(decision=decision, categories=categories, reasons=reasons, matches=matches)


def _segment_detail(seg: dict[str, float]) -> str:
    return (
        f", {seg['query_start']:.1f}-{seg['query_end']:.1f} s of the upload matching "
        f"{seg['reference_start']:.1f}-{seg['reference_end']:.1f} s of the reference"
    )
