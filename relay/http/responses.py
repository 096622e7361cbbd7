"""JSON answers shared by every route."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

JSON = "application/json"


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type=JSON, headers=headers)


def error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    """`{"error": code, "message": ...}` plus extra fields; 503s carry Retry-After."""
    headers = {"Retry-After": "1"} if status == 503 else None
    if status == 401:
        headers = {"WWW-Authenticate": 'Bearer realm="erp-relay"'}
    return json_response({"error": code, "message": message, **extra}, status, headers)


def unauthorized() -> web.Response:
    """The one 401 of the ingest routes: bad credentials, an unknown source and a source of another kind get
    the same answer, so source names and their kinds cannot be probed."""
    return error(401, "unauthorized", "missing or invalid credentials")
