"""The reviewer console in a real browser: Playwright driving Debian's chromium (installed by
.ci/run when missing; never `playwright install`). Screenshots go to test-artifacts/."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from moderation.keys import create_key
from moderation.storage.db import session_scope
from tests.conftest import REQUIRE_ALL, free_port, wait_http
from tests.review_helpers import queued_item, unique_picture

CHROMIUM = os.environ.get("MODERATION_TEST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def _browser_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e .[dev])"
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        return f"chromium not found at {CHROMIUM} (apt-get install chromium)"
    return None


@pytest.fixture(scope="module")
def console_url(database_url: str) -> Iterator[str]:
    """The real API with the console, served by uvicorn on a loopback port."""
    import uvicorn

    from moderation.api.app import create_app
    from moderation.settings import get_settings

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(get_settings()), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/healthz")
    yield base
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    missing = _browser_missing()
    if missing:
        if REQUIRE_ALL:
            pytest.fail(f"MODERATION_TEST_REQUIRE_ALL is set but {missing}")
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        yield chromium
        chromium.close()


def reviewer_key(database_url: str, name: str, queue: str) -> str:
    from moderation import review_queue

    with session_scope(database_url) as s:
        secret, principal = create_key(s, "reviewer", name)
        review_queue.grant(s, principal.key_id, queue)
    return secret


def sign_in(browser: Any, base: str, secret: str) -> Any:
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("dialog", lambda dialog: errors.append(f"dialog: {dialog.message}"))
    page.errors = errors
    page.goto(base + "/console")
    page.fill("#key", secret)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    return page


def shown_content_id(page: Any) -> str | None:
    page.wait_for_load_state()
    if page.locator("#empty").count():
        return None
    return str(page.locator("#item").get_attribute("data-content-id"))


def wait_filter(page: Any, *, blurred: bool) -> None:
    """Poll from Python: the page's CSP forbids the eval that wait_for_function uses."""
    deadline = time.monotonic() + 5
    while ("blur" in filter_of(page)) != blurred:
        assert time.monotonic() < deadline, filter_of(page)
        time.sleep(0.05)


def filter_of(page: Any) -> str:
    return str(page.eval_on_selector("img[data-media]", "el => getComputedStyle(el).filter"))


def test_keyboard_review_blurred_media_and_submit_and_next(
    browser: Any, console_url: str, database_url: str, uid: str
) -> None:
    q = f"category:pw{uid}"
    # Two items; the more severe comes first.
    first = queued_item(
        database_url, f"pw-1-{uid}", category=f"pw{uid}", score=0.9, picture=unique_picture(uid)
    )
    second = queued_item(database_url, f"pw-2-{uid}", category=f"pw{uid}", score=0.3)
    page = sign_in(browser, console_url, reviewer_key(database_url, f"pw-rev-{uid}", q))
    page.wait_for_url(f"**/console/items/{first.id}")
    assert shown_content_id(page) == first.content_id

    img = page.locator("img[data-media]")
    img.wait_for()
    deadline = time.monotonic() + 5
    while not page.eval_on_selector("img[data-media]", "el => el.naturalWidth > 0"):
        assert time.monotonic() < deadline, "the preview did not load"
        time.sleep(0.05)
    assert "blur" in filter_of(page) and "grayscale" in filter_of(page)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "console-blurred.png"), full_page=True)
    page.keyboard.press("r")
    wait_filter(page, blurred=False)  # after the short transition
    assert filter_of(page) == "none"
    page.keyboard.press("r")
    wait_filter(page, blurred=True)
    page.keyboard.press("r")
    wait_filter(page, blurred=False)

    # Remove with a reason, keyboard only: x ticks "remove" and focuses the reason field.
    page.keyboard.press("x")
    assert page.is_checked("#act-remove")
    page.keyboard.type("violence.graphic")
    page.screenshot(path=str(ARTIFACTS / "console.png"), full_page=True)
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/console/items/{second.id}")
    assert shown_content_id(page) == second.content_id
    assert not page.errors, page.errors

    from moderation.review_decisions import decisions_for

    with session_scope(database_url) as s:
        (d,) = decisions_for(s, first.content_id)
        assert (d.outcome, d.policy, d.reviewer) == ("remove", "violence.graphic", f"pw-rev-{uid}")


def test_two_reviewers_in_parallel_never_see_the_same_item(
    browser: Any, console_url: str, database_url: str, uid: str
) -> None:
    q = f"category:pair{uid}"
    ids = {
        queued_item(database_url, f"pair-{uid}-{i}", category=f"pair{uid}", score=i / 10).content_id
        for i in range(6)
    }
    pages = [
        sign_in(browser, console_url, reviewer_key(database_url, f"pair-{n}-{uid}", q))
        for n in ("a", "b")
    ]
    seen: dict[str, list[str]] = {"a": [], "b": []}
    current = {name: shown_content_id(p) for name, p in zip(seen, pages, strict=True)}
    deadline = time.monotonic() + 60
    while any(current.values()) and time.monotonic() < deadline:
        # Both hold an item at the same moment: never the same one.
        live = [c for c in current.values() if c]
        assert len(live) == len(set(live)), current
        for (name, page), cid in zip(
            zip(seen, pages, strict=True), list(current.values()), strict=True
        ):
            if cid is None:
                continue
            seen[name].append(cid)
            page.keyboard.press("a")
            page.keyboard.type("no-violation")
            with page.expect_navigation():
                page.keyboard.press("Enter")
            current[name] = shown_content_id(page)
    assert not set(seen["a"]) & set(seen["b"]), seen
    assert set(seen["a"]) | set(seen["b"]) == ids
    assert seen["a"] and seen["b"]


def test_html_and_script_in_item_text_show_as_text(
    browser: Any, console_url: str, database_url: str, uid: str
) -> None:
    q = f"category:xss{uid}"
    hostile = (
        '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
        '<b id="bold">bold?</b> "quotes" &amp; </pre><svg onload="window.__pwned=3">'
    )
    queued_item(database_url, f"xss-{uid}", category=f"xss{uid}", text=hostile, uploader=hostile)
    page = sign_in(browser, console_url, reviewer_key(database_url, f"xss-rev-{uid}", q))
    page.wait_for_selector("#item-text")
    assert page.text_content("#item-text") == hostile
    assert page.evaluate("window.__pwned === undefined")
    assert page.locator("#bold").count() == 0
    assert page.locator("svg").count() == 0
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "console-escaped-text.png"), full_page=True)
    assert not page.errors, page.errors


def test_video_is_muted_blurred_and_speed_controlled(
    browser: Any, console_url: str, database_url: str, uid: str
) -> None:
    vs = pytest.importorskip("moderation.video_synth")
    from moderation.storage.tables import ReviewClipRow, ReviewMediaRow
    from tests.review_helpers import jpeg_bytes

    q = f"category:vid{uid}"
    row = queued_item(database_url, f"vid-{uid}", category=f"vid{uid}")
    script = vs.reference_scripts(1, 3.0, seed=5, size=(320, 180))[0]
    with session_scope(database_url) as s:
        s.add(
            ReviewMediaRow(
                content_id=row.content_id,
                media_index=0,
                kind="video",
                jpeg=jpeg_bytes(unique_picture(uid)),
            )
        )
        s.add(
            ReviewClipRow(
                content_id=row.content_id,
                media_index=0,
                mime="video/mp4",
                data=vs.make_video(script, preset="ultrafast"),
            )
        )
    page = sign_in(browser, console_url, reviewer_key(database_url, f"vid-rev-{uid}", q))
    video = page.locator("video[data-media]")
    video.wait_for()
    assert page.eval_on_selector("video[data-media]", "v => v.muted") is True
    style = page.eval_on_selector("video[data-media]", "v => getComputedStyle(v).filter")
    assert "blur" in style and "grayscale" in style
    page.select_option("#speed", "2")
    assert page.eval_on_selector("video[data-media]", "v => v.playbackRate") == 2
    page.keyboard.press("r")
    assert "blurred" not in (video.get_attribute("class") or "")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "console-video.png"), full_page=True)
    assert not page.errors, page.errors
