"""`GET /v1/state/{noun}/{key}` and `GET /v1/state/{noun}`: the current state of business keys.

Authorized by a `state.tokens` bearer token or an admin token (the same check as the admin API's).
"""

from __future__ import annotations

import re

from aiohttp import web

from relay.auth.inbound import check_bearer
from relay.http.responses import error, json_response
from relay.ops import NotFoundError, Operations
from relay.runtime import RUNTIME
from relay.views import state_json

__all__ = ["add_routes"]

_NOUN = re.compile(r"[a-z][a-z0-9_-]{0,63}")
_LIMIT = re.compile(r"[0-9]{1,4}")
_MAX_LIMIT = 1000


def _authorized(request: web.Request) -> bool:
    config = request.app[RUNTIME].config
    return check_bearer(request.headers, [*config.state.tokens, *config.admin.token_values]) is None


async def show_state(request: web.Request) -> web.Response:
    if not _authorized(request):
        return error(401, "unauthorized", "a state or admin bearer token is required")
    noun, key = request.match_info["noun"], request.match_info["key"]
    if not _NOUN.fullmatch(noun):
        return error(400, "bad_request", "noun: expected a lower-case name such as inventory")
    try:
        record = await Operations.of(request.app[RUNTIME]).show_state(noun, key)
    except NotFoundError as exc:
        return error(404, "not_found", str(exc))
    return json_response(state_json(record))


async def list_state(request: web.Request) -> web.Response:
    if not _authorized(request):
        return error(401, "unauthorized", "a state or admin bearer token is required")
    noun = request.match_info["noun"]
    if not _NOUN.fullmatch(noun):
        return error(400, "bad_request", "noun: expected a lower-case name such as inventory")
    limit_text = request.query.get("limit", "100")
    if not _LIMIT.fullmatch(limit_text) or not 1 <= int(limit_text) <= _MAX_LIMIT:
        return error(400, "bad_request", f"limit: expected a number from 1 to {_MAX_LIMIT}")
    records = await Operations.of(request.app[RUNTIME]).list_state(
        noun, prefix=request.query.get("prefix", ""), after=request.query.get("after", ""), limit=int(limit_text)
    )
    items = [state_json(r) for r in records]
    following = records[-1].entity_key if len(records) == int(limit_text) else None
    return json_response({"items": items, "next": following})


def add_routes(app: web.Application) -> None:
    # `{key:.+}`: a key may hold an encoded `/`; aiohttp matches on the decoded path.
    app.router.add_get("/v1/state/{noun}/{key:.+}", show_state)
    app.router.add_get("/v1/state/{noun}", list_state)
