"""`kind: http-json`: any JSON API with records, a key, an update field and paging."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import aiohttp
import orjson

from relay.auth.outbound import OutboundAuthenticator
from relay.config import HttpJsonResource, HttpJsonSource
from relay.poll.base import Page, PollError, ResourceSpec
from relay.poll.http import request_json

__all__ = ["HttpJsonFetcher"]


def _dig(body: Any, path: str) -> Any:
    node = body
    for part in [p for p in path.split(".") if p]:
        if isinstance(node, Mapping):
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


class HttpJsonFetcher:
    """Reads records from `records_path`; pages by a cursor parameter or a next-page link."""

    def __init__(self, source: HttpJsonSource, session: aiohttp.ClientSession) -> None:
        self.source = source
        self.session = session
        self.auth = OutboundAuthenticator(source.auth, session)
        self._resources = {r.url: r for r in source.resources}

    def _config(self, resource: ResourceSpec) -> HttpJsonResource:
        return self._resources[str(resource.options["url"])]

    async def _page(self, cfg: HttpJsonResource, url: str, params: dict[str, str]) -> Page:
        headers = {**self.source.headers, **await self.auth.headers()}
        body = await request_json(
            self.session,
            "GET",
            url,
            params=params,
            headers=headers,
            timeout_s=self.source.timeout_s,
            on_unauthorized=self.auth.invalidate,
        )
        records = _dig(body, cfg.records_path) if cfg.records_path else body
        if not isinstance(records, list) or not all(isinstance(r, Mapping) for r in records):
            raise PollError(f"{url}: no list of records at {cfg.records_path or 'the top level'!r}")
        next_cursor: str | None = None
        if cfg.next_link_path:
            link = _dig(body, cfg.next_link_path)
            next_cursor = orjson.dumps({"url": link}).decode() if isinstance(link, str) and link else None
        elif cfg.cursor_param and cfg.cursor_path:
            value = _dig(body, cfg.cursor_path)
            next_cursor = orjson.dumps({"cursor": str(value)}).decode() if value not in (None, "") else None
        return Page(list(records), next_cursor)

    async def _fetch(self, resource: ResourceSpec, since: str | None, cursor: str | None) -> Page:
        cfg = self._config(resource)
        params: dict[str, str] = {}
        url = cfg.url
        if cursor:
            state = orjson.loads(cursor)
            if "url" in state:
                return await self._page(cfg, state["url"], {})
            if cfg.cursor_param:
                params[cfg.cursor_param] = state["cursor"]
        if since and cfg.updated_param:
            params[cfg.updated_param] = since
        return await self._page(cfg, url, params)

    async def changes(self, resource: ResourceSpec, *, since: str | None, cursor: str | None) -> Page:
        return await self._fetch(resource, since, cursor)

    async def listing(self, resource: ResourceSpec, *, cursor: str | None) -> Page:
        return await self._fetch(resource, None, cursor)

    async def close(self) -> None:
        return None

    @property
    def token_expires_at(self) -> datetime | None:
        """When the current access token expires (see `Fetcher.token_expires_at`)."""
        return self.auth.expires_at
