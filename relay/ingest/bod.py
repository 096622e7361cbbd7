"""BOD XML → canonical events: a hardened parser and a table-driven, pure mapping.

A BOD (Business Object Document) arrives from outside, so it is parsed with defusedxml with every DTD
refused (hence no entities of any kind and no external references) and with a nesting-depth limit
checked while expat streams, so hostile documents fail before a tree is built.

The mapping is data (`NounMapping`, `FieldPath`): one entry per document name (`Sync.SalesOrder`),
giving the channel, the `documentType`, the element that repeats once per event (inventory lines), the
document ID element whose `variationID` versions the event, and one path per canonical field.

Path syntax of `FieldPath.path` (namespace-agnostic: only local names are compared):

* `SalesOrderHeader/DocumentID/ID` — child elements by local name, relative to the entity element
  (the noun element itself unless the mapping has an `entity_path`); the first match with text wins.
* `.../ID/@variationID` — an attribute of the selected element, as the last step.
* `Communication[ChannelCode=EMail]/URI`, `AddressLine[@sequence=1]` — keep the elements whose child
  element (or attribute) has that exact text.
* `noun:InventoryCountHeader/CountDateTime` — relative to the noun element (from an inventory line up to
  its document header); `bod:ApplicationArea/CreationDateTime` — relative to the BOD root element.
* `A | B` — alternatives, tried in order; the first one that yields a value is used.

Element paths of the default mappings (the simulator in `relay.sim.ion` generates exactly these):

* `Sync.CustomerPartyMaster` (noun `CustomerPartyMaster`, document ID `PartyIDs/ID`) → `customer/synced`:
  customerNumber `PartyIDs/ID`, customerName `Name`, status `Status/Code`, currency `CurrencyCode`,
  country `Location/Address/CountryCode`, addressLine1 `Location/Address/AddressLine`, city
  `Location/Address/CityName`, postalCode `Location/Address/PostalCode`, email
  `Communication[ChannelCode=EMail]/URI`, phone `Communication[ChannelCode=Phone]/DialNumber`,
  lastModified `LastModificationDateTime`. With `actionCode="Delete"` → `customer/deleted`: customerNumber,
  deletionDate `LastModificationDateTime | bod:ApplicationArea/CreationDateTime`.
* `Sync.SalesOrder` (document ID `SalesOrderHeader/DocumentID/ID`) → `order/synced`: orderNumber that ID,
  customerNumber `SalesOrderHeader/CustomerParty/PartyIDs/ID`, orderDate `SalesOrderHeader/OrderDateTime`,
  orderStatus `SalesOrderHeader/Status/Code`, totalAmount `SalesOrderHeader/TotalAmount`, currency
  `SalesOrderHeader/TotalAmount/@currencyID`, lineCount = number of `SalesOrderLine`.
* `Sync.Invoice` (document ID `InvoiceHeader/DocumentID/ID`) → `invoice/synced`: invoiceNumber that ID,
  customerNumber `InvoiceHeader/CustomerParty/PartyIDs/ID | InvoiceHeader/BillToParty/PartyIDs/ID`,
  invoiceDate `InvoiceHeader/DocumentDateTime`, dueDate `InvoiceHeader/PaymentTerm/DueDateTime`, amount
  `InvoiceHeader/TotalAmount`, currency `InvoiceHeader/TotalAmount/@currencyID`, status
  `InvoiceHeader/Status/Code`.
* `Sync.ItemBalance` (document ID `ItemBalanceHeader/DocumentID/ID`; one event per `ItemBalanceLine`) →
  `inventory/synced`: partNumber `ItemID/ID`, warehouse `WarehouseLocation/ID`, onHand `OnHandQuantity`,
  allocated `AllocatedQuantity`, available `AvailableQuantity`, unitOfMeasure `OnHandQuantity/@unitCode`,
  lastTransactionDate `LastTransactionDateTime`.
* `Sync.InventoryCount` (document ID `InventoryCountHeader/DocumentID/ID`; one event per
  `InventoryCountLine`) → `inventory/synced`: partNumber `Item/ItemID/ID`, warehouse `WarehouseLocation/ID`,
  onHand `CountQuantity`, allocated `AllocatedQuantity`, available `AvailableQuantity`, unitOfMeasure
  `CountQuantity/@unitCode`, lastTransactionDate `LastTransactionDateTime | noun:InventoryCountHeader/CountDateTime`.

`ItemBalance` is not an OAGIS 9 standard noun; Infor applications publish item balances under
product-specific nouns, so its layout here follows OAGIS conventions and any real variant is mapped with
`parse_mapping_overrides` rather than code.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import lru_cache
from types import MappingProxyType
from typing import Any, Literal, cast, get_args
from xml.etree.ElementTree import Element, ParseError, TreeBuilder, tostring

from defusedxml import DefusedXmlException  # type: ignore[import-untyped, unused-ignore]
from defusedxml.ElementTree import XMLParser as DefusedXMLParser  # type: ignore[import-untyped, unused-ignore]

from relay.events import TimestampOutOfRange, parse_ts

__all__ = [
    "DEFAULT_MAPPINGS",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_DEPTH",
    "BodError",
    "CanonicalEvent",
    "FieldPath",
    "FieldType",
    "NounMapping",
    "ParsedBod",
    "UnmappedDocument",
    "map_bod",
    "mapped_document_names",
    "parse_bod",
    "parse_mapping_overrides",
]

DEFAULT_MAX_DEPTH = 64
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
_FEED_CHUNK_BYTES = 64 * 1024
_MAX_QUOTED_CHARS = 60
_MAX_NUMBER_CHARS = 64
_INT64_LIMIT = 2**63

FieldType = Literal["str", "number", "integer", "date", "date-time", "count"]
_FIELD_TYPES: frozenset[str] = frozenset(get_args(FieldType))

# The verbs OAGIS defines; used only when the DataArea's verb element does not name the verb.
_KNOWN_VERBS = (
    "Acknowledge",
    "Cancel",
    "Change",
    "Get",
    "Load",
    "Notify",
    "Post",
    "Process",
    "Respond",
    "Show",
    "Sync",
    "Update",
)


class BodError(ValueError):
    """A BOD that is malformed, forbidden (DTD, entities, too deep, too large) or lacks what the mapping needs."""


class UnmappedDocument(BodError):
    """A well-formed BOD whose document name (`Verb.Noun`) has no mapping."""

    def __init__(self, document_name: str) -> None:
        super().__init__(f"no mapping for document {document_name!r}")
        self.document_name = document_name


# --- parsing -------------------------------------------------------------------------------------


class _TooDeep(Exception):
    def __init__(self, depth: int) -> None:
        super().__init__(depth)
        self.depth = depth


class _DepthLimitedBuilder:
    """A TreeBuilder target that refuses to open an element deeper than `max_depth`."""

    def __init__(self, max_depth: int) -> None:
        self._builder = TreeBuilder()
        self._max_depth = max_depth
        self._depth = 0

    def start(self, tag: str, attrs: dict[str, str]) -> Element:
        self._depth += 1
        if self._depth > self._max_depth:
            raise _TooDeep(self._depth)
        return self._builder.start(tag, attrs)

    def end(self, tag: str) -> Element:
        self._depth -= 1
        return self._builder.end(tag)

    def data(self, text: str) -> None:
        self._builder.data(text)

    def close(self) -> Element:
        return self._builder.close()


def _parse_xml(xml: bytes, max_depth: int) -> Element:
    builder = _DepthLimitedBuilder(max_depth)
    # forbid_dtd refuses any DOCTYPE, which rules out entity declarations and external subsets at once.
    parser: Any = DefusedXMLParser(target=builder, forbid_dtd=True, forbid_entities=True, forbid_external=True)

    def where() -> str:
        expat = getattr(parser, "parser", None)
        line = getattr(expat, "CurrentLineNumber", None)
        column = getattr(expat, "CurrentColumnNumber", None)
        return f" at line {line}, column {column}" if line is not None else ""

    view = memoryview(xml)
    try:
        # Fed in chunks so the depth check fires while streaming, before the rest is read.
        for start in range(0, len(view), _FEED_CHUNK_BYTES):
            parser.feed(bytes(view[start : start + _FEED_CHUNK_BYTES]))
        root = parser.close()
    except _TooDeep:
        raise BodError(f"XML nests deeper than {max_depth} elements{where()}") from None
    except DefusedXmlException as exc:
        raise BodError(f"forbidden XML construct ({type(exc).__name__}){where()}") from None
    except ParseError as exc:
        line, column = getattr(exc, "position", (None, None))
        reason = str(exc).split(":", 1)[0]
        raise BodError(f"malformed XML at line {line}, column {column}: {reason}") from None
    except LookupError:
        raise BodError(f"unknown or unsupported character encoding{where()}") from None
    except (ValueError, UnicodeError) as exc:
        raise BodError(f"malformed XML{where()}: {type(exc).__name__}") from None
    if not isinstance(root, Element):
        raise BodError("malformed XML: no root element")
    return root


def _local(name: str) -> str:
    return name.rpartition("}")[2]


def _child(element: Element, name: str) -> Element | None:
    for child in element:
        if _local(child.tag) == name:
            return child
    return None


def _children(element: Element, name: str) -> Iterator[Element]:
    return (child for child in element if _local(child.tag) == name)


def _text_at(element: Element | None, *names: str) -> str | None:
    for name in names:
        if element is None:
            return None
        element = _child(element, name)
    if element is None:
        return None
    text = (element.text or "").strip()
    return text or None


def _attr(element: Element, name: str) -> str | None:
    for key, value in element.attrib.items():
        if _local(key) == name:
            return value
    return None


def _quote(value: str) -> str:
    shown = value if len(value) <= _MAX_QUOTED_CHARS else value[:_MAX_QUOTED_CHARS] + "…"
    return repr(shown)


@dataclass(frozen=True, slots=True, eq=False)
class ParsedBod:
    """A parsed BOD: its root element and the facts of its ApplicationArea and verb.

    Attributes:
        root: The root element (`SyncSalesOrder`, any namespace).
        verb: `Sync`, `Process`, … (from the root tag and the DataArea's verb element).
        noun: `SalesOrder`, `CustomerPartyMaster`, …
        noun_elements: Every `DataArea/<noun>` element (OAGIS allows several per BOD).
        logical_id: `ApplicationArea/Sender/LogicalID`, if present.
        creation_datetime: `ApplicationArea/CreationDateTime` in UTC, if present.
        bod_id: `ApplicationArea/BODID`, if present.
        tenant_id: `DataArea/<Verb>/TenantID`, if present.
        accounting_entity_id: `DataArea/<Verb>/AccountingEntityID`, if present.
        location_id: `DataArea/<Verb>/LocationID`, if present.
        action_code: `DataArea/<Verb>/ActionCriteria/ActionExpression/@actionCode` (`Add`, `Replace`,
            `Delete`, `Change`), if present.
        confirmation_code: `ApplicationArea/Sender/ConfirmationCode` (`Never`, `OnError`, `Always`), if
            present: whether the sender wants a ConfirmBOD back.
        application_area: The `ApplicationArea` element, if present (a ConfirmBOD quotes it).
    """

    root: Element
    verb: str
    noun: str
    noun_elements: tuple[Element, ...]
    logical_id: str | None
    creation_datetime: datetime | None
    bod_id: str | None
    tenant_id: str | None
    accounting_entity_id: str | None
    location_id: str | None
    action_code: str | None
    confirmation_code: str | None = None
    application_area: Element | None = None

    @property
    def document_name(self) -> str:
        """`Verb.Noun`, e.g. `Sync.SalesOrder`: how IMS and the mappings name a document."""
        return f"{self.verb}.{self.noun}"


def _split_root(root_name: str, verb_element: Element | None) -> tuple[str, str]:
    candidates: list[str] = []
    if verb_element is not None:
        candidates.append(_local(verb_element.tag))
    candidates.extend(_KNOWN_VERBS)
    for verb in candidates:
        noun = root_name[len(verb) :]
        if root_name.startswith(verb) and noun[:1].isupper():
            return verb, noun
    raise BodError(f"root element <{root_name[:_MAX_QUOTED_CHARS]}> is not a BOD (no Verb+Noun name)")


def parse_bod(xml: bytes, *, max_depth: int = DEFAULT_MAX_DEPTH, max_bytes: int = DEFAULT_MAX_BYTES) -> ParsedBod:
    """Parse BOD XML safely and read its envelope.

    Args:
        xml: The document bytes (encoding from the XML declaration, UTF-8 by default).
        max_depth: Deepest element nesting accepted; checked while parsing, before the tree is built.
        max_bytes: Largest document accepted.

    Returns:
        The parsed BOD. Namespaces are ignored: elements are matched by local name.

    Raises:
        BodError: The input is too large, not well-formed, contains a DTD (so any entity or external
            reference), nests too deeply, is not a `VerbNoun` document with a DataArea holding its noun,
            or has an unreadable CreationDateTime. The message says what and where, never the input.
    """
    if len(xml) > max_bytes:
        raise BodError(f"document is {len(xml)} bytes, more than the limit of {max_bytes}")
    root = _parse_xml(xml, max_depth)
    root_name = _local(root.tag)
    data_area = _child(root, "DataArea")
    if data_area is None:
        raise BodError(f"<{root_name[:_MAX_QUOTED_CHARS]}> has no DataArea")
    verb_element = next(iter(data_area), None)
    verb, noun = _split_root(root_name, verb_element)
    verb_block = _child(data_area, verb)
    nouns = tuple(_children(data_area, noun))
    if not nouns:
        raise BodError(f"{verb}.{noun}: DataArea has no <{noun}> element")
    application_area = _child(root, "ApplicationArea")
    created_text = _text_at(application_area, "CreationDateTime")
    created: datetime | None = None
    if created_text is not None:
        try:
            created = _parse_datetime(created_text)
        except ValueError:
            raise BodError(
                f"{verb}.{noun}: ApplicationArea/CreationDateTime {_quote(created_text)} "
                + _date_time_problem(created_text)
            ) from None
    action_code: str | None = None
    if verb_block is not None:
        criteria = _child(verb_block, "ActionCriteria")
        expression = _child(criteria, "ActionExpression") if criteria is not None else None
        if expression is not None:
            action_code = (_attr(expression, "actionCode") or "").strip() or None
    return ParsedBod(
        root=root,
        verb=verb,
        noun=noun,
        noun_elements=nouns,
        logical_id=_text_at(application_area, "Sender", "LogicalID"),
        creation_datetime=created,
        bod_id=_text_at(application_area, "BODID"),
        tenant_id=_text_at(verb_block, "TenantID"),
        accounting_entity_id=_text_at(verb_block, "AccountingEntityID"),
        location_id=_text_at(verb_block, "LocationID"),
        action_code=action_code,
        confirmation_code=_text_at(application_area, "Sender", "ConfirmationCode"),
        application_area=application_area,
    )


# --- paths -----------------------------------------------------------------------------------------

_NAME = r"[A-Za-z_][\w.\-]*"
_STEP_RE = re.compile(rf"^(?P<name>{_NAME})(?:\[(?P<pred>@?{_NAME})=(?P<value>[^\]]*)\])?$")
_ATTR_RE = re.compile(rf"^@(?P<name>{_NAME})$")
Anchor = Literal["entity", "noun", "bod"]


@dataclass(frozen=True, slots=True)
class _Step:
    name: str
    predicate: str | None = None
    value: str | None = None

    def matches(self, element: Element) -> bool:
        if _local(element.tag) != self.name:
            return False
        if self.predicate is None:
            return True
        if self.predicate.startswith("@"):
            return (_attr(element, self.predicate[1:]) or "").strip() == self.value
        return any((c.text or "").strip() == self.value for c in _children(element, self.predicate))


@dataclass(frozen=True, slots=True)
class _Route:
    anchor: Anchor
    steps: tuple[_Step, ...]
    attribute: str | None

    def elements(self, context: _Context) -> list[Element]:
        found = [context.start(self.anchor)]
        for step in self.steps:
            found = [child for element in found for child in element if step.matches(child)]
            if not found:
                break
        return found


@lru_cache(maxsize=512)
def _compile_path(path: str) -> tuple[_Route, ...]:
    if not path.strip():
        raise ValueError("path is empty")
    routes = []
    for alternative in path.split("|"):
        text = alternative.strip()
        anchor: Anchor = "entity"
        for prefix in ("noun:", "bod:"):
            if text.startswith(prefix):
                anchor = cast(Anchor, prefix[:-1])
                text = text[len(prefix) :]
        if not text:
            raise ValueError(f"path {path!r} has an empty alternative")
        parts = text.split("/")
        attribute = None
        attr_match = _ATTR_RE.match(parts[-1])
        if attr_match:
            attribute = attr_match.group("name")
            parts = parts[:-1]
        steps = []
        for part in parts:
            step_match = _STEP_RE.match(part)
            if not step_match:
                raise ValueError(f"path {path!r}: bad step {part!r}")
            value = step_match.group("value")
            if value is not None and len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            steps.append(_Step(step_match.group("name"), step_match.group("pred"), value))
        if not steps and attribute is None:
            raise ValueError(f"path {path!r} selects nothing")
        routes.append(_Route(anchor, tuple(steps), attribute))
    return tuple(routes)


@dataclass(frozen=True, slots=True)
class _Context:
    entity: Element
    noun: Element
    bod: Element

    def start(self, anchor: Anchor) -> Element:
        return self.entity if anchor == "entity" else self.noun if anchor == "noun" else self.bod


@dataclass(frozen=True)
class FieldPath:
    """Where a canonical field is found in the BOD, and how its text is converted.

    Attributes:
        path: A path in the syntax described in this module's docstring.
        type: `str`; `number` (int or float); `integer`; `date` (`YYYY-MM-DD`, the date as written);
            `date-time` (ISO 8601 in UTC with `Z`); `count` (how many elements the path selects).
    """

    path: str
    type: FieldType = "str"

    def __post_init__(self) -> None:
        if not isinstance(self.path, str):
            raise ValueError(f"path must be a string, not {type(self.path).__name__}")
        if self.type not in _FIELD_TYPES:
            raise ValueError(f"type {self.type!r} is not one of {', '.join(sorted(_FIELD_TYPES))}")
        routes = _compile_path(self.path)
        if self.type == "count" and any(r.attribute for r in routes):
            raise ValueError(f"path {self.path!r}: a count cannot end in an attribute")

    def _extract(self, context: _Context, where: str) -> Any:
        """The converted value, or None when the BOD does not have it; BodError when it is unreadable."""
        routes = _compile_path(self.path)
        if self.type == "count":
            for route in routes:
                count = len(route.elements(context))
                if count:
                    return count
            return 0
        raw = self._raw_text(context)
        return None if raw is None else _convert(raw, self.type, where)

    def _raw_text(self, context: _Context) -> str | None:
        for route in _compile_path(self.path):
            for element in route.elements(context):
                raw = _attr(element, route.attribute) if route.attribute else element.text
                text = (raw or "").strip()
                if text:
                    return text
        return None


_NUMBER_RE = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_INTEGER_RE = re.compile(r"^[+-]?\d+(\.0*)?$")
_DATE_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:$|T)")


def _parse_datetime(text: str) -> datetime:
    # OAGIS date-times without an offset are taken as UTC, the ION convention (parse_ts does the same). An
    # instant outside the years 0001-9999 in UTC is a ValueError (TimestampOutOfRange), never an OverflowError.
    return parse_ts(text)


def _date_time_problem(text: str) -> str:
    try:
        _parse_datetime(text)
    except TimestampOutOfRange:
        return "is outside the years 0001-9999 in UTC"
    except ValueError:
        pass
    return "is not an ISO 8601 date-time"


def _format_utc(value: datetime) -> str:
    value = value.astimezone(UTC)
    # isoformat keeps four-digit years (strftime writes year 5 as "5").
    return value.isoformat(timespec="milliseconds" if value.microsecond else "seconds")[:-6] + "Z"


def _convert(raw: str, kind: FieldType, where: str) -> Any:
    if kind == "str":
        return raw
    if kind == "number":
        if len(raw) <= _MAX_NUMBER_CHARS and _NUMBER_RE.match(raw):
            if _INTEGER_RE.match(raw) and "." not in raw:
                whole = int(raw)
                if abs(whole) < _INT64_LIMIT:
                    return whole
                # orjson cannot write it as an integer, and a float would deliver another amount.
                raise BodError(f"{where}: {_quote(raw)} is beyond 64 bits and cannot be kept exactly")
            number = float(raw)
            if math.isfinite(number):
                # The JSON number written is the shortest text of the double: it must still be this amount.
                if Decimal(repr(number)) != Decimal(raw):
                    raise BodError(f"{where}: {_quote(raw)} has more digits than a JSON number keeps exactly")
                return number
        raise BodError(f"{where}: {_quote(raw)} is not a number")
    if kind == "integer":
        if len(raw) <= _MAX_NUMBER_CHARS and _INTEGER_RE.match(raw):
            whole = int(raw.split(".", 1)[0])
            if abs(whole) < _INT64_LIMIT:
                return whole
        raise BodError(f"{where}: {_quote(raw)} is not an integer (64-bit)")
    if kind == "date":
        match = _DATE_RE.match(raw)
        try:
            if match is None:
                raise ValueError(raw)
            # The business date as written: converting to UTC first could move it to the next day.
            return date.fromisoformat(match.group(1)).isoformat()
        except ValueError:
            raise BodError(f"{where}: {_quote(raw)} is not a date (YYYY-MM-DD)") from None
    try:
        return _format_utc(_parse_datetime(raw))
    except ValueError:
        raise BodError(f"{where}: {_quote(raw)} {_date_time_problem(raw)}") from None


# --- mappings --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NounMapping:
    """How one document name becomes canonical events.

    Attributes:
        channel: Target channel (`order/synced`).
        document_type: The payload's `documentType` (`SyncSalesOrder`).
        fields: Canonical `data` field → where it is in the BOD.
        key_fields: The fields that make the entity key (joined with `|`); each must be present.
        document_id_path: Path (relative to the noun element) of the document's ID element; its text and
            `variationID` attribute identify and version the document.
        entity_path: Path (relative to the noun element) of the element that repeats once per event
            (`ItemBalanceLine`); None: one event per noun element.
        on_delete: The mapping used instead when the BOD's actionCode is `Delete`; None: this one.
    """

    channel: str
    document_type: str
    fields: Mapping[str, FieldPath]
    key_fields: tuple[str, ...]
    document_id_path: str
    entity_path: str | None = None
    on_delete: NounMapping | None = None

    def __post_init__(self) -> None:
        for name, value in (("channel", self.channel), ("document_type", self.document_type)):
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{name} must be a non-empty string")
        fields = dict(self.fields)
        for name, spec in fields.items():
            if not isinstance(spec, FieldPath):
                raise ValueError(f"field {name!r}: expected a FieldPath")
        if not self.key_fields:
            raise ValueError("key_fields is empty")
        for key in self.key_fields:
            if key not in fields:
                raise ValueError(f"key field {key!r} has no path in fields")
        if not isinstance(self.document_id_path, str):
            raise ValueError("document_id_path must be a path string")
        if self.entity_path is not None and not isinstance(self.entity_path, str):
            raise ValueError("entity_path must be a path string or absent")
        for name, path in (("document_id_path", self.document_id_path), ("entity_path", self.entity_path)):
            if path is not None and any(r.attribute for r in _compile_path(path)):
                raise ValueError(f"{name} {path!r} must select elements, not an attribute")
        object.__setattr__(self, "fields", MappingProxyType(fields))
        object.__setattr__(self, "key_fields", tuple(self.key_fields))

    @property
    def channels(self) -> tuple[str, ...]:
        """Every channel this mapping can emit on (its own, then the delete mapping's)."""
        if self.on_delete is None or self.on_delete.channel == self.channel:
            return (self.channel,)
        return (self.channel, self.on_delete.channel)


def _fields(**specs: str | tuple[str, FieldType]) -> dict[str, FieldPath]:
    return {
        name: FieldPath(spec) if isinstance(spec, str) else FieldPath(spec[0], spec[1]) for name, spec in specs.items()
    }


# OAGIS samples spell the channels `Telephone` and `EMail`; Infor applications also write `Phone` and `Email`.
_EMAIL = "Communication[ChannelCode=EMail]/URI | Communication[ChannelCode=Email]/URI"
_PHONE = "Communication[ChannelCode=Telephone]/DialNumber | Communication[ChannelCode=Phone]/DialNumber"


def _deleted(channel: str, document_type: str, key: str, key_path: str) -> NounMapping:
    return NounMapping(
        channel=channel,
        document_type=document_type,
        fields=_fields(
            **{key: key_path},
            deletionDate=("LastModificationDateTime | bod:ApplicationArea/CreationDateTime", "date-time"),
        ),
        key_fields=(key,),
        document_id_path=key_path,
    )


_CUSTOMER_DELETED = NounMapping(
    channel="customer/deleted",
    document_type="DeleteCustomerPartyMaster",
    fields=_fields(
        customerNumber="PartyIDs/ID",
        deletionDate=("LastModificationDateTime | bod:ApplicationArea/CreationDateTime", "date-time"),
    ),
    key_fields=("customerNumber",),
    document_id_path="PartyIDs/ID",
)

DEFAULT_MAPPINGS: Mapping[str, NounMapping] = MappingProxyType(
    {
        "Sync.CustomerPartyMaster": NounMapping(
            channel="customer/synced",
            document_type="SyncCustomerPartyMaster",
            fields=_fields(
                customerNumber="PartyIDs/ID",
                customerName="Name",
                status="Status/Code",
                currency="CurrencyCode",
                country="Location/Address/CountryCode",
                addressLine1="Location/Address/AddressLine",
                city="Location/Address/CityName",
                postalCode="Location/Address/PostalCode",
                email=_EMAIL,
                phone=_PHONE,
                lastModified=("LastModificationDateTime", "date-time"),
            ),
            key_fields=("customerNumber",),
            document_id_path="PartyIDs/ID",
            on_delete=_CUSTOMER_DELETED,
        ),
        "Sync.SalesOrder": NounMapping(
            channel="order/synced",
            document_type="SyncSalesOrder",
            fields=_fields(
                orderNumber="SalesOrderHeader/DocumentID/ID",
                customerNumber="SalesOrderHeader/CustomerParty/PartyIDs/ID",
                orderDate=("SalesOrderHeader/OrderDateTime", "date"),
                orderStatus="SalesOrderHeader/Status/Code",
                totalAmount=("SalesOrderHeader/TotalAmount", "number"),
                currency="SalesOrderHeader/TotalAmount/@currencyID",
                lineCount=("SalesOrderLine", "count"),
            ),
            key_fields=("orderNumber",),
            document_id_path="SalesOrderHeader/DocumentID/ID",
        ),
        "Sync.Invoice": NounMapping(
            channel="invoice/synced",
            document_type="SyncInvoice",
            fields=_fields(
                invoiceNumber="InvoiceHeader/DocumentID/ID",
                customerNumber="InvoiceHeader/CustomerParty/PartyIDs/ID | InvoiceHeader/BillToParty/PartyIDs/ID",
                invoiceDate=("InvoiceHeader/DocumentDateTime", "date"),
                dueDate=("InvoiceHeader/PaymentTerm/DueDateTime", "date"),
                amount=("InvoiceHeader/TotalAmount", "number"),
                currency="InvoiceHeader/TotalAmount/@currencyID",
                status="InvoiceHeader/Status/Code",
            ),
            key_fields=("invoiceNumber",),
            document_id_path="InvoiceHeader/DocumentID/ID",
        ),
        "Sync.PurchaseOrder": NounMapping(
            channel="purchaseorder/synced",
            document_type="SyncPurchaseOrder",
            fields=_fields(
                purchaseOrderNumber="PurchaseOrderHeader/DocumentID/ID",
                vendorNumber="PurchaseOrderHeader/SupplierParty/PartyIDs/ID",
                orderDate=("PurchaseOrderHeader/DocumentDateTime | PurchaseOrderHeader/OrderDateTime", "date"),
                status="PurchaseOrderHeader/Status/Code",
                totalAmount=("PurchaseOrderHeader/TotalAmount", "number"),
                currency="PurchaseOrderHeader/TotalAmount/@currencyID",
                lastModified=("PurchaseOrderHeader/LastModificationDateTime", "date-time"),
            ),
            key_fields=("purchaseOrderNumber",),
            document_id_path="PurchaseOrderHeader/DocumentID/ID",
            on_delete=_deleted(
                "purchaseorder/deleted",
                "DeletePurchaseOrder",
                "purchaseOrderNumber",
                "PurchaseOrderHeader/DocumentID/ID",
            ),
        ),
        "Sync.ReceiveDelivery": NounMapping(
            channel="receipt/synced",
            document_type="SyncReceipt",
            fields=_fields(
                receiptNumber="ReceiveDeliveryHeader/DocumentID/ID",
                purchaseOrderNumber=(
                    "ReceiveDeliveryHeader/PurchaseOrderReference/DocumentID/ID"
                    " | ReceiveDeliveryLine/PurchaseOrderReference/DocumentID/ID"
                ),
                vendorNumber="ReceiveDeliveryHeader/SupplierParty/PartyIDs/ID",
                warehouse="ReceiveDeliveryHeader/ShipToParty/Location/ID | ReceiveDeliveryLine/ShipToParty/Location/ID",
                receiptDate=("ReceiveDeliveryHeader/ReceivedDateTime | ReceiveDeliveryHeader/DocumentDateTime", "date"),
                lastModified=("ReceiveDeliveryHeader/LastModificationDateTime", "date-time"),
            ),
            key_fields=("receiptNumber",),
            document_id_path="ReceiveDeliveryHeader/DocumentID/ID",
            on_delete=_deleted(
                "receipt/deleted", "DeleteReceipt", "receiptNumber", "ReceiveDeliveryHeader/DocumentID/ID"
            ),
        ),
        "Sync.SupplierPartyMaster": NounMapping(
            channel="vendor/synced",
            document_type="SyncSupplierPartyMaster",
            fields=_fields(
                vendorNumber="PartyIDs/ID",
                vendorName="Name",
                status="Status/Code",
                currency="CurrencyCode",
                country="Location/Address/CountryCode",
                email=_EMAIL,
                phone=_PHONE,
                lastModified=("LastModificationDateTime", "date-time"),
            ),
            key_fields=("vendorNumber",),
            document_id_path="PartyIDs/ID",
            on_delete=_deleted("vendor/deleted", "DeleteSupplierPartyMaster", "vendorNumber", "PartyIDs/ID"),
        ),
        "Sync.ItemBalance": NounMapping(
            channel="inventory/synced",
            document_type="SyncInventory",
            fields=_fields(
                partNumber="ItemID/ID",
                warehouse="WarehouseLocation/ID",
                onHand=("OnHandQuantity", "number"),
                allocated=("AllocatedQuantity", "number"),
                available=("AvailableQuantity", "number"),
                unitOfMeasure="OnHandQuantity/@unitCode",
                lastTransactionDate=("LastTransactionDateTime", "date-time"),
            ),
            key_fields=("partNumber", "warehouse"),
            document_id_path="ItemBalanceHeader/DocumentID/ID",
            entity_path="ItemBalanceLine",
        ),
        "Sync.InventoryCount": NounMapping(
            channel="inventory/synced",
            document_type="SyncInventory",
            fields=_fields(
                partNumber="Item/ItemID/ID",
                warehouse="WarehouseLocation/ID",
                onHand=("CountQuantity", "number"),
                allocated=("AllocatedQuantity", "number"),
                available=("AvailableQuantity", "number"),
                unitOfMeasure="CountQuantity/@unitCode",
                lastTransactionDate=(
                    "LastTransactionDateTime | noun:InventoryCountHeader/CountDateTime",
                    "date-time",
                ),
            ),
            key_fields=("partNumber", "warehouse"),
            document_id_path="InventoryCountHeader/DocumentID/ID",
            entity_path="InventoryCountLine",
        ),
    }
)


def mapped_document_names(mappings: Mapping[str, NounMapping] = DEFAULT_MAPPINGS) -> list[str]:
    """The document names (`Sync.SalesOrder`, …) the mappings accept, sorted: the default accepted documents."""
    return sorted(mappings)


_DOCUMENT_NAME_RE = re.compile(r"^[A-Z][A-Za-z]*\.[A-Z][A-Za-z0-9]*$")
_OVERRIDE_KEYS = frozenset(
    {"channel", "document_type", "documentType", "entity_path", "document_id_path", "key_fields", "fields", "on_delete"}
)


def _override_field(where: str, spec: Any, base: FieldPath | None) -> FieldPath:
    if isinstance(spec, str):
        # A bare path keeps the default's type, so a customer's variant only has to say where.
        return FieldPath(spec, base.type if base is not None else "str")
    if isinstance(spec, Mapping):
        unknown = set(spec) - {"path", "type"}
        if unknown:
            raise ValueError(f"{where}: unknown key {sorted(unknown)[0]!r} (expected path, type)")
        path = spec.get("path", base.path if base is not None else None)
        kind = spec.get("type", base.type if base is not None else "str")
        if not isinstance(path, str):
            raise ValueError(f"{where}: 'path' must be a string")
        return FieldPath(path, kind)
    raise ValueError(f"{where}: expected a path string or {{path, type}}, got {type(spec).__name__}")


def _override_mapping(where: str, raw: Any, base: NounMapping | None) -> NounMapping:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: expected a mapping, got {type(raw).__name__}")
    unknown = set(raw) - _OVERRIDE_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    fields: dict[str, FieldPath] = dict(base.fields) if base is not None else {}
    raw_fields = raw.get("fields", {})
    if not isinstance(raw_fields, Mapping):
        raise ValueError(f"{where}.fields: expected a mapping of field → path")
    for name, spec in raw_fields.items():
        field_where = f"{where}.fields.{name}"
        if not isinstance(name, str) or not name:
            raise ValueError(f"{field_where}: field names must be non-empty strings")
        if spec is None:
            fields.pop(name, None)
            continue
        try:
            fields[name] = _override_field(field_where, spec, fields.get(name))
        except ValueError as exc:
            message = str(exc)
            raise ValueError(message if message.startswith(field_where) else f"{field_where}: {message}") from None

    def pick(key: str, *aliases: str) -> Any:
        for name in (key, *aliases):
            if name in raw:
                return raw[name]
        return getattr(base, key) if base is not None else None

    channel = pick("channel")
    document_type = pick("document_type", "documentType")
    document_id_path = pick("document_id_path")
    key_fields = pick("key_fields")
    if base is None:
        missing = [k for k, v in (("channel", channel), ("document_type", document_type)) if v is None]
        missing += [k for k, v in (("document_id_path", document_id_path), ("key_fields", key_fields)) if v is None]
        if missing:
            raise ValueError(
                f"{where}: {', '.join(repr(m) for m in missing)} required for a document without a default"
            )
    if isinstance(key_fields, str):
        key_fields = (key_fields,)
    if not isinstance(key_fields, Sequence) or not all(isinstance(k, str) for k in key_fields):
        raise ValueError(f"{where}.key_fields: expected a list of field names")
    on_delete = base.on_delete if base is not None else None
    if "on_delete" in raw:
        on_delete = (
            None if raw["on_delete"] is None else _override_mapping(f"{where}.on_delete", raw["on_delete"], on_delete)
        )
    try:
        return NounMapping(
            channel=channel,
            document_type=document_type,
            fields=fields,
            key_fields=tuple(key_fields),
            document_id_path=document_id_path,
            entity_path=pick("entity_path"),
            on_delete=on_delete,
        )
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{where}: {exc}") from None


def parse_mapping_overrides(
    raw: Mapping[str, Any], *, defaults: Mapping[str, NounMapping] = DEFAULT_MAPPINGS
) -> dict[str, NounMapping]:
    """Merge per-source mapping overrides from configuration over the defaults.

    Args:
        raw: Document name (`Sync.SalesOrder`) → `{channel?, document_type?, entity_path?,
            document_id_path?, key_fields?, on_delete?, fields: {field: "path" | {path, type} | null}}`.
            Fields merge one by one over the default's (null removes one; a bare path keeps the default
            type); a document without a default needs channel, document_type, document_id_path, key_fields.
        defaults: The mappings to merge over.

    Returns:
        Every mapping: the defaults with the overrides applied, plus any new documents.

    Raises:
        ValueError: An override is malformed; the message names the key (`Sync.SalesOrder.fields.orderDate`).
    """
    if not isinstance(raw, Mapping):
        raise ValueError(f"mapping overrides: expected a mapping, got {type(raw).__name__}")
    merged = dict(defaults)
    for name, override in raw.items():
        if not isinstance(name, str) or not _DOCUMENT_NAME_RE.match(name):
            raise ValueError(f"{name!r}: document names look like 'Sync.SalesOrder'")
        merged[name] = _override_mapping(name, override, defaults.get(name))
    return merged


# --- mapping a BOD ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CanonicalEvent:
    """One canonical event mapped from a BOD.

    Attributes:
        channel: Where it goes (`inventory/synced`).
        payload: `{eventId, documentType, tenantId, timestamp, logicalId, data}` as the spec's message wants.
        version: The ION variationID that orders events of one entity, if the BOD or IMS gave one.
        entity_key: The business key (`C10042`, `HES-BRK-20A-1P|MAIN`).
    """

    channel: str
    payload: dict[str, Any] = field(hash=False)
    version: str | None = None
    entity_key: str | None = None

    @property
    def event_id(self) -> str:
        """The payload's deterministic `eventId`."""
        return str(self.payload["eventId"])


def _event_id(*parts: str) -> str:
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()
    return "ion-" + digest[:32]


def _document_id(bod: ParsedBod, noun: Element, mapping: NounMapping) -> tuple[str | None, str | None]:
    routes = _compile_path(mapping.document_id_path)
    context = _Context(noun, noun, bod.root)
    for route in routes:
        for element in route.elements(context):
            text = (element.text or "").strip() or None
            variation = (_attr(element, "variationID") or "").strip() or None
            if text is not None or variation is not None:
                return text, variation
    return None, None


def map_bod(
    bod: ParsedBod,
    *,
    tenant_id: str | None,
    source_logical_id: str | None,
    mappings: Mapping[str, NounMapping] = DEFAULT_MAPPINGS,
    variation_id: str | None = None,
) -> list[CanonicalEvent]:
    """Map a parsed BOD to canonical events; pure and deterministic.

    Args:
        bod: From `parse_bod`.
        tenant_id: Used when the BOD has no `TenantID` (e.g. the IMS `X-TenantId` header).
        source_logical_id: Used as `logicalId` when the BOD has no Sender/LogicalID.
        mappings: Document name → mapping (`DEFAULT_MAPPINGS`, or from `parse_mapping_overrides`).
        variation_id: The IMS ParameterRequest `variationId`, used when the document ID has no
            `variationID` attribute.

    Returns:
        One event per noun element (per entity element where the mapping has an `entity_path`). The
        `eventId` is `ion-` + 32 hex digits of SHA-256 over tenant, document name, documentType,
        document ID, entity key and the variationID (without one: the BODID, the CreationDateTime and a
        SHA-256 of the noun element): a redelivery maps to the same ids, a new variation or a later change
        to new ones. Fields the BOD lacks are left out, never null. A BOD with actionCode `Change` carries
        only the key and the changed fields: its events have `"partial": true` in the envelope.

    Raises:
        UnmappedDocument: No mapping for `bod.document_name`.
        BodError: No tenant, no CreationDateTime, a missing key field, no entity elements, or a value that
            does not convert to its type.
    """
    base = mappings.get(bod.document_name)
    if base is None:
        raise UnmappedDocument(bod.document_name)
    mapping = base
    if base.on_delete is not None and (bod.action_code or "").lower() == "delete":
        mapping = base.on_delete
    name = bod.document_name
    tenant = bod.tenant_id or tenant_id
    if not tenant:
        raise BodError(f"{name}: no DataArea/{bod.verb}/TenantID and no tenant id given")
    if bod.creation_datetime is None:
        raise BodError(f"{name}: ApplicationArea/CreationDateTime is missing")
    envelope: dict[str, Any] = {
        "documentType": mapping.document_type,
        "tenantId": tenant,
        "timestamp": _format_utc(bod.creation_datetime),
    }
    logical_id = bod.logical_id or source_logical_id
    if logical_id:
        envelope["logicalId"] = logical_id
    # A `Change` carries the key and the changed fields only: delivered as it is, marked so that nobody
    # reads an absent field as cleared.
    partial = (bod.action_code or "").lower() == "change"
    if partial:
        envelope["partial"] = True

    events: list[CanonicalEvent] = []
    seen_keys: dict[str, int] = {}
    for noun in bod.noun_elements:
        document_id, id_variation = _document_id(bod, noun, mapping)
        version = id_variation or variation_id or None
        # Without a variation (real BODIDs may end in `:?Noun`), the BODID alone names every later change of
        # the document too; the creation instant and the content tell a change from a redelivery.
        basis = version or "\x1e".join(
            (bod.bod_id or "", _format_utc(bod.creation_datetime), hashlib.sha256(tostring(noun)).hexdigest())
        )
        if mapping.entity_path is None:
            entities = [noun]
        else:
            entities = [
                e
                for route in _compile_path(mapping.entity_path)
                for e in route.elements(_Context(noun, noun, bod.root))
            ]
            if not entities:
                raise BodError(f"{name}: no {bod.noun}/{mapping.entity_path} element to map")
        for index, entity in enumerate(entities, start=1):
            where = f"{name} {bod.noun}" + (f"/{mapping.entity_path}[{index}]" if mapping.entity_path else "")
            context = _Context(entity, noun, bod.root)
            data: dict[str, Any] = {}
            for field_name, spec in mapping.fields.items():
                value = spec._extract(context, f"{where} field {field_name!r} at {spec.path}")
                # A count of nothing in a partial document says "not sent", not "none".
                if value is not None and not (partial and spec.type == "count" and value == 0):
                    data[field_name] = value
            missing = [k for k in mapping.key_fields if k not in data]
            if missing:
                paths = ", ".join(f"{k!r} at {mapping.fields[k].path}" for k in missing)
                raise BodError(f"{where}: required field {paths} is missing")
            entity_key = "|".join(str(data[k]) for k in mapping.key_fields)
            occurrence = seen_keys.get(entity_key, 0)
            seen_keys[entity_key] = occurrence + 1
            # A key repeated within one BOD (two bins of one warehouse) still gets its own stable id.
            key_part = entity_key if occurrence == 0 else f"{entity_key}#{occurrence}"
            event_id = _event_id(tenant, name, mapping.document_type, document_id or "", key_part, basis)
            payload = {"eventId": event_id, **envelope, "data": data}
            events.append(CanonicalEvent(mapping.channel, payload, version=version, entity_key=entity_key))
    return events
