"""POST /v1/moderate and GET /v1/items/{content_id}."""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from moderation import logs, metrics
from moderation.api.deps import get_session, get_settings_dep, require
from moderation.claims import item_restriction
from moderation.domain import Verdict
from moderation.errors import InvalidInput, NotFound, http_status_for_code
from moderation.keys import Principal
from moderation.queue import moderate_via_queue
from moderation.settings import Settings
from moderation.storage.tables import ItemRow
from moderation.verdicts import load_verdict
from moderation.video_jobs import job_status

router = APIRouter(prefix="/v1", tags=["moderation"])


@router.post(
    "/moderate",
    response_model=Verdict,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Item"}}},
        }
    },
    responses={413: {"description": "input too large"}, 422: {"description": "invalid input"}},
)
async def moderate(
    request: Request,
    settings: Settings = Depends(get_settings_dep),
    _: Principal = Depends(require("service", "admin")),
) -> Any:
    """Moderate one item synchronously through the `moderation.moderate` task."""
    started = time.perf_counter()
    try:
        payload = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}") from None
    if isinstance(payload, dict) and isinstance(payload.get("content_id"), str):
        # For this request's log lines (unbound with the request id by the middleware), and
        # for its access line (the middleware reads request.state).
        content_id = payload["content_id"][: settings.limits.max_id_chars]
        logs.bind(content_id=content_id)
        request.state.content_id = content_id
    result: dict[str, Any] = await run_in_threadpool(
        moderate_via_queue, payload, timeout=settings.api_result_timeout_s
    )
    metrics.MODERATE_LATENCY.observe(time.perf_counter() - started)
    if "error" in result:
        code = result["error"].get("code", "internal_error")
        metrics.ERRORS.labels(code).inc()
        return JSONResponse(result, status_code=http_status_for_code(code))
    metrics.VERDICTS.labels(result.get("decision", "unknown")).inc()
    return JSONResponse(result)


@router.get("/items/{content_id}")
def get_item(
    content_id: str,
    session: Session = Depends(get_session),
    _: Principal = Depends(require("service", "reviewer", "admin")),
) -> dict[str, Any]:
    """An item's status (``pending`` while its videos are analysed, with their progress under
    ``video``) and its verdict: the first one, then the final one."""
    item = session.get(ItemRow, content_id)
    if item is None:
        raise NotFound(f"no item {content_id!r}", field="content_id")
    verdict = load_verdict(session, content_id)
    restriction = item_restriction(session, content_id)
    return {
        "content_id": item.content_id,
        "uploader_id": item.uploader_id,
        "status": item.status,
        "attempts": item.attempts,
        "error": {"code": item.error_code, "message": item.error_message}
        if item.status == "failed"
        else None,
        "received_at": item.received_at.isoformat(),
        "video": job_status(session, content_id),
        "verdict": None if verdict is None else verdict.model_dump(),
        # Copyright (moderation.claims): a takedown keeping the item offline, with its
        # statement of reasons; null when it is online.
        "removed": restriction is not None,
        "restriction": restriction,
    }
