"""Domain types of the public contracts: the item sent for moderation and the verdict."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Decision = Literal["allow", "review", "block"]
BankAction = Literal["block", "review", "track", "allow"]
MediaKind = Literal["image", "video"]

DECISION_RANK: dict[str, int] = {"allow": 0, "review": 1, "block": 2}


class MediaRef(BaseModel):
    """One media object of an item, given by URI or inline as base64."""

    model_config = ConfigDict(extra="forbid")

    kind: MediaKind
    uri: str | None = None
    data_b64: str | None = None

    @model_validator(mode="after")
    def _exactly_one_source(self) -> MediaRef:
        if (self.uri is None) == (self.data_b64 is None):
            raise ValueError("give exactly one of 'uri' or 'data_b64'")
        return self


class Item(BaseModel):
    """An upload to moderate: the argument of the `moderation.moderate` task."""

    model_config = ConfigDict(extra="forbid")

    content_id: str = Field(min_length=1)
    uploader_id: str = Field(min_length=1)
    text: str | None = None
    media: list[MediaRef] = Field(default_factory=list)
    context: dict[str, Any] = Field(default_factory=dict)


class Reason(BaseModel):
    """Which signal, with which score against which threshold, moved the decision."""

    source: str
    category: str
    score: float
    threshold: float
    detail: str = ""


class Segment(BaseModel):
    """Where a video match sits: seconds in the upload and in the reference."""

    query_start: float
    query_end: float
    reference_start: float
    reference_end: float
    score: float


class Match(BaseModel):
    """A bank entry that an item's media or text matched."""

    bank: str
    entry_id: int
    distance: int
    action: BankAction
    owner: str | None = None
    # Video bank matches only (left out of the JSON of every other match): how well the
    # upload matched in time, 0..1, and each part of it that plays part of the reference.
    score: float | None = Field(default=None, exclude_if=lambda v: v is None)
    segments: list[Segment] | None = Field(default=None, exclude_if=lambda v: v is None)
    # A rights holder's reference work this entry belongs to (moderation.works), if any.
    work_id: str | None = Field(default=None, exclude_if=lambda v: v is None)


class Verdict(BaseModel):
    """The service's answer for one item."""

    content_id: str
    decision: Decision
    categories: dict[str, float] = Field(default_factory=dict)
    reasons: list[Reason] = Field(default_factory=list)
    matches: list[Match] = Field(default_factory=list)
    policy_version: str
    latency_ms: float = 0.0
