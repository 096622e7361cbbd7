"""Generates docs/configuration.md from the configuration models (a test keeps the file in sync).

Run `python -m relay.docgen > docs/configuration.md` after changing `relay/config.py`.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from relay import config as c

# One line per key that needs more than its name and type to be understood.
NOTES: dict[str, str] = {
    "StoreConfig.url": "`sqlite:///abs/path.db` (absolute), `sqlite://relative/path.db`, or "
    "`postgresql://user@host:5432/db` (libpq style; password via `password_file=`, `passfile=` or `PGPASSFILE`; "
    "see docs/scaling.md)",
    "StoreConfig.retention": "how long delivered events are kept",
    "StoreConfig.synchronous": "FULL: an acknowledged event survives power loss; NORMAL: may lose the last commits",
    "StoreConfig.batch_max": "most writes gathered into one transaction (group commit)",
    "StoreConfig.busy_timeout": "how long a write waits for another process's lock before answering 503",
    "StoreConfig.poll_lease": "PostgreSQL: how long an instance holds a polled resource without renewing; a dead "
    "holder's resources are polled elsewhere within this plus a third of it",
    "QuarantineConfig.max_bytes": (
        "bytes all quarantined inputs may hold (`64MiB`, `512KiB`, `1GiB` or a number); past it the oldest are deleted"
    ),
    "QuarantineConfig.retention": "quarantined inputs older than this are deleted",
    "ServerConfig.listen": "host:port of the HTTP server",
    "ServerConfig.max_body_bytes": "larger request bodies answer 413",
    "ServerConfig.drain_grace": "on SIGTERM, how long deliveries in flight may finish",
    "ServerConfig.read_timeout": (
        "a request's headers, and then its body, must arrive within this; slower clients get 408 or are closed"
    ),
    "ServerConfig.max_unauthenticated_body_bytes": (
        "bodies being read before their signature is checked (standard-webhooks sources), all sources together;"
        " past it 503 with Retry-After, before reading; one body is always admitted"
    ),
    "ServerConfig.max_unauthenticated_body_bytes_per_source": (
        "the same for one source; a body of unknown length counts as `max_body_bytes`"
    ),
    "AdminConfig.tokens": (
        "bearer tokens for `/v1/admin/…` and the console (use `tokens_file`, one per line; blank lines are skipped),"
        " each a string (named `admin#1`, … in the log) or `{name, token}`; none: every admin request answers 401"
    ),
    "AdminConfig.viewer_tokens": "read-only tokens for the console: they see everything and change nothing",
    "ConsoleConfig.enabled": "the operator console under `/ui/` on the main listener",
    "ConsoleConfig.session_ttl": "a console session ends this long after sign-in (sessions do not survive a restart)",
    "ConsoleConfig.secure_cookies": "auto: `Secure` cookies when reached over TLS or with `X-Forwarded-Proto: https`",
    "HealthConfig.failures_before_failing": "consecutive failed polls of a resource before it is announced failing; "
    "a new definite error right after a success is announced at once",
    "LoggingConfig.format": "auto: JSON when stdout is not a terminal (journald), readable otherwise",
    "DeliveryConfig.lease": (
        "how long a claimed delivery is reserved; renewed every third of it while the request is in flight, "
        "so a process that dies gives its deliveries up within this long (at least 1s)"
    ),
    "DeliveryConfig.poll_interval": "how often deliveries written by other processes (CLI replay) are looked for",
    "DeliveryConfig.max_concurrency": "connections open to all subscribers together",
    "DeliveryConfig.retry_after_cap": "longest Retry-After honoured",
    "SubscriberConfig.secrets": "`whsec_…` secrets; every one signs (rotation); or `secrets_file`",
    "SubscriberConfig.channels": "channel globs, e.g. `inventory/*`",
    "SubscriberConfig.filter": "dotted payload path → value or list of values; all must match",
    "SubscriberConfig.format": "xml: the original BOD bytes where the source sent XML",
    "SubscriberConfig.ordering": "per-key: one delivery in flight per entity key, in version order",
    "SubscriberConfig.deliver_stale": "with per-key ordering, still send versions older than one delivered",
    "SubscriberConfig.collapse": "a newer version supersedes pending older ones of the same key",
    "SubscriberConfig.max_in_flight": "concurrent deliveries to this subscriber",
    "SubscriberConfig.rate_limit": "deliveries per second; on PostgreSQL one limit shared by all instances",
    "SubscriberConfig.allow_private_network": "SSRF guard: loopback/private/link-local targets need true",
    "RetryConfig.schedule": "delay before each retry (±20 % jitter); past the last one the delivery is dead",
    "RetryConfig.max_age": "a delivery older than this is dead",
    "CommandsConfig.auth": "credentials of the services that send commands (the types of json-push sources)",
    "CommandsConfig.allow": "the commands this connection accepts; others answer 404",
    "CommandsConfig.max_in_flight": "most commands executing at once against this ERP (per relay process)",
    "CommandsConfig.rate_limit": "most ERP calls per time (`5/s`, `30/m`); calls are spaced evenly; none: unlimited",
    "CommandsConfig.lease": (
        "how long a running command is reserved; renewed every third of it while its ERP call is in flight, so a"
        " process that dies gives its commands up within this long, to be looked up and taken over (at least 1s)"
    ),
    "CommandsConfig.mappings": "per command: `fields`, `line_fields`, `defaults`, … (see docs/write-back.md)",
    "CommandRetryConfig.schedule": "delay before each retry of an attempt that failed or whose outcome was unknown",
    "CommandRetryConfig.max_age": "no retry starts later than this after the command was accepted; then it fails",
    "CircuitConfig.failure_threshold": "consecutive failures that open the circuit",
    "CircuitConfig.cooldown": "time open before one probe is allowed (doubles on failed probes)",
    "IonImsSource.accepted_documents": "BOD names accepted (others answer 412); default: every mapped one",
    "IonImsSource.mappings": "per-document overrides of the BOD → event mapping",
    "IonImsSource.confirm": "send ConfirmBODs to ION for refused BODs whose sender asked for one",
    "IonConfirm.ionapi_file": "`.ionapi` file with a service account: the ConfirmBODs go through its ION API gateway",
    "IonConfirm.logical_id": "the relay's logical id in ION (`lid://…`), the ConfirmBODs' `fromLogicalId`",
    "IonConfirm.codes": "the `Sender/ConfirmationCode` values answered with a ConfirmBOD when a BOD is refused",
    "IonConfirm.path": "the IMS method under the gateway's `iu/ti`",
    "IonConfirm.max_pending": "most ConfirmBODs waiting per source; past it a refusal is logged and counted",
    "IonConfirm.retry": "ConfirmBOD retries; default schedule 5s, 1m, 5m, 30m, 2h and max_age 1d",
    "JsonPushSource.channels": "channels accepted from this source; default: all",
    "X3Resource.updated_field": (
        "datetime field polled with `where=… ge @…@` (REST, default UPDDATTIM) or a `_gte` filter "
        "(GraphQL, default `_updateStamp`); must be in the representation's `$query` facet"
    ),
    "ConnectedAppAuth.audience": (
        "JWT `aud`: X3 compares it with the connected application's URL; x3 sources default it to "
        "`{base_url}/xtrem/api`"
    ),
    "X3Resource.node": "GraphQL API node `package.node` (e.g. `x3Purchasing.purchaseOrder`); default by class",
    "X3Resource.key": "key fields joined by `~` (orderBy and `key=gt.` paging); default by class",
    "StandardWebhooksAuth.tolerance": "accepted clock difference of `webhook-timestamp`",
}


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        return _type_name(get_args(annotation)[0])
    if origin is Literal:
        return " \\| ".join(f"`{a}`" for a in get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in get_args(annotation))
    if origin is list:
        return f"list of {_type_name(get_args(annotation)[0])}"
    if origin is dict:
        return "mapping"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"[{annotation.__name__}](#{annotation.__name__.lower()})"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _default(info: FieldInfo) -> str:
    if info.default is not PydanticUndefined:
        value = info.default
    elif info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
    else:
        return "required"
    if isinstance(value, BaseModel):
        return "see below"
    if info.alias and (
        any("parse_duration" in repr(m) for m in info.metadata) or "parse_duration" in repr(info.annotation)
    ):
        if isinstance(value, list):
            return "`[" + ", ".join(_duration(v) for v in value) + "]`"
        if isinstance(value, float):
            return f"`{_duration(value)}`"
    return f"`{value!r}`" if value not in (None, [], {}) else ("—" if value is None else f"`{value!r}`")


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds * 1000)}ms"


def _models() -> list[type[BaseModel]]:
    return [
        c.Config,
        c.StoreConfig,
        c.QuarantineConfig,
        c.ServerConfig,
        c.AdminConfig,
        c.HealthConfig,
        c.LoggingConfig,
        c.DeliveryConfig,
        c.SubscriberConfig,
        c.RetryConfig,
        c.CircuitConfig,
        c.JsonPushSource,
        c.IonImsSource,
        c.IonConfirm,
        c.X3Source,
        c.X3Resource,
        c.SxeSource,
        c.SxeFeed,
        c.CommandsConfig,
        c.CommandRetryConfig,
        c.HttpJsonSource,
        c.HttpJsonResource,
        c.BasicAuth,
        c.BearerAuth,
        c.ApiKeyAuth,
        c.StandardWebhooksAuth,
        c.NoAuth,
        c.OAuth2ClientCredentials,
        c.OutboundBearer,
        c.ConnectedAppAuth,
    ]


def render() -> str:
    """The configuration reference as Markdown."""
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by `python -m relay.docgen` from relay/config.py; a test keeps it in sync. -->",
        "",
        "The configuration is one YAML file (`relay serve -c FILE`, default `$RELAY_CONFIG`).",
        "",
        "- `${VAR}` and `${VAR:-default}` are replaced from the environment in every string.",
        "- Any secret key (`password`, `client_secret`, `secret`, `token`, `api_key`, and the lists `tokens`,",
        "  `secrets`, `keys`) may be given as `<key>_file: NAME`: the file's content (one value a line for lists).",
        "  A relative NAME is looked up in `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=`), else next to",
        "  the configuration file.",
        "- `RELAY_SECTION__KEY=value` overrides a key (`RELAY_SERVER__LISTEN=0.0.0.0:8080`,",
        "  `RELAY_SUBSCRIBERS__0__MAX_IN_FLIGHT=4`); the value is read as YAML.",
        "- Durations: `500ms`, `5s`, `30m`, `2h`, `3d`, or a number of seconds.",
        "- Unknown keys are errors; `relay check-config` prints one line per problem.",
        "- Secrets, tokens, API keys and basic user names and passwords must not be empty or only whitespace",
        "  (an unset `${VAR:-}` is refused at load, naming the key); tokens and keys that clients send in a",
        "  header must also not start or end with a space or tab nor contain control characters.",
        "",
    ]
    for model in _models():
        lines += [f"## {model.__name__}", ""]
        doc = (model.__doc__ or "").strip().splitlines()
        if doc and not doc[0].startswith(model.__name__):
            lines += [doc[0], ""]
        lines += ["| key | type | default | notes |", "|---|---|---|---|"]
        for name, info in model.model_fields.items():
            key = info.alias or name
            note = NOTES.get(f"{model.__name__}.{key}", "")
            kind = _type_name(info.annotation)
            if any("parse_duration" in repr(m) for m in info.metadata) or "parse_duration" in repr(info.annotation):
                kind = kind.replace("float", "duration")
            lines.append(f"| `{key}` | {kind} | {_default(info)} | {note} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(), end="")
