"""Banks of known content under /v1/banks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.orm import Session

from models.image_robust import HashVariant
from moderation import audit, banks, hashlist
from moderation.api.deps import get_session, get_settings_dep, require
from moderation.domain import MediaRef
from moderation.errors import InputTooLarge, InvalidInput
from moderation.keys import Principal
from moderation.media import MediaPolicy, load_media
from moderation.pipeline import hash_reference_image, image_limits_from
from moderation.settings import Settings
from moderation.storage import db

router = APIRouter(prefix="/v1/banks", tags=["banks"])
admin = require("admin")
readers = require("admin", "reviewer")


class BankCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    kind: Literal["image", "text", "video"] = "image"
    action: Literal["block", "review", "track", "allow"] = "block"
    threshold: int | None = None
    description: str = Field(default="", max_length=2000)


class BankUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: Literal["block", "review", "track", "allow"] | None = None
    threshold: int | None = None
    enabled: bool | None = None
    description: str | None = Field(default=None, max_length=2000)


class EntryCreate(BaseModel):
    """One of: for an image or video bank, an image inline (`data_b64`) or by `uri`, or a
    ready PDQ hash (`pdq`); for a text bank, a `text` (stored as its SimHash) or a ready
    SimHash (`simhash`, 16 hex digits)."""

    model_config = ConfigDict(extra="forbid")
    data_b64: str | None = None
    uri: str | None = None
    pdq: str | None = None
    text: str | None = None
    simhash: str | None = None
    quality: int | None = Field(default=None, ge=0, le=100)
    note: str = Field(default="", max_length=2000)

    @model_validator(mode="after")
    def _one_source(self) -> EntryCreate:
        sources = (self.data_b64, self.uri, self.pdq, self.text, self.simhash)
        if sum(x is not None for x in sources) != 1:
            raise ValueError("give exactly one of 'data_b64', 'uri', 'pdq', 'text' or 'simhash'")
        return self

    @property
    def signal(self) -> str:
        return "simhash" if self.text is not None or self.simhash is not None else "pdq"


@router.get("")
def list_banks(
    session: Session = Depends(get_session), _: Principal = Depends(readers)
) -> list[dict[str, Any]]:
    return [b.to_dict() for b in banks.list_banks(session)]


@router.post("", status_code=201)
def create_bank(
    body: BankCreate, session: Session = Depends(get_session), who: Principal = Depends(admin)
) -> dict[str, Any]:
    info = banks.create_bank(
        session,
        body.name,
        kind=body.kind,
        action=body.action,
        threshold=body.threshold,
        description=body.description,
    )
    audit.record(
        session,
        who.name,
        "bank.create",
        "bank",
        info.name,
        action=info.action,
        threshold=info.threshold,
    )
    return info.to_dict()


@router.get("/{name}")
def get_bank(
    name: str, session: Session = Depends(get_session), _: Principal = Depends(readers)
) -> dict[str, Any]:
    return banks.get_bank(session, name).to_dict()


@router.patch("/{name}")
def update_bank(
    name: str,
    body: BankUpdate,
    session: Session = Depends(get_session),
    who: Principal = Depends(admin),
) -> dict[str, Any]:
    info = banks.update_bank(session, name, **body.model_dump(exclude_none=True))
    audit.record(
        session, who.name, "bank.update", "bank", name, **body.model_dump(exclude_none=True)
    )
    return info.to_dict()


@router.delete("/{name}", status_code=204)
def delete_bank(
    name: str, session: Session = Depends(get_session), who: Principal = Depends(admin)
) -> None:
    banks.delete_bank(session, name)
    audit.record(session, who.name, "bank.delete", "bank", name)


@router.post("/{name}/entries", status_code=201)
def add_entry(
    name: str,
    body: EntryCreate,
    session: Session = Depends(get_session),
    settings: Settings = Depends(get_settings_dep),
    who: Principal = Depends(admin),
) -> dict[str, Any]:
    bank = banks.get_bank_row(session, name)
    banks.check_entry_signal(bank, body.signal)
    if body.signal == "simhash":
        if body.text is not None:
            value = banks.simhash_of_text(body.text, settings.limits.max_text_chars)
        else:
            value = banks.validate_simhash(body.simhash or "")
        [entry_id] = banks.add_entries(
            session, bank, [banks.EntryInput(value, body.quality, body.note, who.name)]
        )
        audit.record(session, who.name, "bank.entry.add", "bank", name, entry_id=entry_id)
        return {"bank": name, "entry_id": entry_id, "simhash": value, "quality": body.quality}
    if bank.kind == "video" and body.pdq is None:
        from moderation.video import add_video_entry, load_reference

        _, info, frames = load_reference(body.data_b64, body.uri, settings, "entry")
        entry_id = add_video_entry(session, bank, frames, body.note, who.name)
        audit.record(session, who.name, "bank.entry.add", "bank", name, entry_id=entry_id)
        return {
            "bank": name,
            "entry_id": entry_id,
            "frames": len(frames),
            "duration_s": round(info.duration_s, 3),
        }
    references: list[HashVariant] = []
    if body.pdq is not None:
        pdq, quality = banks.validate_pdq(body.pdq), body.quality
    else:
        ref = MediaRef(kind="image", data_b64=body.data_b64, uri=body.uri)
        data = load_media(ref, MediaPolicy.from_settings(settings), field="entry")
        hashes, references = hash_reference_image(data, image_limits_from(settings), "entry")
        pdq, quality = hashes.pdq, hashes.pdq_quality
    [entry_id] = banks.add_entries(
        session, bank, [banks.EntryInput(pdq, quality, body.note, who.name)]
    )
    banks.add_reference_hashes(session, entry_id, references)
    audit.record(session, who.name, "bank.entry.add", "bank", name, entry_id=entry_id)
    return {"bank": name, "entry_id": entry_id, "pdq": pdq, "quality": quality}


@router.get("/{name}/entries")
def list_entries(
    name: str,
    after: int = Query(0, ge=0),
    limit: int = Query(100, ge=1, le=1000),
    session: Session = Depends(get_session),
    _: Principal = Depends(admin),
) -> dict[str, Any]:
    bank = banks.get_bank_row(session, name)
    rows = banks.list_entries(session, bank, after=after, limit=limit)
    return {
        "bank": name,
        "entries": [
            {
                "entry_id": r.id,
                "signal_type": r.signal_type,
                "value": r.value,
                "quality": r.quality,
                "note": r.note,
                "created_at": r.created_at.isoformat(),
            }
            for r in rows
        ],
        "next_after": rows[-1].id if len(rows) == limit else None,
    }


@router.delete("/{name}/entries/{entry_id}", status_code=204)
def remove_entry(
    name: str,
    entry_id: int,
    session: Session = Depends(get_session),
    who: Principal = Depends(admin),
) -> None:
    bank = banks.get_bank_row(session, name)
    banks.remove_entry(session, bank, entry_id)
    audit.record(session, who.name, "bank.entry.remove", "bank", name, entry_id=entry_id)


HashListFormat = Literal["txt", "csv", "jsonl", "hma"]


@router.get("/{name}/export")
def export_bank(
    name: str,
    format: HashListFormat = "txt",
    settings: Settings = Depends(get_settings_dep),
    _: Principal = Depends(admin),
) -> StreamingResponse:
    """The bank's entries as a hash list, in entry order (formats: docs/hashlists.md)."""
    url = settings.resolved_database_url
    with db.session_scope(url) as session:
        banks.get_bank_row(session, name)  # 404 before the response starts

    def lines() -> Iterator[str]:
        # Its own session: the response streams after this handler (and its session) returns.
        with db.session_scope(url) as session:
            bank = banks.get_bank_row(session, name)
            yield from hashlist.format_lines(banks.iter_export_rows(session, bank), format)

    return StreamingResponse(
        lines(),
        media_type=hashlist.MEDIA_TYPES[format],
        headers={"Content-Disposition": f'attachment; filename="{name}.{format}"'},
    )


@router.post("/{name}/import")
async def import_bank(
    name: str,
    request: Request,
    format: HashListFormat | None = Query(
        None, description="Default: detected (JSON lines, CSV with a header, else txt)."
    ),
    skip_bad: bool = Query(
        False, description="Import the good lines and list the bad ones instead of refusing."
    ),
    source: str | None = Query(
        None, max_length=2000, description="Source of entries whose line names none."
    ),
    settings: Settings = Depends(get_settings_dep),
    who: Principal = Depends(admin),
) -> dict[str, Any]:
    """Import a hash list (body: the file). Any bad line refuses the whole list with 422
    naming the lines (``error.detail.errors``) unless ``skip_bad``."""
    body = await request.body()
    if len(body) > settings.limits.max_payload_bytes:
        raise InputTooLarge("hash list is larger than the request limit")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"hash list is not UTF-8 text (byte {exc.start})") from None
    return await run_in_threadpool(
        _import_list, settings, name, text, format, skip_bad, source or who.name, who.name
    )


def _import_list(
    settings: Settings,
    name: str,
    text: str,
    fmt: str | None,
    skip_bad: bool,
    source: str,
    actor: str,
) -> dict[str, Any]:
    with db.session_scope(settings.resolved_database_url) as session:
        return banks.import_hash_list(
            session,
            name,
            text,
            fmt=fmt,
            skip_bad=skip_bad,
            source=source,
            actor=actor,
            max_errors=100,
        )
