"""`GET|POST /v1/sources/{source}/availability`: live availability through a source's `lookup:` block."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from relay.auth.inbound import authenticate
from relay.config import SxeSource, X3Source
from relay.http.responses import error, json_response, unauthorized
from relay.lookups import Availability, LookupService, LookupUnavailable, UnknownPart, availability_json
from relay.runtime import RUNTIME

__all__ = ["LOOKUPS", "LookupRegistry", "add_routes"]

MAX_PARTS = 200
_MAX_TEXT = 256


class LookupRegistry:
    """One `LookupService` per source with a `lookup:` block, rebuilt when the source's configuration changes."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._services: dict[str, tuple[object, LookupService]] = {}

    def service(self, request: web.Request, name: str) -> LookupService | None:
        runtime = request.app[RUNTIME]
        source = runtime.source(name)
        if not isinstance(source, SxeSource | X3Source) or source.lookup is None:
            return None
        known = self._services.get(name)
        if known is not None and known[0] is source:
            return known[1]
        if self._session is None:
            self._session = aiohttp.ClientSession()
        client: Any
        if isinstance(source, SxeSource):
            from relay.auth.ionapi import TokenManager, load_ionapi
            from relay.lookups.erp import SxeAvailability

            client = SxeAvailability(source, TokenManager(load_ionapi(Path(source.ionapi_file)), self._session))
        else:
            from relay.lookups.erp import X3Availability

            client = X3Availability(source, self._session)
        service = LookupService(name, client, source.lookup, runtime.store)
        self._services[name] = (source, service)
        return service

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


LOOKUPS = web.AppKey("lookups", LookupRegistry)


def _service(request: web.Request) -> LookupService | web.Response:
    name = request.match_info["source"]
    service = request.app[LOOKUPS].service(request, name)
    if service is None or service.config is None:
        return unauthorized()
    if authenticate(service.config.auth, request.headers, None, now=datetime.now(UTC)) is not None:
        return unauthorized()
    return service


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > _MAX_TEXT:
        raise ValueError(f"{name}: expected a non-empty text of at most {_MAX_TEXT} characters")
    return value


async def get_availability(request: web.Request) -> web.Response:
    service = _service(request)
    if isinstance(service, web.Response):
        return service
    try:
        part = _text(request.query.get("part"), "part")
        warehouse = request.query.get("warehouse")
        if warehouse is not None:
            _text(warehouse, "warehouse")
    except ValueError as exc:
        return error(400, "bad_request", str(exc))
    try:
        answer = await service.lookup(part, warehouse)
    except UnknownPart:
        return error(404, "unknown_part", f"the ERP does not know part {part!r}")
    except LookupUnavailable as exc:
        return error(504, "lookup_unavailable", str(exc))
    return json_response(availability_json(answer, datetime.now(UTC)))


async def post_availability(request: web.Request) -> web.Response:
    service = _service(request)
    if isinstance(service, web.Response):
        return service
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return error(400, "bad_request", 'expected a JSON object {"parts": [...], "warehouse"?: "..."}')
    try:
        if not isinstance(body, dict) or not isinstance(body.get("parts"), list) or not body["parts"]:
            raise ValueError('parts: expected a non-empty list of part numbers, e.g. {"parts": ["P-100"]}')
        if len(body["parts"]) > MAX_PARTS:
            raise ValueError(f"parts: at most {MAX_PARTS} parts in one request, got {len(body['parts'])}")
        parts = [_text(p, f"parts[{i}]") for i, p in enumerate(body["parts"])]
        warehouse = body.get("warehouse")
        if warehouse is not None:
            _text(warehouse, "warehouse")
    except ValueError as exc:
        return error(400, "bad_request", str(exc))
    answers = await service.lookup_many(parts, warehouse)
    now = datetime.now(UTC)
    return json_response(
        {
            "results": [availability_json(a, now) for a in answers.values() if isinstance(a, Availability)],
            "unknown": [p for p, a in answers.items() if a == "unknown"],
            "unavailable": [p for p, a in answers.items() if a == "unavailable"],
        }
    )


def add_routes(app: web.Application) -> None:
    registry = LookupRegistry()
    app[LOOKUPS] = registry

    async def close(_: web.Application) -> None:
        await registry.close()

    app.on_cleanup.append(close)
    app.router.add_get("/v1/sources/{source}/availability", get_availability)
    app.router.add_post("/v1/sources/{source}/availability", post_availability)
