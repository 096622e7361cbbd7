"""One BOD → candidate events path, shared by IMS ingest and `relay quarantine retry`.

What the IMS request said next to the BOD (`X-TenantId`, `fromLogicalId`, `variationId`, …) takes part in
the event ids: a retried quarantine entry must map exactly as a live redelivery does, so that context is
kept with the entry (`ImsContext.detail`) and read back from it (`ImsContext.from_details`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from relay.ingest.bod import NounMapping, ParsedBod, map_bod
from relay.ingest.pipeline import Candidate, check_candidate
from relay.spec import SpecRegistry

__all__ = ["IMS_DETAIL_PATH", "XML", "ImsContext", "bod_candidates"]

XML = "application/xml"
# The quarantine detail that carries the IMS context; its `message` says why it is there.
IMS_DETAIL_PATH = "ims"


@dataclass(frozen=True, slots=True)
class ImsContext:
    """What an IMS request said about its BOD, beside the XML.

    Attributes:
        tenant_id: `X-TenantId`, else the source's `tenant_id` (used when the BOD has no TenantID).
        from_logical_id: ParameterRequest `fromLogicalId` (used when the BOD has no Sender/LogicalID).
        variation_id: ParameterRequest `variationId` (used when the document ID has no variationID).
        message_id: ParameterRequest `messageId`, for logs and ConfirmBODs.
        document_name: ParameterRequest `documentName`.
    """

    tenant_id: str | None = None
    from_logical_id: str | None = None
    variation_id: str | None = None
    message_id: str | None = None
    document_name: str | None = None

    def detail(self) -> dict[str, Any]:
        """A quarantine detail entry holding this context."""
        return {
            "path": IMS_DETAIL_PATH,
            "message": "the IMS request's parameters, kept so a retry maps the BOD as a redelivery would",
            "ims": {k: v for k, v in asdict(self).items() if v is not None},
        }

    @classmethod
    def from_details(cls, details: Sequence[Mapping[str, Any]]) -> ImsContext | None:
        """The context kept in quarantine details by `detail()`, or None when there is none."""
        for entry in details:
            raw = entry.get("ims") if entry.get("path") == IMS_DETAIL_PATH else None
            if isinstance(raw, Mapping):
                known = {k: v for k, v in raw.items() if k in cls.__slots__ and isinstance(v, str)}
                return cls(**known)
        return None


def bod_candidates(
    bod: ParsedBod,
    original: bytes,
    context: ImsContext,
    *,
    mappings: Mapping[str, NounMapping],
    specs: SpecRegistry,
) -> tuple[list[Candidate], list[str]]:
    """Map a parsed BOD to the candidates the store would commit, and every problem found.

    Args:
        bod: From `parse_bod`.
        original: The BOD bytes kept with each event (what `format: xml` subscribers get).
        context: What the IMS request said next to the BOD.
        mappings: The source's mappings (`parse_mapping_overrides`).
        specs: Validate each payload against its channel.

    Returns:
        The candidates, and the problems (unknown channel, schema errors, unusable ids or versions):
        commit the candidates only when there are no problems.

    Raises:
        UnmappedDocument, BodError: From `map_bod`.
    """
    mapped = map_bod(
        bod,
        tenant_id=context.tenant_id,
        source_logical_id=context.from_logical_id,
        mappings=mappings,
        variation_id=context.variation_id,
    )
    candidates: list[Candidate] = []
    problems: list[str] = []
    for item in mapped:
        if specs.has_channel(item.channel):
            problems.extend(f"{item.channel} {i.path}: {i.message}" for i in specs.validate(item.channel, item.payload))
        else:
            problems.append(f"{item.channel}: no such channel in the loaded specs")
        candidate = Candidate(
            item.channel,
            item.payload,
            original=original,
            original_type=XML,
            version=item.version,
            entity_key=item.entity_key,
        )
        # What the store derives (ids, versions, instants) is checked here, so a bad value fails this document alone.
        problems.extend(
            f"{item.channel} {i.path}: {i.message}" for i in check_candidate(candidate, version_path="variationID")
        )
        candidates.append(candidate)
    return candidates, problems
