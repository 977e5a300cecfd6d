"""Health (open, for probes; it reveals nothing) and Prometheus metrics (admin key)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from sqlalchemy import text

from moderation.api.deps import get_settings_dep, require
from moderation.keys import Principal
from moderation.settings import Settings
from moderation.storage import db

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz(settings: Settings = Depends(get_settings_dep)) -> dict[str, Any]:
    """Liveness plus a database round trip."""
    with db.session_scope(settings.resolved_database_url) as s:
        s.execute(text("SELECT 1"))
    return {"status": "ok"}


@router.get("/metrics")
def metrics(_: Principal = Depends(require("admin"))) -> Response:
    """Prometheus metrics; scrape with an admin key as a bearer token."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
