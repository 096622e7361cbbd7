"""Sage X3 simulator (Aldgate Packaging): api1 REST `$query` feeds and a GraphQL endpoint.

Records change and disappear over time (`change`, `delete`); `where` filters on datetime fields like
X3 (`UPDDATTIM ge @2026-11-20T10:45:19Z@`; an unknown property answers 500); pages follow
`$links.$next.$url`; failures on demand (`fail_next`). Basic auth or a bearer token from `/auth/token`.
"""

from __future__ import annotations

import base64
import contextlib
import random
import re
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiohttp import web

from relay._net import bound_port

__all__ = ["X3Simulator", "running_x3_simulator"]

_WHERE = re.compile(r"^\s*(\w+)\s+(ge|gt|le|lt|eq)\s+@([^@]+)@\s*$")
_SITES = ("ALD01", "ALD02")
_ITEMS = ("BOX-S-KRAFT", "BOX-M-KRAFT", "BOX-L-DW", "TAPE-48-CLR", "PALLET-EUR", "WRAP-STRETCH-23", "MAILER-A4")
_KEYS = {"BPCUSTOMER": ("BPCNUM",), "ITMMASTER": ("ITMREF", "STOFCY"), "SORDER": ("SOHNUM",)}


class X3Simulator:
    """In-memory X3 folder `ALDGATE` with BPCUSTOMER, ITMMASTER (stock per site) and SORDER."""

    def __init__(self, seed: int = 1, folder: str = "ALDGATE", user: str = "admin", password: str = "aldgate") -> None:
        self.rng = random.Random(seed)
        self.folder = folder
        self.user = user
        self.password = password
        self.now = datetime(2026, 11, 20, 7, 0, tzinfo=UTC)
        self.records: dict[str, dict[str, dict[str, Any]]] = {cls: {} for cls in _KEYS}
        self.requests = 0
        self.pages_served = 0
        self._failures: list[tuple[int, str | None, int]] = []
        self._tokens: set[str] = set()
        self.app = web.Application()
        self.app.router.add_get(f"/api1/x3/erp/{folder}/{{cls}}", self._query)
        self.app.router.add_post("/xtrem/api", self._graphql)
        self.app.router.add_post("/auth/token", self._token)

    # -- data --

    def _tick(self) -> str:
        self.now += timedelta(seconds=1)
        return self.now.strftime("%Y-%m-%dT%H:%M:%SZ")

    def _record(self, cls: str, n: int) -> dict[str, Any]:
        rng = self.rng
        if cls == "BPCUSTOMER":
            return {
                "BPCNUM": f"C{n:05d}",
                "BPCNAM": f"{rng.choice(['Thames', 'Mercia', 'Wessex'])} Foods {n}",
                "BPCSTA": "Active",
                "CUR": "GBP",
                "CRY": "GB",
                "ADDLIG1": f"{n} Commercial Rd",
                "CTY": "London",
                "POSCOD": "E1 1AA",
                "WEB": f"buyer{n}@example.co.uk",
                "TEL": "020 7946 0000",
            }
        if cls == "ITMMASTER":
            physical = rng.randint(0, 5000)
            allocated = rng.randint(0, min(physical, 400))
            return {
                "ITMREF": f"{_ITEMS[n // 2 % len(_ITEMS)]}-{n // 2:04d}",
                "STOFCY": _SITES[n % 2],
                "ITMDES1": "Packaging item",
                "PHYSTO": physical,
                "ALLSTO": allocated,
                "AVAILSTO": physical - allocated,
                "STU": "UN",
            }
        return {
            "SOHNUM": f"SO{n:06d}",
            "BPCORD": f"C{n % 50:05d}",
            "ORDDAT": self.now.strftime("%Y-%m-%d"),
            "ORDSTA": "Open",
            "ORDINVATI": round(rng.uniform(50, 9000), 2),
            "CUR": "GBP",
            "NBLIG": rng.randint(1, 12),
        }

    @staticmethod
    def key(cls: str, record: dict[str, Any]) -> str:
        return "~".join(str(record[k]) for k in _KEYS[cls])

    def seed_records(self, cls: str, count: int) -> None:
        table = self.records[cls]
        start = len(table)
        for n in range(start, start + count):
            record = self._record(cls, n)
            stamp = self._tick()
            record.update({"CREDATTIM": stamp, "UPDDATTIM": stamp})
            table[self.key(cls, record)] = record

    def change(self, cls: str, count: int) -> list[str]:
        keys = self.rng.sample(sorted(self.records[cls]), min(count, len(self.records[cls])))
        for key in keys:
            record = self.records[cls][key]
            if cls == "ITMMASTER":
                record["PHYSTO"] = int(record["PHYSTO"]) + self.rng.randint(1, 100)
                record["AVAILSTO"] = int(record["PHYSTO"]) - int(record["ALLSTO"])
            elif cls == "BPCUSTOMER":
                record["TEL"] = f"020 7946 {self.rng.randint(0, 9999):04d}"
            else:
                record["ORDSTA"] = self.rng.choice(["Open", "Delivered", "Invoiced"])
            record["UPDDATTIM"] = self._tick()
        return keys

    def delete(self, cls: str, count: int) -> list[str]:
        keys = self.rng.sample(sorted(self.records[cls]), min(count, len(self.records[cls])))
        for key in keys:
            del self.records[cls][key]
        return keys

    def fail_next(self, status: int, retry_after: str | None = None, count: int = 1, after_pages: int = 0) -> None:
        """The next `count` requests after `after_pages` more pages answer `status`."""
        self._failures.append((status, retry_after, self.pages_served + after_pages))
        for _ in range(count - 1):
            self._failures.append((status, retry_after, self.pages_served + after_pages))

    def demo_auth(self) -> dict[str, str]:
        """The `auth:` block of a relay source for this simulator."""
        return {"type": "basic", "username": self.user, "password": self.password}

    # -- HTTP --

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            return value.strip() in self._tokens
        if scheme.lower() == "basic":
            expected = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            return secrets.compare_digest(value.strip(), expected)
        return False

    def _failure(self) -> web.Response | None:
        for i, (status, retry_after, at_page) in enumerate(self._failures):
            if self.pages_served >= at_page:
                del self._failures[i]
                headers = {"Retry-After": retry_after} if retry_after else {}
                return web.json_response(
                    {"$diagnoses": [{"$severity": "error", "$message": "simulated"}]}, status=status, headers=headers
                )
        return None

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("client_id") != self.user or form.get("client_secret") != self.password:
            return web.json_response({"error": "invalid_client"}, status=401)
        token = secrets.token_urlsafe(16)
        self._tokens.add(token)
        return web.json_response({"access_token": token, "token_type": "Bearer", "expires_in": 3600})

    def _rows(self, cls: str, where: str | None) -> list[tuple[str, dict[str, Any]]]:
        rows = sorted(self.records[cls].items())
        if where:
            match = _WHERE.match(where)
            if match is None:
                raise web.HTTPBadRequest(text="where: syntax error")
            field, op, value = match.groups()
            if rows and field not in rows[0][1]:
                raise web.HTTPInternalServerError(text=f"unknown property {field}")
            compare = {"ge": str.__ge__, "gt": str.__gt__, "le": str.__le__, "lt": str.__lt__, "eq": str.__eq__}[op]
            rows = [(k, r) for k, r in rows if compare(str(r.get(field, "")), value)]
        return rows

    async def _query(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if (failed := self._failure()) is not None:
            return failed
        if not self._authorized(request):
            return web.json_response({"$diagnoses": [{"$message": "unauthorized"}]}, status=401)
        cls = request.match_info["cls"]
        if cls not in self.records:
            return web.json_response({"$diagnoses": [{"$message": f"unknown class {cls}"}]}, status=404)
        count = int(request.query.get("count", "20"))
        rows = self._rows(cls, request.query.get("where"))
        after = request.query.get("key", "")
        if after.startswith("gt."):
            rows = [(k, r) for k, r in rows if k > after[3:]]
        page = rows[:count]
        self.pages_served += 1
        body: dict[str, Any] = {"$itemsPerPage": count, "$resources": [dict(r) for _, r in page], "$links": {}}
        if len(rows) > count:
            query = dict(request.query)
            query["key"] = f"gt.{page[-1][0]}"
            body["$links"]["$next"] = {"$url": str(request.rel_url.with_query(query))}
        return web.json_response(body)

    async def _graphql(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if (failed := self._failure()) is not None:
            return failed
        if not self._authorized(request) or request.headers.get("x-xtrem-endpoint") != self.folder:
            return web.json_response({"errors": [{"message": "unauthorized"}]}, status=401)
        body = await request.json()
        query = str(body.get("query", ""))
        variables = body.get("variables") or {}
        cls = next((c for c in self.records if f" {c} " in query), None)
        if cls is None:
            return web.json_response({"errors": [{"message": "unknown class"}]})
        where = None
        if variables.get("filter"):
            ((field, cond),) = orjson.loads(variables["filter"]).items()
            where = f"{field} ge @{cond['_gte']}@"
        rows = self._rows(cls, where)
        after = variables.get("after")
        if after:
            rows = [(k, r) for k, r in rows if k > after]
        first = int(variables.get("first") or 20)
        page = rows[:first]
        self.pages_served += 1
        connection = {
            "edges": [{"node": dict(r)} for _, r in page],
            "pageInfo": {"endCursor": page[-1][0] if page else None, "hasNextPage": len(rows) > first},
        }
        return web.json_response({"data": {"x3": {cls: {"query": connection}}}})


@contextlib.asynccontextmanager
async def running_x3_simulator(seed_data: bool = True, **kwargs: Any) -> AsyncIterator[tuple[X3Simulator, str]]:
    """An `X3Simulator(**kwargs)` on 127.0.0.1, seeded with Aldgate's customers, items and orders."""
    sim = X3Simulator(**kwargs)
    if seed_data:
        sim.seed_records("BPCUSTOMER", 40)
        sim.seed_records("ITMMASTER", 30)
        sim.seed_records("SORDER", 20)
    runner = web.AppRunner(sim.app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield sim, f"http://127.0.0.1:{bound_port(site)}"
    finally:
        await runner.cleanup()
