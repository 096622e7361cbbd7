"""When a poller's outbound token expires, as the console and /metrics show it: only tokens expire."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from relay.auth.outbound import OutboundAuthenticator
from relay.config import BasicAuth, ConnectedAppAuth, NoAuth, OutboundBearer

NOW_S = 1_800_000_000.0


@pytest.mark.parametrize(
    ("auth", "expires_at"),
    [
        (BasicAuth(type="basic", username="u", password="p"), None),
        (OutboundBearer(type="bearer", token="static-token"), None),
        (NoAuth(type="none"), None),
        (
            ConnectedAppAuth(type="connected-app", client_id="c", client_secret="s", user="admin", token_ttl=300),
            datetime.fromtimestamp(NOW_S + 300, UTC),
        ),
    ],
)
async def test_expiry_is_known_once_a_token_is_issued_and_only_for_tokens(auth: Any, expires_at: Any) -> None:
    async with aiohttp.ClientSession() as session:
        authenticator = OutboundAuthenticator(auth, session, clock=lambda: NOW_S)
        assert authenticator.expires_at is None  # nothing issued yet
        await authenticator.headers()
        assert authenticator.expires_at == expires_at
        await authenticator.invalidate()
        assert authenticator.expires_at == expires_at  # invalidate issues the next one at once
