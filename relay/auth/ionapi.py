"""Infor ION API `.ionapi` credentials and the OAuth2 token manager for the ION API gateway.

The `.ionapi` file is exported from Infor OS Portal; `parse_ionapi` checks it and reports every problem
at once; a file without the service-account keys `saak`/`sask` is refused, since the ION API has no
client-credentials grant to use it unattended. `TokenManager` keeps one access token per credentials: it
fetches with the password grant (service account `saak`/`sask`); renews with
the refresh token (HTTP Basic `ci:cs`) before expiry, falling back to a full grant; sends exactly one
token request however many callers wait; and, after the authorization server rejects the credentials,
answers the same error for `failure_cooldown_s` without asking again so a bad secret cannot cause a storm.

Secrets (`cs`, `sask`, tokens) never appear in a repr, a log line or an error message.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import aiohttp
import orjson
import structlog
from multidict import CIMultiDict, CIMultiDictProxy

log = structlog.get_logger(__name__)

__all__ = [
    "ApiResponse",
    "IonApiAuthError",
    "IonApiCredentials",
    "IonApiError",
    "TokenManager",
    "load_ionapi",
    "parse_ionapi",
]

DEFAULT_EXPIRES_IN_S = 3600.0
_MASK_MIN_CHARS = 8
_MAX_ERROR_TEXT_CHARS = 200


class IonApiError(ValueError):
    """An unusable `.ionapi` file, or a failure to use it."""


class IonApiAuthError(IonApiError):
    """The authorization server did not issue a token.

    Attributes:
        status: The HTTP status of the token response, or None when there was no response.
        rejected: True when the server refused the credentials (400/401/403), not a transient failure.
    """

    def __init__(self, message: str, *, status: int | None = None, rejected: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.rejected = rejected


_KEY_MEANING = {
    "ti": "tenant id",
    "cn": "application name",
    "ci": "client id",
    "cs": "client secret",
    "iu": "API gateway URL",
    "pu": "authorization server URL",
    "oa": "authorize path",
    "ot": "token path",
    "or": "revoke path",
    "saak": "service account access key",
    "sask": "service account secret key",
    "ev": "version stamp",
    "v": "file version",
}
_REQUIRED = ("ti", "ci", "cs", "iu", "pu", "ot")
_OPTIONAL = ("cn", "oa", "or", "saak", "sask", "ev", "v")
_URL_KEYS = ("iu", "pu")
_SECRET_KEYS = ("cs", "sask")


# The ION API issues tokens to backend services only through the password grant with a service account.
NO_SERVICE_ACCOUNT = (
    "no service account ('saak'/'sask'): the ION API has no client-credentials grant; in Infor OS Portal, "
    "API Gateway → Authorized Apps, download the file with 'Create Service Account' checked"
)


def _saak_type_reported(problems: list[str]) -> bool:
    """Whether a `saak`/`sask` problem was already reported (a wrong type), so absence is not reported twice."""
    return any(p.startswith(("'saak'", "'sask'")) for p in problems)


def _mask(secret: str | None) -> str | None:
    if secret is None:
        return None
    # Two characters of a short secret would give away too much of it.
    return secret[:2] + "…" if len(secret) >= _MASK_MIN_CHARS else "…"


def _basic(login: str, password: str) -> str:
    # Built by hand: aiohttp 3.14 deprecates BasicAuth, and older versions lack encode_basic_auth.
    return "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode("ascii")


def _join(base: str, path: str) -> str:
    return base if not path else base.rstrip("/") + "/" + path.lstrip("/")


@dataclass(frozen=True, kw_only=True, repr=False)
class IonApiCredentials:
    """The contents of a `.ionapi` file (`or` is spelled `or_`, a Python keyword).

    `parse_ionapi` only builds one with the service-account keys `saak`/`sask`: `grant` is `password`.
    """

    ti: str
    ci: str
    cs: str
    iu: str
    pu: str
    ot: str
    cn: str | None = None
    oa: str | None = None
    or_: str | None = None
    saak: str | None = None
    sask: str | None = None
    sc: list[str] = field(default_factory=list)
    ev: str | None = None
    v: str | None = None

    @property
    def token_url(self) -> str:
        """`pu` + `ot`: where tokens are requested."""
        return _join(self.pu, self.ot)

    @property
    def revoke_url(self) -> str:
        """`pu` + `or` (default `revoke_token.oauth2`): where tokens are revoked."""
        return _join(self.pu, self.or_ or "revoke_token.oauth2")

    @property
    def gateway_base(self) -> str:
        """`iu/ti`: the base of every API call through the gateway."""
        return self.iu.rstrip("/") + "/" + self.ti

    @property
    def grant(self) -> str:
        """`password`: the resource-owner grant with the service account, the only one the ION API offers."""
        return "password"

    def gateway_url(self, path: str) -> str:
        """An absolute URL for a product path (`SX/rest/sxapirestservice/…`) under the gateway base."""
        return _join(self.gateway_base, path)

    def masked(self) -> dict[str, Any]:
        """The file's keys (absent ones left out) with `cs` and `sask` masked to two characters and `…`."""
        out: dict[str, Any] = {}
        for key in ("ti", "cn", "ci", "cs", "iu", "pu", "oa", "ot", "or", "saak", "sask", "sc", "ev", "v"):
            value = getattr(self, "or_" if key == "or" else key)
            if value is None or value == []:
                continue
            out[key] = _mask(value) if key in _SECRET_KEYS else (list(value) if key == "sc" else value)
        return out

    def secrets(self) -> tuple[str, ...]:
        """The secret values, for scrubbing text that might echo them."""
        return tuple(s for s in (self.cs, self.sask) if s)

    def __repr__(self) -> str:
        return (
            f"IonApiCredentials(ti={self.ti!r}, ci={self.ci!r}, cs={_mask(self.cs)!r}, iu={self.iu!r}, "
            f"pu={self.pu!r}, grant={self.grant!r})"
        )

    __str__ = __repr__


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _is_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def parse_ionapi(text: str, *, origin: str) -> IonApiCredentials:
    """Parse the text of a `.ionapi` file.

    Args:
        text: The JSON text (a leading BOM is allowed: Windows exports have one).
        origin: What to call the file in messages (usually its path).

    Returns:
        The credentials.

    Raises:
        IonApiError: Not JSON, not an object, or one message listing every missing, empty or mistyped key
            and every bad URL, e.g. `halloran.ionapi: missing key 'ot' (token path); 'iu' is not a URL`.
    """
    try:
        raw = json.loads(text.lstrip("\ufeff"))
    except json.JSONDecodeError as exc:
        raise IonApiError(f"{origin}: not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    if not isinstance(raw, dict):
        raise IonApiError(f"{origin}: not valid .ionapi: expected a JSON object, got {_json_type(raw)}")
    problems: list[str] = []
    values: dict[str, str | None] = {}
    for key in (*_REQUIRED, *_OPTIONAL):
        required = key in _REQUIRED
        value = raw.get(key)
        if value is None:
            if required:
                problems.append(f"missing key {key!r} ({_KEY_MEANING[key]})")
            values[key] = None
            continue
        if not isinstance(value, str):
            problems.append(f"{key!r} ({_KEY_MEANING[key]}) must be a string, not {_json_type(value)}")
            values[key] = None
            continue
        value = value.strip()
        if not value and required:
            problems.append(f"{key!r} ({_KEY_MEANING[key]}) is empty")
        values[key] = value or None
    for key in _URL_KEYS:
        url = values.get(key)
        if url is not None and not _is_url(url):
            problems.append(f"{key!r} is not a URL")
    if bool(values["saak"]) != bool(values["sask"]):
        have, lacking = ("saak", "sask") if values["saak"] else ("sask", "saak")
        problems.append(f"{have!r} without {lacking!r}: the password grant needs both service-account keys")
    elif not values["saak"] and not _saak_type_reported(problems):
        problems.append(NO_SERVICE_ACCOUNT)
    scopes: list[str] = []
    raw_scopes = raw.get("sc")
    if isinstance(raw_scopes, str):
        scopes = raw_scopes.split()
    elif isinstance(raw_scopes, list) and all(isinstance(s, str) for s in raw_scopes):
        scopes = list(raw_scopes)
    elif raw_scopes is not None:
        problems.append(f"'sc' (scopes) must be a list of strings, not {_json_type(raw_scopes)}")
    if problems:
        raise IonApiError(f"{origin}: " + "; ".join(problems))

    def need(key: str) -> str:
        value = values[key]
        if value is None:  # unreachable: every required key was checked above
            raise IonApiError(f"{origin}: missing key {key!r}")
        return value

    return IonApiCredentials(
        ti=need("ti"),
        ci=need("ci"),
        cs=need("cs"),
        iu=need("iu"),
        pu=need("pu"),
        ot=need("ot"),
        cn=values["cn"],
        oa=values["oa"],
        or_=values["or"],
        saak=values["saak"],
        sask=values["sask"],
        sc=scopes,
        ev=values["ev"],
        v=values["v"],
    )


def load_ionapi(path: str | os.PathLike[str]) -> IonApiCredentials:
    """Read and parse a `.ionapi` file.

    Raises:
        IonApiError: The file cannot be read, is not UTF-8, or `parse_ionapi` refuses it; the message
            starts with the path.
    """
    origin = os.fspath(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise IonApiError(f"{origin}: cannot read: {exc.strerror or type(exc).__name__}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise IonApiError(f"{origin}: not UTF-8 text") from None
    return parse_ionapi(text, origin=origin)


class ApiResponse(NamedTuple):
    """An answer from the gateway: status, headers, and the body as JSON (or text when it is not JSON)."""

    status: int
    headers: CIMultiDictProxy[str]
    body: Any


@dataclass(frozen=True, slots=True)
class _Token:
    access: str
    refresh: str | None
    renew_at_mono: float
    expires_at: datetime


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    return text[:_MAX_ERROR_TEXT_CHARS]


class TokenManager:
    """One ION API access token for one set of credentials, shared by every caller.

    Args:
        creds: The `.ionapi` credentials.
        session: The aiohttp session used for token and API requests (owned by the caller).
        refresh_margin_s: Renew this long before expiry (at most half the token's lifetime).
        clock: Monotonic seconds; injectable for tests.
        failure_cooldown_s: After the server rejects the credentials, calls within this time raise the
            same error without another request.
        request_timeout_s: Total timeout of one token request.

    Attributes:
        token_requests: How many token requests this manager has sent (for metrics and tests).
    """

    def __init__(
        self,
        creds: IonApiCredentials,
        session: aiohttp.ClientSession,
        *,
        refresh_margin_s: float = 300,
        clock: Callable[[], float] = time.monotonic,
        failure_cooldown_s: float = 30,
        request_timeout_s: float = 30,
    ) -> None:
        self.creds = creds
        self._session = session
        self._margin_s = refresh_margin_s
        self._clock = clock
        self._cooldown_s = failure_cooldown_s
        self._timeout = aiohttp.ClientTimeout(total=request_timeout_s)
        self._token: _Token | None = None
        self._refresh: str | None = None
        self._lock = asyncio.Lock()
        self._attempts = 0
        self._last_error: IonApiAuthError | None = None
        self._rejected_at: float | None = None
        self.token_requests = 0

    @property
    def expires_at(self) -> datetime | None:
        """When the current access token expires (UTC, for display), or None without one."""
        return self._token.expires_at if self._token is not None else None

    def _usable(self) -> str | None:
        token = self._token
        if token is not None and self._clock() < token.renew_at_mono:
            return token.access
        return None

    def _check_cooldown(self) -> None:
        error = self._last_error
        if error is None or self._rejected_at is None:
            return
        if self._clock() - self._rejected_at < self._cooldown_s:
            raise IonApiAuthError(str(error), status=error.status, rejected=True)

    async def token(self) -> str:
        """A valid access token, fetched or renewed when missing or within the margin of expiry.

        Raises:
            IonApiAuthError: The authorization server refused or failed; callers that waited on the same
                request get the same error.
        """
        current = self._usable()
        if current is not None:
            return current
        self._check_cooldown()
        attempts_seen = self._attempts
        async with self._lock:
            current = self._usable()
            if current is not None:
                return current
            self._check_cooldown()
            error = self._last_error
            if self._attempts != attempts_seen and error is not None:
                # Share the outcome of the request this caller waited on instead of sending another.
                raise IonApiAuthError(str(error), status=error.status, rejected=error.rejected)
            return await self._fetch()

    async def invalidate(self, token: str) -> None:
        """Forget `token` if it is the current access token (the refresh token is kept)."""
        if self._token is not None and self._token.access == token:
            self._token = None

    async def revoke(self) -> None:
        """Revoke the held tokens at the authorization server (best effort) and forget them."""
        tokens = [(t, "refresh_token") for t in (self._refresh,) if t]
        if self._token is not None:
            tokens.append((self._token.access, "access_token"))
        self._token = None
        self._refresh = None
        headers = {"Authorization": _basic(self.creds.ci, self.creds.cs)}
        for value, hint in tokens:
            try:
                async with self._session.post(
                    self.creds.revoke_url,
                    data={"token": value, "token_type_hint": hint},
                    headers=headers,
                    timeout=self._timeout,
                ) as resp:
                    await resp.read()
                    log.info("ionapi token revoked", tenant=self.creds.ti, hint=hint, status=resp.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning("ionapi token revoke failed", tenant=self.creds.ti, error=type(exc).__name__)

    async def call_json(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> ApiResponse:
        """Call the gateway with the bearer token; on 401 renew the token and retry exactly once.

        Args:
            method: HTTP method.
            url: An absolute URL, or a product path relative to `gateway_base` (`SX/rest/…`).
            json: A JSON body to send, if any.
            params: Query parameters.
            headers: Extra request headers.
            timeout_s: Total timeout of each attempt; None uses the session's.

        Returns:
            The status, headers and JSON-decoded body (text when not JSON, None when empty) of the last
            attempt; any status is returned, including a second 401.

        Raises:
            IonApiAuthError: No token could be had.
            aiohttp.ClientError, TimeoutError: The gateway could not be reached.
        """
        target = url if url.startswith(("http://", "https://")) else self.creds.gateway_url(url)
        token = await self.token()
        response = await self._send(method, target, token, json, params, headers, timeout_s)
        if response.status == 401:
            log.info("ionapi call unauthorized, renewing token", tenant=self.creds.ti)
            await self.invalidate(token)
            token = await self.token()
            response = await self._send(method, target, token, json, params, headers, timeout_s)
        return response

    async def _send(
        self,
        method: str,
        url: str,
        token: str,
        body: Any,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
        timeout_s: float | None,
    ) -> ApiResponse:
        request_headers = {"Accept": "application/json", **(headers or {}), "Authorization": f"Bearer {token}"}
        kwargs: dict[str, Any] = {"headers": request_headers}
        if body is not None:
            kwargs["data"] = orjson.dumps(body)
            request_headers["Content-Type"] = "application/json"
        if params is not None:
            kwargs["params"] = dict(params)
        if timeout_s is not None:
            kwargs["timeout"] = aiohttp.ClientTimeout(total=timeout_s)
        async with self._session.request(method, url, **kwargs) as resp:
            raw = await resp.read()
            response_headers = CIMultiDictProxy(CIMultiDict(resp.headers))
            decoded: Any = None
            if raw:
                try:
                    decoded = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    decoded = raw.decode(resp.get_encoding() if resp.charset else "utf-8", errors="replace")
            return ApiResponse(resp.status, response_headers, decoded)

    async def _fetch(self) -> str:
        self._attempts += 1
        try:
            token = await self._fetch_token()
        except IonApiAuthError as exc:
            self._last_error = exc
            self._rejected_at = self._clock() if exc.rejected else None
            raise
        self._last_error = None
        self._rejected_at = None
        self._token = token
        return token.access

    async def _fetch_token(self) -> _Token:
        creds = self.creds
        if self._refresh is not None:
            form = {"grant_type": "refresh_token", "refresh_token": self._refresh}
            try:
                return await self._grant("refresh_token", form, _basic(creds.ci, creds.cs))
            except IonApiAuthError as exc:
                log.info("ionapi token refresh failed, full grant", tenant=creds.ti, status=exc.status)
                self._refresh = None
        if not (creds.saak and creds.sask):
            raise IonApiAuthError(f"{creds.ti}: {NO_SERVICE_ACCOUNT}", rejected=True)
        form = {
            "grant_type": "password",
            "username": creds.saak,
            "password": creds.sask,
            "client_id": creds.ci,
            "client_secret": creds.cs,
        }
        return await self._grant(creds.grant, form, None)

    async def _grant(self, grant: str, form: dict[str, str], authorization: str | None) -> _Token:
        url = self.creds.token_url
        secrets = (*self.creds.secrets(), *(v for k, v in form.items() if k == "refresh_token"))
        headers = {"Accept": "application/json"}
        if authorization is not None:
            headers["Authorization"] = authorization
        self.token_requests += 1
        try:
            async with self._session.post(url, data=form, timeout=self._timeout, headers=headers) as resp:
                status = resp.status
                raw = await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            detail = _scrub(str(exc), secrets) or type(exc).__name__
            raise IonApiAuthError(f"token request to {url} failed: {detail}") from None
        try:
            body: Any = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        if not 200 <= status < 300:
            reason = ""
            if isinstance(body, dict) and isinstance(body.get("error"), str):
                reason = body["error"]
                if isinstance(body.get("error_description"), str) and body["error_description"]:
                    reason += f" ({body['error_description']})"
            reason = _scrub(reason, secrets)
            rejected = status in (400, 401, 403)
            verb = "rejected by" if rejected else "to"
            failed = "" if rejected else " failed:"
            raise IonApiAuthError(
                f"token request {verb} {url}:{failed} {status} {reason}".rstrip(), status=status, rejected=rejected
            )
        access = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(access, str) or not access:
            raise IonApiAuthError(f"token response from {url} has no access_token", status=status)
        expires_in = body.get("expires_in", DEFAULT_EXPIRES_IN_S)
        try:
            expires_in_s = float(expires_in)
        except (TypeError, ValueError):
            expires_in_s = DEFAULT_EXPIRES_IN_S
        if not expires_in_s > 0:
            expires_in_s = DEFAULT_EXPIRES_IN_S
        refresh = body.get("refresh_token")
        if isinstance(refresh, str) and refresh:
            self._refresh = refresh
        margin_s = min(self._margin_s, expires_in_s / 2)
        now = self._clock()
        log.info("ionapi token refreshed", tenant=self.creds.ti, grant=grant, expires_in_s=expires_in_s)
        return _Token(
            access=access,
            refresh=self._refresh,
            renew_at_mono=now + expires_in_s - margin_s,
            expires_at=datetime.now(UTC) + timedelta(seconds=expires_in_s),
        )
