"""AsyncAPI documents (2.6 and 3.0): channels, their message payload schemas, compiled validators.

Validation is on the hot path, so each channel's payload schema is compiled once with jsonschema-rs
(formats such as date-time checked) and issues are only built for invalid payloads.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import jsonschema_rs
import yaml

__all__ = [
    "ChannelSpec",
    "SpecError",
    "SpecRegistry",
    "ValidationIssue",
    "builtin_spec_paths",
    "export_document",
    "load_spec_document",
    "load_specs",
]

_BUILTIN_NAMES = ("ion-events.yaml", "relay-events.yaml")


class SpecError(Exception):
    """An AsyncAPI document that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True, slots=True)
class ValidationIssue:
    """One schema failure: a JSON path (`$.data.orderNumber`) and a short message."""

    path: str
    message: str


@dataclass(frozen=True)
class _Message:
    name: str
    document_types: tuple[str, ...]
    payload_schema: dict[str, Any]
    validator: Any
    raw: dict[str, Any]


@dataclass(frozen=True)
class ChannelSpec:
    """A channel and the message(s) it carries."""

    name: str
    message_name: str
    document_type: str | None
    payload_schema: dict[str, Any]
    source_file: str
    description: str = ""
    messages: tuple[_Message, ...] = field(default=(), repr=False)


def builtin_spec_paths() -> list[Path]:
    """The AsyncAPI documents shipped with the relay (the ION Events spec and the relay's own)."""
    here = Path(__file__).resolve().parent
    for folder in (here / "_specs", here.parent / "specs" / "asyncapi"):
        paths = [folder / name for name in _BUILTIN_NAMES if (folder / name).is_file()]
        if paths:
            return paths
    raise SpecError("the shipped AsyncAPI documents are missing from the installation")


def load_spec_document(path: str | Path) -> dict[str, Any]:
    """Read one AsyncAPI document with its local `$ref`s resolved.

    Raises:
        SpecError: unreadable, not YAML/JSON, not AsyncAPI 2.x/3.x, or a `$ref` that cannot be resolved.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: not an AsyncAPI document (expected a mapping)")
    version = str(raw.get("asyncapi", ""))
    if not (version.startswith(("2.", "3."))):
        raise SpecError(f"{path}: not an AsyncAPI 2.x or 3.x document (asyncapi: {version or 'missing'})")
    if not isinstance(raw.get("channels"), dict) or not raw["channels"]:
        raise SpecError(f"{path}: the document has no channels")
    resolved: dict[str, Any] = _resolve(raw, raw, path, ())
    return resolved


def _pointer(root: Any, ref: str, path: Path) -> Any:
    if not ref.startswith("#"):
        raise SpecError(f"{path}: external $ref {ref!r} is not supported; inline it or use a local #/ pointer")
    node = root
    for part in [p for p in ref[1:].split("/") if p]:
        key = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            raise SpecError(f"{path}: $ref {ref!r} does not resolve")
    return node


def _resolve(node: Any, root: Any, path: Path, stack: tuple[str, ...]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            if ref in stack:
                raise SpecError(f"{path}: $ref cycle: {' -> '.join((*stack, ref))}")
            target = _resolve(_pointer(root, ref, path), root, path, (*stack, ref))
            extra = {k: v for k, v in node.items() if k != "$ref"}
            if extra and isinstance(target, dict):
                return {**target, **_resolve(extra, root, path, stack)}
            return target
        return {k: _resolve(v, root, path, stack) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, root, path, stack) for v in node]
    return node


def _document_types(schema: Mapping[str, Any]) -> tuple[str, ...]:
    prop = (schema.get("properties") or {}).get("documentType") or {}
    if isinstance(prop.get("const"), str):
        return (prop["const"],)
    enum = prop.get("enum")
    if isinstance(enum, list):
        return tuple(v for v in enum if isinstance(v, str))
    return ()


def _compile(schema: dict[str, Any], where: str) -> Any:
    try:
        return jsonschema_rs.validator_for(schema, validate_formats=True)
    except Exception as exc:  # jsonschema-rs raises ValidationError/ValueError for bad schemas
        raise SpecError(f"{where}: payload schema does not compile: {exc}") from None


def _messages_of(channel_name: str, channel: Mapping[str, Any], version: str, where: str) -> list[dict[str, Any]]:
    found: list[Any] = []
    if version.startswith("2."):
        for op in ("subscribe", "publish"):
            message = (channel.get(op) or {}).get("message")
            if isinstance(message, dict):
                found.extend(message["oneOf"] if isinstance(message.get("oneOf"), list) else [message])
    else:
        messages = channel.get("messages") or {}
        if isinstance(messages, dict):
            found.extend(messages.values())
    out = []
    for m in found:
        if not isinstance(m, dict) or not isinstance(m.get("payload"), dict):
            raise SpecError(f"{where}: channel {channel_name!r} has a message without a payload schema")
        out.append(m)
    if not out:
        raise SpecError(f"{where}: channel {channel_name!r} has no message")
    return out


class SpecRegistry:
    """Every channel of the loaded documents, with a compiled validator per message."""

    def __init__(self, channels: Mapping[str, ChannelSpec], documents: list[dict[str, Any]]) -> None:
        self.channels: Mapping[str, ChannelSpec] = dict(channels)
        self.documents = documents
        self._by_doc_type: dict[str, str] = {}
        for spec in self.channels.values():
            for message in spec.messages:
                for doc_type in message.document_types:
                    self._by_doc_type[doc_type] = spec.name

    def has_channel(self, name: str) -> bool:
        return name in self.channels

    def channel_for_document_type(self, document_type: str) -> str | None:
        return self._by_doc_type.get(document_type)

    def validate(self, channel: str, payload: Any) -> list[ValidationIssue]:
        """Schema issues of `payload` on `channel` (empty when valid).

        Raises:
            KeyError: unknown channel.
        """
        spec = self.channels[channel]
        messages = spec.messages
        if len(messages) > 1 and isinstance(payload, dict):
            doc_type = payload.get("documentType")
            chosen = [m for m in messages if doc_type in m.document_types]
            messages = tuple(chosen) or messages
        best: list[ValidationIssue] | None = None
        for message in messages:
            if message.validator.is_valid(payload):
                return []
            issues = sorted(
                (
                    ValidationIssue(_json_path(err.instance_path), _short(err.message))
                    for err in message.validator.iter_errors(payload)
                ),
                key=lambda i: (i.path, i.message),
            )
            if best is None or len(issues) < len(best):
                best = issues
        return best or []


def _json_path(parts: Sequence[Any]) -> str:
    out = "$"
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and part.isidentifier():
            out += f".{part}"
        else:
            out += f"[{part!r}]"
    return out


def _short(message: str) -> str:
    return message if len(message) <= 200 else message[:197] + "..."


def load_specs(paths: Sequence[str | Path]) -> SpecRegistry:
    """Load AsyncAPI documents and compile their channels' validators.

    Raises:
        SpecError: any document problem; two documents defining one channel differently; one
            documentType claimed by two channels.
    """
    channels: dict[str, ChannelSpec] = {}
    documents: list[dict[str, Any]] = []
    doc_types: dict[str, str] = {}
    for p in paths:
        path = Path(p)
        doc = load_spec_document(path)
        documents.append(doc)
        version = str(doc["asyncapi"])
        for key, channel in doc["channels"].items():
            if not isinstance(channel, dict):
                raise SpecError(f"{path}: channel {key!r} is not a mapping")
            name = str(channel.get("address") or key) if version.startswith("3.") else str(key)
            where = f"{path}: channel {name!r}"
            messages: list[_Message] = []
            for raw_message in _messages_of(name, channel, version, str(path)):
                payload = raw_message["payload"]
                if version.startswith("3.") and isinstance(payload.get("schema"), dict) and "schemaFormat" in payload:
                    payload = payload["schema"]
                messages.append(
                    _Message(
                        name=str(raw_message.get("name") or raw_message.get("title") or name),
                        document_types=_document_types(payload),
                        payload_schema=payload,
                        validator=_compile(payload, where),
                        raw=raw_message,
                    )
                )
            if name in channels:
                if [m.payload_schema for m in channels[name].messages] != [m.payload_schema for m in messages]:
                    raise SpecError(f"{where}: defined differently in {channels[name].source_file}")
                continue
            for m in messages:
                for dt in m.document_types:
                    if doc_types.get(dt, name) != name:
                        raise SpecError(f"{where}: documentType {dt!r} is already used by channel {doc_types[dt]!r}")
                    doc_types[dt] = name
            first = messages[0]
            channels[name] = ChannelSpec(
                name=name,
                message_name=first.name,
                document_type=first.document_types[0] if first.document_types else None,
                payload_schema=first.payload_schema,
                source_file=str(path),
                description=str(channel.get("description", "")),
                messages=tuple(messages),
            )
    return SpecRegistry(channels, documents)


def _message_component(m: _Message) -> dict[str, Any]:
    out: dict[str, Any] = {"name": m.name}
    for key in ("title", "summary", "description"):
        if key in m.raw:
            out[key] = m.raw[key]
    out["contentType"] = "application/json"
    out["payload"] = copy.deepcopy(m.payload_schema)
    return out


def _component_key(name: str, used: set[str]) -> str:
    key = "".join(ch if ch.isalnum() or ch in "_-." else "_" for ch in name) or "Message"
    base, n = key, 2
    while key in used:
        key, n = f"{base}{n}", n + 1
    used.add(key)
    return key


def export_document(registry: SpecRegistry, version: Literal["2.6", "3.0"] = "2.6") -> dict[str, Any]:
    """One AsyncAPI document describing everything subscribers can receive (2.6.0 or 3.0.0)."""
    info = {
        "title": "erp-relay events",
        "version": "1.0.0",
        "description": (
            "Events that erp-relay delivers to subscribers as Standard Webhooks POSTs. Headers: webhook-id "
            "(the eventId), webhook-timestamp, webhook-signature, relay-channel, relay-source, relay-attempt, "
            "relay-replay."
        ),
    }
    messages: dict[str, Any] = {}
    used: set[str] = set()
    channel_keys: dict[str, list[str]] = {}
    for name, spec in registry.channels.items():
        keys = []
        for m in spec.messages:
            key = _component_key(m.name, used)
            messages[key] = _message_component(m)
            keys.append(key)
        channel_keys[name] = keys
    if version == "2.6":
        channels2: dict[str, Any] = {}
        for name, spec in registry.channels.items():
            refs = [{"$ref": f"#/components/messages/{k}"} for k in channel_keys[name]]
            message = refs[0] if len(refs) == 1 else {"oneOf": refs}
            channels2[name] = {
                "description": spec.description or name,
                "subscribe": {"operationId": _component_key("on_" + name, used), "message": message},
            }
        return {
            "asyncapi": "2.6.0",
            "info": info,
            "defaultContentType": "application/json",
            "channels": channels2,
            "components": {"messages": messages},
        }
    channels3: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for name, spec in registry.channels.items():
        ckey = _component_key(name.replace("/", "_"), used)
        channels3[ckey] = {
            "address": name,
            "description": spec.description or name,
            "messages": {k: {"$ref": f"#/components/messages/{k}"} for k in channel_keys[name]},
        }
        operations[_component_key("send_" + ckey, used)] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{ckey}"},
            "messages": [{"$ref": f"#/channels/{ckey}/messages/{k}"} for k in channel_keys[name]],
        }
    return {
        "asyncapi": "3.0.0",
        "info": info,
        "defaultContentType": "application/json",
        "channels": channels3,
        "operations": operations,
        "components": {"messages": messages},
    }
