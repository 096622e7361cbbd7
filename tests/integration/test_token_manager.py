"""TokenManager against the ION simulator's real token endpoint and gateway on 127.0.0.1."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web
from helpers import free_port, until

from relay.auth.ionapi import IonApiAuthError, IonApiCredentials, IonApiError, TokenManager, load_ionapi
from relay.sim.ion import IonSimulator, running_ion_simulator

M3_PATH = "M3/m3api-rest/v2/execute/{program}/{transaction}"


class FakeClock:
    """Monotonic seconds that move only when a test says so (shared by the simulator and the manager)."""

    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


@dataclass
class Ion:
    sim: IonSimulator
    base_url: str
    session: aiohttp.ClientSession
    clock: FakeClock
    creds: IonApiCredentials

    def manager(self, creds: IonApiCredentials | None = None, **kwargs: Any) -> TokenManager:
        kwargs.setdefault("refresh_margin_s", 10)
        return TokenManager(creds or self.creds, self.session, clock=self.clock, **kwargs)


async def m3_echo(request: web.Request, params: Mapping[str, str]) -> web.StreamResponse:
    return web.json_response({"program": params["program"], "transaction": params["transaction"], "results": []})


@pytest.fixture
async def ion(tmp_path: Path) -> AsyncIterator[Ion]:
    clock = FakeClock()
    async with running_ion_simulator(clock=clock, token_ttl_s=60) as (sim, base_url):
        sim.add_gateway_route(M3_PATH, m3_echo, method="GET")
        creds = load_ionapi(sim.write_ionapi(tmp_path / "halloran.ionapi", base_url))
        async with aiohttp.ClientSession() as session:
            yield Ion(sim, base_url, session, clock, creds)


async def test_first_token_uses_the_password_grant_and_is_reused(ion: Ion) -> None:
    manager = ion.manager()
    token = await manager.token()
    assert ion.sim.is_valid_token(token)
    assert await manager.token() == token
    assert ion.sim.token_requests == 1
    assert ion.sim.token_requests_by_grant == {"password": 1}
    assert manager.expires_at is not None


async def test_near_expiry_the_refresh_token_is_used(ion: Ion) -> None:
    manager = ion.manager(refresh_margin_s=10)
    first = await manager.token()
    ion.clock.advance(49)  # 11 s left: outside the 10 s margin
    assert await manager.token() == first
    ion.clock.advance(2)  # 9 s left: inside it
    second = await manager.token()
    assert second != first
    assert ion.sim.is_valid_token(second)
    assert ion.sim.token_requests_by_grant == {"password": 1, "refresh_token": 1}


async def test_the_margin_is_at_most_half_the_lifetime(ion: Ion) -> None:
    manager = ion.manager(refresh_margin_s=300)  # longer than the 60 s token lives
    first = await manager.token()
    assert await manager.token() == first
    ion.clock.advance(31)
    assert await manager.token() != first
    assert ion.sim.token_requests == 2


async def test_a_rejected_refresh_falls_back_to_a_full_grant(ion: Ion) -> None:
    manager = ion.manager()
    await manager.token()
    ion.sim.revoke_all()
    ion.clock.advance(55)
    token = await manager.token()
    assert ion.sim.is_valid_token(token)
    assert ion.sim.token_requests_by_grant == {"password": 2, "refresh_token": 1}


async def test_401_from_an_api_call_renews_once_and_retries(ion: Ion) -> None:
    manager = ion.manager()
    first = await manager.token()
    ion.sim.fail_next(401)
    status, headers, body = await manager.call_json("GET", "M3/m3api-rest/v2/execute/CRS610MI/LstByNumber")
    assert status == 200
    assert body == {"program": "CRS610MI", "transaction": "LstByNumber", "results": []}
    assert headers["Content-Type"].startswith("application/json")
    assert [c.status for c in ion.sim.gateway_calls] == [401, 200]
    assert ion.sim.token_requests == 2
    assert await manager.token() != first


async def test_a_token_expired_at_the_server_is_renewed(ion: Ion) -> None:
    manager = ion.manager()
    await manager.token()
    ion.sim.expire_tokens()
    response = await manager.call_json("GET", f"{ion.creds.gateway_base}/M3/m3api-rest/v2/execute/MMS200MI/GetItmBasic")
    assert response.status == 200
    assert [c.status for c in ion.sim.gateway_calls] == [401, 200]


async def test_a_second_401_is_returned_not_retried_again(ion: Ion) -> None:
    manager = ion.manager()
    ion.sim.fail_next(401, count=2)
    response = await manager.call_json("GET", "M3/m3api-rest/v2/execute/CRS610MI/Get")
    assert response.status == 401
    assert ion.sim.gateway_requests == 2
    assert ion.sim.token_requests == 2


async def test_fifty_concurrent_callers_cause_one_token_request(ion: Ion) -> None:
    manager = ion.manager()
    ion.sim.token_gate.clear()
    callers = [asyncio.create_task(manager.token()) for _ in range(50)]
    await until(lambda: ion.sim.token_requests == 1, timeout=5)
    ion.sim.token_gate.set()
    tokens = await asyncio.wait_for(asyncio.gather(*callers), timeout=10)
    assert len(set(tokens)) == 1
    assert ion.sim.token_requests == 1
    assert manager.token_requests == 1


async def test_fifty_concurrent_calls_after_expiry_cause_one_refresh(ion: Ion) -> None:
    manager = ion.manager()
    await manager.token()
    ion.clock.advance(55)
    calls = [manager.call_json("GET", "M3/m3api-rest/v2/execute/OIS100MI/GetHead") for _ in range(50)]
    responses = await asyncio.wait_for(asyncio.gather(*calls), timeout=10)
    assert {r.status for r in responses} == {200}
    assert ion.sim.token_requests_by_grant == {"password": 1, "refresh_token": 1}


async def test_bad_secret_is_a_clear_error_without_a_retry_storm(ion: Ion) -> None:
    wrong = "wrong-client-secret-987654321"
    manager = ion.manager(dataclasses.replace(ion.creds, cs=wrong), failure_cooldown_s=30)
    with pytest.raises(IonApiAuthError) as info:
        await manager.token()
    message = str(info.value)
    assert message.startswith(f"token request rejected by {ion.base_url}/HALLORAN/as/token.oauth2: 401 invalid_client")
    assert wrong not in message
    assert info.value.status == 401
    assert info.value.rejected
    callers = [manager.token() for _ in range(20)]
    outcomes = await asyncio.gather(*callers, return_exceptions=True)
    assert all(isinstance(o, IonApiAuthError) and str(o) == message for o in outcomes)
    assert ion.sim.token_requests == 1
    ion.clock.advance(31)
    with pytest.raises(IonApiAuthError):
        await manager.token()
    assert ion.sim.token_requests == 2


async def test_bad_service_account_secret(ion: Ion) -> None:
    manager = ion.manager(dataclasses.replace(ion.creds, sask="not-the-service-secret"))
    with pytest.raises(IonApiAuthError, match=r"401 invalid_grant") as info:
        await manager.token()
    assert "not-the-service-secret" not in str(info.value)


async def test_concurrent_callers_share_one_failure(ion: Ion) -> None:
    manager = ion.manager(dataclasses.replace(ion.creds, cs="wrong-client-secret-987654321"))
    ion.sim.token_gate.clear()
    callers = [asyncio.create_task(manager.token()) for _ in range(10)]
    await until(lambda: ion.sim.token_requests == 1, timeout=5)
    ion.sim.token_gate.set()
    outcomes = await asyncio.wait_for(asyncio.gather(*callers, return_exceptions=True), timeout=10)
    assert all(isinstance(o, IonApiAuthError) for o in outcomes)
    assert ion.sim.token_requests == 1


async def test_a_file_without_a_service_account_is_refused_before_any_request(ion: Ion, tmp_path: Path) -> None:
    path = ion.sim.write_ionapi(tmp_path / "cc.ionapi", ion.base_url, grant="client_credentials")
    with pytest.raises(IonApiError, match="download the file with 'Create Service Account' checked"):
        load_ionapi(path)
    assert ion.sim.token_requests == 0


async def test_unreachable_token_endpoint_is_not_a_rejection(ion: Ion) -> None:
    closed = f"http://127.0.0.1:{free_port()}/HALLORAN/as/"
    manager = ion.manager(dataclasses.replace(ion.creds, pu=closed))
    with pytest.raises(
        IonApiAuthError, match=r"^token request to http://127\.0\.0\.1:\d+/HALLORAN/as/token\.oauth2 failed"
    ):
        await manager.token()
    with pytest.raises(IonApiAuthError) as info:
        await manager.token()  # not in a cooldown: it tries again
    assert not info.value.rejected


async def test_revoke_forgets_and_revokes_both_tokens(ion: Ion) -> None:
    manager = ion.manager()
    token = await manager.token()
    await manager.revoke()
    assert not ion.sim.is_valid_token(token)
    assert ion.sim.revoke_requests == 2
    assert manager.expires_at is None
    assert await manager.token() != token
    assert ion.sim.token_requests_by_grant == {"password": 2}


async def test_invalidate_only_forgets_the_current_token(ion: Ion) -> None:
    manager = ion.manager()
    token = await manager.token()
    await manager.invalidate("some-older-token")
    assert await manager.token() == token
    await manager.invalidate(token)
    assert await manager.token() != token
    assert ion.sim.token_requests_by_grant == {"password": 1, "refresh_token": 1}


async def test_logs_say_what_happened_and_never_a_secret(ion: Ion) -> None:
    manager = ion.manager()
    with structlog.testing.capture_logs() as logs:
        token = await manager.token()
        ion.sim.fail_next(401)
        await manager.call_json("GET", "M3/m3api-rest/v2/execute/CRS610MI/Get")
    assert any(entry["event"] == "ionapi token refreshed" and entry["expires_in_s"] == 60 for entry in logs)
    text = repr(logs)
    for secret in (ion.creds.cs, ion.creds.sask or "", token):
        assert secret not in text
