"""Rights holders' reference works: an entry in the holder's reference bank plus a provenance leaf.

Each holder gets one bank per (kind, policy), named from the holder's API key name, so the
bank's action *is* the holder's policy (``block``, ``review``, ``track``) and upload-time
matching applies it through the ordinary policy path (``policy.decide``; the policy file's
``matching.bank_actions`` can still override it). A bank entry's ``source`` is
``work:<id>``, which is how a match names its work.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from models.image_robust import HashVariant
from moderation import audit, banks
from moderation.domain import Match, MediaRef, Verdict
from moderation.errors import NotFound
from moderation.media import MediaPolicy, load_media
from moderation.provenance import register_leaf
from moderation.runtime import Runtime
from moderation.settings import Settings
from moderation.storage.tables import BankRow, ClaimRow, WorkRow, utcnow

WorkKind = Literal["image", "video", "text"]
WorkPolicy = Literal["block", "review", "track"]
SOURCE_PREFIX = "work:"
_SLUG = re.compile(r"[^A-Za-z0-9_.-]+")
# Upload-time match -> the claim state the holder's dashboard shows.
UPLOAD_STATE = {"block": "blocked", "review": "review", "track": "tracked"}


class WorkCreate(BaseModel):
    """A work to register: its kind, the holder's policy, and exactly one content source."""

    model_config = ConfigDict(extra="forbid")

    kind: WorkKind
    title: str = Field(default="", max_length=512)
    policy: WorkPolicy = "block"
    # ISO 3166-1 alpha-2 codes where the holder owns the rights; empty: worldwide.
    territories: list[str] = Field(default_factory=list, max_length=300)
    data_b64: str | None = None
    uri: str | None = None
    text: str | None = None
    pdq: str | None = None

    @field_validator("territories")
    @classmethod
    def _codes(cls, value: list[str]) -> list[str]:
        out = []
        for code in value:
            if not re.fullmatch(r"[A-Za-z]{2}", code):
                raise ValueError(f"territory {code!r} is not a two-letter ISO 3166-1 code")
            out.append(code.upper())
        return sorted(set(out))

    @model_validator(mode="after")
    def _one_source(self) -> WorkCreate:
        given = [n for n in ("data_b64", "uri", "text", "pdq") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'data_b64', 'uri', 'text' or 'pdq'")
        if self.kind == "text" and self.text is None:
            raise ValueError("a text work needs 'text'")
        if self.kind != "text" and self.text is not None:
            raise ValueError(f"an {self.kind} work needs 'data_b64', 'uri' or 'pdq', not 'text'")
        if self.kind == "video" and self.pdq is not None:
            raise ValueError("a video work needs the video itself ('data_b64' or 'uri')")
        return self


def bank_name_for(owner: str, kind: str, policy: str) -> str:
    """The holder's reference bank for ``kind`` and ``policy``: readable and collision-free."""
    slug = _SLUG.sub("-", owner).strip("-.")[:40] or "holder"
    digest = hashlib.sha256(owner.encode()).hexdigest()[:8]
    return f"works.{slug}-{digest}.{kind}.{policy}"


def holder_bank(session: Session, owner: str, kind: str, policy: str) -> BankRow:
    name = bank_name_for(owner, kind, policy)
    row = session.scalar(select(BankRow).where(BankRow.name == name))
    if row is None:
        banks.create_bank(
            session,
            name,
            kind=kind,
            action=policy,
            owner=owner,
            description=f"reference works of {owner} ({policy})",
        )
        row = banks.get_bank_row(session, name)
    return row


def register_work(
    session: Session,
    settings: Settings,
    owner: str,
    body: WorkCreate,
    *,
    now: datetime | None = None,
) -> WorkRow:
    """Fingerprint the work, add it to the holder's bank and queue its provenance leaf."""
    work_id = "wrk_" + secrets.token_hex(12)
    bank = holder_bank(session, owner, body.kind, body.policy)
    source = SOURCE_PREFIX + work_id
    hashes: list[dict[str, object]] = []
    perceptual: list[tuple[str, str]] = []
    if body.kind == "text":
        text = body.text or ""
        value = banks.simhash_of_text(text, settings.limits.max_text_chars)
        [entry_id] = banks.add_entries(session, bank, [banks.EntryInput(value, None, "", source)])
        sha256 = hashlib.sha256(text.encode()).hexdigest()
        hashes.append({"signal": "simhash", "value": value, "at_ms": None})
    elif body.kind == "video":
        from moderation.video import add_video_entry, load_reference

        field = "data_b64" if body.data_b64 else "uri"
        data, _, frames = load_reference(body.data_b64, body.uri, settings, field)
        entry_id = add_video_entry(session, bank, frames, body.title, source)
        sha256 = hashlib.sha256(data).hexdigest()
        hashes.extend(
            {"signal": "pdq", "value": f.pdq, "at_ms": round(f.t * 1000)}
            for f in frames
            if f.variant == "plain" and f.quality >= 25
        )
    else:
        from moderation.pipeline import hash_reference_image, image_limits_from

        if body.pdq is not None:
            pdq, quality = banks.validate_pdq(body.pdq), None
            variants: list[HashVariant] = []
            sha256 = hashlib.sha256(pdq.encode()).hexdigest()
        else:
            ref = MediaRef(kind="image", data_b64=body.data_b64, uri=body.uri)
            field = "data_b64" if body.data_b64 else "uri"
            data = load_media(ref, MediaPolicy.from_settings(settings), field=field)
            image_hashes, variants = hash_reference_image(data, image_limits_from(settings), field)
            pdq, quality = image_hashes.pdq, image_hashes.pdq_quality
            sha256 = hashlib.sha256(data).hexdigest()
        [entry_id] = banks.add_entries(
            session, bank, [banks.EntryInput(pdq, quality, body.title, source)]
        )
        banks.add_reference_hashes(session, entry_id, variants)
        hashes.append({"signal": "pdq", "value": pdq, "at_ms": None})
        hashes.extend({"signal": "pdq", "value": v.pdq, "at_ms": None} for v in variants)
        perceptual.append(("pdq", pdq))
    row = WorkRow(
        id=work_id,
        owner=owner,
        kind=body.kind,
        title=body.title,
        policy=body.policy,
        territories=body.territories,
        bank=bank.name,
        entry_id=entry_id,
        sha256=sha256,
        hashes=hashes,
        status="active",
        created_at=now or utcnow(),
    )
    session.add(row)
    register_leaf(session, subject_id=work_id, owner=owner, sha256=sha256, perceptual=perceptual)
    audit.record(session, owner, "work.register", "work", work_id, bank=bank.name)
    session.flush()
    return row


def get_work(session: Session, work_id: str, owner: str | None) -> WorkRow:
    """The work, if it is ``owner``'s (None: any owner, for admins); NotFound otherwise."""
    row = session.get(WorkRow, work_id)
    if row is None or (owner is not None and row.owner != owner):
        # The same answer as for an unknown id: others' works are not revealed.
        raise NotFound(f"no work {work_id!r}", field="work_id")
    return row


def list_works(session: Session, owner: str | None, *, limit: int = 100) -> list[WorkRow]:
    query = select(WorkRow).where(WorkRow.status == "active").order_by(WorkRow.created_at.desc())
    if owner is not None:
        query = query.where(WorkRow.owner == owner)
    return list(session.scalars(query.limit(limit)))


def remove_work(session: Session, work_id: str, owner: str | None, actor: str) -> None:
    """Take the work out of matching; its claims and provenance stay on record."""
    row = get_work(session, work_id, owner)
    if row.status == "removed":
        return
    bank = banks.get_bank_row(session, row.bank)
    # Already gone when shared with an identical earlier work or removed by an admin.
    with contextlib.suppress(NotFound):
        banks.remove_entry(session, bank, row.entry_id)
    row.status = "removed"
    audit.record(session, actor, "work.remove", "work", work_id)


def work_to_dict(row: WorkRow) -> dict[str, object]:
    return {
        "id": row.id,
        "owner": row.owner,
        "kind": row.kind,
        "title": row.title,
        "policy": row.policy,
        "territories": list(row.territories or []),
        "bank": row.bank,
        "entry_id": row.entry_id,
        "sha256": row.sha256,
        "status": row.status,
        "created_at": row.created_at.isoformat(),
        "receipt": f"/v1/receipts/{row.id}",
    }


def works_by_entry(session: Session, entry_ids: Iterable[int]) -> dict[int, WorkRow]:
    ids = sorted(set(entry_ids))
    if not ids:
        return {}
    rows = session.scalars(
        select(WorkRow).where(WorkRow.entry_id.in_(ids), WorkRow.status == "active")
    )
    out: dict[int, WorkRow] = {}
    for row in rows:
        out.setdefault(row.entry_id, row)
    return out


def name_works_of(rt: Runtime, matches: Sequence[Match]) -> list[Match]:
    """:func:`name_works` in its own session; no query when no match is on a works bank."""
    if not any(m.bank.startswith("works.") for m in matches):
        return list(matches)
    with rt.session() as s:
        return name_works(s, matches)


def name_works(session: Session, matches: Sequence[Match]) -> list[Match]:
    """The matches with ``work_id`` set on those that hit a registered work's entry."""
    owned = [m for m in matches if m.bank.startswith("works.")]
    if not owned:
        return list(matches)
    found = works_by_entry(session, (m.entry_id for m in owned))
    out = []
    for m in matches:
        work = found.get(m.entry_id) if m.bank.startswith("works.") else None
        out.append(m.model_copy(update={"work_id": work.id}) if work is not None else m)
    return out


def record_upload_matches(
    session: Session, verdict: Verdict, *, now: datetime | None = None
) -> int:
    """Put each work an upload matched on its holder's dashboard (one row per work and item);
    a video's final verdict updates the row its first verdict left."""
    count = 0
    for m in verdict.matches:
        if m.work_id is None:
            continue
        work = session.get(WorkRow, m.work_id)
        if work is None:
            continue
        detail: dict[str, object] = {"distance": m.distance, "action": m.action, "bank": m.bank}
        if m.segments:
            detail["segments"] = [s.model_dump() for s in m.segments]
        existing = session.scalar(
            select(ClaimRow).where(
                ClaimRow.work_id == work.id,
                ClaimRow.content_id == verdict.content_id,
                ClaimRow.origin == "upload",
            )
        )
        state = UPLOAD_STATE.get(m.action, "tracked")
        if existing is not None:
            existing.match, existing.state = detail, state
            continue
        session.add(
            ClaimRow(
                id="clm_" + secrets.token_hex(12),
                owner=work.owner,
                work_id=work.id,
                content_id=verdict.content_id,
                origin="upload",
                state=state,
                notice={},
                verification={},
                match=detail,
                received_at=now or utcnow(),
            )
        )
        count += 1
    return count
