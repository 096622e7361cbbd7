"""The one aiohttp application: ingest, health, metrics, the AsyncAPI document, admin."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
import yaml
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from relay.http.responses import error, json_response
from relay.monitoring import refresh_store_gauges
from relay.runtime import RUNTIME, Runtime
from relay.store import StoreUnavailable

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

__all__ = ["build_app"]


def _drop_payload_traceback(request: web.Request) -> None:
    # A client that goes away mid-body leaves its exception in the request's payload; the exception's
    # traceback holds the frames that hold the body read so far, in a cycle through the request: without
    # this the body waits for the next cyclic garbage collection, however large it is.
    exc = request.content.exception()
    if exc is not None:
        exc.__traceback__ = None


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.content_type != "application/json":
            return error(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
        raise
    except StoreUnavailable:
        return error(503, "store_unavailable", "the store is unavailable; retry shortly")
    except ConnectionError as exc:
        if request.transport is None or request.transport.is_closing():
            # The client went away mid-request (a dropped or abandoned body): aiohttp ends the connection
            # quietly; an error log line (and a 500) per disconnect would let any client flood the log.
            _drop_payload_traceback(request)
            raise exc.with_traceback(None) from None
        log.exception("unhandled error", path=request.path, method=request.method)
        return error(500, "internal_error", "an internal error occurred; it has been logged")
    except Exception:
        log.exception("unhandled error", path=request.path, method=request.method)
        return error(500, "internal_error", "an internal error occurred; it has been logged")
    _drop_payload_traceback(request)
    return response


async def livez(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    if runtime.draining:
        return error(503, "draining", "the relay is shutting down")
    try:
        await runtime.store.ping()
    except StoreUnavailable as exc:
        return error(503, "store_unavailable", str(exc))
    return json_response({"status": "ready"})


async def metrics_route(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    await refresh_store_gauges(runtime.store, [s.name for s in runtime.config.subscribers])
    body = generate_latest()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def asyncapi_route(request: web.Request) -> web.Response:
    from relay.spec import export_document

    version = request.query.get("version", "2.6")
    if version not in ("2.6", "3.0"):
        return error(400, "bad_version", "version must be 2.6 or 3.0")
    document = export_document(request.app[RUNTIME].specs, "3.0" if version == "3.0" else "2.6")
    text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    return web.Response(text=text, content_type="application/yaml")


def build_app(runtime: Runtime) -> web.Application:
    """The relay's HTTP application bound to `runtime`."""
    from relay.http import admin, state
    from relay.ingest import ion_ims, json_push
    from relay.logs import quiet_client_errors
    from relay.lookups import routes as lookup_routes

    quiet_client_errors()

    # The body limit is enforced per route (with a JSON 413); this cap only stops unbounded reads.
    app = web.Application(middlewares=[_errors], client_max_size=runtime.config.server.max_body_bytes, handler_args={})
    app[RUNTIME] = runtime
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_route)
    app.router.add_get("/asyncapi.yaml", asyncapi_route)
    json_push.add_routes(app)
    ion_ims.add_routes(app)
    admin.add_routes(app)
    if runtime.config.console.enabled:
        from relay.console import routes as console

        console.add_routes(app)
    state.add_routes(app)
    lookup_routes.add_routes(app)
    return app
