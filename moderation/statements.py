"""Statements of reasons (DSA Article 17) for restrictions the copyright flow imposes."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel

Restriction = Literal["removal", "restoration"]

# What an uploader can do about a removal (Art. 17(3)(f)): in-platform routes first.
REDRESS = (
    "counter-notice: POST /v1/claims/{claim_id}/counter-notice (DMCA 512(g)); the item is "
    "restored after 10 to 14 business days unless the claimant reports a court action",
    "internal complaint: POST /v1/appeals (DSA Article 20), decided by a person other than "
    "the one who made this decision",
    "out-of-court dispute settlement: a certified body (DSA Article 21)",
    "judicial redress: the courts of the uploader's member state",
)


class StatementOfReasons(BaseModel):
    """The DSA Article 17(3) fields, one statement per restriction."""

    claim_id: str
    content_id: str
    issued_at: str
    # (a) the restriction and its scope
    restriction: Restriction
    territorial_scope: list[str]
    # (b) facts and circumstances relied on
    facts: str
    # (c) whether automated means detected and decided it
    automated_detection: bool
    automated_decision: bool
    # (d)/(e) the legal ground (an illegal-content notice: copyright) and why it applies
    ground: str
    legal_reference: str
    # (f) the redress available
    redress: list[str]


def takedown_statement(
    *,
    claim_id: str,
    content_id: str,
    work_id: str,
    work_title: str,
    territories: list[str],
    claimant: str,
    distance: int | None,
    automated: bool,
    at: datetime,
) -> StatementOfReasons:
    """The statement sent to the uploader when a claim takes an item down."""
    match = f"a perceptual match at distance {distance}" if distance is not None else "a notice"
    how = (
        "verified automatically by a perceptual match and provenance precedence"
        if automated
        else "verified by a human reviewer"
    )
    return StatementOfReasons(
        claim_id=claim_id,
        content_id=content_id,
        issued_at=at.isoformat(),
        restriction="removal",
        territorial_scope=territories or ["worldwide"],
        facts=f"{claimant} notified that this item copies their work {work_id} "
        f"({work_title or 'untitled'}); the notice was {how} ({match}).",
        automated_detection=distance is not None,
        automated_decision=automated,
        ground="illegal content: infringement of copyright (notice under DSA Article 16)",
        legal_reference="Directive 2001/29/EC Art. 2-3; 17 U.S.C. 512(c)",
        redress=[r.replace("{claim_id}", claim_id) for r in REDRESS],
    )
