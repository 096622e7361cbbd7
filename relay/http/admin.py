"""`/v1/admin/…`: events, deliveries, dead letters, replay, redrive, quarantine, subscribers (health, tests).

Every route needs `Authorization: Bearer <admin token>`; with no admin token configured the admin API
answers 401 to everyone.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from datetime import datetime
from importlib.metadata import version
from typing import Annotated, Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationError

from relay.auth.inbound import check_bearer
from relay.events import format_ts, parse_ts
from relay.http.openapi import Answer, ListOf, Param, Route, openapi_document
from relay.http.responses import error, json_response
from relay.ops import DeliveryFilter, EventFilter, NotFoundError, Operations, OpsError, UnknownSubscriberError
from relay.runtime import RUNTIME, Runtime
from relay.views import (
    CircuitProbeView,
    CommandView,
    DeliveryDetailView,
    DeliveryView,
    EnabledView,
    ErrorView,
    EventDetailView,
    EventFeedView,
    EventView,
    InstanceView,
    QuarantineRetryView,
    QuarantineView,
    RedriveView,
    ReplayView,
    SubscriberView,
    TestDeliveryView,
    circuit_probe_json,
    command_json,
    delivery_detail_json,
    delivery_json,
    event_detail_json,
    event_feed_json,
    event_json,
    instance_json,
    quarantine_json,
    quarantine_retry_json,
    replay_json,
    subscriber_json,
    test_delivery_json,
)

__all__ = ["ROUTES", "add_routes", "openapi_document_of_admin_api"]


def _authorized(request: web.Request, runtime: Runtime) -> bool:
    # The same check as a bearer source's: exact bytes, constant time, ASCII whitespace only.
    return check_bearer(request.headers, runtime.config.admin.token_values) is None


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


def _limit(request: web.Request, default: int = 100, minimum: int = 1) -> int:
    value = request.query.get("limit", str(default))
    if not _DIGITS.fullmatch(value) or not minimum <= int(value) <= _MAX_LIMIT:
        raise _BadQueryError(f"limit: expected a number from {minimum} to {_MAX_LIMIT}")
    return int(value)


def _newest_first(request: web.Request) -> bool:
    value = request.query.get("order", "newest")
    if value in ("newest", "oldest"):
        return value == "newest"
    raise _BadQueryError("order: expected newest or oldest")


def _cursor(request: web.Request) -> int | None:
    value = request.query.get("after")
    if value is None:
        return None
    if not _DIGITS.fullmatch(value) or int(value) > _MAX_ROW_ID:
        raise _BadQueryError("after: expected the cursor of an earlier answer (a number)")
    return int(value)


def _row_id(text: str) -> int | None:
    """A row id from the path, or None when the text cannot name a row (then the answer is 404)."""
    if not _DIGITS.fullmatch(text) or int(text) > _MAX_ROW_ID:
        return None
    return int(text)


Instant = Annotated[datetime | None, PlainValidator(_instant, json_schema_input_type=str | None)]


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
    dry_run: bool = Field(default=False, alias="dryRun")


class ReplayRequest(RedriveRequest):
    """`POST /v1/admin/replay`: which stored events to deliver again, and to whom (the redrive filters, a
    source, and a channel that may be a glob such as `order/*`)."""

    source: str | None = None
    dry_run: bool = Field(default=False, alias="dryRun")


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


def _ops(request: web.Request) -> Operations:
    return Operations.of(request.app[RUNTIME])


def _event_filter(request: web.Request, *, minimum_limit: int = 1) -> EventFilter:
    q = request.query
    return EventFilter(
        channel=q.get("channel"),
        source=q.get("source"),
        entity_key=q.get("key"),
        since=_when(request, "since"),
        until=_when(request, "until"),
        limit=_limit(request, minimum=minimum_limit),
    )


async def list_events(request: web.Request) -> web.Response:
    flt = dataclasses.replace(_event_filter(request), newest_first=_newest_first(request))
    found = await _ops(request).list_events(flt)
    return json_response([event_json(e, with_payload=False) for e in found])


async def event_feed(request: web.Request) -> web.Response:
    after = _cursor(request)
    feed = await _ops(request).event_feed(_event_filter(request, minimum_limit=0), after=after)
    return json_response(event_feed_json(feed))


async def show_event(request: web.Request) -> web.Response:
    return json_response(event_detail_json(await _ops(request).show_event(request.match_info["event_id"])))


async def list_deliveries(request: web.Request) -> web.Response:
    rows = await _ops(request).list_deliveries(_delivery_filter(request))
    return json_response([delivery_json(d) for d in rows])


async def show_delivery(request: web.Request) -> web.Response:
    delivery_id = _row_id(request.match_info["delivery_id"])
    if delivery_id is None:
        return error(404, "not_found", "no such delivery")
    return json_response(delivery_detail_json(await _ops(request).show_delivery(delivery_id)))


async def list_dlq(request: web.Request) -> web.Response:
    rows = await _ops(request).list_dead(_delivery_filter(request))
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
    count = await _ops(request).redrive(flt, dry_run=body.dry_run)
    return json_response({"redriven": count, "dryRun": body.dry_run})


async def post_replay(request: web.Request) -> web.Response:
    body = await _json_body(request, ReplayRequest)
    flt = EventFilter(channel=body.channel, source=body.source, entity_key=body.key, since=body.since, until=body.until)
    result = await _ops(request).replay(flt, event_id=body.event_id, subscriber=body.subscriber, dry_run=body.dry_run)
    return json_response(replay_json(result), 200 if result.dry_run else 202)


async def list_quarantine(request: web.Request) -> web.Response:
    rows = await _ops(request).list_quarantine(source=request.query.get("source"), limit=_limit(request))
    return json_response([quarantine_json(r) for r in rows])


async def show_quarantine(request: web.Request) -> web.Response:
    qid = _row_id(request.match_info["quarantine_id"])
    if qid is None:
        return error(404, "not_found", "no such quarantine entry")
    return json_response(quarantine_json(await _ops(request).show_quarantine(qid)))


async def retry_quarantine(request: web.Request) -> web.Response:
    qid = _row_id(request.match_info["quarantine_id"])
    if qid is None:
        return error(404, "not_found", "no such quarantine entry")
    ops = _ops(request)
    result = await ops.retry_quarantine(qid)
    ops.record_action(_actor(request), "retry quarantine", int(result.stored), quarantine_id=qid)
    return json_response(quarantine_retry_json(result))


def _actor(request: web.Request) -> str:
    """The name of the admin token the request carries, for the operator action log (`api:NAME`)."""
    # The request is already authorized; this only finds which admin token it was, for the log.
    for name, token, role in request.app[RUNTIME].config.admin.identities():
        if role == "admin" and check_bearer(request.headers, [token]) is None:
            return f"api:{name}"
    return "api"


async def list_subscribers(request: web.Request) -> web.Response:
    return json_response([subscriber_json(s) for s in await _ops(request).subscribers()])


async def list_instances(request: web.Request) -> web.Response:
    return json_response([instance_json(i) for i in await _ops(request).instances()])


async def enable_subscriber(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    ops = _ops(request)
    at = await ops.enable_subscriber(name)
    ops.record_action(_actor(request), "enable subscriber", 1, subscriber=name)
    return json_response({"name": name, "disabled": False, "at": format_ts(at)})


async def list_commands(request: web.Request) -> web.Response:
    q = request.query
    rows = await _ops(request).list_commands(
        source=q.get("source"), status=q.get("status"), command=q.get("command"), limit=_limit(request)
    )
    return json_response([command_json(r) for r in rows])


async def show_command(request: web.Request) -> web.Response:
    row = await _ops(request).show_command(request.match_info["command_id"][:64])
    return json_response(command_json(row, with_body=True))


async def retry_command(request: web.Request) -> web.Response:
    try:
        row = await _ops(request).retry_command(request.match_info["command_id"][:64])
    except NotFoundError:
        raise
    except OpsError as exc:
        return error(409, "not_failed", str(exc))
    return json_response(command_json(row))


async def test_subscriber(request: web.Request) -> web.Response:
    result = await _ops(request).send_test_event(request.match_info["name"], actor=_actor(request))
    return json_response(test_delivery_json(result))


async def test_circuit(request: web.Request) -> web.Response:
    probe = await _ops(request).test_circuit(request.match_info["name"], actor=_actor(request))
    return json_response(circuit_probe_json(probe))


@web.middleware
async def _bad_query(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
    except _BadQueryError as exc:
        return error(400, "bad_request", str(exc))
    except UnknownSubscriberError as exc:
        return error(404, "unknown_subscriber", str(exc))
    except NotFoundError as exc:
        return error(404, "not_found", str(exc))
    except (ValueError, KeyError) as exc:
        if not request.path.startswith("/v1/admin/"):
            raise
        return error(400, "bad_request", str(exc)[:200])
    return response


async def openapi(request: web.Request) -> web.Response:
    return json_response(openapi_document_of_admin_api())


_TIME = {"type": "string", "format": "date-time"}
_LIMIT = {"type": "integer", "minimum": 1, "maximum": _MAX_LIMIT, "default": 100}
_SINCE = Param("since", "At or after this instant (ISO 8601).", _TIME)
_UNTIL = Param("until", "Before this instant (ISO 8601).", _TIME)
_EVENT_PARAMS = (
    Param("channel", "Only this channel."),
    Param("source", "Only events from this source."),
    Param("key", "Only this entity key."),
    _SINCE,
    _UNTIL,
)
_DELIVERY_PARAMS = (
    Param("event_id", "Only deliveries of this event."),
    Param("subscriber", "Only this subscriber."),
    Param("channel", "Only this channel."),
    Param("key", "Only this entity key."),
    _SINCE,
    _UNTIL,
    Param("limit", "At most this many, newest first.", _LIMIT),
)
_ROW_ID = {"type": "integer", "minimum": 1, "maximum": _MAX_ROW_ID}
_ERRORS: dict[int, Answer] = {400: ErrorView, 401: ErrorView, 503: ErrorView}
_NOT_FOUND: dict[int, Answer] = {**_ERRORS, 404: ErrorView}

#: Every admin operation: installed by `add_routes` and described by `GET /v1/admin/openapi.json` from this table.
ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/v1/admin/events",
        list_events,
        "Stored events, newest first (without payloads).",
        {200: ListOf(EventView), **_ERRORS},
        (
            *_EVENT_PARAMS,
            Param("limit", "At most this many.", _LIMIT),
            Param("order", "newest (default) or oldest first.", {"enum": ["newest", "oldest"], "default": "newest"}),
        ),
    ),
    Route(
        "GET",
        "/v1/admin/events-feed",
        event_feed,
        "Events as they are stored: without `after` the newest `limit`, with it those stored since; oldest first.",
        {200: EventFeedView, **_ERRORS},
        (
            *_EVENT_PARAMS,
            Param("limit", "At most this many.", {**_LIMIT, "minimum": 0}),
            Param(
                "after", "The cursor of an earlier answer.", {"type": "integer", "minimum": 0, "maximum": _MAX_ROW_ID}
            ),
        ),
    ),
    Route(
        "GET",
        "/v1/admin/events/{event_id}",
        show_event,
        "One event with its payload, original document and every delivery.",
        {200: EventDetailView, **_NOT_FOUND},
        (Param("event_id", "The event id.", where="path"),),
    ),
    Route(
        "GET",
        "/v1/admin/deliveries",
        list_deliveries,
        "Deliveries, newest first.",
        {200: ListOf(DeliveryView), **_ERRORS},
        (
            *_DELIVERY_PARAMS,
            Param("state", "Only this state.", {"enum": ["pending", "delivered", "dead", "stale", "superseded"]}),
        ),
    ),
    Route(
        "GET",
        "/v1/admin/deliveries/{delivery_id}",
        show_delivery,
        "One delivery with every attempt: status, duration, the subscriber's answer; the next attempt.",
        {200: DeliveryDetailView, **_NOT_FOUND},
        (Param("delivery_id", "The delivery id.", _ROW_ID, where="path"),),
    ),
    Route(
        "GET",
        "/v1/admin/dlq",
        list_dlq,
        "Dead letters, newest first.",
        {200: ListOf(DeliveryView), **_NOT_FOUND},
        _DELIVERY_PARAMS,
    ),
    Route(
        "POST",
        "/v1/admin/dlq/redrive",
        redrive,
        "Make matching dead deliveries pending again, due now (`dryRun`: only count).",
        {200: RedriveView, **_NOT_FOUND},
        body=RedriveRequest,
    ),
    Route(
        "POST",
        "/v1/admin/replay",
        post_replay,
        "Deliver matching stored events again as new deliveries flagged replay (`dryRun`: 200 and only count).",
        {200: ReplayView, 202: ReplayView, **_NOT_FOUND},
        body=ReplayRequest,
    ),
    Route(
        "GET",
        "/v1/admin/quarantine",
        list_quarantine,
        "Quarantined inputs, newest first (without bodies).",
        {200: ListOf(QuarantineView), **_ERRORS},
        (Param("source", "Only this source."), Param("limit", "At most this many.", _LIMIT)),
    ),
    Route(
        "GET",
        "/v1/admin/quarantine/{quarantine_id}",
        show_quarantine,
        "One quarantined input with its body and the precise errors.",
        {200: QuarantineView, **_NOT_FOUND},
        (Param("quarantine_id", "The quarantine id.", _ROW_ID, where="path"),),
    ),
    Route(
        "POST",
        "/v1/admin/quarantine/{quarantine_id}/retry",
        retry_quarantine,
        "Check a quarantined input again; when it passes now, store it and remove the entry (`stored`).",
        {200: QuarantineRetryView, **_NOT_FOUND},
        (Param("quarantine_id", "The quarantine id.", _ROW_ID, where="path"),),
    ),
    Route(
        "GET",
        "/v1/admin/subscribers",
        list_subscribers,
        "Every configured subscriber: pending and dead counts, circuit, last success, disabled.",
        {200: ListOf(SubscriberView), **_ERRORS},
    ),
    Route(
        "GET",
        "/v1/admin/instances",
        list_instances,
        "The live `relay serve` instances on this store: heartbeat, poll leases and deliveries in flight, version.",
        {200: ListOf(InstanceView), **_ERRORS},
    ),
    Route(
        "POST",
        "/v1/admin/subscribers/{name}/enable",
        enable_subscriber,
        "Re-enable a subscriber that answered 410 Gone.",
        {200: EnabledView, **_NOT_FOUND},
        (Param("name", "The subscriber's name.", where="path"),),
    ),
    Route(
        "POST",
        "/v1/admin/subscribers/{name}/test",
        test_subscriber,
        "Send a signed test event (channel relay/test) to a subscriber now; its answer, never retried.",
        {200: TestDeliveryView, **_NOT_FOUND},
        (Param("name", "The subscriber's name.", where="path"),),
    ),
    Route(
        "POST",
        "/v1/admin/subscribers/{name}/test-circuit",
        test_circuit,
        "Probe a subscriber now; the answer counts for its circuit breaker (a 2xx closes an open circuit).",
        {200: CircuitProbeView, **_NOT_FOUND},
        (Param("name", "The subscriber's name.", where="path"),),
    ),
    Route(
        "GET",
        "/v1/admin/commands",
        list_commands,
        "Write-back commands, newest first (without bodies).",
        {200: ListOf(CommandView), **_ERRORS},
        (
            Param("source", "Only this source."),
            Param("status", "Only this status.", {"enum": ["accepted", "running", "succeeded", "failed"]}),
            Param("command", "Only this command.", {"enum": ["order/create", "customer/create", "customer/update"]}),
            Param("limit", "At most this many.", _LIMIT),
        ),
    ),
    Route(
        "GET",
        "/v1/admin/commands/{command_id}",
        show_command,
        "One command: status, attempts, the ERP's document number or messages, and the command sent.",
        {200: CommandView, **_NOT_FOUND},
        (Param("command_id", "The command id.", where="path"),),
    ),
    Route(
        "POST",
        "/v1/admin/commands/{command_id}/retry",
        retry_command,
        "Restart a failed command (a create is looked up in the ERP first); 409 unless it failed.",
        {200: CommandView, 409: ErrorView, **_NOT_FOUND},
        (Param("command_id", "The command id.", where="path"),),
    ),
    Route(
        "GET",
        "/v1/admin/openapi.json",
        openapi,
        "This document.",
        {200: {"type": "object"}, **_ERRORS},
    ),
)


@functools.cache
def openapi_document_of_admin_api() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route in `ROUTES` (built once)."""
    return openapi_document(
        ROUTES,
        title="erp-relay admin API",
        version=version("erp-relay"),
        description=__doc__ or "",
    )


def add_routes(app: web.Application) -> None:
    app.middlewares.append(_admin_auth)
    app.middlewares.append(_bad_query)
    for route in ROUTES:
        app.router.add_route(route.method, route.path, route.handler)
