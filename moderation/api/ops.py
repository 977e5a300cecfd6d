"""Probes (open, for orchestrators; they reveal nothing) and Prometheus metrics (admin key)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from moderation.api.deps import get_settings_dep, require
from moderation.keys import Principal
from moderation.readiness import readiness
from moderation.settings import Settings

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict[str, Any]:
    """Liveness: the process serves requests. No dependency is checked, so an outage of
    Redis or the database never gets healthy API processes restarted (that is /readyz)."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "a required check failed"}})
async def readyz(settings: Settings = Depends(get_settings_dep)) -> JSONResponse:
    """Readiness: Redis answers a ping, the database a SELECT 1, and at least one worker
    process has announced its models loaded. 503 naming the failed checks otherwise."""
    ready, body = await run_in_threadpool(readiness, settings)
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics")
def metrics(_: Principal = Depends(require("admin"))) -> Response:
    """Prometheus metrics; scrape with an admin key as a bearer token."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
