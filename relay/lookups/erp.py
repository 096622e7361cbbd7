"""The ERPs' availability calls (evidence in docs/sources.md) and the pure mapping of their answers.

* SX.e through the ION API gateway: `sxapiicgetwhseproductdataquantityv3` (`productCode`, `warehouse` →
  `quantityOnHand`, `quantityCommitted`, `quantityReserved`, `netAvailable`) for one warehouse, and
  `sxapiicproductavailbywhse` (`productCode` → `tProd_avl.t-prod_avl` rows of `whse`, `netAvail`) to find a part's
  warehouses. SX.e has no batched quantity call, so a batch is one call per part, within the source's cap.
* Sage X3 REST: ITMMVT (product-site totals) queried by `ITMREF` (several parts joined with `or` in one `where`),
  `PHYSTO` on hand and `ALLSTO` allocated per `STOFCY` site.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp

from relay.auth.ionapi import IonApiAuthError, TokenManager
from relay.auth.outbound import OutboundAuthenticator
from relay.config import SxeSource, X3Source
from relay.lookups import LookupError_, WarehouseStock

__all__ = [
    "QUANTITY_OPERATION",
    "WAREHOUSES_OPERATION",
    "SxeAvailability",
    "X3Availability",
    "itmmvt_stocks",
    "sxe_quantity_stock",
    "sxe_unknown_part",
    "x3_where",
]

QUANTITY_OPERATION = "sxapiicgetwhseproductdataquantityv3"
WAREHOUSES_OPERATION = "sxapiicproductavailbywhse"
# *Assumed*: how SX.e words "no such product" in cErrorMessage (no public sample shows it).
_UNKNOWN_PART_MARKERS = ("not found", "not set up", "invalid product")


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def sxe_unknown_part(message: str) -> bool:
    """Whether an SX.e `cErrorMessage` says the product (or product in warehouse) does not exist."""
    lowered = message.lower()
    return any(marker in lowered for marker in _UNKNOWN_PART_MARKERS)


def sxe_quantity_stock(warehouse: str, response: Mapping[str, Any]) -> WarehouseStock:
    """One warehouse's stock from a quantityv3 `response`; allocated = committed + reserved."""
    committed, reserved = _num(response.get("quantityCommitted")), _num(response.get("quantityReserved"))
    allocated = None if committed is None and reserved is None else (committed or 0.0) + (reserved or 0.0)
    return WarehouseStock(
        warehouse=warehouse,
        on_hand=_num(response.get("quantityOnHand")),
        allocated=allocated,
        available=_num(response.get("netAvailable")),
    )


def x3_where(parts: Sequence[str], warehouse: str | None) -> str:
    """The SData `where` for ITMMVT rows of `parts` (quotes doubled), optionally of one site."""
    quoted = " or ".join(f"ITMREF eq '{p.replace(chr(39), chr(39) * 2)}'" for p in parts)
    clause = quoted if len(parts) == 1 else f"({quoted})"
    if warehouse is not None:
        clause += f" and STOFCY eq '{warehouse.replace(chr(39), chr(39) * 2)}'"
    return clause


def itmmvt_stocks(resources: Sequence[Mapping[str, Any]]) -> dict[str, list[WarehouseStock]]:
    """ITMMVT records grouped by part: on hand `PHYSTO`, allocated `ALLSTO`, available the difference."""
    out: dict[str, list[WarehouseStock]] = {}
    for r in resources:
        part, site = r.get("ITMREF"), r.get("STOFCY")
        if not isinstance(part, str) or not isinstance(site, str):
            continue
        on_hand, allocated = _num(r.get("PHYSTO")), _num(r.get("ALLSTO"))
        available = None if on_hand is None else on_hand - (allocated or 0.0)
        unit = r.get("STU")
        out.setdefault(part, []).append(
            WarehouseStock(site, on_hand, allocated, available, unit if isinstance(unit, str) else None)
        )
    return out


class SxeAvailability:
    """SX.e availability through the ION API gateway with the source's token manager."""

    def __init__(self, source: SxeSource, tokens: TokenManager) -> None:
        self.source = source
        self.tokens = tokens

    async def _operation(self, operation: str, request: dict[str, Any]) -> Mapping[str, Any] | None:
        body = {
            "request": {
                "companyNumber": self.source.company_number,
                "operatorInit": self.source.operator_init,
                "operatorPassword": self.source.operator_password,
                **request,
            }
        }
        path = self.source.service_path.rstrip("/") + "/" + operation
        try:
            answer = await self.tokens.call_json("POST", path, json=body)
        except IonApiAuthError as exc:
            raise LookupError_(f"{operation}: {exc}", "refused") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise LookupError_(
                f"{operation}: the ION gateway could not be reached: {type(exc).__name__}", "unreachable"
            ) from None
        if answer.status != 200:
            raise LookupError_(f"{operation}: HTTP {answer.status} from the ION gateway", "refused")
        response = answer.body.get("response") if isinstance(answer.body, dict) else None
        if not isinstance(response, dict):
            raise LookupError_(f"{operation}: the answer has no `response` object", "shape")
        message = response.get("cErrorMessage") or ""
        if message:
            if sxe_unknown_part(str(message)):
                return None
            raise LookupError_(f"{operation}: {str(message)[:200]}", "refused")
        return response

    async def _one(self, part: str, warehouse: str | None) -> list[WarehouseStock] | None:
        if warehouse is not None:
            found = await self._operation(QUANTITY_OPERATION, {"productCode": part, "warehouse": warehouse})
            return None if found is None else [sxe_quantity_stock(warehouse, found)]
        listing = await self._operation(WAREHOUSES_OPERATION, {"productCode": part, "ignoreZeroAvailable": False})
        if listing is None:
            return None
        rows = (listing.get("tProd_avl") or {}).get("t-prod_avl") or []
        warehouses = sorted({str(r["whse"]) for r in rows if isinstance(r, dict) and r.get("whse")})
        if not warehouses:
            return None
        stocks = await asyncio.gather(*(self._one(part, w) for w in warehouses))
        return [s for found in stocks if found for s in found]

    async def availability(self, parts: Sequence[str], warehouse: str | None) -> dict[str, list[WarehouseStock] | None]:
        results = await asyncio.gather(*(self._one(p, warehouse) for p in parts))
        return dict(zip(parts, results, strict=True))


class X3Availability:
    """Sage X3 availability from ITMMVT over api1 REST, several parts per request."""

    batch_size = 50  # parts per `where`: keeps the URL well under common 8 KiB limits

    def __init__(self, source: X3Source, session: aiohttp.ClientSession) -> None:
        self.source = source
        self.session = session
        self.auth = OutboundAuthenticator(source.auth, session)

    async def _get(self, parts: Sequence[str], warehouse: str | None) -> list[Mapping[str, Any]]:
        url = f"{self.source.base_url.rstrip('/')}/api1/x3/erp/{self.source.folder}/ITMMVT"
        params = {"representation": "ITMMVT.$query", "count": "1000", "where": x3_where(parts, warehouse)}
        headers = {"Accept": "application/json", **await self.auth.headers()}
        if self.source.folder_header:
            headers[self.source.folder_header] = self.source.folder
        try:
            async with self.session.get(url, params=params, headers=headers, allow_redirects=False) as resp:
                if resp.status == 401:
                    headers.update(await self.auth.invalidate())
                    raise LookupError_("ITMMVT: HTTP 401 from X3", "refused")
                if resp.status != 200:
                    raise LookupError_(f"ITMMVT: HTTP {resp.status} from X3", "refused")
                body = await resp.json(content_type=None)
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise LookupError_(f"ITMMVT: X3 could not be read: {type(exc).__name__}", "unreachable") from None
        resources = body.get("$resources") if isinstance(body, dict) else None
        if not isinstance(resources, list):
            raise LookupError_("ITMMVT: the answer has no `$resources` list", "shape")
        return [r for r in resources if isinstance(r, dict)]

    async def availability(self, parts: Sequence[str], warehouse: str | None) -> dict[str, list[WarehouseStock] | None]:
        found: dict[str, list[WarehouseStock]] = {}
        for start in range(0, len(parts), self.batch_size):
            found.update(itmmvt_stocks(await self._get(parts[start : start + self.batch_size], warehouse)))
        # X3 answers an empty page for a part without product-site records: the ERP does not know it there.
        return {p: found.get(p) for p in parts}
