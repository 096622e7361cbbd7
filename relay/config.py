"""Configuration: pydantic models of the YAML file, `${ENV}` interpolation, `*_file` secrets, overrides.

Loading order: read YAML → interpolate `${VAR}` / `${VAR:-default}` in every string → replace each
`<secret>_file` key by the file's content → apply `RELAY_SECTION__KEY=value` environment overrides →
validate with the models below (unknown keys are errors that name the key).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    model_validator,
)

from relay.guard import url_refusal
from relay.signing import header_refusal, parse_secret

__all__ = [
    "UNRESOLVED_SECRET",
    "Config",
    "ConfigError",
    "ConsoleConfig",
    "NamedToken",
    "QuarantineConfig",
    "SubscriberConfig",
    "load_config",
    "parse_duration",
    "parse_size",
]


class ConfigError(Exception):
    """A configuration that cannot be used; `problems` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """Parse `500ms`, `5s`, `30m`, `2h`, `3d` or a number of seconds into seconds.

    Raises:
        ValueError: for anything else, including negative numbers.
    """
    if isinstance(value, bool):
        raise ValueError("expected a duration like 500ms, 5s, 30m, 2h or 3d")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        match = _DURATION_RE.match(value)
        if match:
            return float(match.group(1)) * _UNIT_S[match.group(2)]
    raise ValueError(f"expected a duration like 500ms, 5s, 30m, 2h or 3d, got {value!r}")


Duration = Annotated[float, BeforeValidator(parse_duration)]

_SIZE_RE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB)?\s*$")
_UNIT_BYTES = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, None: 1}


def parse_size(value: Any) -> int:
    """Parse `512KiB`, `64MiB`, `1GiB`, `100B` or a number of bytes into bytes.

    Raises:
        ValueError: for anything else, including negative numbers.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        if match:
            return int(match.group(1)) * _UNIT_BYTES[match.group(2)]
    raise ValueError(f"expected a size like 512KiB, 64MiB, 1GiB or a number of bytes, got {value!r}")


ByteSize = Annotated[int, BeforeValidator(parse_size)]


def _check_listen(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("expected host:port, e.g. 127.0.0.1:8080")
    if not host:
        raise ValueError("expected host:port with a host, e.g. 0.0.0.0:8080")
    return value


def _check_whsec(value: str) -> str:
    parse_secret(value)
    return value


WebhookSecret = Annotated[str, AfterValidator(_check_whsec)]


def _check_secret(value: str) -> str:
    # `${TOKEN:-}` with the variable unset gives "": an empty secret must stop the load, not accept a blank one.
    # str.strip() here is Unicode-aware on purpose: U+00A0, U+2003 and \x1c alone are blank too.
    if not value.strip():
        raise ValueError("must not be empty or only whitespace")
    return value


def _check_header_credential(value: str) -> str:
    _check_secret(value)
    # A request's header value loses its surrounding spaces and tabs and cannot carry control characters,
    # so a token with either could never be presented.
    if value != value.strip(" \t"):
        raise ValueError("must not start or end with a space or tab")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value if ch != "\t"):
        raise ValueError("must not contain control characters")
    return value


# Secrets the relay compares or sends; the messages name the key, never the value.
Secret = Annotated[str, AfterValidator(_check_secret)]
# Tokens and keys a client sends as a header value and the relay compares byte for byte.
HeaderCredential = Annotated[str, AfterValidator(_check_header_credential)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# ---------------------------------------------------------------------------------------- store, server


class StoreConfig(_Model):
    url: str = "sqlite:///relay.db"
    retention_s: Duration = Field(default=30 * 86400.0, alias="retention")
    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    batch_max: int = Field(default=512, ge=1, le=10000)
    busy_timeout_s: Duration = Field(default=5.0, alias="busy_timeout")
    poll_lease_s: Duration = Field(default=30.0, gt=0, alias="poll_lease")

    @model_validator(mode="after")
    def _known_scheme(self) -> StoreConfig:
        if not self.url.startswith(("sqlite://", "postgresql://", "postgres://")):
            raise ValueError("store.url must start with sqlite:// or postgresql://")
        return self


class QuarantineConfig(_Model):
    """Refused input kept for inspection (`relay quarantine list`), within a size budget and an age."""

    max_bytes: ByteSize = Field(default=64 * 1024**2, ge=0)
    retention_s: Duration = Field(default=7 * 86400.0, alias="retention")


class ServerConfig(_Model):
    listen: Annotated[str, AfterValidator(_check_listen)] = "127.0.0.1:8080"
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    drain_grace_s: Duration = Field(default=10.0, alias="drain_grace")
    read_timeout_s: Duration = Field(default=30.0, gt=0, alias="read_timeout")
    # Bodies read before their sender is known (signature sources); declared lengths, chunked as max_body_bytes.
    max_unauthenticated_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    max_unauthenticated_body_bytes_per_source: int = Field(default=16 * 1024 * 1024, ge=1024)

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class NamedToken(_Model):
    """An admin or viewer token with the name operator actions are logged under."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@#-]{0,63}$")]
    token: HeaderCredential


Role = Literal["admin", "viewer"]


def _admin_token(value: Any) -> str | NamedToken:
    # One validator rather than a union, so a bad entry gets one message at its own place (`admin.tokens[1]`).
    if isinstance(value, NamedToken):
        return value
    if isinstance(value, Mapping):
        try:
            return NamedToken.model_validate(value)
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in err["loc"])
            problem = "unknown key" if err["type"] == "extra_forbidden" else str(err["msg"])
            raise ValueError(f"{where}: {problem.removeprefix('Value error, ')}") from None
    if not isinstance(value, str):
        raise ValueError("expected a token, or {name, token}")
    return _check_header_credential(value)


AdminToken = Annotated[str | NamedToken, PlainValidator(_admin_token)]


class AdminConfig(_Model):
    tokens: list[AdminToken] = Field(default_factory=list)
    viewer_tokens: list[AdminToken] = Field(default_factory=list)

    @property
    def token_values(self) -> list[str]:
        """The admin tokens themselves, as the admin API compares them."""
        return [t.token if isinstance(t, NamedToken) else t for t in self.tokens]

    def identities(self) -> list[tuple[str, str, Role]]:
        """(name, token, role) of every token: admin ones first; a plain token is named by its place
        (`admin#1`, `viewer#2`)."""
        out: list[tuple[str, str, Role]] = []
        for role, tokens in (("admin", self.tokens), ("viewer", self.viewer_tokens)):
            for i, t in enumerate(tokens, start=1):
                if isinstance(t, NamedToken):
                    out.append((t.name, t.token, role))  # type: ignore[arg-type]
                else:
                    out.append((f"{role}#{i}", t, role))  # type: ignore[arg-type]
        return out

    @model_validator(mode="after")
    def _unique_token_names(self) -> AdminConfig:
        seen: set[str] = set()
        for name, _, _ in self.identities():
            if name in seen:
                raise ValueError(f"token name {name!r} is used twice")
            seen.add(name)
        return self


class ConsoleConfig(_Model):
    """The operator console in the browser under `/ui/` (sign in with an admin or viewer token)."""

    enabled: bool = True
    session_ttl_s: Duration = Field(default=8 * 3600.0, gt=0, alias="session_ttl")
    secure_cookies: Literal["auto", "true", "false"] = "auto"

    # YAML reads a bare true/false as a boolean: take both spellings.
    @model_validator(mode="before")
    @classmethod
    def _bool_spelling(cls, raw: Any) -> Any:
        if isinstance(raw, Mapping) and isinstance(raw.get("secure_cookies"), bool):
            return {**raw, "secure_cookies": "true" if raw["secure_cookies"] else "false"}
        return raw


class StateConfig(_Model):
    """Who may read the current state of keys (`GET /v1/state/…`) besides admin tokens."""

    tokens: list[HeaderCredential] = Field(default_factory=list)


class HealthConfig(_Model):
    """When a polled resource is announced failing on `relay/source-health` (see docs/onboarding.md)."""

    failures_before_failing: int = Field(
        default=3, ge=1, description="consecutive failed polls of a resource before it is announced failing"
    )


class LoggingConfig(_Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class DeliveryConfig(_Model):
    """Dispatcher-wide settings; per-subscriber ones live on the subscriber."""

    lease_s: Duration = Field(default=30.0, ge=1.0, alias="lease")
    poll_interval_s: Duration = Field(default=0.5, alias="poll_interval")
    max_concurrency: int = Field(default=256, ge=1)
    retry_after_cap_s: Duration = Field(default=3600.0, alias="retry_after_cap")


# ---------------------------------------------------------------------------------------- source auth


class BasicAuth(_Model):
    type: Literal["basic"]
    username: Secret
    password: Secret


class BearerAuth(_Model):
    type: Literal["bearer"]
    tokens: list[HeaderCredential] = Field(default_factory=list)
    token: HeaderCredential | None = None

    @model_validator(mode="after")
    def _some_token(self) -> BearerAuth:
        if not self.tokens and not self.token:
            raise ValueError("bearer auth needs `tokens` (or `token`)")
        return self

    @property
    def all_tokens(self) -> list[str]:
        return [*self.tokens, *([self.token] if self.token else [])]


class ApiKeyAuth(_Model):
    type: Literal["api-key"]
    header: str = "X-API-Key"
    keys: list[HeaderCredential] = Field(min_length=1)


class StandardWebhooksAuth(_Model):
    type: Literal["standard-webhooks"]
    secrets: list[WebhookSecret] = Field(default_factory=list)
    secret: WebhookSecret | None = None
    tolerance_s: Duration = Field(default=300.0, alias="tolerance")

    @model_validator(mode="after")
    def _some_secret(self) -> StandardWebhooksAuth:
        if not self.secrets and not self.secret:
            raise ValueError("standard-webhooks auth needs `secret` (or `secrets`)")
        return self

    @property
    def all_secrets(self) -> list[str]:
        return [*self.secrets, *([self.secret] if self.secret else [])]


class NoAuth(_Model):
    type: Literal["none"]


InboundAuth = Annotated[
    BasicAuth | BearerAuth | ApiKeyAuth | StandardWebhooksAuth | NoAuth, Field(discriminator="type")
]


class OAuth2ClientCredentials(_Model):
    type: Literal["oauth2-client-credentials"]
    token_url: str
    client_id: str
    client_secret: Secret
    scope: str | None = None


class OutboundBearer(_Model):
    type: Literal["bearer"]
    token: Secret


class ConnectedAppAuth(_Model):
    """Sage X3 GraphQL connected application: the relay signs its own HS256 JWT."""

    type: Literal["connected-app"]
    client_id: str
    client_secret: Secret
    user: str
    audience: str = ""
    token_ttl_s: Duration = Field(default=300.0, alias="token_ttl")


OutboundAuth = Annotated[
    BasicAuth | OAuth2ClientCredentials | OutboundBearer | ConnectedAppAuth | NoAuth,
    Field(discriminator="type"),
]


# ---------------------------------------------------------------------------------------- sources


class _SourceBase(_Model):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


class JsonPushSource(_SourceBase):
    kind: Literal["json-push"]
    auth: InboundAuth
    channels: list[str] | None = None  # None: every channel of the loaded specs


_DEFAULT_SCHEDULE = [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]


class RetryConfig(_Model):
    schedule_s: list[Duration] = Field(default_factory=lambda: list(_DEFAULT_SCHEDULE), alias="schedule")
    max_age_s: Duration = Field(default=3 * 86400.0, alias="max_age")


ConfirmationCode = Literal["OnError", "Always"]
_CONFIRM_ON: list[ConfirmationCode] = ["OnError", "Always"]


class IonConfirm(_Model):
    """ConfirmBODs back to ION for refused BODs whose sender asked for one (`Sender/ConfirmationCode`)."""

    ionapi_file: str = Field(description="`.ionapi` file with a service account, for the ION API gateway")
    logical_id: Annotated[str, Field(pattern=r"^lid://\S+$")] = Field(
        description="the relay's logical id in ION (`fromLogicalId` of the ConfirmBODs)"
    )
    codes: list[ConfirmationCode] = Field(
        default_factory=lambda: list(_CONFIRM_ON),
        min_length=1,
        description="the ConfirmationCodes answered with a ConfirmBOD when a BOD is refused",
    )
    path: str = Field(
        default="IONSERVICES/api/ion/messaging/service/v2/multipartMessage",
        description="the IMS path under the gateway's `iu/ti`",
    )
    timeout_s: Duration = Field(default=30.0, gt=0, alias="timeout")
    max_pending: int = Field(
        default=10000, ge=1, description="ConfirmBODs kept waiting at most; later ones are dropped"
    )
    retry: RetryConfig = Field(
        default_factory=lambda: RetryConfig(schedule=[5.0, 60.0, 300.0, 1800.0, 7200.0], max_age=86400.0)
    )


class IonImsSource(_SourceBase):
    kind: Literal["ion-ims"]
    auth: InboundAuth
    tenant_id: str | None = None
    accepted_documents: list[str] | None = None  # None: every mapped document name
    mappings: dict[str, Any] = Field(default_factory=dict)
    confirm: IonConfirm | None = None

    @model_validator(mode="after")
    def _header_auth(self) -> IonImsSource:
        # The ION API gateway authenticates with headers (basic, bearer/JWT, API key) or mutual TLS at a proxy.
        if isinstance(self.auth, StandardWebhooksAuth):
            raise ValueError("ion-ims sources take basic, bearer, api-key or none auth")
        return self


class _PollBase(_Model):
    channel: str
    every_s: Duration = Field(default=60.0, alias="every")
    cron: str | None = None
    jitter: float = Field(default=0.1, ge=0, le=1)
    reconcile_every_s: Duration | None = Field(default=None, alias="reconcile_every")
    mapping: dict[str, Any] = Field(default_factory=dict)


_RATE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|m|h)\s*$")


def parse_rate(value: Any) -> float | None:
    """`5/s`, `30/m`, `100/h` or a number (per second) → requests per second; None or `0` → unlimited."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        rate = float(value)
    else:
        match = _RATE_RE.match(str(value))
        if match is None:
            raise ValueError(f"not a rate: {value!r} (use 5/s, 30/m or 100/h)")
        rate = float(match.group(1)) / {"s": 1.0, "m": 60.0, "h": 3600.0}[match.group(2)]
    if rate < 0:
        raise ValueError("a rate cannot be negative")
    return rate or None


Rate = Annotated[float | None, BeforeValidator(parse_rate)]
CommandName = Literal["order/create", "customer/create", "customer/update"]
COMMAND_NAMES: tuple[CommandName, ...] = ("order/create", "customer/create", "customer/update")
_DEFAULT_COMMAND_SCHEDULE = [2.0, 10.0, 60.0, 300.0, 1800.0]
# What `commands.mappings.<command>` may override (relay/commands/mapping.py reads them).
_MAPPING_KEYS = frozenset(
    {"fields", "line_fields", "defaults", "lines_field", "class", "representation", "reference_field", "number_field",
     "operation", "lookup"}
)  # fmt: skip


class CommandRetryConfig(_Model):
    schedule_s: list[Duration] = Field(default_factory=lambda: list(_DEFAULT_COMMAND_SCHEDULE), alias="schedule")
    max_age_s: Duration = Field(default=86400.0, alias="max_age")


class CommandsConfig(_Model):
    """Write-back: services send commands (create an order, a customer) that the relay executes in the ERP."""

    auth: InboundAuth
    allow: list[CommandName] = Field(default_factory=lambda: list(COMMAND_NAMES))
    max_in_flight: int = Field(default=2, ge=1)
    rate_limit: Rate = None
    retry: CommandRetryConfig = Field(default_factory=CommandRetryConfig)
    lease_s: Duration = Field(default=120.0, ge=1.0, alias="lease")
    mappings: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_mappings(self) -> CommandsConfig:
        if unknown := sorted(set(self.mappings) - set(COMMAND_NAMES)):
            raise ValueError(f"mappings for unknown commands: {', '.join(unknown)} (known: {', '.join(COMMAND_NAMES)})")
        for command, override in self.mappings.items():
            if unknown := sorted(set(override) - _MAPPING_KEYS):
                raise ValueError(
                    f"mappings.{command}: unknown keys {', '.join(unknown)} (known: {', '.join(sorted(_MAPPING_KEYS))})"
                )
            for table in ("fields", "line_fields", "defaults"):
                if not isinstance(override.get(table, {}), Mapping):
                    raise ValueError(f"mappings.{command}.{table} must map ERP fields to canonical fields")
        return self


class X3Resource(_PollBase):
    class_: str = Field(alias="class")
    representation: str | None = None
    key: str | None = None
    updated_field: str | None = None  # None: UPDDATTIM (REST) or _updateStamp (GraphQL)
    page_size: int = Field(default=100, ge=1, le=10000)
    node: str | None = None  # GraphQL: `package.node`, e.g. x3Purchasing.purchaseOrder; None: the class's default


class LookupConfig(_Model):
    """Live availability lookups through this source (`GET /v1/sources/{source}/availability`)."""

    auth: InboundAuth = Field(description="who may look up: the same auth types as json-push sources")
    timeout_s: Duration = Field(default=2.0, gt=0, alias="timeout", description="then answer from the store")
    cache_ttl_s: Duration = Field(default=5.0, alias="cache_ttl", description="how long a live answer is reused")
    max_in_flight: int = Field(default=4, ge=1, le=256, description="ERP calls at once (protects the ERP)")
    rate_limit: float | None = Field(default=None, gt=0, description="ERP calls per second at most")

    @model_validator(mode="after")
    def _header_auth(self) -> LookupConfig:
        if isinstance(self.auth, StandardWebhooksAuth):
            raise ValueError("lookup auth takes basic, bearer, api-key or none (a GET has no body to sign)")
        return self


class X3Source(_SourceBase):
    kind: Literal["x3"]
    base_url: str
    folder: str
    api: Literal["rest", "graphql"] = "rest"
    folder_header: str | None = None
    auth: OutboundAuth
    timeout_s: Duration = Field(default=30.0, alias="timeout")
    resources: list[X3Resource] = Field(default_factory=list)
    lookup: LookupConfig | None = None
    commands: CommandsConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _connected_app_audience(cls, raw: Any) -> Any:
        # X3 compares the JWT `aud` with the URL registered on the connected application (the GraphQL
        # endpoint): without an explicit audience, send that URL rather than a token X3 refuses.
        if not isinstance(raw, Mapping):
            return raw
        auth, base_url = raw.get("auth"), raw.get("base_url")
        wants_audience = isinstance(auth, Mapping) and auth.get("type") == "connected-app" and not auth.get("audience")
        if wants_audience and isinstance(auth, Mapping) and isinstance(base_url, str):
            return {**raw, "auth": {**auth, "audience": base_url.rstrip("/") + "/xtrem/api"}}
        return raw

    @model_validator(mode="after")
    def _graphql_nodes(self) -> X3Source:
        if not self.resources and self.commands is None:
            raise ValueError("an x3 source needs `resources` to poll or `commands` to accept (or both)")
        for resource in self.resources:
            if resource.node is not None and resource.node.count(".") != 1:
                raise ValueError(f"resource {resource.class_}: node must read `package.node`, got {resource.node!r}")
        return self


class SxeFeed(_PollBase):
    """One SX.e feed: a FetchWhere table (icsw, arsc, oeeh, poeh, receipts, apsv, or `table:`) or a search."""

    feed: str = Field(
        description="icsw, arsc, oeeh, poeh, receipts, apsv (FetchWhere tables), customer-search, order-list"
    )
    table: str | None = Field(default=None, description="any other SX.e table read with FetchWhere (give `mapping`)")
    where: str | None = Field(
        default=None,
        description="extra FetchWhere WhereClause, ANDed with the company and date (replaces `receipts`' stages)",
    )
    lookback_s: Duration = Field(default=0.0, alias="lookback", description="order-list: days before the last poll")
    record_limit: int = Field(default=500, ge=1, description="FetchWhere BatchSize; recordLimit of searches")

    @model_validator(mode="after")
    def _custom_table(self) -> SxeFeed:
        if self.table is not None and not (self.mapping.get("fields") or {}):
            raise ValueError("a `table:` feed needs `mapping: {fields: …}` naming at least the key field")
        return self


def _check_zone(value: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown IANA time zone {value!r} (e.g. America/Chicago)") from None
    return value


class SxeSource(_SourceBase):
    """Infor SX.e through the ION API gateway; `timezone`: the SX.e server's IANA zone (its dates carry none)."""

    kind: Literal["sxe"]
    ionapi_file: str
    company_number: int = 1
    operator_init: str = "api"
    operator_password: str = ""
    timezone: Annotated[str, AfterValidator(_check_zone)] = Field(
        description="IANA zone of the SX.e server: its dates and times carry none"
    )
    service_path: str = Field(
        default="SX/rest/sxapirestservice", description="some tenants use SX/web/sxapirestservice"
    )
    fetchwhere_path: str = "SX/rest/serviceinterface/proxy/FetchWhere"
    timeout_s: Duration = Field(default=30.0, alias="timeout")
    feeds: list[SxeFeed] = Field(default_factory=list)
    lookup: LookupConfig | None = None
    commands: CommandsConfig | None = None

    @model_validator(mode="after")
    def _feeds_or_commands(self) -> SxeSource:
        if not self.feeds and self.commands is None:
            raise ValueError("an sxe source needs `feeds` to poll or `commands` to accept (or both)")
        return self


class HttpJsonResource(_PollBase):
    url: str
    records_path: str = ""
    key: str
    updated_field: str | None = None
    updated_param: str | None = None
    cursor_param: str | None = None
    cursor_path: str | None = None
    next_link_path: str | None = None


class HttpJsonSource(_SourceBase):
    kind: Literal["http-json"]
    tenant_id: str | None = None
    auth: OutboundAuth = Field(default_factory=lambda: NoAuth(type="none"))
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: Duration = Field(default=30.0, alias="timeout")
    resources: list[HttpJsonResource] = Field(min_length=1)


SourceConfig = Annotated[
    JsonPushSource | IonImsSource | X3Source | SxeSource | HttpJsonSource, Field(discriminator="kind")
]


# ---------------------------------------------------------------------------------------- subscribers

# Headers every delivery carries (Standard Webhooks and the relay's own) and the ones the HTTP client frames.
_RELAY_HEADERS = frozenset(
    {
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "relay-channel",
        "relay-source",
        "relay-attempt",
        "relay-replay",
        "content-type",
        "content-length",
        "transfer-encoding",
        "host",
    }
)


class CircuitConfig(_Model):
    failure_threshold: int = Field(default=5, ge=1)
    cooldown_s: Duration = Field(default=30.0, alias="cooldown")


FilterValue = str | int | float | bool | None


class SubscriberConfig(_Model):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    url: str
    secrets: list[WebhookSecret] = Field(min_length=1)
    channels: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    filter: dict[str, FilterValue | list[FilterValue]] = Field(default_factory=dict)
    format: Literal["json", "xml"] = "json"
    ordering: Literal["per-key", "none"] = "none"
    deliver_stale: bool = False
    collapse: bool = False
    max_in_flight: int = Field(default=16, ge=1, le=1024)
    rate_limit: float | None = Field(default=None, gt=0)
    timeout_s: Duration = Field(default=15.0, alias="timeout")
    retry: RetryConfig = Field(default_factory=RetryConfig)
    circuit: CircuitConfig = Field(default_factory=CircuitConfig)
    headers: dict[str, str] = Field(default_factory=dict)
    allow_private_network: bool = False

    @model_validator(mode="after")
    def _url_allowed(self) -> SubscriberConfig:
        reason = url_refusal(self.url, allow_private_network=self.allow_private_network)
        if reason:
            # The hint only where it would help: some URLs are refused whatever the setting.
            hint = (
                ""
                if url_refusal(self.url, allow_private_network=True)
                else " (set allow_private_network: true to allow)"
            )
            raise ValueError(f"url refused: {reason}{hint}")
        return self

    @model_validator(mode="after")
    def _headers_sendable(self) -> SubscriberConfig:
        for name, value in self.headers.items():
            # A value no request can carry would fail every attempt; a name the relay sets would be sent twice.
            reason = header_refusal(name, value)
            if reason:
                raise ValueError(f"headers: {reason}")
            if name.lower() in _RELAY_HEADERS:
                raise ValueError(f"headers: {name} is set by the relay on every delivery and cannot be configured")
        return self


# ---------------------------------------------------------------------------------------- rules


class RuleConfig(_Model):
    """A derived-event rule: `emit` once when `when` becomes true for a key, `emit_clear` once it clears.

    Expressions are CEL over the triggering event (`data`, `event`, `channel`, `key`), compiled and
    type-checked when the configuration loads.
    """

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    on: str = Field(description="the channel whose events the rule watches, e.g. inventory/synced")
    when: str = Field(description="CEL condition that fires the rule, e.g. data.available <= 10")
    clear_when: str | None = Field(default=None, description="CEL condition that clears it (default: not `when`)")
    emit: str = Field(description="channel of the event emitted when the rule fires, e.g. inventory/low-stock")
    emit_clear: str | None = Field(default=None, description="channel emitted when it clears")

    @model_validator(mode="before")
    @classmethod
    def _yaml_on(cls, raw: Any) -> Any:
        # YAML 1.1 reads a bare `on:` key as the boolean true.
        if isinstance(raw, Mapping) and True in raw and "on" not in raw:
            return {("on" if k is True else k): v for k, v in raw.items()}
        return raw

    @model_validator(mode="after")
    def _expressions_compile(self) -> RuleConfig:
        from relay.rules.cel import CelError, compile_condition

        for field_name in ("when", "clear_when"):
            expression = getattr(self, field_name)
            if expression is None:
                continue
            try:
                compile_condition(expression)
            except CelError as exc:
                raise ValueError(f"rule {self.name!r}: {field_name}: {exc}") from None
        return self


# ---------------------------------------------------------------------------------------- root


class Config(_Model):
    store: StoreConfig = Field(default_factory=StoreConfig)
    quarantine: QuarantineConfig = Field(default_factory=QuarantineConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    admin: AdminConfig = Field(default_factory=AdminConfig)
    console: ConsoleConfig = Field(default_factory=ConsoleConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    delivery: DeliveryConfig = Field(default_factory=DeliveryConfig)
    specs: list[str] = Field(default_factory=list)
    sources: list[SourceConfig] = Field(default_factory=list)
    subscribers: list[SubscriberConfig] = Field(default_factory=list)
    rules: list[RuleConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> Config:
        for what, names in (
            ("source", [s.name for s in self.sources]),
            ("subscriber", [s.name for s in self.subscribers]),
            ("rule", [r.name for r in self.rules]),
        ):
            seen: set[str] = set()
            for name in names:
                if name in seen:
                    raise ValueError(f"{what} name {name!r} is used twice")
                seen.add(name)
        return self

    def source(self, name: str) -> SourceConfig | None:
        return next((s for s in self.sources if s.name == name), None)

    def subscriber(self, name: str) -> SubscriberConfig | None:
        return next((s for s in self.subscribers if s.name == name), None)

    @property
    def spec_paths(self) -> list[Path]:
        """The AsyncAPI documents to load: the configured ones, else the shipped ones."""
        if self.specs:
            return [Path(p) for p in self.specs]
        from relay.spec import builtin_spec_paths

        return builtin_spec_paths()


# ---------------------------------------------------------------------------------------- loading

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# Keys whose `<key>_file` variant is replaced by the file's content; plural ones take one value a line.
_SECRET_KEYS = {"password", "client_secret", "secret", "token", "api_key"}
_SECRET_LIST_KEYS = {"tokens", "viewer_tokens", "secrets", "keys"}
# Keys whose `<key>_file` names a file the relay reads itself (resolved like secrets, content not inlined).
_PATH_KEYS = {"ionapi"}
_ENV_PREFIX = "RELAY_"
_ENV_IGNORED = {"RELAY_CONFIG"}
#: What stands in for a secret that `load_config(..., secrets=False)` left unresolved: it passes every secret's
#: validation (a `whsec_` key of 24 zero bytes) and is never a working credential. Only read-only commands load so.
UNRESOLVED_SECRET = "whsec_" + "A" * 32


def _needs_value(path: str) -> bool:
    # The store section locates the database: a read-only command cannot do without it.
    return path == "store" or path.startswith("store.")


def _interpolate(node: Any, env: Mapping[str, str], path: str, problems: list[str], *, secrets: bool = True) -> Any:
    if isinstance(node, str):

        def sub(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            if not secrets and not _needs_value(path):
                return UNRESOLVED_SECRET
            problems.append(f"{path or '<root>'}: environment variable {name} is not set")
            return ""

        return _ENV_RE.sub(sub, node)
    if isinstance(node, dict):
        return {k: _interpolate(v, env, _join(path, k), problems, secrets=secrets) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, env, f"{path}[{i}]", problems, secrets=secrets) for i, v in enumerate(node)]
    return node


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _secret_path(name: str, base_dir: Path, env: Mapping[str, str]) -> Path:
    path = Path(name)
    if not path.is_absolute():
        creds = env.get("CREDENTIALS_DIRECTORY")
        # systemd LoadCredential= puts secrets here; a bare name means "the credential of that name".
        path = Path(creds) / path if creds and (Path(creds) / path).is_file() else base_dir / path
    return path


def _resolve_files(
    node: Any, base_dir: Path, env: Mapping[str, str], path: str, problems: list[str], *, secrets: bool = True
) -> Any:
    if isinstance(node, list):
        return [_resolve_files(v, base_dir, env, f"{path}[{i}]", problems, secrets=secrets) for i, v in enumerate(node)]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        key_path = _join(path, key)
        stem = key[:-5] if isinstance(key, str) and key.endswith("_file") else None
        if stem in _PATH_KEYS and isinstance(value, str):
            out[key] = str(_secret_path(value, base_dir, env))
        elif stem in _SECRET_KEYS or stem in _SECRET_LIST_KEYS:
            assert stem is not None
            if stem in node:
                problems.append(f"{key_path}: give either {stem} or {key}, not both")
                continue
            if not isinstance(value, str):
                problems.append(f"{key_path}: expected a file path")
                continue
            secret_path = _secret_path(value, base_dir, env)
            if not secrets:
                out[stem] = [UNRESOLVED_SECRET] if stem in _SECRET_LIST_KEYS else UNRESOLVED_SECRET
                continue
            try:
                text = secret_path.read_text(encoding="utf-8")
            except OSError as exc:
                problems.append(f"{key_path}: cannot read secret file {secret_path}: {exc.strerror or exc}")
                continue
            except UnicodeDecodeError:
                problems.append(f"{key_path}: secret file {secret_path} is not UTF-8 text")
                continue
            if stem in _SECRET_LIST_KEYS:
                out[stem] = [line.strip() for line in text.splitlines() if line.strip()]
            else:
                out[stem] = text.strip()
        else:
            out[key] = _resolve_files(value, base_dir, env, key_path, problems, secrets=secrets)
    return out


def _apply_env_overrides(data: dict[str, Any], env: Mapping[str, str], problems: list[str]) -> None:
    for name, raw in sorted(env.items()):
        if not name.startswith(_ENV_PREFIX) or name in _ENV_IGNORED or "__" not in name:
            continue
        parts = [p.lower() for p in name[len(_ENV_PREFIX) :].split("__")]
        try:
            value = yaml.safe_load(raw) if raw.strip() else raw
        except yaml.YAMLError:
            value = raw
        node: Any = data
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    problems.append(f"{name}: no list item {part!r} to override")
                    break
                if last:
                    node[int(part)] = value
                else:
                    node = node[int(part)]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    node = node.setdefault(part, {})
            else:
                problems.append(f"{name}: cannot override inside a scalar")
                break


def _format_loc(loc: tuple[int | str, ...], data: Any) -> str:
    out = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            item = node[part] if isinstance(node, list) and 0 <= part < len(node) else None
            name = item.get("name") if isinstance(item, dict) else None
            out += f"[{name}]" if isinstance(name, str) else f"[{part}]"
            node = item
        elif isinstance(node, dict) and part not in node and part in (node.get("kind"), node.get("type")):
            continue  # the discriminator tag pydantic inserts into a union member's location
        else:
            out = _join(out, part)
            node = node.get(part) if isinstance(node, dict) else None
    return out or "<root>"


def _iter_problems(exc: ValidationError, data: Any) -> Iterator[str]:
    for err in exc.errors(include_url=False):
        where = _format_loc(tuple(err["loc"]), data)
        if err["type"] == "extra_forbidden":
            yield f"{where}: unknown key"
        elif err["type"] == "missing":
            yield f"{where}: required key is missing"
        else:
            msg = str(err["msg"]).removeprefix("Value error, ")
            yield f"{where}: {msg}"


def config_from_mapping(
    raw: Any, *, base_dir: Path | None = None, env: Mapping[str, str] | None = None, secrets: bool = True
) -> Config:
    """Build a Config from already-parsed YAML data (interpolation, files and overrides applied).

    With `secrets=False` no `*_file` secret is read and an unset `${VAR}` outside `store` is no problem: both
    become `UNRESOLVED_SECRET`. For read-only commands only; the relay never runs on such a configuration.

    Raises:
        ConfigError: with one line per problem.
    """
    env = os.environ if env is None else env
    base_dir = base_dir or Path.cwd()
    problems: list[str] = []
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(["<root>: the configuration must be a mapping of sections"])
    data = _interpolate(raw, env, "", problems, secrets=secrets)
    data = _resolve_files(data, base_dir, env, "", problems, secrets=secrets)
    _apply_env_overrides(data, env, problems)
    if problems:
        raise ConfigError(problems)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(list(_iter_problems(exc, data))) from None


def load_config(path: str | Path, *, env: Mapping[str, str] | None = None, secrets: bool = True) -> Config:
    """Read and validate a YAML configuration file (`secrets=False`: see `config_from_mapping`).

    Raises:
        ConfigError: the file cannot be read, is not YAML, or does not validate (one line per problem).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError([f"{where}: {problem}"]) from None
    return config_from_mapping(raw, base_dir=path.parent.resolve(), env=env, secrets=secrets)
