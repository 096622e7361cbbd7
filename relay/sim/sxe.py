"""Infor SX.e simulator behind the ION simulator's gateway, answering in the shapes public clients show.

Halloran Electrical Supply: warehouse products (`icsw`), customers (`arsc`), sales orders (`oeeh`),
purchase orders (`poeh`; every third one received: stage 5 with a `receiptdt`) and vendors (`apsv`), on a
server whose clock is in `timezone`.

* `POST SX/rest/serviceinterface/proxy/FetchWhere` with `{"CompanyNumber","Operator","TableName","WhereClause",
  "BatchSize","RestartRowID"}` answers `{"ttbl<table>": [rows]}`; rows are lower-case table columns with
  `<table>RowID`, `transdt` (`2026-11-20`) and `transtm` (`HHMM`), as in the sample in
  tests/fixtures/sxe/fetchwhere_sasc.json. The WhereClause understood is what the relay sends:
  `<t>.cono = N`, `<t>.transdt >= DATE(m,d,y)`, `<t>.<column> = 'value'` and numeric comparisons
  (`<t>.stagecd >= 5`) joined by `and`, in parentheses or not.
* `POST {service_path}/sxapiargetcustomerlistv3` → `{"response": {"cErrorMessage": "", "tCustLstV3":
  {"t-custLstV3": [...]}}}` and `sxapioegetlistofordersv5` (`startEnterDate`/`endEnterDate`) → `tOeordV5`/`t-oeordV5`,
  camelCase as in tests/fixtures/sxe/custlstv3.json and oeordv5.json.

* Availability: `sxapiicgetwhseproductdataquantityv3` (`productCode`, `warehouse` → `quantityOnHand`,
  `quantityCommitted`, `quantityReserved`, `netAvailable`) and `sxapiicproductavailbywhse` (`productCode` →
  `tProd_avl`/`t-prod_avl` rows of `whse`, `netAvail`), from the `icsw` rows; `lookup_delay_s` makes them slow,
  `lookup_down` answers 503; `calls[operation]` counts them.

Knobs for tests: `error_next` (an SX.e `cErrorMessage`), `answer_next` (any JSON body, e.g. an unexpected
shape), `stall` (FetchWhere ignores `RestartRowID`), `restart_inclusive` (the restart row is repeated).
"""

from __future__ import annotations

import asyncio
import base64
import random
import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from aiohttp import web

__all__ = ["FETCHWHERE_PATH", "OPERATIONS", "SERVICE_PATH", "TABLES", "SxeSimulator"]

SERVICE_PATH = "SX/rest/sxapirestservice"
FETCHWHERE_PATH = "SX/rest/serviceinterface/proxy/FetchWhere"
TABLES = ("icsw", "arsc", "oeeh", "poeh", "apsv")
OPERATIONS = TABLES  # what `seed_rows`/`change` take; kept under this name for callers that seed every table
# Names of the former guessed change feeds, still accepted when seeding: they now stand for their table.
_ALIASES = {"sxapiicecatalogitembalancev2": "icsw", "sxapiargetcustomerlistv3": "arsc", "sxapioegetorderlistv6": "oeeh"}
_WAREHOUSES = ("MAIN", "EAST", "WEST")
_PRODUCTS = ("BRK-20A", "BRK-30A", "WIRE-12-2", "WIRE-14-2", "CONDUIT-EMT-1", "BOX-4SQ", "LUG-2AWG", "GFCI-20")
_VENDORS = ("Square D", "Southwire", "Allied Tube", "Raco", "Ilsco", "Leviton")
_TERM_RE = re.compile(r"^(\w+)\.(\w+)\s*(<>|>=|<=|=|<|>)\s*(.+?)$")
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "<>": lambda a, b: a != b,
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
    "<": lambda a, b: a < b,
    ">": lambda a, b: a > b,
}
_DATE_RE = re.compile(r"^DATE\((\d+),(\d+),(\d+)\)$")
_LOOKUP_OPERATIONS = ("sxapiicgetwhseproductdataquantityv3", "sxapiicproductavailbywhse")


def _net(row: Mapping[str, Any]) -> float:
    return float(row["qtyonhand"]) - float(row["qtycommit"]) - float(row["qtyreservd"])


class _Gateway(Protocol):
    def add_gateway_route(self, path: str, handler: Any, *, method: str = "*") -> None: ...


def _row_id(n: int) -> str:
    # Progress ROWIDs travel as base64 of 8 bytes (`AAAAAAAIigA=` in the public sample).
    return base64.b64encode(struct.pack(">Q", 0x8800 + n)).decode()


@dataclass
class SxeSimulator:
    """Mount with `install(ion_sim)` (or route `handle` and `handle_fetch_where` yourself)."""

    seed: int = 7
    timezone: str = "America/Chicago"
    now: datetime = field(default_factory=lambda: datetime(2026, 11, 20, 14, 0, tzinfo=UTC))
    company_number: int = 1
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    error_next: str | None = None
    answer_next: Any = None
    stall: bool = False
    restart_inclusive: bool = False
    calls: dict[str, int] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    on_call: Callable[[str], None] | None = None
    # Availability calls (quantityv3, productavailbywhse): answer after this many seconds, or 503 when down.
    lookup_delay_s: float = 0.0
    lookup_down: bool = False

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.zone = ZoneInfo(self.timezone)
        self._next_row = 0
        for table in TABLES:
            self.tables.setdefault(table, [])

    def install(self, gateway: _Gateway, service_path: str = SERVICE_PATH) -> None:
        """Serve the sxapi operations under `service_path` and FetchWhere on `gateway` (an IonSimulator)."""
        gateway.add_gateway_route(service_path.rstrip("/") + "/{operation}", self.handle)
        gateway.add_gateway_route(FETCHWHERE_PATH, self.handle_fetch_where)

    # ------------------------------------------------------------------------------------------ data

    def _stamp(self) -> dict[str, str]:
        self.now += timedelta(minutes=1)
        local = self.now.astimezone(self.zone)
        return {"transdt": local.strftime("%Y-%m-%d"), "transtm": local.strftime("%H%M"), "operinit": "sys"}

    def _row(self, table: str, n: int) -> dict[str, Any]:
        rng = self.rng
        local_day = self.now.astimezone(self.zone).strftime("%Y-%m-%d")
        if table == "icsw":
            onhand = rng.randint(0, 500)
            return {
                "prod": f"{rng.choice(_PRODUCTS)}-{n // 3:04d}",
                "whse": _WAREHOUSES[n % 3],
                "qtyonhand": float(onhand),
                "qtycommit": float(rng.randint(0, min(onhand, 60))),
                "qtyreservd": 0.0,
                "qtyonorder": float(rng.randint(0, 100)),
                "binloc1": f"A{rng.randint(1, 40):02d}-{rng.randint(1, 9)}",
                "binloc2": "",
                "unitstock": "EA",
                "statustype": "S",
                "arpvendno": 1000 + n % len(_VENDORS),
            }
        if table == "arsc":
            return {
                "custno": 10000 + n,
                "name": f"{rng.choice(['Volt', 'Arc', 'Ohm'])} Electric {n}",
                "addr": [f"{n} Main St", ""],
                "city": "Springfield",
                "state": "IL",
                "zipcd": "62701",
                "countrycd": "US",
                "phoneno": "2175550100",
                "email": f"ap{n}@example.com",
                "statustype": True,
                "currencyty": "",
            }
        if table == "oeeh":
            return {
                "orderno": 500000 + n,
                "ordersuf": 0,
                "custno": 10000 + n % 50,
                "whse": _WAREHOUSES[n % 3],
                "enterdt": local_day,
                "stagecd": 1,
                "transtype": "SO",
                "totinvamt": round(rng.uniform(20, 4000), 2),
                "custpo": f"PO{n:05d}",
            }
        if table == "poeh":
            return {
                "pono": 300000 + n,
                "posuf": 0,
                "vendno": 1000 + n % len(_VENDORS),
                "whse": _WAREHOUSES[n % 3],
                "orderdt": local_day,
                "enterdt": local_day,
                "stagecd": 5 if n % 3 == 2 else 2,
                "receiptdt": local_day if n % 3 == 2 else None,  # Progress's unknown value until received
                "transtype": "PO",
                "totinvamt": round(rng.uniform(100, 20000), 2),
            }
        return {
            "vendno": 1000 + n,
            "name": f"{_VENDORS[n % len(_VENDORS)]} #{n}",
            "addr": [f"{n} Industrial Pkwy", ""],
            "city": "Peoria",
            "state": "IL",
            "zipcd": "61602",
            "countrycd": "US",
            "phoneno": "3095550100",
            "email": f"orders{n}@example.com",
            "statustype": True,
            "currencyty": "",
        }

    def _table(self, name: str) -> str:
        table = _ALIASES.get(name, name)
        if table not in self.tables:
            raise KeyError(f"unknown SX.e table {name!r}")
        return table

    def seed_rows(self, table: str, count: int) -> None:
        """Add `count` rows to `table` (`icsw`, `arsc`, `oeeh`, `poeh`, `apsv`)."""
        rows = self.tables[self._table(table)]
        start = len(rows)
        for n in range(start, start + count):
            self._next_row += 1
            row = {"cono": self.company_number, **self._row(self._table(table), n), **self._stamp()}
            row[f"{self._table(table)}RowID"] = _row_id(self._next_row)
            rows.append(row)

    def change(self, table: str, count: int) -> list[dict[str, Any]]:
        """Change `count` random rows of `table` (quantities or stage), stamping them with the server's time."""
        table = self._table(table)
        rows = self.rng.sample(self.tables[table], count)
        for row in rows:
            if table == "icsw":
                row["qtyonhand"] = float(row["qtyonhand"]) + self.rng.randint(1, 50)
            elif table == "oeeh":
                row["stagecd"] = min(int(row["stagecd"]) + 1, 5)
            elif table == "poeh":
                row["stagecd"] = min(int(row["stagecd"]) + 1, 7)  # 5 Received, 6 Costed, 7 Closed
            else:
                row["phoneno"] = f"217555{self.rng.randint(1000, 9999)}"
            row.update(self._stamp())
            if table == "poeh" and row["stagecd"] == 5:
                row["receiptdt"] = row["transdt"]
        return rows

    def receive(self, pono: int, posuf: int = 0) -> dict[str, Any]:
        """Receive a purchase order as Purchase Receipt of Inventory Entry does: stage 5 and today's `receiptdt`."""
        row = next(r for r in self.tables["poeh"] if r["pono"] == pono and r["posuf"] == posuf)
        row.update(self._stamp())
        row.update(stagecd=5, receiptdt=row["transdt"])
        return row

    def delete(self, table: str, count: int) -> list[dict[str, Any]]:
        """Remove `count` random rows of `table`."""
        table = self._table(table)
        gone = self.rng.sample(self.tables[table], count)
        self.tables[table] = [r for r in self.tables[table] if r not in gone]
        return gone

    # ------------------------------------------------------------------------------------------ FetchWhere

    def _matches(self, table: str, row: Mapping[str, Any], clause: str) -> bool:
        for term in (t for t in re.split(r"\s+and\s+", clause.strip(), flags=re.IGNORECASE) if t):
            term = term.strip().lstrip("(").strip()
            while term.endswith(")") and term.count(")") > term.count("("):  # the group's closing parenthesis
                term = term[:-1].strip()
            match = _TERM_RE.match(term)
            if match is None or match.group(1) != table:
                raise ValueError(f"unsupported WhereClause term {term!r}")
            column, op, value = match.group(2), match.group(3), match.group(4)
            when = _DATE_RE.match(value)
            if when is not None:
                if op != ">=" or column != "transdt":
                    raise ValueError(f"unsupported WhereClause term {term!r}")
                month, day, year = (int(g) for g in when.groups())
                if date.fromisoformat(str(row.get("transdt"))) < date(year, month, day):
                    return False
            elif op != "=":
                try:
                    limit, current = float(value), row[column]
                except (KeyError, ValueError):
                    raise ValueError(f"unsupported WhereClause term {term!r}") from None
                if current is None or not _COMPARE[op](float(current), limit):  # Progress's unknown never matches
                    return False
            elif str(row.get(column)) != value.strip("'\"") and not (
                isinstance(row.get(column), int | float)
                and value.replace(".", "", 1).isdigit()
                and float(row[column]) == float(value)
            ):
                return False
        return True

    async def handle_fetch_where(self, request: web.Request, params: Mapping[str, str] | None = None) -> web.Response:
        """The FetchWhere route handler."""
        self._count("FetchWhere")
        try:
            body = await request.json()
            table, clause = str(body["TableName"]), str(body.get("WhereClause") or "")
            batch_size, restart = int(body.get("BatchSize") or 0), str(body.get("RestartRowID") or "")
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": "invalid FetchWhere request"}, status=400)
        self.requests.append(body)
        if self.answer_next is not None:
            answer, self.answer_next = self.answer_next, None
            return web.json_response(answer)
        if table not in self.tables:
            return web.json_response({"error": f"table {table} is not available"}, status=400)
        try:
            rows = [r for r in self.tables[table] if self._matches(table, r, clause)]
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        rows.sort(key=lambda r: base64.b64decode(r[f"{table}RowID"]))
        if restart and not self.stall:
            ids = [r[f"{table}RowID"] for r in rows]
            after = base64.b64decode(restart)
            first = next(
                (
                    i
                    for i, rid in enumerate(ids)
                    if base64.b64decode(rid) > after or (self.restart_inclusive and rid == restart)
                ),
                len(ids),
            )
            rows = rows[first:]
        page = rows[:batch_size] if batch_size > 0 else rows
        return web.json_response({f"ttbl{table}": [dict(r) for r in page]})

    # ------------------------------------------------------------------------------------------ sxapi

    def _customer_list(self, req: Mapping[str, Any]) -> dict[str, Any]:
        limit = int(req.get("recordLimit") or 0)
        rows = [
            {
                "custNo": r["custno"],
                "name": r["name"],
                "addr1": r["addr"][0],
                "addr2": r["addr"][1],
                "addr3": "",
                "city": r["city"],
                "state": r["state"],
                "zipCd": r["zipcd"],
                "currencyty": r["currencyty"],
                "shipTo": "",
            }
            for r in self.tables["arsc"]
        ]
        rows = rows[:limit] if limit > 0 else rows
        return {"tCustLstV3": {"t-custLstV3": rows}, "tOutfieldvalue": {"t-outfieldvalue": []}}

    def _order_list(self, req: Mapping[str, Any]) -> dict[str, Any]:
        start, end = str(req.get("startEnterDate") or ""), str(req.get("endEnterDate") or "9999-12-31")
        limit = int(req.get("recordLimit") or 0)
        rows = [
            {
                "orderNo": r["orderno"],
                "orderSuf": r["ordersuf"],
                "custNo": r["custno"],
                "transType": r["transtype"],
                "stageCd": r["stagecd"],
                "enterDt": r["enterdt"],
                "custPo": r["custpo"],
                "totInvAmt": r["totinvamt"],
                "whse": r["whse"],
            }
            for r in self.tables["oeeh"]
            if start <= r["enterdt"] <= end
        ]
        rows = rows[:limit] if limit > 0 else rows
        return {"tOeordV5": {"t-oeordV5": rows}}

    async def handle(self, request: web.Request, params: Mapping[str, str] | None = None) -> web.Response:
        """The sxapirestservice route handler (`{operation}` in the path)."""
        op = (params or request.match_info).get("operation", "")
        self._count(op)
        try:
            req = (await request.json())["request"]
        except (ValueError, KeyError, TypeError):
            return web.json_response({"response": {"cErrorMessage": "Invalid request"}}, status=400)
        self.requests.append(req)
        if self.answer_next is not None:
            answer, self.answer_next = self.answer_next, None
            return web.json_response(answer)
        if self.error_next is not None:
            message, self.error_next = self.error_next, None
            return web.json_response({"response": {"cErrorMessage": message}})
        if op.lower() in _LOOKUP_OPERATIONS:
            return await self._lookup(op.lower(), req)
        if op.lower() == "sxapiargetcustomerlistv3":
            return web.json_response({"response": {"cErrorMessage": "", **self._customer_list(req)}})
        if op.lower() == "sxapioegetlistofordersv5":
            return web.json_response({"response": {"cErrorMessage": "", **self._order_list(req)}})
        return web.json_response({"response": {"cErrorMessage": f"Unknown operation {op}"}})

    async def _lookup(self, op: str, req: Mapping[str, Any]) -> web.Response:
        """Availability from the `icsw` rows, in the shapes of the published SX.e REST models."""
        if self.lookup_delay_s > 0:
            await asyncio.sleep(self.lookup_delay_s)
        if self.lookup_down:
            return web.json_response({"error": "Service Unavailable"}, status=503)
        product = str(req.get("productCode") or "")
        rows = [r for r in self.tables["icsw"] if r["prod"] == product]
        if op == "sxapiicproductavailbywhse":
            if not rows:
                return web.json_response({"response": {"cErrorMessage": f"Product not found: {product}"}})
            listed = [
                {"prod": r["prod"], "descrip1": "", "descrip2": "", "whse": r["whse"], "netAvail": _net(r)}
                for r in rows
            ]
            return web.json_response({"response": {"cErrorMessage": "", "tProd_avl": {"t-prod_avl": listed}}})
        row = next((r for r in rows if r["whse"] == req.get("warehouse")), None)
        if row is None:
            message = f"Product not set up in Warehouse Product - icsw: {product}"
            return web.json_response({"response": {"cErrorMessage": message}})
        answer = {
            "cErrorMessage": "",
            "quantityOnHand": row["qtyonhand"],
            "quantityCommitted": row["qtycommit"],
            "quantityReserved": row["qtyreservd"],
            "netAvailable": _net(row),
            "quantityOnOrder": row["qtyonorder"],
        }
        return web.json_response({"response": answer})

    def set_stock(self, product: str, warehouse: str, on_hand: float, committed: float = 0.0) -> None:
        """Put one warehouse product's quantities in `icsw` (added when it is not there), stamped now."""
        row = next((r for r in self.tables["icsw"] if r["prod"] == product and r["whse"] == warehouse), None)
        if row is None:
            self._next_row += 1
            row = {**self._row("icsw", len(self.tables["icsw"])), "prod": product, "whse": warehouse}
            row.update(cono=self.company_number, icswRowID=_row_id(self._next_row))
            self.tables["icsw"].append(row)
        row.update(qtyonhand=float(on_hand), qtycommit=float(committed), qtyreservd=0.0, **self._stamp())

    def _count(self, what: str) -> None:
        self.calls[what] = self.calls.get(what, 0) + 1
        if self.on_call is not None:
            self.on_call(what)
