"""ConfirmBODs back to Infor ION for BODs the relay refused, when their sender asked for one.

Infor's Confirm BOD guideline: an application sends a ConfirmBOD when an inbound BOD cannot be processed; the
sender says whether it wants one in `ApplicationArea/Sender/ConfirmationCode` (`Never`, `OnError`, `Always`).
For an ion-ims source with a `confirm:` block, a refused BOD (quarantined, or of a document the mappings do not
know) whose ConfirmationCode is listed in `confirm.codes` gets one ConfirmBOD. Success is not confirmed: the IMS
202 already tells ION the BOD was taken, and Infor describes ConfirmBODs for failures.

Queueing is durable and apart from the IMS answer: the ConfirmBOD is written to the store's outbox after the
quarantine commit (a failure to queue is logged and counted; the BOD stays quarantined either way), and
`ConfirmSender` sends it application → ION through the ION API gateway with the `.ionapi` service account, as
an IMS multipart message (`ParameterRequest` + `MessagePayload`), retrying on its own schedule.

The building blocks (`wants_confirm`, `confirm_bod_id`, `build_confirm_bod`, `confirm_parameters`,
`plan_confirm`) are pure; `queue_confirm` and `ConfirmSender` do the I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from xml.etree.ElementTree import Element, SubElement, tostring

import aiohttp
import orjson
import structlog

from relay import metrics
from relay.auth.ionapi import IonApiCredentials, IonApiError, TokenManager, load_ionapi
from relay.config import IonConfirm, IonImsSource
from relay.deliver.retry import AttemptOutcome, decide
from relay.ingest.bod import ParsedBod
from relay.ingest.bod_events import ImsContext
from relay.store import ConfirmEntry, ConfirmRow, StoreUnavailable

if TYPE_CHECKING:
    from relay.runtime import Runtime

log = structlog.get_logger(__name__)

__all__ = [
    "CONFIRM_DOCUMENT",
    "ConfirmSender",
    "build_confirm_bod",
    "confirm_bod_id",
    "confirm_parameters",
    "plan_confirm",
    "queue_confirm",
    "wants_confirm",
]

# IMS names a document `Verb.Noun`: a ConfirmBOD is the verb Confirm on the noun BOD.
CONFIRM_DOCUMENT = "Confirm.BOD"
INFOR_NAMESPACE = "http://schema.infor.com/InforOAGIS/2"
COMPONENT_ID = "erp-relay"
# ION shows the description to people; a schema failure listing every field can run long.
MAX_DESCRIPTION_CHARS = 2000
_BATCH = 20
# Rows left by an earlier run, or queued while a wake-up was missed, are found within this time.
_IDLE_POLL_S = 5.0
_VERB_RE = re.compile(r"verb=[^&]*")


def wants_confirm(confirmation_code: str | None, on: Collection[str]) -> bool:
    """Whether a refused BOD gets a ConfirmBOD: its `ConfirmationCode` is one of `on` (`Never` or none: no)."""
    code = (confirmation_code or "").strip()
    return bool(code) and code != "Never" and code in on


def confirm_bod_id(original_bod_id: str | None, message_id: str) -> str:
    """The BODID of the ConfirmBOD for a BOD with `original_bod_id`.

    As Infor LN derives response BODIDs: the request's BODID with the verb changed to `Confirm` and a
    `sequence` pair added. Without a BODID in that form, an `infor-nid` from `message_id`.
    """
    if original_bod_id and "?" in original_bod_id and _VERB_RE.search(original_bod_id):
        return _VERB_RE.sub("verb=Confirm", original_bod_id, count=1) + "&sequence=1"
    return f"infor-nid:erp-relay:{message_id}?BOD&verb=Confirm"


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _copy(element: Element, parent: Element, tag: str | None = None) -> None:
    """Copy `element` under `parent` with local names (the ConfirmBOD declares the Infor namespace once)."""
    attributes = {_local(k): v for k, v in element.attrib.items()}
    copied = SubElement(parent, tag or _local(element.tag), attributes)
    copied.text = element.text
    copied.tail = None
    for child in element:
        if isinstance(child.tag, str):
            _copy(child, copied)


def _leaf(parent: Element, tag: str, text: str | None) -> None:
    if text:
        SubElement(parent, tag).text = text


def build_confirm_bod(
    bod: ParsedBod,
    *,
    error: str,
    reason_code: str,
    logical_id: str,
    created_at: datetime,
    message_id: str,
    tenant_id: str | None = None,
) -> bytes:
    """The ConfirmBOD XML that reports `bod` as not processed.

    Shape (OAGIS 9 / Infor): `ConfirmBOD/ApplicationArea` (the relay as sender, ConfirmationCode `Never`),
    `DataArea/Confirm` (TenantID, AccountingEntityID, LocationID and `OriginalApplicationArea`, a copy of the
    refused BOD's ApplicationArea, which carries its BODID), `DataArea/BOD/BODFailureMessage/
    ErrorProcessMessage` (`Description`: why, `ReasonCode`: the relay's refusal code).

    Args:
        bod: The refused BOD, parsed.
        error: Why it was refused (cut to MAX_DESCRIPTION_CHARS).
        reason_code: The relay's short code (`invalid_payload`, `malformed_xml`, `document_not_accepted`).
        logical_id: The relay's logical id (`lid://…`).
        created_at: The ConfirmBOD's CreationDateTime (UTC).
        message_id: The IMS messageId it is sent with (names it when the BOD has no BODID to derive from).
        tenant_id: The tenant, when the BOD does not say.

    Returns:
        UTF-8 XML with a declaration.
    """
    root = Element("ConfirmBOD", {"xmlns": INFOR_NAMESPACE, "releaseID": "9.2"})
    area = SubElement(root, "ApplicationArea")
    sender = SubElement(area, "Sender")
    _leaf(sender, "LogicalID", logical_id)
    _leaf(sender, "ComponentID", COMPONENT_ID)
    _leaf(sender, "ConfirmationCode", "Never")  # a confirmation is never itself confirmed
    _leaf(area, "CreationDateTime", created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    _leaf(area, "BODID", confirm_bod_id(bod.bod_id, message_id))
    data = SubElement(root, "DataArea")
    confirm = SubElement(data, "Confirm")
    _leaf(confirm, "TenantID", bod.tenant_id or tenant_id)
    _leaf(confirm, "AccountingEntityID", bod.accounting_entity_id)
    _leaf(confirm, "LocationID", bod.location_id)
    if bod.application_area is not None:
        _copy(bod.application_area, confirm, "OriginalApplicationArea")
    elif bod.bod_id:
        _leaf(SubElement(confirm, "OriginalApplicationArea"), "BODID", bod.bod_id)
    failure = SubElement(SubElement(SubElement(data, "BOD"), "BODFailureMessage"), "ErrorProcessMessage")
    description = error if len(error) <= MAX_DESCRIPTION_CHARS else error[: MAX_DESCRIPTION_CHARS - 1] + "…"
    _leaf(failure, "Description", f"{bod.document_name} not processed: {description}")
    _leaf(failure, "ReasonCode", reason_code)
    xml: bytes = tostring(root, encoding="utf-8", xml_declaration=True)
    return xml


def confirm_parameters(bod: ParsedBod, *, logical_id: str, to_logical_id: str, message_id: str) -> dict[str, Any]:
    """The IMS ParameterRequest of a ConfirmBOD (keys as the `inforion` client and Infor's IMS docs name them)."""
    params: dict[str, Any] = {
        "documentName": CONFIRM_DOCUMENT,
        "messageId": message_id,
        "fromLogicalId": logical_id,
        "toLogicalId": to_logical_id,
        "encoding": "NONE",
        "characterSet": "UTF-8",
    }
    if bod.accounting_entity_id:
        params["accountingEntity"] = bod.accounting_entity_id
    if bod.location_id:
        params["location"] = bod.location_id
    return params


@dataclass(frozen=True, slots=True)
class Refused:
    """A BOD the relay refused, and why: what a ConfirmBOD reports."""

    bod: ParsedBod
    error: str
    reason_code: str
    context: ImsContext | None = None


def plan_confirm(
    source: IonImsSource, refused: Refused, *, now: datetime, message_id: str | None = None
) -> ConfirmEntry | None:
    """The outbox entry for a refused BOD, or None when the source sends no ConfirmBODs or the sender asked
    for none. The ConfirmBOD goes to the BOD's sender (`Sender/LogicalID`, else the IMS `fromLogicalId`)."""
    settings = source.confirm
    if settings is None or not wants_confirm(refused.bod.confirmation_code, settings.codes):
        return None
    message_id = message_id or str(uuid.uuid4())
    context = refused.context or ImsContext()
    to_logical_id = refused.bod.logical_id or context.from_logical_id or "lid://default"
    payload = build_confirm_bod(
        refused.bod,
        error=refused.error,
        reason_code=refused.reason_code,
        logical_id=settings.logical_id,
        created_at=now,
        message_id=message_id,
        tenant_id=context.tenant_id or source.tenant_id,
    )
    params = confirm_parameters(
        refused.bod, logical_id=settings.logical_id, to_logical_id=to_logical_id, message_id=message_id
    )
    return ConfirmEntry(
        source=source.name,
        bod_id=refused.bod.bod_id,
        parameters=orjson.dumps(params).decode(),
        payload=payload,
        created_at=now,
    )


async def queue_confirm(runtime: Runtime, source: IonImsSource, refused: Refused) -> None:
    """Put the ConfirmBOD for a refused BOD in the outbox (when one is wanted) and wake the sender.

    Never raises: the IMS answer does not depend on it. A full outbox or an unavailable store is logged and
    counted (`relay_ion_confirms_total{state="dropped"}`); the refused BOD stays in quarantine either way.
    """
    settings = source.confirm
    entry = plan_confirm(source, refused, now=datetime.now(UTC))
    if entry is None or settings is None:
        return
    try:
        confirm_id = await runtime.store.enqueue_confirm(entry, max_pending=settings.max_pending)
    except StoreUnavailable as exc:
        confirm_id = None
        log.warning("ConfirmBOD not queued", source=source.name, bod_id=entry.bod_id, error=str(exc)[:300])
    else:
        if confirm_id is None:
            log.warning(
                "ConfirmBOD not queued: the outbox is full",
                source=source.name,
                bod_id=entry.bod_id,
                max_pending=settings.max_pending,
            )
    if confirm_id is None:
        metrics.labelled(metrics.ION_CONFIRMS, source.name, "dropped").inc()
        return
    metrics.labelled(metrics.ION_CONFIRMS, source.name, "queued").inc()
    log.info("ConfirmBOD queued", source=source.name, bod_id=entry.bod_id, confirm_id=confirm_id)
    if runtime.confirms is not None:
        runtime.confirms.wake()


def _multipart(parameters: str, payload: bytes) -> aiohttp.MultipartWriter:
    writer = aiohttp.MultipartWriter("form-data")
    params = writer.append(parameters.encode(), {"Content-Type": "application/json"})
    params.set_content_disposition("form-data", name="ParameterRequest", filename="ParameterRequest")
    body = writer.append(payload, {"Content-Type": "application/octet-stream"})
    body.set_content_disposition("form-data", name="MessagePayload", filename="MessagePayload")
    return writer


class ConfirmSender:
    """Sends queued ConfirmBODs to ION, one source's gateway per `.ionapi` file, with retries.

    A daemon service: `start`, `stop`, `reconfigure`; `wake` after queueing so a new ConfirmBOD goes at once.
    """

    def __init__(self, runtime: Runtime, *, rng: random.Random | None = None) -> None:
        self.runtime = runtime
        self._rng = rng or random.Random()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tokens: dict[str, TokenManager] = {}

    def wake(self) -> None:
        """Look for due ConfirmBODs now."""
        self._wakeup.set()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()
        self._task = asyncio.create_task(self._run(), name="ion-confirms")

    async def stop(self, grace_s: float) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def reconfigure(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._tokens.clear()  # an `.ionapi` file may have been replaced
        self.wake()

    async def _run(self) -> None:
        while True:
            self._wakeup.clear()
            try:
                await self.send_due()
                next_at = await self.runtime.store.next_confirm_at()
            except StoreUnavailable as exc:
                log.warning("ConfirmBOD outbox unreadable", error=str(exc)[:300])
                next_at = None
            except Exception:  # a bug must not stop ConfirmBODs for good: logged, tried again on the next round
                log.exception("ConfirmBOD sender failed")
                next_at = None
            wait_s = _IDLE_POLL_S
            if next_at is not None:
                wait_s = min(wait_s, max(0.0, (next_at - datetime.now(UTC)).total_seconds()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=wait_s)

    async def send_due(self) -> int:
        """Send every ConfirmBOD due now; returns how many were attempted."""
        attempted = 0
        while rows := await self.runtime.store.due_confirms(datetime.now(UTC), limit=_BATCH):
            for row in rows:
                await self._attempt(row)
            attempted += len(rows)
        return attempted

    async def _attempt(self, row: ConfirmRow) -> None:
        store = self.runtime.store
        found = self.runtime.source(row.source)
        settings = found.confirm if isinstance(found, IonImsSource) else None
        if settings is None:
            log.error(
                "ConfirmBOD dropped: its source no longer sends ConfirmBODs", source=row.source, bod_id=row.bod_id
            )
            metrics.labelled(metrics.ION_CONFIRMS, row.source, "failed").inc()
            await store.finish_confirm(row.id)
            return
        outcome = await self._post(settings, row)
        now = datetime.now(UTC)
        decision = decide(
            outcome,
            attempt=row.attempts + 1,
            now=now,
            created_at=row.created_at,
            schedule_s=settings.retry.schedule_s,
            max_age_s=settings.retry.max_age_s,
            rng=self._rng,
        )
        where = {"source": row.source, "bod_id": row.bod_id, "attempt": row.attempts + 1}
        if decision.action == "delivered":
            log.info("ConfirmBOD sent", **where, status=outcome.status)
            metrics.labelled(metrics.ION_CONFIRMS, row.source, "sent").inc()
            await store.finish_confirm(row.id)
        elif decision.action == "retry" and decision.next_attempt_at is not None:
            log.warning(
                "ConfirmBOD not sent, will retry", **where, reason=decision.reason, next=decision.next_attempt_at
            )
            metrics.labelled(metrics.ION_CONFIRMS, row.source, "retry").inc()
            await store.retry_confirm(
                row.id, attempts=row.attempts + 1, next_attempt_at=decision.next_attempt_at, error=decision.reason
            )
        else:
            log.error("ConfirmBOD not sent, giving up", **where, reason=decision.reason)
            metrics.labelled(metrics.ION_CONFIRMS, row.source, "failed").inc()
            await store.finish_confirm(row.id)

    def _token_manager(self, settings: IonConfirm) -> TokenManager:
        manager = self._tokens.get(settings.ionapi_file)
        if manager is None:
            if self._session is None:
                raise RuntimeError("the ConfirmBOD sender is not started")
            creds: IonApiCredentials = load_ionapi(settings.ionapi_file)
            manager = self._tokens[settings.ionapi_file] = TokenManager(creds, self._session)
        return manager

    async def _post(self, settings: IonConfirm, row: ConfirmRow) -> AttemptOutcome:
        """One attempt: the IMS multipart POST with a bearer token, renewed and repeated once on a 401."""
        try:
            manager = self._token_manager(settings)
            url = manager.creds.gateway_url(settings.path)
            token = await manager.token()
            status, headers = await self._send(url, token, row, settings.timeout_s)
            if status == 401:
                await manager.invalidate(token)
                status, headers = await self._send(url, await manager.token(), row, settings.timeout_s)
        except IonApiError as exc:  # the `.ionapi` file, or no token from the authorization server
            return AttemptOutcome(error=str(exc)[:300])
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return AttemptOutcome(error=f"{type(exc).__name__}: {exc}"[:300])
        return AttemptOutcome(status=status, retry_after=headers.get("Retry-After"))

    async def _send(self, url: str, token: str, row: ConfirmRow, timeout_s: float) -> tuple[int, Mapping[str, str]]:
        if self._session is None:
            raise RuntimeError("the ConfirmBOD sender is not started")
        async with self._session.post(
            url,
            data=_multipart(row.parameters, row.payload),
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as resp:
            await resp.read()
            return resp.status, dict(resp.headers)
