"""Infor ION IMS v3 push receiver under `/ion/{source}/service/…`.

An ION connection point of type "IMS via API Gateway" posts each BOD as multipart/form-data with a
`ParameterRequest` (JSON) and a `MessagePayload` (the BOD XML, deflated when `encoding` is DEFLATE) to
`v3/multipartMessage` or `v3/message/multipart` (v2: `v2/multipartMessage`, both parts under one name).
Every BOD becomes one or more canonical events, committed with their deliveries before the 202.
"""

from __future__ import annotations

import asyncio
import codecs
import re
import time
import zlib
from dataclasses import dataclass
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
    ParsedBod,
    UnmappedDocument,
    mapped_document_names,
    parse_bod,
    parse_mapping_overrides,
)
from relay.ingest.bod_events import XML, ImsContext, bod_candidates
from relay.ingest.ion_confirm import Refused, queue_confirm
from relay.ingest.json_push import DECOY_AUTH
from relay.runtime import RUNTIME, Runtime
from relay.store import StoreUnavailable

log = structlog.get_logger(__name__)

__all__ = ["add_routes"]

# Discovery is implemented (v3, and v2 for older ION): ION Desk may call it from the Documents tab.
PROTOCOL = {"version": "v3", "messageMethod": "multipartMessage", "hasDiscovery": True}
# IMS sends two parts (ParameterRequest, MessagePayload); a few more are tolerated, thousands cost CPU.
MAX_PARTS = 16
_TOO_MANY_PARTS = f"the multipart body has more than {MAX_PARTS} parts (IMS sends ParameterRequest and MessagePayload)"


class _Refusal(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        body: bytes | None = None,
        context: ImsContext | None = None,
        bod: ParsedBod | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.body = body
        self.context = context
        self.bod = bod


@dataclass(frozen=True, slots=True)
class Part:
    """One multipart part as received: its name (None without one), content type and bytes."""

    name: str | None
    content_type: str
    data: bytes


PARAMETERS, PAYLOAD = "ParameterRequest", "MessagePayload"


def pick_ims_parts(parts: list[Part]) -> tuple[bytes, bytes]:
    """The ParameterRequest and MessagePayload bytes of an IMS multipart body.

    By name when each name is there once. IMS v2 sends both parts under one name (Infor's v2 → v3
    guidelines), so when names repeat or are missing, two parts are told apart by content type (the JSON
    one holds the parameters) and else by order (parameters first, as every public sample sends them).

    Raises:
        ValueError: The parts cannot be told apart; the message says what was received.
    """
    named = {p.name: p for p in parts if p.name}
    names = [p.name for p in parts]
    if names.count(PARAMETERS) == 1 and names.count(PAYLOAD) == 1:
        return named[PARAMETERS].data, named[PAYLOAD].data
    if len(parts) == 2 and (names[0] == names[1] or not {PARAMETERS, PAYLOAD} & set(names)):
        json_parts = [p for p in parts if p.content_type.split(";")[0].strip().lower().endswith("json")]
        if len(json_parts) == 1:
            other = next(p for p in parts if p is not json_parts[0])
            return json_parts[0].data, other.data
        return parts[0].data, parts[1].data
    seen = ", ".join(repr(n) if n else "(unnamed)" for n in names) or "none"
    raise ValueError(f"the parts {PARAMETERS} and {PAYLOAD} are both required (received parts: {seen})")


# Infor documents the numeric batch headers as at most this value.
_BATCH_MAX = 9223372036854775807


def batch_problem(params: dict[str, Any]) -> str | None:
    """What is wrong with the IMS batch parameters (`batchId`, `batchSequence`, `batchSize`,
    `batchRevision`, `batchAbortIndicator`), or None: types and ranges as Infor documents them."""
    batch_id = params.get("batchId")
    if batch_id is not None and (not isinstance(batch_id, str) or len(batch_id) > 250):
        return "ParameterRequest.batchId must be text of at most 250 characters"
    for key in ("batchSequence", "batchSize", "batchRevision"):
        value = params.get(key)
        if value is None or value == "":
            continue
        text = str(value) if isinstance(value, int | str) and not isinstance(value, bool) else ""
        if not re.fullmatch(r"\d{1,19}", text) or int(text) > _BATCH_MAX:
            return f"ParameterRequest.{key} must be a whole number from 0 to {_BATCH_MAX}"
    abort = params.get("batchAbortIndicator")
    if abort is not None and not isinstance(abort, bool) and str(abort).lower() not in ("true", "false", ""):
        return "ParameterRequest.batchAbortIndicator must be true or false"
    return None


def is_batch_abort(params: dict[str, Any]) -> bool:
    """Whether the message announces that its batch is abandoned (`batchAbortIndicator` true)."""
    return str(params.get("batchAbortIndicator", "")).lower() == "true"


_XML_DECLARED_ENCODING = re.compile(rb"^\s*<\?xml[^>]*\bencoding\s*=", re.ASCII)


def to_utf8(payload: bytes, character_set: Any) -> bytes:
    """The payload as UTF-8 XML, honouring the IMS `characterSet` when the XML does not declare its own.

    Raises:
        ValueError: An unknown character set, or bytes that are not in it.
    """
    if character_set is None or character_set == "":
        return payload
    name = str(character_set).strip()
    try:
        codec = codecs.lookup(name)
    except LookupError:
        raise ValueError(f"ParameterRequest.characterSet {name[:40]!r} is not a known character set") from None
    if codec.name == "utf-8" or _XML_DECLARED_ENCODING.match(payload):
        return payload  # the XML declaration, when present, is what the parser follows
    try:
        return payload.decode(codec.name).encode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"MessagePayload is not valid {name[:40]} text (ParameterRequest.characterSet)") from None


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


async def _read_parts(request: web.Request, max_bytes: int, timeout_s: float) -> list[Part]:
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


async def _collect_parts(request: web.Request, max_bytes: int) -> list[Part]:
    parts: list[Part] = []
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
            content_type = part.headers.get("Content-Type", "")
            parts.append(Part(name or None, content_type, b"".join(chunks)))
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
            qid = await _quarantine(runtime, source.name, refusal.body, str(refusal), refusal.context)
        if source.confirm is not None and (refused := _refused(refusal)) is not None:
            # After the quarantine commit; it never changes the answer (a failure is logged and counted).
            await queue_confirm(runtime, source, refused)
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
    try:
        raw_params, payload = pick_ims_parts(parts)
    except ValueError as exc:
        raise _Refusal(400, "malformed_multipart", str(exc)) from None
    try:
        params = orjson.loads(raw_params)
    except orjson.JSONDecodeError as exc:
        raise _Refusal(400, "malformed_parameters", f"ParameterRequest is not JSON: {exc}") from None
    if not isinstance(params, dict):
        raise _Refusal(400, "malformed_parameters", "ParameterRequest must be a JSON object")
    document_name = params.get("documentName")
    if not isinstance(document_name, str) or not document_name:
        raise _Refusal(400, "malformed_parameters", "ParameterRequest.documentName is required")
    if document_name not in accepted_documents(source):
        raise _Refusal(412, "document_not_accepted", f"this connection point does not accept {document_name}")
    if problem := batch_problem(params):
        raise _Refusal(400, "malformed_parameters", problem)
    encoding = str(params.get("encoding") or "NONE").upper()
    if encoding == "DEFLATE":
        payload = _inflate(payload, max_bytes)
    elif encoding != "NONE":
        raise _Refusal(400, "malformed_parameters", f"unknown encoding {encoding!r} (NONE or DEFLATE)")
    try:
        payload = to_utf8(payload, params.get("characterSet"))
    except ValueError as exc:
        raise _Refusal(400, "malformed_parameters", str(exc)) from None
    if is_batch_abort(params):
        # The parts of a batch are stored as they come (each is a valid document); an abort cannot recall
        # what was already delivered, so it is acknowledged, logged and stores nothing.
        log.warning("IMS batch aborted", source=source.name, batch_id=str(params.get("batchId"))[:250])
        return json_response({"status": "discarded", "messageId": params.get("messageId")}, 200)
    try:
        tenant_header = header_text(request.headers, "X-TenantId")
    except MalformedHeader as exc:
        raise _Refusal(400, "malformed_header", str(exc)) from None
    from_lid = params.get("fromLogicalId")
    message_id = params.get("messageId")
    context = ImsContext(
        tenant_id=tenant_header or source.tenant_id,
        from_logical_id=from_lid if isinstance(from_lid, str) else None,
        variation_id=None,
        message_id=str(message_id)[:250] if isinstance(message_id, str | int) else None,
        document_name=document_name,
    )
    variation_id = _variation_id(params.get("variationId"), payload, context)
    context = ImsContext(
        tenant_id=context.tenant_id,
        from_logical_id=context.from_logical_id,
        variation_id=variation_id,
        message_id=context.message_id,
        document_name=document_name,
    )
    try:
        bod = parse_bod(payload)
    except BodError as exc:
        raise _Refusal(400, "malformed_xml", str(exc), body=payload, context=context) from None
    try:
        candidates, problems = bod_candidates(bod, payload, context, mappings=_mappings(source), specs=runtime.specs)
    except UnmappedDocument as exc:
        raise _Refusal(412, "document_not_accepted", str(exc), bod=bod) from None
    except BodError as exc:
        raise _Refusal(400, "malformed_xml", str(exc), body=payload, context=context, bod=bod) from None
    if problems:
        raise _Refusal(422, "invalid_payload", "; ".join(problems), body=payload, context=context, bod=bod)
    if not candidates:
        message = f"{document_name} carried no entity to map"
        raise _Refusal(422, "invalid_payload", message, body=payload, context=context, bod=bod)
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


def _refused(refusal: _Refusal) -> Refused | None:
    """What a ConfirmBOD reports for a refusal, when its BOD can be read (broken XML has no ConfirmationCode)."""
    bod = refusal.bod
    if bod is None and refusal.body is not None:
        try:
            bod = parse_bod(refusal.body)
        except BodError:
            return None
    if bod is None:
        return None
    return Refused(bod, str(refusal), refusal.code, refusal.context)


def _variation_id(value: Any, payload: bytes, context: ImsContext) -> str | None:
    """The IMS `variationId` as text (a string or an integer), or None when absent; a 422 when unusable."""
    if value is None or value == "":
        return None
    # bool is an int to Python, and a float is what an integer beyond 64 bits became when the JSON was read.
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _Refusal(
            422,
            "invalid_payload",
            "ParameterRequest.variationId must be a string or an integer",
            body=payload,
            context=context,
        )
    text = str(value)
    if problem := version_problem(text):
        raise _Refusal(422, "invalid_payload", f"ParameterRequest.variationId {problem}", body=payload, context=context)
    return text


async def _quarantine(
    runtime: Runtime, source: str, body: bytes, reason: str, context: ImsContext | None
) -> int | None:
    try:
        qid = await runtime.ingestor.quarantine(
            source=source,
            body=body,
            reason=reason,
            received_at=datetime.now(UTC),
            content_type=XML,
            details=[context.detail()] if context is not None else None,
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
    app.router.add_post(base + "/v3/discovery", discovery)
    app.router.add_post(base + "/v2/multipartMessage", multipart_message)
    app.router.add_post(base + "/v3/multipartMessage", multipart_message)
    app.router.add_post(base + "/v3/message/multipart", multipart_message)
