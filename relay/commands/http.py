"""`POST /v1/sources/{source}/commands/{command}` and `GET /v1/commands/{commandId}` (DESIGN §6).

The order of checks follows the JSON push route: credentials first (an unknown source gets the same 401 as
bad credentials), then the command (404), the Idempotency-Key (400), size and type (413, 415), the body
(400, 422 with JSON paths, quarantined). A command is answered 202 only once it is committed.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import orjson
import structlog
from aiohttp import web

from relay import metrics
from relay.auth.inbound import authenticate, check_bearer
from relay.commands.policy import body_hash, command_identity, idempotency_key_problem
from relay.config import SxeSource, X3Source
from relay.http.responses import error, json_response, unauthorized

# The JSON push route's checks and quarantine, shared so both answer alike.
from relay.ingest.json_push import DECOY_AUTH, _credentials_problem, _quarantine, is_json_media_type, read_body
from relay.runtime import RUNTIME, Runtime
from relay.spec import SpecError, SpecRegistry, load_specs
from relay.store import NewCommand, StoreUnavailable
from relay.views import command_json

log = structlog.get_logger(__name__)

__all__ = ["COMMAND_NOTIFY", "add_routes", "command_specs"]

# Called with the source name once a command is committed (the executor starts on it at once).
COMMAND_NOTIFY = web.AppKey("command_notify", list[Callable[[str], None]])


@cache
def command_specs() -> SpecRegistry:
    """The canonical commands (`relay-commands.yaml`, shipped with the relay).

    Raises:
        SpecError: the document is missing or broken.
    """
    package = Path(__file__).resolve().parent.parent
    for folder in (package / "_specs", package.parent / "specs" / "asyncapi"):
        path = folder / "relay-commands.yaml"
        if path.is_file():
            return load_specs([path])
    raise SpecError(f"relay-commands.yaml is missing from {package}")


def _count(source: str, command: str, outcome: str) -> None:
    metrics.labelled(metrics.COMMANDS, source, command, outcome).inc()


def _commands_source(runtime: Runtime, name: str) -> X3Source | SxeSource | None:
    found = runtime.source(name)
    return found if isinstance(found, X3Source | SxeSource) and found.commands is not None else None


async def handle_submit(request: web.Request) -> web.Response:
    runtime: Runtime = request.app[RUNTIME]
    source = _commands_source(runtime, request.match_info["source"])
    if runtime.draining:
        return error(503, "draining", "the relay is shutting down; retry shortly")
    now = datetime.now(UTC)
    auth = source.commands.auth if source and source.commands else DECOY_AUTH
    reason = _credentials_problem(auth, request.headers, now)
    if source is None or source.commands is None or reason:
        log.info("command refused", source=request.match_info["source"][:64], reason=reason or "no such source")
        return unauthorized()
    name, command = source.name, request.match_info["command"]
    if command not in source.commands.allow:
        return error(404, "unknown_command", f"source {name!r} does not accept {command[:64]!r}")
    key = request.headers.get("Idempotency-Key")
    if problem := idempotency_key_problem(key):
        _count(name, command, "invalid")
        return error(400, "idempotency_key", problem)
    assert key is not None
    server = runtime.config.server
    if request.content_length is not None and request.content_length > server.max_body_bytes:
        return error(413, "too_large", f"body is larger than {server.max_body_bytes} bytes")
    if not is_json_media_type(request.headers.get("Content-Type", "")):
        return error(415, "unsupported_media_type", "send the command as application/json")
    body = await read_body(request, server.max_body_bytes, server.read_timeout_s)
    if isinstance(body, web.Response):
        return body
    if (reason := authenticate(source.commands.auth, request.headers, body, now=now)) is not None:
        log.info("command refused", source=name, reason=reason)
        return unauthorized()
    try:
        payload = orjson.loads(body) if body.strip() else None
    except orjson.JSONDecodeError as exc:
        qid = await _quarantine(runtime, name, body, f"malformed JSON: {exc}", None, [], request)
        _count(name, command, "invalid")
        return error(400, "malformed_body", f"the body is not valid JSON: {exc}", quarantineId=qid)
    if payload is None:
        _count(name, command, "invalid")
        return error(400, "malformed_body", "the body is empty")
    if issues := command_specs().validate(command, payload):
        details = [{"path": i.path, "message": i.message} for i in issues]
        reason = "; ".join(f"{d['path']}: {d['message']}" for d in details)
        qid = await _quarantine(runtime, name, body, f"{command}: {reason}", None, details, request)
        _count(name, command, "invalid")
        return json_response(
            {"error": "invalid_payload", "message": reason[:1000], "details": details, "quarantineId": qid}, 422
        )
    order_key, reference = command_identity(command, payload)
    new = NewCommand(
        id="cmd_" + secrets.token_hex(12),
        source=name,
        command=command,
        idempotency_key=key,
        body_hash=body_hash(payload),
        body=orjson.dumps(payload),
        order_key=order_key,
        reference=reference,
        now=now,
    )
    try:
        row, created = await runtime.store.submit_command(new)
    except StoreUnavailable as exc:
        log.warning("store unavailable", source=name, error=str(exc))
        return error(503, "store_unavailable", "the command was not stored; retry shortly")
    if created:
        _count(name, command, "accepted")
        for notify in request.app.get(COMMAND_NOTIFY, []):
            notify(name)
        log.info("command accepted", source=name, command=command, command_id=row.id)
        return json_response({"commandId": row.id, "status": "accepted"}, 202)
    if row.body_hash != new.body_hash or row.command != command:
        _count(name, command, "conflict")
        return error(
            409, "idempotency_key_reused", "this Idempotency-Key was used with a different body", commandId=row.id
        )
    _count(name, command, "replayed")
    return json_response(command_json(row), 200)


async def handle_status(request: web.Request) -> web.Response:
    runtime: Runtime = request.app[RUNTIME]
    now = datetime.now(UTC)
    is_admin = check_bearer(request.headers, runtime.config.admin.token_values) is None
    row = await runtime.store.get_command(request.match_info["command_id"][:64])
    if not is_admin:
        source = _commands_source(runtime, row.source) if row is not None else None
        if source is None or source.commands is None:
            # Unknown id: found only for callers who hold some source's command credentials.
            holders = [s for s in runtime.config.sources if isinstance(s, X3Source | SxeSource) and s.commands]
            if row is None and any(
                authenticate(s.commands.auth, request.headers, b"", now=now) is None for s in holders if s.commands
            ):
                return error(404, "not_found", "no such command")
            return unauthorized()
        if authenticate(source.commands.auth, request.headers, b"", now=now) is not None:
            return unauthorized()
    if row is None:
        return error(404, "not_found", "no such command")
    return json_response(command_json(row))


def add_routes(app: web.Application) -> None:
    """Mount the command routes (the executor registers itself in `app[COMMAND_NOTIFY]`)."""
    app[COMMAND_NOTIFY] = []
    app.router.add_post("/v1/sources/{source}/commands/{command:.+}", handle_submit)
    app.router.add_get("/v1/commands/{command_id}", handle_status)
