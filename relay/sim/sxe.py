"""Infor SX.e simulator: the sxapirestservice change feeds behind the ION simulator's API gateway.

Halloran Electrical Supply: products stocked in warehouses MAIN/EAST/WEST, contractor customers,
orders and invoices. Rows carry SX.e's separate `transdt`/`transtm` update columns.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

__all__ = ["SxeSimulator"]

_WAREHOUSES = ("MAIN", "EAST", "WEST")
_PRODUCTS = ("BRK-20A", "BRK-30A", "WIRE-12-2", "WIRE-14-2", "CONDUIT-EMT-1", "BOX-4SQ", "LUG-2AWG", "GFCI-20")

# feed operation → (table name, key columns, row factory)
OPERATIONS = {
    "sxapiicecatalogitembalancev2": ("t-itembalance", ("prod", "whse")),
    "sxapiargetcustomerlistv3": ("t-customer", ("custno",)),
    "sxapioegetorderlistv6": ("t-order", ("orderno",)),
    "sxapiargetinvoicelistv3": ("t-invoice", ("invno",)),
}


@dataclass
class SxeSimulator:
    """Serve with `ion_sim.add_gateway_route("SX/rest/sxapirestservice/{operation}", sxe.handle)`."""

    seed: int = 7
    now: datetime = field(default_factory=lambda: datetime(2026, 11, 20, 8, 0, tzinfo=UTC))
    tables: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    error_next: str | None = None
    calls: dict[str, int] = field(default_factory=dict)
    on_call: Callable[[str], None] | None = None

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        for op in OPERATIONS:
            self.tables.setdefault(op, {})

    def _stamp(self) -> dict[str, str]:
        self.now += timedelta(seconds=1)
        return {"transdt": self.now.strftime("%Y-%m-%d"), "transtm": self.now.strftime("%H:%M:%S")}

    def _row(self, op: str, n: int) -> dict[str, Any]:
        rng = self.rng
        if op == "sxapiicecatalogitembalancev2":
            onhand = rng.randint(0, 500)
            commit = rng.randint(0, min(onhand, 60))
            return {
                "cono": 1,
                "prod": f"{rng.choice(_PRODUCTS)}-{n // 3:04d}",
                "whse": _WAREHOUSES[n % 3],
                "qtyonhand": onhand,
                "qtycommit": commit,
                "qtyreservd": 0,
                "netavail": onhand - commit,
                "unitstock": "EA",
                "binloc1": f"A{rng.randint(1, 40):02d}",
            }
        if op == "sxapiargetcustomerlistv3":
            return {
                "cono": 1,
                "custno": str(10000 + n),
                "name": f"{rng.choice(['Volt', 'Arc', 'Ohm'])} Electric {n}",
                "statustype": "Active",
                "currencyty": "USD",
                "countrycd": "US",
                "addr1": f"{n} Main St",
                "city": "Springfield",
                "zipcd": "62701",
                "email": f"ap{n}@example.com",
                "phoneno": "555-0100",
            }
        if op == "sxapioegetorderlistv6":
            return {
                "cono": 1,
                "orderno": str(500000 + n),
                "custno": str(10000 + n % 50),
                "enterdt": self.now.strftime("%Y-%m-%d"),
                "stagecd": "Ordered",
                "totinvamt": round(rng.uniform(20, 4000), 2),
                "currencyty": "USD",
                "nolineitem": rng.randint(1, 9),
            }
        return {
            "cono": 1,
            "invno": str(700000 + n),
            "custno": str(10000 + n % 50),
            "invdt": self.now.strftime("%Y-%m-%d"),
            "duedt": (self.now + timedelta(days=30)).strftime("%Y-%m-%d"),
            "amount": round(rng.uniform(20, 4000), 2),
            "currencyty": "USD",
            "statustype": "Open",
        }

    @staticmethod
    def _key(op: str, row: dict[str, Any]) -> str:
        return "~".join(str(row[k]) for k in OPERATIONS[op][1])

    def seed_rows(self, op: str, count: int) -> None:
        table = self.tables[op]
        start = len(table)
        for n in range(start, start + count):
            row = {**self._row(op, n), **self._stamp()}
            table[self._key(op, row)] = row

    def change(self, op: str, count: int) -> list[str]:
        keys = self.rng.sample(sorted(self.tables[op]), count)
        for key in keys:
            row = self.tables[op][key]
            if op == "sxapiicecatalogitembalancev2":
                row["qtyonhand"] = int(row["qtyonhand"]) + self.rng.randint(1, 50)
                row["netavail"] = int(row["qtyonhand"]) - int(row["qtycommit"])
            else:
                row["statustype" if "statustype" in row else "stagecd"] = self.rng.choice(["Changed", "Hold", "Paid"])
            row.update(self._stamp())
        return keys

    def delete(self, op: str, count: int) -> list[str]:
        keys = self.rng.sample(sorted(self.tables[op]), count)
        for key in keys:
            del self.tables[op][key]
        return keys

    async def handle(self, request: web.Request, params: Mapping[str, str] | None = None) -> web.Response:
        """The gateway route handler (`add_gateway_route(path, sxe.handle)` passes the path parameters)."""
        op = (params or request.match_info).get("operation", "")
        self.calls[op] = self.calls.get(op, 0) + 1
        if self.on_call is not None:
            self.on_call(op)
        if op not in OPERATIONS:
            return web.json_response({"response": {"cErrorMessage": f"Unknown operation {op}"}})
        try:
            body = await request.json()
            req = body["request"]
        except (ValueError, KeyError, TypeError):
            return web.json_response({"response": {"cErrorMessage": "Invalid request"}}, status=400)
        if self.error_next is not None:
            message, self.error_next = self.error_next, None
            return web.json_response({"response": {"cErrorMessage": message}})
        since = f"{req.get('updateDate', '')}T{req.get('updateTime', '')}" if req.get("updateDate") else ""
        after = str(req.get("startAfterKey") or "")
        limit = int(req.get("recordLimit") or 500)
        table_name, _ = OPERATIONS[op]

        def position(item: tuple[str, dict[str, Any]]) -> tuple[str, str]:
            return (f"{item[1]['transdt']}T{item[1]['transtm']}", item[0])

        rows = sorted(self.tables[op].items(), key=position)
        if since and after:
            rows = [r for r in rows if position(r) > (since, after)]
        elif since:
            rows = [r for r in rows if position(r)[0] >= since]
        page = rows[:limit]
        return web.json_response(
            {
                "response": {
                    "cErrorMessage": "",
                    "moreRecordsAvailable": len(rows) > limit,
                    table_name.replace("-", ""): {table_name: [dict(r[1]) for r in page]},
                }
            }
        )
