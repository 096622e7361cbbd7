"""BOD XML → canonical events: each noun, overrides, stable event ids, and hostile XML."""

from __future__ import annotations

import functools
import time
import tracemalloc
from pathlib import Path
from typing import Any

import jsonschema_rs
import orjson
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.ingest.bod import (
    DEFAULT_MAPPINGS,
    BodError,
    CanonicalEvent,
    FieldPath,
    UnmappedDocument,
    map_bod,
    mapped_document_names,
    parse_bod,
    parse_mapping_overrides,
)
from relay.sim.ion import BOD_KINDS, BodFactory

SPECS = Path(__file__).resolve().parents[2] / "specs" / "asyncapi"
ION_SPEC = SPECS / "ion-events.yaml"
NS = "http://schema.infor.com/InforOAGIS/2"


@functools.cache
def _spec_messages() -> dict[str, tuple[Any, dict[str, Any]]]:
    """Channel → (compiled payload validator, payload schema), from the spec's components.messages."""
    out = {}
    # The ION spec, then the project's own document for the channels it lacks (purchase orders, vendors, …).
    for path in (ION_SPEC, SPECS / "relay-events.yaml"):
        doc = yaml.safe_load(path.read_text())
        for channel, item in doc["channels"].items():
            name = item["subscribe"]["message"]["$ref"].rsplit("/", 1)[1]
            schema = doc["components"]["messages"][name]["payload"]
            out.setdefault(channel, (jsonschema_rs.validator_for(schema, validate_formats=True), schema))
    return out


def assert_valid(event: CanonicalEvent) -> None:
    """The payload satisfies its channel's schema and uses only the data fields the schema names."""
    validator, schema = _spec_messages()[event.channel]
    errors = [f"{list(e.instance_path)}: {e.message}" for e in validator.iter_errors(event.payload)]
    assert errors == []
    assert set(event.payload["data"]) <= set(schema["properties"]["data"]["properties"])
    assert event.payload["documentType"] in schema["properties"]["documentType"]["enum"]


def bod(
    verb_noun: str,
    noun_xml: str,
    *,
    action: str = "Replace",
    created: str | None = "2026-11-20T09:41:56Z",
    tenant: str | None = "HALLORAN",
    bod_id: str | None = "infor-nid:HALLORAN:1:MAIN:X:?Noun&verb=Sync",
    namespace: str | None = NS,
    logical_id: str = "lid://infor.sxe.halloran",
) -> bytes:
    xmlns = f' xmlns="{namespace}"' if namespace else ""
    created_xml = f"<CreationDateTime>{created}</CreationDateTime>" if created else ""
    bod_id_xml = f"<BODID>{bod_id.replace('&', '&amp;')}</BODID>" if bod_id else ""
    tenant_xml = f"<TenantID>{tenant}</TenantID>" if tenant else ""
    verb = "Sync"
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<{verb_noun}{xmlns} releaseID="9.2" versionID="2.14.6">'
        f"<ApplicationArea><Sender><LogicalID>{logical_id}</LogicalID><ComponentID>SX.e</ComponentID></Sender>"
        f"{created_xml}{bod_id_xml}</ApplicationArea>"
        f"<DataArea><{verb}>{tenant_xml}<AccountingEntityID>1</AccountingEntityID><LocationID>MAIN</LocationID>"
        f'<ActionCriteria><ActionExpression actionCode="{action}"/></ActionCriteria></{verb}>'
        f"{noun_xml}</DataArea></{verb_noun}>"
    ).encode()


CUSTOMER = """
<CustomerPartyMaster>
  <PartyIDs><ID accountingEntity="1" variationID="{variation}">C10042</ID></PartyIDs>
  <Name>Brennan Electric LLC</Name>
  <Location type="Billing"><Address type="Postal">
    <AddressLine sequence="1">1200 W Lake St</AddressLine><CityName>Chicago</CityName>
    <CountrySubDivisionCode>IL</CountrySubDivisionCode><CountryCode>US</CountryCode><PostalCode>60607</PostalCode>
  </Address></Location>
  <Communication><ChannelCode>Phone</ChannelCode><DialNumber>+1 312 555 0142</DialNumber></Communication>
  <Communication><ChannelCode>EMail</ChannelCode><URI>ap@brennan.example.com</URI></Communication>
  <Status><Code>Active</Code></Status>
  <CurrencyCode>USD</CurrencyCode>
  <LastModificationDateTime>2026-11-20T10:41:00+01:00</LastModificationDateTime>
</CustomerPartyMaster>"""

SALES_ORDER = """
<SalesOrder>
  <SalesOrderHeader>
    <DocumentID><ID accountingEntity="1" location="MAIN" variationID="{variation}">1004711-00</ID></DocumentID>
    <CustomerParty><PartyIDs><ID>C10042</ID></PartyIDs><Name>Brennan Electric LLC</Name></CustomerParty>
    <OrderDateTime>2026-11-20T23:30:00-05:00</OrderDateTime>
    <Status><Code>Open</Code></Status>
    <TotalAmount currencyID="USD">1234.50</TotalAmount>
  </SalesOrderHeader>
  <SalesOrderLine><LineNumber>1</LineNumber><Item><ItemID><ID>HES-BRK-20A-1P</ID></ItemID></Item>
    <Quantity unitCode="EA">50</Quantity></SalesOrderLine>
  <SalesOrderLine><LineNumber>2</LineNumber><Item><ItemID><ID>HES-GFCI-20A-WH</ID></ItemID></Item>
    <Quantity unitCode="EA">10</Quantity></SalesOrderLine>
  <SalesOrderLine><LineNumber>3</LineNumber><Item><ItemID><ID>HES-THHN12-BLK</ID></ItemID></Item>
    <Quantity unitCode="FT">500</Quantity></SalesOrderLine>
</SalesOrder>"""

INVOICE = """
<Invoice>
  <InvoiceHeader>
    <DocumentID><ID variationID="2">INV-1004711</ID></DocumentID>
    <DocumentDateTime>2026-11-21T08:00:00Z</DocumentDateTime>
    <Status><Code>Open</Code></Status>
    <TotalAmount currencyID="USD">1336.35</TotalAmount>
    <CustomerParty><PartyIDs><ID>C10042</ID></PartyIDs></CustomerParty>
    <PaymentTerm><Term><ID>N30</ID></Term><DueDateTime>2026-12-21T23:59:59Z</DueDateTime></PaymentTerm>
  </InvoiceHeader>
  <InvoiceLine><LineNumber>1</LineNumber></InvoiceLine>
</Invoice>"""

ITEM_BALANCE = """
<ItemBalance>
  <ItemBalanceHeader><DocumentID><ID variationID="7">IB-000031</ID></DocumentID></ItemBalanceHeader>
  <ItemBalanceLine>
    <ItemID><ID>HES-BRK-20A-1P</ID></ItemID><WarehouseLocation><ID>MAIN</ID></WarehouseLocation>
    <OnHandQuantity unitCode="EA">120</OnHandQuantity><AllocatedQuantity unitCode="EA">20</AllocatedQuantity>
    <AvailableQuantity unitCode="EA">100</AvailableQuantity>
    <LastTransactionDateTime>2026-11-20T09:30:00Z</LastTransactionDateTime>
  </ItemBalanceLine>
  <ItemBalanceLine>
    <ItemID><ID>HES-BRK-20A-1P</ID></ItemID><WarehouseLocation><ID>EAST</ID></WarehouseLocation>
    <OnHandQuantity unitCode="EA">35</OnHandQuantity><AllocatedQuantity unitCode="EA">0</AllocatedQuantity>
    <AvailableQuantity unitCode="EA">35</AvailableQuantity>
  </ItemBalanceLine>
  <ItemBalanceLine>
    <ItemID><ID>HES-THHN12-BLK</ID></ItemID><WarehouseLocation><ID>WEST</ID></WarehouseLocation>
    <OnHandQuantity unitCode="FT">2500.5</OnHandQuantity>
  </ItemBalanceLine>
</ItemBalance>"""

INVENTORY_COUNT = """
<InventoryCount>
  <InventoryCountHeader>
    <DocumentID><ID variationID="3">IC-000007</ID></DocumentID>
    <CountDateTime>2026-11-20T06:00:00Z</CountDateTime>
  </InventoryCountHeader>
  <InventoryCountLine>
    <Item><ItemID><ID>HES-LED-A19-9W</ID></ItemID></Item><WarehouseLocation><ID>WEST</ID></WarehouseLocation>
    <CountQuantity unitCode="EA">400</CountQuantity><AllocatedQuantity unitCode="EA">40</AllocatedQuantity>
    <AvailableQuantity unitCode="EA">360</AvailableQuantity>
  </InventoryCountLine>
  <InventoryCountLine>
    <Item><ItemID><ID>HES-JBOX-4SQ</ID></ItemID></Item><WarehouseLocation><ID>MAIN</ID></WarehouseLocation>
    <CountQuantity unitCode="EA">75</CountQuantity>
    <LastTransactionDateTime>2026-11-20T07:15:00Z</LastTransactionDateTime>
  </InventoryCountLine>
</InventoryCount>"""


def map_one(xml: bytes, **kwargs: Any) -> list[CanonicalEvent]:
    kwargs.setdefault("tenant_id", None)
    kwargs.setdefault("source_logical_id", None)
    events = map_bod(parse_bod(xml), **kwargs)
    for event in events:
        assert_valid(event)
    return events


# --- parsing ---------------------------------------------------------------------------------------


def test_parse_reads_the_envelope() -> None:
    parsed = parse_bod(bod("SyncSalesOrder", SALES_ORDER.format(variation=5)))
    assert (parsed.verb, parsed.noun, parsed.document_name) == ("Sync", "SalesOrder", "Sync.SalesOrder")
    assert parsed.logical_id == "lid://infor.sxe.halloran"
    assert parsed.creation_datetime is not None
    assert parsed.creation_datetime.isoformat() == "2026-11-20T09:41:56+00:00"
    assert parsed.bod_id == "infor-nid:HALLORAN:1:MAIN:X:?Noun&verb=Sync"
    assert (parsed.tenant_id, parsed.accounting_entity_id, parsed.location_id) == ("HALLORAN", "1", "MAIN")
    assert parsed.action_code == "Replace"
    assert parsed.root.tag == f"{{{NS}}}SyncSalesOrder"
    assert len(parsed.noun_elements) == 1


@pytest.mark.parametrize("namespace", [NS, None, "http://schema.infor.com/InforOAGIS/9"])
def test_namespaces_do_not_matter(namespace: str | None) -> None:
    events = map_one(bod("SyncSalesOrder", SALES_ORDER.format(variation=5), namespace=namespace))
    assert events[0].payload["data"]["orderNumber"] == "1004711-00"


# --- each noun -------------------------------------------------------------------------------------


def test_customer_sync() -> None:
    [event] = map_one(bod("SyncCustomerPartyMaster", CUSTOMER.format(variation=3)))
    assert event.channel == "customer/synced"
    assert event.entity_key == "C10042"
    assert event.version == "3"
    assert event.payload == {
        "eventId": event.payload["eventId"],
        "documentType": "SyncCustomerPartyMaster",
        "tenantId": "HALLORAN",
        "timestamp": "2026-11-20T09:41:56Z",
        "logicalId": "lid://infor.sxe.halloran",
        "data": {
            "customerNumber": "C10042",
            "customerName": "Brennan Electric LLC",
            "status": "Active",
            "currency": "USD",
            "country": "US",
            "addressLine1": "1200 W Lake St",
            "city": "Chicago",
            "postalCode": "60607",
            "email": "ap@brennan.example.com",
            "phone": "+1 312 555 0142",
            "lastModified": "2026-11-20T09:41:00Z",
        },
    }
    assert event.payload["eventId"].startswith("ion-")
    assert len(event.payload["eventId"]) == 36


def test_customer_delete_goes_to_customer_deleted() -> None:
    noun = (
        '<CustomerPartyMaster><PartyIDs><ID variationID="9">C10042</ID></PartyIDs>'
        "<Status><Code>Deleted</Code></Status>"
        "<LastModificationDateTime>2026-11-20T09:40:00Z</LastModificationDateTime></CustomerPartyMaster>"
    )
    [event] = map_one(bod("SyncCustomerPartyMaster", noun, action="Delete"))
    assert event.channel == "customer/deleted"
    assert event.payload["documentType"] == "DeleteCustomerPartyMaster"
    assert event.payload["data"] == {"customerNumber": "C10042", "deletionDate": "2026-11-20T09:40:00Z"}
    assert (event.entity_key, event.version) == ("C10042", "9")


def test_customer_delete_without_modification_time_uses_creation_time() -> None:
    noun = '<CustomerPartyMaster><PartyIDs><ID variationID="9">C10042</ID></PartyIDs></CustomerPartyMaster>'
    [event] = map_one(bod("SyncCustomerPartyMaster", noun, action="Delete"))
    assert event.payload["data"]["deletionDate"] == "2026-11-20T09:41:56Z"


def test_sales_order() -> None:
    [event] = map_one(bod("SyncSalesOrder", SALES_ORDER.format(variation=5)))
    assert event.channel == "order/synced"
    assert event.payload["documentType"] == "SyncSalesOrder"
    assert event.payload["data"] == {
        "orderNumber": "1004711-00",
        "customerNumber": "C10042",
        "orderDate": "2026-11-20",  # the date as written, not moved to the next day by UTC
        "orderStatus": "Open",
        "totalAmount": 1234.5,
        "currency": "USD",
        "lineCount": 3,
    }
    assert (event.entity_key, event.version) == ("1004711-00", "5")


def test_absent_fields_are_left_out_not_null() -> None:
    noun = "<SalesOrder><SalesOrderHeader><DocumentID><ID>1004712-00</ID></DocumentID></SalesOrderHeader></SalesOrder>"
    [event] = map_one(bod("SyncSalesOrder", noun))
    assert event.payload["data"] == {"orderNumber": "1004712-00", "lineCount": 0}


def test_invoice() -> None:
    [event] = map_one(bod("SyncInvoice", INVOICE))
    assert event.channel == "invoice/synced"
    assert event.payload["data"] == {
        "invoiceNumber": "INV-1004711",
        "customerNumber": "C10042",
        "invoiceDate": "2026-11-21",
        "dueDate": "2026-12-21",
        "amount": 1336.35,
        "currency": "USD",
        "status": "Open",
    }


def test_invoice_customer_falls_back_to_bill_to_party() -> None:
    noun = INVOICE.replace("<CustomerParty>", "<BillToParty>").replace("</CustomerParty>", "</BillToParty>")
    [event] = map_one(bod("SyncInvoice", noun))
    assert event.payload["data"]["customerNumber"] == "C10042"


def test_item_balance_gives_one_event_per_item_and_warehouse() -> None:
    events = map_one(bod("SyncItemBalance", ITEM_BALANCE))
    assert [e.channel for e in events] == ["inventory/synced"] * 3
    assert [e.entity_key for e in events] == ["HES-BRK-20A-1P|MAIN", "HES-BRK-20A-1P|EAST", "HES-THHN12-BLK|WEST"]
    assert {e.version for e in events} == {"7"}
    assert len({e.event_id for e in events}) == 3
    assert events[0].payload["documentType"] == "SyncInventory"
    assert events[0].payload["data"] == {
        "partNumber": "HES-BRK-20A-1P",
        "warehouse": "MAIN",
        "onHand": 120,
        "allocated": 20,
        "available": 100,
        "unitOfMeasure": "EA",
        "lastTransactionDate": "2026-11-20T09:30:00Z",
    }
    assert events[2].payload["data"] == {
        "partNumber": "HES-THHN12-BLK",
        "warehouse": "WEST",
        "onHand": 2500.5,
        "unitOfMeasure": "FT",
    }


def test_inventory_count_falls_back_to_the_header_count_time() -> None:
    first, second = map_one(bod("SyncInventoryCount", INVENTORY_COUNT))
    assert first.entity_key == "HES-LED-A19-9W|WEST"
    assert first.payload["data"] == {
        "partNumber": "HES-LED-A19-9W",
        "warehouse": "WEST",
        "onHand": 400,
        "allocated": 40,
        "available": 360,
        "unitOfMeasure": "EA",
        "lastTransactionDate": "2026-11-20T06:00:00Z",
    }
    assert second.payload["data"]["lastTransactionDate"] == "2026-11-20T07:15:00Z"
    assert second.version == "3"


def test_a_key_repeated_in_one_bod_gets_distinct_stable_ids() -> None:
    line = ITEM_BALANCE.split("<ItemBalanceLine>")[1].split("</ItemBalanceLine>")[0]
    noun = ITEM_BALANCE.replace("</ItemBalance>", f"<ItemBalanceLine>{line}</ItemBalanceLine></ItemBalance>")
    events = map_one(bod("SyncItemBalance", noun))
    assert [e.entity_key for e in events].count("HES-BRK-20A-1P|MAIN") == 2
    assert len({e.event_id for e in events}) == 4
    assert [e.event_id for e in events] == [e.event_id for e in map_one(bod("SyncItemBalance", noun))]


@pytest.mark.parametrize("kind", BOD_KINDS)
def test_every_simulated_bod_maps_to_valid_events(kind: str) -> None:
    factory = BodFactory(seed=11)
    for _ in range(3):
        generated = factory.next_bod(kind)  # type: ignore[arg-type]
        events = map_one(generated.xml)
        assert events
        assert {e.version for e in events} == {str(generated.variation_id)}


def test_mapped_document_names_are_the_defaults() -> None:
    assert mapped_document_names(DEFAULT_MAPPINGS) == [
        "Sync.CustomerPartyMaster",
        "Sync.InventoryCount",
        "Sync.Invoice",
        "Sync.ItemBalance",
        "Sync.PurchaseOrder",
        "Sync.ReceiveDelivery",
        "Sync.SalesOrder",
        "Sync.SupplierPartyMaster",
    ]
    assert DEFAULT_MAPPINGS["Sync.CustomerPartyMaster"].channels == ("customer/synced", "customer/deleted")


# --- envelope facts --------------------------------------------------------------------------------


def test_tenant_and_logical_id_fall_back_to_the_arguments() -> None:
    xml = bod("SyncSalesOrder", SALES_ORDER.format(variation=5), tenant=None, logical_id="")
    [event] = map_one(xml, tenant_id="HALLORAN_PRD", source_logical_id="lid://infor.ion.fallback")
    assert event.payload["tenantId"] == "HALLORAN_PRD"
    assert event.payload["logicalId"] == "lid://infor.ion.fallback"


def test_the_bod_tenant_wins_over_the_argument() -> None:
    [event] = map_one(bod("SyncSalesOrder", SALES_ORDER.format(variation=5)), tenant_id="OTHER")
    assert event.payload["tenantId"] == "HALLORAN"


def test_no_tenant_at_all_is_an_error() -> None:
    with pytest.raises(BodError, match="TenantID"):
        map_bod(
            parse_bod(bod("SyncSalesOrder", SALES_ORDER.format(variation=5), tenant=None)),
            tenant_id=None,
            source_logical_id=None,
        )


def test_missing_creation_time_is_an_error() -> None:
    parsed = parse_bod(bod("SyncSalesOrder", SALES_ORDER.format(variation=5), created=None))
    with pytest.raises(BodError, match="CreationDateTime"):
        map_bod(parsed, tenant_id=None, source_logical_id=None)


def test_unreadable_creation_time_is_an_error() -> None:
    with pytest.raises(BodError, match="CreationDateTime"):
        parse_bod(bod("SyncSalesOrder", SALES_ORDER.format(variation=5), created="yesterday"))


def test_creation_time_is_converted_to_utc() -> None:
    xml = bod("SyncSalesOrder", SALES_ORDER.format(variation=5), created="2026-11-20T04:41:56.250-05:00")
    assert map_one(xml)[0].payload["timestamp"] == "2026-11-20T09:41:56.250Z"


# --- event ids -------------------------------------------------------------------------------------


def ids(xml: bytes, **kwargs: Any) -> list[str]:
    return [e.event_id for e in map_one(xml, **kwargs)]


def test_a_redelivered_bod_maps_to_the_same_ids() -> None:
    xml = bod("SyncItemBalance", ITEM_BALANCE)
    assert ids(xml) == ids(xml)
    # A redelivery may be stamped anew; the id follows the document, not the envelope.
    assert ids(xml) == ids(bod("SyncItemBalance", ITEM_BALANCE, created="2026-11-20T11:00:00Z"))


def test_a_new_variation_maps_to_new_ids() -> None:
    five = ids(bod("SyncSalesOrder", SALES_ORDER.format(variation=5)))
    six = ids(bod("SyncSalesOrder", SALES_ORDER.format(variation=6)))
    assert five != six
    assert five == ids(bod("SyncSalesOrder", SALES_ORDER.format(variation=5)))


def test_ims_variation_id_is_used_when_the_bod_has_none() -> None:
    noun = SALES_ORDER.format(variation=5).replace(' variationID="5"', "")
    xml = bod("SyncSalesOrder", noun)
    [event] = map_one(xml, variation_id="5")
    assert event.version == "5"
    assert event.event_id == ids(bod("SyncSalesOrder", SALES_ORDER.format(variation=5)))[0]
    assert ids(xml, variation_id="6") != ids(xml, variation_id="5")


# A real LN BODID whose variation part is empty.
LN_BODID = "infor-nid:TEST_TST:3555:S_350:PSU000049:?PurchaseOrder&verb=Sync"


def test_without_a_variation_later_changes_are_new_events_and_redeliveries_duplicates() -> None:
    noun = SALES_ORDER.format(variation=5).replace(' variationID="5"', "")
    first = bod("SyncSalesOrder", noun, bod_id=LN_BODID, created="2026-11-20T09:41:56Z")
    [event] = map_one(first)
    assert event.version is None
    assert ids(first) == ids(first)  # a redelivery of the same bytes
    later = bod("SyncSalesOrder", noun, bod_id=LN_BODID, created="2026-11-20T10:15:00Z")
    assert ids(later) != ids(first)  # same BODID, published again later: a change
    changed = bod("SyncSalesOrder", noun.replace("<Code>Open</Code>", "<Code>Released</Code>"), bod_id=LN_BODID)
    assert ids(changed) != ids(first)  # same BODID and instant, other content
    assert ids(bod("SyncSalesOrder", noun, bod_id=None))  # no BODID at all is still mapped


@pytest.mark.parametrize(
    ("phone_code", "email_code"),
    [("Telephone", "EMail"), ("Phone", "EMail"), ("Telephone", "Email"), ("Phone", "Email")],
)
def test_channel_code_spellings(phone_code: str, email_code: str) -> None:
    noun = (
        CUSTOMER.format(variation=3)
        .replace("<ChannelCode>Phone</ChannelCode>", f"<ChannelCode>{phone_code}</ChannelCode>")
        .replace("<ChannelCode>EMail</ChannelCode>", f"<ChannelCode>{email_code}</ChannelCode>")
    )
    [event] = map_one(bod("SyncCustomerPartyMaster", noun))
    assert event.payload["data"]["phone"] == "+1 312 555 0142"
    assert event.payload["data"]["email"] == "ap@brennan.example.com"


def test_a_change_bod_is_delivered_partial_with_only_what_it_carries() -> None:
    noun = """
<SalesOrder><SalesOrderHeader>
  <DocumentID><ID variationID="7">1004711-00</ID></DocumentID>
  <Status><Code>Shipped</Code></Status>
</SalesOrderHeader></SalesOrder>"""
    [event] = map_one(bod("SyncSalesOrder", noun, action="Change"))
    assert event.payload["partial"] is True
    # No lines sent is not "no lines": lineCount is left out, as is every field the Change did not carry.
    assert event.payload["data"] == {"orderNumber": "1004711-00", "orderStatus": "Shipped"}
    assert_valid(event)
    [full] = map_one(bod("SyncSalesOrder", SALES_ORDER.format(variation=7)))
    assert "partial" not in full.payload


PURCHASE_ORDER = """
<PurchaseOrder><PurchaseOrderHeader>
  <DocumentID><ID accountingEntity="1" variationID="{variation}">PO-200417</ID></DocumentID>
  <LastModificationDateTime>2026-11-20T09:40:00Z</LastModificationDateTime>
  <DocumentDateTime>2026-11-19T16:00:00Z</DocumentDateTime>
  <Status><Code>Open</Code></Status>
  <TotalAmount currencyID="USD">5120.00</TotalAmount>
  <SupplierParty><PartyIDs><ID>V3001</ID></PartyIDs><Name>Midwest Wire Co.</Name></SupplierParty>
</PurchaseOrderHeader>
<PurchaseOrderLine><LineNumber>1</LineNumber></PurchaseOrderLine></PurchaseOrder>"""

RECEIVE_DELIVERY = """
<ReceiveDelivery><ReceiveDeliveryHeader>
  <DocumentID><ID variationID="{variation}">RCV-88001</ID></DocumentID>
  <LastModificationDateTime>2026-11-21T14:05:00Z</LastModificationDateTime>
  <ReceivedDateTime>2026-11-21T14:00:00Z</ReceivedDateTime>
  <SupplierParty><PartyIDs><ID>V3001</ID></PartyIDs></SupplierParty>
  <ShipToParty><Location><ID>MAIN</ID></Location></ShipToParty>
  <PurchaseOrderReference><DocumentID><ID>PO-200417</ID></DocumentID></PurchaseOrderReference>
</ReceiveDeliveryHeader></ReceiveDelivery>"""

SUPPLIER = """
<SupplierPartyMaster>
  <PartyIDs><ID variationID="{variation}">V3001</ID></PartyIDs>
  <Name>Midwest Wire Co.</Name>
  <Location><Address><CountryCode>US</CountryCode></Address></Location>
  <Communication><ChannelCode>Telephone</ChannelCode><DialNumber>+1 414 555 0100</DialNumber></Communication>
  <Status><Code>Active</Code></Status>
  <CurrencyCode>USD</CurrencyCode>
  <LastModificationDateTime>2026-11-18T08:00:00Z</LastModificationDateTime>
</SupplierPartyMaster>"""


@pytest.mark.parametrize(
    ("root", "noun", "channel", "data"),
    [
        (
            "SyncPurchaseOrder",
            PURCHASE_ORDER,
            "purchaseorder/synced",
            {
                "purchaseOrderNumber": "PO-200417",
                "vendorNumber": "V3001",
                "orderDate": "2026-11-19",
                "status": "Open",
                "totalAmount": 5120,
                "currency": "USD",
                "lastModified": "2026-11-20T09:40:00Z",
            },
        ),
        (
            "SyncReceiveDelivery",
            RECEIVE_DELIVERY,
            "receipt/synced",
            {
                "receiptNumber": "RCV-88001",
                "purchaseOrderNumber": "PO-200417",
                "vendorNumber": "V3001",
                "warehouse": "MAIN",
                "receiptDate": "2026-11-21",
                "lastModified": "2026-11-21T14:05:00Z",
            },
        ),
        (
            "SyncSupplierPartyMaster",
            SUPPLIER,
            "vendor/synced",
            {
                "vendorNumber": "V3001",
                "vendorName": "Midwest Wire Co.",
                "status": "Active",
                "currency": "USD",
                "country": "US",
                "phone": "+1 414 555 0100",
                "lastModified": "2026-11-18T08:00:00Z",
            },
        ),
    ],
)
def test_procurement_documents(root: str, noun: str, channel: str, data: dict[str, Any]) -> None:
    [event] = map_one(bod(root, noun.format(variation=2)))
    assert (event.channel, event.version, event.payload["data"]) == (channel, "2", data)
    assert_valid(event)
    [deleted] = map_one(bod(root, noun.format(variation=3), action="Delete"))
    assert deleted.channel == channel.replace("synced", "deleted")
    assert_valid(deleted)


def test_tenants_do_not_share_ids() -> None:
    xml = bod("SyncSalesOrder", SALES_ORDER.format(variation=5), tenant=None)
    assert ids(xml, tenant_id="HALLORAN") != ids(xml, tenant_id="HALLORAN_TST")


# --- missing and bad values ------------------------------------------------------------------------


def test_missing_key_element_names_the_field() -> None:
    noun = SALES_ORDER.format(variation=5).replace("<DocumentID>", "<OtherID>").replace("</DocumentID>", "</OtherID>")
    with pytest.raises(BodError, match=r"'orderNumber' at SalesOrderHeader/DocumentID/ID"):
        map_one(bod("SyncSalesOrder", noun))


def test_missing_warehouse_on_an_inventory_line_names_the_line() -> None:
    noun = ITEM_BALANCE.replace("<WarehouseLocation><ID>EAST</ID></WarehouseLocation>", "")
    with pytest.raises(BodError, match=r"ItemBalanceLine\[2\].*'warehouse'"):
        map_one(bod("SyncItemBalance", noun))


def test_no_inventory_lines_is_an_error() -> None:
    noun = "<ItemBalance><ItemBalanceHeader><DocumentID><ID>IB-1</ID></DocumentID></ItemBalanceHeader></ItemBalance>"
    with pytest.raises(BodError, match="ItemBalanceLine"):
        map_one(bod("SyncItemBalance", noun))


def test_a_bad_number_names_the_field_and_path() -> None:
    noun = SALES_ORDER.format(variation=5).replace("1234.50", "12,34.50")
    with pytest.raises(BodError, match=r"'totalAmount' at SalesOrderHeader/TotalAmount: '12,34.50' is not a number"):
        map_one(bod("SyncSalesOrder", noun))


@pytest.mark.parametrize(
    ("amount", "expected"), [("1e3", 1000.0), ("-0.5", -0.5), ("2.4500", 2.45), ("9223372036854775807", 2**63 - 1)]
)
def test_numbers_stay_json_numbers(amount: str, expected: float) -> None:
    noun = SALES_ORDER.format(variation=5).replace("1234.50", amount)
    [event] = map_one(bod("SyncSalesOrder", noun))
    assert event.payload["data"]["totalAmount"] == expected
    orjson.dumps(event.payload)


@pytest.mark.parametrize("amount", ["9" * 5000, "1e999", "NaN", "12 USD"])
def test_unrepresentable_numbers_are_refused(amount: str) -> None:
    noun = SALES_ORDER.format(variation=5).replace("1234.50", amount)
    with pytest.raises(BodError, match=r"'totalAmount'.*is not a number"):
        map_one(bod("SyncSalesOrder", noun))


@pytest.mark.parametrize(
    ("amount", "reason"),
    [
        ("99999999999999999999999", "is beyond 64 bits"),
        ("1000000000000000000000000000000", "is beyond 64 bits"),
        ("123456789012345678.25", "has more digits than a JSON number keeps"),
        ("1e-400", "has more digits than a JSON number keeps"),
    ],
)
def test_numbers_that_would_change_are_refused(amount: str, reason: str) -> None:
    noun = SALES_ORDER.format(variation=5).replace("1234.50", amount)
    with pytest.raises(BodError, match=rf"'totalAmount'.*{reason}"):
        map_one(bod("SyncSalesOrder", noun))


@pytest.mark.parametrize("stamp", ["0001-01-01T00:30:00+01:00", "9999-12-31T23:30:00-01:00"])
def test_date_times_outside_the_years_1_to_9999_are_refused(stamp: str) -> None:
    noun = CUSTOMER.format(variation=3).replace("2026-11-20T10:41:00+01:00", stamp)
    with pytest.raises(BodError, match=r"'lastModified'.*outside the years 0001-9999 in UTC"):
        map_one(bod("SyncCustomerPartyMaster", noun))
    with pytest.raises(BodError, match=r"CreationDateTime.*outside the years 0001-9999 in UTC"):
        parse_bod(bod("SyncCustomerPartyMaster", CUSTOMER.format(variation=3), created=stamp))


def test_a_bad_date_names_the_field() -> None:
    noun = SALES_ORDER.format(variation=5).replace("2026-11-20T23:30:00-05:00", "20/11/2026")
    with pytest.raises(BodError, match="'orderDate'"):
        map_one(bod("SyncSalesOrder", noun))


def test_unmapped_document() -> None:
    xml = bod("SyncItemMaster", "<ItemMaster><ItemMasterHeader/></ItemMaster>")
    with pytest.raises(UnmappedDocument, match=r"Sync\.ItemMaster") as info:
        map_one(xml)
    assert info.value.document_name == "Sync.ItemMaster"


def test_not_a_bod() -> None:
    with pytest.raises(BodError, match="no DataArea"):
        parse_bod(b"<SyncSalesOrder><ApplicationArea/></SyncSalesOrder>")
    with pytest.raises(BodError, match="no <SalesOrder>"):
        parse_bod(b"<SyncSalesOrder><DataArea><Sync/></DataArea></SyncSalesOrder>")
    with pytest.raises(BodError, match="not a BOD"):
        parse_bod(b"<hello><DataArea><x/></DataArea></hello>")


# --- hostile XML -----------------------------------------------------------------------------------

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<SyncSalesOrder><DataArea><Sync/><SalesOrder>&lol9;</SalesOrder></DataArea></SyncSalesOrder>"""

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE SyncSalesOrder [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<SyncSalesOrder><DataArea><Sync/><SalesOrder><SalesOrderHeader><DocumentID><ID>&xxe;</ID></DocumentID>
</SalesOrderHeader></SalesOrder></DataArea></SyncSalesOrder>"""

DEEP = b"<SyncSalesOrder>" + b"<a>" * 10_000 + b"</a>" * 10_000 + b"</SyncSalesOrder>"


def refuse_quickly(xml: bytes) -> BodError:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(BodError) as info:
            parse_bod(xml)
        elapsed_s = time.perf_counter() - started
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed_s < 1.0
    assert peak_bytes < 2 * 1024 * 1024
    return info.value


def test_billion_laughs_is_refused() -> None:
    assert "DTD" in str(refuse_quickly(BILLION_LAUGHS))


def test_external_entity_is_refused_and_nothing_is_read() -> None:
    error = refuse_quickly(XXE)
    assert "root:" not in str(error)
    assert "forbidden" in str(error)


def test_external_entity_without_a_dtd_is_undefined() -> None:
    with pytest.raises(BodError, match="undefined entity"):
        parse_bod(b"<SyncSalesOrder><DataArea>&xxe;</DataArea></SyncSalesOrder>")


def test_ten_thousand_deep_is_refused_quickly() -> None:
    error = refuse_quickly(DEEP)
    assert "deeper than 64" in str(error)


def test_depth_limit_is_a_parameter() -> None:
    xml = bod("SyncSalesOrder", SALES_ORDER.format(variation=5))
    assert parse_bod(xml).noun == "SalesOrder"
    with pytest.raises(BodError, match="deeper than 4"):
        parse_bod(xml, max_depth=4)


def test_any_dtd_is_refused_even_a_harmless_one() -> None:
    xml = (
        b'<?xml version="1.0"?><!DOCTYPE SyncSalesOrder SYSTEM "oagis.dtd">'
        + bod("SyncSalesOrder", "<SalesOrder/>")[len(b'<?xml version="1.0" encoding="UTF-8"?>') :]
    )
    with pytest.raises(BodError, match="DTDForbidden"):
        parse_bod(xml)


def test_malformed_xml_says_where() -> None:
    with pytest.raises(BodError, match=r"malformed XML at line 1, column \d+: mismatched tag"):
        parse_bod(b"<SyncSalesOrder><DataArea></SyncSalesOrder>")
    with pytest.raises(BodError, match="malformed XML"):
        parse_bod(b"")
    with pytest.raises(BodError, match="encoding"):
        parse_bod(b'<?xml version="1.0" encoding="x-klingon"?><a/>')


def test_size_limit() -> None:
    xml = bod("SyncSalesOrder", SALES_ORDER.format(variation=5))
    with pytest.raises(BodError, match="more than the limit of 100"):
        parse_bod(xml, max_bytes=100)


def test_messages_never_echo_a_huge_input() -> None:
    huge = b"<SyncSalesOrder><DataArea><Sync/><SalesOrder>" + b"x" * 1_000_000 + b"</Broken></DataArea>"
    with pytest.raises(BodError) as info:
        parse_bod(huge)
    assert len(str(info.value)) < 200
    noun = SALES_ORDER.format(variation=5).replace("1234.50", "9" * 100_000 + "x")
    with pytest.raises(BodError) as info:
        map_one(bod("SyncSalesOrder", noun))
    assert len(str(info.value)) < 300


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(data=st.data())
def test_damaged_bods_fail_only_with_bod_error(data: st.DataObject) -> None:
    xml = BodFactory(seed=data.draw(st.integers(0, 5))).next_bod().xml
    start = data.draw(st.integers(0, len(xml)))
    end = data.draw(st.integers(start, min(len(xml), start + 40)))
    damaged = xml[:start] + data.draw(st.binary(max_size=20)) + xml[end:]
    try:
        events = map_bod(parse_bod(damaged), tenant_id="HALLORAN", source_logical_id=None)
    except BodError:
        return
    for event in events:
        assert event.event_id.startswith("ion-")
        orjson.dumps(event.payload)


# --- overrides -------------------------------------------------------------------------------------

VARIANT_ORDER = """
<SalesOrder>
  <SalesOrderHeader>
    <DocumentID><ID variationID="2">SO-77</ID></DocumentID>
    <BillToParty><PartyIDs><ID>C20001</ID></PartyIDs></BillToParty>
    <DocumentDateTime>2026-11-19T12:00:00Z</DocumentDateTime>
    <ExtendedAmount currencyID="EUR">99.90</ExtendedAmount>
    <Status><Code>Open</Code></Status>
  </SalesOrderHeader>
</SalesOrder>"""


def test_overrides_map_a_customer_variant_without_code() -> None:
    mappings = parse_mapping_overrides(
        {
            "Sync.SalesOrder": {
                "fields": {
                    "customerNumber": "SalesOrderHeader/BillToParty/PartyIDs/ID",
                    "orderDate": {"path": "SalesOrderHeader/DocumentDateTime", "type": "date"},
                    "totalAmount": "SalesOrderHeader/ExtendedAmount",
                    "currency": "SalesOrderHeader/ExtendedAmount/@currencyID",
                    "orderStatus": None,
                }
            },
            "Process.SalesOrder": {
                "channel": "order/synced",
                "documentType": "SyncSalesOrder",
                "document_id_path": "SalesOrderHeader/DocumentID/ID",
                "key_fields": ["orderNumber"],
                "fields": {"orderNumber": "SalesOrderHeader/DocumentID/ID"},
            },
        }
    )
    assert set(mappings) == {*DEFAULT_MAPPINGS, "Process.SalesOrder"}
    assert mappings["Sync.Invoice"] is DEFAULT_MAPPINGS["Sync.Invoice"]
    [event] = map_one(bod("SyncSalesOrder", VARIANT_ORDER), mappings=mappings)
    assert event.payload["data"] == {
        "orderNumber": "SO-77",
        "customerNumber": "C20001",
        "orderDate": "2026-11-19",
        "totalAmount": 99.9,  # a bare path keeps the default's number type
        "currency": "EUR",
        "lineCount": 0,
    }
    process = (
        bod("ProcessSalesOrder", VARIANT_ORDER).replace(b"<Sync>", b"<Process>").replace(b"</Sync>", b"</Process>")
    )
    [event] = map_one(process, mappings=mappings)
    assert event.payload["data"] == {"orderNumber": "SO-77"}
    assert mappings["Process.SalesOrder"].fields["orderNumber"] == FieldPath("SalesOrderHeader/DocumentID/ID")


def test_override_of_the_delete_mapping() -> None:
    mappings = parse_mapping_overrides(
        {
            "Sync.CustomerPartyMaster": {
                "on_delete": {"fields": {"deletionDate": "bod:ApplicationArea/CreationDateTime"}}
            }
        }
    )
    noun = (
        '<CustomerPartyMaster><PartyIDs><ID variationID="9">C1</ID></PartyIDs>'
        "<LastModificationDateTime>2026-11-20T09:40:00Z</LastModificationDateTime></CustomerPartyMaster>"
    )
    [event] = map_one(bod("SyncCustomerPartyMaster", noun, action="Delete"), mappings=mappings)
    assert event.payload["data"]["deletionDate"] == "2026-11-20T09:41:56Z"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"Sync.SalesOrder": {"fields": {"orderDate": {"path": "X", "type": "datetime"}}}},
            "Sync.SalesOrder.fields.orderDate",
        ),
        ({"Sync.SalesOrder": {"fields": {"orderDate": "Header//Date"}}}, "Sync.SalesOrder.fields.orderDate"),
        ({"Sync.SalesOrder": {"fields": {"orderDate": 5}}}, "Sync.SalesOrder.fields.orderDate"),
        ({"Sync.SalesOrder": {"fields": {"orderNumber": None}}}, "Sync.SalesOrder: key field 'orderNumber'"),
        ({"Sync.SalesOrder": {"chanel": "order/synced"}}, "Sync.SalesOrder: unknown key 'chanel'"),
        ({"Sync.SalesOrder": "order/synced"}, "Sync.SalesOrder: expected a mapping"),
        ({"Sync.Shipment": {"fields": {"shipmentNumber": "ID"}}}, "Sync.Shipment: 'channel'"),
        ({"SyncShipment": {}}, "'SyncShipment'"),
        ({"Sync.SalesOrder": {"entity_path": "SalesOrderLine/@id"}}, "Sync.SalesOrder: entity_path"),
        ({"Sync.SalesOrder": {"entity_path": 5}}, "Sync.SalesOrder: entity_path must be a path string"),
        ({"Sync.SalesOrder": {"document_id_path": None}}, "Sync.SalesOrder: document_id_path"),
        ({"Sync.SalesOrder": {"key_fields": 5}}, "Sync.SalesOrder.key_fields"),
        ({"Sync.SalesOrder": {"fields": {"lineCount": {"path": "SalesOrderLine/@n", "type": "count"}}}}, "lineCount"),
    ],
)
def test_bad_overrides_name_the_key(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("[", r"\[")):
        parse_mapping_overrides(raw)


def test_path_syntax() -> None:
    noun = CUSTOMER.format(variation=1).replace(
        "</CustomerPartyMaster>",
        '<Location type="Shipping"><Address><CityName>Joliet</CityName></Address></Location></CustomerPartyMaster>',
    )
    mappings = parse_mapping_overrides(
        {
            "Sync.CustomerPartyMaster": {
                "fields": {
                    "city": "Location[@type=Shipping]/Address/CityName",
                    "postalCode": "Nowhere | Location[@type='Billing']/Address/PostalCode",
                    "addressLine1": "Location/Address/AddressLine[@sequence=1]",
                    "customerName": "bod:DataArea/Sync/AccountingEntityID",
                }
            }
        }
    )
    [event] = map_one(bod("SyncCustomerPartyMaster", noun), mappings=mappings)
    data = event.payload["data"]
    assert (data["city"], data["postalCode"], data["addressLine1"]) == ("Joliet", "60607", "1200 W Lake St")
    assert data["customerName"] == "1"
