"""`kind: x3`: Sage X3 through its api1 REST web services or its GraphQL API (X3 V12+).

REST (online-help.sagex3.com erp/12 V7DEV integration-guide_ws-query, api-guide_api-get-query):
`GET {base_url}/api1/x3/erp/{folder}/{CLASS}?representation={REPR}.$query&count=…&orderBy=…` with
`where={updated_field} ge @{since}@`; the answer's `$resources` are the records and `$links.$next.$url` the
next page. Without `$links`, pages continue with `key=gt.{last key}` until one comes back empty: the server
may serve fewer records than `count` asked for, so a short page does not prove the end.

GraphQL (developer.sage.com/x3/graphql): `POST {base_url}/xtrem/api` with `x-xtrem-endpoint: {folder}` and
`{ package { node { query(first, after, filter, orderBy) { edges { node { … } } pageInfo { endCursor
hasNextPage } } } } }`, camelCase properties and a filter string such as `{_updateStamp: {_gte: '…'}}`.

Every answer whose shape is not the documented one is a PollError, never an empty page. docs/sources.md
lists the public source of each request and response shape used here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin

import aiohttp

from relay.auth.outbound import OutboundAuthenticator
from relay.config import SourceConfig, X3Resource, X3Source
from relay.poll.base import Fetcher, Page, PollError, ResourceSpec
from relay.poll.changes import FieldRule, RecordMapping
from relay.poll.http import request_json
from relay.poll.scheduler import BUILDERS, resource_spec
from relay.spec import SpecRegistry

__all__ = [
    "CLASSES",
    "X3Fetcher",
    "build_x3",
    "facet_problems",
    "graphql_filter",
    "graphql_query",
    "graphql_selection",
    "parse_graphql_page",
    "parse_rest_page",
    "rest_next_cursor",
]

REST_UPDATED_FIELD = "UPDDATTIM"
GRAPHQL_UPDATED_FIELD = "_updateStamp"


@dataclass(frozen=True)
class X3Class:
    """Defaults of one X3 class: REST key and mapping; GraphQL node (`package.node`) and mapping."""

    key_fields: tuple[str, ...]
    rest: RecordMapping
    node: str | None = None
    graphql: RecordMapping | None = None


def _m(fields: dict[str, str | tuple[str, str]], updated: str) -> RecordMapping:
    rules = {k: FieldRule(v) if isinstance(v, str) else FieldRule(v[0], v[1]) for k, v in fields.items()}  # type: ignore[arg-type]
    return RecordMapping(rules, updated_path=updated)


def _rest(fields: dict[str, str | tuple[str, str]], *, modified: bool = True) -> RecordMapping:
    if modified:
        fields = {**fields, "lastModified": (REST_UPDATED_FIELD, "date-time")}
    return _m(fields, REST_UPDATED_FIELD)


def _gql(fields: dict[str, str | tuple[str, str]]) -> RecordMapping:
    return _m({**fields, "lastModified": (GRAPHQL_UPDATED_FIELD, "date-time")}, GRAPHQL_UPDATED_FIELD)


CLASSES: Mapping[str, X3Class] = {
    # Addresses are not in BPCUSTOMER but in BPADDRESS: map them with `mapping.fields` where a custom
    # representation exposes them (e.g. `addressLine1: BPADDRESS.0.ADDLIG1`).
    "BPCUSTOMER": X3Class(
        ("BPCNUM",),
        _rest({"customerNumber": "BPCNUM", "customerName": "BPCNAM", "currency": "CUR", "country": "CRY"}),
        "x3MasterData.customer",
        _gql({"customerNumber": "code.code", "customerName": "companyName1"}),
    ),
    # Product-site totals (one record per ITMREF and STOFCY): physical and allocated stock.
    "ITMMVT": X3Class(
        ("ITMREF", "STOFCY"),
        _rest(
            {
                "partNumber": "ITMREF",
                "warehouse": "STOFCY",
                "onHand": ("PHYSTO", "number"),
                "allocated": ("ALLSTO", "number"),
                "lastTransactionDate": (REST_UPDATED_FIELD, "date-time"),
            },
            modified=False,
        ),
    ),
    "SORDER": X3Class(
        ("SOHNUM",),
        _rest(
            {
                "orderNumber": "SOHNUM",
                "customerNumber": "BPCORD",
                "orderDate": ("ORDDAT", "date"),
                "orderStatus": "ORDSTA",
                "totalAmount": ("ORDINVATI", "number"),
                "currency": "CUR",
                "lineCount": ("NBLIG", "integer"),
            },
            modified=False,
        ),
    ),
    "SINVOICE": X3Class(
        ("NUM",),
        _rest(
            {
                "invoiceNumber": "NUM",
                "customerNumber": "BPR",
                "invoiceDate": ("ACCDAT", "date"),
                "dueDate": ("DUDDAT", "date"),
                "amount": ("AMTATI", "number"),
                "currency": "CUR",
                "status": "INVSTA",
            },
            modified=False,
        ),
    ),
    "SDELIVERY": X3Class(
        ("SDHNUM",),
        _rest(
            {
                "deliveryNumber": "SDHNUM",
                "orderNumber": "SOHNUM",
                "customerNumber": "BPCORD",
                "shipDate": ("SHIDAT", "date"),
                "status": "SDHSTA",
                "carrier": "BPTNUM",
            }
        ),
    ),
    "PORDER": X3Class(
        ("POHNUM",),
        _rest(
            {
                "purchaseOrderNumber": "POHNUM",
                "vendorNumber": "BPSNUM",
                "orderDate": ("ORDDAT", "date"),
                "currency": "CUR",
            }
        ),
        "x3Purchasing.purchaseOrder",
        _gql({"purchaseOrderNumber": "id", "vendorNumber": "orderFromSupplier.code.code", "status": "receiptStatus"}),
    ),
    "PRECEIPT": X3Class(
        ("PTHNUM",),
        _rest(
            {
                "receiptNumber": "PTHNUM",
                "vendorNumber": "BPSNUM",
                "warehouse": "PRHFCY",
                "receiptDate": ("RCPDAT", "date"),
            }
        ),
        "x3Purchasing.purchaseReceipt",
        _gql(
            {
                "receiptNumber": "id",
                "vendorNumber": "supplier.code.code",
                "warehouse": "receiptSite.code",
                "receiptDate": ("receiptDate", "date"),
            }
        ),
    ),
    "BPSUPPLIER": X3Class(
        ("BPSNUM",),
        _rest({"vendorNumber": "BPSNUM", "vendorName": "BPSNAM", "currency": "CUR", "country": "CRY"}),
        "x3MasterData.supplier",
        _gql({"vendorNumber": "code.code", "vendorName": "companyName1"}),
    ),
}


# ------------------------------------------------------------------------------------------ pure rules


def x3_stamp(iso: str) -> str:
    """An ISO 8601 UTC timestamp as X3 expects it in `where` and filters (always with `Z`)."""
    return iso if iso.endswith("Z") else iso + "Z"


def parse_rest_page(body: Any, where: str) -> tuple[list[Mapping[str, Any]], str | None, bool]:
    """The records, the `$links.$next.$url` (or None) and whether the answer had `$links` at all.

    Raises:
        PollError: the answer is not an api1 feed (no `$resources` list, a record that is not an object,
            a `$links`/`$next` that is not an object).
    """
    if not isinstance(body, Mapping):
        raise PollError(f"{where}: the answer is not an X3 feed (expected an object with $resources)")
    records = body.get("$resources")
    if not isinstance(records, list):
        raise PollError(f"{where}: the answer has no $resources list (keys: {', '.join(sorted(body)) or 'none'})")
    if not all(isinstance(r, Mapping) for r in records):
        raise PollError(f"{where}: an entry of $resources is not an object")
    if "$links" not in body:
        return records, None, False
    links = body["$links"]
    if not isinstance(links, Mapping):
        raise PollError(f"{where}: $links is not an object")
    nxt = links.get("$next")
    if nxt is None:
        return records, None, True
    url = nxt.get("$url") if isinstance(nxt, Mapping) else None
    if not isinstance(url, str) or not url:
        raise PollError(f"{where}: $links.$next has no $url")
    return records, url, True


def rest_next_cursor(
    records: Sequence[Mapping[str, Any]], next_url: str | None, had_links: bool, key_fields: Sequence[str]
) -> str | None:
    """The cursor of the page after this one (None: this was the last).

    `$links.$next` wins. With `$links` but no `$next`, the server said this is the end. Without `$links`,
    the server may have capped `count`, so any non-empty page continues by key (`key:` + the last key).
    """
    if next_url:
        return "url:" + next_url
    if had_links or not records:
        return None
    last = records[-1]
    return "key:" + "~".join(str(last.get(k, "")) for k in key_fields)


def graphql_selection(paths: Iterable[str]) -> str:
    """A GraphQL selection set for dotted property paths: `a.b.c`, `d` → `a { b { c } } d`."""
    tree: dict[str, Any] = {}
    for path in paths:
        node = tree
        for part in path.split("."):
            if part.isdigit():  # a list index in a mapping path selects the list's own fields
                continue
            node = node.setdefault(part, {})

    def render(branch: Mapping[str, Any]) -> str:
        return " ".join(f"{name} {{ {render(sub)} }}" if sub else name for name, sub in sorted(branch.items()))

    return render(tree)


def graphql_filter(updated_field: str, since: str) -> str:
    """The X3 filter string for records updated at or after `since`: `{field: {_gte: '…'}}`."""
    return f"{{{updated_field}: {{_gte: '{x3_stamp(since)}'}}}}"


def graphql_query(node: str, selection: str) -> str:
    """The query document for one page of `package.node` with connection paging and a filter."""
    package, name = node.split(".")
    return (
        "query ($first: Int, $after: String, $filter: String, $orderBy: String) { "
        f"{package} {{ {name} {{ query(first: $first, after: $after, filter: $filter, orderBy: $orderBy) "
        f"{{ edges {{ node {{ {selection} }} }} pageInfo {{ endCursor hasNextPage }} }} }} }} }}"
    )


def parse_graphql_page(body: Any, node: str, where: str) -> tuple[list[Mapping[str, Any]], str | None]:
    """The nodes of one connection page and the cursor of the next one (None: last page).

    Raises:
        PollError: a GraphQL error, or an answer without `data.{package}.{node}.query.edges/pageInfo`.
    """
    if not isinstance(body, Mapping):
        raise PollError(f"{where}: the answer is not a GraphQL response")
    errors = body.get("errors")
    if errors:
        first = errors[0] if isinstance(errors, list) and errors else errors
        message = first.get("message") if isinstance(first, Mapping) else str(first)
        raise PollError(f"{where}: GraphQL error on {node}: {message}")
    package, name = node.split(".")
    try:
        connection = body["data"][package][name]["query"]
        edges = connection["edges"]
        info = connection["pageInfo"]
        nodes = [edge["node"] for edge in edges]
        has_next = info["hasNextPage"]
    except (KeyError, TypeError):
        raise PollError(f"{where}: the answer lacks data.{node}.query edges and pageInfo") from None
    if not isinstance(edges, list) or not all(isinstance(n, Mapping) for n in nodes) or not isinstance(has_next, bool):
        raise PollError(f"{where}: data.{node}.query is not a connection (edges of nodes, pageInfo.hasNextPage)")
    if not has_next:
        return nodes, None
    cursor = info.get("endCursor")
    if not isinstance(cursor, str) or not cursor:
        raise PollError(f"{where}: pageInfo.hasNextPage is true but endCursor is missing")
    return nodes, cursor


def facet_problems(
    sample: Mapping[str, Any] | None, *, filtered: Sequence[str], mapped: Sequence[str], cls: str, representation: str
) -> list[str]:
    """What a `$query` record shows missing: fields used in where/orderBy (X3 answers 500), mapped fields.

    `sample` is one record of the representation's `$query` facet, fetched without where/orderBy; None when
    the class has no records yet (nothing can be said).
    """
    if sample is None:
        return []
    problems = []
    missing = [f for f in dict.fromkeys(filtered) if f not in sample]
    if missing:
        problems.append(
            f"{', '.join(missing)} not in the $query facet of representation {representation} (class {cls}): "
            "X3 answers 500 for where/orderBy on them; add them to a custom representation or set "
            "`updated_field`/`key` to properties of the facet"
        )
    unmapped = [p for p in dict.fromkeys(path.split(".")[0] for path in mapped) if p not in sample and p not in missing]
    if unmapped:
        problems.append(
            f"mapped fields {', '.join(unmapped)} are not in the $query facet of representation {representation} "
            f"(class {cls}): their canonical fields will stay empty"
        )
    return problems


# ------------------------------------------------------------------------------------------ fetcher


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

    def _representation(self, cfg: X3Resource) -> str:
        return cfg.representation or cfg.class_

    async def _get(self, url: str, params: Mapping[str, str] | None) -> Any:
        return await request_json(
            self.session,
            "GET",
            url,
            params=params,
            headers=await self._headers(),
            timeout_s=self.source.timeout_s,
            on_unauthorized=self._refreshed,
        )

    async def _rest(self, cfg: X3Resource, since: str | None, cursor: str | None) -> Page:
        base = self.source.base_url.rstrip("/")
        keys = self._key_fields(cfg)
        updated = cfg.updated_field or REST_UPDATED_FIELD
        params: dict[str, str] | None
        if cursor and cursor.startswith("url:"):
            url, params = cursor[4:], None
        else:
            url = f"{base}/api1/x3/erp/{self.source.folder}/{cfg.class_}"
            params = {
                "representation": f"{self._representation(cfg)}.$query",
                "count": str(cfg.page_size),
                "orderBy": ",".join(f"{k} asc" for k in keys),
            }
            if since:
                params["where"] = f"{updated} ge @{x3_stamp(since)}@"
            if cursor and cursor.startswith("key:"):
                params["key"] = f"gt.{cursor[4:]}"
        try:
            body = await self._get(url, params)
        except PollError as exc:
            if exc.status == 500:
                filtered = ([updated] if since else []) + list(keys)
                raise PollError(
                    f"{exc} — X3 answers 500 when a where/orderBy property ({', '.join(filtered)}) is outside the "
                    f"$query facet of representation {self._representation(cfg)}; `relay check-config --probe` "
                    "names the missing ones",
                    status=500,
                ) from None
            raise
        records, next_url, had_links = parse_rest_page(body, f"GET {url}")
        following = rest_next_cursor(records, urljoin(base + "/", next_url) if next_url else None, had_links, keys)
        return Page(records, following)

    def node(self, cfg: X3Resource) -> str:
        """The GraphQL `package.node` a resource reads."""
        if cfg.node:
            return cfg.node
        known = CLASSES.get(cfg.class_)
        if known is None or known.node is None:
            raise ValueError(f"{self.source.name}: class {cfg.class_!r} has no default GraphQL node; give `node`")
        return known.node

    async def _graphql(self, cfg: X3Resource, since: str | None, cursor: str | None) -> Page:
        url = self.source.base_url.rstrip("/") + "/xtrem/api"
        node = self.node(cfg)
        mapping = _mapping(cfg, "graphql")
        updated = cfg.updated_field or GRAPHQL_UPDATED_FIELD
        paths = ["_id", updated, *(rule.path for rule in mapping.fields.values())]
        variables: dict[str, Any] = {"first": cfg.page_size, "after": cursor, "orderBy": "{_id: 1}"}
        if since:
            variables["filter"] = graphql_filter(updated, since)
        body = await request_json(
            self.session,
            "POST",
            url,
            json={"query": graphql_query(node, graphql_selection(paths)), "variables": variables},
            headers=await self._headers(),
            timeout_s=self.source.timeout_s,
            on_unauthorized=self._refreshed,
        )
        nodes, following = parse_graphql_page(body, node, f"POST {url}")
        return Page(nodes, following)

    async def _fetch(self, resource: ResourceSpec, since: str | None, cursor: str | None) -> Page:
        cfg = self._resources[resource.name]
        if self.source.api == "graphql":
            return await self._graphql(cfg, since, cursor)
        return await self._rest(cfg, since, cursor)

    async def changes(self, resource: ResourceSpec, *, since: str | None, cursor: str | None) -> Page:
        return await self._fetch(resource, since, cursor)

    async def listing(self, resource: ResourceSpec, *, cursor: str | None) -> Page:
        return await self._fetch(resource, None, cursor)

    async def probe(self, resource: ResourceSpec) -> list[str]:
        """Problems a first incremental poll would hit (for `check-config --probe`); [] when none.

        REST: one incremental page (where + orderBy, as the daemon sends them); then one record of the
        `$query` facet without where/orderBy, to name the fields the facet lacks. GraphQL: one page.

        Raises:
            PollError: the source cannot be read at all (credentials, network, an unexpected answer).
        """
        cfg = self._resources[resource.name]
        since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if self.source.api == "graphql":
            await self._graphql(cfg, since, None)
            return []
        failure: PollError | None = None
        try:
            await self._rest(cfg, since, None)
        except PollError as exc:
            if exc.status != 500:
                raise
            failure = exc
        url = f"{self.source.base_url.rstrip('/')}/api1/x3/erp/{self.source.folder}/{cfg.class_}"
        body = await self._get(url, {"representation": f"{self._representation(cfg)}.$query", "count": "1"})
        records, _, _ = parse_rest_page(body, f"GET {url}")
        mapping = _mapping(cfg, "rest")
        problems = facet_problems(
            records[0] if records else None,
            filtered=[cfg.updated_field or REST_UPDATED_FIELD, *self._key_fields(cfg)],
            mapped=[rule.path for rule in mapping.fields.values()],
            cls=cfg.class_,
            representation=self._representation(cfg),
        )
        if failure is not None and not problems:
            problems.append(str(failure))
        return problems

    async def close(self) -> None:
        return None

    @property
    def token_expires_at(self) -> datetime | None:
        """When the current access token expires (see `Fetcher.token_expires_at`)."""
        return self.auth.expires_at


def _mapping(cfg: X3Resource, api: str) -> RecordMapping:
    known = CLASSES.get(cfg.class_)
    defaults = (known.graphql if api == "graphql" else known.rest) if known else None
    mapping = RecordMapping.parse(cfg.mapping, defaults=defaults)
    updated = cfg.updated_field or (GRAPHQL_UPDATED_FIELD if api == "graphql" else REST_UPDATED_FIELD)
    if cfg.updated_field or mapping.updated_path is None:
        mapping = RecordMapping(mapping.fields, updated_path=updated)
    return mapping


def build_x3(
    source: SourceConfig, session: aiohttp.ClientSession, specs: SpecRegistry
) -> tuple[Fetcher, list[ResourceSpec]]:
    """The X3 fetcher and one ResourceSpec per configured class.

    Raises:
        ValueError: a class without a default mapping (for the source's `api`) and no `mapping.fields`,
            or a GraphQL resource without a node.
    """
    assert isinstance(source, X3Source)
    fetcher = X3Fetcher(source, session)
    resources = []
    for r in source.resources:
        known = CLASSES.get(r.class_)
        has_default = known is not None and (known.graphql if source.api == "graphql" else known.rest) is not None
        if not has_default and not r.mapping.get("fields"):
            raise ValueError(
                f"{source.name}: class {r.class_!r} has no default {source.api} mapping; give mapping.fields"
            )
        if source.api == "graphql":
            fetcher.node(r)
        resources.append(
            resource_spec(
                r.class_,
                r.channel,
                _mapping(r, source.api),
                specs,
                every_s=r.every_s,
                jitter=r.jitter,
                reconcile_every_s=r.reconcile_every_s,
                cron=r.cron,
                page_size=r.page_size,
                tenant_id=source.folder,
            )
        )
    return fetcher, resources


BUILDERS["x3"] = build_x3
