"""One JSON request of a poller, with every failure turned into a PollError that says what to do."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson

from relay.deliver.retry import parse_retry_after
from relay.poll.base import PollError

__all__ = ["request_json"]


async def request_json(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    json: Any = None,
    timeout_s: float = 30.0,
    on_unauthorized: Callable[[], Awaitable[Mapping[str, str]]] | None = None,
) -> Any:
    """The decoded JSON body of a 2xx answer.

    On 401, `on_unauthorized` (a token refresh returning fresh headers) is called once and the request retried.

    Raises:
        PollError: with `retry_after_s` on 429/503, `permission` on 401/403, and a clear message otherwise.
    """
    hdrs = dict(headers or {})
    for attempt in (1, 2):
        try:
            async with session.request(
                method,
                url,
                params=params,
                headers=hdrs,
                data=orjson.dumps(json) if json is not None else None,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
                allow_redirects=False,
            ) as resp:
                body = await resp.read()
                status = resp.status
                retry_after = resp.headers.get("Retry-After")
        except TimeoutError:
            raise PollError(f"{method} {url}: no answer within {timeout_s:g}s") from None
        except aiohttp.ClientError as exc:
            raise PollError(f"{method} {url}: {type(exc).__name__}: {exc}") from None
        if status == 401 and attempt == 1 and on_unauthorized is not None:
            hdrs.update(await on_unauthorized())
            continue
        if 200 <= status < 300:
            try:
                return orjson.loads(body) if body.strip() else None
            except orjson.JSONDecodeError:
                raise PollError(f"{method} {url}: the answer is not JSON", status=status) from None
        excerpt = body[:200].decode("utf-8", "replace")
        if status in (401, 403):
            raise PollError(
                f"{method} {url}: HTTP {status} (check credentials and permissions): {excerpt}",
                status=status,
                permission=True,
            )
        wait = parse_retry_after(retry_after, datetime.now(UTC)) if status in (429, 503) else None
        raise PollError(f"{method} {url}: HTTP {status}: {excerpt}", status=status, retry_after_s=wait)
    raise PollError(f"{method} {url}: still unauthorized after a token refresh", status=401, permission=True)
