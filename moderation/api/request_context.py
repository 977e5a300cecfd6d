"""Per-request log context: the request id (the caller's X-Request-ID, checked, or a new one)
bound for everything the request logs or sends, echoed in the response; one log line and a
counter per request."""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from moderation import logs, metrics

HEADER = "x-request-id"
log = logging.getLogger("moderation.api.access")


def _route_of(scope: Scope) -> str:
    """The matched route's template (bounded label values), not the raw path."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class RequestContext:
    """Outermost middleware, so every response (413s included) carries its request id."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        for name, value in scope.get("headers", []):
            if name == HEADER.encode():
                incoming = value.decode("latin-1")
                break
        request_id = logs.accept_request_id(incoming)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [(k, v) for k, v in message.get("headers", []) if k != HEADER.encode()]
                headers.append((HEADER.encode(), request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        token = logs.bind(request_id=request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = _route_of(scope)
            # Set by an endpoint that learns it from the body (POST /v1/moderate).
            content_id = scope.get("state", {}).get("content_id")
            metrics.HTTP_REQUESTS.labels(route=route, status=str(status)).inc()
            # Method, route template and status only: never headers (keys) or query strings.
            log.info(
                "%s %s %d",
                scope.get("method", ""),
                route,
                status,
                extra={
                    "path": scope.get("path", ""),
                    **({"content_id": content_id} if isinstance(content_id, str) else {}),
                    "status": status,
                    "duration_ms": round(1e3 * (time.perf_counter() - started), 2),
                },
            )
            logs.unbind(token)
