"""The ION simulator: token endpoint, gateway behaviours, the IMS traffic plan and the multipart it sends."""

from __future__ import annotations

import base64
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from helpers import free_port

from relay.ingest.bod import BodError, map_bod, parse_bod
from relay.sim.ion import (
    BodFactory,
    ImsMessage,
    IonSimulator,
    make_ims_message,
    plan_ims_traffic,
    push_bods,
    running_ion_simulator,
)


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 50.0

    def __call__(self) -> float:
        return self.now_s


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@dataclass
class Sim:
    sim: IonSimulator
    base_url: str
    session: aiohttp.ClientSession
    clock: FakeClock

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/HALLORAN/as/token.oauth2"

    async def post_form(self, url: str, form: dict[str, str], **headers: str) -> tuple[int, Any]:
        async with self.session.post(url, data=form, headers=headers) as resp:
            return resp.status, (await resp.json() if resp.content_type == "application/json" else None)

    async def password_grant(self, **changes: str) -> tuple[int, Any]:
        form = {
            "grant_type": "password",
            "username": self.sim.saak,
            "password": self.sim.sask,
            "client_id": self.sim.client_id,
            "client_secret": self.sim.client_secret,
            **changes,
        }
        return await self.post_form(self.token_url, form)

    async def get(self, path: str, token: str | None = None) -> aiohttp.ClientResponse:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.get(f"{self.base_url}/HALLORAN/{path}", headers=headers) as resp:
            await resp.read()
            return resp


@pytest.fixture
async def ion() -> AsyncIterator[Sim]:
    clock = FakeClock()
    async with (
        running_ion_simulator(clock=clock, token_ttl_s=120, refresh_ttl_s=600) as (sim, base_url),
        aiohttp.ClientSession() as session,
    ):
        yield Sim(sim, base_url, session, clock)


PING = "IONSERVICES/api/ion/messaging/service/ping"


# --- token endpoint --------------------------------------------------------------------------------


async def test_token_endpoint_issues_refreshes_and_revokes(ion: Sim) -> None:
    status, body = await ion.password_grant()
    assert status == 200
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 120
    access, refresh = body["access_token"], body["refresh_token"]
    assert ion.sim.is_valid_token(access)

    basic_auth = basic(ion.sim.client_id, ion.sim.client_secret)
    status, renewed = await ion.post_form(
        ion.token_url, {"grant_type": "refresh_token", "refresh_token": refresh}, Authorization=basic_auth
    )
    assert status == 200
    assert renewed["access_token"] != access
    assert renewed["refresh_token"] == refresh

    revoke_url = f"{ion.base_url}/HALLORAN/as/revoke_token.oauth2"
    status, _ = await ion.post_form(
        revoke_url, {"token": renewed["access_token"], "token_type_hint": "access_token"}, Authorization=basic_auth
    )
    assert status == 200
    assert not ion.sim.is_valid_token(renewed["access_token"])
    assert (await ion.get(PING, renewed["access_token"])).status == 401
    status, _ = await ion.post_form(revoke_url, {"token": refresh}, Authorization=basic_auth)
    status, body = await ion.post_form(
        ion.token_url, {"grant_type": "refresh_token", "refresh_token": refresh}, Authorization=basic_auth
    )
    assert (status, body["error"]) == (401, "invalid_grant")
    assert ion.sim.token_requests == 3
    assert ion.sim.token_requests_by_grant == {"password": 1, "refresh_token": 2}
    assert ion.sim.revoke_requests == 2


async def test_wrong_credentials(ion: Sim) -> None:
    status, body = await ion.password_grant(client_secret="nope")
    assert (status, body["error"]) == (401, "invalid_client")
    status, body = await ion.password_grant(password="nope")
    assert (status, body["error"]) == (401, "invalid_grant")
    status, body = await ion.password_grant(grant_type="authorization_code")
    assert (status, body["error"]) == (400, "unsupported_grant_type")
    # The ION API has no client-credentials grant: a file without a service account cannot get a token.
    status, body = await ion.password_grant(grant_type="client_credentials")
    assert (status, body["error"]) == (400, "unsupported_grant_type")
    assert ion.sim.token_rejections == 4


async def test_expired_tokens(ion: Sim) -> None:
    status, body = await ion.password_grant()
    assert status == 200
    access, refresh = body["access_token"], body["refresh_token"]
    assert (await ion.get(PING, access)).status == 200
    ion.clock.now_s += 120
    assert (await ion.get(PING, access)).status == 401
    ion.clock.now_s += 480
    status, body = await ion.post_form(
        ion.token_url,
        {"grant_type": "refresh_token", "refresh_token": refresh},
        Authorization=basic(ion.sim.client_id, ion.sim.client_secret),
    )
    assert (status, body["error"]) == (401, "invalid_grant")


def test_ionapi_dict_matches_the_routes() -> None:
    sim = IonSimulator(tenant="ACME_TST")
    doc = sim.ionapi_dict("http://127.0.0.1:9999/")
    assert doc["pu"] == "http://127.0.0.1:9999/ACME_TST/as/"
    assert (doc["ot"], doc["or"], doc["iu"], doc["ti"]) == (
        "token.oauth2",
        "revoke_token.oauth2",
        "http://127.0.0.1:9999",
        "ACME_TST",
    )
    assert "saak" not in sim.ionapi_dict("http://x", grant="client_credentials")


# --- gateway ---------------------------------------------------------------------------------------


async def test_gateway_checks_bearer_tokens(ion: Sim) -> None:
    assert (await ion.get(PING)).status == 401
    assert (await ion.get(PING, "made-up")).status == 401
    _, body = await ion.password_grant()
    resp = await ion.get(PING, body["access_token"])
    assert resp.status == 200
    assert ion.sim.gateway_unauthorized == 2


async def test_gateway_failures_on_demand(ion: Sim) -> None:
    _, body = await ion.password_grant()
    token = body["access_token"]
    ion.sim.fail_next(429, retry_after="7")
    ion.sim.fail_next(504, count=2)
    ion.sim.fail_next(401)
    first = await ion.get(PING, token)
    assert (first.status, first.headers["Retry-After"]) == (429, "7")
    assert [(await ion.get(PING, token)).status for _ in range(4)] == [504, 504, 401, 200]
    assert [c.status for c in ion.sim.gateway_calls] == [429, 504, 504, 401, 200]


async def test_gateway_routes_with_parameters(ion: Sim) -> None:
    seen: list[Mapping[str, str]] = []

    async def sxe(request: web.Request, params: Mapping[str, str]) -> web.StreamResponse:
        seen.append(params)
        request_body = await request.json()
        return web.json_response({"response": {"cErrorMessage": "", "echo": request_body["request"]}})

    ion.sim.add_gateway_route("SX/rest/sxapirestservice/{op}", sxe, method="POST")
    _, body = await ion.password_grant()
    headers = {"Authorization": f"Bearer {body['access_token']}"}
    url = f"{ion.base_url}/HALLORAN/SX/rest/sxapirestservice/sxapiicgetwhseproductdatageneralv2"
    async with ion.session.post(url, json={"request": {"companyNumber": 1}}, headers=headers) as resp:
        assert resp.status == 200
        assert (await resp.json())["response"]["echo"] == {"companyNumber": 1}
    assert seen == [{"op": "sxapiicgetwhseproductdatageneralv2"}]
    async with ion.session.get(url, headers=headers) as resp:
        assert resp.status == 405
    async with ion.session.get(f"{ion.base_url}/HALLORAN/nothing/here", headers=headers) as resp:
        assert resp.status == 404


# --- BODs and the traffic plan ---------------------------------------------------------------------


def test_factory_is_deterministic_and_versions_grow() -> None:
    first, second = BodFactory(seed=5), BodFactory(seed=5)
    assert [first.next_bod().xml for _ in range(20)] == [second.next_bod().xml for _ in range(20)]
    factory = BodFactory(seed=5)
    order = factory.sales_order()
    again = factory.sales_order(order.document_id)
    assert (order.variation_id, again.variation_id) == (1, 2)
    assert again.created_at > order.created_at
    assert b"Halloran" not in order.xml or b"HALLORAN" in order.xml
    balance = factory.inventory_balance(lines=4)
    events = map_bod(parse_bod(balance.xml), tenant_id=None, source_logical_id=None)
    assert len(events) == 4
    assert {e.payload["data"]["warehouse"] for e in events} <= {"MAIN", "EAST", "WEST"}


def fingerprint(messages: list[ImsMessage]) -> list[tuple[Any, ...]]:
    return [
        (m.kind, m.tenant_id, orjson.dumps(dict(m.parameters)), m.payload, m.expected_event_ids, m.duplicate_of)
        for m in messages
    ]


def test_plan_is_deterministic_for_a_seed() -> None:
    assert fingerprint(plan_ims_traffic(200, seed=1)) == fingerprint(plan_ims_traffic(200, seed=1))
    assert fingerprint(plan_ims_traffic(200, seed=1)) != fingerprint(plan_ims_traffic(200, seed=2))


@pytest.mark.parametrize(("count", "seed"), [(1000, 1), (200, 7), (37, 3)])
def test_plan_hits_its_ratios(count: int, seed: int) -> None:
    messages = plan_ims_traffic(count, seed=seed)
    kinds = Counter(m.kind for m in messages)
    assert len(messages) == count
    assert kinds["duplicate"] == round(count * 0.10)
    assert kinds["out_of_order"] == round(count * 0.05)
    assert kinds["malformed"] == round(count * 0.02)
    assert abs(sum(m.encoding == "DEFLATE" for m in messages) - round(count * 0.10)) <= 1


def test_plan_messages_are_what_they_say() -> None:
    messages = plan_ims_traffic(500, seed=4, duplicate_ratio=0.15, out_of_order_ratio=0.08, malformed_ratio=0.04)
    latest: dict[tuple[str, str], int] = {}
    stored_ids: set[str] = set()
    for index, message in enumerate(messages):
        params = message.parameters
        key = (str(params["documentName"]), str(params["documentId"]))
        variation = int(params["variationId"])
        if message.kind == "malformed":
            with pytest.raises(BodError):
                parse_bod(message.payload)
            assert message.expected_event_ids == ()
            continue
        mapped = map_bod(
            parse_bod(message.payload),
            tenant_id=message.tenant_id,
            source_logical_id=str(params["fromLogicalId"]),
            variation_id=str(params["variationId"]),
        )
        assert tuple(e.event_id for e in mapped) == message.expected_event_ids
        assert message.expected_event_ids
        if message.kind == "duplicate":
            assert message.duplicate_of is not None
            assert message.duplicate_of < index
            original = messages[message.duplicate_of]
            assert original.kind == "new"
            assert (original.parameters, original.payload) == (message.parameters, message.payload)
            assert set(message.expected_event_ids) <= stored_ids
            continue
        # New and out-of-order messages never collide with anything sent before.
        assert not set(message.expected_event_ids) & stored_ids
        stored_ids.update(message.expected_event_ids)
        if message.kind == "out_of_order":
            assert variation < latest[key]
        else:
            assert variation > latest.get(key, 0)
            latest[key] = variation
    assert len({m.message_id for m in messages if m.kind != "duplicate"}) == sum(
        m.kind != "duplicate" for m in messages
    )


def test_plan_refuses_impossible_ratios() -> None:
    with pytest.raises(ValueError, match="duplicate_ratio"):
        plan_ims_traffic(10, seed=1, duplicate_ratio=1.5)
    with pytest.raises(ValueError, match="no new messages"):
        plan_ims_traffic(10, seed=1, duplicate_ratio=0.5, out_of_order_ratio=0.5, malformed_ratio=0)


# --- the IMS sender --------------------------------------------------------------------------------


@dataclass
class Receiver:
    url: str
    received: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    state = Receiver(url="")

    async def multipart_message(request: web.Request) -> web.Response:
        parts: dict[str, tuple[bytes, str | None]] = {}
        reader = await request.multipart()
        async for part in reader:
            assert isinstance(part, aiohttp.BodyPartReader)
            assert part.name is not None
            parts[part.name] = (await part.read(), part.headers.get("Content-Type"))
        params = orjson.loads(parts["ParameterRequest"][0])
        payload, payload_type = parts["MessagePayload"]
        if params["encoding"] == "DEFLATE":
            payload = zlib.decompress(payload)
        state.received.append(
            {
                "version": request.match_info["version"],
                "tenant": request.headers.get("X-TenantId"),
                "authorization": request.headers.get("Authorization"),
                "params": params,
                "payload": payload,
                "payload_type": payload_type,
                "request_type": request.content_type,
            }
        )
        return web.json_response({"status": "accepted"}, status=202 if request.match_info["version"] == "v3" else 201)

    app = web.Application()
    app.router.add_post("/ion/halloran-ion/service/{version}/multipartMessage", multipart_message)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}/ion/halloran-ion"
    try:
        yield state
    finally:
        await runner.cleanup()


async def test_the_multipart_it_sends_parses(receiver: Receiver) -> None:
    messages = plan_ims_traffic(40, seed=9, deflate_ratio=0.25)
    assert sum(m.encoding == "DEFLATE" for m in messages) == 10
    async with aiohttp.ClientSession() as session:
        results = await push_bods(receiver.url, messages, session=session, auth=("ion", "ion-password"))
    assert [r.status for r in results] == [202] * 40
    assert all(r.ok and r.json() == {"status": "accepted"} for r in results)
    assert len(receiver.received) == 40
    for message, got in zip(messages, receiver.received, strict=True):
        assert got["version"] == "v3"
        assert got["request_type"] == "multipart/form-data"
        assert got["tenant"] == "HALLORAN"
        assert got["authorization"] == basic("ion", "ion-password")
        assert got["params"] == dict(message.parameters)
        assert got["payload"] == message.payload
        assert got["payload_type"] == (
            "application/octet-stream" if message.encoding == "DEFLATE" else "application/xml"
        )
    params = receiver.received[0]["params"]
    for key in ("documentName", "messageId", "fromLogicalId", "toLogicalId", "encoding", "characterSet"):
        assert params[key]
    for key in ("accountingEntity", "location", "documentId", "variationId"):
        assert key in params


async def test_v2_and_a_bearer_header(receiver: Receiver) -> None:
    message = make_ims_message(BodFactory(seed=1).invoice(), encoding="DEFLATE")
    async with aiohttp.ClientSession() as session:
        [result] = await push_bods(
            receiver.url, [message], session=session, auth=None, headers={"Authorization": "Bearer t0k"}, version="v2"
        )
    assert result.status == 201
    assert receiver.received[0]["authorization"] == "Bearer t0k"
    assert receiver.received[0]["payload"] == message.payload
    assert message.expected_event_ids


async def test_an_unreachable_relay_is_a_result_not_an_exception() -> None:
    message = make_ims_message(BodFactory(seed=1).sales_order())
    async with aiohttp.ClientSession() as session:
        [result] = await push_bods(f"http://127.0.0.1:{free_port()}/ion/x", [message], session=session, auth=None)
    assert result.status == 0
    assert not result.ok
    assert result.error
