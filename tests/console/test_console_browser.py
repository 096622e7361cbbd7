"""The operator console in a real browser (Debian's Chromium driven by Playwright) against a running relay.

The relay runs in process with its dispatcher (`start_stack`), delivering to a real receiver on 127.0.0.1
that checks signatures with `standardwebhooks`. The screenshots in docs/img/ are taken here (`CONSOLE_SCREENSHOTS=1`).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from conftest import Stack, start_stack, stop_stack
from helpers import HUB_TOKEN, WHSEC, base_config, sample_event, until
from standardwebhooks import Webhook

from relay.store import DeliveryFilter

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
ADMIN_TOKEN = "console-admin-token-0123456789"
VIEWER_TOKEN = "console-viewer-token-0123456789"
ANSWER = '{"error": "inventory database is read-only (maintenance until 10:30)"}'
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"


def screenshot_dir(tmp_path: Path) -> Path:
    """docs/img/ when asked (`CONSOLE_SCREENSHOTS=1 pytest …` refreshes the docs' images), else a temp dir,
    so that a test run leaves the checkout as it was."""
    return DOCS_IMG if os.environ.get("CONSOLE_SCREENSHOTS") == "1" else tmp_path


@dataclass
class Receiver:
    """A subscriber that answers 503 with an explanation until `fixed`; keeps what it verified."""

    fixed: bool = False
    verified_ids: list[str] = field(default_factory=list)
    url: str = ""
    runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        Webhook(WHSEC).verify(body, dict(request.headers))  # raises: an unsigned request gets a 500
        if not self.fixed:
            return web.Response(status=503, text=ANSWER, content_type="application/json")
        self.verified_ids.append(request.headers["webhook-id"])
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hooks/erp", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hooks/erp"


@dataclass
class Console:
    stack: Stack
    receiver: Receiver
    base: str


@pytest.fixture
async def console(tmp_path: Path) -> AsyncIterator[Console]:
    receiver = Receiver()
    await receiver.start()
    data = base_config(
        tmp_path,
        admin={"tokens": [{"name": "ops-alice", "token": ADMIN_TOKEN}], "viewer_tokens": [VIEWER_TOKEN]},
        subscribers=[
            {
                "name": "storefront",
                "url": receiver.url,
                "secrets": [WHSEC],
                "allow_private_network": True,
                "timeout": "2s",
                # One attempt, then an hour's wait: only "Retry now" can deliver it within the test.
                "retry": {"schedule": ["1h"], "max_age": "3d"},
            }
        ],
    )
    stack = await start_stack(tmp_path, data)
    yield Console(stack, receiver, str(stack.client.make_url("/ui")))
    await stop_stack(stack)
    assert receiver.runner is not None
    await receiver.runner.cleanup()


def _chromium_present() -> bool:
    return os.path.exists(CHROMIUM)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    if not _chromium_present():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (`make test` does)")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        await b.close()


class PageProblems:
    """Console errors, uncaught exceptions and failed requests of one page (each page must have none)."""

    def __init__(self, page: Any) -> None:
        self.problems: list[str] = []
        page.on("console", lambda m: self.problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        page.on("requestfailed", self._failed)
        page.on("response", lambda r: self.problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)

    def _failed(self, request: Any) -> None:
        # A navigation cancels the previous page's loads still under way (the icon): not a fault of a page.
        if request.failure != "net::ERR_ABORTED":
            self.problems.append(f"request failed: {request.url} {request.failure}")


async def push(stack: Stack, event: dict[str, Any]) -> None:
    resp = await stack.client.post(
        "/v1/sources/hub/events", json=event, headers={"Authorization": f"Bearer {HUB_TOKEN}"}
    )
    assert resp.status == 202, await resp.text()


async def sign_in(page: Any, base: str, token: str) -> None:
    await page.goto(base + "/")
    assert "/ui/signin" in page.url  # no session: the sign-in page first
    await page.get_by_label("Admin token").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(base + "/")


async def test_an_operator_finds_a_failing_delivery_reads_the_answer_fixes_and_retries(
    console: Console, browser: Any, tmp_path: Path
) -> None:
    stack, receiver = console.stack, console.receiver
    await push(stack, sample_event("order/synced", "evt-console-1", orderNumber="SO-4711"))
    await push(stack, sample_event("order/synced", "evt-console-2", orderNumber="SO-4712"))

    async def first_attempt_failed() -> bool:
        resp = await stack.client.get(
            "/v1/admin/deliveries",
            params={"event_id": "evt-console-1"},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        body = await resp.json()
        return bool(body) and body[0]["attempts"] == 1

    await until(first_attempt_failed, timeout=10)

    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    problems = PageProblems(page)
    await sign_in(page, console.base, ADMIN_TOKEN)
    for label in ("Overview", "Events", "Deliveries", "Dead letters", "Subscribers", "Sources", "Quarantine"):
        assert await page.get_by_role("link", name=label, exact=True).count() == 1

    # Find the event by its business key, newest first.
    await page.get_by_role("link", name="Events", exact=True).click()
    await page.get_by_label("Key").fill("SO-4711")
    await page.get_by_role("button", name="Search").click()
    rows = page.locator("tbody tr")
    assert await rows.count() == 1
    await page.get_by_role("link", name="evt-console-1").click()
    assert "SO-4711" in await page.locator("pre.doc").first.inner_text()

    # Its failing delivery: the subscriber's own words are in the attempts, and a next attempt is planned.
    await page.locator("tbody tr").first.get_by_role("link").first.click()
    attempts = page.locator("table.attempts")
    assert "HTTP 503" in await attempts.inner_text()
    assert "inventory database is read-only (maintenance until 10:30)" in await attempts.inner_text()
    assert "(in " in await page.locator("#next-attempt").inner_text()  # about an hour ahead (±20 % jitter)
    shots = screenshot_dir(tmp_path)
    await page.screenshot(path=str(shots / "console-delivery.png"), full_page=True)
    delivery_url = page.url

    # The subscriber is fixed; Retry now delivers at once instead of in an hour.
    receiver.fixed = True
    await page.get_by_role("button", name="Retry now").click()
    await page.wait_for_url(delivery_url)
    assert "is due now" in await page.locator(".flash").inner_text()

    async def delivered() -> bool:
        await page.reload()
        return "delivered" in await page.locator("h1 .pill").inner_text()

    await until(delivered, timeout=10, interval=0.2)
    assert "evt-console-1" in receiver.verified_ids
    assert "HTTP 204" in await page.locator("table.attempts").inner_text()

    # Every page renders without a console error or a failed request.
    for path in ("/", "/events", "/deliveries", "/dead", "/subscribers", "/sources", "/quarantine", "/replay"):
        await page.goto(console.base + path)
        assert await page.locator("h1").count() == 1
    await page.goto(console.base + "/")
    await page.wait_for_timeout(5500)  # one tick of the overview's live refresh (it runs every 5 s)
    await page.screenshot(path=str(shots / "console-overview.png"), full_page=True)
    assert problems.problems == []
    await context.close()


async def test_posts_without_the_sessions_csrf_token_are_refused(console: Console, browser: Any) -> None:
    await push(console.stack, sample_event("order/synced", "evt-csrf-1"))
    context = await browser.new_context()
    page = await context.new_page()
    await sign_in(page, console.base, ADMIN_TOKEN)
    cookies = {c["name"]: c["value"] for c in await context.cookies()}
    async with aiohttp.ClientSession(cookies=cookies) as http:
        for form in ({}, {"csrf": "not-the-token"}):
            async with http.post(console.base + "/dead/redrive", data={**form, "confirm": "yes"}) as resp:
                assert resp.status == 403
                assert "CSRF" in await resp.text()
    # The browser's own form (with the token) still works: the refusal was the token's doing.
    await page.goto(console.base + "/dead")
    await page.get_by_role("button", name="Redrive").click()
    assert "0" in await page.locator("#dry-run-count").inner_text()
    await context.close()


async def test_a_viewer_sees_everything_and_cannot_redrive(console: Console, browser: Any) -> None:
    stack = console.stack
    await push(stack, sample_event("order/synced", "evt-viewer-1", orderNumber="SO-9"))
    deliveries = await stack.runtime.store.list_deliveries(DeliveryFilter())
    assert deliveries
    context = await browser.new_context()
    page = await context.new_page()
    problems = PageProblems(page)
    await sign_in(page, console.base, VIEWER_TOKEN)
    assert "viewer" in await page.locator("header .who").inner_text()
    await page.goto(console.base + "/dead")
    assert await page.get_by_role("button", name="Redrive").is_disabled()
    await page.goto(console.base + f"/deliveries/{deliveries[0].id}")
    assert await page.get_by_role("button", name="Retry now").count() == 0
    # The form's real CSRF token does not make a viewer an admin.
    await page.goto(console.base + "/replay")
    csrf = await page.locator("input[name=csrf]").first.get_attribute("value")
    resp = await page.request.post(console.base + "/dead/redrive", form={"csrf": csrf, "confirm": "yes"})
    assert resp.status == 403
    assert "viewer" in await resp.text()
    assert problems.problems == []
    await context.close()
