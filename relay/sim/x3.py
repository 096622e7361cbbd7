"""Sage X3 simulator (Aldgate Packaging), built from Sage's documented shapes (tests/fixtures/x3/README.md).

api1 REST (`/api1/x3/erp/{folder}/{CLASS}?representation={REPR}.$query`): `$resources`, `$itemsPerPage`,
`$links.$next.$url`; `count` (default 20, optionally capped by the server: `max_count`), `key=gt.…`,
`where=FIELD ge @…@`, `orderBy=F asc`; a property outside the representation's `$query` facet in
`where`/`orderBy` answers 500 (`set_query_facet`), and `$query` records carry only the facet's properties.

GraphQL (`POST /xtrem/api`, header `x-xtrem-endpoint`): `{ package { node { query(first, after, filter,
orderBy) { edges { node { … } } pageInfo { endCursor hasNextPage } } } } }` for `x3MasterData.customer`,
`x3MasterData.supplier`, `x3Purchasing.purchaseOrder`, `x3Purchasing.purchaseReceipt`, answering only the
selected properties (an unknown one is a GraphQL error). Connected applications
(`add_connected_app`): an HS256 JWT whose `iss`, `sub`, `aud` and `exp` are checked; anything else is 401.

Records change and disappear over time (`change`, `delete`); failures on demand (`fail_next`); customer-added
or retyped fields (`set_field`); a class refused (403) or broken (500) on demand (`class_status`).
Availability lookups (ITMMVT with `where=ITMREF eq '…'`, parts joined by `or`, optionally `and STOFCY eq '…'`)
are counted in `lookup_calls` and made slow (`lookup_delay_s`) or down (`lookup_down`, 503) on demand. Basic auth
or a bearer token from `/auth/token` are accepted too.

Write-back (api1 create/update, docs/sources.md): `POST /api1/x3/erp/{folder}/SORDER?representation=….$create`
and `…/BPCUSTOMER?…$create` answer 201 with the created resource (the number assigned: `SOHNUM`, `BPCNUM`);
`PUT …/BPCUSTOMER('{key}')?representation=….$edit` answers 200; `GET …/BPCUSTOMER('{key}')?…$details` reads one
record; `where=CUSORDREF eq 'Q-1'` finds orders by the customer's reference. An unknown customer or item is
refused with 400 and X3-style `$diagnoses`. On demand an order is created and then the answer never comes
(`after_create="timeout"`) or the connection is dropped (`"drop"`): `fail_after_create`, or a share of first
attempts with `after_create_rate`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import random
import re
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiohttp import web

from relay._net import bound_port
from relay.sim import SHUTDOWN_GRACE_S, fail_after_create

__all__ = ["GRAPHQL_NODES", "X3Simulator", "running_x3_simulator"]

_WHERE = re.compile(r"^\s*(\w+)\s+(ge|gt|le|lt|eq)\s+@([^@]+)@\s*$")
# Lookups: `ITMREF eq 'A'`, `(ITMREF eq 'A' or ITMREF eq 'B') and STOFCY eq 'S'` (quotes doubled in values).
_STRING_TERM = re.compile(r"(\w+) eq '((?:[^']|'')*)'")
_LOOKUP_WHERE = re.compile(
    r"^\(?ITMREF eq '(?:[^']|'')*'(?: or ITMREF eq '(?:[^']|'')*')*\)?(?: and STOFCY eq '(?:[^']|'')*')?$"
)
_WHERE_TEXT = re.compile(r"^\s*(\w+)\s+eq\s+'((?:[^']|'')*)'\s*$")
_ONE = re.compile(r"^(\w+)\('((?:[^']|'')*)'\)$")
_GQL_FILTER = re.compile(r"^\s*\{\s*(\w+)\s*:\s*\{\s*_gte\s*:\s*'([^']*)'\s*\}\s*\}\s*$")
_GQL_ROOT = re.compile(r"\{\s*(\w+)\s*\{\s*(\w+)\s*\{\s*query\s*\(([^)]*)\)\s*\{", re.S)
_SITES = ("ALD01", "ALD02")
_ITEMS = ("BOX-S-KRAFT", "BOX-M-KRAFT", "BOX-L-DW", "TAPE-48-CLR", "PALLET-EUR", "WRAP-STRETCH-23", "MAILER-A4")
_KEYS = {
    "BPCUSTOMER": ("BPCNUM",),
    "ITMMVT": ("ITMREF", "STOFCY"),
    "SORDER": ("SOHNUM",),
    "PORDER": ("POHNUM",),
    "PRECEIPT": ("PTHNUM",),
    "BPSUPPLIER": ("BPSNUM",),
}


def _customer_node(r: Mapping[str, Any]) -> dict[str, Any]:
    return {"_id": r["BPCNUM"], "code": {"code": r["BPCNUM"]}, "companyName1": r["BPCNAM"], "isActive": True,
            "_updateStamp": r["UPDDATTIM"]}  # fmt: skip


def _supplier_node(r: Mapping[str, Any]) -> dict[str, Any]:
    return {"_id": r["BPSNUM"], "code": {"code": r["BPSNUM"]}, "companyName1": r["BPSNAM"],
            "shortCompanyName": r["BPSNAM"][:10], "isActive": True, "_updateStamp": r["UPDDATTIM"]}  # fmt: skip


def _purchase_order_node(r: Mapping[str, Any]) -> dict[str, Any]:
    return {"_id": r["POHNUM"], "id": r["POHNUM"], "purchaseSite": {"code": r["POHFCY"]},
            "orderFromSupplier": {"code": {"code": r["BPSNUM"]}}, "orderDate": r["ORDDAT"],
            "receiptStatus": r["RCPFLG"], "isClosed": "no", "_updateStamp": r["UPDDATTIM"]}  # fmt: skip


def _purchase_receipt_node(r: Mapping[str, Any]) -> dict[str, Any]:
    return {"_id": r["PTHNUM"], "id": r["PTHNUM"], "receiptSite": {"code": r["PRHFCY"]},
            "supplier": {"code": {"code": r["BPSNUM"]}}, "receiptDate": r["RCPDAT"],
            "_updateStamp": r["UPDDATTIM"]}  # fmt: skip


# GraphQL node → (table behind it, record → node as Sage's examples show it).
GRAPHQL_NODES: dict[str, tuple[str, Any]] = {
    "x3MasterData.customer": ("BPCUSTOMER", _customer_node),
    "x3MasterData.supplier": ("BPSUPPLIER", _supplier_node),
    "x3Purchasing.purchaseOrder": ("PORDER", _purchase_order_node),
    "x3Purchasing.purchaseReceipt": ("PRECEIPT", _purchase_receipt_node),
}


@dataclass(frozen=True)
class ConnectedApp:
    """A connected application as registered in X3: client id, secret, allowed user, API URL (the `aud`)."""

    client_id: str
    secret: str
    user: str
    url: str


def _b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _selection(text: str) -> dict[str, Any]:
    """Parse a selection set body (`a b { c }`) into a tree."""
    tokens = re.findall(r"[{}]|[A-Za-z_][A-Za-z0-9_]*", text)
    root: dict[str, Any] = {}
    stack = [root]
    last: str | None = None
    for token in tokens:
        if token == "{":
            if last is None:
                raise ValueError("selection: `{` without a field")
            stack[-1][last] = {}
            stack.append(stack[-1][last])
            last = None
        elif token == "}":
            stack.pop()
            last = None
        else:
            stack[-1][token] = None
            last = token
    return root


def _project(value: Any, tree: Mapping[str, Any], type_name: str) -> Any:
    out = {}
    for name, sub in tree.items():
        if not isinstance(value, Mapping) or name not in value:
            raise KeyError(f'Cannot query field "{name}" on type "{type_name}".')
        out[name] = _project(value[name], sub, name) if sub else value[name]
    return out


def _node_selection(query: str, start: int) -> str:
    """The body of `node { … }` after position `start` (brace-matched)."""
    at = query.index("node", start)
    at = query.index("{", at)
    depth = 0
    for i in range(at, len(query)):
        depth += {"{": 1, "}": -1}.get(query[i], 0)
        if depth == 0:
            return query[at + 1 : i]
    raise ValueError("unbalanced braces")


class X3Simulator:
    """In-memory X3 folder `ALDGATE`: customers, suppliers, product-site stock, sales and purchase documents."""

    def __init__(self, seed: int = 1, folder: str = "ALDGATE", user: str = "admin", password: str = "aldgate") -> None:
        self.rng = random.Random(seed)
        self.folder = folder
        self.user = user
        self.password = password
        self.now = datetime(2026, 11, 20, 7, 0, tzinfo=UTC)
        self.records: dict[str, dict[str, dict[str, Any]]] = {cls: {} for cls in _KEYS}
        self.requests = 0
        self.pages_served = 0
        self.max_count: int | None = None  # the server's cap on `count`
        self.links = True  # False: answers without `$links` (key paging only)
        self.query_facets: dict[str, set[str]] = {}  # class → properties of its `$query` facet (absent: all)
        self.connected_apps: list[ConnectedApp] = []
        # Onboarding: fields a customer added to a class (`set_field`), and classes answered with a fixed
        # status instead of records (403: the account lacks the grant; 500: broken after an upgrade).
        self.custom_fields: dict[str, dict[str, Any]] = {}
        self.class_status: dict[str, int] = {}
        self._failures: list[tuple[int, str | None, int]] = []
        self._tokens: set[str] = set()
        # Availability lookups (ITMMVT by ITMREF): counted, made slow or down on demand.
        self.lookup_calls = 0
        self.lookup_delay_s = 0.0
        self.lookup_down = False
        self.app = web.Application()
        # Write-back: what was created, how many creates ran at once, and when each started (rate limits).
        self.creates = 0
        self.create_starts_mono: list[float] = []
        self.creates_in_flight = 0
        self.max_creates_in_flight = 0
        self.create_delay_s = 0.0
        self.after_create_rate = 0.0  # share of first attempts (per reference) created then failed
        self.after_create_mode = "timeout"
        self.hang_s = 30.0
        self._after_create: list[str] = []
        self._seen_references: set[str] = set()
        self.extra_items: set[str] = set()
        self.app.router.add_get(f"/api1/x3/erp/{folder}/{{cls}}", self._query)
        self.app.router.add_post(f"/api1/x3/erp/{folder}/{{cls}}", self._create)
        self.app.router.add_put(f"/api1/x3/erp/{folder}/{{cls}}", self._update)
        self.app.router.add_post("/xtrem/api", self._graphql)
        self.app.router.add_post("/auth/token", self._token)

    # -- data --

    def _tick(self) -> str:
        self.now += timedelta(seconds=1)
        return self.now.strftime("%Y-%m-%dT%H:%M:%SZ")

    def _record(self, cls: str, n: int) -> dict[str, Any]:
        rng = self.rng
        day = self.now.strftime("%Y-%m-%d")
        if cls == "BPCUSTOMER":
            name = f"{rng.choice(['Thames', 'Mercia', 'Wessex'])} Foods {n}"
            return {"BPCNUM": f"C{n:05d}", "BPCNAM": name, "CUR": "GBP", "CRY": "GB"}
        if cls == "BPSUPPLIER":
            name = f"{rng.choice(['Kent', 'Severn', 'Humber'])} Board Mills {n}"
            return {"BPSNUM": f"S{n:04d}", "BPSNAM": name, "CUR": "GBP", "CRY": "GB"}
        if cls == "ITMMVT":
            physical = rng.randint(0, 5000)
            return {"ITMREF": f"{_ITEMS[n // 2 % len(_ITEMS)]}-{n // 2:04d}", "STOFCY": _SITES[n % 2],
                    "PHYSTO": physical, "ALLSTO": rng.randint(0, min(physical, 400))}  # fmt: skip
        if cls == "PORDER":
            return {"POHNUM": f"PO{n:06d}", "BPSNUM": f"S{n % 12:04d}", "POHFCY": _SITES[n % 2], "ORDDAT": day,
                    "CUR": "GBP", "RCPFLG": "notReceived"}  # fmt: skip
        if cls == "PRECEIPT":
            return {"PTHNUM": f"RC{n:06d}", "BPSNUM": f"S{n % 12:04d}", "PRHFCY": _SITES[n % 2], "RCPDAT": day}
        return {"SOHNUM": f"SO{n:06d}", "BPCORD": f"C{n % 50:05d}", "ORDDAT": day, "ORDSTA": "Open",
                "ORDINVATI": round(rng.uniform(50, 9000), 2), "CUR": "GBP", "NBLIG": rng.randint(1, 12)}  # fmt: skip

    @staticmethod
    def key(cls: str, record: Mapping[str, Any]) -> str:
        """The api1 key of a record (`~` joins composite keys)."""
        return "~".join(str(record[k]) for k in _KEYS[cls])

    def seed_records(self, cls: str, count: int) -> None:
        """Add `count` new records to `cls`, each with its own creation/update time."""
        table = self.records[cls]
        start = len(table)
        for n in range(start, start + count):
            record = self._record(cls, n)
            stamp = self._tick()
            record.update({"CREDATTIM": stamp, "UPDDATTIM": stamp})
            for name, value_of in self.custom_fields.get(cls, {}).items():
                record[name] = value_of(record)
            table[self.key(cls, record)] = record

    def set_field(self, cls: str, name: str, value_of: Any, *, touch: bool = True) -> None:
        """Give every record of `cls` (and every one seeded later) field `name` = `value_of(record)`.

        A customer-added field (`ZLEADTIME` on ITMMVT) or a retyped one after an upgrade; `touch` moves each
        record's UPDDATTIM on, so an incremental poll reads them again.
        """
        self.custom_fields.setdefault(cls, {})[name] = value_of
        for record in self.records[cls].values():
            record[name] = value_of(record)
            if touch:
                record["UPDDATTIM"] = self._tick()

    def set_stock(self, item: str, site: str, on_hand: float, allocated: float = 0) -> None:
        """Put one product-site total (ITMMVT) in place, stamped now."""
        stamp = self._tick()
        record = {"ITMREF": item, "STOFCY": site, "PHYSTO": on_hand, "ALLSTO": allocated, "UPDDATTIM": stamp}
        self.records["ITMMVT"].setdefault(self.key("ITMMVT", record), {"CREDATTIM": stamp}).update(record)

    async def _lookup(self, where: str) -> web.StreamResponse:
        self.lookup_calls += 1
        if self.lookup_delay_s > 0:
            await asyncio.sleep(self.lookup_delay_s)
        if self.lookup_down:
            return web.json_response({"$diagnoses": [{"$message": "service unavailable"}]}, status=503)
        wanted: dict[str, set[str]] = {}
        for field, value in _STRING_TERM.findall(where):
            wanted.setdefault(field, set()).add(value.replace("''", "'"))
        rows = [
            r
            for r in self.records["ITMMVT"].values()
            if all(str(r.get(field)) in values for field, values in wanted.items())
        ]
        return web.json_response(
            {"$itemsPerPage": len(rows), "$resources": sorted(rows, key=lambda r: self.key("ITMMVT", r))}
        )

    def change(self, cls: str, count: int) -> list[str]:
        """Change `count` random records of `cls` (their UPDDATTIM moves on); returns their keys."""
        keys = self.rng.sample(sorted(self.records[cls]), min(count, len(self.records[cls])))
        for key in keys:
            record = self.records[cls][key]
            if cls == "ITMMVT":
                record["PHYSTO"] = int(record["PHYSTO"]) + self.rng.randint(1, 100)
            elif cls == "BPCUSTOMER":
                record["BPCNAM"] = f"{record['BPCNAM'].split(' #')[0]} #{self.rng.randint(0, 9999)}"
            elif cls == "BPSUPPLIER":
                record["BPSNAM"] = f"{record['BPSNAM'].split(' #')[0]} #{self.rng.randint(0, 9999)}"
            elif cls == "PORDER":
                record["RCPFLG"] = self.rng.choice(["notReceived", "partiallyReceived", "received"])
            elif cls == "PRECEIPT":
                record["RCPDAT"] = self.now.strftime("%Y-%m-%d")
            else:
                record["ORDSTA"] = self.rng.choice(["Open", "Delivered", "Invoiced"])
            record["UPDDATTIM"] = self._tick()
        return keys

    def delete(self, cls: str, count: int) -> list[str]:
        """Remove `count` random records of `cls`; returns their keys."""
        keys = self.rng.sample(sorted(self.records[cls]), min(count, len(self.records[cls])))
        for key in keys:
            del self.records[cls][key]
        return keys

    def set_query_facet(self, cls: str, properties: set[str]) -> None:
        """Restrict the `$query` facet of `cls`'s representation to `properties` (as a standard one may be)."""
        self.query_facets[cls] = set(properties)

    def add_connected_app(self, client_id: str, secret: str, user: str, url: str) -> ConnectedApp:
        """Register a connected application; its JWTs must carry `aud` = `url` (the registered API URL)."""
        app = ConnectedApp(client_id, secret, user, url)
        self.connected_apps.append(app)
        return app

    def fail_next(self, status: int, retry_after: str | None = None, count: int = 1, after_pages: int = 0) -> None:
        """The next `count` requests after `after_pages` more pages answer `status`."""
        for _ in range(count):
            self._failures.append((status, retry_after, self.pages_served + after_pages))

    def demo_auth(self) -> dict[str, str]:
        """The `auth:` block of a relay source for this simulator."""
        return {"type": "basic", "username": self.user, "password": self.password}

    # -- HTTP --

    def _jwt_problem(self, token: str) -> str | None:
        """None when `token` is a valid connected-application JWT, else what is wrong with it."""
        try:
            header_b64, payload_b64, signature_b64 = token.split(".")
            header = orjson.loads(_b64url_decode(header_b64))
            claims = orjson.loads(_b64url_decode(payload_b64))
        except (ValueError, orjson.JSONDecodeError):
            return "not a JWT"
        if not isinstance(header, dict) or header.get("alg") != "HS256" or not isinstance(claims, dict):
            return "not an HS256 JWT"
        app = next((a for a in self.connected_apps if a.client_id == claims.get("iss")), None)
        if app is None:
            return "iss is not a connected application"
        expected = hmac.new(app.secret.encode(), f"{header_b64}.{payload_b64}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, _b64url_decode(signature_b64)):
            return "bad signature"
        if claims.get("sub") != app.user:
            return "sub is not the allowed user"
        if claims.get("aud") != app.url:
            return "aud does not match the connected application's URL"
        if not isinstance(claims.get("exp"), int) or claims["exp"] < time.time():
            return "expired"
        return None

    def _auth_problem(self, request: web.Request) -> str | None:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer":
            if value in self._tokens:
                return None
            return self._jwt_problem(value) if self.connected_apps else "unknown token"
        if scheme.lower() == "basic":
            expected = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            return None if secrets.compare_digest(value, expected) else "bad credentials"
        return "no credentials"

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
            compare = {"ge": str.__ge__, "gt": str.__gt__, "le": str.__le__, "lt": str.__lt__, "eq": str.__eq__}[op]
            rows = [(k, r) for k, r in rows if compare(str(r.get(field, "")), value)]
        return rows

    def _facet(self, cls: str) -> set[str] | None:
        return self.query_facets.get(cls)

    async def _query(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if (failed := self._failure()) is not None:
            return failed
        if self._auth_problem(request) is not None:
            return web.json_response({"$diagnoses": [{"$message": "unauthorized"}]}, status=401)
        cls = request.match_info["cls"]
        if (status := self.class_status.get(cls)) is not None:
            message = "access denied to class " + cls if status in (401, 403) else "internal error"
            return web.json_response({"$diagnoses": [{"$severity": "error", "$message": message}]}, status=status)
        if (one := _ONE.match(cls)) is not None:
            return self._details(one.group(1), one.group(2).replace("''", "'"))
        if cls not in self.records:
            return web.json_response({"$diagnoses": [{"$message": f"unknown class {cls}"}]}, status=404)
        lookup_where = request.query.get("where", "")
        if cls == "ITMMVT" and _LOOKUP_WHERE.match(lookup_where):
            return await self._lookup(lookup_where)
        if (text := _WHERE_TEXT.match(request.query.get("where", ""))) is not None:
            field, value = text.group(1), text.group(2).replace("''", "'")
            matches = [r for _, r in sorted(self.records[cls].items()) if str(r.get(field, "")) == value]
            return web.json_response({"$itemsPerPage": len(matches), "$resources": matches, "$links": {}})
        facet = self._facet(cls)
        known = facet if facet is not None else {f for r in self.records[cls].values() for f in r} | set(_KEYS[cls])
        where = request.query.get("where")
        order_by = [part.split()[0] for part in request.query.get("orderBy", "").split(",") if part.strip()]
        used = order_by + ([m.group(1)] if where and (m := _WHERE.match(where)) else [])
        if unknown := [f for f in used if f not in known]:
            # X3: an unknown property in where/orderBy is a server error, not a 400.
            message = f"Property {unknown[0]} is not defined in representation {cls}"
            return web.json_response({"$diagnoses": [{"$severity": "error", "$message": message}]}, status=500)
        requested = int(request.query.get("count", "20"))
        count = min(requested, self.max_count) if self.max_count else requested
        rows = self._rows(cls, where)
        after = request.query.get("key", "")
        if after.startswith("gt."):
            rows = [(k, r) for k, r in rows if k > after[3:]]
        page = rows[:count]
        self.pages_served += 1
        resources = [{k: v for k, v in r.items() if facet is None or k in facet} for _, r in page]
        body: dict[str, Any] = {"$itemsPerPage": count, "$resources": resources}
        if self.links:
            body["$links"] = {}
            if len(rows) > count:
                query = dict(request.query)
                query["key"] = f"gt.{page[-1][0]}"
                body["$links"]["$next"] = {"$url": str(request.rel_url.with_query(query))}
        return web.json_response(body)

    async def _graphql(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if (failed := self._failure()) is not None:
            return failed
        if (problem := self._auth_problem(request)) is not None:
            return web.Response(status=401, text=f"Invalid token: {problem}")
        if request.headers.get("x-xtrem-endpoint") != self.folder:
            return web.json_response({"errors": [{"message": "unknown endpoint"}]}, status=400)
        body = await request.json()
        query = str(body.get("query", ""))
        variables = body.get("variables") or {}
        root = _GQL_ROOT.search(query)
        if root is None:
            return web.json_response({"errors": [{"message": "expected { package { node { query(…) … } } }"}]})
        package, name, raw_args = root.groups()
        if f"{package}.{name}" not in GRAPHQL_NODES:
            return web.json_response({"errors": [{"message": f'Cannot query field "{name}" on type "{package}".'}]})
        cls, to_node = GRAPHQL_NODES[f"{package}.{name}"]
        args: dict[str, Any] = {}
        for arg in raw_args.split(","):
            if ":" in arg:
                key, _, value = arg.partition(":")
                value = value.strip()
                args[key.strip()] = variables.get(value[1:]) if value.startswith("$") else orjson.loads(value)
        where = None
        if args.get("filter"):
            match = _GQL_FILTER.match(str(args["filter"]))
            if match is None:
                return web.json_response({"errors": [{"message": f"unsupported filter {args['filter']}"}]})
            field, stamp = match.groups()
            if field != "_updateStamp":
                return web.json_response({"errors": [{"message": f"unknown property {field} in filter"}]})
            where = f"UPDDATTIM ge @{stamp}@"
        rows = self._rows(cls, where)
        if args.get("after"):
            after = _b64url_decode(str(args["after"])).decode()
            rows = [(k, r) for k, r in rows if k > after]
        first = int(args.get("first") or 20)
        page = rows[:first]
        try:
            tree = _selection(_node_selection(query, root.end()))
            nodes = [_project(to_node(r), tree, name) for _, r in page]
        except (KeyError, ValueError) as exc:
            return web.json_response({"errors": [{"message": str(exc).strip("'\"")}]})
        self.pages_served += 1
        end = base64.urlsafe_b64encode(page[-1][0].encode()).decode().rstrip("=") if page else None
        connection = {
            "edges": [{"node": n} for n in nodes],
            "pageInfo": {"endCursor": end, "hasNextPage": len(rows) > first},
        }
        return web.json_response({"data": {package: {name: {"query": connection}}}})

    # -- write-back --

    def fail_after_create(self, mode: str = "timeout", count: int = 1) -> None:
        """The next `count` creates are carried out, then answered never (`timeout`) or by a dropped connection."""
        self._after_create.extend([mode] * count)

    @property
    def orders(self) -> list[dict[str, Any]]:
        """Sales orders created through the API (seeded ones left out)."""
        return [r for r in self.records["SORDER"].values() if r.get("CUSORDREF")]

    def known_items(self) -> set[str]:
        return {str(r["ITMREF"]) for r in self.records["ITMMVT"].values()} | set(_ITEMS) | self.extra_items

    def _order_problems(self, body: Mapping[str, Any]) -> list[str]:
        problems = []
        customer = str(body.get("BPCORD", ""))
        if customer not in self.records["BPCUSTOMER"]:
            problems.append(f"BPCORD: Record does not exist ({customer}) [Customers]")
        lines = body.get("SOHSOP")
        if not isinstance(lines, list) or not lines:
            problems.append("SOHSOP: at least one line is mandatory")
            return problems
        items = self.known_items()
        for n, line in enumerate(lines, start=1):
            item = str(line.get("ITMREF", "")) if isinstance(line, Mapping) else ""
            if item not in items:
                problems.append(f"Line {n}: ITMREF: Record does not exist ({item}) [Products]")
            elif not isinstance(line.get("QTY"), int | float) or line["QTY"] <= 0:
                problems.append(f"Line {n}: QTY: Value must be greater than 0")
        return problems

    @staticmethod
    def _refusal(problems: list[str]) -> web.Response:
        diagnoses = [{"$severity": "error", "$message": p} for p in problems]
        return web.json_response({"$diagnoses": diagnoses}, status=400)

    def _details(self, cls: str, key: str) -> web.Response:
        record = self.records.get(cls, {}).get(key)
        if record is None:
            return web.json_response(
                {"$diagnoses": [{"$severity": "error", "$message": "Record does not exist"}]}, status=404
            )
        return web.json_response(record)

    async def _create(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if (failed := self._failure()) is not None:
            return failed
        if self._auth_problem(request) is not None:
            return web.json_response({"$diagnoses": [{"$message": "unauthorized"}]}, status=401)
        cls = request.match_info["cls"]
        if not request.query.get("representation", "").endswith(".$create") or cls not in ("SORDER", "BPCUSTOMER"):
            return web.json_response({"$diagnoses": [{"$message": f"cannot create {cls}"}]}, status=404)
        body = await request.json()
        self.creates_in_flight += 1
        self.max_creates_in_flight = max(self.max_creates_in_flight, self.creates_in_flight)
        self.create_starts_mono.append(time.monotonic())
        try:
            if self.create_delay_s:
                await asyncio.sleep(self.create_delay_s)
            if cls == "BPCUSTOMER":
                number = str(body.get("BPCNUM") or f"C{len(self.records['BPCUSTOMER']):05d}")
                if number in self.records["BPCUSTOMER"]:
                    return self._refusal([f"BPCNUM: Record already exists ({number})"])
                if not body.get("BPCNAM"):
                    return self._refusal(["BPCNAM: Mandatory field"])
                record = {**body, "BPCNUM": number, "CREDATTIM": self._tick()}
                record["UPDDATTIM"] = record["CREDATTIM"]
                self.records["BPCUSTOMER"][number] = record
                self.creates += 1
                return web.json_response(record, status=201)
            if problems := self._order_problems(body):
                return self._refusal(problems)
            number = f"SO{len(self.records['SORDER']):06d}"
            stamp = self._tick()
            record = {**body, "SOHNUM": number, "ORDSTA": "Open", "CREDATTIM": stamp, "UPDDATTIM": stamp}
            record.setdefault("ORDDAT", self.now.strftime("%Y-%m-%d"))
            self.records["SORDER"][number] = record
            self.creates += 1
            reference = str(body.get("CUSORDREF", ""))
            first = reference not in self._seen_references
            self._seen_references.add(reference)
            mode = self._after_create.pop(0) if self._after_create else None
            if mode is None and first and self.after_create_rate and self.rng.random() < self.after_create_rate:
                mode = self.after_create_mode
            await fail_after_create(request, mode, self.hang_s)
            return web.json_response(record, status=201, headers={"Location": f"{request.url.path}('{number}')"})
        finally:
            self.creates_in_flight -= 1

    async def _update(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if self._auth_problem(request) is not None:
            return web.json_response({"$diagnoses": [{"$message": "unauthorized"}]}, status=401)
        one = _ONE.match(request.match_info["cls"])
        if one is None or not request.query.get("representation", "").endswith(".$edit"):
            return web.json_response(
                {"$diagnoses": [{"$message": "expected CLASS('KEY')?representation=….$edit"}]}, status=404
            )
        cls, key = one.group(1), one.group(2).replace("''", "'")
        record = self.records.get(cls, {}).get(key)
        if record is None:
            return self._refusal([f"Record does not exist ({key})"])
        body = await request.json()
        record.update({k: v for k, v in body.items() if not k.startswith("$")})
        record["UPDDATTIM"] = self._tick()
        return web.json_response(record)


@contextlib.asynccontextmanager
async def running_x3_simulator(seed_data: bool = True, **kwargs: Any) -> AsyncIterator[tuple[X3Simulator, str]]:
    """An `X3Simulator(**kwargs)` on 127.0.0.1, seeded with Aldgate's customers, stock, orders and purchases."""
    sim = X3Simulator(**kwargs)
    if seed_data:
        sim.seed_records("BPCUSTOMER", 40)
        sim.seed_records("ITMMVT", 30)
        sim.seed_records("SORDER", 20)
        sim.seed_records("BPSUPPLIER", 12)
        sim.seed_records("PORDER", 10)
        sim.seed_records("PRECEIPT", 8)
    runner = web.AppRunner(sim.app, access_log=None, shutdown_timeout=SHUTDOWN_GRACE_S)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield sim, f"http://127.0.0.1:{bound_port(site)}"
    finally:
        await runner.cleanup()
