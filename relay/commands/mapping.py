"""Canonical command → ERP request body, table-driven (pure; see docs/write-back.md and docs/sources.md).

Each table names the ERP field for a canonical field; a source overrides any of it under
`commands.mappings.<command>`: `fields`, `line_fields` (a field set to null is not sent), `defaults` (constant
ERP fields), and the scalar settings (`class`, `representation`, `lines_field`, `reference_field`,
`number_field`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = ["DEFAULTS", "CommandMapping", "build_body", "mapping_for"]


@dataclass(frozen=True, slots=True)
class CommandMapping:
    """How one command is written to one ERP."""

    fields: Mapping[str, str]  # ERP field → canonical path (`shipTo.city`)
    line_fields: Mapping[str, str] = field(default_factory=dict)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    lines_field: str | None = None
    settings: Mapping[str, str] = field(default_factory=dict)

    def setting(self, name: str) -> str:
        """A scalar setting (`class`, `representation`, `reference_field`, `number_field`, `operation`, `lookup`)."""
        return self.settings[name]


# Sage X3 api1 (SData) create on a class representation; field codes of SORDER / BPCUSTOMER
# (evidence in docs/sources.md: header CUSORDREF, BPCORD, ORDDAT, SALFCY, STOFCY, CUR; lines ITMREF, QTY, SAU, GROPRI).
_X3_ORDER = CommandMapping(
    fields={
        "BPCORD": "customerNumber",
        "CUSORDREF": "customerReference",
        "ORDDAT": "orderDate",
        "DEMDLVDAT": "requestedDeliveryDate",
        "CUR": "currency",
        "SALFCY": "site",
        "STOFCY": "warehouse",
    },
    line_fields={"ITMREF": "partNumber", "QTY": "quantity", "GROPRI": "unitPrice", "SAU": "unitOfMeasure"},
    lines_field="SOHSOP",
    settings={"class": "SORDER", "representation": "SORDER", "reference_field": "CUSORDREF", "number_field": "SOHNUM"},
)
_X3_CUSTOMER = CommandMapping(
    fields={
        "BPCNUM": "customerNumber",
        "BPCNAM": "name",
        "CUR": "currency",
        "WEB": "email",
        "TEL": "phone",
        "OSTAUZ": "creditLimit",
        "BPCSTA": "creditStatus",
        "BPAADDLIG": "address.line1",
        "CTY": "address.city",
        "POSCOD": "address.postalCode",
        "CRY": "address.country",
    },
    settings={"class": "BPCUSTOMER", "representation": "BPCUSTOMER", "number_field": "BPCNUM"},
)
# Infor SX.e: sxapisfoeordertotloadv4 (header and line tables) and sxapiarcustomermnt (field/value rows).
_SXE_ORDER = CommandMapping(
    fields={
        "customerid": "customerNumber",
        "ponumber": "customerReference",
        "warehouseid": "warehouse",
        "reqshipdate": "requestedDeliveryDate",
        "shiptoname": "shipTo.name",
        "shiptoaddr1": "shipTo.line1",
        "shiptoaddr2": "shipTo.line2",
        "shiptocity": "shipTo.city",
        "shiptostate": "shipTo.region",
        "shiptozip": "shipTo.postalCode",
        "shiptocountry": "shipTo.country",
    },
    line_fields={
        "itemnumber": "partNumber",
        "orderqty": "quantity",
        "unitofmeasure": "unitOfMeasure",
        "price": "unitPrice",
    },
    defaults={"ordersource": "RELAY", "ordertype": "SO"},
    settings={"operation": "sxapisfoeordertotloadv4", "lookup": "sxapioegetlistofordersv5"},
)
_SXE_CUSTOMER = CommandMapping(
    fields={
        "name": "name",
        "addr1": "address.line1",
        "addr2": "address.line2",
        "city": "address.city",
        "state": "address.region",
        "zipcd": "address.postalCode",
        "countrycd": "address.country",
        "phoneno": "phone",
        "email": "email",
        "credlim": "creditLimit",
        "statustype": "creditStatus",
    },
    settings={"operation": "sxapiarcustomermnt"},
)

DEFAULTS: Mapping[tuple[str, str], CommandMapping] = {
    ("x3", "order/create"): _X3_ORDER,
    ("x3", "customer/create"): _X3_CUSTOMER,
    ("x3", "customer/update"): _X3_CUSTOMER,
    ("sxe", "order/create"): _SXE_ORDER,
    ("sxe", "customer/create"): _SXE_CUSTOMER,
    ("sxe", "customer/update"): _SXE_CUSTOMER,
}
_SETTINGS = ("class", "representation", "reference_field", "number_field", "operation", "lookup")


def _merged(base: Mapping[str, Any], override: Any, where: str) -> dict[str, Any]:
    if override is None:
        return dict(base)
    if not isinstance(override, Mapping):
        raise ValueError(f"{where} must be a mapping")
    out = dict(base)
    for key, value in override.items():
        if value is None:
            out.pop(str(key), None)
        else:
            out[str(key)] = value
    return out


def mapping_for(kind: str, command: str, overrides: Mapping[str, Any] | None = None) -> CommandMapping:
    """The mapping of `command` for an ERP `kind` (`x3`, `sxe`) with a source's overrides applied.

    Raises:
        ValueError: an override of the wrong shape or an unknown key.
    """
    base = DEFAULTS[(kind, command)]
    if not overrides:
        return base
    if unknown := sorted(set(overrides) - {"fields", "line_fields", "defaults", "lines_field", *_SETTINGS}):
        raise ValueError(f"commands.mappings.{command}: unknown keys {', '.join(unknown)}")
    settings = dict(base.settings)
    settings.update({k: str(v) for k, v in overrides.items() if k in _SETTINGS})
    return replace(
        base,
        fields=_merged(base.fields, overrides.get("fields"), f"commands.mappings.{command}.fields"),
        line_fields=_merged(base.line_fields, overrides.get("line_fields"), f"commands.mappings.{command}.line_fields"),
        defaults=_merged(base.defaults, overrides.get("defaults"), f"commands.mappings.{command}.defaults"),
        lines_field=str(overrides.get("lines_field") or base.lines_field or "") or None,
        settings=settings,
    )


def _get(payload: Mapping[str, Any], path: str) -> Any:
    node: Any = payload
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def build_body(mapping: CommandMapping, payload: Mapping[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(header fields, line rows) of the ERP request for a canonical command; absent canonical fields are left out."""
    header = dict(mapping.defaults)
    for erp_field, path in mapping.fields.items():
        value = _get(payload, path)
        if value is not None:
            header[erp_field] = value
    lines = []
    for line in payload.get("lines") or []:
        row = {erp_field: line[path] for erp_field, path in mapping.line_fields.items() if line.get(path) is not None}
        lines.append(row)
    return header, lines
