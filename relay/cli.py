"""The `relay` command: parse, call the library, print. Tables for people, `--json` for scripts."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson
from rich.console import Console
from rich.highlighter import JSONHighlighter
from rich.table import Table
from rich.text import Text

from relay._display import mask_url, mask_urls_in, terminal_safe
from relay.config import Config, ConfigError
from relay.events import Event, format_ts, parse_ts
from relay.store import EventFilter, Store

T = TypeVar("T")
console = Console()
err_console = Console(stderr=True)

CONFIG_OPTION = click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=lambda: os.environ.get("RELAY_CONFIG", "relay.yaml"),
    show_default="$RELAY_CONFIG or relay.yaml",
    help="Configuration file.",
)


def _echo(line: str, *, err: bool = False) -> None:
    """`click.echo` a line that carries outside text: control characters shown as escapes, URL secrets masked."""
    click.echo(terminal_safe(mask_urls_in(line)), err=err)


def _cell(value: object) -> Text:
    """A value from outside as rich text: never read as markup or emoji codes, control characters escaped."""
    return Text(terminal_safe("" if value is None else value))


def _print_field(key: str, value: object) -> None:
    console.print(Text.assemble((key, "bold"), ": ", _cell(value)))


def _print_block(text: str) -> None:
    """A multi-line body (a payload, an original BOD) exactly as received, escapes made visible."""
    console.print(Text(terminal_safe(text, multiline=True)))


def _load(config_path: Path) -> Config:
    from relay.daemon import load_all

    try:
        config, _ = load_all(config_path)
    except ConfigError as exc:
        for problem in exc.problems:
            _echo(f"error: {problem}", err=True)
        raise SystemExit(1) from None
    return config


def _with_store(config: Config, fn: Callable[[Store], Awaitable[T]]) -> T:
    from relay.daemon import open_configured_store

    async def run() -> T:
        store = open_configured_store(config)
        await store.open()
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(run())


def _print_json(value: Any) -> None:
    sys.stdout.buffer.write(orjson.dumps(value, option=orjson.OPT_INDENT_2) + b"\n")
    sys.stdout.flush()


def _parse_when(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_ts(value)
    except ValueError:
        raise click.BadParameter(f"expected an ISO 8601 time like 2026-11-20T09:00:00Z, got {value!r}") from None


def event_json(event: Event, *, with_payload: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "eventId": event.event_id,
        "channel": event.channel,
        "source": event.source,
        "tenantId": event.tenant_id,
        "entityKey": event.entity_key,
        "version": event.version,
        "occurredAt": format_ts(event.occurred_at),
        "receivedAt": format_ts(event.received_at),
    }
    if with_payload:
        out["payload"] = orjson.loads(event.payload)
        if event.original is not None:
            out["original"] = event.original.decode("utf-8", "replace")
            out["originalType"] = event.original_type
    return out


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="erp-relay")
def main() -> None:
    """erp-relay: ERP business events to signed webhooks, durably and in order."""
    from relay.logs import configure_logging

    # Commands print their results on stdout; their logs go to stderr (`serve` reconfigures for itself).
    configure_logging("warning", "console", stream=sys.stderr)


@main.command()
@CONFIG_OPTION
def serve(config_path: Path) -> None:
    """Run the relay daemon until SIGTERM.

    A start-up failure is one line on stderr naming the problem, and exit code 1.
    """
    import importlib
    import importlib.util

    from relay.daemon import StartupError, run_serve, startup_problems
    from relay.logs import configure_logging

    config = _load(config_path)
    # Checked before anything is opened: nothing to release, and the answer comes at once.
    problems = startup_problems(config)
    for problem in problems:
        _echo(f"error: {problem}", err=True)
    if problems:
        raise SystemExit(1)
    configure_logging(config.logging.level, config.logging.format)
    # find_spec, not `try: import`: a caught ImportError would be chained into every later traceback.
    run: Callable[[Coroutine[Any, Any, int]], int] = asyncio.run
    if importlib.util.find_spec("uvloop") is not None:  # pragma: no cover - optional extra
        run = importlib.import_module("uvloop").run
    try:
        code = run(run_serve(config_path))
    except StartupError as exc:
        _echo(f"error: {exc}", err=True)
        raise SystemExit(1) from None
    except ConfigError as exc:  # the file changed since it was read above
        for problem in exc.problems:
            _echo(f"error: {problem}", err=True)
        raise SystemExit(1) from None
    raise SystemExit(code)


@main.command("check-config")
@CONFIG_OPTION
@click.option("--probe", is_flag=True, help="Also fetch one sample per polled resource (a permissions checklist).")
def check_config(config_path: Path, probe: bool) -> None:
    """Validate the configuration: one line per problem (exit 1), or a summary (exit 0).

    Besides the file itself: secret files readable, the store URL supported and its directory writable,
    the listen address free (a relay already running there is noted, not a problem).
    """
    from relay.daemon import load_all, startup_problems

    try:
        config, specs = load_all(config_path)
    except ConfigError as exc:
        for problem in exc.problems:
            _echo(f"{config_path}: {problem}")
        raise SystemExit(1) from None
    problems = startup_problems(config)
    listen_note = ""
    if any(p.startswith("server.listen:") for p in problems) and _relay_answers(config.server.host, config.server.port):
        # check-config is run before a reload too: the running relay holding the address is expected.
        problems = [p for p in problems if not p.startswith("server.listen:")]
        listen_note = " (in use by a running relay)"
    for problem in problems:
        _echo(f"{config_path}: {problem}")
    if problems:
        raise SystemExit(1)
    if probe:
        failed = asyncio.run(_probe(config, specs))
        if failed:
            raise SystemExit(1)
    kinds = ", ".join(f"{s.name} ({s.kind})" for s in config.sources) or "none"
    click.echo(f"{config_path}: ok")
    _echo(f"  store: {mask_url(config.store.url)}")
    click.echo(f"  listen: {config.server.listen}{listen_note}")
    click.echo(f"  channels: {len(specs.channels)} from {len(config.spec_paths)} AsyncAPI document(s)")
    click.echo(f"  sources: {kinds}")
    click.echo(f"  subscribers: {', '.join(s.name for s in config.subscribers) or 'none'}")


@main.command("migrate")
@CONFIG_OPTION
def migrate_cmd(config_path: Path) -> None:
    """Apply the store's pending schema migrations and print its schema version.

    `serve` migrates on start too; run this first to upgrade a shared PostgreSQL database before the relays.
    Instances migrating at once take turns (an advisory lock); a schema newer than this relay is refused.
    """
    from relay.store import StoreUnavailable

    config = _load(config_path)

    async def version(store: Store) -> int:
        return await store.schema_version()

    try:
        schema = _with_store(config, version)
    except StoreUnavailable as exc:
        _echo(f"error: store: {exc}", err=True)
        raise SystemExit(1) from None
    _echo(f"store: {mask_url(config.store.url)} at schema version {schema}")


def _relay_answers(host: str, port: int) -> bool:
    """True when a relay answers `GET /livez` on host:port (within a second)."""
    import urllib.request

    # A wildcard listen address is reached through loopback.
    target = "127.0.0.1" if host in ("", "0.0.0.0") else "::1" if host == "::" else host
    url = f"http://[{target}]:{port}/livez" if ":" in target else f"http://{target}:{port}/livez"
    try:
        with urllib.request.urlopen(url, timeout=1.0) as resp:  # noqa: S310 - the URL is http:// built above
            return bool(orjson.loads(resp.read()).get("status") == "ok")
    except (OSError, ValueError, AttributeError):
        return False


async def _probe(config: Config, specs: Any) -> int:
    """Fetch one page of every polled resource; print a line each; return how many failed."""
    import aiohttp

    from relay.poll import load_builders
    from relay.poll.base import PollError
    from relay.poll.scheduler import build_source
    from relay.poll.x3 import X3Fetcher

    load_builders()
    failed = 0
    async with aiohttp.ClientSession() as session:
        for source in config.sources:
            try:
                built = build_source(source, session, specs)
            except (ValueError, OSError) as exc:
                _echo(f"{source.name}: cannot start: {exc}")
                failed += 1
                continue
            if built is None:
                continue
            fetcher, resources = built
            for resource in resources:
                try:
                    page = await fetcher.changes(resource, since=None, cursor=None)
                    # X3: an incremental poll and the representation's $query facet (X3 answers 500 for
                    # where/orderBy on a property outside it): name the missing fields now, not at 3 a.m.
                    problems = await fetcher.probe(resource) if isinstance(fetcher, X3Fetcher) else []
                except PollError as exc:
                    failed += 1
                    what = "permission denied" if exc.permission else "failed"
                    _echo(f"{source.name} {resource.name}: {what}: {exc}")
                else:
                    if problems:
                        failed += 1
                        for problem in problems:
                            click.echo(f"{source.name} {resource.name}: {problem}")
                    else:
                        click.echo(f"{source.name} {resource.name}: ok ({len(page.records)} records in the first page)")
            await fetcher.close()
    return failed


@main.command("poll")
@CONFIG_OPTION
@click.argument("source_name", metavar="SOURCE")
@click.option("--dry-run", is_flag=True, required=True, help="Print what one poll would emit; store nothing.")
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=None, help="Stop after N events.")
@click.option("--json", "as_json", is_flag=True)
def poll_cmd(config_path: Path, source_name: str, dry_run: bool, limit: int | None, as_json: bool) -> None:
    """Run one poll of SOURCE without storing anything."""
    import aiohttp

    from relay.daemon import load_all
    from relay.ingest.pipeline import Router
    from relay.poll import load_builders
    from relay.poll.base import PollError
    from relay.poll.engine import Poller
    from relay.poll.scheduler import build_source

    config, specs = load_all(config_path)
    source = config.source(source_name)
    if source is None:
        click.echo(f"no source named {source_name!r} in {config_path}", err=True)
        raise SystemExit(1)
    load_builders()

    async def run(store: Store) -> list[dict[str, Any]]:
        emitted: list[dict[str, Any]] = []
        async with aiohttp.ClientSession() as session:
            built = build_source(source, session, specs)
            if built is None:
                click.echo(f"{source_name} is a push source ({source.kind}): nothing to poll", err=True)
                raise SystemExit(1)
            fetcher, resources = built
            try:
                for resource in resources:
                    poller = Poller(
                        store=store,
                        specs=specs,
                        router=Router(config.subscribers),
                        source=source.name,
                        fetcher=fetcher,
                        resource=resource,
                    )
                    report = await poller.poll_once(dry_run=True, limit=limit)
                    emitted.extend(
                        {"resource": resource.name, "channel": resource.channel, **p} for p in report.emitted
                    )
            except PollError as exc:
                _echo(f"poll failed: {exc}", err=True)
                raise SystemExit(1) from None
            finally:
                await fetcher.close()
        return emitted

    emitted = _with_store(config, run)
    if as_json:
        _print_json(emitted)
        return
    table = Table("resource", "channel", "event id", "key fields", "version")
    for p in emitted:
        data = p.get("data", {})
        keys = ", ".join(f"{k}={v}" for k, v in list(data.items())[:2])
        table.add_row(*map(_cell, (p["resource"], p["channel"], p["eventId"], keys, p.get("timestamp", ""))))
    console.print(table)
    console.print(f"dry run: {len(emitted)} event(s) would be emitted; nothing was stored")


# ------------------------------------------------------------------------------------------- events


@main.group()
def events() -> None:
    """Inspect stored events."""


@events.command("list")
@CONFIG_OPTION
@click.option("--channel")
@click.option("--source")
@click.option("--key", "entity_key", help="Entity key (e.g. a customer number).")
@click.option("--since", help="Received at or after (ISO 8601).")
@click.option("--until", help="Received before (ISO 8601).")
@click.option("--limit", type=click.IntRange(1, 10_000_000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one array).")
def events_list(
    config_path: Path,
    channel: str | None,
    source: str | None,
    entity_key: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List events in arrival order."""
    config = _load(config_path)
    flt = EventFilter(
        channel=channel,
        source=source,
        entity_key=entity_key,
        since=_parse_when(since),
        until=_parse_when(until),
        limit=limit,
    )
    found = _with_store(config, lambda store: store.list_events(flt))
    if as_json:
        _print_json([event_json(e, with_payload=False) for e in found])
        return
    table = Table("event id", "channel", "source", "key", "version", "received")
    for e in found:
        table.add_row(*map(_cell, (e.event_id, e.channel, e.source, e.entity_key, e.version, format_ts(e.received_at))))
    console.print(table)
    console.print(f"{len(found)} event(s)")


@events.command("show")
@CONFIG_OPTION
@click.argument("event_id")
@click.option("--json", "as_json", is_flag=True)
def events_show(config_path: Path, event_id: str, as_json: bool) -> None:
    """Show one event with its payload."""
    config = _load(config_path)
    found = _with_store(config, lambda store: store.get_event(event_id))
    if found is None:
        click.echo(f"no event {event_id!r}", err=True)
        raise SystemExit(1)
    data = event_json(found)
    if as_json:
        _print_json(data)
        return
    for key, value in data.items():
        if key in ("payload", "original"):
            continue
        _print_field(key, value)
    payload = Text(terminal_safe(orjson.dumps(data["payload"], option=orjson.OPT_INDENT_2).decode(), multiline=True))
    console.print(JSONHighlighter()(payload))
    if "original" in data:
        console.print(Text.assemble((f"original ({terminal_safe(data['originalType'])})", "bold"), ":"))
        _print_block(data["original"])


# ------------------------------------------------------------------------------------------- quarantine


@main.group()
def quarantine() -> None:
    """Inspect refused input kept for inspection."""


@quarantine.command("list")
@CONFIG_OPTION
@click.option("--source")
@click.option("--limit", type=click.IntRange(1, 100_000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def quarantine_list(config_path: Path, source: str | None, limit: int, as_json: bool) -> None:
    """Newest quarantined inputs first."""
    config = _load(config_path)
    rows = _with_store(config, lambda store: store.list_quarantine(source=source, limit=limit))
    if as_json:
        _print_json(
            [
                {
                    "id": r.id,
                    "receivedAt": r.received_at,
                    "source": r.source,
                    "channel": r.channel,
                    "reason": r.reason,
                    "details": r.details,
                    "size": r.size,
                }
                for r in rows
            ]
        )
        return
    table = Table("id", "received", "source", "channel", "reason", "bytes")
    for r in rows:
        table.add_row(*map(_cell, (r.id, r.received_at, r.source, r.channel, r.reason[:80], r.size)))
    console.print(table)


@quarantine.command("show")
@CONFIG_OPTION
@click.argument("quarantine_id", type=int)
@click.option("--json", "as_json", is_flag=True)
def quarantine_show(config_path: Path, quarantine_id: int, as_json: bool) -> None:
    """One quarantined input with its reason and body."""
    config = _load(config_path)
    row = _with_store(config, lambda store: store.get_quarantine(quarantine_id))
    if row is None:
        click.echo(f"no quarantine entry {quarantine_id}", err=True)
        raise SystemExit(1)
    body = (row.body or b"").decode("utf-8", "replace")
    data = {
        "id": row.id,
        "receivedAt": row.received_at,
        "source": row.source,
        "channel": row.channel,
        "reason": row.reason,
        "details": row.details,
        "contentType": row.content_type,
        "body": body,
    }
    if as_json:
        _print_json(data)
        return
    for key in ("id", "receivedAt", "source", "channel", "contentType", "reason"):
        _print_field(key, data[key])
    for d in row.details:
        console.print(Text.assemble("  ", _cell(d.get("path")), ": ", _cell(d.get("message"))))
    _print_block(body)


@quarantine.command("retry")
@CONFIG_OPTION
@click.argument("quarantine_id", type=int)
def quarantine_retry(config_path: Path, quarantine_id: int) -> None:
    """Check a quarantined input again (after fixing a spec or mapping); store it if it passes now."""
    from relay.daemon import load_all
    from relay.ingest.requeue import requeue

    config, specs = load_all(config_path)

    async def run(store: Store) -> Any:
        try:
            return await requeue(store, specs, config, quarantine_id)
        except KeyError:
            return None

    result = _with_store(config, run)
    if result is None:
        click.echo(f"no quarantine entry {quarantine_id}", err=True)
        raise SystemExit(1)
    if not result.ok:
        click.echo(f"still refused ({len(result.problems)} problem(s)):")
        for problem in result.problems:
            _echo(f"  {problem}")
        raise SystemExit(1)
    for outcome in result.outcomes:
        _echo(f"{outcome.event_id}: {outcome.status} ({outcome.deliveries} deliveries)")
    click.echo(f"quarantine entry {quarantine_id} stored and removed")


# ------------------------------------------------------------------------------------------- deliveries


def _router(config: Config) -> Any:
    from relay.ingest.pipeline import Router

    return Router(config.subscribers)


@main.group()
def deliveries() -> None:
    """Inspect deliveries and their attempts."""


@deliveries.command("list")
@CONFIG_OPTION
@click.option("--event-id")
@click.option("--subscriber")
@click.option("--state", type=click.Choice(["pending", "delivered", "dead", "stale", "superseded"]))
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def deliveries_list(
    config_path: Path, event_id: str | None, subscriber: str | None, state: str | None, limit: int, as_json: bool
) -> None:
    """Newest deliveries first."""
    from relay.http.admin import delivery_json
    from relay.store.base import DeliveryFilter

    config = _load(config_path)
    flt = DeliveryFilter(event_id=event_id, subscriber=subscriber, state=state, limit=limit)
    rows = _with_store(config, lambda store: store.list_deliveries(flt))
    _print_deliveries([delivery_json(d) for d in rows], as_json)


def _print_deliveries(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        _print_json(rows)
        return
    table = Table("id", "event id", "subscriber", "state", "attempts", "replay", "last error")
    for d in rows:
        table.add_row(
            *map(
                _cell,
                (
                    d["id"],
                    d["eventId"],
                    d["subscriber"],
                    d["state"],
                    d["attempts"],
                    "yes" if d["replay"] else "",
                    (d["lastError"] or "")[:60],
                ),
            )
        )
    console.print(table)
    console.print(f"{len(rows)} deliver{'y' if len(rows) == 1 else 'ies'}")


@main.command("replay")
@CONFIG_OPTION
@click.option("--subscriber", help="Only this subscriber (default: every matching one).")
@click.option("--channel")
@click.option("--since", help="Events received at or after (ISO 8601).")
@click.option("--until", help="Events received before (ISO 8601).")
@click.option("--event-id")
@click.option("--key", "entity_key", help="Entity key.")
@click.option("--dry-run", is_flag=True, help="Only count what would be replayed.")
@click.option("--json", "as_json", is_flag=True)
def replay_cmd(
    config_path: Path,
    subscriber: str | None,
    channel: str | None,
    since: str | None,
    until: str | None,
    event_id: str | None,
    entity_key: str | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Deliver stored events again (new deliveries flagged `relay-replay: true`)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from relay.deliver.replay import replay

    config = _load(config_path)
    if subscriber is not None and config.subscriber(subscriber) is None:
        click.echo(f"no subscriber named {subscriber!r} in {config_path}", err=True)
        raise SystemExit(1)
    flt = EventFilter(channel=channel, entity_key=entity_key, since=_parse_when(since), until=_parse_when(until))
    progress = Progress(
        TextColumn("replaying"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        disable=as_json or dry_run or not err_console.is_terminal,
    )
    task = progress.add_task("replay", total=None)

    def on_progress(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)

    with progress:
        result = _with_store(
            config,
            lambda store: replay(
                store,
                _router(config),
                flt,
                event_id=event_id,
                subscriber=subscriber,
                dry_run=dry_run,
                on_progress=on_progress,
            ),
        )
    if as_json:
        _print_json({"events": result.events_matched, "deliveries": result.deliveries, "dryRun": dry_run})
    elif dry_run:
        click.echo(f"dry run: {result.events_matched} event(s) match; {result.deliveries} deliveries would be created")
    else:
        click.echo(f"{result.deliveries} replay deliveries created for {result.events_matched} event(s)")


@main.group()
def dlq() -> None:
    """Dead letters: deliveries that ran out of retries."""


@dlq.command("list")
@CONFIG_OPTION
@click.option("--subscriber")
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def dlq_list(config_path: Path, subscriber: str | None, limit: int, as_json: bool) -> None:
    """Dead deliveries with their last reason."""
    from relay.http.admin import delivery_json
    from relay.store.base import DeliveryFilter

    config = _load(config_path)
    flt = DeliveryFilter(subscriber=subscriber, state="dead", limit=limit)
    rows = _with_store(config, lambda store: store.list_deliveries(flt))
    _print_deliveries([delivery_json(d) for d in rows], as_json)


@dlq.command("redrive")
@CONFIG_OPTION
@click.option("--subscriber")
@click.option("--channel")
@click.option("--event-id")
@click.option("--key", "entity_key")
@click.option("--since")
@click.option("--until")
def dlq_redrive(
    config_path: Path,
    subscriber: str | None,
    channel: str | None,
    event_id: str | None,
    entity_key: str | None,
    since: str | None,
    until: str | None,
) -> None:
    """Make matching dead deliveries pending again, due now (a running relay picks them up within 1 s)."""
    from relay.store.base import DeliveryFilter

    config = _load(config_path)
    flt = DeliveryFilter(
        subscriber=subscriber,
        channel=channel,
        event_id=event_id,
        entity_key=entity_key,
        since=_parse_when(since),
        until=_parse_when(until),
    )
    count = _with_store(config, lambda store: store.redrive(flt))
    click.echo(f"{count} dead deliver{'y' if count == 1 else 'ies'} redriven")


@main.group()
def subscribers() -> None:
    """Subscriber health, and re-enabling after a 410."""


@subscribers.command("list")
@CONFIG_OPTION
@click.option("--json", "as_json", is_flag=True)
def subscribers_list(config_path: Path, as_json: bool) -> None:
    """Pending and dead counts, circuit state, last success, disabled flag."""
    from relay.http.admin import subscriber_json

    config = _load(config_path)
    states = _with_store(config, lambda store: store.subscriber_states())
    rows = [subscriber_json(s.name, s.url, states.get(s.name)) for s in config.subscribers]
    if as_json:
        _print_json(rows)
        return
    table = Table("name", "url", "pending", "dead", "circuit", "last success", "disabled")
    for r in rows:
        table.add_row(
            *map(
                _cell,
                (
                    r["name"],
                    mask_url(r["url"]),
                    r["pending"],
                    r["dead"],
                    r["circuit"],
                    r["lastSuccessAt"],
                    (r["disabledReason"] or "yes") if r["disabled"] else "",
                ),
            )
        )
    console.print(table)


@subscribers.command("enable")
@CONFIG_OPTION
@click.argument("name")
def subscribers_enable(config_path: Path, name: str) -> None:
    """Re-enable a subscriber that answered 410 Gone."""
    config = _load(config_path)
    if config.subscriber(name) is None:
        click.echo(f"no subscriber named {name!r} in {config_path}", err=True)
        raise SystemExit(1)
    _with_store(config, lambda store: store.set_subscriber_disabled(name, False, None))
    click.echo(f"{name} enabled")


@main.group()
def ionapi() -> None:
    """Infor ION API credentials (.ionapi files)."""


@ionapi.command("inspect")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--token", "fetch_token", is_flag=True, help="Fetch a token and show its expiry.")
@click.option("--json", "as_json", is_flag=True)
def ionapi_inspect(path: Path, fetch_token: bool, as_json: bool) -> None:
    """Show an .ionapi file with its secrets masked; with --token, try it."""
    from relay.auth.ionapi import IonApiAuthError, IonApiError, TokenManager, load_ionapi

    try:
        creds = load_ionapi(path)
    except IonApiError as exc:
        _echo(f"error: {exc}", err=True)
        raise SystemExit(1) from None
    info: dict[str, Any] = {
        **creds.masked(),
        "grant": creds.grant,
        "tokenUrl": creds.token_url,
        "gateway": creds.gateway_base,
    }

    async def try_token() -> str:
        import aiohttp

        async with aiohttp.ClientSession() as session:
            manager = TokenManager(creds, session)
            await manager.token()
            return format_ts(manager.expires_at) if manager.expires_at else "unknown"

    if fetch_token:
        try:
            info["tokenExpiresAt"] = asyncio.run(try_token())
        except (IonApiAuthError, OSError) as exc:
            _echo(f"error: token request failed: {exc}", err=True)
            raise SystemExit(1) from None
    if as_json:
        _print_json(info)
        return
    for key, value in info.items():
        _print_field(key, value)


@main.group()
def simulate() -> None:
    """Run a simulated ERP on 127.0.0.1 (for trying the relay and for tests)."""


def _serve_forever(apps: list[Any], host: str, port: int, ready: Callable[[str], None]) -> None:
    from aiohttp import web

    async def run() -> None:
        runners = []
        for app in apps:
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, host, port)
            await site.start()
            from relay._net import bound_port

            ready(f"http://{host}:{bound_port(site)}")
            runners.append(runner)
        try:
            await asyncio.Event().wait()
        finally:
            for runner in runners:
                await runner.cleanup()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


@simulate.command("ion")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=0, help="Default: a free port.")
@click.option("--ionapi-out", type=click.Path(dir_okay=False, path_type=Path), help="Write a matching .ionapi file.")
@click.option("--push-to", help="Also push IMS traffic to this relay source URL (…/ion/SOURCE).")
@click.option("--count", type=int, default=100, show_default=True)
@click.option("--rate", type=float, default=10.0, show_default=True, help="Messages per second.")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--user", default="ion", show_default=True)
@click.option("--password", default="ion", show_default=True)
def simulate_ion(
    host: str,
    port: int,
    ionapi_out: Path | None,
    push_to: str | None,
    count: int,
    rate: float,
    seed: int,
    user: str,
    password: str,
) -> None:
    """The ION API (token endpoint, gateway with SX.e) and an IMS sender of realistic BODs."""
    import aiohttp

    from relay.sim.ion import IonSimulator, plan_ims_traffic, push_bods
    from relay.sim.sxe import SxeSimulator

    sim = IonSimulator()
    sxe = SxeSimulator(seed=seed)
    for op in ("sxapiicecatalogitembalancev2", "sxapiargetcustomerlistv3"):
        sxe.seed_rows(op, 60)
    sxe.install(sim)

    def ready(url: str) -> None:
        click.echo(f"ION simulator on {url} (tenant {sim.tenant})")
        if ionapi_out is not None:
            sim.write_ionapi(ionapi_out, url)
            click.echo(f"wrote {ionapi_out}")
        if push_to:

            async def push() -> None:
                plan = plan_ims_traffic(count, seed=seed)
                async with aiohttp.ClientSession() as session:
                    results = await push_bods(push_to, plan, session=session, auth=(user, password), rate_per_s=rate)
                statuses: dict[int, int] = {}
                for r in results:
                    statuses[r.status] = statuses.get(r.status, 0) + 1
                click.echo(f"pushed {len(results)} IMS messages: {statuses}")

            asyncio.get_running_loop().create_task(push())

    _serve_forever([sim.app], host, port, ready)


@simulate.command("sxe")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=0, help="Default: a free port.")
@click.option("--ionapi-out", type=click.Path(dir_okay=False, path_type=Path), help="Write a matching .ionapi file.")
@click.option("--rows", type=int, default=200, show_default=True, help="Item balance rows to start with.")
@click.option("--changes-per-s", type=float, default=1.0, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
def simulate_sxe(host: str, port: int, ionapi_out: Path | None, rows: int, changes_per_s: float, seed: int) -> None:
    """SX.e's sxapirestservice feeds behind a simulated ION API gateway and token endpoint."""
    from relay.sim.ion import IonSimulator
    from relay.sim.sxe import OPERATIONS, SxeSimulator

    sim = IonSimulator()
    sxe = SxeSimulator(seed=seed)
    for op in OPERATIONS:
        sxe.seed_rows(op, rows)
    sxe.install(sim)

    def ready(url: str) -> None:
        click.echo(f"SX.e simulator behind the ION gateway on {url}/{sim.tenant}/SX/rest/sxapirestservice/")
        if ionapi_out is not None:
            sim.write_ionapi(ionapi_out, url)
            click.echo(f"wrote {ionapi_out}")

        async def churn() -> None:
            while changes_per_s > 0:
                await asyncio.sleep(1 / changes_per_s)
                sxe.change("sxapiicecatalogitembalancev2", 1)

        asyncio.get_running_loop().create_task(churn())

    _serve_forever([sim.app], host, port, ready)


@simulate.command("x3")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=0, help="Default: a free port.")
@click.option("--changes-per-s", type=float, default=1.0, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
def simulate_x3(host: str, port: int, changes_per_s: float, seed: int) -> None:
    """Sage X3 (folder ALDGATE): api1 REST and GraphQL, records that change and disappear over time."""
    from relay.sim.x3 import X3Simulator

    sim = X3Simulator(seed=seed)
    sim.seed_records("BPCUSTOMER", 200)
    sim.seed_records("ITMMVT", 100)
    sim.seed_records("SORDER", 100)
    sim.seed_records("BPSUPPLIER", 20)
    sim.seed_records("PORDER", 50)
    sim.seed_records("PRECEIPT", 30)

    def ready(url: str) -> None:
        click.echo(f"X3 simulator on {url} (folder {sim.folder}, basic auth {sim.user}:{sim.password})")

        async def churn() -> None:
            while changes_per_s > 0:
                await asyncio.sleep(1 / changes_per_s)
                sim.change(sim.rng.choice(["BPCUSTOMER", "ITMMVT", "SORDER", "PORDER", "PRECEIPT"]), 1)

        asyncio.get_running_loop().create_task(churn())

    _serve_forever([sim.app], host, port, ready)


@main.group()
def spec() -> None:
    """The AsyncAPI document of what subscribers receive."""


@spec.command("export")
@CONFIG_OPTION
@click.option("--asyncapi", "version", type=click.Choice(["2.6", "3.0"]), default="3.0", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to a file.")
def spec_export(config_path: Path, version: str, output: Path | None) -> None:
    """Print one AsyncAPI document of every channel subscribers can receive (2.6 or 3.0).

    Without a configuration file, the documents shipped with the relay are exported.
    """
    import yaml

    from relay.spec import builtin_spec_paths, export_document, load_specs

    paths = _load(config_path).spec_paths if config_path.exists() else builtin_spec_paths()
    document = export_document(load_specs(paths), "3.0" if version == "3.0" else "2.6")
    text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")


@main.command()
@click.option("--duration", type=float, default=None, help="Stop after this many seconds (default: Ctrl-C).")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=Path(".demo"), show_default=True)
def demo(duration: float | None, state_dir: Path) -> None:
    """Run the relay with simulated sources and two local subscribers that verify signatures."""
    from relay.demo import run_demo
    from relay.logs import configure_logging

    configure_logging("warning", "console")
    raise SystemExit(asyncio.run(run_demo(duration, state_dir)))


if __name__ == "__main__":  # pragma: no cover
    main()
