"""AsyncAPI documents (2.6 and 3.0): channels, their message payload schemas, compiled validators.

Validation is on the hot path, so each message's payload schema is compiled once with jsonschema-rs
(with `date` and `date-time` formats checked) and issues are only built for payloads that fail.
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import unquote

import jsonschema_rs
import yaml

__all__ = [
    "ChannelSpec",
    "MessageSpec",
    "SpecError",
    "SpecRegistry",
    "ValidationIssue",
    "builtin_spec_paths",
    "export_document",
    "load_spec_document",
    "load_specs",
]

_BUILTIN_NAMES = ("ion-events.yaml", "relay-events.yaml")
# A document whose $refs fan out (a DAG of refs doubles per level) must not exhaust memory.
_MAX_RESOLVED_NODES = 2_000_000
# A hostile payload (a huge array of wrong items) must not turn into a megabyte of issues.
_MAX_ISSUES = 100
_MAX_MESSAGE_CHARS = 200
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_JSON_SCHEMA_FORMATS = ("application/vnd.aai.asyncapi", "application/schema+json", "application/schema+yaml")


class SpecError(Exception):
    """An AsyncAPI document that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True, slots=True)
class ValidationIssue:
    """One schema failure: where (`$`, `$.data.orderNumber`, `$.data.lines[2]`) and what, in a short sentence."""

    path: str
    message: str


_Check = Callable[[Any], list[ValidationIssue]]


class _SpecLoader(yaml.SafeLoader):
    """YAML as JSON Schema authors mean it: only true/false are booleans and dates stay strings.

    With PyYAML's YAML 1.1 defaults `enum: [NO, SE]` would hold False (not Norway) and an unquoted
    `2026-01-31` would become a `datetime.date` that no JSON Schema validator accepts.
    """


_BOOL_TAG = "tag:yaml.org,2002:bool"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
_SpecLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_BOOL_TAG, _TIMESTAMP_TAG)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_SpecLoader.add_implicit_resolver(_BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def _compile(schema: dict[str, Any]) -> Any:
    # AsyncAPI's Schema Object is a superset of JSON Schema draft 7; honour an explicit $schema.
    try:
        if "$schema" in schema:
            return jsonschema_rs.validator_for(schema, validate_formats=True)
        return jsonschema_rs.Draft7Validator(schema, validate_formats=True)
    except (ValueError, TypeError, jsonschema_rs.ReferencingError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SpecError(f"payload schema does not compile: {first_line}") from None


def _document_types_of(schema: Mapping[str, Any]) -> tuple[str, ...]:
    properties = schema.get("properties")
    prop = properties.get("documentType") if isinstance(properties, Mapping) else None
    if not isinstance(prop, Mapping):
        return ()
    if isinstance(prop.get("const"), str):
        return (prop["const"],)
    enum = prop.get("enum")
    if isinstance(enum, list):
        return tuple(dict.fromkeys(v for v in enum if isinstance(v, str)))
    return ()


@dataclass(frozen=True)
class MessageSpec:
    """One message a channel carries: its payload schema, compiled when the MessageSpec is made.

    Raises:
        SpecError: the payload schema does not compile.
    """

    name: str
    payload_schema: dict[str, Any]
    title: str = ""
    summary: str = ""
    description: str = ""
    document_types: tuple[str, ...] = field(init=False)
    _validator: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "document_types", _document_types_of(self.payload_schema))
        object.__setattr__(self, "_validator", _compile(self.payload_schema))


@dataclass(frozen=True)
class ChannelSpec:
    """A channel and the message(s) it carries.

    `message_name`, `document_type` and `payload_schema` describe the channel's first message; a
    channel whose message is a `oneOf` lists every message in `messages`. Without `messages`, one
    message is made (and compiled) from `message_name` and `payload_schema`.
    """

    name: str
    message_name: str
    document_type: str | None
    payload_schema: dict[str, Any]
    source_file: str
    description: str = ""
    messages: tuple[MessageSpec, ...] = ()
    _check: _Check = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.messages:
            object.__setattr__(self, "messages", (MessageSpec(self.message_name, self.payload_schema),))
        object.__setattr__(self, "_check", _make_check(self.name, self.messages))

    @property
    def document_types(self) -> tuple[str, ...]:
        """Every documentType the channel's messages declare (enum values or const)."""
        return tuple(dict.fromkeys(dt for m in self.messages for dt in m.document_types))


def _path_sort_key(parts: Sequence[str | int]) -> tuple[tuple[int, int, str], ...]:
    return tuple((0, p, "") if isinstance(p, int) else (1, 0, p) for p in parts)


def _json_path(parts: Sequence[str | int]) -> str:
    out = ["$"]
    for part in parts:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif _IDENTIFIER.fullmatch(part):
            out.append(f".{part}")
        else:
            escaped = part.replace("\\", "\\\\").replace("'", "\\'")
            out.append(f"['{escaped}']")
    return "".join(out)


def _short(message: str) -> str:
    return message if len(message) <= _MAX_MESSAGE_CHARS else message[: _MAX_MESSAGE_CHARS - 1] + "…"


def _issues(validator: Any, payload: Any) -> list[ValidationIssue]:
    errors = itertools.islice(validator.iter_errors(payload), _MAX_ISSUES)
    ordered = sorted(errors, key=lambda e: (_path_sort_key(e.instance_path), e.message))
    return list(dict.fromkeys(ValidationIssue(_json_path(e.instance_path), _short(e.message)) for e in ordered))


def _make_check(channel: str, messages: tuple[MessageSpec, ...]) -> _Check:
    if len(messages) == 1:
        validator = messages[0]._validator
        is_valid = validator.is_valid

        def check_one(payload: Any) -> list[ValidationIssue]:
            if is_valid(payload):
                return []
            return _issues(validator, payload)

        return check_one

    by_document_type: dict[str, tuple[MessageSpec, ...]] = {}
    for message in messages:
        for dt in message.document_types:
            by_document_type[dt] = (*by_document_type.get(dt, ()), message)

    def check_one_of(payload: Any) -> list[ValidationIssue]:
        candidates = messages
        if isinstance(payload, dict):
            document_type = payload.get("documentType")
            if isinstance(document_type, str):
                candidates = by_document_type.get(document_type, messages)
        passing = [m for m in candidates if m._validator.is_valid(payload)]
        if len(passing) == 1:
            return []
        if passing:
            names = ", ".join(m.name for m in passing)
            return [ValidationIssue("$", f"matches more than one message of channel {channel!r}: {names}")]
        # Nothing matched: the closest message's issues are the ones worth reading.
        return min((_issues(m._validator, payload) for m in candidates), key=len)

    return check_one_of


class SpecRegistry:
    """Every channel of the loaded documents, each with its compiled validator(s).

    Raises:
        SpecError: two channels claim one documentType.
    """

    def __init__(self, channels: Mapping[str, ChannelSpec], documents: Sequence[dict[str, Any]] = ()) -> None:
        self.channels: Mapping[str, ChannelSpec] = MappingProxyType(dict(channels))
        self.documents: list[dict[str, Any]] = list(documents)
        self._checks: dict[str, _Check] = {name: spec._check for name, spec in self.channels.items()}
        self._by_document_type: dict[str, str] = {}
        for name, spec in self.channels.items():
            for dt in spec.document_types:
                owner = self._by_document_type.setdefault(dt, name)
                if owner != name:
                    raise SpecError(
                        f"{spec.source_file}: channel {name!r} claims documentType {dt!r}, "
                        f"already claimed by channel {owner!r} ({self.channels[owner].source_file})"
                    )

    def __repr__(self) -> str:
        return f"SpecRegistry({len(self.channels)} channels from {len(self.documents)} documents)"

    def has_channel(self, name: str) -> bool:
        """Whether `name` is a channel of the loaded documents."""
        return name in self._checks

    def channel_for_document_type(self, document_type: str) -> str | None:
        """The channel whose message declares `document_type`, or None."""
        return self._by_document_type.get(document_type)

    def validate(self, channel: str, payload: Any) -> list[ValidationIssue]:
        """Schema issues of `payload` on `channel`, sorted by path; empty when the payload is valid.

        On a channel with several messages the payload is checked against the message(s) declaring
        its documentType, else against all of them with `oneOf` semantics (exactly one must match).
        At most 100 issues are reported.

        Raises:
            KeyError: `channel` is not a loaded channel.
        """
        return self._checks[channel](payload)


def builtin_spec_paths() -> list[Path]:
    """The AsyncAPI documents shipped with the relay: the ION Events spec and the relay's own.

    Looks in the installed package (`relay/_specs/`) first, then in the source tree (`specs/asyncapi/`).

    Raises:
        SpecError: neither place holds both documents.
    """
    package = Path(__file__).resolve().parent
    for folder in (package / "_specs", package.parent / "specs" / "asyncapi"):
        paths = [folder / name for name in _BUILTIN_NAMES]
        if all(p.is_file() for p in paths):
            return paths
    raise SpecError(f"the shipped AsyncAPI documents ({', '.join(_BUILTIN_NAMES)}) are missing from {package}")


class _RefResolver:
    """Inlines local `$ref`s of one document, refusing cycles, external refs and runaway growth."""

    def __init__(self, root: Any, path: Path) -> None:
        self.root = root
        self.path = path
        self.budget = _MAX_RESOLVED_NODES

    def tokens(self, ref: str, at: str) -> tuple[str, ...]:
        if not ref.startswith("#"):
            raise SpecError(
                f"{self.path}: $ref {ref!r} at {at} points outside the document; "
                "external references are not supported: inline it or use a local '#/…' pointer"
            )
        fragment = unquote(ref[1:])
        if not fragment:
            return ()
        if not fragment.startswith("/"):
            raise SpecError(f"{self.path}: $ref {ref!r} at {at} is not a JSON pointer ('#/components/…')")
        return tuple(t.replace("~1", "/").replace("~0", "~") for t in fragment[1:].split("/"))

    def target(self, ref: str, tokens: tuple[str, ...], at: str) -> Any:
        node = self.root
        for token in tokens:
            if isinstance(node, dict) and token in node:
                node = node[token]
            elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
                node = node[int(token)]
            else:
                raise SpecError(f"{self.path}: $ref {ref!r} at {at} does not resolve (no {token!r} there)")
        return node

    def resolve(self, node: Any, at: tuple[str, ...], stack: tuple[tuple[tuple[str, ...], str], ...]) -> Any:
        self.budget -= 1
        if self.budget < 0:
            raise SpecError(f"{self.path}: the document grows past {_MAX_RESOLVED_NODES} nodes once $refs are inlined")
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                where = _pointer(at)
                tokens = self.tokens(ref, where)
                if any(seen == tokens for seen, _ in stack):
                    chain = " -> ".join([*(r for _, r in stack), ref])
                    raise SpecError(f"{self.path}: $ref cycle at {where}: {chain}")
                target = self.resolve(self.target(ref, tokens, where), tokens, (*stack, (tokens, ref)))
                siblings = {k: v for k, v in node.items() if k != "$ref"}
                if siblings and isinstance(target, dict):
                    return {**target, **self.resolve(siblings, at, stack)}
                return target
            return {str(k): self.resolve(v, (*at, str(k)), stack) for k, v in node.items()}
        if isinstance(node, list):
            return [self.resolve(v, (*at, str(i)), stack) for i, v in enumerate(node)]
        return node


def _pointer(tokens: Sequence[str]) -> str:
    return "#/" + "/".join(t.replace("~", "~0").replace("/", "~1") for t in tokens)


def load_spec_document(path: str | Path) -> dict[str, Any]:
    """Read one AsyncAPI 2.x or 3.x document (YAML or JSON) with its local `$ref`s inlined.

    Args:
        path: the document's file.

    Returns:
        The document as plain dicts and lists, every `#/…` reference replaced by a copy of its target.

    Raises:
        SpecError: unreadable, not YAML, not AsyncAPI 2.x/3.x, without channels, an external `$ref`, a
            `$ref` that does not resolve (the message names the pointer), or a `$ref` cycle.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SpecError(f"{path}: cannot read: {reason}") from None
    try:
        raw = yaml.load(text, Loader=_SpecLoader)  # noqa: S506 - _SpecLoader is a SafeLoader
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: not an AsyncAPI document (expected a mapping at the top)")
    version = str(raw.get("asyncapi", ""))
    if not version.startswith(("2.", "3.")):
        raise SpecError(f"{path}: not an AsyncAPI 2.x or 3.x document (asyncapi: {version or 'missing'})")
    if not isinstance(raw.get("channels"), dict) or not raw["channels"]:
        raise SpecError(f"{path}: the document has no channels")
    try:
        resolved: dict[str, Any] = _RefResolver(raw, path).resolve(raw, (), ())
    except RecursionError:
        raise SpecError(f"{path}: the document is nested too deeply") from None
    return resolved


def _check_schema_format(schema_format: Any, where: str) -> None:
    if not isinstance(schema_format, str) or not schema_format.replace(" ", "").lower().startswith(
        _JSON_SCHEMA_FORMATS
    ):
        raise SpecError(f"{where}: schemaFormat {schema_format!r} is not supported (only AsyncAPI / JSON Schema)")


def _raw_messages(channel: Mapping[str, Any], version: str) -> Iterator[tuple[str | None, Any]]:
    if version.startswith("2."):
        for operation in ("subscribe", "publish"):
            op = channel.get(operation)
            message = op.get("message") if isinstance(op, Mapping) else None
            if isinstance(message, Mapping) and isinstance(message.get("oneOf"), list):
                yield from ((None, m) for m in message["oneOf"])
            elif message is not None:
                yield None, message
    else:
        messages = channel.get("messages")
        if isinstance(messages, Mapping):
            yield from messages.items()


def _message_spec(key: str | None, raw: Any, version: str, where: str, index: int) -> MessageSpec:
    if not isinstance(raw, Mapping):
        raise SpecError(f"{where}: message {key or index} is not a mapping")
    name = str(raw.get("name") or raw.get("messageId") or key or raw.get("title") or f"message{index}")
    payload = raw.get("payload")
    if version.startswith("2.") and "schemaFormat" in raw:
        _check_schema_format(raw["schemaFormat"], f"{where}: message {name!r}")
    if version.startswith("3.") and isinstance(payload, Mapping) and "schemaFormat" in payload and "schema" in payload:
        _check_schema_format(payload["schemaFormat"], f"{where}: message {name!r}")
        payload = payload["schema"]
    if not isinstance(payload, dict):
        raise SpecError(f"{where}: message {name!r} has no payload schema")
    try:
        return MessageSpec(
            name=name,
            payload_schema=payload,
            title=str(raw.get("title") or ""),
            summary=str(raw.get("summary") or ""),
            description=str(raw.get("description") or ""),
        )
    except SpecError as exc:
        raise SpecError(f"{where}: message {name!r}: {exc}") from None


def _channels_of(document: Mapping[str, Any], path: Path) -> Iterator[ChannelSpec]:
    version = str(document["asyncapi"])
    for key, channel in document["channels"].items():
        if not isinstance(channel, Mapping):
            raise SpecError(f"{path}: channel {key!r} is not a mapping")
        address = channel.get("address") if version.startswith("3.") else None
        name = address if isinstance(address, str) and address else str(key)
        where = f"{path}: channel {name!r}"
        messages: list[MessageSpec] = []
        for index, (message_key, raw) in enumerate(_raw_messages(channel, version)):
            message = _message_spec(message_key, raw, version, where, index)
            # A 2.x channel may list one message under both publish and subscribe.
            if all(m.payload_schema != message.payload_schema for m in messages):
                messages.append(message)
        if not messages:
            raise SpecError(f"{where}: the channel has no message")
        first = messages[0]
        yield ChannelSpec(
            name=name,
            message_name=first.name,
            document_type=first.document_types[0] if first.document_types else None,
            payload_schema=first.payload_schema,
            source_file=str(path),
            description=str(channel.get("description") or ""),
            messages=tuple(messages),
        )


def load_specs(paths: Sequence[str | Path]) -> SpecRegistry:
    """Load AsyncAPI documents and compile a validator for every message of every channel.

    A channel defined by several documents with the same payload schemas is loaded once.

    Args:
        paths: AsyncAPI 2.x/3.x documents, YAML or JSON.

    Returns:
        The registry of every channel.

    Raises:
        SpecError: a document cannot be loaded (see `load_spec_document`), a channel has no message
            or a payload schema that does not compile, two documents define one channel with different
            payloads, or two channels claim one documentType.
    """
    channels: dict[str, ChannelSpec] = {}
    documents: list[dict[str, Any]] = []
    for p in paths:
        path = Path(p)
        document = load_spec_document(path)
        documents.append(document)
        for spec in _channels_of(document, path):
            known = channels.get(spec.name)
            if known is None:
                channels[spec.name] = spec
            elif [m.payload_schema for m in known.messages] != [m.payload_schema for m in spec.messages]:
                raise SpecError(
                    f"{path}: channel {spec.name!r} is already defined with a different payload in {known.source_file}"
                )
    return SpecRegistry(channels, documents)


def _component_key(name: str, used: set[str]) -> str:
    key = re.sub(r"[^A-Za-z0-9_.\-]", "_", name) or "Message"
    base, n = key, 2
    while key in used:
        key, n = f"{base}{n}", n + 1
    used.add(key)
    return key


def _message_component(message: MessageSpec, key: str, version: str) -> dict[str, Any]:
    out: dict[str, Any] = {"name": message.name}
    if version == "2.6":
        out["messageId"] = key
    for attr in ("title", "summary", "description"):
        if value := getattr(message, attr):
            out[attr] = value
    out["contentType"] = "application/json"
    out["payload"] = copy.deepcopy(message.payload_schema)
    return out


def export_document(registry: SpecRegistry, version: Literal["2.6", "3.0"] = "2.6") -> dict[str, Any]:
    """One AsyncAPI document describing every channel subscribers can receive.

    Args:
        registry: the loaded channels.
        version: "2.6" for AsyncAPI 2.6.0 (a `subscribe` operation per channel) or "3.0" for AsyncAPI
            3.0.0 (channels with `address` and `messages`, one `send` operation per channel), which
            AsyncAPI 3 code generators such as asyncapi-python accept.

    Returns:
        The document as plain dicts (dump it with `yaml.safe_dump`); `load_specs` loads it again with
        the same channels and the same validation results.
    """
    info = {
        "title": "erp-relay events",
        "version": "1.0.0",
        "description": (
            "Events that erp-relay delivers to subscribers as signed Standard Webhooks POSTs. Headers: "
            "webhook-id (the eventId), webhook-timestamp, webhook-signature, content-type, relay-channel, "
            "relay-source, relay-attempt, relay-replay."
        ),
    }
    used: set[str] = set()
    components: dict[str, Any] = {}
    keys_of: dict[str, list[str]] = {}
    for name, spec in registry.channels.items():
        keys_of[name] = []
        for message in spec.messages:
            key = _component_key(message.name, used)
            components[key] = _message_component(message, key, version)
            keys_of[name].append(key)

    if version == "2.6":
        channels: dict[str, Any] = {}
        for name, spec in registry.channels.items():
            refs = [{"$ref": f"#/components/messages/{k}"} for k in keys_of[name]]
            channels[name] = {
                "description": spec.description or name,
                "subscribe": {
                    "operationId": _component_key(f"on_{name}", used),
                    "message": refs[0] if len(refs) == 1 else {"oneOf": refs},
                },
            }
        return {
            "asyncapi": "2.6.0",
            "info": info,
            "defaultContentType": "application/json",
            "channels": channels,
            "components": {"messages": components},
        }

    channels3: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for name, spec in registry.channels.items():
        channel_key = _component_key(name, used)
        channels3[channel_key] = {
            "address": name,
            "description": spec.description or name,
            "messages": {k: {"$ref": f"#/components/messages/{k}"} for k in keys_of[name]},
        }
        operations[_component_key(f"send_{channel_key}", used)] = {
            "action": "send",
            "summary": f"erp-relay sends {name} events to subscribers",
            "channel": {"$ref": f"#/channels/{channel_key}"},
            "messages": [{"$ref": f"#/channels/{channel_key}/messages/{k}"} for k in keys_of[name]],
        }
    return {
        "asyncapi": "3.0.0",
        "info": info,
        "defaultContentType": "application/json",
        "channels": channels3,
        "operations": operations,
        "components": {"messages": components},
    }
