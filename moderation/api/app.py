"""FastAPI application factory: routers, error mapping, request size limit."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from moderation import __version__, metrics
from moderation.api.request_context import RequestContext
from moderation.errors import InputTooLarge, ModerationError
from moderation.queue_metrics import watch_queues
from moderation.settings import Settings, get_settings
from moderation.task_context import install_publish_hook

log = logging.getLogger(__name__)


class BodySizeLimit:
    """Refuse request bodies over the limit, declared or streamed, before anything parses them."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await _too_large(self.max_bytes)(scope, receive, send)
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise InputTooLarge(f"request body is over {self.max_bytes} bytes")
            return message

        await self.app(scope, limited, send)


def _too_large(limit: int) -> JSONResponse:
    err = InputTooLarge(f"request body is over {limit} bytes")
    return JSONResponse({"error": err.to_dict()}, status_code=err.http_status)


def _field_of(err: dict[str, Any]) -> str:
    loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
    return ".".join(loc)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="Moderation and copyright service",
        version=__version__,
        description="Moderation verdicts, banks of known content, works, claims, review and "
        "provenance receipts. Every route needs `Authorization: Bearer <API key>`.",
    )
    app.state.settings = settings

    @app.exception_handler(ModerationError)
    async def _moderation_error(_: Request, exc: ModerationError) -> JSONResponse:
        metrics.ERRORS.labels(exc.code).inc()
        if exc.http_status >= 500:
            log.warning("%s: %s", exc.code, exc.message, extra={"code": exc.code})
        return JSONResponse(
            {"error": exc.to_dict()}, status_code=exc.http_status, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        metrics.ERRORS.labels("invalid_input").inc()
        errors = exc.errors()
        message = "; ".join(f"{_field_of(e) or 'body'}: {e.get('msg')}" for e in errors)
        body = {"code": "invalid_input", "message": message}
        if errors and _field_of(errors[0]):
            body["field"] = _field_of(errors[0])
        return JSONResponse({"error": body}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        metrics.ERRORS.labels(code).inc()
        return JSONResponse(
            {"error": {"code": code, "message": str(exc.detail)}},
            status_code=exc.status_code,
            headers=exc.headers,
        )

    from moderation.api import admin, banks, moderate, ops, receipts

    app.include_router(moderate.router)
    app.include_router(banks.router)
    app.include_router(admin.router)
    app.include_router(ops.router)
    app.include_router(receipts.router)
    # Human review: the /v1/review API, the console at /console, queue gauges on /metrics.
    from moderation import review_metrics
    from moderation.api import console, review

    app.include_router(review.router)
    app.include_router(console.router)
    app.mount("/console/static", console.static_files, name="console-static")
    review_metrics.register_queue_collector(settings.resolved_database_url)
    # Copyright: rights holders' works and claims, uploaders' appeals.
    from moderation.api import appeals, claims, works

    app.include_router(works.router)
    app.include_router(claims.router)
    app.include_router(appeals.router)
    from moderation.api import dead_letters  # operators: poison messages (issue #9 faults)

    app.include_router(dead_letters.router)
    app.add_middleware(BodySizeLimit, max_bytes=settings.limits.max_payload_bytes)

    @app.middleware("http")
    async def _safe_headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    # Operations: request ids in logs, responses and the tasks sent (added last: outermost,
    # so even a refused body gets one); Celery queue depth on /metrics.
    app.add_middleware(RequestContext)
    install_publish_hook()
    watch_queues(settings.redis_url)

    _document_raw_bodies(app)
    return app


def _document_raw_bodies(app: FastAPI) -> None:
    """Add the item schema for routes that read their body themselves (to map errors once)."""
    from moderation.domain import Item

    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            item = Item.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(item.pop("$defs", {}))
            components["Item"] = item
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]
