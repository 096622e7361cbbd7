"""A running relay's admin API, for `relay … --url`: the same view JSON the CLI renders from the store.

Synchronous on purpose (the CLI does one request at a time); every answer is the JSON `relay.views` writes.
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from relay.events import format_ts
from relay.ops import DeliveryFilter, EventFilter

__all__ = ["TOKEN_ENV", "AdminClient", "AdminClientError", "admin_token"]

#: The environment variable that holds the admin token for `--url`.
TOKEN_ENV = "RELAY_ADMIN_TOKEN"  # noqa: S105 - the name of a variable, not a credential
_EXCERPT_CHARS = 300  # of an answer that is not the relay's JSON error: enough to recognise a proxy's page


class AdminClientError(Exception):
    """The relay could not be reached or refused the request; the message says which and why."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def admin_token(token_file: Path | None, env: Mapping[str, str]) -> str:
    """The admin token: the first line of `token_file` when given, else `$RELAY_ADMIN_TOKEN`.

    Raises:
        AdminClientError: the file cannot be read or is empty, or neither is given.
    """
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise AdminClientError(f"cannot read the admin token file {token_file}: {exc}") from None
        if not token:
            raise AdminClientError(f"the admin token file {token_file} is empty")
        return token
    token = env.get(TOKEN_ENV, "").strip()
    if not token:
        raise AdminClientError(f"--url needs an admin token: set ${TOKEN_ENV} or give --token-file")
    return token


def _when(value: datetime | None) -> str | None:
    return format_ts(value) if value is not None else None


class AdminClient:
    """Read and act through `/v1/admin/…` of the relay at `base_url` (e.g. `http://127.0.0.1:8080`).

    Args:
        base_url: scheme, host and port of the relay's listener (a path prefix is kept).
        token: an admin token, sent as `Authorization: Bearer`.
        timeout_s: per request.
    """

    def __init__(self, base_url: str, token: str, *, timeout_s: float = 30.0) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise AdminClientError(f"--url: expected http(s)://host:port, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.timeout_s = timeout_s

    def _request(self, method: str, path: str, query: Mapping[str, object] | None, body: Any) -> Any:
        params = {k: str(v) for k, v in (query or {}).items() if v is not None}
        url = self.base_url + path + (f"?{urllib.parse.urlencode(params)}" if params else "")
        data = orjson.dumps(body) if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - the scheme is checked above
        req.add_header("Authorization", f"Bearer {self._token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310 - http(s) only
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise AdminClientError(_refusal(exc.code, exc.read()), exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise AdminClientError(f"cannot reach the relay at {self.base_url}: {reason}") from None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise AdminClientError(f"{url}: the answer is not JSON: {_excerpt(raw)}") from None

    def _get(self, path: str, **query: object) -> Any:
        return self._request("GET", path, query, None)

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        return self._request("POST", path, None, {k: v for k, v in body.items() if v is not None})

    # ------------------------------------------------------------------------------------ events

    def list_events(self, flt: EventFilter) -> Any:
        """`GET /v1/admin/events`: a list of event views without payloads."""
        return self._get("/v1/admin/events", **_event_query(flt), order="newest" if flt.newest_first else "oldest")

    def event_feed(self, flt: EventFilter, *, after: int | None = None) -> Any:
        """`GET /v1/admin/events-feed`: `{"cursor": N, "events": [...]}` (see `Operations.event_feed`)."""
        return self._get("/v1/admin/events-feed", **_event_query(flt), after=after)

    def show_event(self, event_id: str) -> Any:
        """`GET /v1/admin/events/{id}`: the event with its payload and deliveries."""
        return self._get("/v1/admin/events/" + urllib.parse.quote(event_id, safe=""))

    # ------------------------------------------------------------------------------------ deliveries

    def list_deliveries(self, flt: DeliveryFilter) -> Any:
        """`GET /v1/admin/deliveries`, newest first."""
        return self._get("/v1/admin/deliveries", **_delivery_query(flt), state=flt.state)

    def show_delivery(self, delivery_id: int) -> Any:
        """`GET /v1/admin/deliveries/{id}`: the delivery with its attempts."""
        return self._get(f"/v1/admin/deliveries/{delivery_id}")

    def list_dead(self, flt: DeliveryFilter) -> Any:
        """`GET /v1/admin/dlq`, newest first."""
        return self._get("/v1/admin/dlq", **_delivery_query(flt))

    def redrive(self, flt: DeliveryFilter, *, dry_run: bool) -> int:
        """`POST /v1/admin/dlq/redrive`; returns how many dead deliveries were (or would be) redriven."""
        body = {
            "eventId": flt.event_id,
            "subscriber": flt.subscriber,
            "channel": flt.channel,
            "key": flt.entity_key,
            "since": _when(flt.since),
            "until": _when(flt.until),
            "dryRun": dry_run,
        }
        return int(self._post("/v1/admin/dlq/redrive", body)["redriven"])

    def replay(self, flt: EventFilter, *, event_id: str | None, subscriber: str | None, dry_run: bool) -> Any:
        """`POST /v1/admin/replay`: `{"events", "deliveries", "dryRun"}`."""
        body = {
            "eventId": event_id,
            "subscriber": subscriber,
            "channel": flt.channel,
            "source": flt.source,
            "key": flt.entity_key,
            "since": _when(flt.since),
            "until": _when(flt.until),
            "dryRun": dry_run,
        }
        return self._post("/v1/admin/replay", body)

    # ------------------------------------------------------------------------------------ quarantine, subscribers

    def list_quarantine(self, *, source: str | None, limit: int) -> Any:
        """`GET /v1/admin/quarantine`, newest first, without bodies."""
        return self._get("/v1/admin/quarantine", source=source, limit=limit)

    def show_quarantine(self, quarantine_id: int) -> Any:
        """`GET /v1/admin/quarantine/{id}` with the body."""
        return self._get(f"/v1/admin/quarantine/{quarantine_id}")

    def subscribers(self) -> Any:
        """`GET /v1/admin/subscribers`: health of every configured subscriber."""
        return self._get("/v1/admin/subscribers")

    def instances(self) -> Any:
        """`GET /v1/admin/instances`: the live instances on the relay's store."""
        return self._get("/v1/admin/instances")

    def enable_subscriber(self, name: str) -> Any:
        """`POST /v1/admin/subscribers/{name}/enable`: `{"name", "disabled", "at"}`."""
        return self._post(f"/v1/admin/subscribers/{_segment(name)}/enable", {})

    def test_subscriber(self, name: str) -> Any:
        """`POST /v1/admin/subscribers/{name}/test`: what a signed test event got (`test_delivery_json`)."""
        return self._post(f"/v1/admin/subscribers/{_segment(name)}/test", {})

    def test_circuit(self, name: str) -> Any:
        """`POST /v1/admin/subscribers/{name}/test-circuit`: the probe and the circuit before and after."""
        return self._post(f"/v1/admin/subscribers/{_segment(name)}/test-circuit", {})

    def retry_quarantine(self, quarantine_id: int) -> Any:
        """`POST /v1/admin/quarantine/{id}/retry`: stored or still refused (`quarantine_retry_json`)."""
        return self._post(f"/v1/admin/quarantine/{quarantine_id}/retry", {})

    # ------------------------------------------------------------------------------------ current state

    def show_state(self, noun: str, key: str) -> Any:
        """`GET /v1/state/{noun}/{key}` (an admin token is accepted there): the latest event of a key."""
        return self._get(f"/v1/state/{_segment(noun)}/{_segment(key)}")

    def list_state(self, noun: str, *, prefix: str, limit: int) -> Any:
        """`GET /v1/state/{noun}`: the first `limit` keys starting with `prefix`, in key order."""
        return self._get(f"/v1/state/{_segment(noun)}", prefix=prefix or None, limit=limit)["items"]


def _segment(text: str) -> str:
    """`text` as one path segment (a `/` or `|` in a key or name is encoded)."""
    return urllib.parse.quote(text, safe="")


def _event_query(flt: EventFilter) -> dict[str, object]:
    return {
        "channel": flt.channel,
        "source": flt.source,
        "key": flt.entity_key,
        "since": _when(flt.since),
        "until": _when(flt.until),
        "limit": flt.limit,
    }


def _delivery_query(flt: DeliveryFilter) -> dict[str, object]:
    return {
        "event_id": flt.event_id,
        "subscriber": flt.subscriber,
        "channel": flt.channel,
        "key": flt.entity_key,
        "since": _when(flt.since),
        "until": _when(flt.until),
        "limit": flt.limit,
    }


def _excerpt(raw: bytes) -> str:
    return raw[:_EXCERPT_CHARS].decode("utf-8", "replace")


def _refusal(status: int, raw: bytes) -> str:
    """The relay's own `{"error", "message"}` in a line, or the start of whatever else answered."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return f"{body['message']} (HTTP {status})"
    return f"HTTP {status}: {_excerpt(raw)}"
