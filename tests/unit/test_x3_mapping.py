"""X3 pure rules: default mappings → valid events, paging decisions, GraphQL documents, strict answer parsing.

The simulator is checked against the fixtures copied from Sage's public samples (tests/fixtures/x3/).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import cached_specs

from relay.poll.base import PollError
from relay.poll.changes import FieldRule, RecordMapping, entity_key
from relay.poll.x3 import (
    CLASSES,
    facet_problems,
    graphql_filter,
    graphql_query,
    graphql_selection,
    parse_graphql_page,
    parse_rest_page,
    rest_next_cursor,
)
from relay.sim.x3 import GRAPHQL_NODES, X3Simulator
from relay.spec import builtin_spec_paths

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "x3"
CHANNELS = {
    "BPCUSTOMER": "customer/synced",
    "ITMMVT": "inventory/synced",
    "SORDER": "order/synced",
    "PORDER": "purchaseorder/synced",
    "PRECEIPT": "receipt/synced",
    "BPSUPPLIER": "vendor/synced",
}
SAMPLES = {
    "SINVOICE": ({"NUM": "INV1", "BPR": "C1", "ACCDAT": "2026-11-20", "DUDDAT": "2026-12-20", "AMTATI": "12.5",
                  "CUR": "GBP", "INVSTA": "Open", "UPDDATTIM": "2026-11-20T10:00:00Z"}, "invoice/synced"),
    "SDELIVERY": ({"SDHNUM": "D1", "SOHNUM": "SO1", "BPCORD": "C1", "SHIDAT": "2026-11-21", "SDHSTA": "Shipped",
                   "BPTNUM": "DHL", "UPDDATTIM": "2026-11-20T10:00:00Z"}, "delivery/synced"),
}  # fmt: skip


def _fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def _valid(channel: str, data: dict[str, Any]) -> None:
    specs = cached_specs(builtin_spec_paths())  # loading the documents costs far more than one validation
    payload = {"eventId": "e", "documentType": specs.channels[channel].document_type,
               "timestamp": "2026-11-20T10:00:00Z", "tenantId": "ALDGATE", "data": data}  # fmt: skip
    assert specs.validate(channel, payload) == []
    assert entity_key(channel, data)


@pytest.mark.parametrize("cls", sorted(CHANNELS))
def test_simulated_rest_records_map_to_valid_events(cls: str) -> None:
    sim = X3Simulator(seed=2)
    sim.seed_records(cls, 10)
    for record in sim.records[cls].values():
        _valid(CHANNELS[cls], CLASSES[cls].rest.data(record))


@pytest.mark.parametrize("node", sorted(GRAPHQL_NODES))
def test_simulated_graphql_nodes_map_to_valid_events(node: str) -> None:
    cls, to_node = GRAPHQL_NODES[node]
    assert CLASSES[cls].node == node
    mapping = CLASSES[cls].graphql
    assert mapping is not None
    sim = X3Simulator(seed=2)
    sim.seed_records(cls, 5)
    for record in sim.records[cls].values():
        data = mapping.data(to_node(record))
        _valid(CHANNELS[cls], data)
        assert data["lastModified"] == record["UPDDATTIM"]


@pytest.mark.parametrize("cls", sorted(SAMPLES))
def test_invoice_and_delivery_mappings(cls: str) -> None:
    record, channel = SAMPLES[cls]
    _valid(channel, CLASSES[cls].rest.data(record))


def test_stock_comes_from_itmmvt_not_itmmaster() -> None:
    assert "ITMMASTER" not in CLASSES
    stock = CLASSES["ITMMVT"]
    assert stock.key_fields == ("ITMREF", "STOFCY")
    assert stock.rest.data({"ITMREF": "BOX", "STOFCY": "ALD01", "PHYSTO": "12", "ALLSTO": 2}) == {
        "partNumber": "BOX", "warehouse": "ALD01", "onHand": 12, "allocated": 2}  # fmt: skip


def test_override_replaces_one_field() -> None:
    mapping = RecordMapping.parse({"fields": {"customerName": "BPCSHO"}}, defaults=CLASSES["BPCUSTOMER"].rest)
    assert mapping.fields["customerName"] == FieldRule("BPCSHO")
    assert mapping.data({"BPCNUM": "C1", "BPCSHO": "Short"}) == {"customerNumber": "C1", "customerName": "Short"}


# -- paging decisions --

PAGE = [{"BPCNUM": "C1"}, {"BPCNUM": "C2"}]


@pytest.mark.parametrize(
    ("records", "next_url", "had_links", "expected"),
    [
        (PAGE, "http://x3/next", True, "url:http://x3/next"),  # $links.$next wins
        (PAGE, None, True, None),  # $links without $next: the server says this is the end
        (PAGE, None, False, "key:C2"),  # no $links: a short page may be a capped one; continue by key
        (PAGE[:1], None, False, "key:C1"),
        ([], None, False, None),  # an empty page ends key paging
    ],
)
def test_rest_next_cursor(records: list[dict[str, str]], next_url: str | None, had_links: bool, expected: str) -> None:
    assert rest_next_cursor(records, next_url, had_links, ("BPCNUM",)) == expected


def test_composite_keys_join_with_tilde() -> None:
    assert (
        rest_next_cursor([{"ITMREF": "BOX", "STOFCY": "ALD02"}], None, False, ("ITMREF", "STOFCY")) == "key:BOX~ALD02"
    )


# -- answers --


def test_the_documented_rest_page_parses() -> None:
    records, next_url, had_links = parse_rest_page(_fixture("rest_query_page.json"), "GET x3")
    assert [r["BPCNUM"] for r in records] == ["C00001", "C00002"]
    assert next_url is not None
    assert "key=gt.C00002" in next_url
    assert had_links


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "not an X3 feed"),
        ({"$diagnoses": [{"$message": "x"}]}, r"no \$resources list \(keys: \$diagnoses\)"),
        ({"$resources": "x"}, r"no \$resources list"),
        ({"$resources": [1]}, "not an object"),
        ({"$resources": [], "$links": []}, r"\$links is not an object"),
        ({"$resources": [], "$links": {"$next": {}}}, r"\$next has no \$url"),
    ],
)
def test_unexpected_rest_answers_are_errors(body: Any, message: str) -> None:
    with pytest.raises(PollError, match=message):
        parse_rest_page(body, "GET x3")


def test_the_documented_graphql_pages_parse() -> None:
    nodes, cursor = parse_graphql_page(_fixture("graphql_supplier_page.json"), "x3MasterData.supplier", "POST x3")
    assert cursor == "QUUwMjI"
    assert CLASSES["BPSUPPLIER"].graphql is not None
    assert CLASSES["BPSUPPLIER"].graphql.data(nodes[0])["vendorNumber"] == "AE022"
    nodes, cursor = parse_graphql_page(
        _fixture("graphql_purchase_receipt_page.json"), "x3Purchasing.purchaseReceipt", "POST x3"
    )
    assert cursor is None
    assert CLASSES["PRECEIPT"].graphql is not None
    assert CLASSES["PRECEIPT"].graphql.data(nodes[0]) == {
        "receiptNumber": "RC000001", "vendorNumber": "FR053", "warehouse": "FR011", "receiptDate": "2026-11-20",
        "lastModified": "2026-11-20T07:00:01Z"}  # fmt: skip


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"errors": [{"message": "boom"}]}, "GraphQL error on x3MasterData.supplier: boom"),
        ({"data": {"x3": {"BPSUPPLIER": {}}}}, "lacks data.x3MasterData.supplier.query"),
        ({"data": {"x3MasterData": {"supplier": {"query": {"edges": []}}}}}, "lacks"),
        ({"data": {"x3MasterData": {"supplier": {"query": {"edges": [], "pageInfo": {"hasNextPage": True}}}}}},
         "endCursor is missing"),
        ({"data": {"x3MasterData": {"supplier": {"query": {"edges": [{"node": 1}],
                                                           "pageInfo": {"hasNextPage": False}}}}}}, "not a connection"),
    ],
)  # fmt: skip
def test_unexpected_graphql_answers_are_errors(body: Any, message: str) -> None:
    with pytest.raises(PollError, match=message):
        parse_graphql_page(body, "x3MasterData.supplier", "POST x3")


def test_graphql_documents() -> None:
    assert graphql_selection(["_id", "code.code", "orderFromSupplier.code.code", "companyName1"]) == (
        "_id code { code } companyName1 orderFromSupplier { code { code } }"
    )
    assert graphql_filter("_updateStamp", "2026-11-20T10:45:19") == "{_updateStamp: {_gte: '2026-11-20T10:45:19Z'}}"
    query = graphql_query("x3Purchasing.purchaseOrder", "_id id")
    assert "{ x3Purchasing { purchaseOrder { query(first: $first, after: $after, filter: $filter" in query
    assert "edges { node { _id id } } pageInfo { endCursor hasNextPage }" in query


def test_facet_problems_name_the_field_and_the_representation() -> None:
    sample = {"BPCNUM": "C1", "BPCNAM": "x"}
    (problem, unmapped) = facet_problems(
        sample, filtered=["UPDDATTIM", "BPCNUM"], mapped=["BPCNUM", "CRY", "UPDDATTIM"], cls="BPCUSTOMER",
        representation="ZBPC")  # fmt: skip
    assert problem.startswith("UPDDATTIM not in the $query facet of representation ZBPC (class BPCUSTOMER)")
    assert unmapped.startswith("mapped fields CRY are not in the $query facet")
    assert facet_problems(None, filtered=["X"], mapped=[], cls="C", representation="R") == []
    assert facet_problems(sample, filtered=["BPCNUM"], mapped=["BPCNAM"], cls="C", representation="R") == []


async def test_the_simulator_answers_in_the_documented_shapes() -> None:
    from aiohttp.test_utils import TestClient, TestServer

    sim = X3Simulator()
    sim.seed_records("BPCUSTOMER", 3)
    sim.seed_records("PRECEIPT", 1)
    sim.add_connected_app("app", "secret", "u", "http://x3/xtrem/api")
    async with TestClient(TestServer(sim.app)) as client:
        auth = {"Authorization": "Basic YWRtaW46YWxkZ2F0ZQ=="}
        resp = await client.get("/api1/x3/erp/ALDGATE/BPCUSTOMER", params={"count": "2"}, headers=auth)
        body = await resp.json()
        documented = _fixture("rest_query_page.json")
        assert {"$itemsPerPage", "$resources", "$links"} <= set(documented) & set(body)
        assert set(body["$resources"][0]) <= set(documented["$resources"][0]) | {"CREDATTIM"}
        assert "$url" in body["$links"]["$next"]
        query = graphql_query("x3Purchasing.purchaseReceipt", graphql_selection(
            ["_id", "id", "receiptSite.code", "receiptDate", "supplier.code.code", "_updateStamp"]))  # fmt: skip
        resp = await client.post("/xtrem/api", json={"query": query, "variables": {"first": 5}},
                                 headers={**auth, "x-xtrem-endpoint": "ALDGATE"})  # fmt: skip
        got = (await resp.json())["data"]["x3Purchasing"]["purchaseReceipt"]["query"]
        want = _fixture("graphql_purchase_receipt_page.json")["data"]["x3Purchasing"]["purchaseReceipt"]["query"]
        assert set(got) == set(want)
        assert set(got["pageInfo"]) == set(want["pageInfo"])
        assert set(got["edges"][0]["node"]) == set(want["edges"][0]["node"])
