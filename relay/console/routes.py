"""The console's pages under `/ui/`: parse the request, call `relay.ops`, render a template.

Every page needs a session (sign in with an admin or viewer token); every POST needs the session's CSRF
token and an admin session. Nothing here touches the store or formats records for the wire.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import orjson
import structlog
from aiohttp import web
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from relay._display import mask_url, mask_urls_in
from relay.auth.inbound import matching_token
from relay.console.sessions import COOKIE, SIGNIN_COOKIE, Session, SessionStore, cookie_is_secure, same_token
from relay.events import format_ts
from relay.ops import (
    DeliveryFilter,
    EventFilter,
    NotFoundError,
    Operations,
    OpsError,
    operator_action,
    parse_when,
)
from relay.runtime import RUNTIME

__all__ = ["SECURITY_HEADERS", "add_routes"]

log = structlog.get_logger(__name__)

PREFIX = "/ui"
SESSIONS = web.AppKey("console_sessions", SessionStore)
# No inline script or style anywhere: the pages work without JavaScript and the live overview is one file.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
NAV = [
    ("Overview", f"{PREFIX}/"),
    ("Events", f"{PREFIX}/events"),
    ("Deliveries", f"{PREFIX}/deliveries"),
    ("Dead letters", f"{PREFIX}/dead"),
    ("Subscribers", f"{PREFIX}/subscribers"),
    ("Sources", f"{PREFIX}/sources"),
    ("Quarantine", f"{PREFIX}/quarantine"),
]
_STATIC = {"console.css": "text/css", "console.js": "text/javascript", "favicon.svg": "image/svg+xml"}
_LIST_LIMIT = 200


class BadInput(ValueError):
    """A filter or form field the console cannot use; shown on the page with a 400."""


def _when(value: datetime | None) -> str:
    return format_ts(value) if value is not None else "—"


def _ago(value: datetime | None, now: datetime | None = None) -> str:
    if value is None:
        return "—"
    return _duration(((now or datetime.now(UTC)) - value).total_seconds()) + " ago"


def _duration(seconds: float | None) -> str:
    """A span for people: `42s`, `3m 5s`, `2h 10m`, `4d 3h`."""
    if seconds is None:
        return "—"
    s = abs(int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def _until(value: datetime | None) -> str:
    if value is None:
        return "—"
    seconds = (value - datetime.now(UTC)).total_seconds()
    return "due now" if seconds <= 0 else "in " + _duration(seconds)


def _rate(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}/min"


def _pretty_json(payload: bytes) -> str:
    try:
        return orjson.dumps(orjson.loads(payload), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        return payload.decode("utf-8", "replace")


def _text(value: bytes | None) -> str:
    return value.decode("utf-8", "replace") if value is not None else ""


def environment() -> Environment:
    """The template environment: autoescape on for every template, undefined names are errors."""
    env = Environment(
        loader=PackageLoader("relay.console", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        when=_when,
        ago=_ago,
        until=_until,
        duration=_duration,
        rate=_rate,
        pretty_json=_pretty_json,
        text=_text,
        mask_url=mask_url,
        mask_urls=mask_urls_in,
    )
    return env


_ENV = environment()
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PageHandler = Callable[[web.Request, Session, Operations], Awaitable[web.StreamResponse]]


def _with_headers(response: web.StreamResponse) -> web.StreamResponse:
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    return response


def render(
    request: web.Request, template: str, session: Session | None, status: int = 200, **context: Any
) -> web.Response:
    """A page: the template with the navigation, the session's one-time messages and its CSRF token."""
    flash = []
    if session is not None:
        flash, session.flash = session.flash, []
    html = _ENV.get_template(template).render(
        nav=NAV,
        path=request.path,
        session=session,
        csrf=session.csrf if session is not None else "",
        flash=flash,
        now=datetime.now(UTC),
        **context,
    )
    response = web.Response(text=html, status=status, content_type="text/html", charset="utf-8")
    _with_headers(response)
    return response


def _ops(request: web.Request) -> Operations:
    return Operations.of_running(request.app[RUNTIME])


def _session(request: web.Request) -> Session | None:
    return request.app[SESSIONS].get(request.cookies.get(COOKIE), datetime.now(UTC))


def page(*, write: bool = False) -> Callable[[PageHandler], Handler]:
    """A console route: a session is required (else to the sign-in page); a POST also needs the session's
    CSRF token and, for `write`, an admin session (a viewer gets 403)."""

    def wrap(handler: PageHandler) -> Handler:
        @functools.wraps(handler)
        async def run(request: web.Request) -> web.StreamResponse:
            session = _session(request)
            if request.method == "POST":
                form = await request.post()
                token = form.get("csrf")
                if session is None or not same_token(token if isinstance(token, str) else None, session.csrf):
                    return render(
                        request,
                        "refused.html",
                        session,
                        403,
                        reason="The form's CSRF token is missing or wrong; reload the page and try again.",
                    )
                if write and not session.can_write:
                    return render(
                        request,
                        "refused.html",
                        session,
                        403,
                        reason="You are signed in with a viewer token: it can look at everything and change nothing.",
                    )
            elif session is None:
                target = request.path_qs if request.path != f"{PREFIX}/signin" else f"{PREFIX}/"
                raise web.HTTPSeeOther(f"{PREFIX}/signin?next={_quote(target)}")
            assert session is not None
            try:
                return await handler(request, session, _ops(request))
            except NotFoundError as exc:
                return render(request, "refused.html", session, 404, reason=str(exc), title="Not found")
            except (BadInput, OpsError, ValueError) as exc:
                return render(request, "refused.html", session, 400, reason=str(exc), title="Cannot do that")

        return run

    return wrap


def _quote(path: str) -> str:
    from urllib.parse import quote

    return quote(path, safe="/?=&")


def _safe_next(value: str | None) -> str:
    # Only a path of this console: an absolute or scheme-relative URL would make sign-in an open redirect.
    if value and value.startswith(f"{PREFIX}/") and not value.startswith("//") and "\\" not in value:
        return value
    return f"{PREFIX}/"


def _back(to: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(to)


def _field(form: Any, name: str) -> str | None:
    value = form.get(name)
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value or None


def _int(text: str, what: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise NotFoundError(f"no {what} {text!r}")
    return int(text)


def _time(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        return parse_when(value, datetime.now(UTC))
    except ValueError as exc:
        raise BadInput(f"{name}: {exc}") from None


def _filters(source: Any) -> dict[str, str]:
    """The filter fields of a query or form, as typed (to fill the form again and to carry through steps)."""
    names = ("channel", "source", "key", "event_id", "subscriber", "state", "since", "until")
    return {n: v for n in names if (v := _field(source, n)) is not None}


def _delivery_filter(f: dict[str, str], *, limit: int = _LIST_LIMIT) -> DeliveryFilter:
    return DeliveryFilter(
        event_id=f.get("event_id"),
        subscriber=f.get("subscriber"),
        state=f.get("state"),
        channel=f.get("channel"),
        entity_key=f.get("key"),
        since=_time(f.get("since"), "since"),
        until=_time(f.get("until"), "until"),
        limit=limit,
    )


# ---------------------------------------------------------------------------------------- sign in and out


async def signin_form(request: web.Request) -> web.StreamResponse:
    if _session(request) is not None:
        raise web.HTTPSeeOther(_safe_next(request.query.get("next")))
    return _signin_page(request, None, 200)


def _signin_page(request: web.Request, problem: str | None, status: int) -> web.Response:
    import secrets

    nonce = secrets.token_urlsafe(24)
    response = render(
        request, "signin.html", None, status, problem=problem, nonce=nonce, next=_safe_next(request.query.get("next"))
    )
    response.set_cookie(
        SIGNIN_COOKIE, nonce, path=f"{PREFIX}/", httponly=True, samesite="Strict", secure=_secure(request)
    )
    return response


def _secure(request: web.Request) -> bool:
    mode = request.app[RUNTIME].config.console.secure_cookies
    return cookie_is_secure(mode, tls=request.secure, forwarded_proto=request.headers.get("X-Forwarded-Proto"))


async def signin(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    nonce = _field(form, "csrf")
    if not same_token(nonce, request.cookies.get(SIGNIN_COOKIE, "")):
        return render(request, "refused.html", None, 403, reason="The sign-in form expired; open it again.")
    token = form.get("token")
    identities = request.app[RUNTIME].config.admin.identities()
    found = matching_token(token, [t for _, t, _ in identities]) if isinstance(token, str) else None
    if found is None:
        log.info("console sign-in refused", peer=request.remote)
        return _signin_page(request, "That token is not an admin or viewer token of this relay.", 401)
    name, _, role = identities[found]
    session = request.app[SESSIONS].create(name, role, datetime.now(UTC))
    operator_action(name, "sign in", 1, role=role)
    response = web.HTTPSeeOther(_safe_next(_field(form, "next")))
    response.set_cookie(
        COOKIE,
        session.id,
        path=f"{PREFIX}/",
        httponly=True,
        samesite="Strict",
        secure=_secure(request),
        max_age=int(request.app[RUNTIME].config.console.session_ttl_s),
    )
    response.del_cookie(SIGNIN_COOKIE, path=f"{PREFIX}/")
    raise response


@page()
async def signout(request: web.Request, session: Session, ops: Operations) -> web.StreamResponse:
    request.app[SESSIONS].end(session.id)
    operator_action(session.name, "sign out", 1)
    response = web.HTTPSeeOther(f"{PREFIX}/signin")
    response.del_cookie(COOKIE, path=f"{PREFIX}/")
    raise response


# ---------------------------------------------------------------------------------------- overview


@page()
async def overview(request: web.Request, session: Session, ops: Operations) -> web.StreamResponse:
    return render(request, "overview.html", session, o=await ops.overview())


@page()
async def overview_live(request: web.Request, session: Session, ops: Operations) -> web.StreamResponse:
    """The overview's figures alone, fetched every few seconds by console.js."""
    return render(request, "overview_live.html", session, o=await ops.overview())


# ---------------------------------------------------------------------------------------- events


@page()
async def events(request: web.Request, session: Session, ops: Operations) -> web.StreamResponse:
    f = _filters(request.query)
    flt = EventFilter(
        channel=f.get("channel"),
        source=f.get("source"),
        entity_key=f.get("key"),
        since=_time(f.get("since"), "since"),
        until=_time(f.get("until"), "until"),
        limit=_LIST_LIMIT,
        newest_first=True,
        event_id=f.get("event_id"),
    )
    found = await ops.list_events(flt)
    return render(request, "events.html", session, f=f, events=found, limit=_LIST_LIMIT)


@page()
async def event(request: web.Request, session: Session, ops: Operations) -> web.StreamResponse:
    detail = await ops.show_event(request.match_info["event_id"])
    return render(request, "event.html", session, d=detail)


# ---------------------------------------------------------------------------------------- deliveries


@page()
async def deliveries(request: web.Request, session: Session, ops: Operations) -> web.StreamResponse:
    f = _filters(request.query)
    rows = await ops.list_deliveries(_delivery_filter(f))
    return render(request, "deliveries.html", session, f=f, rows=rows, limit=_LIST_LIMIT, dead_only=False)


@page()
async def delivery(request: web.Request, session: Session, ops: Operations) -> web.StreamResponse:
    detail = await ops.show_delivery(_int(request.match_info["delivery_id"], "delivery"))
    subscriber = next((s for s in await ops.subscribers() if s.name == detail.delivery.subscriber), None)
    return render(request, "delivery.html", session, d=detail, subscriber=subscriber)


@page(write=True)
async def delivery_retry(request: web.Request, session: Session, ops: Operations) -> web.StreamResponse:
    delivery_id = _int(request.match_info["delivery_id"], "delivery")
    record = await ops.retry_now(delivery_id, actor=session.name)
    session.flash.append(("ok", f"Delivery {record.id} is due now; it is sent as soon as the subscriber has room."))
    raise _back(f"{PREFIX}/deliveries/{delivery_id}")


@page(write=True)
async def delivery_redrive(request: web.Request, session: Session, ops: Operations) -> web.StreamResponse:
    delivery_id = _int(request.match_info["delivery_id"], "delivery")
    d = (await ops.show_delivery(delivery_id)).delivery
    if d.state != "dead":
        raise BadInput(f"delivery {delivery_id} is {d.state}; only a dead delivery is redriven")
    count = await ops.redrive(DeliveryFilter(event_id=d.event_id, subscriber=d.subscriber))
    ops.record_action(session.name, "redrive", count, event_id=d.event_id, subscriber=d.subscriber)
    session.flash.append(("ok", f"Redriven: {count} dead delivery of {d.event_id} to {d.subscriber} is due now."))
    raise _back(f"{PREFIX}/deliveries/{delivery_id}")


# ---------------------------------------------------------------------------------------- dead letters


@page()
async def dead(request: web.Request, session: Session, ops: Operations) -> web.StreamResponse:
    f = _filters(request.query)
    f.pop("state", None)
    rows = await ops.list_dead(_delivery_filter(f))
    return render(request, "deliveries.html", session, f=f, rows=rows, limit=_LIST_LIMIT, dead_only=True)


@page(write=True)
async def dead_redrive(request: web.Request, session: Session, ops: Operations) -> web.StreamResponse:
    """Step one (no `confirm`): count what matches and ask; step two: redrive and say how many."""
    form = await request.post()
    f = _filters(form)
    f.pop("state", None)
    flt = _delivery_filter(f, limit=2**62)
    if _field(form, "confirm") != "yes":
        count = await ops.redrive(flt, dry_run=True)
        return render(
            request, "confirm.html", session, what="redrive", f=f, count=count, action=f"{PREFIX}/dead/redrive"
        )
    count = await ops.redrive(flt)
    ops.record_action(session.name, "redrive", count, **f)
    session.flash.append(("ok", f"Redriven: {count} dead deliveries are due now."))
    raise _back(f"{PREFIX}/dead")


# ---------------------------------------------------------------------------------------- replay


@page()
async def replay_form(request: web.Request, session: Session, ops: Operations) -> web.StreamResponse:
    return render(request, "replay.html", session, f=_filters(request.query))


@page(write=True)
async def replay(request: web.Request, session: Session, ops: Operations) -> web.StreamResponse:
    form = await request.post()
    f = _filters(form)
    flt = EventFilter(
        channel=f.get("channel"),
        entity_key=f.get("key"),
        since=_time(f.get("since"), "since"),
        until=_time(f.get("until"), "until"),
    )
    kwargs: dict[str, Any] = {"event_id": f.get("event_id"), "subscriber": f.get("subscriber")}
    if _field(form, "confirm") != "yes":
        counted = await ops.replay(flt, dry_run=True, **kwargs)
        return render(
            request,
            "confirm.html",
            session,
            what="replay",
            f=f,
            count=counted.deliveries,
            events=counted.events,
            action=f"{PREFIX}/replay",
        )
    result = await ops.replay(flt, **kwargs)
    ops.record_action(session.name, "replay", result.deliveries, events=result.events, **f)
    session.flash.append(("ok", f"Replay: {result.deliveries} new deliveries of {result.events} events."))
    raise _back(f"{PREFIX}/deliveries")


# ---------------------------------------------------------------------------------------- subscribers, sources


@page()
async def subscribers(request: web.Request, session: Session, ops: Operations) -> web.StreamResponse:
    o = await ops.overview()
    return render(request, "subscribers.html", session, subs=o.subscribers)


@page(write=True)
async def subscriber_test(request: web.Request, session: Session, ops: Operations) -> web.StreamResponse:
    result = await ops.send_test_event(request.match_info["name"], actor=session.name)
    kind = "ok" if result.ok else "error"
    answer = f"HTTP {result.status}" if result.status is not None else (result.error or "no answer")
    session.flash.append(
        (kind, f"Test event {result.message_id} to {result.subscriber}: {answer} in {result.duration_ms:.0f} ms.")
    )
    raise _back(f"{PREFIX}/subscribers")


@page(write=True)
async def subscriber_circuit(request: web.Request, session: Session, ops: Operations) -> web.StreamResponse:
    probe = await ops.test_circuit(request.match_info["name"], actor=session.name)
    result = probe.delivery
    answer = f"HTTP {result.status}" if result.status is not None else (result.error or "no answer")
    circuit = f"circuit {probe.circuit_before} → {probe.circuit_after}" if probe.circuit_after else "circuit unknown"
    session.flash.append(("ok" if result.ok else "error", f"Probe of {result.subscriber}: {answer}; {circuit}."))
    raise _back(f"{PREFIX}/subscribers")


@page(write=True)
async def subscriber_enable(request: web.Request, session: Session, ops: Operations) -> web.StreamResponse:
    name = request.match_info["name"]
    await ops.enable_subscriber(name)
    ops.record_action(session.name, "enable subscriber", 1, subscriber=name)
    session.flash.append(("ok", f"{name} is enabled again."))
    raise _back(f"{PREFIX}/subscribers")


@page()
async def sources(request: web.Request, session: Session, ops: Operations) -> web.StreamResponse:
    return render(request, "sources.html", session, sources=await ops.sources_status())


# ---------------------------------------------------------------------------------------- quarantine


@page()
async def quarantine(request: web.Request, session: Session, ops: Operations) -> web.StreamResponse:
    source = _field(request.query, "source")
    rows = await ops.list_quarantine(source=source, limit=_LIST_LIMIT)
    return render(request, "quarantine.html", session, rows=rows, source=source or "", limit=_LIST_LIMIT)


@page()
async def quarantine_entry(request: web.Request, session: Session, ops: Operations) -> web.StreamResponse:
    entry = await ops.show_quarantine(_int(request.match_info["quarantine_id"], "quarantine entry"))
    return render(request, "quarantine_entry.html", session, q=entry)


@page(write=True)
async def quarantine_retry(request: web.Request, session: Session, ops: Operations) -> web.StreamResponse:
    qid = _int(request.match_info["quarantine_id"], "quarantine entry")
    result = await ops.retry_quarantine(qid)
    ops.record_action(session.name, "retry quarantine", len(result.events), quarantine_id=qid, stored=result.stored)
    if result.stored:
        session.flash.append(("ok", f"Quarantine entry {qid} is stored now: {len(result.events)} events."))
        raise _back(f"{PREFIX}/quarantine")
    session.flash.append(("error", f"Still refused: {'; '.join(result.problems)}"))
    raise _back(f"{PREFIX}/quarantine/{qid}")


# ---------------------------------------------------------------------------------------- static files


async def static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    content_type = _STATIC.get(name)
    if content_type is None:
        raise web.HTTPNotFound()
    body = resources.files("relay.console").joinpath("static", name).read_bytes()
    response = web.Response(body=body, content_type=content_type)
    _with_headers(response)
    response.headers["Cache-Control"] = "max-age=300"
    return response


async def root(request: web.Request) -> web.StreamResponse:
    raise web.HTTPPermanentRedirect(f"{PREFIX}/")


def add_routes(app: web.Application) -> None:
    """Mount the console under `/ui/` (the daemon calls this unless `console.enabled: false`)."""
    config = app[RUNTIME].config.console
    app[SESSIONS] = SessionStore(config.session_ttl_s)
    r = app.router
    r.add_get(PREFIX, root)
    r.add_get(f"{PREFIX}/", overview)
    r.add_get(f"{PREFIX}/live", overview_live)
    r.add_get(f"{PREFIX}/signin", signin_form)
    r.add_post(f"{PREFIX}/signin", signin)
    r.add_post(f"{PREFIX}/signout", signout)
    r.add_get(f"{PREFIX}/events", events)
    r.add_get(f"{PREFIX}/events/{{event_id}}", event)
    r.add_get(f"{PREFIX}/deliveries", deliveries)
    r.add_get(f"{PREFIX}/deliveries/{{delivery_id}}", delivery)
    r.add_post(f"{PREFIX}/deliveries/{{delivery_id}}/retry", delivery_retry)
    r.add_post(f"{PREFIX}/deliveries/{{delivery_id}}/redrive", delivery_redrive)
    r.add_get(f"{PREFIX}/dead", dead)
    r.add_post(f"{PREFIX}/dead/redrive", dead_redrive)
    r.add_get(f"{PREFIX}/replay", replay_form)
    r.add_post(f"{PREFIX}/replay", replay)
    r.add_get(f"{PREFIX}/subscribers", subscribers)
    r.add_post(f"{PREFIX}/subscribers/{{name}}/test", subscriber_test)
    r.add_post(f"{PREFIX}/subscribers/{{name}}/circuit", subscriber_circuit)
    r.add_post(f"{PREFIX}/subscribers/{{name}}/enable", subscriber_enable)
    r.add_get(f"{PREFIX}/sources", sources)
    r.add_get(f"{PREFIX}/quarantine", quarantine)
    r.add_get(f"{PREFIX}/quarantine/{{quarantine_id}}", quarantine_entry)
    r.add_post(f"{PREFIX}/quarantine/{{quarantine_id}}/retry", quarantine_retry)
    r.add_get(f"{PREFIX}/static/{{name}}", static)
