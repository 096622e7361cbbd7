"""AsyncAPI loading, validation and export (relay.spec) against the shipped documents and small ones."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from relay.spec import (
    ChannelSpec,
    SpecError,
    SpecRegistry,
    ValidationIssue,
    builtin_spec_paths,
    export_document,
    load_spec_document,
    load_specs,
)

ION_CHANNELS = {
    "customer/synced": "SyncCustomerPartyMaster",
    "customer/deleted": "DeleteCustomerPartyMaster",
    "order/synced": "SyncSalesOrder",
    "invoice/synced": "SyncInvoice",
    "inventory/synced": "SyncInventory",
}
RELAY_CHANNELS = {
    "delivery/synced": "SyncShipment",
    "purchaseorder/synced": "SyncPurchaseOrder",
    "receipt/synced": "SyncReceipt",
    "vendor/synced": "SyncSupplierPartyMaster",
    "journalentry/synced": "SyncJournalEntry",
    "order/deleted": "DeleteSalesOrder",
    "invoice/deleted": "DeleteInvoice",
    "inventory/deleted": "DeleteInventory",
    "inventory/low-stock": "InventoryLowStock",
    "inventory/stock-restored": "InventoryStockRestored",
    "delivery/deleted": "DeleteShipment",
    "purchaseorder/deleted": "DeletePurchaseOrder",
    "receipt/deleted": "DeleteReceipt",
    "vendor/deleted": "DeleteSupplierPartyMaster",
    "journalentry/deleted": "DeleteJournalEntry",
}
ALL_CHANNELS = {**ION_CHANNELS, **RELAY_CHANNELS}

VALID_DATA: dict[str, dict[str, Any]] = {
    "customer/synced": {
        "customerNumber": "C1001",
        "customerName": "Acme Electric",
        "status": "active",
        "currency": "EUR",
        "country": "NO",
        "lastModified": "2026-11-20T09:41:56Z",
    },
    "customer/deleted": {"customerNumber": "C1001", "deletionDate": "2026-11-20T09:41:56Z"},
    "order/synced": {
        "orderNumber": "SO-1",
        "customerNumber": "C1001",
        "orderDate": "2026-11-20",
        "orderStatus": "open",
        "totalAmount": 120.5,
        "currency": "EUR",
        "lineCount": 3,
    },
    "invoice/synced": {
        "invoiceNumber": "INV-1",
        "customerNumber": "C1001",
        "invoiceDate": "2026-11-20",
        "dueDate": "2026-12-20",
        "amount": 99.0,
        "currency": "EUR",
        "status": "posted",
    },
    "inventory/synced": {
        "partNumber": "P-100",
        "warehouse": "MAIN",
        "onHand": 12,
        "allocated": 2,
        "available": 10,
        "unitOfMeasure": "EA",
        "lastTransactionDate": "2026-11-21T10:00:00Z",
    },
    "delivery/synced": {
        "deliveryNumber": "D-1",
        "orderNumber": "SO-1",
        "customerNumber": "C1001",
        "shipDate": "2026-11-22",
        "status": "shipped",
        "carrier": "DHL",
        "lineCount": 2,
        "lastModified": "2026-11-22T08:00:00Z",
    },
    "purchaseorder/synced": {
        "purchaseOrderNumber": "PO-1",
        "vendorNumber": "V-1",
        "orderDate": "2026-11-20",
        "status": "approved",
        "totalAmount": 5000,
        "currency": "USD",
        "lastModified": "2026-11-20T09:41:56Z",
    },
    "receipt/synced": {
        "receiptNumber": "R-1",
        "purchaseOrderNumber": "PO-1",
        "vendorNumber": "V-1",
        "warehouse": "MAIN",
        "receiptDate": "2026-11-25",
        "lastModified": "2026-11-25T12:00:00+01:00",
    },
    "vendor/synced": {
        "vendorNumber": "V-1",
        "vendorName": "Bolt & Nut Ltd",
        "status": "active",
        "currency": "GBP",
        "country": "GB",
        "email": "ap@bolt.example",
        "phone": "+44 20 0000 0000",
        "lastModified": "2026-11-20T09:41:56Z",
    },
    "journalentry/synced": {
        "entryNumber": "JE-1",
        "journal": "GL",
        "postingDate": "2026-11-30",
        "amount": -12.5,
        "currency": "EUR",
        "description": "accrual",
        "lastModified": "2026-11-30T18:00:00Z",
    },
    "order/deleted": {"orderNumber": "SO-1", "deletionDate": "2026-11-20T09:41:56Z"},
    "invoice/deleted": {"invoiceNumber": "INV-1", "deletionDate": "2026-11-20T09:41:56Z"},
    "inventory/deleted": {"partNumber": "P-100", "warehouse": "MAIN", "deletionDate": "2026-11-20T09:41:56Z"},
    "inventory/low-stock": {
        "partNumber": "P-100",
        "warehouse": "MAIN",
        "key": "P-100|MAIN",
        "available": 9,
        "threshold": "data.available <= 10",
        "triggeringEventId": "evt-inventory/synced",
        "rule": "low-stock",
    },
    "inventory/stock-restored": {
        "partNumber": "P-100",
        "warehouse": "MAIN",
        "key": "P-100|MAIN",
        "available": 25,
        "threshold": "data.available > 20",
        "triggeringEventId": "evt-inventory/synced",
        "rule": "low-stock",
    },
    "delivery/deleted": {"deliveryNumber": "D-1", "deletionDate": "2026-11-20T09:41:56Z"},
    "purchaseorder/deleted": {"purchaseOrderNumber": "PO-1", "deletionDate": "2026-11-20T09:41:56Z"},
    "receipt/deleted": {"receiptNumber": "R-1", "deletionDate": "2026-11-20T09:41:56Z"},
    "vendor/deleted": {"vendorNumber": "V-1", "deletionDate": "2026-11-20T09:41:56Z"},
    "journalentry/deleted": {"entryNumber": "JE-1", "deletionDate": "2026-11-20T09:41:56Z"},
}

RELAY_KEY_FIELDS = {
    "delivery/synced": ["deliveryNumber"],
    "purchaseorder/synced": ["purchaseOrderNumber"],
    "receipt/synced": ["receiptNumber"],
    "vendor/synced": ["vendorNumber"],
    "journalentry/synced": ["entryNumber"],
    "order/deleted": ["orderNumber"],
    "invoice/deleted": ["invoiceNumber"],
    "inventory/deleted": ["partNumber", "warehouse"],
    "inventory/low-stock": ["partNumber", "warehouse", "key", "threshold", "triggeringEventId", "rule"],
    "inventory/stock-restored": ["partNumber", "warehouse", "key", "threshold", "triggeringEventId", "rule"],
    "delivery/deleted": ["deliveryNumber"],
    "purchaseorder/deleted": ["purchaseOrderNumber"],
    "receipt/deleted": ["receiptNumber"],
    "vendor/deleted": ["vendorNumber"],
    "journalentry/deleted": ["entryNumber"],
}


def event(channel: str, **top: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "eventId": f"evt-{channel}",
        "documentType": ALL_CHANNELS[channel],
        "tenantId": "HALLORAN",
        "timestamp": "2026-11-20T09:41:56Z",
        "logicalId": "lid://infor.m3.m3",
        "data": dict(VALID_DATA[channel]),
    }
    payload.update(top)
    return payload


@pytest.fixture(scope="module")
def registry() -> SpecRegistry:
    return load_specs(builtin_spec_paths())


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# --- the shipped documents -----------------------------------------------------------------------------------


def test_builtin_paths_are_the_two_shipped_documents() -> None:
    paths = builtin_spec_paths()
    assert [p.name for p in paths] == ["ion-events.yaml", "relay-events.yaml"]
    assert all(p.is_file() for p in paths)


def test_shipped_documents_load_together_with_every_channel(registry: SpecRegistry) -> None:
    assert set(registry.channels) == set(ALL_CHANNELS)
    assert len(registry.documents) == 2
    sources = {name: Path(spec.source_file).name for name, spec in registry.channels.items()}
    assert {n for n, f in sources.items() if f == "ion-events.yaml"} == set(ION_CHANNELS)
    assert {n for n, f in sources.items() if f == "relay-events.yaml"} == set(RELAY_CHANNELS)


@pytest.mark.parametrize(("channel", "document_type"), ALL_CHANNELS.items())
def test_document_type_maps_to_its_channel(registry: SpecRegistry, channel: str, document_type: str) -> None:
    assert registry.channel_for_document_type(document_type) == channel
    spec = registry.channels[channel]
    assert (spec.message_name, spec.document_type) == (document_type, document_type)
    assert registry.has_channel(channel)


def test_unknown_names_are_not_found(registry: SpecRegistry) -> None:
    assert registry.channel_for_document_type("SyncNothing") is None
    assert not registry.has_channel("nothing/synced")
    with pytest.raises(KeyError):
        registry.validate("nothing/synced", event("order/synced"))


def test_relay_document_types_do_not_collide_with_ion() -> None:
    ion, relay = (load_specs([p]) for p in builtin_spec_paths())
    ion_types = {dt for spec in ion.channels.values() for dt in spec.document_types}
    relay_types = {dt for spec in relay.channels.values() for dt in spec.document_types}
    assert ion_types == set(ION_CHANNELS.values())
    assert relay_types == set(RELAY_CHANNELS.values())
    assert not ion_types & relay_types


@pytest.mark.parametrize("channel", ALL_CHANNELS)
def test_valid_payload_passes(registry: SpecRegistry, channel: str) -> None:
    assert registry.validate(channel, event(channel)) == []


@pytest.mark.parametrize("channel", ALL_CHANNELS)
def test_payload_of_another_channel_is_refused_on_document_type(registry: SpecRegistry, channel: str) -> None:
    other = "order/synced" if channel != "order/synced" else "invoice/synced"
    issues = registry.validate(channel, event(channel, documentType=ALL_CHANNELS[other]))
    assert [i.path for i in issues] == ["$.documentType"]


@pytest.mark.parametrize("field", ["eventId", "documentType", "timestamp", "data"])
def test_missing_envelope_field_is_named_at_the_root(registry: SpecRegistry, field: str) -> None:
    payload = event("order/synced")
    del payload[field]
    issues = registry.validate("order/synced", payload)
    assert len(issues) == 1
    assert issues[0].path == "$"
    assert field in issues[0].message
    assert "required" in issues[0].message


@pytest.mark.parametrize(("channel", "keys"), RELAY_KEY_FIELDS.items())
def test_relay_channels_require_their_key_fields(registry: SpecRegistry, channel: str, keys: list[str]) -> None:
    payload = event(channel)
    for key in keys:
        del payload["data"][key]
    issues = registry.validate(channel, payload)
    assert [i.path for i in issues] == ["$.data"] * len(keys)
    assert sorted(k for k in keys if any(k in i.message for i in issues)) == sorted(keys)


def test_optional_envelope_fields_may_be_absent(registry: SpecRegistry) -> None:
    payload = event("delivery/synced")
    del payload["tenantId"], payload["logicalId"]
    assert registry.validate("delivery/synced", payload) == []


@pytest.mark.parametrize(
    ("channel", "field", "value", "path"),
    [
        ("order/synced", "totalAmount", "120.50", "$.data.totalAmount"),
        ("order/synced", "orderNumber", 123, "$.data.orderNumber"),
        ("order/synced", "lineCount", 2.5, "$.data.lineCount"),
        ("purchaseorder/synced", "totalAmount", "5000", "$.data.totalAmount"),
        ("delivery/synced", "lineCount", "2", "$.data.lineCount"),
        ("journalentry/synced", "amount", None, "$.data.amount"),
    ],
)
def test_wrong_type_is_reported_at_its_path(
    registry: SpecRegistry, channel: str, field: str, value: Any, path: str
) -> None:
    payload = event(channel)
    payload["data"][field] = value
    issues = registry.validate(channel, payload)
    assert [i.path for i in issues] == [path]
    assert "type" in issues[0].message


@pytest.mark.parametrize(
    ("channel", "field", "value"),
    [
        ("order/synced", "orderDate", "2026-13-45"),
        ("order/synced", "orderDate", "20.11.2026"),
        ("delivery/synced", "shipDate", "2026-02-30"),
        ("delivery/synced", "lastModified", "2026-11-20 09:41"),
        ("journalentry/synced", "lastModified", "2026-11-20T25:00:00Z"),
        ("inventory/deleted", "deletionDate", "yesterday"),
        ("inventory/synced", "lastTransactionDate", "2026-11-20"),
    ],
)
def test_bad_dates_are_refused(registry: SpecRegistry, channel: str, field: str, value: str) -> None:
    payload = event(channel)
    payload["data"][field] = value
    issues = registry.validate(channel, payload)
    assert [i.path for i in issues] == [f"$.data.{field}"]
    assert value in issues[0].message


def test_bad_envelope_timestamp_is_refused(registry: SpecRegistry) -> None:
    issues = registry.validate("vendor/synced", event("vendor/synced", timestamp="2026-11-20T09:41:56"))
    assert [i.path for i in issues] == ["$.timestamp"]


def test_all_issues_are_reported_sorted_by_path(registry: SpecRegistry) -> None:
    payload = event("order/synced", tenantId=7)
    payload["data"].update(totalAmount="x", orderDate="2026-13-45", currency=1)
    issues = registry.validate("order/synced", payload)
    assert [i.path for i in issues] == [
        "$.data.currency",
        "$.data.orderDate",
        "$.data.totalAmount",
        "$.tenantId",
    ]
    assert all(isinstance(i, ValidationIssue) and len(i.message) <= 200 for i in issues)


@pytest.mark.parametrize("payload", [None, [], "text", 3])
def test_non_object_payload_is_one_issue_at_the_root(registry: SpecRegistry, payload: Any) -> None:
    issues = registry.validate("order/synced", payload)
    assert [i.path for i in issues] == ["$"]


# --- small documents ------------------------------------------------------------------------------------------

ASYNCAPI_30 = """\
asyncapi: 3.0.0
info: {title: Warehouse, version: 1.0.0}
channels:
  pickList:
    address: picklist/released
    messages:
      PickListReleased:
        $ref: '#/components/messages/PickListReleased'
  shipped:
    messages:
      Shipped:
        name: ShipConfirmed
        payload:
          schemaFormat: application/schema+json;version=draft-07
          schema:
            type: object
            required: [documentType, shipmentId]
            properties:
              documentType: {const: ShipConfirmed}
              shipmentId: {type: string}
operations:
  releasePickList:
    action: send
    channel: {$ref: '#/channels/pickList'}
    messages: [{$ref: '#/channels/pickList/messages/PickListReleased'}]
components:
  messages:
    PickListReleased:
      name: PickListReleased
      payload:
        $ref: '#/components/schemas/PickList'
  schemas:
    PickList:
      type: object
      required: [documentType, pickListId, lines]
      properties:
        documentType: {type: string, enum: [PickListReleased]}
        pickListId: {type: string}
        releasedAt: {type: string, format: date-time}
        lines:
          type: array
          items: {$ref: '#/components/schemas/Line'}
    Line:
      type: object
      required: [sku, qty]
      properties:
        sku: {type: string}
        qty: {type: integer, minimum: 1}
"""


def test_asyncapi_30_document_loads(tmp_path: Path) -> None:
    registry = load_specs([write(tmp_path, "wh.yaml", ASYNCAPI_30)])
    assert set(registry.channels) == {"picklist/released", "shipped"}
    assert registry.channel_for_document_type("PickListReleased") == "picklist/released"
    assert registry.channel_for_document_type("ShipConfirmed") == "shipped"
    assert registry.channels["picklist/released"].message_name == "PickListReleased"
    good = {"documentType": "PickListReleased", "pickListId": "PL-1", "lines": [{"sku": "A", "qty": 2}]}
    assert registry.validate("picklist/released", good) == []
    bad = {**good, "lines": [{"sku": "A", "qty": 2}, {"sku": "B", "qty": 0}], "releasedAt": "soon"}
    assert [i.path for i in registry.validate("picklist/released", bad)] == ["$.lines[1].qty", "$.releasedAt"]
    assert registry.validate("shipped", {"documentType": "ShipConfirmed", "shipmentId": "S1"}) == []
    assert [i.path for i in registry.validate("shipped", {"documentType": "Other", "shipmentId": "S1"})] == [
        "$.documentType"
    ]


def test_asyncapi_30_avro_payload_is_refused(tmp_path: Path) -> None:
    text = ASYNCAPI_30.replace("application/schema+json;version=draft-07", "application/vnd.apache.avro;version=1.9.0")
    with pytest.raises(SpecError, match=r"wh\.yaml.*schemaFormat.*avro"):
        load_specs([write(tmp_path, "wh.yaml", text)])


ONE_OF_26 = """\
asyncapi: 2.6.0
info: {title: Mixed, version: 1.0.0}
channels:
  item/changed:
    subscribe:
      message:
        oneOf:
          - $ref: '#/components/messages/ItemCreated'
          - $ref: '#/components/messages/ItemRetired'
components:
  messages:
    ItemCreated:
      name: ItemCreated
      payload:
        type: object
        required: [documentType, itemNumber, price]
        properties:
          documentType: {type: string, enum: [ItemCreated, ItemCopied]}
          itemNumber: {type: string}
          price: {type: number}
    ItemRetired:
      name: ItemRetired
      payload:
        type: object
        required: [documentType, itemNumber, retiredOn]
        properties:
          documentType: {type: string, const: ItemRetired}
          itemNumber: {type: string}
          retiredOn: {type: string, format: date}
"""


def test_one_of_channel_maps_every_document_type(tmp_path: Path) -> None:
    registry = load_specs([write(tmp_path, "mixed.yaml", ONE_OF_26)])
    assert set(registry.channels) == {"item/changed"}
    assert [m.name for m in registry.channels["item/changed"].messages] == ["ItemCreated", "ItemRetired"]
    assert {dt: registry.channel_for_document_type(dt) for dt in ("ItemCreated", "ItemCopied", "ItemRetired")} == {
        "ItemCreated": "item/changed",
        "ItemCopied": "item/changed",
        "ItemRetired": "item/changed",
    }


def test_one_of_channel_validates_against_the_message_of_the_document_type(tmp_path: Path) -> None:
    registry = load_specs([write(tmp_path, "mixed.yaml", ONE_OF_26)])
    created = {"documentType": "ItemCreated", "itemNumber": "I1", "price": 3}
    retired = {"documentType": "ItemRetired", "itemNumber": "I1", "retiredOn": "2026-01-31"}
    assert registry.validate("item/changed", created) == []
    assert registry.validate("item/changed", retired) == []
    # The issues come from ItemRetired's schema only, not from the closer-looking ItemCreated.
    issues = registry.validate("item/changed", {**retired, "retiredOn": "2026-01-32", "price": 3})
    assert [(i.path, "date" in i.message) for i in issues] == [("$.retiredOn", True)]
    issues = registry.validate("item/changed", {"documentType": "ItemCopied", "itemNumber": "I1"})
    assert [i.path for i in issues] == ["$"]
    assert "price" in issues[0].message


def test_one_of_channel_without_known_document_type_needs_exactly_one_match(tmp_path: Path) -> None:
    text = ONE_OF_26.replace("required: [documentType, itemNumber, price]", "required: [itemNumber, price]").replace(
        "required: [documentType, itemNumber, retiredOn]", "required: [itemNumber, retiredOn]"
    )
    registry = load_specs([write(tmp_path, "mixed.yaml", text)])
    assert registry.validate("item/changed", {"itemNumber": "I1", "price": 3}) == []
    both = registry.validate("item/changed", {"itemNumber": "I1", "price": 3, "retiredOn": "2026-01-31"})
    assert [i.path for i in both] == ["$"]
    assert "more than one message" in both[0].message
    neither = registry.validate("item/changed", {"itemNumber": "I1"})
    assert neither
    assert all(i.path == "$" and "required" in i.message for i in neither)


def test_json_pointer_escapes_and_nested_refs_resolve(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "esc.yaml",
        """\
        asyncapi: 2.6.0
        info: {title: Esc, version: 1.0.0}
        channels:
          a/b:
            publish:
              message: {$ref: '#/components/messages/M'}
        components:
          messages:
            M:
              name: M
              payload: {$ref: '#/components/schemas/a~1b~0c'}
          schemas:
            a/b~c:
              type: object
              properties:
                documentType: {enum: [M]}
                country: {$ref: '#/components/schemas/Country'}
            Country: {type: string, enum: [NO, SE]}
        """,
    )
    document = load_spec_document(path)
    assert "$ref" not in str(document)
    registry = load_specs([path])
    assert registry.channel_for_document_type("M") == "a/b"
    assert registry.validate("a/b", {"country": "NO"}) == []
    assert [i.path for i in registry.validate("a/b", {"country": "DK"})] == ["$.country"]


CYCLE = """\
asyncapi: 2.6.0
info: {title: Cycle, version: 1.0.0}
channels:
  node/synced:
    subscribe:
      message:
        name: Node
        payload: {$ref: '#/components/schemas/Node'}
components:
  schemas:
    Node:
      type: object
      properties:
        children:
          type: array
          items: {$ref: '#/components/schemas/Node'}
"""


def test_ref_cycle_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"cycle\.yaml.*cycle.*#/components/schemas/Node"):
        load_specs([write(tmp_path, "cycle.yaml", CYCLE)])


def test_indirect_ref_cycle_is_a_spec_error(tmp_path: Path) -> None:
    text = CYCLE.replace(
        "items: {$ref: '#/components/schemas/Node'}", "items: {$ref: '#/components/schemas/Other'}"
    ).replace("components:\n  schemas:\n", "components:\n  schemas:\n    Other: {$ref: '#/components/schemas/Node'}\n")
    with pytest.raises(SpecError, match="cycle"):
        load_specs([write(tmp_path, "cycle2.yaml", text)])


def test_missing_ref_names_the_pointer(tmp_path: Path) -> None:
    text = CYCLE.replace("payload: {$ref: '#/components/schemas/Node'}", "payload: {$ref: '#/components/schemas/Nope'}")
    with pytest.raises(SpecError) as caught:
        load_specs([write(tmp_path, "missing.yaml", text)])
    message = str(caught.value)
    assert "missing.yaml" in message
    assert "#/components/schemas/Nope" in message


def test_external_ref_is_refused_clearly(tmp_path: Path) -> None:
    text = CYCLE.replace("payload: {$ref: '#/components/schemas/Node'}", "payload: {$ref: 'common.yaml#/Node'}")
    with pytest.raises(SpecError, match=r"ext\.yaml.*common\.yaml#/Node.*external"):
        load_specs([write(tmp_path, "ext.yaml", text)])


def test_invalid_yaml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.yaml", "asyncapi: 2.6.0\nchannels: {a: [\n")
    with pytest.raises(SpecError, match=r"broken\.yaml.*YAML"):
        load_specs([path])


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"absent\.yaml.*cannot read"):
        load_specs([tmp_path / "absent.yaml"])


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("openapi: 3.1.0\nchannels: {a: {}}\n", "not an AsyncAPI 2.x or 3.x"),
        ("asyncapi: 1.2.0\nchannels: {a: {}}\n", "not an AsyncAPI 2.x or 3.x"),
        ("- just a list\n", "not an AsyncAPI document"),
        ("asyncapi: 2.6.0\ninfo: {title: x, version: '1'}\nchannels: {}\n", "no channels"),
        ("asyncapi: 2.6.0\nchannels: {a/b: {subscribe: {operationId: x}}}\n", "no message"),
        ("asyncapi: 2.6.0\nchannels: {a/b: {subscribe: {message: {name: M}}}}\n", "no payload schema"),
    ],
)
def test_documents_that_are_not_usable_are_refused(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(SpecError, match=r"doc\.yaml") as caught:
        load_specs([write(tmp_path, "doc.yaml", text)])
    assert problem in str(caught.value)


def test_payload_schema_that_does_not_compile_is_refused(tmp_path: Path) -> None:
    text = (
        "asyncapi: 2.6.0\nchannels:\n  a/b:\n    subscribe:\n      message:\n        name: M\n"
        "        payload: {type: strin}\n"
    )
    with pytest.raises(SpecError, match=r"doc\.yaml.*'a/b'.*does not compile"):
        load_specs([write(tmp_path, "doc.yaml", text)])


def test_same_channel_with_a_different_payload_is_refused(tmp_path: Path) -> None:
    ion_path = builtin_spec_paths()[0]
    changed = ion_path.read_text().replace(
        "totalAmount:\n                type: number", "totalAmount:\n                type: string"
    )
    assert changed != ion_path.read_text()
    copy = write(tmp_path, "my-ion.yaml", changed)
    with pytest.raises(SpecError, match=r"my-ion\.yaml.*'order/synced'.*different payload.*ion-events\.yaml"):
        load_specs([ion_path, copy])


def test_same_channel_with_the_same_payload_loads_once(tmp_path: Path) -> None:
    ion_path = builtin_spec_paths()[0]
    copy = write(tmp_path, "ion-copy.yaml", ion_path.read_text())
    registry = load_specs([ion_path, copy])
    assert set(registry.channels) == set(ION_CHANNELS)
    assert registry.channels["order/synced"].source_file == str(ion_path)


def test_two_channels_claiming_one_document_type_are_refused(tmp_path: Path) -> None:
    text = (
        "asyncapi: 2.6.0\nchannels:\n"
        "  mine/synced:\n    subscribe:\n      message:\n        name: Mine\n"
        "        payload: {type: object, properties: {documentType: {enum: [SyncSalesOrder]}}}\n"
    )
    with pytest.raises(SpecError, match=r"SyncSalesOrder.*order/synced"):
        load_specs([*builtin_spec_paths(), write(tmp_path, "mine.yaml", text)])


def test_channel_spec_made_by_hand_validates() -> None:
    spec = ChannelSpec(
        name="x/y",
        message_name="X",
        document_type="X",
        payload_schema={"type": "object", "required": ["n"], "properties": {"documentType": {"const": "X"}}},
        source_file="<test>",
    )
    registry = SpecRegistry({"x/y": spec})
    assert registry.channel_for_document_type("X") == "x/y"
    assert registry.validate("x/y", {"n": 1}) == []
    assert registry.validate("x/y", {}) == [ValidationIssue("$", '"n" is a required property')]


# --- export ---------------------------------------------------------------------------------------------------


def _round_trip(registry: SpecRegistry, tmp_path: Path, version: Any) -> SpecRegistry:
    document = export_document(registry, version)
    path = tmp_path / f"export-{version}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return load_specs([path])


def _samples() -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    for channel in ALL_CHANNELS:
        out.append((channel, event(channel)))
        broken = event(channel, timestamp="not a time")
        broken["data"]["lastModified"] = 5
        del broken["eventId"]
        out.append((channel, broken))
    return out


@pytest.mark.parametrize(("version", "header"), [("2.6", "2.6.0"), ("3.0", "3.0.0")])
def test_export_round_trips(registry: SpecRegistry, tmp_path: Path, version: str, header: str) -> None:
    document = export_document(registry, version)  # type: ignore[arg-type]
    assert document["asyncapi"] == header
    assert document["info"]["title"] == "erp-relay events"
    reloaded = _round_trip(registry, tmp_path, version)
    assert set(reloaded.channels) == set(registry.channels)
    for channel, document_type in ALL_CHANNELS.items():
        assert reloaded.channel_for_document_type(document_type) == channel
        assert reloaded.channels[channel].message_name == document_type
    for channel, payload in _samples():
        assert reloaded.validate(channel, payload) == registry.validate(channel, payload)
    # Loading the export next to the documents it came from adds nothing and clashes with nothing.
    exported = tmp_path / f"export-{version}.yaml"
    assert set(load_specs([*builtin_spec_paths(), exported]).channels) == set(ALL_CHANNELS)


def test_export_30_has_send_operations_referencing_channels(registry: SpecRegistry) -> None:
    document = export_document(registry, "3.0")
    addresses = {c["address"] for c in document["channels"].values()}
    assert addresses == set(ALL_CHANNELS)
    assert len(document["operations"]) == len(ALL_CHANNELS)
    for operation in document["operations"].values():
        assert operation["action"] == "send"
        channel_key = operation["channel"]["$ref"].removeprefix("#/channels/")
        assert channel_key in document["channels"]
        for ref in operation["messages"]:
            message_key = ref["$ref"].removeprefix(f"#/channels/{channel_key}/messages/")
            assert message_key in document["channels"][channel_key]["messages"]


def test_export_26_subscribe_operations(registry: SpecRegistry) -> None:
    document = export_document(registry, "2.6")
    assert set(document["channels"]) == set(ALL_CHANNELS)
    assert all("subscribe" in c and "publish" not in c for c in document["channels"].values())
    operation_ids = [c["subscribe"]["operationId"] for c in document["channels"].values()]
    assert len(set(operation_ids)) == len(operation_ids)


@pytest.mark.parametrize("version", ["2.6", "3.0"])
def test_export_of_one_of_channel_round_trips(tmp_path: Path, version: str) -> None:
    registry = load_specs([write(tmp_path, "mixed.yaml", ONE_OF_26)])
    reloaded = _round_trip(registry, tmp_path, version)
    assert [m.name for m in reloaded.channels["item/changed"].messages] == ["ItemCreated", "ItemRetired"]
    assert reloaded.channel_for_document_type("ItemCopied") == "item/changed"
    retired = {"documentType": "ItemRetired", "itemNumber": "I1", "retiredOn": "2026-01-32"}
    assert reloaded.validate("item/changed", retired) == registry.validate("item/changed", retired) != []


def test_export_does_not_share_schemas_with_the_registry(registry: SpecRegistry) -> None:
    document = export_document(registry, "2.6")
    document["components"]["messages"]["SyncSalesOrder"]["payload"]["required"].append("extra")
    assert registry.validate("order/synced", event("order/synced")) == []
