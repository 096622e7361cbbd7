"""`POST /v1/sources/{source}/events[/{channel}]`: JSON events shaped by the AsyncAPI specs."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Mapping
from datetime import UTC, datetime

import orjson
import structlog
from aiohttp import web

from relay import metrics
from relay._malloc import release_free_memory
from relay.auth.inbound import InboundAuthConfig, authenticate, needs_body
from relay.config import BearerAuth, JsonPushSource, StandardWebhooksAuth
from relay.http.headers import header_for_record
from relay.http.responses import error, json_response, unauthorized
from relay.ingest.pipeline import Candidate, PayloadProblem, check_payload
from relay.runtime import RUNTIME, Runtime
from relay.signing import SignatureError, check_signature_headers
from relay.store import StoreUnavailable

log = structlog.get_logger(__name__)

__all__ = ["DECOY_AUTH", "UnauthenticatedBodies", "add_routes", "is_json_media_type", "read_body"]


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


# Checked in place of an unknown source's credentials, so that answer takes the time a real check takes.
DECOY_AUTH = BearerAuth(type="bearer", tokens=[secrets.token_urlsafe(32)])


class UnauthenticatedBodies:
    """Bytes of request bodies being read before their sender is known (signature sources need the body to
    check it), per source and in all, so that senders without credentials cannot hold unbounded memory."""

    # Past this many bytes read since the last time, the heap is trimmed once no unverified body is left.
    TRIM_AFTER_BYTES = 4 * 1024 * 1024

    def __init__(self) -> None:
        self.total_bytes = 0
        self.by_source: dict[str, int] = {}
        self._since_trim_bytes = 0

    def reserve(self, source: str, size_bytes: int, *, max_total_bytes: int, max_per_source_bytes: int) -> bool:
        """Take `size_bytes` for `source` if both caps allow it; False (nothing taken) otherwise.

        A body is always admitted when nothing else is held, so caps below `server.max_body_bytes` cannot
        refuse every large body.
        """
        held_bytes = self.by_source.get(source, 0)
        if (self.total_bytes and self.total_bytes + size_bytes > max_total_bytes) or (
            held_bytes and held_bytes + size_bytes > max_per_source_bytes
        ):
            return False
        self.total_bytes += size_bytes
        self.by_source[source] = held_bytes + size_bytes
        return True

    def release(self, source: str, size_bytes: int) -> bool:
        """Give back what `reserve` took; True when the heap should now be trimmed (a burst of bodies is over)."""
        self.total_bytes -= size_bytes
        left_bytes = self.by_source[source] - size_bytes
        if left_bytes:
            self.by_source[source] = left_bytes
        else:
            del self.by_source[source]
        self._since_trim_bytes += size_bytes
        if self.total_bytes or self._since_trim_bytes < self.TRIM_AFTER_BYTES:
            return False
        self._since_trim_bytes = 0
        return True


UNAUTHENTICATED_BODIES = web.AppKey("unauthenticated_bodies", UnauthenticatedBodies)


def _credentials_problem(auth: InboundAuthConfig, headers: Mapping[str, str], now: datetime) -> str | None:
    """What can be checked before the body: everything for header credentials, the headers of a signature."""
    if isinstance(auth, StandardWebhooksAuth):
        try:
            check_signature_headers(headers, now=now, tolerance_s=auth.tolerance_s)
        except SignatureError as exc:
            return f"signature rejected: {exc}"
        return None
    return None if needs_body(auth) else authenticate(auth, headers, None, now=now)


async def handle_push(request: web.Request) -> web.Response:
    started = time.perf_counter()
    runtime: Runtime = request.app[RUNTIME]
    found = runtime.source(request.match_info["source"])
    source = found if isinstance(found, JsonPushSource) else None
    label = source.name if source else metrics.UNKNOWN
    try:
        if runtime.draining:
            return error(503, "draining", "the relay is shutting down; retry shortly")
        now = datetime.now(UTC)
        # Credentials come first, and an unknown name is refused like bad credentials: nothing about the
        # request (its size, type, channel or body) is looked at for a sender that is not known.
        reason = _credentials_problem(source.auth if source else DECOY_AUTH, request.headers, now)
        if source is None or reason:
            name = request.match_info["source"][:64]  # a configured name is at most 64 characters
            log.info("push refused", source=name, reason="no such JSON push source" if source is None else reason)
            _count(label, None, "unauthorized")
            return unauthorized()
        return await _handle(request, runtime, source, request.match_info.get("channel"), now)
    finally:
        metrics.labelled(metrics.INGEST_DURATION, label).observe(time.perf_counter() - started)


async def _handle(
    request: web.Request, runtime: Runtime, source: JsonPushSource, path_channel: str | None, now: datetime
) -> web.Response:
    name = source.name
    server = runtime.config.server
    max_bytes = server.max_body_bytes
    if request.content_length is not None and request.content_length > max_bytes:
        _count(name, path_channel, "refused")
        return error(413, "too_large", f"body is larger than {max_bytes} bytes")
    if not is_json_media_type(request.headers.get("Content-Type", "")):
        _count(name, path_channel, "refused")
        return error(415, "unsupported_media_type", "send the event as application/json")
    if needs_body(source.auth):
        bodies = request.app[UNAUTHENTICATED_BODIES]
        size_bytes = max_bytes if request.content_length is None else request.content_length
        if not bodies.reserve(
            name,
            size_bytes,
            max_total_bytes=server.max_unauthenticated_body_bytes,
            max_per_source_bytes=server.max_unauthenticated_body_bytes_per_source,
        ):
            log.info("push refused: too many unverified bodies in flight", source=name)
            _count(name, path_channel, "refused")
            return error(503, "busy", "too many unverified bodies are being received; retry shortly")
        try:
            body = await read_body(request, max_bytes, server.read_timeout_s)
        finally:
            if bodies.release(name, size_bytes):
                # A moment later: the bodies of the requests just ended are freed once their handlers are done.
                asyncio.get_running_loop().call_later(1.0, release_free_memory)
        if not isinstance(body, web.Response) and (reason := authenticate(source.auth, request.headers, body, now=now)):
            log.info("push refused", source=name, reason=reason)
            _count(name, None, "unauthorized")
            return unauthorized()
    else:
        body = await read_body(request, max_bytes, server.read_timeout_s)
    if isinstance(body, web.Response):
        _count(name, path_channel, "refused")
        return body
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
            runtime.specs, payload, path_channel=path_channel, allowed_channels=source.channels, raw=body
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
            content_type=header_for_record(request.headers, "Content-Type"),
        )
    except StoreUnavailable as exc:
        # The client still gets its 4xx with the reason; only the copy for inspection is missing.
        log.warning("quarantine not stored", source=source, error=str(exc))
        return None
    metrics.labelled(metrics.QUARANTINED, source).inc()
    return qid


def add_routes(app: web.Application) -> None:
    app[UNAUTHENTICATED_BODIES] = UnauthenticatedBodies()
    app.router.add_post("/v1/sources/{source}/events", handle_push)
    app.router.add_post("/v1/sources/{source}/events/{channel:.+}", handle_push)
