"""`/v1/admin/…`: events, deliveries, dead letters, replay, redrive, quarantine, subscriber health.

Every route needs `Authorization: Bearer <admin token>`; with no admin token configured the admin API
answers 401 to everyone.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationError

from relay.auth.inbound import check_bearer
from relay.deliver.replay import replay
from relay.events import format_ts, parse_ts
from relay.http.responses import error, json_response
from relay.runtime import RUNTIME, Runtime
from relay.store import EventFilter
from relay.store.base import DeliveryFilter, DeliveryRow, SubscriberState

__all__ = ["add_routes", "delivery_json", "subscriber_json"]


def _authorized(request: web.Request, runtime: Runtime) -> bool:
    # The same check as a bearer source's: exact bytes, constant time, ASCII whitespace only.
    return check_bearer(request.headers, runtime.config.admin.tokens) is None


@web.middleware
async def _admin_auth(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.path.startswith("/v1/admin/") and not _authorized(request, request.app[RUNTIME]):
        return error(401, "unauthorized", "an admin bearer token is required")
    response: web.StreamResponse = await handler(request)
    return response


class _BadQueryError(ValueError):
    pass


_DIGITS = re.compile(r"[0-9]{1,19}")  # ASCII only: str.isdigit() also takes "²" and other scripts' digits
_MAX_ROW_ID = 2**63 - 1  # SQLite's INTEGER; a larger number cannot name a row and does not fit a parameter
_MAX_LIMIT = 100_000


def _instant(value: Any) -> datetime | None:
    """An ISO 8601 time as an aware UTC datetime; "" or None is no bound."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError("expected an ISO 8601 time as a string")
    try:
        return parse_ts(value)
    except (ValueError, OverflowError):
        # OverflowError: a valid time whose UTC equivalent falls outside years 1-9999 (0001-01-01T00:00+01:00).
        raise ValueError("expected an ISO 8601 time between years 1 and 9999") from None


def _when(request: web.Request, name: str) -> datetime | None:
    try:
        return _instant(request.query.get(name))
    except ValueError as exc:
        raise _BadQueryError(f"{name}: {exc}") from None


def _limit(request: web.Request, default: int = 100) -> int:
    value = request.query.get("limit", str(default))
    if not _DIGITS.fullmatch(value) or not 1 <= int(value) <= _MAX_LIMIT:
        raise _BadQueryError(f"limit: expected a number from 1 to {_MAX_LIMIT}")
    return int(value)


def _row_id(text: str) -> int | None:
    """A row id from the path, or None when the text cannot name a row (then the answer is 404)."""
    if not _DIGITS.fullmatch(text) or int(text) > _MAX_ROW_ID:
        return None
    return int(text)


Instant = Annotated[datetime | None, PlainValidator(_instant)]


class _Body(BaseModel):
    # strict: a number where a string belongs is an error, not converted; forbid: a misspelt filter would
    # otherwise be ignored and widen a redrive or replay to everything.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class RedriveRequest(_Body):
    """`POST /v1/admin/dlq/redrive`: which dead deliveries to send again (no field: all of them)."""

    event_id: str | None = Field(default=None, alias="eventId")
    subscriber: str | None = None
    channel: str | None = None
    key: str | None = None
    since: Instant = None
    until: Instant = None


class ReplayRequest(RedriveRequest):
    """`POST /v1/admin/replay`: which stored events to deliver again, and to whom (the redrive filters)."""

    dry_run: bool = Field(default=False, alias="dryRun")


def delivery_json(d: DeliveryRow) -> dict[str, Any]:
    return {
        "id": d.id,
        "eventId": d.event_id,
        "subscriber": d.subscriber,
        "channel": d.channel,
        "entityKey": d.entity_key,
        "state": d.state,
        "attempts": d.attempts,
        "createdAt": d.created_at,
        "nextAttemptAt": d.next_attempt_at if d.state == "pending" else None,
        "replay": d.replay,
        "lastStatus": d.last_status,
        "lastError": d.last_error,
        "finishedAt": d.finished_at,
    }


def subscriber_json(name: str, url: str, st: SubscriberState | None) -> dict[str, Any]:
    st = st or SubscriberState(name)
    return {
        "name": name,
        "url": url,
        "disabled": st.disabled,
        "disabledReason": st.disabled_reason,
        "pending": st.pending,
        "dead": st.dead,
        "circuit": st.circuit_state,
        "lastSuccessAt": st.last_success_at,
    }


def _delivery_filter(request: web.Request, state: str | None = None) -> DeliveryFilter:
    q = request.query
    return DeliveryFilter(
        event_id=q.get("event_id"),
        subscriber=q.get("subscriber"),
        state=state or q.get("state"),
        channel=q.get("channel"),
        entity_key=q.get("key"),
        since=_when(request, "since"),
        until=_when(request, "until"),
        limit=_limit(request),
    )


_B = TypeVar("_B", bound=_Body)


async def _json_body(request: web.Request, model: type[_B]) -> _B:
    raw = await request.read()
    if not raw.strip():
        return model()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _BadQueryError("body: not valid JSON") from None
    if not isinstance(body, dict):
        raise _BadQueryError("body: expected a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise _BadQueryError("; ".join(_problem(err) for err in exc.errors(include_url=False))) from None


def _problem(err: Any) -> str:
    where = ".".join(str(part) for part in err["loc"]) or "body"
    if err["type"] == "extra_forbidden":
        return f"{where}: unknown field"
    return f"{where}: " + str(err["msg"]).removeprefix("Value error, ")


async def list_events(request: web.Request) -> web.Response:
    from relay.cli import event_json

    runtime = request.app[RUNTIME]
    q = request.query
    flt = EventFilter(
        channel=q.get("channel"),
        source=q.get("source"),
        entity_key=q.get("key"),
        since=_when(request, "since"),
        until=_when(request, "until"),
        limit=_limit(request),
    )
    found = await runtime.store.list_events(flt)
    return json_response([event_json(e, with_payload=False) for e in found])


async def show_event(request: web.Request) -> web.Response:
    from relay.cli import event_json

    runtime = request.app[RUNTIME]
    found = await runtime.store.get_event(request.match_info["event_id"])
    if found is None:
        return error(404, "not_found", "no such event")
    deliveries = await runtime.store.list_deliveries(DeliveryFilter(event_id=found.event_id, limit=1000))
    return json_response({**event_json(found), "deliveries": [delivery_json(d) for d in deliveries]})


async def list_deliveries(request: web.Request) -> web.Response:
    rows = await request.app[RUNTIME].store.list_deliveries(_delivery_filter(request))
    return json_response([delivery_json(d) for d in rows])


async def show_delivery(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    delivery_id = _row_id(request.match_info["delivery_id"])
    if delivery_id is None:
        return error(404, "not_found", "no such delivery")
    attempts = await runtime.store.list_attempts(delivery_id)
    return json_response({"id": delivery_id, "attempts": attempts})


async def list_dlq(request: web.Request) -> web.Response:
    rows = await request.app[RUNTIME].store.list_deliveries(_delivery_filter(request, state="dead"))
    return json_response([delivery_json(d) for d in rows])


async def redrive(request: web.Request) -> web.Response:
    body = await _json_body(request, RedriveRequest)
    flt = DeliveryFilter(
        event_id=body.event_id,
        subscriber=body.subscriber,
        channel=body.channel,
        entity_key=body.key,
        since=body.since,
        until=body.until,
    )
    count = await request.app[RUNTIME].store.redrive(flt)
    return json_response({"redriven": count})


async def post_replay(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    body = await _json_body(request, ReplayRequest)
    subscriber = body.subscriber
    if subscriber is not None and runtime.config.subscriber(subscriber) is None:
        return error(404, "unknown_subscriber", f"no subscriber named {subscriber!r}")
    flt = EventFilter(channel=body.channel, entity_key=body.key, since=body.since, until=body.until)
    result = await replay(
        runtime.store,
        runtime.ingestor.router,
        flt,
        event_id=body.event_id,
        subscriber=subscriber,
        dry_run=body.dry_run,
    )
    return json_response(
        {"events": result.events_matched, "deliveries": result.deliveries, "dryRun": result.dry_run},
        200 if result.dry_run else 202,
    )


async def list_quarantine(request: web.Request) -> web.Response:
    rows = await request.app[RUNTIME].store.list_quarantine(source=request.query.get("source"), limit=_limit(request))
    return json_response(
        [
            {
                "id": r.id,
                "receivedAt": r.received_at,
                "source": r.source,
                "channel": r.channel,
                "reason": r.reason,
                "details": r.details,
                "size": r.size,
            }
            for r in rows
        ]
    )


async def show_quarantine(request: web.Request) -> web.Response:
    qid = _row_id(request.match_info["quarantine_id"])
    row = await request.app[RUNTIME].store.get_quarantine(qid) if qid is not None else None
    if row is None:
        return error(404, "not_found", "no such quarantine entry")
    return json_response(
        {
            "id": row.id,
            "receivedAt": row.received_at,
            "source": row.source,
            "channel": row.channel,
            "reason": row.reason,
            "details": row.details,
            "contentType": row.content_type,
            "body": (row.body or b"").decode("utf-8", "replace"),
        }
    )


async def list_subscribers(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    states = await runtime.store.subscriber_states()
    return json_response([subscriber_json(s.name, s.url, states.get(s.name)) for s in runtime.config.subscribers])


async def enable_subscriber(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    name = request.match_info["name"]
    if runtime.config.subscriber(name) is None:
        return error(404, "unknown_subscriber", f"no subscriber named {name!r}")
    await runtime.store.set_subscriber_disabled(name, False, None)
    if runtime.dispatcher is not None:
        runtime.dispatcher.enable(name)
    return json_response({"name": name, "disabled": False, "at": format_ts(datetime.now().astimezone())})


@web.middleware
async def _bad_query(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
    except _BadQueryError as exc:
        return error(400, "bad_request", str(exc))
    except (ValueError, KeyError) as exc:
        if not request.path.startswith("/v1/admin/"):
            raise
        return error(400, "bad_request", str(exc)[:200])
    return response


def add_routes(app: web.Application) -> None:
    app.middlewares.append(_admin_auth)
    app.middlewares.append(_bad_query)
    r = app.router
    r.add_get("/v1/admin/events", list_events)
    r.add_get("/v1/admin/events/{event_id}", show_event)
    r.add_get("/v1/admin/deliveries", list_deliveries)
    r.add_get("/v1/admin/deliveries/{delivery_id}", show_delivery)
    r.add_get("/v1/admin/dlq", list_dlq)
    r.add_post("/v1/admin/dlq/redrive", redrive)
    r.add_post("/v1/admin/replay", post_replay)
    r.add_get("/v1/admin/quarantine", list_quarantine)
    r.add_get("/v1/admin/quarantine/{quarantine_id}", show_quarantine)
    r.add_get("/v1/admin/subscribers", list_subscribers)
    r.add_post("/v1/admin/subscribers/{name}/enable", enable_subscriber)
