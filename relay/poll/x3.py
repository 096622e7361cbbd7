"""`kind: x3`: Sage X3 through its api1 REST web services (or GraphQL on newer versions).

REST: `GET {base_url}/api1/x3/erp/{folder}/{CLASS}?representation={REPR}.$query&count=…&orderBy=…` with
`where={updated_field} ge @{since}@`, following `$links.$next.$url` (else `key=gt.{last key}`).
GraphQL: `POST {base_url}/xtrem/api` with `x-xtrem-endpoint: {folder}`, connection paging
(`first`, `after`, `pageInfo {endCursor hasNextPage}`) and a filter on the update field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import aiohttp
import orjson

from relay.auth.outbound import OutboundAuthenticator
from relay.config import SourceConfig, X3Resource, X3Source
from relay.poll.base import Fetcher, Page, PollError, ResourceSpec
from relay.poll.changes import FieldRule, RecordMapping
from relay.poll.http import request_json
from relay.poll.scheduler import BUILDERS, resource_spec
from relay.spec import SpecRegistry

__all__ = ["CLASSES", "X3Fetcher", "build_x3"]


@dataclass(frozen=True)
class X3Class:
    """Defaults of one X3 class: its key field(s) and how its records map to canonical data."""

    key_fields: tuple[str, ...]
    mapping: RecordMapping


def _m(fields: dict[str, str | tuple[str, str]], updated: str = "UPDDATTIM") -> RecordMapping:
    rules = {k: FieldRule(v) if isinstance(v, str) else FieldRule(v[0], v[1]) for k, v in fields.items()}  # type: ignore[arg-type]
    return RecordMapping(rules, updated_path=updated)


CLASSES: Mapping[str, X3Class] = {
    "BPCUSTOMER": X3Class(
        ("BPCNUM",),
        _m(
            {
                "customerNumber": "BPCNUM",
                "customerName": "BPCNAM",
                "status": "BPCSTA",
                "currency": "CUR",
                "country": "CRY",
                "addressLine1": "ADDLIG1",
                "city": "CTY",
                "postalCode": "POSCOD",
                "email": "WEB",
                "phone": "TEL",
                "lastModified": ("UPDDATTIM", "date-time"),
            }
        ),
    ),
    # Items with their stock per site (one record per ITMREF and STOFCY).
    "ITMMASTER": X3Class(
        ("ITMREF", "STOFCY"),
        _m(
            {
                "partNumber": "ITMREF",
                "warehouse": "STOFCY",
                "onHand": ("PHYSTO", "number"),
                "allocated": ("ALLSTO", "number"),
                "available": ("AVAILSTO", "number"),
                "unitOfMeasure": "STU",
                "lastTransactionDate": ("UPDDATTIM", "date-time"),
            }
        ),
    ),
    "SORDER": X3Class(
        ("SOHNUM",),
        _m(
            {
                "orderNumber": "SOHNUM",
                "customerNumber": "BPCORD",
                "orderDate": ("ORDDAT", "date"),
                "orderStatus": "ORDSTA",
                "totalAmount": ("ORDINVATI", "number"),
                "currency": "CUR",
                "lineCount": ("NBLIG", "integer"),
            }
        ),
    ),
    "SINVOICE": X3Class(
        ("NUM",),
        _m(
            {
                "invoiceNumber": "NUM",
                "customerNumber": "BPR",
                "invoiceDate": ("ACCDAT", "date"),
                "dueDate": ("DUDDAT", "date"),
                "amount": ("AMTATI", "number"),
                "currency": "CUR",
                "status": "INVSTA",
            }
        ),
    ),
    "SDELIVERY": X3Class(
        ("SDHNUM",),
        _m(
            {
                "deliveryNumber": "SDHNUM",
                "orderNumber": "SOHNUM",
                "customerNumber": "BPCORD",
                "shipDate": ("SHIDAT", "date"),
                "status": "SDHSTA",
                "carrier": "BPTNUM",
                "lastModified": ("UPDDATTIM", "date-time"),
            }
        ),
    ),
}


def _x3_stamp(iso: str) -> str:
    return iso if iso.endswith("Z") else iso + "Z"


class X3Fetcher:
    """Reads X3 classes over api1 REST (`api: rest`) or GraphQL (`api: graphql`)."""

    def __init__(self, source: X3Source, session: aiohttp.ClientSession) -> None:
        self.source = source
        self.session = session
        self.auth = OutboundAuthenticator(source.auth, session)
        self._resources = {r.class_: r for r in source.resources}

    async def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", **await self.auth.headers()}
        if self.source.folder_header:
            headers[self.source.folder_header] = self.source.folder
        if self.source.api == "graphql":
            headers["x-xtrem-endpoint"] = self.source.folder
            headers["Content-Type"] = "application/json"
        return headers

    async def _refreshed(self) -> dict[str, str]:
        await self.auth.invalidate()
        return await self._headers()

    def _key_fields(self, cfg: X3Resource) -> tuple[str, ...]:
        if cfg.key:
            return tuple(cfg.key.split("~"))
        known = CLASSES.get(cfg.class_)
        return known.key_fields if known else ("$uuid",)

    async def _rest(self, cfg: X3Resource, since: str | None, cursor: str | None) -> Page:
        base = self.source.base_url.rstrip("/")
        if cursor and cursor.startswith("url:"):
            url, params = cursor[4:], None
        else:
            url = f"{base}/api1/x3/erp/{self.source.folder}/{cfg.class_}"
            keys = self._key_fields(cfg)
            params = {
                "representation": f"{cfg.representation or cfg.class_}.$query",
                "count": str(cfg.page_size),
                "orderBy": ",".join(f"{k} asc" for k in keys),
            }
            if since:
                params["where"] = f"{cfg.updated_field} ge @{_x3_stamp(since)}@"
            if cursor and cursor.startswith("key:"):
                params["key"] = f"gt.{cursor[4:]}"
        body = await request_json(
            self.session,
            "GET",
            url,
            params=params,
            headers=await self._headers(),
            timeout_s=self.source.timeout_s,
            on_unauthorized=self._refreshed,
        )
        if not isinstance(body, dict):
            raise PollError(f"{url}: the answer is not an X3 feed")
        records = body.get("$resources") or []
        if not isinstance(records, list):
            raise PollError(f"{url}: $resources is not a list")
        next_link = ((body.get("$links") or {}).get("$next") or {}).get("$url")
        if isinstance(next_link, str) and next_link:
            return Page(records, "url:" + urljoin(base + "/", next_link))
        # Without `$links` (some representations), a full page means there may be more: page by key.
        if "$links" not in body and len(records) >= cfg.page_size and records:
            last = records[-1]
            return Page(records, "key:" + "~".join(str(last.get(k, "")) for k in self._key_fields(cfg)))
        return Page(records, None)

    async def _graphql(self, cfg: X3Resource, since: str | None, cursor: str | None) -> Page:
        url = self.source.base_url.rstrip("/") + "/xtrem/api"
        fields = sorted({rule.path.split(".")[0] for rule in _mapping(cfg).fields.values()} | {cfg.updated_field})
        query = (
            "query ($first: Int, $after: String, $filter: String) { x3 { "
            + cfg.class_
            + " { query(first: $first, after: $after, filter: $filter) { edges { node { "
            + " ".join(fields)
            + " } } pageInfo { endCursor hasNextPage } } } } }"
        )
        variables: dict[str, Any] = {"first": cfg.page_size, "after": cursor}
        if since:
            variables["filter"] = orjson.dumps({cfg.updated_field: {"_gte": _x3_stamp(since)}}).decode()
        body = await request_json(
            self.session,
            "POST",
            url,
            json={"query": query, "variables": variables},
            headers=await self._headers(),
            timeout_s=self.source.timeout_s,
            on_unauthorized=self._refreshed,
        )
        if not isinstance(body, dict):
            raise PollError(f"{url}: the answer is not GraphQL")
        if body.get("errors"):
            first = body["errors"][0]
            message = first.get("message") if isinstance(first, dict) else str(first)
            raise PollError(f"{url}: GraphQL error: {message}")
        try:
            connection = body["data"]["x3"][cfg.class_]["query"]
            nodes = [edge["node"] for edge in connection["edges"]]
            info = connection["pageInfo"]
        except (KeyError, TypeError):
            raise PollError(f"{url}: the GraphQL answer lacks x3.{cfg.class_}.query edges") from None
        return Page(nodes, str(info["endCursor"]) if info.get("hasNextPage") and info.get("endCursor") else None)

    async def _fetch(self, resource: ResourceSpec, since: str | None, cursor: str | None) -> Page:
        cfg = self._resources[resource.name]
        if self.source.api == "graphql":
            return await self._graphql(cfg, since, cursor)
        return await self._rest(cfg, since, cursor)

    async def changes(self, resource: ResourceSpec, *, since: str | None, cursor: str | None) -> Page:
        return await self._fetch(resource, since, cursor)

    async def listing(self, resource: ResourceSpec, *, cursor: str | None) -> Page:
        return await self._fetch(resource, None, cursor)

    async def close(self) -> None:
        return None


def _mapping(cfg: X3Resource) -> RecordMapping:
    known = CLASSES.get(cfg.class_)
    defaults = known.mapping if known else None
    mapping = RecordMapping.parse(cfg.mapping, defaults=defaults)
    if cfg.updated_field != "UPDDATTIM" or mapping.updated_path is None:
        mapping = RecordMapping(mapping.fields, updated_path=cfg.updated_field)
    return mapping


def build_x3(
    source: SourceConfig, session: aiohttp.ClientSession, specs: SpecRegistry
) -> tuple[Fetcher, list[ResourceSpec]]:
    assert isinstance(source, X3Source)
    resources = []
    for r in source.resources:
        if r.class_ not in CLASSES and not r.mapping.get("fields"):
            raise ValueError(f"{source.name}: class {r.class_!r} has no default mapping; give mapping.fields")
        resources.append(
            resource_spec(
                r.class_,
                r.channel,
                _mapping(r),
                specs,
                every_s=r.every_s,
                jitter=r.jitter,
                reconcile_every_s=r.reconcile_every_s,
                cron=r.cron,
                page_size=r.page_size,
                tenant_id=source.folder,
            )
        )
    return X3Fetcher(source, session), resources


BUILDERS["x3"] = build_x3
