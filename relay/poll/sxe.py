"""`kind: sxe`: Infor SX.e (CloudSuite Distribution) through the ION API gateway.

Two kinds of feed, each on the shape public clients show (docs/sources.md names every source):

* Table feeds read an SX.e table with the generic `POST {iu}/{ti}/SX/rest/serviceinterface/proxy/FetchWhere`
  (`{"CompanyNumber","Operator","TableName","WhereClause","BatchSize","RestartRowID"}`, no `request` wrapper),
  answered `{"ttbl<table>": [rows]}` whose rows carry `<table>RowID`, `transdt` and `transtm`. Pages follow
  `RestartRowID` (the last row's `<table>RowID`); a full page that does not move past the row id it was asked
  to restart from is an error, never an endless loop. Changes are found with a `transdt >= DATE(m,d,y)` clause
  (server-local date) and the record hashes.
* Operation feeds call `POST {iu}/{ti}/{service_path}/{operation}` with `{"request": {...}}`; the answer is
  `{"response": {"cErrorMessage": "", "<tWrapper>": {"<t-rows>": [rows]}}}` with camelCase wrappers and rows
  (`tCustLstV3` → `t-custLstV3` → `custNo`). These calls are searches without paging: the whole result is read
  each poll and the hashes say what changed; a result as long as `recordLimit` may be cut short and is an error.

Every answer whose shape is not the expected one fails the poll with the keys it did contain. SX.e dates and
times carry no zone: they are read in the source's `timezone` and emitted in UTC.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import orjson

from relay.auth.ionapi import IonApiAuthError, IonApiError, TokenManager, load_ionapi
from relay.config import SourceConfig, SxeFeed, SxeSource
from relay.deliver.retry import parse_retry_after
from relay.events import parse_ts
from relay.poll.base import Fetcher, Page, PollError, ResourceSpec
from relay.poll.changes import FieldRule, RecordMapping
from relay.poll.scheduler import BUILDERS, resource_spec
from relay.spec import SpecRegistry

__all__ = [
    "FEEDS",
    "RECEIVED_STAGES_WHERE",
    "OperationFeed",
    "ShapeError",
    "SxeFetcher",
    "TableFeed",
    "build_sxe",
    "fetchwhere_rows",
    "local_to_utc",
    "next_restart_row_id",
    "normalise_row",
    "operation_rows",
    "utc_to_local_date",
    "where_clause",
]

UPDATED = "_updated"  # the row's update instant in UTC, joined from SX.e's server-local date and time columns
KEY = "_key"  # a business key composed of several columns (order number and suffix)
_REMOVED_FEEDS = {
    "itembalance": "icsw",
    "customers": "arsc (a change-detecting table read) or customer-search",
    "orders": "oeeh (a change-detecting table read) or order-list",
    "invoices": "none yet: no public trace of an invoice change feed",
}


class ShapeError(ValueError):
    """An SX.e answer that does not have the documented shape; the message names the keys that were there."""


Derive = Callable[[Mapping[str, Any]], Any]

# ---------------------------------------------------------------------------------------- pure rules

_TIME_RE = re.compile(r"^(\d{1,2}):?(\d{2})(?::?(\d{2}))?$")
_US_DATE_RE = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{2}|\d{4})$")


def _parse_local_date(text: str) -> date | None:
    text = text.strip()[:10] if "T" not in text else text.split("T", 1)[0]
    try:
        return date.fromisoformat(text)
    except ValueError:
        pass
    match = _US_DATE_RE.match(text)
    if match is None:
        return None
    month, day, year = (int(g) for g in match.groups())
    if year < 100:
        year += 2000
    try:
        return date(year, month, day)
    except ValueError:
        return None


def local_to_utc(day: Any, time: Any, zone: ZoneInfo) -> str | None:
    """SX.e's server-local date and time columns as one UTC instant (`2026-11-20T14:05:00Z`).

    Args:
        day: `2026-11-20` (FetchWhere rows) or `11/20/26`/`11/20/2026`; anything else gives None.
        time: `HHMM` (as FetchWhere rows carry it), `HHMMSS`, `HH:MM[:SS]`, or empty for midnight.
        zone: The server's time zone (the source's `timezone`).

    Returns:
        The instant in UTC with a `Z`, or None when the date is missing or unreadable. A time that falls in a
        daylight-saving gap or overlap is read with the earlier offset (`fold=0`).
    """
    if not isinstance(day, str) or not day.strip():
        return None
    parsed = _parse_local_date(day)
    if parsed is None:
        return None
    hour = minute = second = 0
    text = str(time).strip() if time is not None else ""
    if text:
        match = _TIME_RE.match(text)
        if match is None:
            return None
        hour, minute, second = int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)
        if hour > 23 or minute > 59 or second > 59:
            return None
    local = datetime(parsed.year, parsed.month, parsed.day, hour, minute, second, tzinfo=zone)
    return local.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_to_local_date(stamp: str, zone: ZoneInfo) -> date:
    """The server-local calendar date of a UTC instant (what a `transdt >=` clause compares with)."""
    return parse_ts(stamp).astimezone(zone).date()


def where_clause(table: str, company_number: int, since: date | None, extra: str | None) -> str:
    """The FetchWhere `WhereClause`: the company, rows changed on or after `since`, and the feed's own filter.

    `DATE(month, day, year)` is used rather than a date literal because a literal's reading depends on the
    server session's date format.
    """
    parts = [f"{table}.cono = {company_number}"]
    if since is not None:
        parts.append(f"{table}.transdt >= DATE({since.month},{since.day},{since.year})")
    if extra:
        parts.append(f"({extra})")
    return " and ".join(parts)


def _keys_seen(body: Any) -> str:
    if isinstance(body, Mapping):
        return ", ".join(sorted(str(k) for k in body)) or "none"
    return f"a {type(body).__name__}, not an object"


def fetchwhere_rows(body: Any, table: str) -> list[dict[str, Any]]:
    """The rows of a FetchWhere answer (`{"ttbl<table>": [rows]}`).

    Raises:
        ShapeError: the answer has no `ttbl<table>` list of objects; the message names the keys it had.
    """
    name = f"ttbl{table}"
    rows = body.get(name) if isinstance(body, Mapping) else None
    if not isinstance(rows, list):
        raise ShapeError(f"FetchWhere {table}: expected a {name!r} list; the answer had keys: {_keys_seen(body)}")
    if not all(isinstance(r, dict) for r in rows):
        raise ShapeError(f"FetchWhere {table}: {name!r} holds something other than row objects")
    return rows


def operation_rows(response: Any, operation: str, wrapper: str, rows_key: str) -> list[dict[str, Any]]:
    """The rows of an sxapi answer's table (`response.<wrapper>.<rows_key>`, e.g. `tCustLstV3.t-custLstV3`).

    A wrapper present with no row list means no rows (SX.e leaves empty tables out of some answers).

    Raises:
        ShapeError: the wrapper is missing or its rows are not a list of objects; the message names the keys seen.
    """
    table = response.get(wrapper) if isinstance(response, Mapping) else None
    if not isinstance(table, Mapping):
        raise ShapeError(
            f"{operation}: expected the table {wrapper!r} in the response; it had keys: {_keys_seen(response)}"
        )
    rows = table.get(rows_key, [])
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ShapeError(
            f"{operation}: expected a list of rows under {wrapper}.{rows_key}; it had keys: {_keys_seen(table)}"
        )
    return rows


def next_restart_row_id(
    rows: Sequence[Mapping[str, Any]], table: str, batch_size: int, restart_row_id: str | None
) -> str | None:
    """Where the next FetchWhere page starts: None after a short page, else the last row's `<table>RowID`.

    Raises:
        ShapeError: a full page whose last row has no `<table>RowID` (it cannot be continued), or whose last
            row id is the one this page was asked to restart from (the read does not advance).
    """
    if batch_size <= 0 or len(rows) < batch_size:
        return None
    field_name = f"{table}RowID"
    last = rows[-1].get(field_name)
    if not isinstance(last, str) or not last:
        raise ShapeError(
            f"FetchWhere {table}: a full page of {batch_size} rows without {field_name!r} in its last row "
            f"cannot be continued; the row had keys: {_keys_seen(rows[-1])}"
        )
    if last == restart_row_id:
        raise ShapeError(
            f"FetchWhere {table}: the page asked to restart after row {restart_row_id!r} ended on that same row: "
            "the read does not advance"
        )
    return last


def order_key(number: Any, suffix: Any) -> str | None:
    """An SX.e order or purchase order as one key: `1234567-00` (number and two-digit suffix)."""
    if number in (None, ""):
        return None
    try:
        return f"{int(number)}-{int(suffix or 0):02d}"
    except (TypeError, ValueError):
        return None


def number_text(value: Any) -> str | None:
    """An SX.e number column as a key text: `10000`, also when it comes as `10000.0` (a decimal column)."""
    if value is None or value == "":
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip() or None


def status_text(value: Any) -> str | None:
    """SX.e's `statustype` logical (true: active) as the canonical status text; other values as they are."""
    if isinstance(value, bool):
        return "Active" if value else "Inactive"
    return number_text(value)


# Purchase order stages 5 (Received), 6 (Costed) and 7 (Closed): the POs whose goods were received and not
# cancelled (9). A receipt in SX.e is the PO suffix itself: receiving short leaves the rest on a back order suffix.
RECEIVED_STAGES_WHERE = "poeh.stagecd >= 5 and poeh.stagecd <= 7"


def normalise_row(
    row: Mapping[str, Any], derived: Mapping[str, Derive], date_fields: tuple[str, str] | None, zone: ZoneInfo
) -> dict[str, Any]:
    """A row with its computed columns and its update instant in UTC (`_updated`), ready for the mapping.

    Args:
        row: The SX.e row as answered.
        derived: Computed columns (name → function of the row), such as the `pono-posuf` key.
        date_fields: The row's server-local (date, time) columns, or None when it has none.
        zone: The server's time zone (the source's `timezone`).
    """
    out = dict(row)
    for name, derive in derived.items():
        out[name] = derive(row)
    if date_fields is not None:
        out[UPDATED] = local_to_utc(row.get(date_fields[0]), row.get(date_fields[1]), zone)
    return out


def icsw_available(row: Mapping[str, Any]) -> float | None:
    """Available to promise of a warehouse product row: on hand less reserved and committed."""
    try:
        return float(row.get("qtyonhand") or 0) - float(row.get("qtyreservd") or 0) - float(row.get("qtycommit") or 0)
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------------------------------- feeds


def _m(fields: dict[str, str | tuple[str, str]]) -> RecordMapping:
    rules = {k: FieldRule(v) if isinstance(v, str) else FieldRule(v[0], v[1]) for k, v in fields.items()}  # type: ignore[arg-type]
    return RecordMapping(rules, updated_path=UPDATED)


@dataclass(frozen=True)
class TableFeed:
    """An SX.e table read with FetchWhere; `derived` adds computed columns before the mapping reads the row.

    `where` is the feed's own filter (e.g. the received stages of `poeh`); a feed's `where:` in the config
    replaces it.
    """

    table: str
    mapping: RecordMapping
    derived: Mapping[str, Derive] = field(default_factory=dict)
    where: str | None = None


@dataclass(frozen=True)
class OperationFeed:
    """An sxapi search read whole each poll; `window` names its from/to date parameters, if it takes a range."""

    operation: str
    wrapper: str
    rows_key: str
    mapping: RecordMapping
    request: Mapping[str, Any] = field(default_factory=dict)
    window: tuple[str, str] | None = None
    date_fields: tuple[str, str] | None = None  # the row's server-local (date, time) columns, if any
    derived: Mapping[str, Derive] = field(default_factory=dict)


Feed = TableFeed | OperationFeed

FEEDS: Mapping[str, Feed] = {
    "icsw": TableFeed(
        "icsw",
        _m(
            {
                "partNumber": "prod",
                "warehouse": "whse",
                "onHand": ("qtyonhand", "number"),
                "allocated": ("qtycommit", "number"),
                "available": ("_available", "number"),
                "binLocation": "binloc1",
                "unitOfMeasure": "unitstock",
                "lastTransactionDate": (UPDATED, "date-time"),
            }
        ),
        {"_available": icsw_available},
    ),
    "arsc": TableFeed(
        "arsc",
        _m(
            {
                "customerNumber": "_custno",
                "customerName": "name",
                "status": "_status",
                "currency": "currencyty",
                "country": "countrycd",
                "addressLine1": "addr.0",
                "city": "city",
                "postalCode": "zipcd",
                "email": "email",
                "phone": "phoneno",
                "lastModified": (UPDATED, "date-time"),
            }
        ),
        {"_custno": lambda r: number_text(r.get("custno")), "_status": lambda r: status_text(r.get("statustype"))},
    ),
    "oeeh": TableFeed(
        "oeeh",
        _m(
            {
                "orderNumber": KEY,
                "customerNumber": "_custno",
                "orderDate": ("enterdt", "date"),
                "orderStatus": "stagecd",
                "totalAmount": ("totinvamt", "number"),
                "currency": "currencyty",
                "warehouse": "whse",
            }
        ),
        {
            KEY: lambda r: order_key(r.get("orderno"), r.get("ordersuf")),
            "_custno": lambda r: number_text(r.get("custno")),
        },
    ),
    "poeh": TableFeed(
        "poeh",
        _m(
            {
                "purchaseOrderNumber": KEY,
                "vendorNumber": "_vendno",
                "orderDate": ("orderdt", "date"),
                "status": "stagecd",
                "totalAmount": ("totinvamt", "number"),
                "currency": "currencyty",
                "lastModified": (UPDATED, "date-time"),
            }
        ),
        {KEY: lambda r: order_key(r.get("pono"), r.get("posuf")), "_vendno": lambda r: number_text(r.get("vendno"))},
    ),
    "receipts": TableFeed(
        "poeh",
        _m(
            {
                "receiptNumber": KEY,
                "purchaseOrderNumber": KEY,
                "vendorNumber": "_vendno",
                "warehouse": "whse",
                "receiptDate": ("receiptdt", "date"),
                "lastModified": (UPDATED, "date-time"),
            }
        ),
        {KEY: lambda r: order_key(r.get("pono"), r.get("posuf")), "_vendno": lambda r: number_text(r.get("vendno"))},
        where=RECEIVED_STAGES_WHERE,
    ),
    "apsv": TableFeed(
        "apsv",
        _m(
            {
                "vendorNumber": "_vendno",
                "vendorName": "name",
                "status": "_status",
                "currency": "currencyty",
                "country": "countrycd",
                "email": "email",
                "phone": "phoneno",
                "lastModified": (UPDATED, "date-time"),
            }
        ),
        {"_vendno": lambda r: number_text(r.get("vendno")), "_status": lambda r: status_text(r.get("statustype"))},
    ),
    "customer-search": OperationFeed(
        "sxapiargetcustomerlistv3",
        "tCustLstV3",
        "t-custLstV3",
        RecordMapping(
            {
                "customerNumber": FieldRule("_custno"),
                "customerName": FieldRule("name"),
                "addressLine1": FieldRule("addr1"),
                "city": FieldRule("city"),
                "postalCode": FieldRule("zipCd"),
            }
        ),
        request={"includeInactiveCustomers": True},
        derived={"_custno": lambda r: number_text(r.get("custNo"))},
    ),
    "order-list": OperationFeed(
        "sxapioegetlistofordersv5",
        "tOeordV5",
        "t-oeordV5",
        RecordMapping(
            {
                "orderNumber": FieldRule(KEY),
                "customerNumber": FieldRule("_custno"),
                "orderDate": FieldRule("enterDt", "date"),
                "orderStatus": FieldRule("stageCd"),
                "totalAmount": FieldRule("totInvAmt", "number"),
            }
        ),
        window=("startEnterDate", "endEnterDate"),
        derived={
            KEY: lambda r: order_key(r.get("orderNo"), r.get("orderSuf")),
            "_custno": lambda r: number_text(r.get("custNo")),
        },
    ),
}


def _custom_feed(f: SxeFeed) -> TableFeed:
    assert f.table is not None
    return TableFeed(f.table, RecordMapping({}, updated_path=UPDATED))


# ---------------------------------------------------------------------------------------- fetching


class SxeFetcher:
    """Reads SX.e tables and searches through the ION gateway."""

    def __init__(self, source: SxeSource, tokens: TokenManager, clock: Callable[[], datetime] | None = None) -> None:
        self.source = source
        self.tokens = tokens
        self.zone = ZoneInfo(source.timezone)
        self.clock = clock or (lambda: datetime.now(UTC))

    async def _post(self, what: str, path: str, body: dict[str, Any]) -> Any:
        try:
            answer = await self.tokens.call_json("POST", path, json=body, timeout_s=self.source.timeout_s)
        except IonApiAuthError as exc:
            raise PollError(f"{what}: {exc}", status=exc.status, permission=True) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PollError(f"{what}: the ION gateway could not be reached: {type(exc).__name__}") from None
        if answer.status in (401, 403):
            raise PollError(f"{what}: HTTP {answer.status} from the ION gateway", status=answer.status, permission=True)
        if answer.status != 200:
            wait = (
                parse_retry_after(answer.headers.get("Retry-After"), self.clock())
                if answer.status in (429, 503)
                else None
            )
            excerpt = str(answer.body)[:200] if answer.body else ""
            raise PollError(
                f"{what}: HTTP {answer.status} from the ION gateway{': ' + excerpt if excerpt else ''}",
                status=answer.status,
                retry_after_s=wait if wait is not None else (30.0 if answer.status == 429 else None),
            )
        return answer.body

    async def _fetch_where(
        self, feed: TableFeed, resource: ResourceSpec, since: str | None, cursor: str | None
    ) -> Page:
        state = orjson.loads(cursor) if cursor else {"since": since, "restart": ""}
        batch_size: int = resource.page_size
        since_day = utc_to_local_date(state["since"], self.zone) if state["since"] else None
        body = {
            "CompanyNumber": self.source.company_number,
            "Operator": self.source.operator_init,
            "TableName": feed.table,
            "WhereClause": where_clause(
                feed.table, self.source.company_number, since_day, resource.options.get("where")
            ),
            "BatchSize": batch_size,
            "RestartRowID": state["restart"],
        }
        answer = await self._post(f"FetchWhere {feed.table}", self.source.fetchwhere_path, body)
        try:
            rows = fetchwhere_rows(answer, feed.table)
            restart = next_restart_row_id(rows, feed.table, batch_size, state["restart"] or None)
        except ShapeError as exc:
            raise PollError(str(exc)) from None
        if rows and state["restart"] and rows[0].get(f"{feed.table}RowID") == state["restart"]:
            rows = rows[1:]  # a server that restarts at the given row (inclusive) repeats it
        records = [self._normalise(row, feed.derived, ("transdt", "transtm")) for row in rows]
        next_cursor = orjson.dumps({"since": state["since"], "restart": restart}).decode() if restart else None
        return Page(records, next_cursor)

    async def _operation(self, feed: OperationFeed, resource: ResourceSpec, since: str | None) -> Page:
        request: dict[str, Any] = {
            "companyNumber": self.source.company_number,
            "operatorInit": self.source.operator_init,
            "operatorPassword": self.source.operator_password,
            **feed.request,
            "recordLimit": resource.page_size,
        }
        if feed.window is not None:
            today = self.clock().astimezone(self.zone).date()
            start = utc_to_local_date(since, self.zone) if since else today
            start -= timedelta(seconds=float(resource.options.get("lookback_s") or 0))
            request[feed.window[0]] = start.isoformat()
            request[feed.window[1]] = today.isoformat()
        answer = await self._post(
            feed.operation, self.source.service_path.rstrip("/") + "/" + feed.operation, {"request": request}
        )
        response = answer.get("response") if isinstance(answer, Mapping) else None
        if not isinstance(response, Mapping):
            raise PollError(
                f"{feed.operation}: expected a `response` object; the answer had keys: {_keys_seen(answer)}"
            )
        message = response.get("cErrorMessage")
        if isinstance(message, str) and message.strip():
            raise PollError(f"{feed.operation}: SX.e error: {message.strip()}")
        try:
            rows = operation_rows(response, feed.operation, feed.wrapper, feed.rows_key)
        except ShapeError as exc:
            raise PollError(str(exc)) from None
        if resource.page_size and len(rows) >= resource.page_size:
            raise PollError(
                f"{feed.operation}: {len(rows)} rows reached recordLimit {resource.page_size}; this search has no "
                "paging, so the result may be cut short: raise record_limit or narrow the feed"
            )
        return Page([self._normalise(row, feed.derived, feed.date_fields) for row in rows], None)

    def _normalise(
        self, row: dict[str, Any], derived: Mapping[str, Derive], date_fields: tuple[str, str] | None
    ) -> dict[str, Any]:
        return normalise_row(row, derived, date_fields, self.zone)

    async def _page(self, resource: ResourceSpec, since: str | None, cursor: str | None) -> Page:
        feed: Feed = resource.options["feed"]
        if isinstance(feed, TableFeed):
            return await self._fetch_where(feed, resource, since, cursor)
        return await self._operation(feed, resource, since)

    async def changes(self, resource: ResourceSpec, *, since: str | None, cursor: str | None) -> Page:
        """Rows changed on or after the server-local date of `since` (all rows when None), page by page."""
        return await self._page(resource, since, cursor)

    async def listing(self, resource: ResourceSpec, *, cursor: str | None) -> Page:
        """Every row of the feed (for deletion detection), page by page."""
        return await self._page(resource, None, cursor)

    async def close(self) -> None:
        return None


def build_sxe(
    source: SourceConfig, session: aiohttp.ClientSession, specs: SpecRegistry
) -> tuple[Fetcher, list[ResourceSpec]]:
    """The fetcher and resources of an SX.e source.

    Raises:
        ValueError: an unreadable `.ionapi` file, an unknown or removed feed, or a channel not in the specs.
    """
    assert isinstance(source, SxeSource)
    try:
        creds = load_ionapi(Path(source.ionapi_file))
    except IonApiError as exc:
        raise ValueError(str(exc)) from None
    tokens = TokenManager(creds, session)
    resources = []
    for f in source.feeds:
        feed: Feed | None = _custom_feed(f) if f.table else FEEDS.get(f.feed)
        if feed is None:
            hint = f" (renamed: use {_REMOVED_FEEDS[f.feed]})" if f.feed in _REMOVED_FEEDS else ""
            known = ", ".join(FEEDS)
            raise ValueError(
                f"{source.name}: unknown SX.e feed {f.feed!r}{hint}; one of {known}, or `table:` with a `mapping:`"
            )
        mapping = RecordMapping.parse(f.mapping, defaults=feed.mapping)
        where = f.where if f.where is not None or not isinstance(feed, TableFeed) else feed.where
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
                options={"feed": feed, "where": where, "lookback_s": f.lookback_s},
            )
        )
    return SxeFetcher(source, tokens), resources


BUILDERS["sxe"] = build_sxe
