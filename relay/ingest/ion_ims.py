"""Infor ION IMS v3 push receiver under `/ion/{source}/service/…`.

An ION connection point of type "IMS via API Gateway" posts each BOD as multipart/form-data with a
`ParameterRequest` (JSON) and a `MessagePayload` (the BOD XML, deflated when `encoding` is DEFLATE).
Every BOD becomes one or more canonical events, committed with their deliveries before the 202.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson
import structlog
from aiohttp import web

from relay import metrics
from relay.auth.inbound import authenticate
from relay.config import IonImsSource
from relay.events import version_problem
from relay.http.headers import MalformedHeader, header_text
from relay.http.responses import error, json_response, unauthorized
from relay.ingest.bod import (
    BodError,
    UnmappedDocument,
    map_bod,
    mapped_document_names,
    parse_bod,
    parse_mapping_overrides,
)
from relay.ingest.json_push import DECOY_AUTH
from relay.ingest.pipeline import Candidate, check_candidate
from relay.runtime import RUNTIME, Runtime
from relay.store import StoreUnavailable

log = structlog.get_logger(__name__)

__all__ = ["add_routes"]

PROTOCOL = {"version": "v3", "messageMethod": "multipartMessage", "hasDiscovery": True}
XML = "application/xml"
# IMS sends two parts (ParameterRequest, MessagePayload); a few more are tolerated, thousands cost CPU.
MAX_PARTS = 16
_TOO_MANY_PARTS = f"the multipart body has more than {MAX_PARTS} parts (IMS sends ParameterRequest and MessagePayload)"


class _Refusal(Exception):
    def __init__(self, status: int, code: str, message: str, *, body: bytes | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.body = body


def _source(request: web.Request) -> tuple[Runtime, IonImsSource] | web.Response:
    runtime = request.app[RUNTIME]
    found = runtime.source(request.match_info["source"])
    source = found if isinstance(found, IonImsSource) else None
    # An unknown name is refused like bad credentials (after a check of the same cost): names cannot be probed.
    reason = authenticate(source.auth if source else DECOY_AUTH, request.headers, None, now=datetime.now(UTC))
    if source is None or reason:
        name = request.match_info["source"][:64]  # a configured name is at most 64 characters
        log.info("IMS request refused", source=name, reason="no such ION IMS source" if source is None else reason)
        metrics.labelled(metrics.EVENTS_RECEIVED, source.name if source else "-", "-", "unauthorized").inc()
        return unauthorized()
    return runtime, source


def _mappings(source: IonImsSource) -> Any:
    return _parsed_mappings(orjson.dumps(source.mappings, option=orjson.OPT_SORT_KEYS).decode())


@lru_cache(maxsize=64)
def _parsed_mappings(raw: str) -> Any:
    # Keyed by the overrides' JSON text: parsed once per distinct configuration, reloads included.
    return parse_mapping_overrides(orjson.loads(raw))


def accepted_documents(source: IonImsSource) -> list[str]:
    return list(source.accepted_documents or mapped_document_names(_mappings(source)))


async def ping(request: web.Request) -> web.Response:
    found = _source(request)
    if isinstance(found, web.Response):
        return found
    return web.Response(status=200, text="OK")


async def protocol(request: web.Request) -> web.Response:
    found = _source(request)
    if isinstance(found, web.Response):
        return found
    return json_response(PROTOCOL)


async def discovery(request: web.Request) -> web.Response:
    found = _source(request)
    if isinstance(found, web.Response):
        return found
    _, source = found
    return json_response({"acceptedDocuments": accepted_documents(source)})


async def _read_parts(request: web.Request, max_bytes: int, timeout_s: float) -> dict[str, bytes]:
    if request.content_length is not None and request.content_length > max_bytes:
        raise _Refusal(413, "too_large", f"body is larger than {max_bytes} bytes")
    if not request.content_type.startswith("multipart/"):
        raise _Refusal(
            400, "malformed_multipart", "expected multipart/form-data with ParameterRequest and MessagePayload"
        )
    try:
        async with asyncio.timeout(timeout_s):
            return await _collect_parts(request, max_bytes)
    except TimeoutError:
        # A trickling sender (slow loris) holds a connection and a buffer: answer and let it go.
        raise _Refusal(408, "request_timeout", f"the body did not arrive within {timeout_s:g}s") from None


async def _collect_parts(request: web.Request, max_bytes: int) -> dict[str, bytes]:
    parts: dict[str, bytes] = {}
    total = 0
    try:
        reader = await request.multipart()
        count = 0
        while (part := await reader.next()) is not None:
            count += 1
            if count > MAX_PARTS:
                raise _Refusal(413, "too_many_parts", _TOO_MANY_PARTS)
            name = getattr(part, "name", None)
            chunks = []
            while chunk := await part.read_chunk(65536):  # type: ignore[union-attr]
                total += len(chunk)
                if total > max_bytes:
                    raise _Refusal(413, "too_large", f"body is larger than {max_bytes} bytes")
                chunks.append(chunk)
            if name:
                parts[name] = b"".join(chunks)
    except _Refusal:
        raise
    except web.HTTPRequestEntityTooLarge:
        raise _Refusal(413, "too_large", f"body is larger than {max_bytes} bytes") from None
    except Exception as exc:  # aiohttp raises several types for broken multipart bodies
        raise _Refusal(400, "malformed_multipart", f"cannot read the multipart body: {exc}") from None
    return parts


def _inflate(data: bytes, max_bytes: int) -> bytes:
    # Bounded inflate: a small deflated payload must not expand into gigabytes (a decompression bomb).
    for wbits in (zlib.MAX_WBITS, -zlib.MAX_WBITS):
        inflater = zlib.decompressobj(wbits)
        try:
            out = inflater.decompress(data, max_bytes + 1)
        except zlib.error:
            continue
        if len(out) > max_bytes or inflater.unconsumed_tail:
            raise _Refusal(413, "too_large", f"the inflated payload is larger than {max_bytes} bytes")
        return out
    raise _Refusal(400, "malformed_payload", "MessagePayload is not valid DEFLATE data")


async def multipart_message(request: web.Request) -> web.Response:
    started = time.perf_counter()
    if request.app[RUNTIME].draining:
        return error(503, "draining", "the relay is shutting down; retry shortly")
    found = _source(request)
    if isinstance(found, web.Response):
        return found
    runtime, source = found
    try:
        return await _receive(request, runtime, source)
    except _Refusal as refusal:
        qid = None
        if refusal.body is not None:
            qid = await _quarantine(runtime, source.name, refusal.body, str(refusal), request)
        result = "invalid" if refusal.status in (400, 422) else "refused"
        metrics.labelled(metrics.EVENTS_RECEIVED, source.name, "-", result).inc()
        log.info("IMS message refused", source=source.name, status=refusal.status, reason=str(refusal)[:300])
        extra: dict[str, Any] = {"quarantineId": qid} if qid is not None else {}
        return error(refusal.status, refusal.code, str(refusal)[:1000], **extra)
    finally:
        metrics.labelled(metrics.INGEST_DURATION, source.name).observe(time.perf_counter() - started)


async def _receive(request: web.Request, runtime: Runtime, source: IonImsSource) -> web.Response:
    max_bytes = runtime.config.server.max_body_bytes
    parts = await _read_parts(request, max_bytes, runtime.config.server.read_timeout_s)
    if "ParameterRequest" not in parts or "MessagePayload" not in parts:
        raise _Refusal(400, "malformed_multipart", "the parts ParameterRequest and MessagePayload are both required")
    try:
        params = orjson.loads(parts["ParameterRequest"])
    except orjson.JSONDecodeError as exc:
        raise _Refusal(400, "malformed_parameters", f"ParameterRequest is not JSON: {exc}") from None
    if not isinstance(params, dict):
        raise _Refusal(400, "malformed_parameters", "ParameterRequest must be a JSON object")
    document_name = params.get("documentName")
    if not isinstance(document_name, str) or not document_name:
        raise _Refusal(400, "malformed_parameters", "ParameterRequest.documentName is required")
    if document_name not in accepted_documents(source):
        raise _Refusal(412, "document_not_accepted", f"this connection point does not accept {document_name}")
    payload = parts["MessagePayload"]
    encoding = str(params.get("encoding") or "NONE").upper()
    if encoding == "DEFLATE":
        payload = _inflate(payload, max_bytes)
    elif encoding != "NONE":
        raise _Refusal(400, "malformed_parameters", f"unknown encoding {encoding!r} (NONE or DEFLATE)")
    variation_id = _variation_id(params.get("variationId"), payload)
    try:
        tenant_header = header_text(request.headers, "X-TenantId")
    except MalformedHeader as exc:
        raise _Refusal(400, "malformed_header", str(exc)) from None
    try:
        bod = parse_bod(payload)
        tenant = tenant_header or source.tenant_id
        mapped = map_bod(
            bod,
            tenant_id=tenant,
            source_logical_id=params.get("fromLogicalId") if isinstance(params.get("fromLogicalId"), str) else None,
            mappings=_mappings(source),
            variation_id=variation_id,
        )
    except UnmappedDocument as exc:
        raise _Refusal(412, "document_not_accepted", str(exc)) from None
    except BodError as exc:
        raise _Refusal(400, "malformed_xml", str(exc), body=payload) from None
    candidates = []
    problems = []
    for item in mapped:
        issues = runtime.specs.validate(item.channel, item.payload) if runtime.specs.has_channel(item.channel) else []
        if not runtime.specs.has_channel(item.channel):
            problems.append(f"{item.channel}: no such channel in the loaded specs")
        problems.extend(f"{item.channel} {i.path}: {i.message}" for i in issues)
        candidate = Candidate(
            item.channel,
            item.payload,
            original=payload,
            original_type=XML,
            version=item.version,
            entity_key=item.entity_key,
        )
        # What the store derives (ids, versions, instants) is checked here, so a bad value fails this document alone.
        problems.extend(
            f"{item.channel} {i.path}: {i.message}" for i in check_candidate(candidate, version_path="variationID")
        )
        candidates.append(candidate)
    if problems:
        raise _Refusal(422, "invalid_payload", "; ".join(problems), body=payload)
    if not candidates:
        raise _Refusal(422, "invalid_payload", f"{document_name} carried no entity to map", body=payload)
    try:
        outcomes = await runtime.ingestor.commit(source.name, candidates, received_at=datetime.now(UTC))
    except StoreUnavailable as exc:
        log.warning("store unavailable", source=source.name, error=str(exc))
        return error(503, "store_unavailable", "the document was not stored; retry shortly")
    for outcome, candidate in zip(outcomes, candidates, strict=True):
        metrics.labelled(metrics.EVENTS_RECEIVED, source.name, candidate.channel, outcome.status).inc()
    accepted = [o for o in outcomes if o.status == "accepted"]
    body = {
        "status": "accepted" if accepted else "duplicate",
        "messageId": params.get("messageId"),
        "events": [{"eventId": o.event_id, "status": o.status, "deliveries": o.deliveries} for o in outcomes],
    }
    return json_response(body, 202 if accepted else 200)


def _variation_id(value: Any, payload: bytes) -> str | None:
    """The IMS `variationId` as text (a string or an integer), or None when absent; a 422 when unusable."""
    if value is None or value == "":
        return None
    # bool is an int to Python, and a float is what an integer beyond 64 bits became when the JSON was read.
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _Refusal(
            422, "invalid_payload", "ParameterRequest.variationId must be a string or an integer", body=payload
        )
    text = str(value)
    if problem := version_problem(text):
        raise _Refusal(422, "invalid_payload", f"ParameterRequest.variationId {problem}", body=payload)
    return text


async def _quarantine(runtime: Runtime, source: str, body: bytes, reason: str, request: web.Request) -> int | None:
    try:
        qid = await runtime.ingestor.quarantine(
            source=source, body=body, reason=reason, received_at=datetime.now(UTC), content_type=XML
        )
    except StoreUnavailable:
        return None
    metrics.labelled(metrics.QUARANTINED, source).inc()
    return qid


def add_routes(app: web.Application) -> None:
    base = "/ion/{source}/service"
    app.router.add_get(base + "/ping", ping)
    app.router.add_get(base + "/protocol", protocol)
    app.router.add_post(base + "/v2/discovery", discovery)
    app.router.add_post(base + "/v2/multipartMessage", multipart_message)
    app.router.add_post(base + "/v3/multipartMessage", multipart_message)
