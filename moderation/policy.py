"""The versioned policy: maps category scores and bank matches to allow / review / block."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from moderation.domain import DECISION_RANK, BankAction, Decision, Match, Reason
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


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str = Field(min_length=1, max_length=64)
    categories: dict[str, Thresholds] = Field(default_factory=dict)
    default: Thresholds = Thresholds(review=0.6, block=0.95)
    matching: MatchingRules = Field(default_factory=MatchingRules)

    def thresholds(self, category: str) -> Thresholds:
        return self.categories.get(category, self.default)


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
        return Policy.model_validate(raw)
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
        # Only a block bank has a review band; anything else beyond its threshold is no match.
        if in_band and (
            action != "block" or h.distance > h.threshold + policy.matching.review_band
        ):
            continue
        effective: BankAction = "review" if in_band and action == "block" else action
        matches.append(
            Match(
                bank=h.bank,
                entry_id=h.entry_id,
                distance=h.distance,
                action=effective,
                owner=h.owner,
            )
        )
        if effective in ("block", "review"):
            escalate(effective)
            limit = h.threshold + (policy.matching.review_band if in_band else 0)
            reasons.append(
                Reason(
                    source="hash_match",
                    category=h.bank,
                    score=float(h.distance),
                    threshold=float(limit),
                    detail=f"entry {h.entry_id} at distance {h.distance} (bank action {action}"
                    + (", inside the review band" if in_band else "")
                    + ")",
                )
            )
    return Outcome(decision=decision, categories=categories, reasons=reasons, matches=matches)
