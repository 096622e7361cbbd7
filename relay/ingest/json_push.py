"""`POST /v1/sources/{source}/events[/{channel}]`: JSON events shaped by the AsyncAPI specs."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import orjson
import structlog
from aiohttp import web

from relay import metrics
from relay.auth.inbound import authenticate, needs_body
from relay.config import JsonPushSource
from relay.http.responses import error, json_response
from relay.ingest.pipeline import Candidate, PayloadProblem, check_payload
from relay.runtime import RUNTIME, Runtime
from relay.store import StoreUnavailable

log = structlog.get_logger(__name__)

__all__ = ["add_routes", "is_json_media_type", "read_body"]


def is_json_media_type(content_type: str) -> bool:
    """`application/json` or any `application/*+json` (parameters such as charset ignored)."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


async def read_body(request: web.Request, max_bytes: int, timeout_s: float) -> bytes | web.Response:
    """The request body, or a 413 answer when it is larger than `max_bytes`, or a 408 after `timeout_s`."""
    if request.content_length is not None and request.content_length > max_bytes:
        return error(413, "too_large", f"body is larger than {max_bytes} bytes")
    try:
        # A body that arrived with the headers (the usual small event) needs no deadline: arming one is a
        # timer per request on the hot path.
        async with asyncio.timeout(None if request.content.is_eof() else timeout_s):
            return await request.read()
    except web.HTTPRequestEntityTooLarge:
        return error(413, "too_large", f"body is larger than {max_bytes} bytes")
    except TimeoutError:
        # A trickling sender (slow loris) holds a connection and a buffer: answer and close it.
        response = error(408, "request_timeout", f"the body did not arrive within {timeout_s:g}s")
        response.force_close()
        return response


def _count(source: str, channel: str | None, result: str) -> None:
    metrics.labelled(metrics.EVENTS_RECEIVED, source, channel or "-", result).inc()


async def handle_push(request: web.Request) -> web.Response:
    started = time.perf_counter()
    runtime: Runtime = request.app[RUNTIME]
    source_name = request.match_info["source"]
    path_channel = request.match_info.get("channel")
    source = runtime.source(source_name)
    if not isinstance(source, JsonPushSource):
        return error(404, "unknown_source", f"no JSON push source named {source_name!r}")
    try:
        response = await _handle(request, runtime, source, path_channel)
    finally:
        metrics.labelled(metrics.INGEST_DURATION, source_name).observe(time.perf_counter() - started)
    return response


async def _handle(
    request: web.Request, runtime: Runtime, source: JsonPushSource, path_channel: str | None
) -> web.Response:
    now = datetime.now(UTC)
    name = source.name
    if runtime.draining:
        return error(503, "draining", "the relay is shutting down; retry shortly")
    max_bytes = runtime.config.server.max_body_bytes
    if request.content_length is not None and request.content_length > max_bytes:
        _count(name, path_channel, "refused")
        return error(413, "too_large", f"body is larger than {max_bytes} bytes")
    if not needs_body(source.auth) and (reason := authenticate(source.auth, request.headers, None, now=now)):
        log.info("push refused", source=name, reason=reason)
        _count(name, None, "unauthorized")
        return error(401, "unauthorized", "missing or invalid credentials")
    if not is_json_media_type(request.headers.get("Content-Type", "")):
        _count(name, path_channel, "refused")
        return error(415, "unsupported_media_type", "send the event as application/json")
    body = await read_body(request, max_bytes, runtime.config.server.read_timeout_s)
    if isinstance(body, web.Response):
        _count(name, path_channel, "refused")
        return body
    if needs_body(source.auth) and (reason := authenticate(source.auth, request.headers, body, now=now)):
        log.info("push refused", source=name, reason=reason)
        _count(name, None, "unauthorized")
        return error(401, "unauthorized", "missing or invalid signature")
    if not body.strip():
        _count(name, path_channel, "invalid")
        return error(400, "malformed_body", "the body is empty")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        qid = await _quarantine(runtime, name, body, f"malformed JSON: {exc}", path_channel, [], request)
        _count(name, path_channel, "invalid")
        return error(400, "malformed_body", f"the body is not valid JSON: {exc}", quarantineId=qid)
    if isinstance(
        qid_or_problem := check_payload(
            runtime.specs, payload, path_channel=path_channel, allowed_channels=source.channels
        ),
        PayloadProblem,
    ):
        problem = qid_or_problem
        details = problem.details_json()
        reason = "; ".join(f"{d['path']}: {d['message']}" for d in details)
        qid = await _quarantine(runtime, name, body, reason, problem.channel or path_channel, details, request)
        _count(name, problem.channel if problem.status == 422 else None, "invalid")
        log.info("push invalid", source=name, status=problem.status, reason=reason[:300])
        return json_response(
            {"error": problem.error, "message": reason[:1000], "details": details, "quarantineId": qid},
            problem.status,
        )
    channel = qid_or_problem
    try:
        (outcome,) = await runtime.ingestor.commit(name, [Candidate(channel, payload)], received_at=now)
    except StoreUnavailable as exc:
        log.warning("store unavailable", source=name, error=str(exc))
        _count(name, channel, "error")
        return error(503, "store_unavailable", "the event was not stored; retry shortly")
    _count(name, channel, outcome.status)
    if outcome.status == "duplicate":
        return json_response({"eventId": outcome.event_id, "status": "duplicate"}, 200)
    return json_response({"eventId": outcome.event_id, "status": "accepted", "deliveries": outcome.deliveries}, 202)


async def _quarantine(
    runtime: Runtime,
    source: str,
    body: bytes,
    reason: str,
    channel: str | None,
    details: list[dict[str, str]],
    request: web.Request,
) -> int | None:
    try:
        qid = await runtime.ingestor.quarantine(
            source=source,
            body=body,
            reason=reason,
            received_at=datetime.now(UTC),
            channel=channel if channel and runtime.specs.has_channel(channel) else None,
            details=list(details),
            content_type=request.headers.get("Content-Type"),
        )
    except StoreUnavailable as exc:
        # The client still gets its 4xx with the reason; only the copy for inspection is missing.
        log.warning("quarantine not stored", source=source, error=str(exc))
        return None
    metrics.labelled(metrics.QUARANTINED, source).inc()
    return qid


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/sources/{source}/events", handle_push)
    app.router.add_post("/v1/sources/{source}/events/{channel:.+}", handle_push)
