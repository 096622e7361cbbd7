"""An Infor ION simulator: OAuth2 token endpoint, API gateway, BOD generator and IMS push sender.

Used by the tests and `relay demo`. It behaves as PROTOCOLS.md describes; what the public documentation
leaves open (error bodies, refresh-token lifetime, multipart content types) is configurable or documented
here as the simulator's choice.

* `IonSimulator` serves, for one tenant, `POST /{tenant}/as/token.oauth2` (password and refresh_token grants;
  like the ION API it has no client_credentials grant), `POST /{tenant}/as/revoke_token.oauth2`, and a gateway
  under `/{tenant}/…` that checks bearer tokens and routes to handlers added with `add_gateway_route`; behind
  it, IMS `IONSERVICES/api/ion/messaging/service/v2/multipartMessage` takes messages from applications and
  checks ConfirmBODs (`check_confirm_bod`), kept in `ims_messages` and `confirms` for tests.
* `BodFactory` writes realistic BODs for Halloran Electrical Supply with the element paths that
  `relay.ingest.bod.DEFAULT_MAPPINGS` reads.
* `plan_ims_traffic` makes a deterministic mix of new, duplicate, out-of-order and malformed IMS messages,
  and `push_bods` posts them as ION's IMS v3 `multipartMessage` does.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import random
import re
import secrets
import time
import uuid
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from xml.etree import ElementTree
from xml.etree.ElementTree import Element
from xml.sax.saxutils import escape, quoteattr

import aiohttp
import orjson
from aiohttp import web

from relay.ingest.bod import map_bod, parse_bod
from relay.sim import SHUTDOWN_GRACE_S

__all__ = [
    "BOD_KINDS",
    "BodFactory",
    "GatewayCall",
    "GatewayHandler",
    "GeneratedBod",
    "ImsKind",
    "ImsMessage",
    "IonSimulator",
    "PushResult",
    "ReceivedConfirm",
    "ReceivedImsMessage",
    "check_confirm_bod",
    "make_ims_message",
    "plan_ims_traffic",
    "push_bods",
    "read_ims_message",
    "running_ion_simulator",
]

OAGIS_NAMESPACE = "http://schema.infor.com/InforOAGIS/2"
DEFAULT_TENANT = "HALLORAN"
DEFAULT_LOGICAL_ID = "lid://infor.sxe.halloran"
DEFAULT_RELAY_LOGICAL_ID = "lid://infor.erp-relay.relay"

GatewayHandler = Callable[[web.Request, Mapping[str, str]], Awaitable[web.StreamResponse]]


# --- the ION API: token endpoint and gateway -------------------------------------------------------


@dataclass(slots=True)
class _Issued:
    grant: str
    expires_at_mono: float


@dataclass(frozen=True, slots=True)
class GatewayCall:
    """One request the gateway answered."""

    method: str
    path: str
    status: int


@dataclass(frozen=True, slots=True)
class _GatewayRoute:
    method: str
    template: str
    pattern: re.Pattern[str]
    handler: GatewayHandler


def _template_pattern(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[A-Za-z_]\w*\})", template.strip("/"))
    regex = "".join(f"(?P<{p[1:-1]}>[^/]+)" if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile(f"^{regex}$")


def _oauth_error(status: int, code: str, description: str) -> web.Response:
    return web.json_response({"error": code, "error_description": description}, status=status)


class IonSimulator:
    """The ION API of one tenant: token endpoint, revocation, and a bearer-checked gateway.

    Args:
        tenant: The tenant id (`ti`), also the first path segment of every route.
        client_id: OAuth client id (`ci`).
        client_secret: OAuth client secret (`cs`).
        saak: Service-account access key (password-grant username).
        sask: Service-account secret key (password-grant password).
        token_ttl_s: Lifetime of access tokens (`expires_in`); may be changed between requests.
        refresh_ttl_s: Lifetime of refresh tokens.
        issue_refresh_tokens: Whether grants return a `refresh_token`.
        clock: Monotonic seconds deciding expiry; share a fake one with the client under test.

    Counters: `token_requests` (every request to the token endpoint), `token_requests_by_grant`,
    `token_rejections`, `revoke_requests`, `gateway_requests`, `gateway_unauthorized`, and `gateway_calls`
    (each call's method, path and status).
    """

    def __init__(
        self,
        *,
        tenant: str = DEFAULT_TENANT,
        client_id: str = f"{DEFAULT_TENANT}~erp-relay-sim",
        client_secret: str = "sim-client-secret-0123456789",
        saak: str = f"{DEFAULT_TENANT}#sim-service-account",
        sask: str = "sim-service-secret-0123456789",
        token_ttl_s: float = 7200,
        refresh_ttl_s: float = 86400,
        issue_refresh_tokens: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tenant = tenant
        self.client_id = client_id
        self.client_secret = client_secret
        self.saak = saak
        self.sask = sask
        self.token_ttl_s = token_ttl_s
        self.refresh_ttl_s = refresh_ttl_s
        self.issue_refresh_tokens = issue_refresh_tokens
        self.clock = clock
        self.token_requests = 0
        self.token_requests_by_grant: Counter[str] = Counter()
        self.token_rejections = 0
        self.revoke_requests = 0
        self.gateway_requests = 0
        self.gateway_unauthorized = 0
        self.gateway_calls: list[GatewayCall] = []
        # Cleared by a test to hold token requests in flight (e.g. to gather concurrent callers).
        self.token_gate = asyncio.Event()
        self.token_gate.set()
        self._access: dict[str, _Issued] = {}
        self._refresh: dict[str, _Issued] = {}
        self._failures: list[tuple[int, str | None]] = []
        self._routes: list[_GatewayRoute] = []
        self._app = web.Application()
        prefix = f"/{tenant}"
        self._app.router.add_post(f"{prefix}/as/token.oauth2", self._token)
        self._app.router.add_post(f"{prefix}/as/revoke_token.oauth2", self._revoke)
        self._app.router.add_route("*", prefix + "/{tail:.*}", self._gateway)
        self.add_gateway_route("IONSERVICES/api/ion/messaging/service/ping", self._ping, method="GET")
        self.add_gateway_route(IMS_MESSAGE_PATH, self._ims_message, method="POST")
        # What applications sent to ION over IMS: every accepted message, and the ConfirmBODs among them.
        self.ims_messages: list[ReceivedImsMessage] = []
        self.confirms: list[ReceivedConfirm] = []
        # Why IMS messages were refused (400), newest last.
        self.ims_refusals: list[str] = []

    @property
    def app(self) -> web.Application:
        """The aiohttp application to serve."""
        return self._app

    # -- test controls --

    def add_gateway_route(self, path: str, handler: GatewayHandler, *, method: str = "*") -> None:
        """Serve `handler` at `/{tenant}/{path}` behind the bearer check.

        Args:
            path: A product path such as `SX/rest/sxapirestservice/{op}`; `{name}` matches one segment
                and is passed to the handler in its second argument.
            handler: `async (request, params) -> response`.
            method: The HTTP method, or `*` for any.
        """
        self._routes.append(_GatewayRoute(method.upper(), path, _template_pattern(path), handler))

    def fail_next(self, status: int, retry_after: str | None = None, count: int = 1) -> None:
        """Make the next `count` gateway requests answer `status` (401, 429, 504, …), before the token check.

        Args:
            status: The HTTP status to answer.
            retry_after: A `Retry-After` header value to send with it, if any.
            count: How many requests fail.
        """
        self._failures.extend([(status, retry_after)] * count)

    def expire_tokens(self) -> None:
        """Expire every access token now (refresh tokens stay valid)."""
        now = self.clock()
        for issued in self._access.values():
            issued.expires_at_mono = min(issued.expires_at_mono, now)

    def revoke_all(self) -> None:
        """Revoke every access and refresh token."""
        self._access.clear()
        self._refresh.clear()

    def is_valid_token(self, token: str) -> bool:
        """Whether `token` is a current access token."""
        issued = self._access.get(token)
        return issued is not None and self.clock() < issued.expires_at_mono

    def ionapi_dict(
        self, base_url: str, *, grant: Literal["password", "client_credentials"] = "password"
    ) -> dict[str, Any]:
        """A `.ionapi` document for this simulator served at `base_url`.

        `grant="client_credentials"` leaves out the service account (`saak`/`sask`), as a file downloaded
        without "Create Service Account" is: the relay refuses such a file.
        """
        base = base_url.rstrip("/")
        doc: dict[str, Any] = {
            "ti": self.tenant,
            "cn": "erp-relay-sim",
            "dt": "12",
            "ci": self.client_id,
            "cs": self.client_secret,
            "iu": base,
            "pu": f"{base}/{self.tenant}/as/",
            "oa": "authorization.oauth2",
            "ot": "token.oauth2",
            "or": "revoke_token.oauth2",
            "ev": "V1480769020",
            "v": "1.0",
        }
        if grant == "password":
            doc["saak"] = self.saak
            doc["sask"] = self.sask
        doc["sc"] = ["Infor-ION"]
        return doc

    def write_ionapi(
        self, path: str | Path, base_url: str, *, grant: Literal["password", "client_credentials"] = "password"
    ) -> Path:
        """Write `ionapi_dict(base_url)` to `path` as JSON and return the path."""
        target = Path(path)
        target.write_bytes(orjson.dumps(self.ionapi_dict(base_url, grant=grant), option=orjson.OPT_INDENT_2))
        return target

    # -- handlers --

    def _client_ok(self, request: web.Request, form: Mapping[str, Any]) -> bool:
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        header = request.headers.get("Authorization", "")
        if header.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return False
            client_id, _, client_secret = decoded.partition(":")
        if not isinstance(client_id, str) or not isinstance(client_secret, str):
            return False
        return hmac.compare_digest(client_id, self.client_id) & hmac.compare_digest(client_secret, self.client_secret)

    def _issue(self, grant: str, refresh: str | None) -> dict[str, Any]:
        now = self.clock()
        access = "sim-at-" + secrets.token_urlsafe(24)
        self._access[access] = _Issued(grant, now + self.token_ttl_s)
        ttl: float = self.token_ttl_s
        body: dict[str, Any] = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": int(ttl) if float(ttl).is_integer() else ttl,
        }
        if refresh is None and self.issue_refresh_tokens:
            refresh = "sim-rt-" + secrets.token_urlsafe(24)
            self._refresh[refresh] = _Issued(grant, now + self.refresh_ttl_s)
        if refresh is not None:
            body["refresh_token"] = refresh
        return body

    async def _token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        await self.token_gate.wait()
        form = await request.post()
        grant = str(form.get("grant_type", ""))
        self.token_requests_by_grant[grant] += 1
        response = self._grant(request, form, grant)
        if response.status >= 400:
            self.token_rejections += 1
        return response

    def _grant(self, request: web.Request, form: Mapping[str, Any], grant: str) -> web.Response:
        # The ION API offers backend services the password grant with a service account, no client credentials.
        if grant not in ("password", "refresh_token"):
            return _oauth_error(400, "unsupported_grant_type", f"grant_type {grant!r} is not supported")
        if not self._client_ok(request, form):
            return _oauth_error(401, "invalid_client", "client authentication failed")
        if grant == "password":
            username, password = form.get("username"), form.get("password")
            if not (
                isinstance(username, str)
                and isinstance(password, str)
                and hmac.compare_digest(username, self.saak) & hmac.compare_digest(password, self.sask)
            ):
                return _oauth_error(401, "invalid_grant", "service account credentials are invalid")
            return web.json_response(self._issue(grant, None))
        refresh = form.get("refresh_token")
        issued = self._refresh.get(refresh) if isinstance(refresh, str) else None
        if issued is None or self.clock() >= issued.expires_at_mono or not isinstance(refresh, str):
            return _oauth_error(401, "invalid_grant", "refresh token is invalid, expired or revoked")
        return web.json_response(self._issue(grant, refresh))

    async def _revoke(self, request: web.Request) -> web.Response:
        self.revoke_requests += 1
        form = await request.post()
        if not self._client_ok(request, form):
            return _oauth_error(401, "invalid_client", "client authentication failed")
        token = form.get("token")
        if isinstance(token, str):
            self._access.pop(token, None)
            self._refresh.pop(token, None)
        return web.Response(status=200)

    async def _ping(self, request: web.Request, params: Mapping[str, str]) -> web.StreamResponse:
        return web.json_response({"status": "OK", "tenant": self.tenant})

    async def _ims_message(self, request: web.Request, params: Mapping[str, str]) -> web.StreamResponse:
        """IMS v2 `multipartMessage`, application → ION: parts `ParameterRequest` (JSON) and `MessagePayload`."""
        try:
            parts = await _read_named_parts(request)
            message = read_ims_message(parts)
            confirm = check_confirm_bod(message.payload) if message.document_name == CONFIRM_DOCUMENT else None
        except ValueError as exc:
            self.ims_refusals.append(str(exc))
            return web.json_response({"error": "Bad Request", "message": str(exc)}, status=400)
        self.ims_messages.append(message)
        if confirm is not None:
            self.confirms.append(replace(confirm, parameters=message.parameters))
        # The v2 method answers 201 Created (the inforion client's test expects it).
        return web.json_response({"status": "Created", "messageId": message.parameters.get("messageId")}, status=201)

    def _bearer(self, request: web.Request) -> str | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        self.gateway_requests += 1
        path = request.match_info["tail"]
        response = await self._gateway_answer(request, path)
        self.gateway_calls.append(GatewayCall(request.method, path, response.status))
        return response

    async def _gateway_answer(self, request: web.Request, path: str) -> web.StreamResponse:
        if self._failures:
            status, retry_after = self._failures.pop(0)
            headers = {"Retry-After": retry_after} if retry_after is not None else {}
            if status == 401:
                self.gateway_unauthorized += 1
                headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
            reason = {401: "Unauthorized", 429: "Quota exceeded", 504: "Gateway Timeout"}.get(
                status, "Simulated failure"
            )
            return web.json_response({"error": reason, "status": status}, status=status, headers=headers)
        token = self._bearer(request)
        if token is None or not self.is_valid_token(token):
            self.gateway_unauthorized += 1
            return web.json_response(
                {"error": "invalid_token", "error_description": "missing, expired or revoked bearer token"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        path_matched = False
        for route in self._routes:
            match = route.pattern.match(path)
            if match is None:
                continue
            path_matched = True
            if route.method in ("*", request.method):
                return await route.handler(request, match.groupdict())
        if path_matched:
            return web.json_response({"error": "Method Not Allowed"}, status=405)
        return web.json_response({"error": "Not Found", "path": path}, status=404)


# --- IMS, application → ION ------------------------------------------------------------------------

IMS_MESSAGE_PATH = "IONSERVICES/api/ion/messaging/service/v2/multipartMessage"
CONFIRM_DOCUMENT = "Confirm.BOD"


@dataclass(frozen=True, slots=True)
class ReceivedImsMessage:
    """An IMS message an application sent to ION: its ParameterRequest and payload."""

    parameters: Mapping[str, Any]
    payload: bytes

    @property
    def document_name(self) -> str:
        """The ParameterRequest `documentName`."""
        return str(self.parameters.get("documentName", ""))


@dataclass(frozen=True, slots=True)
class ReceivedConfirm:
    """A ConfirmBOD as ION would read it.

    Attributes:
        original_bod_id: `DataArea/Confirm/OriginalApplicationArea/BODID`: the BOD it reports on.
        original_sender: `OriginalApplicationArea/Sender/LogicalID`, if present.
        descriptions: Every `BODFailureMessage/ErrorProcessMessage/Description`.
        reason_codes: Every `ErrorProcessMessage/ReasonCode`.
        sender: `ApplicationArea/Sender/LogicalID` of the ConfirmBOD.
        bod_id: `ApplicationArea/BODID` of the ConfirmBOD.
        tenant_id: `DataArea/Confirm/TenantID`, if present.
        parameters: The IMS ParameterRequest it came with (empty when checked alone).
    """

    original_bod_id: str
    original_sender: str | None
    descriptions: tuple[str, ...]
    reason_codes: tuple[str, ...]
    sender: str | None
    bod_id: str | None
    tenant_id: str | None
    parameters: Mapping[str, Any] = field(default_factory=dict)


async def _read_named_parts(request: web.Request) -> dict[str, bytes]:
    if not request.content_type.startswith("multipart/"):
        raise ValueError("expected multipart/form-data with ParameterRequest and MessagePayload")
    parts: dict[str, bytes] = {}
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        name = getattr(part, "name", None) or ""
        parts[name] = await part.read()  # type: ignore[union-attr]
    return parts


def read_ims_message(parts: Mapping[str, bytes]) -> ReceivedImsMessage:
    """Check the two IMS parts: ParameterRequest a JSON object with `documentName`, `messageId`, and logical ids.

    Raises:
        ValueError: What is missing or wrong.
    """
    if "ParameterRequest" not in parts or "MessagePayload" not in parts:
        raise ValueError(f"the parts ParameterRequest and MessagePayload are required (received: {sorted(parts)})")
    try:
        parameters = orjson.loads(parts["ParameterRequest"])
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"ParameterRequest is not JSON: {exc}") from None
    if not isinstance(parameters, dict):
        raise ValueError("ParameterRequest must be a JSON object")
    problems = [f"ParameterRequest.{k} is required" for k in ("documentName", "messageId") if not parameters.get(k)]
    for key in ("fromLogicalId", "toLogicalId"):
        value = parameters.get(key)
        if not isinstance(value, str) or not value.startswith("lid://"):
            problems.append(f"ParameterRequest.{key} must be a logical id (lid://…)")
    if parameters.get("encoding", "NONE") not in ("NONE", "DEFLATE"):
        problems.append("ParameterRequest.encoding must be NONE or DEFLATE")
    if problems:
        raise ValueError("; ".join(problems))
    payload = parts["MessagePayload"]
    if parameters.get("encoding") == "DEFLATE":
        payload = zlib.decompress(payload)
    return ReceivedImsMessage(parameters, payload)


def _find(element: Element | None, *path: str) -> Element | None:
    for name in path:
        if element is None:
            return None
        element = next((c for c in element if isinstance(c.tag, str) and c.tag.rsplit("}", 1)[-1] == name), None)
    return element


def _texts(element: Element | None, *path: str) -> list[str]:
    """The non-empty texts of every element at `path` (each step may repeat)."""
    found = [element] if element is not None else []
    for name in path:
        found = [c for e in found for c in e if isinstance(c.tag, str) and c.tag.rsplit("}", 1)[-1] == name]
    return [e.text.strip() for e in found if e.text and e.text.strip()]


def check_confirm_bod(xml: bytes) -> ReceivedConfirm:
    """Read a ConfirmBOD as ION would and check its shape (OAGIS 9 / Infor: the Confirm verb holds the
    OriginalApplicationArea; the BOD noun holds a BODFailureMessage or a BODSuccessMessage).

    Raises:
        ValueError: Not XML, not a ConfirmBOD, no original BODID referenced, or a failure without a description.
    """
    try:
        root = ElementTree.fromstring(xml)  # noqa: S314 - the simulator reads what the relay under test sent
    except ElementTree.ParseError as exc:
        raise ValueError(f"the ConfirmBOD is not well-formed XML: {exc}") from None
    if root.tag.rsplit("}", 1)[-1] != "ConfirmBOD":
        raise ValueError(f"expected a ConfirmBOD, got <{root.tag.rsplit('}', 1)[-1]}>")
    problems: list[str] = []
    original = _find(root, "DataArea", "Confirm", "OriginalApplicationArea")
    original_bod_id = _texts(original, "BODID")
    if not original_bod_id:
        problems.append("DataArea/Confirm/OriginalApplicationArea/BODID is missing: which BOD does it confirm?")
    bod = _find(root, "DataArea", "BOD")
    failure = _find(bod, "BODFailureMessage")
    descriptions = _texts(failure, "ErrorProcessMessage", "Description")
    if bod is None or (failure is None and _find(bod, "BODSuccessMessage") is None):
        problems.append("DataArea/BOD needs a BODFailureMessage or a BODSuccessMessage")
    elif failure is not None and not descriptions:
        problems.append("DataArea/BOD/BODFailureMessage/ErrorProcessMessage/Description is missing: why did it fail?")
    if problems:
        raise ValueError("; ".join(problems))
    return ReceivedConfirm(
        original_bod_id=original_bod_id[0],
        original_sender=next(iter(_texts(original, "Sender", "LogicalID")), None),
        descriptions=tuple(descriptions),
        reason_codes=tuple(_texts(failure, "ErrorProcessMessage", "ReasonCode")),
        sender=next(iter(_texts(root, "ApplicationArea", "Sender", "LogicalID")), None),
        bod_id=next(iter(_texts(root, "ApplicationArea", "BODID")), None),
        tenant_id=next(iter(_texts(root, "DataArea", "Confirm", "TenantID")), None),
    )


@contextlib.asynccontextmanager
async def running_ion_simulator(port: int = 0, **kwargs: Any) -> AsyncIterator[tuple[IonSimulator, str]]:
    """Run an `IonSimulator(**kwargs)` on 127.0.0.1 (`port`, by default a free one) and yield it with its base URL."""
    sim = IonSimulator(**kwargs)
    runner = web.AppRunner(sim.app, access_log=None, shutdown_timeout=SHUTDOWN_GRACE_S)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        port = runner.addresses[0][1]
        yield sim, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


# --- BODs ------------------------------------------------------------------------------------------

BodKind = Literal[
    "customer_sync",
    "customer_delete",
    "sales_order",
    "invoice",
    "item_balance",
    "inventory_count",
    "purchase_order",
    "receipt",
    "supplier",
]
BOD_KINDS: tuple[BodKind, ...] = (
    "customer_sync",
    "customer_delete",
    "sales_order",
    "invoice",
    "item_balance",
    "inventory_count",
    "purchase_order",
    "receipt",
    "supplier",
)
# How often `next_bod` and `plan_ims_traffic` pick each kind, in BOD_KINDS order.
_KIND_WEIGHTS = (3, 1, 4, 2, 3, 1, 1, 1, 1)
_VENDORS = (("V3001", "Midwest Wire Co."), ("V3002", "Lakeside Breaker Supply"), ("V3003", "Northern Conduit Inc."))
WAREHOUSES = ("MAIN", "EAST", "WEST")

# (part number, description, unit of measure, unit price in USD)
_CATALOGUE: tuple[tuple[str, str, str, float], ...] = (
    ("HES-THHN12-BLK", "THHN 12 AWG stranded copper wire, black", "FT", 0.31),
    ("HES-THHN10-RED", "THHN 10 AWG stranded copper wire, red", "FT", 0.52),
    ("HES-ROMEX-14-2", "NM-B 14/2 with ground, 250 ft coil", "EA", 89.00),
    ("HES-BRK-20A-1P", "Circuit breaker 20 A single pole, plug-on", "EA", 11.40),
    ("HES-BRK-50A-2P", "Circuit breaker 50 A double pole", "EA", 38.75),
    ("HES-GFCI-20A-WH", "GFCI receptacle 20 A tamper resistant, white", "EA", 21.90),
    ("HES-EMT-075-10", "EMT conduit 3/4 in, 10 ft", "EA", 9.85),
    ("HES-EMT-CPL-075", "EMT set-screw coupling 3/4 in", "EA", 0.68),
    ("HES-JBOX-4SQ", "Steel junction box 4 in square, 2-1/8 in deep", "EA", 3.15),
    ("HES-LED-A19-9W", "LED lamp A19 9 W 2700 K", "EA", 2.45),
    ("HES-PNL-200A-40", "Load center 200 A, 40 spaces", "EA", 289.00),
    ("HES-CONN-WN-YEL", "Twist-on wire connector, yellow, bag of 100", "BX", 7.20),
    ("HES-TAPE-VNL-BLK", "Vinyl electrical tape 3/4 in x 66 ft, black", "EA", 1.95),
    ("HES-DIM-LED-600", "LED dimmer 600 W single pole", "EA", 24.60),
)
_NAME_FIRST = (
    "Brennan",
    "Kessler",
    "Northgate",
    "Tri-County",
    "Lakeshore",
    "Dunmore",
    "Prairie",
    "Ridgeway",
    "Calloway",
)
_NAME_TRADE = ("Electric", "Electrical Contractors", "Industrial Controls", "Lighting", "Power Systems", "Builders")
_NAME_FORM = ("LLC", "Inc.", "Co.", "Ltd.")
# (city, state, postal code, area code)
_CITIES = (
    ("Chicago", "IL", "60607", "312"),
    ("Joliet", "IL", "60431", "815"),
    ("Naperville", "IL", "60540", "630"),
    ("Milwaukee", "WI", "53204", "414"),
    ("Kenosha", "WI", "53140", "262"),
    ("Gary", "IN", "46402", "219"),
    ("Rockford", "IL", "61101", "815"),
)
_STREETS = ("W Lake St", "S Halsted St", "N Ashland Ave", "Industrial Dr", "Commerce Pkwy", "E Washington St")
_ORDER_STATUSES = ("Open", "Released", "Picked", "Shipped", "Invoiced")
_INVOICE_STATUSES = ("Open", "PartiallyPaid", "Paid")


@dataclass(frozen=True, slots=True)
class GeneratedBod:
    """A BOD written by `BodFactory`, with what IMS would send alongside it."""

    kind: BodKind
    tenant: str
    document_name: str
    document_id: str
    variation_id: int
    accounting_entity: str
    location: str
    created_at: datetime
    xml: bytes


@dataclass(slots=True)
class _Customer:
    number: str
    name: str
    street: str
    city: str
    state: str
    postal_code: str
    phone: str
    email: str
    status: str = "Active"


@dataclass(slots=True)
class _Order:
    number: str
    customer: str
    ordered_at: datetime
    warehouse: str
    lines: list[tuple[str, float, float]]  # part, quantity, unit price
    status_index: int = 0


@dataclass(slots=True)
class _Invoice:
    number: str
    customer: str
    order: str | None
    amount: float
    invoiced_at: datetime
    status_index: int = 0


def _leaf(tag: str, text: str | None, **attrs: str) -> str:
    if text is None:
        return ""
    attributes = "".join(f" {k}={quoteattr(v)}" for k, v in attrs.items())
    return f"<{tag}{attributes}>{escape(text)}</{tag}>"


def _node(tag: str, *children: str, **attrs: str) -> str:
    attributes = "".join(f" {k}={quoteattr(v)}" for k, v in attrs.items())
    inner = "".join(children)
    return f"<{tag}{attributes}>{inner}</{tag}>" if inner else f"<{tag}{attributes}/>"


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _money(value: float) -> str:
    return f"{value:.2f}"


def _qty(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.2f}"


class BodFactory:
    """Writes realistic, deterministic BODs for Halloran Electrical Supply (electrical parts; warehouses
    MAIN, EAST and WEST), with variationIDs increasing per document.

    Args:
        seed: Makes every document, number and timestamp reproducible.
        tenant: `TenantID` of every BOD.
        logical_id: `Sender/LogicalID` of every BOD.
        accounting_entity: `AccountingEntityID` (the SX.e company number).
        start: CreationDateTime of the first BOD; later ones advance by a few seconds to minutes.
    """

    def __init__(
        self,
        seed: int,
        tenant: str = DEFAULT_TENANT,
        logical_id: str = DEFAULT_LOGICAL_ID,
        *,
        accounting_entity: str = "1",
        start: datetime = datetime(2026, 11, 20, 8, 0, tzinfo=UTC),
    ) -> None:
        self.tenant = tenant
        self.logical_id = logical_id
        self.accounting_entity = accounting_entity
        self._rng = random.Random(seed)
        self._now = start.astimezone(UTC)
        self._variations: dict[tuple[str, str], int] = {}
        self._customers: dict[str, _Customer] = {}
        self._orders: dict[str, _Order] = {}
        self._invoices: dict[str, _Invoice] = {}
        self._inventory: dict[str, list[tuple[str, str]]] = {}
        self._next_customer = 10001
        self._next_order = 1004700
        self._next_inventory = 1

    # -- documents --

    def customer_sync(
        self, customer_number: str | None = None, *, variation_id: int | None = None, created_at: datetime | None = None
    ) -> GeneratedBod:
        """A `SyncCustomerPartyMaster` (a new customer unless `customer_number` names a known one)."""
        customer = self._customer(customer_number)
        if customer.status == "Deleted" or self._rng.random() < 0.1:
            customer.status = self._rng.choice(("Active", "Active", "OnHold"))
        return self._customer_bod("customer_sync", customer, variation_id, created_at, delete=False)

    def customer_delete(
        self, customer_number: str | None = None, *, variation_id: int | None = None, created_at: datetime | None = None
    ) -> GeneratedBod:
        """A `SyncCustomerPartyMaster` with actionCode `Delete` (a known customer unless none exists)."""
        if customer_number is None and self._customers:
            customer_number = self._rng.choice(sorted(self._customers))
        customer = self._customer(customer_number)
        customer.status = "Deleted"
        return self._customer_bod("customer_delete", customer, variation_id, created_at, delete=True)

    def sales_order(
        self,
        order_number: str | None = None,
        *,
        line_count: int | None = None,
        variation_id: int | None = None,
        created_at: datetime | None = None,
    ) -> GeneratedBod:
        """A `SyncSalesOrder` with lines; a known `order_number` gets a new variation with its status advanced."""
        order = self._orders.get(order_number) if order_number else None
        if order is None:
            customer = self._customer(self._pick_customer())
            number = order_number or f"{self._next_order}-00"
            self._next_order += 1
            count = line_count or self._rng.randint(1, 6)
            parts = self._rng.sample(_CATALOGUE, k=min(count, len(_CATALOGUE)))
            picked = [(p[0], float(self._rng.choice((5, 10, 12, 25, 50, 100, 250, 500))), p[3]) for p in parts]
            order = _Order(number, customer.number, self._tick(), self._rng.choice(WAREHOUSES), picked)
            self._orders[number] = order
        elif variation_id is None:
            order.status_index = min(order.status_index + 1, len(_ORDER_STATUSES) - 1)
        created = self._created(created_at)
        variation = self._variation("SalesOrder", order.number, variation_id)
        total = sum(q * p for _, q, p in order.lines)
        lines = [
            _node(
                "SalesOrderLine",
                _leaf("LineNumber", str(n)),
                _node("Item", _node("ItemID", _leaf("ID", part)), _leaf("Description", self._describe(part))),
                _leaf("Quantity", _qty(qty), unitCode=self._uom(part)),
                _node("UnitPrice", _leaf("Amount", f"{price:.4f}", currencyID="USD")),
                _leaf("ExtendedAmount", _money(qty * price), currencyID="USD"),
                _node("ShipFromParty", _node("Location", _leaf("ID", order.warehouse))),
            )
            for n, (part, qty, price) in enumerate(order.lines, start=1)
        ]
        noun = _node(
            "SalesOrder",
            _node(
                "SalesOrderHeader",
                _node("DocumentID", self._id(order.number, variation, location=order.warehouse)),
                _leaf("LastModificationDateTime", _ts(created)),
                _node(
                    "CustomerParty",
                    _node("PartyIDs", _leaf("ID", order.customer)),
                    _leaf("Name", self._customers[order.customer].name),
                ),
                _leaf("OrderDateTime", _ts(order.ordered_at)),
                _node("Status", _leaf("Code", _ORDER_STATUSES[order.status_index])),
                _leaf("TotalAmount", _money(total), currencyID="USD"),
                _node("ShipFromParty", _node("Location", _leaf("ID", order.warehouse))),
            ),
            *lines,
        )
        return self._bod("sales_order", "SalesOrder", order.number, variation, created, noun, location=order.warehouse)

    def invoice(
        self, invoice_number: str | None = None, *, variation_id: int | None = None, created_at: datetime | None = None
    ) -> GeneratedBod:
        """A `SyncInvoice`, for a known order when there is one; a known `invoice_number` gets its status advanced."""
        invoice = self._invoices.get(invoice_number) if invoice_number else None
        if invoice is None:
            invoiced = {i.order for i in self._invoices.values()}
            open_orders = sorted(n for n in self._orders if n not in invoiced)
            order = self._orders[self._rng.choice(open_orders)] if open_orders and not invoice_number else None
            if order is not None:
                amount = round(sum(q * p for _, q, p in order.lines) * 1.0825, 2)
                number = "INV-" + order.number.split("-")[0]
                invoice = _Invoice(number, order.customer, order.number, amount, self._tick())
            else:
                customer = self._customer(self._pick_customer())
                number = invoice_number or f"INV-{self._next_order}"
                self._next_order += 1
                invoice = _Invoice(number, customer.number, None, round(self._rng.uniform(40, 4000), 2), self._tick())
            self._invoices[invoice.number] = invoice
        elif variation_id is None:
            invoice.status_index = min(invoice.status_index + 1, len(_INVOICE_STATUSES) - 1)
        created = self._created(created_at)
        variation = self._variation("Invoice", invoice.number, variation_id)
        due = invoice.invoiced_at.date() + timedelta(days=30)
        reference = (
            _node("SalesOrderReference", _node("DocumentID", _leaf("ID", invoice.order))) if invoice.order else ""
        )
        noun = _node(
            "Invoice",
            _node(
                "InvoiceHeader",
                _node("DocumentID", self._id(invoice.number, variation)),
                _leaf("LastModificationDateTime", _ts(created)),
                _leaf("DocumentDateTime", _ts(invoice.invoiced_at)),
                _node("Status", _leaf("Code", _INVOICE_STATUSES[invoice.status_index])),
                _leaf("TotalAmount", _money(invoice.amount), currencyID="USD"),
                _node("CustomerParty", _node("PartyIDs", _leaf("ID", invoice.customer))),
                _node(
                    "PaymentTerm",
                    _node("Term", _leaf("ID", "N30")),
                    _leaf("Description", "Net 30 days"),
                    _leaf("DueDateTime", f"{due.isoformat()}T23:59:59Z"),
                ),
                reference,
            ),
            _node(
                "InvoiceLine",
                _leaf("LineNumber", "1"),
                _leaf("Description", "Goods shipped"),
                _leaf("ExtendedAmount", _money(invoice.amount), currencyID="USD"),
            ),
        )
        return self._bod("invoice", "Invoice", invoice.number, variation, created, noun)

    def inventory_balance(
        self,
        document_id: str | None = None,
        *,
        noun: Literal["ItemBalance", "InventoryCount"] = "ItemBalance",
        lines: int | None = None,
        variation_id: int | None = None,
        created_at: datetime | None = None,
    ) -> GeneratedBod:
        """A `SyncItemBalance` or `SyncInventoryCount` with several item/warehouse lines.

        A known `document_id` repeats its item/warehouse lines with new quantities.
        """
        pairs = self._inventory.get(document_id) if document_id else None
        if document_id is None or pairs is None:
            prefix = "IB" if noun == "ItemBalance" else "IC"
            doc_id = document_id or f"{prefix}-{self._next_inventory:06d}"
            self._next_inventory += 1
            count = lines or self._rng.randint(2, 5)
            every = [(p[0], w) for p in _CATALOGUE for w in WAREHOUSES]
            pairs = self._rng.sample(every, k=min(count, len(every)))
            self._inventory[doc_id] = pairs
        else:
            doc_id = document_id
        created = self._created(created_at)
        variation = self._variation(noun, doc_id, variation_id)
        body = []
        for n, (part, warehouse) in enumerate(pairs, start=1):
            uom = self._uom(part)
            on_hand = float(self._rng.randint(0, 40) * (100 if uom == "FT" else 5))
            allocated = float(min(on_hand, self._rng.randint(0, 8) * (50 if uom == "FT" else 2)))
            moved = created - timedelta(minutes=self._rng.randint(1, 600))
            quantities = (
                _leaf("AllocatedQuantity", _qty(allocated), unitCode=uom),
                _leaf("AvailableQuantity", _qty(on_hand - allocated), unitCode=uom),
            )
            if noun == "ItemBalance":
                body.append(
                    _node(
                        "ItemBalanceLine",
                        _leaf("LineNumber", str(n)),
                        _node("ItemID", _leaf("ID", part)),
                        _leaf("Description", self._describe(part)),
                        _node("WarehouseLocation", _leaf("ID", warehouse)),
                        _leaf("OnHandQuantity", _qty(on_hand), unitCode=uom),
                        *quantities,
                        _leaf("LastTransactionDateTime", _ts(moved)),
                    )
                )
            else:
                body.append(
                    _node(
                        "InventoryCountLine",
                        _leaf("LineNumber", str(n)),
                        _node("Item", _node("ItemID", _leaf("ID", part)), _leaf("Description", self._describe(part))),
                        _node("WarehouseLocation", _leaf("ID", warehouse)),
                        _leaf("CountQuantity", _qty(on_hand), unitCode=uom),
                        *quantities,
                    )
                )
        header_tag = "ItemBalanceHeader" if noun == "ItemBalance" else "InventoryCountHeader"
        stamp = "LastModificationDateTime" if noun == "ItemBalance" else "CountDateTime"
        document = _node(
            noun,
            _node(header_tag, _node("DocumentID", self._id(doc_id, variation)), _leaf(stamp, _ts(created))),
            *body,
        )
        kind: BodKind = "item_balance" if noun == "ItemBalance" else "inventory_count"
        return self._bod(kind, noun, doc_id, variation, created, document, location=pairs[0][1])

    def purchase_order(
        self, po_number: str | None = None, *, variation_id: int | None = None, created_at: datetime | None = None
    ) -> GeneratedBod:
        """A `SyncPurchaseOrder` to one of Halloran's vendors (OAGIS PurchaseOrderHeader/SupplierParty)."""
        number = po_number or f"PO-{200400 + self._next_inventory}"
        self._next_inventory += 1
        vendor = self._rng.choice(_VENDORS)[0]
        created = self._created(created_at)
        variation = self._variation("PurchaseOrder", number, variation_id)
        part = self._rng.choice(_CATALOGUE)
        qty = float(self._rng.choice((50, 100, 500)))
        noun = _node(
            "PurchaseOrder",
            _node(
                "PurchaseOrderHeader",
                _node("DocumentID", self._id(number, variation)),
                _leaf("LastModificationDateTime", _ts(created)),
                _leaf("DocumentDateTime", _ts(created - timedelta(hours=2))),
                _node("Status", _leaf("Code", "Open")),
                _leaf("TotalAmount", _money(qty * part[3]), currencyID="USD"),
                _node("SupplierParty", _node("PartyIDs", _leaf("ID", vendor))),
            ),
            _node(
                "PurchaseOrderLine",
                _leaf("LineNumber", "1"),
                _node("Item", _node("ItemID", _leaf("ID", part[0]))),
                _leaf("Quantity", _qty(qty), unitCode=part[2]),
            ),
        )
        return self._bod("purchase_order", "PurchaseOrder", number, variation, created, noun)

    def receipt(
        self, receipt_number: str | None = None, *, variation_id: int | None = None, created_at: datetime | None = None
    ) -> GeneratedBod:
        """A `SyncReceiveDelivery`: goods received in a warehouse against a purchase order."""
        number = receipt_number or f"RCV-{88000 + self._next_inventory}"
        self._next_inventory += 1
        vendor = self._rng.choice(_VENDORS)[0]
        warehouse = self._rng.choice(WAREHOUSES)
        created = self._created(created_at)
        variation = self._variation("ReceiveDelivery", number, variation_id)
        noun = _node(
            "ReceiveDelivery",
            _node(
                "ReceiveDeliveryHeader",
                _node("DocumentID", self._id(number, variation)),
                _leaf("LastModificationDateTime", _ts(created)),
                _leaf("ReceivedDateTime", _ts(created - timedelta(minutes=5))),
                _node("SupplierParty", _node("PartyIDs", _leaf("ID", vendor))),
                _node("ShipToParty", _node("Location", _leaf("ID", warehouse))),
                _node(
                    "PurchaseOrderReference",
                    _node("DocumentID", _leaf("ID", f"PO-{200400 + self._rng.randint(1, 99)}")),
                ),
            ),
        )
        return self._bod("receipt", "ReceiveDelivery", number, variation, created, noun, location=warehouse)

    def supplier(
        self, vendor_number: str | None = None, *, variation_id: int | None = None, created_at: datetime | None = None
    ) -> GeneratedBod:
        """A `SyncSupplierPartyMaster` for one of Halloran's vendors."""
        known = dict(_VENDORS)
        if vendor_number is None:
            vendor_number = f"V{3000 + self._next_inventory}"
            self._next_inventory += 1
        number = vendor_number
        created = self._created(created_at)
        variation = self._variation("SupplierPartyMaster", number, variation_id)
        noun = _node(
            "SupplierPartyMaster",
            _node("PartyIDs", self._id(number, variation)),
            _leaf("Name", known.get(number, f"{self._rng.choice(_NAME_FIRST)} Electrical Wholesale")),
            _node("Location", _node("Address", _leaf("CountryCode", "US"))),
            _node("Communication", _leaf("ChannelCode", "Telephone"), _leaf("DialNumber", "+1 414 555 0100")),
            _node("Status", _leaf("Code", "Active")),
            _leaf("CurrencyCode", "USD"),
            _leaf("LastModificationDateTime", _ts(created)),
        )
        return self._bod("supplier", "SupplierPartyMaster", number, variation, created, noun)

    def next_bod(self, kind: BodKind | None = None) -> GeneratedBod:
        """A new document or a new variation of a known one, of `kind` or of a kind picked by the seed."""
        if kind is None:
            kind = self._rng.choices(BOD_KINDS, weights=_KIND_WEIGHTS)[0]
        return self.document(kind, None)

    def document(
        self,
        kind: BodKind,
        document_id: str | None,
        *,
        variation_id: int | None = None,
        created_at: datetime | None = None,
    ) -> GeneratedBod:
        """A BOD of `kind` for `document_id` (None: a new or existing one picked by the seed)."""
        common: dict[str, Any] = {"variation_id": variation_id, "created_at": created_at}
        if kind == "customer_sync":
            return self.customer_sync(document_id, **common)
        if kind == "customer_delete":
            return self.customer_delete(document_id, **common)
        if kind == "sales_order":
            return self.sales_order(document_id, **common)
        if kind == "invoice":
            return self.invoice(document_id, **common)
        if kind == "item_balance":
            return self.inventory_balance(document_id, noun="ItemBalance", **common)
        if kind == "purchase_order":
            return self.purchase_order(document_id, **common)
        if kind == "receipt":
            return self.receipt(document_id, **common)
        if kind == "supplier":
            return self.supplier(document_id, **common)
        return self.inventory_balance(document_id, noun="InventoryCount", **common)

    # -- helpers --

    def _tick(self) -> datetime:
        self._now += timedelta(seconds=self._rng.randint(2, 90))
        return self._now

    def _created(self, created_at: datetime | None) -> datetime:
        return created_at.astimezone(UTC) if created_at is not None else self._tick()

    def _variation(self, noun: str, document_id: str, explicit: int | None) -> int:
        key = (noun, document_id)
        latest = self._variations.get(key, 0)
        variation = explicit if explicit is not None else latest + 1
        self._variations[key] = max(latest, variation)
        return variation

    def _pick_customer(self) -> str | None:
        if self._customers and self._rng.random() < 0.8:
            return self._rng.choice(sorted(self._customers))
        return None

    def _customer(self, number: str | None) -> _Customer:
        if number is not None and number in self._customers:
            return self._customers[number]
        if number is None:
            number = f"C{self._next_customer}"
            self._next_customer += 1
        first = self._rng.choice(_NAME_FIRST)
        name = f"{first} {self._rng.choice(_NAME_TRADE)} {self._rng.choice(_NAME_FORM)}"
        city, state, postal, area = self._rng.choice(_CITIES)
        slug = re.sub(r"[^a-z]+", "-", first.lower()).strip("-")
        customer = _Customer(
            number=number,
            name=name,
            street=f"{self._rng.randint(100, 9800)} {self._rng.choice(_STREETS)}",
            city=city,
            state=state,
            postal_code=postal,
            phone=f"+1 {area} 555 {self._rng.randint(100, 199):04d}",
            email=f"ap@{slug}-{number.lower()}.example.com",
        )
        self._customers[number] = customer
        return customer

    def _customer_bod(
        self, kind: BodKind, customer: _Customer, variation_id: int | None, created_at: datetime | None, *, delete: bool
    ) -> GeneratedBod:
        created = self._created(created_at)
        variation = self._variation("CustomerPartyMaster", customer.number, variation_id)
        details = (
            ()
            if delete
            else (
                _node(
                    "Location",
                    _node(
                        "Address",
                        _leaf("AddressLine", customer.street, sequence="1"),
                        _leaf("CityName", customer.city),
                        _leaf("CountrySubDivisionCode", customer.state),
                        _leaf("CountryCode", "US"),
                        _leaf("PostalCode", customer.postal_code),
                        type="Postal",
                    ),
                    type="Billing",
                ),
                _node("Communication", _leaf("ChannelCode", "Telephone"), _leaf("DialNumber", customer.phone)),
                _node("Communication", _leaf("ChannelCode", "EMail"), _leaf("URI", customer.email)),
                _leaf("CurrencyCode", "USD"),
            )
        )
        noun = _node(
            "CustomerPartyMaster",
            _node("PartyIDs", self._id(customer.number, variation)),
            _leaf("Name", customer.name),
            *details,
            _node("Status", _leaf("Code", customer.status)),
            _leaf("LastModificationDateTime", _ts(created)),
        )
        action = "Delete" if delete else None
        return self._bod(kind, "CustomerPartyMaster", customer.number, variation, created, noun, action=action)

    def _id(self, document_id: str, variation: int, *, location: str | None = None) -> str:
        attrs = {"accountingEntity": self.accounting_entity, "variationID": str(variation)}
        if location is not None:
            attrs["location"] = location
        return _leaf("ID", document_id, **attrs)

    def _describe(self, part: str) -> str:
        return next(p[1] for p in _CATALOGUE if p[0] == part)

    def _uom(self, part: str) -> str:
        return next(p[2] for p in _CATALOGUE if p[0] == part)

    def _bod(
        self,
        kind: BodKind,
        noun: str,
        document_id: str,
        variation: int,
        created: datetime,
        noun_xml: str,
        *,
        location: str = "MAIN",
        action: str | None = None,
    ) -> GeneratedBod:
        action_code = action or ("Add" if variation == 1 else "Replace")
        bod_id = (
            f"infor-nid:{self.tenant}:{self.accounting_entity}:{location}:{document_id}:{variation}?{noun}&verb=Sync"
        )
        document = _node(
            f"Sync{noun}",
            _node(
                "ApplicationArea",
                _node(
                    "Sender",
                    _leaf("LogicalID", self.logical_id),
                    _leaf("ComponentID", "SX.e"),
                    _leaf("ConfirmationCode", "OnError"),
                ),
                _leaf("CreationDateTime", _ts(created)),
                _leaf("BODID", bod_id),
            ),
            _node(
                "DataArea",
                _node(
                    "Sync",
                    _leaf("TenantID", self.tenant),
                    _leaf("AccountingEntityID", self.accounting_entity),
                    _leaf("LocationID", location),
                    _node("ActionCriteria", _node("ActionExpression", actionCode=action_code)),
                ),
                noun_xml,
            ),
            xmlns=OAGIS_NAMESPACE,
            releaseID="9.2",
            versionID="2.14.6",
        )
        xml = ('<?xml version="1.0" encoding="UTF-8"?>\n' + document + "\n").encode("utf-8")
        return GeneratedBod(
            kind=kind,
            tenant=self.tenant,
            document_name=f"Sync.{noun}",
            document_id=document_id,
            variation_id=variation,
            accounting_entity=self.accounting_entity,
            location=location,
            created_at=created,
            xml=xml,
        )


# --- IMS messages ----------------------------------------------------------------------------------

ImsKind = Literal["new", "duplicate", "out_of_order", "malformed"]
ImsEncoding = Literal["NONE", "DEFLATE"]


@dataclass(frozen=True, slots=True)
class ImsMessage:
    """One IMS push: its ParameterRequest, the BOD, and what the relay should make of it.

    Attributes:
        kind: `new`; `duplicate` (an exact redelivery of message `duplicate_of`); `out_of_order` (an
            older variation of a document sent after a newer one); `malformed` (broken XML).
        tenant_id: Sent as `X-TenantId`.
        parameters: The ParameterRequest JSON object.
        payload: The BOD XML, uncompressed.
        expected_event_ids: What `map_bod` makes of it (empty for malformed messages).
        duplicate_of: Index in the plan of the message this one redelivers.
    """

    kind: ImsKind
    tenant_id: str
    parameters: Mapping[str, Any]
    payload: bytes
    expected_event_ids: tuple[str, ...] = ()
    duplicate_of: int | None = None

    @property
    def encoding(self) -> ImsEncoding:
        """`NONE` or `DEFLATE`, from the ParameterRequest."""
        return "DEFLATE" if self.parameters.get("encoding") == "DEFLATE" else "NONE"

    @property
    def message_id(self) -> str:
        """The ParameterRequest `messageId`."""
        return str(self.parameters["messageId"])

    @property
    def document_name(self) -> str:
        """The ParameterRequest `documentName`."""
        return str(self.parameters["documentName"])

    def wire_payload(self) -> bytes:
        """The MessagePayload part as sent: zlib-deflated when the encoding is DEFLATE."""
        return zlib.compress(self.payload, 6) if self.encoding == "DEFLATE" else self.payload


def make_ims_message(
    bod: GeneratedBod,
    *,
    tenant_id: str | None = None,
    from_logical_id: str = DEFAULT_LOGICAL_ID,
    to_logical_id: str = DEFAULT_RELAY_LOGICAL_ID,
    encoding: ImsEncoding = "NONE",
    message_id: str | None = None,
    kind: ImsKind = "new",
    payload: bytes | None = None,
) -> ImsMessage:
    """Wrap a generated BOD in an IMS message (ParameterRequest keys as ION sends them).

    Args:
        bod: The document.
        tenant_id: `X-TenantId`; default: the BOD's tenant.
        from_logical_id: `fromLogicalId`.
        to_logical_id: `toLogicalId`.
        encoding: `NONE` or `DEFLATE`.
        message_id: `messageId`; default: a random UUID.
        kind: What the message is, for the test that sends it.
        payload: Bytes to send instead of `bod.xml` (a malformed variant).
    """
    body = bod.xml if payload is None else payload
    tenant = tenant_id or bod.tenant
    parameters = {
        "documentName": bod.document_name,
        "messageId": message_id or str(uuid.uuid4()),
        "fromLogicalId": from_logical_id,
        "toLogicalId": to_logical_id,
        "encoding": encoding,
        "characterSet": "UTF-8",
        "accountingEntity": bod.accounting_entity,
        "location": bod.location,
        "documentId": bod.document_id,
        "variationId": str(bod.variation_id),
        "instances": 1,
    }
    expected: tuple[str, ...] = ()
    if kind != "malformed":
        events = map_bod(
            parse_bod(body), tenant_id=tenant, source_logical_id=from_logical_id, variation_id=str(bod.variation_id)
        )
        expected = tuple(e.event_id for e in events)
    return ImsMessage(kind=kind, tenant_id=tenant, parameters=parameters, payload=body, expected_event_ids=expected)


@dataclass(slots=True)
class _Planned:
    kind: ImsKind
    bod: GeneratedBod | None = None
    payload: bytes | None = None
    message_id: str = ""
    duplicate_of: int | None = None
    deflate: bool = False


@dataclass(slots=True)
class _Doc:
    kind: BodKind
    document_id: str
    latest: int
    latest_at: datetime
    gaps: list[int] = field(default_factory=list)


def _break_xml(xml: bytes, rng: random.Random) -> bytes:
    # Cut inside the DataArea: well past the prolog, well before the end, so the XML cannot close.
    cut = int(len(xml) * rng.uniform(0.45, 0.85))
    return xml[:cut]


def plan_ims_traffic(
    count: int,
    *,
    seed: int,
    duplicate_ratio: float = 0.10,
    deflate_ratio: float = 0.10,
    out_of_order_ratio: float = 0.05,
    malformed_ratio: float = 0.02,
    tenant: str = DEFAULT_TENANT,
    from_logical_id: str = DEFAULT_LOGICAL_ID,
    to_logical_id: str = DEFAULT_RELAY_LOGICAL_ID,
) -> list[ImsMessage]:
    """A deterministic mix of IMS messages for Halloran's BODs.

    Each ratio is of `count`, rounded: duplicates are exact redeliveries of an earlier new message (same
    messageId, encoding and bytes); out-of-order messages are an older variation of a document sent after
    a newer one (new documents advance their variationID by 2, leaving the older one to send late);
    malformed ones are truncated XML; the DEFLATE share counts every message (a duplicate keeps its
    original's encoding).

    Raises:
        ValueError: A ratio outside [0, 1], or ratios that leave no new message for duplicates and
            out-of-order messages to refer to.
    """
    ratios = {
        "duplicate_ratio": duplicate_ratio,
        "deflate_ratio": deflate_ratio,
        "out_of_order_ratio": out_of_order_ratio,
        "malformed_ratio": malformed_ratio,
    }
    for name, ratio in ratios.items():
        if not 0 <= ratio <= 1:
            raise ValueError(f"{name} must be between 0 and 1, got {ratio}")
    if count < 0:
        raise ValueError("count must not be negative")
    n_duplicate = round(count * duplicate_ratio)
    n_out_of_order = round(count * out_of_order_ratio)
    n_malformed = round(count * malformed_ratio)
    n_new = count - n_duplicate - n_out_of_order - n_malformed
    if n_new < 0 or (n_new == 0 and n_duplicate + n_out_of_order > 0):
        raise ValueError("the ratios leave no new messages for duplicates and out-of-order ones to refer to")
    rng = random.Random(seed)
    factory = BodFactory(seed, tenant, from_logical_id)
    counts: tuple[tuple[ImsKind, int], ...] = (
        ("new", n_new),
        ("duplicate", n_duplicate),
        ("out_of_order", n_out_of_order),
        ("malformed", n_malformed),
    )
    kinds: list[ImsKind] = [kind for kind, n in counts for _ in range(n)]
    rng.shuffle(kinds)
    # Every duplicate needs an earlier new message, every out-of-order one an unsent older variation.
    news_before = 0
    gaps_before = 0
    for i, kind in enumerate(kinds):
        if (kind == "duplicate" and news_before == 0) or (kind == "out_of_order" and gaps_before == 0):
            j = kinds.index("new", i + 1)
            kinds[i], kinds[j] = kinds[j], kinds[i]
            kind = "new"
        if kind == "new":
            news_before += 1
            gaps_before += 1
        elif kind == "out_of_order":
            gaps_before -= 1

    docs: list[_Doc] = []
    planned: list[_Planned] = []
    new_indices: list[int] = []

    def message_id() -> str:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    for kind in kinds:
        if kind == "new":
            bod_kind = rng.choices(BOD_KINDS, weights=_KIND_WEIGHTS)[0]
            same_kind = [d for d in docs if d.kind == bod_kind]
            if bod_kind == "customer_delete":
                same_kind = [d for d in docs if d.kind in ("customer_sync", "customer_delete")]
            reuse = same_kind and (bod_kind == "customer_delete" or rng.random() < 0.4)
            doc = rng.choice(same_kind) if reuse else None
            variation = (doc.latest if doc is not None else 0) + 2
            bod = factory.document(bod_kind, doc.document_id if doc else None, variation_id=variation)
            if doc is None:
                doc = _Doc(bod_kind, bod.document_id, 0, bod.created_at)
                docs.append(doc)
            doc.gaps.append(variation - 1)
            doc.latest, doc.latest_at = variation, bod.created_at
            new_indices.append(len(planned))
            planned.append(_Planned("new", bod=bod, message_id=message_id()))
        elif kind == "duplicate":
            original = rng.choice(new_indices)
            planned.append(_Planned("duplicate", duplicate_of=original))
        elif kind == "out_of_order":
            candidates = [d for d in docs if d.gaps]
            doc = rng.choice(candidates)
            older = doc.gaps.pop(rng.randrange(len(doc.gaps)))
            # Older content, created before the newer variation that was already sent.
            created = doc.latest_at - timedelta(seconds=rng.randint(5, 300))
            bod = factory.document(doc.kind, doc.document_id, variation_id=older, created_at=created)
            planned.append(_Planned("out_of_order", bod=bod, message_id=message_id()))
        else:
            bod = factory.next_bod()
            planned.append(_Planned("malformed", bod=bod, payload=_break_xml(bod.xml, rng), message_id=message_id()))

    # DEFLATE: pick originals (with their redeliveries) until the share is reached.
    copies = Counter(p.duplicate_of for p in planned if p.duplicate_of is not None)
    target = round(count * deflate_ratio)
    chosen = 0
    order = [i for i, p in enumerate(planned) if p.kind != "duplicate"]
    rng.shuffle(order)
    for index in order:
        size = 1 + copies.get(index, 0)
        if chosen + size <= target:
            planned[index].deflate = True
            chosen += size
        if chosen == target:
            break

    messages: list[ImsMessage] = []
    for item in planned:
        if item.duplicate_of is not None:
            messages.append(replace(messages[item.duplicate_of], kind="duplicate", duplicate_of=item.duplicate_of))
            continue
        if item.bod is None:  # every non-duplicate was given its BOD above
            raise RuntimeError("planned message without a document")
        messages.append(
            make_ims_message(
                item.bod,
                tenant_id=tenant,
                from_logical_id=from_logical_id,
                to_logical_id=to_logical_id,
                encoding="DEFLATE" if item.deflate else "NONE",
                message_id=item.message_id,
                kind=item.kind,
                payload=item.payload,
            )
        )
    return messages


# --- the IMS sender --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PushResult:
    """The answer to one pushed message: status (0 when there was none), body, and the transport error."""

    message: ImsMessage
    status: int
    body: bytes = b""
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Any 2xx is success to an IMS sender."""
        return 200 <= self.status < 300

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON."""
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None


def _multipart(message: ImsMessage) -> aiohttp.MultipartWriter:
    writer = aiohttp.MultipartWriter("form-data")
    params = writer.append(orjson.dumps(dict(message.parameters)), {"Content-Type": "application/json"})
    params.set_content_disposition("form-data", name="ParameterRequest")
    content_type = "application/octet-stream" if message.encoding == "DEFLATE" else "application/xml"
    payload = writer.append(message.wire_payload(), {"Content-Type": content_type})
    payload.set_content_disposition("form-data", name="MessagePayload", filename="MessagePayload")
    return writer


async def push_bods(
    url_base: str,
    messages: Sequence[ImsMessage],
    *,
    session: aiohttp.ClientSession,
    auth: tuple[str, str] | aiohttp.BasicAuth | None,
    headers: Mapping[str, str] | None = None,
    version: str = "v3",
    rate_per_s: float | None = None,
    timeout_s: float = 30,
) -> list[PushResult]:
    """Push messages one after another as ION's IMS does: `POST {url_base}/service/{version}/multipartMessage`.

    Args:
        url_base: The connection point's base URL (e.g. `http://127.0.0.1:8080/ion/halloran-ion`).
        messages: In sending order.
        session: The aiohttp session to use.
        auth: HTTP Basic credentials as (user, password) or `aiohttp.BasicAuth` (deprecated in aiohttp
            3.14), or None (then pass e.g. a bearer header in `headers`).
        headers: Extra headers for every request.
        version: `v3` (ION expects 202) or `v2` (201).
        rate_per_s: Messages per second for demos; None sends as fast as answers come.
        timeout_s: Total timeout of each request.

    Returns:
        One result per message, in order; a transport failure is a result with status 0, not an exception.
    """
    url = f"{url_base.rstrip('/')}/service/{version}/multipartMessage"
    loop = asyncio.get_running_loop()
    started = loop.time()
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    results: list[PushResult] = []
    for index, message in enumerate(messages):
        if rate_per_s:
            # Pacing for demos, not synchronisation: each message has its slot on a fixed schedule.
            delay_s = started + index / rate_per_s - loop.time()
            if delay_s > 0:
                await asyncio.sleep(delay_s)
        request_headers = {**(headers or {}), "X-TenantId": message.tenant_id}
        if auth is not None and not isinstance(auth, aiohttp.BasicAuth):
            user, password = auth
            request_headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        try:
            async with session.post(
                url,
                data=_multipart(message),
                headers=request_headers,
                auth=auth if isinstance(auth, aiohttp.BasicAuth) else None,
                timeout=timeout,
            ) as resp:
                results.append(PushResult(message, resp.status, await resp.read()))
        except (aiohttp.ClientError, TimeoutError) as exc:
            results.append(PushResult(message, 0, b"", f"{type(exc).__name__}: {exc}"))
    return results
