"""The write interfaces of Sage X3 (api1 REST create/update) and Infor SX.e (SX API REST through the ION
gateway): send one command, or find the document a command may already have created.

Every call ends in an `Attempt`; nothing here retries or sleeps. Shapes and their evidence: docs/sources.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import orjson

from relay.auth.ionapi import IonApiAuthError, IonApiError, TokenManager, load_ionapi
from relay.auth.outbound import OutboundAuthenticator
from relay.commands.mapping import CommandMapping, build_body, mapping_for
from relay.commands.policy import Attempt
from relay.config import SxeSource, X3Source
from relay.deliver.retry import parse_retry_after

__all__ = ["Connector", "SxeConnector", "X3Connector", "build_connector"]

_MAX_MESSAGE_CHARS = 500


class Connector(Protocol):
    """One ERP connection's write interface."""

    def can_find(self, command: str, payload: Mapping[str, Any]) -> bool:
        """Whether a document this command may have created can be looked up (by its external reference)."""

    async def find(self, command: str, payload: Mapping[str, Any]) -> Attempt | None:
        """`done` with the existing document, None when there is none, `transient`/`unknown` when unsure."""

    async def execute(self, command: str, payload: Mapping[str, Any]) -> Attempt:
        """Send the command once."""

    async def close(self) -> None: ...


def _transport_attempt(exc: BaseException, what: str) -> Attempt:
    """A failed exchange: refused before sending is transient; anything after the request left is unknown."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return Attempt("transient", f"{what}: cannot connect: {exc.os_error or exc}"[:_MAX_MESSAGE_CHARS])
    if isinstance(exc, TimeoutError):
        return Attempt("unknown", f"{what}: no answer in time")
    return Attempt("unknown", f"{what}: {type(exc).__name__}: {exc}"[:_MAX_MESSAGE_CHARS])


def _status_attempt(status: int, messages: list[str], what: str, retry_after: str | None) -> Attempt:
    """A non-2xx answer: 4xx about the data is a refusal; auth, throttling and 5xx are retried."""
    text = "; ".join(messages) or f"HTTP {status}"
    if status in (401, 403):
        return Attempt("transient", f"{what}: HTTP {status} (check the credentials): {text}"[:_MAX_MESSAGE_CHARS])
    if status in (429, 503):
        wait = parse_retry_after(retry_after, datetime.now(UTC))
        return Attempt("transient", f"{what}: HTTP {status}: {text}"[:_MAX_MESSAGE_CHARS], retry_after_s=wait)
    if status == 408 or status >= 500:
        return Attempt("unknown", f"{what}: HTTP {status}: {text}"[:_MAX_MESSAGE_CHARS])
    return Attempt("refused", f"{what}: the ERP refused the data: {text}"[:_MAX_MESSAGE_CHARS], erp_messages=messages)


def x3_diagnoses(body: Any) -> list[str]:
    """Error messages of an X3 answer: `$diagnoses` of the resource, of its properties and of its lines."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            found.extend(
                str(d.get("$message", ""))
                for d in node.get("$diagnoses") or []
                if isinstance(d, Mapping) and d.get("$severity", "error") in ("error", "fatal")
            )
            for key, value in node.items():
                if key != "$diagnoses":
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(body)
    return [m for m in found if m][:20]


def _sdata_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class X3Connector:
    """Sage X3 api1: `POST {class}?representation={repr}.$create`, `PUT {class}('{key}')?representation={repr}.$edit`,
    lookups with `$query` and `where={field} eq '…'`."""

    def __init__(self, source: X3Source, session: aiohttp.ClientSession) -> None:
        assert source.commands is not None
        self.source = source
        self.session = session
        self.auth = OutboundAuthenticator(source.auth, session)
        self.mappings: dict[str, CommandMapping] = {
            name: mapping_for("x3", name, source.commands.mappings.get(name)) for name in source.commands.allow
        }

    def _url(self, cls: str, key: str | None = None) -> str:
        base = f"{self.source.base_url.rstrip('/')}/api1/x3/erp/{self.source.folder}/{cls}"
        return base if key is None else f"{base}({_sdata_string(key)})"

    async def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "Content-Type": "application/json", **await self.auth.headers()}
        if self.source.folder_header:
            headers[self.source.folder_header] = self.source.folder
        return headers

    async def _call(
        self, method: str, url: str, params: Mapping[str, str], body: Any = None
    ) -> tuple[int, Any, str | None]:
        headers = await self._headers()
        for attempt in (1, 2):
            async with self.session.request(
                method,
                url,
                params=params,
                headers=headers,
                data=orjson.dumps(body) if body is not None else None,
                timeout=aiohttp.ClientTimeout(total=self.source.timeout_s),
                allow_redirects=False,
            ) as resp:
                raw = await resp.read()
                status = resp.status
                retry_after = resp.headers.get("Retry-After")
            if status == 401 and attempt == 1:
                # A refused token is renewed once; a create refused with 401 was not carried out.
                await self.auth.invalidate()
                headers = await self._headers()
                continue
            break
        try:
            parsed = orjson.loads(raw) if raw.strip() else None
        except orjson.JSONDecodeError:
            parsed = {"$diagnoses": [{"$severity": "error", "$message": raw[:200].decode("utf-8", "replace")}]}
        return status, parsed, retry_after

    def can_find(self, command: str, payload: Mapping[str, Any]) -> bool:
        if command == "order/create":
            return True
        return bool(payload.get("customerNumber"))

    async def find(self, command: str, payload: Mapping[str, Any]) -> Attempt | None:
        mapping = self.mappings[command]
        what = f"X3 lookup {mapping.setting('class')}"
        try:
            if command == "order/create":
                reference = str(payload["customerReference"])
                field = mapping.setting("reference_field")
                status, body, retry_after = await self._call(
                    "GET",
                    self._url(mapping.setting("class")),
                    {
                        "representation": f"{mapping.setting('representation')}.$query",
                        "where": f"{field} eq {_sdata_string(reference)}",
                        "count": "2",
                    },
                )
                if status != 200:
                    found = _status_attempt(status, x3_diagnoses(body), what, retry_after)
                    # A lookup that fails says nothing about the order: never a refusal of the command.
                    return Attempt("unknown" if found.kind == "refused" else found.kind, found.message)
                rows = [r for r in (body or {}).get("$resources") or [] if r.get(field) == reference]
                if not rows:
                    return None
                number = str(rows[0].get(mapping.setting("number_field"), ""))
                return Attempt("done", document_number=number, details={"adopted": True})
            number = str(payload["customerNumber"])
            status, body, retry_after = await self._call(
                "GET",
                self._url(mapping.setting("class"), number),
                {"representation": f"{mapping.setting('representation')}.$details"},
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            return _transport_attempt(exc, what)
        if status == 404:
            return None
        if status != 200:
            found = _status_attempt(status, x3_diagnoses(body), what, retry_after)
            return Attempt("unknown" if found.kind == "refused" else found.kind, found.message)
        return Attempt("done", document_number=number, details={"adopted": True})

    async def execute(self, command: str, payload: Mapping[str, Any]) -> Attempt:
        mapping = self.mappings[command]
        cls, representation = mapping.setting("class"), mapping.setting("representation")
        header, lines = build_body(mapping, payload)
        if mapping.lines_field and lines:
            header[mapping.lines_field] = lines
        what = f"X3 {'update' if command == 'customer/update' else 'create'} {cls}"
        try:
            if command == "customer/update":
                number_field = mapping.setting("number_field")
                key = str(header.pop(number_field))
                status, body, retry_after = await self._call(
                    "PUT", self._url(cls, key), {"representation": f"{representation}.$edit"}, header
                )
            else:
                status, body, retry_after = await self._call(
                    "POST", self._url(cls), {"representation": f"{representation}.$create"}, header
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            return _transport_attempt(exc, what)
        if 200 <= status < 300:
            number = (body or {}).get(mapping.setting("number_field")) if isinstance(body, Mapping) else None
            if not number:
                return Attempt("unknown", f"{what}: HTTP {status} without {mapping.setting('number_field')}")
            return Attempt("done", document_number=str(number))
        return _status_attempt(status, x3_diagnoses(body), what, retry_after)

    async def close(self) -> None:
        return None


_SXE_CUSTOMER_NUMBER = re.compile(r"Customer\s*#:\s*(\d+)")


class SxeConnector:
    """Infor SX.e through the ION API gateway: `sxapisfoeordertotloadv4` creates orders, `sxapiarcustomermnt`
    creates and changes customers, `sxapioegetlistofordersv5` finds an order by its customer PO."""

    def __init__(self, source: SxeSource, session: aiohttp.ClientSession, tokens: TokenManager | None = None) -> None:
        assert source.commands is not None
        self.source = source
        self.tokens = tokens or TokenManager(load_ionapi(Path(source.ionapi_file)), session)
        self.mappings: dict[str, CommandMapping] = {
            name: mapping_for("sxe", name, source.commands.mappings.get(name)) for name in source.commands.allow
        }

    def _request(self, **fields: Any) -> dict[str, Any]:
        return {
            "request": {
                "companyNumber": self.source.company_number,
                "operatorInit": self.source.operator_init,
                "operatorPassword": self.source.operator_password,
                **fields,
            }
        }

    async def _call(self, operation: str, body: dict[str, Any]) -> tuple[int, Any, str | None]:
        path = f"{self.source.service_path.strip('/')}/{operation}"
        answer = await self.tokens.call_json("POST", path, json=body, timeout_s=self.source.timeout_s)
        return answer.status, answer.body, answer.headers.get("Retry-After")

    def can_find(self, command: str, payload: Mapping[str, Any]) -> bool:
        # Orders carry the customer PO; a customer created by SX.e's own numbering has nothing to search by.
        return command != "customer/create"

    async def find(self, command: str, payload: Mapping[str, Any]) -> Attempt | None:
        if command == "customer/update":
            return None  # an update is safe to send again
        mapping = self.mappings[command]
        operation = mapping.setting("lookup")
        reference = str(payload["customerReference"])
        what = f"SX.e {operation}"
        try:
            status, body, retry_after = await self._call(
                operation,
                self._request(customerNumber=_sxe_number(payload["customerNumber"]), customerPurchaseOrder=reference),
            )
        except IonApiAuthError as exc:
            return Attempt("transient", f"{what}: {exc}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            return _transport_attempt(exc, what)
        if status != 200:
            found = _status_attempt(status, [], what, retry_after)
            return Attempt("unknown" if found.kind == "refused" else found.kind, found.message)
        response = (body or {}).get("response") or {}
        if response.get("cErrorMessage"):
            return Attempt("unknown", f"{what}: {response['cErrorMessage']}"[:_MAX_MESSAGE_CHARS])
        rows = ((response.get("tOeordV5") or {}).get("t-oeordV5")) or []
        for row in rows:
            if str(row.get("custPo", "")) == reference:
                number = str(row.get("orderNo"))
                return Attempt("done", document_number=number, details={"adopted": True, "suffix": row.get("orderSuf")})
        return None

    async def execute(self, command: str, payload: Mapping[str, Any]) -> Attempt:
        mapping = self.mappings[command]
        operation = mapping.setting("operation")
        body = self._request(**sxe_request_tables(command, mapping, payload))
        what = f"SX.e {operation}"
        try:
            status, answer, retry_after = await self._call(operation, body)
        except IonApiAuthError as exc:
            return Attempt("transient", f"{what}: {exc}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            return _transport_attempt(exc, what)
        if status != 200:
            return _status_attempt(status, [], what, retry_after)
        response = (answer or {}).get("response") if isinstance(answer, Mapping) else None
        if not isinstance(response, Mapping):
            return Attempt("unknown", f"{what}: HTTP 200 without a `response` object")
        if error := str(response.get("cErrorMessage") or "").strip():
            # SX.e answers business errors with HTTP 200 and cErrorMessage: the data is wrong, no retry.
            return Attempt(
                "refused", f"{what}: SX.e refused the data: {error}"[:_MAX_MESSAGE_CHARS], erp_messages=[error]
            )
        if command == "order/create":
            rows = ((response.get("tOrdloadhdrdata") or {}).get("t-ordloadhdrdata")) or []
            if not rows or not rows[0].get("orderno"):
                return Attempt("unknown", f"{what}: no order number in the answer")
            return Attempt("done", document_number=str(rows[0]["orderno"]), details={"suffix": rows[0].get("ordersuf")})
        if command == "customer/update":
            return Attempt("done", document_number=str(payload["customerNumber"]))
        match = _SXE_CUSTOMER_NUMBER.search(str(response.get("returnData", "")))
        if match is None:
            return Attempt("unknown", f"{what}: no customer number in returnData")
        return Attempt("done", document_number=match.group(1))

    async def close(self) -> None:
        return None


def sxe_request_tables(command: str, mapping: CommandMapping, payload: Mapping[str, Any]) -> dict[str, Any]:
    """The tables of an SX.e request for a canonical command (inside `request`, next to the company and operator)."""
    header, lines = build_body(mapping, payload)
    if command == "order/create":
        header["customerid"] = _sxe_number(header.get("customerid", ""))
        rows = [{"seqno": i, **row} for i, row in enumerate(lines, start=1)]
        if payload.get("notes"):
            # SX.e takes order notes as a comment line (`lineitemtype` C, item `/`), as public clients send them.
            rows.append({"seqno": len(rows) + 1, "itemnumber": "/", "lineitemtype": "C", "itemdesc1": payload["notes"]})
        return {
            "tInputccdata": {"t-Inputccdata": []},
            "tInputheaderdata": {"t-inputheaderdata": [header]},
            "tInputlinedata": {"t-inputlinedata": rows},
            "tInputheaderextradata": {"t-inputheaderextradata": []},
            "tInputlineextradata": {"t-inputlineextradata": []},
            "tInfieldvalue": {"t-infieldvalue": []},
        }
    key = str(payload.get("customerNumber") or "") if command == "customer/update" else ""
    mode = "chg" if command == "customer/update" else "add"
    rows = [
        {"setNo": 1, "seqNo": i, "key1": key, "key2": "", "updateMode": mode, "fieldName": name,
         "fieldValue": str(value)}
        for i, (name, value) in enumerate(header.items(), start=1)
    ]  # fmt: skip
    return {"tMntTt": {"t-mnt-tt": rows}}


def _sxe_number(value: Any) -> Any:
    """SX.e customer numbers are decimals: send digits as a number, anything else as given (SX.e refuses it)."""
    text = str(value)
    return int(text) if text.isdigit() else text


def build_connector(source: X3Source | SxeSource, session: aiohttp.ClientSession) -> Connector:
    """The write connector of a source with a `commands:` block.

    Raises:
        ValueError: an unreadable `.ionapi` file or a malformed mapping override.
    """
    if isinstance(source, X3Source):
        return X3Connector(source, session)
    try:
        return SxeConnector(source, session)
    except IonApiError as exc:
        raise ValueError(str(exc)) from None
