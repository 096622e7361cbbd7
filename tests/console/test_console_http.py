"""The console over plain HTTP (in process, real store): headers, escaping, secrets, sign-in, switching it off."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from conftest import make_app
from helpers import HUB_TOKEN, WHSEC, base_config, sample_event

ADMIN_TOKEN = "console-admin-token-0123456789"
VIEWER_TOKEN = "console-viewer-token-0123456789"


def _config(tmp_path: Path, **over: Any) -> dict[str, Any]:
    return base_config(
        tmp_path,
        admin={"tokens": [ADMIN_TOKEN], "viewer_tokens": [{"name": "auditor", "token": VIEWER_TOKEN}]},
        subscribers=[
            {
                "name": "storefront",
                "url": "https://shop.example.com/hooks?api_key=s3cret-query",
                "secrets": [WHSEC],
            }
        ],
        **over,
    )


async def _sign_in(client: Any, token: str) -> Any:
    form = await client.get("/ui/signin")
    nonce = re.search(r'name="csrf" value="([^"]+)"', await form.text())
    assert nonce is not None
    return await client.post(
        "/ui/signin", data={"csrf": nonce[1], "token": token, "next": "/ui/"}, allow_redirects=False
    )


async def test_pages_carry_the_security_headers_and_session_cookie_flags(tmp_path: Path) -> None:
    app, _ = await make_app(tmp_path, _config(tmp_path))
    try:
        resp = await app.client.get("/ui/", allow_redirects=False)
        assert resp.status == 303
        assert resp.headers["Location"].startswith("/ui/signin")
        signin = await app.client.get("/ui/signin")
        csp = signin.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        assert signin.headers["X-Frame-Options"] == "DENY"
        assert signin.headers["Referrer-Policy"] == "no-referrer"
        assert "Admin token" in await signin.text()
        ok = await _sign_in(app.client, ADMIN_TOKEN)
        assert ok.status == 303
        cookie = ok.headers.getall("Set-Cookie")
        session_cookie = next(c for c in cookie if c.startswith("relay_console="))
        assert "HttpOnly" in session_cookie
        assert "SameSite=Strict" in session_cookie
        assert "Secure" not in session_cookie  # plain HTTP and secure_cookies: auto
        page = await app.client.get("/ui/subscribers")
        text = await page.text()
        assert page.status == 200
        assert "storefront" in text
        # No secret reaches a page: not the signing secret, not a secret in the URL, not a token.
        for secret in (WHSEC, "s3cret-query", ADMIN_TOKEN, VIEWER_TOKEN):
            assert secret not in text
    finally:
        await app.client.close()
        await app.store.close()


async def test_a_wrong_token_is_refused_and_outside_input_is_escaped(tmp_path: Path) -> None:
    app, _ = await make_app(tmp_path, _config(tmp_path))
    try:
        bad = await _sign_in(app.client, "not-a-token")
        assert bad.status == 401
        assert "not an admin or viewer token" in await bad.text()
        hostile = "<script>alert(1)</script>"
        event = sample_event("order/synced", "evt-xss-1", orderNumber=hostile)
        resp = await app.client.post(
            "/v1/sources/hub/events", json=event, headers={"Authorization": f"Bearer {HUB_TOKEN}"}
        )
        assert resp.status == 202
        assert (await _sign_in(app.client, VIEWER_TOKEN)).status == 303
        for path in ("/ui/events", "/ui/events/evt-xss-1"):
            text = await (await app.client.get(path)).text()
            assert hostile not in text
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
        assert (await app.client.get("/ui/deliveries/99999")).status == 404
        bad_time = await app.client.get("/ui/events", params={"since": "yesterday-ish"})
        assert bad_time.status == 400
        assert "since" in await bad_time.text()
    finally:
        await app.client.close()
        await app.store.close()


async def test_console_enabled_false_leaves_no_ui_routes(tmp_path: Path) -> None:
    app, _ = await make_app(tmp_path, _config(tmp_path, console={"enabled": False}))
    try:
        assert (await app.client.get("/ui/signin")).status == 404
        admin = await app.client.get("/v1/admin/subscribers", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert admin.status == 200  # the admin API is unchanged
    finally:
        await app.client.close()
        await app.store.close()


async def test_send_test_event_and_test_circuit_post_a_signed_event_and_say_what_came_back(tmp_path: Path) -> None:
    from conftest import start_stack, stop_stack
    from subscriber import Subscriber, subscriber_config

    receiver = Subscriber()
    await receiver.start()
    data = base_config(
        tmp_path, admin={"tokens": [ADMIN_TOKEN]}, subscribers=[subscriber_config("storefront", receiver.url)]
    )
    stack = await start_stack(tmp_path, data)
    try:
        assert (await _sign_in(stack.client, ADMIN_TOKEN)).status == 303
        page = await (await stack.client.get("/ui/subscribers")).text()
        csrf = re.search(r'name="csrf" value="([^"]+)"', page)
        assert csrf is not None
        for action, expected in (("test", "HTTP 200"), ("circuit", "circuit closed → closed")):
            resp = await stack.client.post(f"/ui/subscribers/storefront/{action}", data={"csrf": csrf[1]})
            assert resp.status == 200  # after the redirect back to Subscribers
            assert expected in await resp.text()
        assert len(receiver.requests) == 2
        assert all(r.verified for r in receiver.requests)
        assert receiver.requests[0].headers["relay-channel"] == "relay/test"
        assert receiver.requests[0].event_id.startswith("test_")
        assert await stack.store.count_events() == 0  # a test event is not stored
    finally:
        await stop_stack(stack)
        await receiver.stop()
