"""`kind: sxe`: Infor SX.e (CloudSuite Distribution) through the ION API gateway.

Calls `POST {iu}/{ti}/SX/rest/sxapirestservice/{operation}` with `{"request": {...}}` using the `.ionapi`
token manager. SX.e answers business errors as HTTP 200 with `response.cErrorMessage` set: a non-empty
one is a failure. Change feeds take `updateDate`/`updateTime`/`recordLimit` and answer
`moreRecordsAvailable` with a table of rows; rows are read in (update time, key) order, and the next page
asks for rows after the last one seen (`startAfterKey`, the relay's convention, documented in docs/sources.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from relay.auth.ionapi import IonApiAuthError, IonApiError, TokenManager, load_ionapi
from relay.config import SourceConfig, SxeSource
from relay.deliver.retry import parse_retry_after
from relay.poll.base import Fetcher, Page, PollError, ResourceSpec
from relay.poll.changes import FieldRule, RecordMapping
from relay.poll.scheduler import BUILDERS, resource_spec
from relay.spec import SpecRegistry

__all__ = ["FEEDS", "SxeFetcher", "build_sxe"]

SERVICE_PATH = "SX/rest/sxapirestservice/"
UPDATED = "_updated"  # the row's update time, joined from SX.e's separate date and time columns


@dataclass(frozen=True)
class Feed:
    operation: str
    table: str
    key_fields: tuple[str, ...]
    mapping: RecordMapping


def _m(fields: dict[str, str | tuple[str, str]]) -> RecordMapping:
    rules = {k: FieldRule(v) if isinstance(v, str) else FieldRule(v[0], v[1]) for k, v in fields.items()}  # type: ignore[arg-type]
    return RecordMapping(rules, updated_path=UPDATED)


FEEDS: Mapping[str, Feed] = {
    "itembalance": Feed(
        "sxapiicecatalogitembalancev2",
        "t-itembalance",
        ("prod", "whse"),
        _m(
            {
                "partNumber": "prod",
                "warehouse": "whse",
                "onHand": ("qtyonhand", "number"),
                "allocated": ("qtycommit", "number"),
                "available": ("netavail", "number"),
                "unitOfMeasure": "unitstock",
                "lastTransactionDate": (UPDATED, "date-time"),
            }
        ),
    ),
    "customers": Feed(
        "sxapiargetcustomerlistv3",
        "t-customer",
        ("custno",),
        _m(
            {
                "customerNumber": "custno",
                "customerName": "name",
                "status": "statustype",
                "currency": "currencyty",
                "country": "countrycd",
                "addressLine1": "addr1",
                "city": "city",
                "postalCode": "zipcd",
                "email": "email",
                "phone": "phoneno",
                "lastModified": (UPDATED, "date-time"),
            }
        ),
    ),
    "orders": Feed(
        "sxapioegetorderlistv6",
        "t-order",
        ("orderno",),
        _m(
            {
                "orderNumber": "orderno",
                "customerNumber": "custno",
                "orderDate": ("enterdt", "date"),
                "orderStatus": "stagecd",
                "totalAmount": ("totinvamt", "number"),
                "currency": "currencyty",
                "lineCount": ("nolineitem", "integer"),
            }
        ),
    ),
    "invoices": Feed(
        "sxapiargetinvoicelistv3",
        "t-invoice",
        ("invno",),
        _m(
            {
                "invoiceNumber": "invno",
                "customerNumber": "custno",
                "invoiceDate": ("invdt", "date"),
                "dueDate": ("duedt", "date"),
                "amount": ("amount", "number"),
                "currency": "currencyty",
                "status": "statustype",
            }
        ),
    ),
}


def _split(stamp: str | None) -> tuple[str, str]:
    if not stamp:
        return "", ""
    date, _, time = stamp.rstrip("Z").partition("T")
    return date, time[:8]


class SxeFetcher:
    """Reads SX.e change feeds through the ION gateway."""

    def __init__(self, source: SxeSource, tokens: TokenManager) -> None:
        self.source = source
        self.tokens = tokens

    async def _call(self, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        body = {
            "request": {
                "companyNumber": self.source.company_number,
                "operatorInit": self.source.operator_init,
                "operatorPassword": self.source.operator_password,
                **request,
            }
        }
        try:
            answer = await self.tokens.call_json(
                "POST", SERVICE_PATH + operation, json=body, timeout_s=self.source.timeout_s
            )
        except IonApiAuthError as exc:
            raise PollError(f"{operation}: {exc}", status=exc.status, permission=True) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PollError(f"{operation}: the ION gateway could not be reached: {type(exc).__name__}") from None
        if answer.status in (401, 403):
            raise PollError(
                f"{operation}: HTTP {answer.status} from the ION gateway", status=answer.status, permission=True
            )
        if answer.status != 200:
            wait = (
                parse_retry_after(answer.headers.get("Retry-After"), _utcnow()) if answer.status in (429, 503) else None
            )
            raise PollError(
                f"{operation}: HTTP {answer.status} from the ION gateway",
                status=answer.status,
                retry_after_s=wait if wait is not None else (30.0 if answer.status == 429 else None),
            )
        response = answer.body.get("response") if isinstance(answer.body, dict) else None
        if not isinstance(response, dict):
            raise PollError(f"{operation}: the answer has no `response` object")
        message = response.get("cErrorMessage")
        if isinstance(message, str) and message.strip():
            raise PollError(f"{operation}: SX.e error: {message.strip()}")
        return response

    async def _page(self, resource: ResourceSpec, since: str | None, cursor: str | None) -> Page:
        feed: Feed = resource.options["feed"]
        state = orjson.loads(cursor) if cursor else {"since": since, "after": None}
        date, time = _split(state["since"])
        request: dict[str, Any] = {"updateDate": date, "updateTime": time, "recordLimit": resource.page_size}
        if state["after"]:
            request["startAfterKey"] = state["after"]
        response = await self._call(feed.operation, request)
        table = response.get(feed.table.replace("-", "")) or response.get(feed.table) or {}
        rows = table.get(feed.table) if isinstance(table, dict) else table
        if not isinstance(rows, list):
            rows = []
        records = []
        for row in rows:
            if not isinstance(row, dict):
                continue
            stamp = f"{row.get('transdt', '')}T{row.get('transtm', '00:00:00')}Z" if row.get("transdt") else None
            records.append({**row, UPDATED: stamp})
        next_cursor = None
        if response.get("moreRecordsAvailable") and records:
            last = records[-1]
            next_cursor = orjson.dumps(
                {
                    "since": last[UPDATED] or state["since"],
                    "after": "~".join(str(last.get(k, "")) for k in feed.key_fields),
                }
            ).decode()
        return Page(records, next_cursor)

    async def changes(self, resource: ResourceSpec, *, since: str | None, cursor: str | None) -> Page:
        return await self._page(resource, since, cursor)

    async def listing(self, resource: ResourceSpec, *, cursor: str | None) -> Page:
        return await self._page(resource, None, cursor)

    async def close(self) -> None:
        return None


def _utcnow() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def build_sxe(
    source: SourceConfig, session: aiohttp.ClientSession, specs: SpecRegistry
) -> tuple[Fetcher, list[ResourceSpec]]:
    assert isinstance(source, SxeSource)
    try:
        creds = load_ionapi(Path(source.ionapi_file))
    except IonApiError as exc:
        raise ValueError(str(exc)) from None
    tokens = TokenManager(creds, session)
    resources = []
    for f in source.feeds:
        feed = FEEDS.get(f.feed)
        if feed is None:
            raise ValueError(f"{source.name}: unknown SX.e feed {f.feed!r} (one of {', '.join(FEEDS)})")
        mapping = RecordMapping.parse(f.mapping, defaults=feed.mapping)
        resources.append(
            resource_spec(
                f.feed,
                f.channel,
                mapping,
                specs,
                every_s=f.every_s,
                jitter=f.jitter,
                reconcile_every_s=f.reconcile_every_s,
                cron=f.cron,
                page_size=f.record_limit,
                tenant_id=creds.ti,
                options={"feed": feed},
            )
        )
    return SxeFetcher(source, tokens), resources


BUILDERS["sxe"] = build_sxe
