"""The reviewer console at /console: server-rendered pages, one static script, no CDN.

Every page goes out with a strict Content-Security-Policy (no inline script or style) and
Jinja's autoescaping; the session cookie is HttpOnly and SameSite=Strict, and every POST
carries the session's CSRF token and, when the browser sends one, a same-origin Origin.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jinja2
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy import select
from sqlalchemy.orm import Session

from moderation import (
    console_sessions,
    review_decisions,
    review_detail,
    review_metrics,
    review_queue,
)
from moderation.api.deps import console_rate_limit, get_session, get_settings_dep
from moderation.api.review import media_response
from moderation.console_sessions import ConsoleSession
from moderation.errors import Forbidden, InvalidInput, ModerationError, NotFound, Unauthorized
from moderation.review_decisions import DecisionInput, ReviewAction
from moderation.settings import Settings
from moderation.storage.tables import BankRow

CONSOLE_DIR = Path(__file__).resolve().parent.parent / "console"
COOKIE = "mod_console"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "media-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_MAX_FORM_BYTES = 64 * 1024

# Console requests count against the signed-in key's rate limit, as API requests do.
router = APIRouter(
    prefix="/console", include_in_schema=False, dependencies=[Depends(console_rate_limit(COOKIE))]
)
# Autoescaping on for every template: user-supplied strings are shown, never interpreted.
templates = Jinja2Templates(
    env=jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(CONSOLE_DIR / "templates")), autoescape=True
    )
)
static_files = StaticFiles(directory=str(CONSOLE_DIR / "static"))


def _page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    response = templates.TemplateResponse(request, name, context, status_code=status)
    response.headers.update(PAGE_HEADERS)
    return response


def _to(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers=PAGE_HEADERS)


async def _form(request: Request) -> dict[str, list[str]]:
    body = await request.body()
    if len(body) > _MAX_FORM_BYTES:
        raise InvalidInput("form too large")
    try:
        return parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=64)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput("unreadable form") from exc


def _one(form: dict[str, list[str]], name: str) -> str:
    values = form.get(name) or [""]
    return values[0]


def _same_origin(request: Request) -> None:
    origin = request.headers.get("origin")
    if origin and origin != "null":
        own = f"{request.url.scheme}://{request.url.netloc}"
        parts = urlsplit(origin)
        if f"{parts.scheme}://{parts.netloc}" != own:
            raise Forbidden("cross-origin request refused")


def _current(request: Request, session: Session) -> ConsoleSession | None:
    try:
        return console_sessions.resolve(session, request.cookies.get(COOKIE))
    except Unauthorized:
        return None


async def _posted(
    request: Request, session: Session
) -> tuple[ConsoleSession, dict[str, list[str]]]:
    _same_origin(request)
    current = console_sessions.resolve(session, request.cookies.get(COOKIE))
    form = await _form(request)
    console_sessions.check_csrf(current, _one(form, "csrf"))
    return current, form


def _granted(session: Session, current: ConsoleSession) -> set[str] | None:
    p = current.principal
    return review_queue.granted_queues(session, p.key_id, p.role)


@router.get("", response_class=HTMLResponse)
def home(request: Request, session: Session = Depends(get_session)) -> Response:
    if _current(request, session) is not None:
        return _to("/console/next")
    return _page(request, "sign_in.html")


@router.post("/sign-in")
async def sign_in(
    request: Request,
    session: Session = Depends(get_session),
    settings: Settings = Depends(get_settings_dep),
) -> Response:
    _same_origin(request)
    form = await _form(request)
    try:
        token, _ = console_sessions.sign_in(
            session, _one(form, "key"), settings.review.console_session_hours
        )
    except (Unauthorized, Forbidden) as exc:
        return _page(request, "sign_in.html", status=exc.http_status, error=exc.message)
    # Committed before the browser follows the redirect (see api/review.py's take).
    session.commit()
    response = _to("/console/next")
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(settings.review.console_session_hours * 3600),
        path="/console",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/sign-out")
async def sign_out(request: Request, session: Session = Depends(get_session)) -> Response:
    await _posted(request, session)
    console_sessions.sign_out(session, request.cookies.get(COOKIE))
    session.commit()
    response = _to("/console")
    response.delete_cookie(COOKIE, path="/console")
    return response


@router.get("/next")
def next_item(
    request: Request,
    session: Session = Depends(get_session),
    settings: Settings = Depends(get_settings_dep),
) -> Response:
    """Lease the next item and show it; an empty queue says so."""
    current = _current(request, session)
    if current is None:
        return _to("/console")
    row = review_queue.take_next(
        session,
        current.principal.key_id,
        _granted(session, current),
        lease_seconds=settings.review.lease_seconds,
    )
    session.commit()
    if row is None:
        queues = review_queue.queue_infos(session, _granted(session, current))
        return _page(
            request, "empty.html", me=current.principal, csrf=current.csrf_token, queues=queues
        )
    return _to(f"/console/items/{row.id}")


def _item_page(
    request: Request,
    session: Session,
    current: ConsoleSession,
    item_id: int,
    error: str | None = None,
    status: int = 200,
) -> Response:
    try:
        row = review_queue.get_review_item(session, item_id, _granted(session, current))
    except NotFound:
        return _page(
            request,
            "empty.html",
            status=404,
            me=current.principal,
            csrf=current.csrf_token,
            queues=[],
            missing=True,
        )
    banks = session.execute(
        select(BankRow.name, BankRow.action)
        .where(BankRow.kind.in_(("image", "text")))
        .order_by(BankRow.name)
    ).all()
    return _page(
        request,
        "item.html",
        status=status,
        me=current.principal,
        csrf=current.csrf_token,
        item=review_detail.detail(session, row),
        mine=row.lease_key_id == current.principal.key_id,
        error=error,
        block_banks=[b.name for b in banks if b.action != "allow"],
        allow_banks=[b.name for b in banks if b.action == "allow"],
    )


@router.get("/items/{item_id}")
def item_page(item_id: int, request: Request, session: Session = Depends(get_session)) -> Response:
    current = _current(request, session)
    if current is None:
        return _to("/console")
    return _item_page(request, session, current, item_id)


@router.get("/items/{item_id}/media/{media_index}")
def item_media(
    item_id: int, media_index: int, request: Request, session: Session = Depends(get_session)
) -> Response:
    current = console_sessions.resolve(session, request.cookies.get(COOKIE))
    return media_response(session, item_id, _granted(session, current), media_index, clip=False)


@router.get("/items/{item_id}/clips/{media_index}")
def item_clip(
    item_id: int, media_index: int, request: Request, session: Session = Depends(get_session)
) -> Response:
    current = console_sessions.resolve(session, request.cookies.get(COOKIE))
    return media_response(session, item_id, _granted(session, current), media_index, clip=True)


def _decision_from(form: dict[str, list[str]]) -> DecisionInput:
    chosen = set(form.get("action", []))
    actions: list[ReviewAction] = []
    bank = _one(form, "bank") or None
    allow_bank = _one(form, "allow_bank") or None
    for kind in ("remove", "age_restrict", "approve", "label", "escalate"):
        if kind not in chosen:
            continue
        actions.append(
            ReviewAction(
                type=kind,
                bank=bank if kind == "remove" else allow_bank if kind == "approve" else None,
                label=(_one(form, "label") or None) if kind == "label" else None,
                queue=(_one(form, "escalate_queue") or None) if kind == "escalate" else None,
            )
        )
    return DecisionInput(actions=actions, policy=_one(form, "policy"), note=_one(form, "note"))


@router.post("/items/{item_id}/decision")
async def decide(
    item_id: int, request: Request, session: Session = Depends(get_session)
) -> Response:
    """Decide, then go straight to the next item (submit-and-next)."""
    from pydantic import ValidationError

    current, form = await _posted(request, session)
    try:
        decision = _decision_from(form)
    except ValidationError as exc:
        message = "; ".join(str(e.get("msg", "invalid")) for e in exc.errors())
        return _item_page(request, session, current, item_id, error=message, status=422)
    # A savepoint: a refused decision (bank of the wrong kind, lease lost) changes nothing.
    attempt = session.begin_nested()
    try:
        review_decisions.decide(
            session, current.principal, _granted(session, current), item_id, decision
        )
        attempt.commit()
    except ModerationError as exc:
        attempt.rollback()
        return _item_page(
            request, session, current, item_id, error=exc.message, status=exc.http_status
        )
    session.commit()
    return _to("/console/next")


@router.post("/items/{item_id}/skip")
async def skip(item_id: int, request: Request, session: Session = Depends(get_session)) -> Response:
    current, _ = await _posted(request, session)
    # A lease already gone is fine: the next item is what the reviewer asked for anyway.
    with contextlib.suppress(ModerationError):
        review_queue.skip(session, item_id, current.principal.key_id, _granted(session, current))
    session.commit()
    return _to("/console/next")


def _queue_page(
    request: Request,
    session: Session,
    current: ConsoleSession,
    queue: str,
    *,
    results: dict[str, Any] | None = None,
    error: str | None = None,
    status: int = 200,
) -> Response:
    review_queue.require_queue(_granted(session, current), queue)
    return _page(
        request,
        "queue.html",
        status=status,
        me=current.principal,
        csrf=current.csrf_token,
        queue=queue,
        items=[review_detail.summary(r) for r in review_queue.list_open(session, queue)],
        results=results,
        error=error,
    )


@router.get("/queues/{queue}")
def queue_page(queue: str, request: Request, session: Session = Depends(get_session)) -> Response:
    """A granted queue's open items, to select for a bulk decision."""
    current = _current(request, session)
    if current is None:
        return _to("/console")
    return _queue_page(request, session, current, queue)


@router.post("/queues/{queue}/bulk")
async def bulk_decide(
    queue: str,
    request: Request,
    session: Session = Depends(get_session),
    settings: Settings = Depends(get_settings_dep),
) -> Response:
    """One decision for every selected item; each is decided or refused on its own."""
    from pydantic import ValidationError

    current, form = await _posted(request, session)
    granted = _granted(session, current)
    review_queue.require_queue(granted, queue)
    try:
        decision = _decision_from(form)
        ids = list(dict.fromkeys(int(x) for x in form.get("item", [])))
    except (ValidationError, ValueError) as exc:
        message = (
            "; ".join(str(e.get("msg", "invalid")) for e in exc.errors())
            if isinstance(exc, ValidationError)
            else "bad item selection"
        )
        return _queue_page(request, session, current, queue, error=message, status=422)
    if not ids or len(ids) > settings.review.max_bulk_items:
        message = f"select 1 to {settings.review.max_bulk_items} items"
        return _queue_page(request, session, current, queue, error=message, status=422)
    results: list[dict[str, Any]] = []
    for item_id in ids:
        attempt = session.begin_nested()
        try:
            row = review_queue.get_review_item(session, item_id, granted)
            if row.queue != queue:
                raise NotFound(f"no review item {item_id} in this queue", field="item")
            review_decisions.decide(session, current.principal, granted, item_id, decision)
            attempt.commit()
            results.append({"item_id": item_id, "ok": True})
        except ModerationError as exc:
            attempt.rollback()
            results.append({"item_id": item_id, "ok": False, "error": exc.to_dict()})
    session.commit()
    summary = {"results": results, "decided": sum(r["ok"] for r in results)}
    return _queue_page(request, session, current, queue, results=summary)


@router.get("/metrics")
def metrics_page(request: Request, session: Session = Depends(get_session)) -> Response:
    current = _current(request, session)
    if current is None:
        return _to("/console")
    granted = _granted(session, current)
    return _page(
        request,
        "metrics.html",
        me=current.principal,
        csrf=current.csrf_token,
        queues=review_queue.queue_infos(session, granted),
        per_reviewer=review_metrics.decisions_last_hour(session),
        quality=review_decisions.quality(session) if current.principal.role == "admin" else [],
    )
