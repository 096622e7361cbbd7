"""Credentials the pollers send: basic, bearer, OAuth2 client credentials, Sage X3 connected-app JWT."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

import aiohttp
import orjson
import structlog

from relay.config import BasicAuth, ConnectedAppAuth, NoAuth, OAuth2ClientCredentials, OutboundBearer
from relay.poll.base import PollError

log = structlog.get_logger(__name__)

OutboundAuthConfig = BasicAuth | OAuth2ClientCredentials | OutboundBearer | ConnectedAppAuth | NoAuth

__all__ = ["OutboundAuthenticator", "hs256_jwt"]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_jwt(claims: Mapping[str, object], secret: str) -> str:
    """A compact HS256 JSON Web Token (the Sage X3 connected-application bearer)."""
    header = _b64url(orjson.dumps({"alg": "HS256", "typ": "JWT"}))
    payload = _b64url(orjson.dumps(dict(claims)))
    signature = hmac.new(secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64url(signature)}"


class OutboundAuthenticator:
    """Headers for a poller's requests; tokens are cached, refreshed ahead of expiry, one request at a time."""

    def __init__(
        self, auth: OutboundAuthConfig, session: aiohttp.ClientSession, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.auth = auth
        self.session = session
        self.clock = clock
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()

    @property
    def expires_at(self) -> datetime | None:
        """When the cached access token expires (UTC, for display); None without one, and for basic auth or
        a static bearer, which do not expire."""
        if self._token is None or not isinstance(self.auth, OAuth2ClientCredentials | ConnectedAppAuth):
            return None
        return datetime.fromtimestamp(self._expires_at, UTC)

    async def headers(self) -> dict[str, str]:
        auth = self.auth
        if isinstance(auth, BasicAuth):
            raw = f"{auth.username}:{auth.password}".encode()
            return {"Authorization": "Basic " + base64.b64encode(raw).decode()}
        if isinstance(auth, OutboundBearer):
            return {"Authorization": f"Bearer {auth.token}"}
        if isinstance(auth, ConnectedAppAuth):
            return {"Authorization": f"Bearer {self._connected_app_token()}"}
        if isinstance(auth, OAuth2ClientCredentials):
            return {"Authorization": f"Bearer {await self._client_credentials_token()}"}
        return {}

    async def invalidate(self) -> dict[str, str]:
        """Forget the cached token (after a 401) and return fresh headers."""
        self._token = None
        self._expires_at = 0.0
        return await self.headers()

    def _connected_app_token(self) -> str:
        auth = self.auth
        assert isinstance(auth, ConnectedAppAuth)
        now = self.clock()
        if self._token is None or now > self._expires_at - 30:
            self._expires_at = now + auth.token_ttl_s
            claims = {"iss": auth.client_id, "sub": auth.user, "iat": int(now), "exp": int(self._expires_at)}
            if auth.audience:
                claims["aud"] = auth.audience
            self._token = hs256_jwt(claims, auth.client_secret)
        return self._token

    async def _client_credentials_token(self) -> str:
        auth = self.auth
        assert isinstance(auth, OAuth2ClientCredentials)
        async with self._lock:  # one token request however many callers wait
            if self._token is not None and self.clock() < self._expires_at - 60:
                return self._token
            form = {
                "grant_type": "client_credentials",
                "client_id": auth.client_id,
                "client_secret": auth.client_secret,
            }
            if auth.scope:
                form["scope"] = auth.scope
            try:
                async with self.session.post(auth.token_url, data=form, timeout=aiohttp.ClientTimeout(total=30)) as r:
                    body = await r.read()
                    status = r.status
            except (TimeoutError, aiohttp.ClientError) as exc:
                raise PollError(f"token request to {auth.token_url} failed: {type(exc).__name__}") from None
            if status != 200:
                raise PollError(
                    f"token request to {auth.token_url} rejected: HTTP {status}", status=status, permission=True
                )
            try:
                data = orjson.loads(body)
                self._token = str(data["access_token"])
            except (orjson.JSONDecodeError, KeyError, TypeError):
                raise PollError(f"token answer of {auth.token_url} has no access_token") from None
            self._expires_at = self.clock() + float(data.get("expires_in", 3600))
            log.info("token refreshed", token_url=auth.token_url, expires_in=data.get("expires_in"))
            return self._token
