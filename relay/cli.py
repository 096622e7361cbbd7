"""The `relay` command: parse, call the library, print. Tables for people, `--json` for scripts."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import getpass
import os
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson
from rich.console import Console
from rich.highlighter import JSONHighlighter
from rich.table import Table
from rich.text import Text

from relay._display import mask_url, mask_urls_in, terminal_safe
from relay.admin_client import AdminClient, AdminClientError, admin_token
from relay.config import Config, ConfigError
from relay.events import format_ts
from relay.ops import DeliveryFilter, EventFilter, Operations, OpsError, copy_store, operations, parse_when
from relay.spec import SpecRegistry
from relay.views import (
    circuit_probe_json,
    command_json,
    delivery_detail_json,
    delivery_json,
    event_detail_json,
    event_feed_json,
    event_json,
    instance_json,
    quarantine_json,
    quarantine_retry_json,
    replay_json,
    state_json,
    subscriber_json,
    test_delivery_json,
)

T = TypeVar("T")
console = Console()
err_console = Console(stderr=True)

#: Where the configuration is looked for when neither `-c` nor `$RELAY_CONFIG` names it.
DEFAULT_CONFIG_PATH = Path("/etc/erp-relay/relay.yaml")

CONFIG_OPTION = click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"Configuration file [default: $RELAY_CONFIG, then {DEFAULT_CONFIG_PATH}].",
)


def find_config(given: Path | None, env: Mapping[str, str], default: Path = DEFAULT_CONFIG_PATH) -> Path:
    """The configuration file to use: `-c`, else `$RELAY_CONFIG`, else `default` when it exists.

    Raises:
        ConfigError: none of them names a file; the message names both places looked at.
    """
    if given is not None:
        return given
    if env.get("RELAY_CONFIG"):
        return Path(env["RELAY_CONFIG"])
    if default.is_file():
        return default
    raise ConfigError([f"no configuration: $RELAY_CONFIG is not set and {default} does not exist (give -c FILE)"])


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


def _fail(problems: list[str]) -> SystemExit:
    for problem in problems:
        _echo(f"error: {problem}", err=True)
    return SystemExit(1)


def _config_path(given: Path | None) -> Path:
    try:
        return find_config(given, os.environ)
    except ConfigError as exc:
        raise _fail(exc.problems) from None


def _load(config_path: Path | None, *, secrets: bool = True) -> Config:
    """The configuration with its specs checked; `secrets=False` (read-only commands): only the file itself,
    no secret file read and no `${VAR}` required outside `store` (see `relay.config.load_config`)."""
    from relay.config import load_config
    from relay.daemon import load_all

    path = _config_path(config_path)
    try:
        return load_all(path)[0] if secrets else load_config(path, secrets=False)
    except ConfigError as exc:
        raise _fail(exc.problems) from None


def _load_all(config_path: Path | None) -> tuple[Path, Config, SpecRegistry]:
    from relay.daemon import load_all

    path = _config_path(config_path)
    try:
        config, specs = load_all(path)
    except ConfigError as exc:
        raise _fail(exc.problems) from None
    return path, config, specs


def _run_ops(config: Config, fn: Callable[[Operations], Awaitable[T]], specs: SpecRegistry | None = None) -> T:
    """Run one operator action against the configured store; an OpsError is one line on stderr and exit 1."""

    async def run() -> T:
        async with operations(config, specs) as ops:
            return await fn(ops)

    try:
        return asyncio.run(run())
    except OpsError as exc:
        raise _fail([str(exc)]) from None


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    """Where a command reads and acts: the store of a configuration, or a running relay's admin API (`--url`)."""

    config_path: Path | None
    url: str | None
    token_file: Path | None


def target_options(fn: Callable[..., None]) -> Callable[..., None]:
    """`-c`, `--url` and `--token-file`, handed to the command as one `target: Target` argument."""

    @functools.wraps(fn)
    def command(*args: Any, config_path: Path | None, url: str | None, token_file: Path | None, **kwargs: Any) -> None:
        fn(*args, target=Target(config_path, url, token_file), **kwargs)

    url_option = click.option(
        "--url",
        help="Work through the admin API of the relay at this URL (e.g. http://127.0.0.1:8080) instead of "
        "opening the database; the token comes from $RELAY_ADMIN_TOKEN or --token-file.",
    )
    token_option = click.option(
        "--token-file",
        type=click.Path(dir_okay=False, path_type=Path),
        help="A file holding the admin token for --url.",
    )
    return CONFIG_OPTION(url_option(token_option(command)))


def _client(target: Target) -> AdminClient:
    assert target.url is not None
    try:
        return AdminClient(target.url, admin_token(target.token_file, os.environ))
    except AdminClientError as exc:
        raise _fail([str(exc)]) from None


def _query(
    target: Target,
    local: Callable[[Operations], Awaitable[Any]],
    remote: Callable[[AdminClient], Any],
    *,
    secrets: bool = False,
    specs: bool = False,
) -> Any:
    """The view JSON of one request: from the store (read-only commands load the config without secrets) or,
    with `--url`, from the relay's admin API. A refusal is one line on stderr and exit 1.

    `specs`: the local action needs the channel schemas too (the full configuration is loaded, secrets and all).
    """
    if target.url is None:
        if specs:
            _, config, registry = _load_all(target.config_path)
            return _run_ops(config, local, registry)
        return _run_ops(_load(target.config_path, secrets=secrets), local)
    client = _client(target)
    try:
        return remote(client)
    except AdminClientError as exc:
        raise _fail([str(exc)]) from None


def _print_json(value: Any) -> None:
    sys.stdout.buffer.write(orjson.dumps(value, option=orjson.OPT_INDENT_2) + b"\n")
    sys.stdout.flush()


def _parse_when(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_when(value, datetime.now(UTC))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="erp-relay")
def main() -> None:
    """erp-relay: ERP business events to signed webhooks, durably and in order."""
    from relay.logs import configure_logging

    # Commands print their results on stdout; their logs go to stderr (`serve` reconfigures for itself).
    configure_logging("warning", "console", stream=sys.stderr)


@main.command()
@CONFIG_OPTION
def serve(config_path: Path | None) -> None:
    """Run the relay daemon until SIGTERM.

    A start-up failure is one line on stderr naming the problem, and exit code 1.
    """
    import importlib
    import importlib.util

    from relay.daemon import StartupError, run_serve, startup_problems
    from relay.logs import configure_logging

    config_path = _config_path(config_path)
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
def check_config(config_path: Path | None, probe: bool) -> None:
    """Validate the configuration: one line per problem (exit 1), or a summary (exit 0).

    Besides the file itself: secret files readable, the store URL supported and its directory writable,
    the listen address free (a relay already running there is noted, not a problem).
    """
    from relay.daemon import load_all, startup_problems

    config_path = _config_path(config_path)
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
def migrate_cmd(config_path: Path | None) -> None:
    """Apply the store's pending schema migrations and print its schema version.

    `serve` migrates on start too; run this first to upgrade a shared PostgreSQL database before the relays.
    Instances migrating at once take turns (an advisory lock); a schema newer than this relay is refused.
    """
    config = _load(config_path)
    schema = _run_ops(config, lambda ops: ops.schema_version())
    _echo(f"store: {mask_url(config.store.url)} at schema version {schema}")


@main.group("store")
def store_group() -> None:
    """Move a store: copy an SQLite installation into PostgreSQL."""


@store_group.command("copy")
@click.argument("from_url")
@click.argument("to_url")
def store_copy(from_url: str, to_url: str) -> None:
    """Copy the SQLite store FROM_URL into the empty PostgreSQL database TO_URL and verify the row counts.

    Events, deliveries with their states and attempts, quarantine, checkpoints, current state and rule states
    move as they are, in one transaction: a copy that does not verify leaves the target empty. Stop the relay
    that uses FROM_URL first, then point `store.url` at TO_URL.
    """

    def progress(table: str, rows: int) -> None:
        _echo(f"  {table}: {rows} rows", err=True)

    try:
        counts = asyncio.run(copy_store(from_url, to_url, progress=progress))
    except OpsError as exc:
        raise _fail([str(exc)]) from None
    table = Table("table", "source rows", "copied rows")
    for count in counts:
        table.add_row(count.table, str(count.source), str(count.target))
    console.print(table)
    _echo(f"copied {mask_url(from_url)} to {mask_url(to_url)}: every count matches")


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
    """A permissions checklist: one line per resource a source needs (answered, refused with the exact grant,
    missing, failed) and the document names an ION source accepts; returns how many need an admin's action."""
    import aiohttp

    from relay.config import IonImsSource
    from relay.ingest.ion_ims import accepted_documents
    from relay.onboarding.checklist import checklist_line, grant_needed, verdict
    from relay.poll import load_builders
    from relay.poll.base import PollError
    from relay.poll.scheduler import build_source
    from relay.poll.x3 import X3Fetcher

    load_builders()
    failed = 0
    async with aiohttp.ClientSession() as session:
        for source in config.sources:
            if isinstance(source, IonImsSource):
                for name in accepted_documents(source):
                    click.echo(f"{source.name} {name}: [accepted] IMS document {name} (route it to this connection)")
                continue
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
                grant = grant_needed(source, resource)
                try:
                    page = await fetcher.changes(resource, since=None, cursor=None)
                    # X3: an incremental poll and the representation's $query facet (X3 answers 500 for
                    # where/orderBy on a property outside it): name the missing fields now, not at 3 a.m.
                    problems = await fetcher.probe(resource) if isinstance(fetcher, X3Fetcher) else []
                except PollError as exc:
                    failed += 1
                    _echo(
                        checklist_line(source.name, resource.name, verdict(exc.status, exc.permission), grant, str(exc))
                    )
                else:
                    if problems:
                        failed += 1
                        for problem in problems:
                            click.echo(f"{source.name} {resource.name}: {problem}")
                    else:
                        _echo(checklist_line(source.name, resource.name, "answered", grant))
                        click.echo(f"{source.name} {resource.name}: ok ({len(page.records)} records in the first page)")
            await fetcher.close()
    return failed


def _run_store_free(coro: Coroutine[Any, Any, T]) -> T:
    """Run an operation that reads the ERP and stores nothing; an OpsError is one line on stderr and exit 1."""
    try:
        return asyncio.run(coro)
    except OpsError as exc:
        raise _fail([str(exc)]) from None


@main.command("discover")
@CONFIG_OPTION
@click.argument("source_name", metavar="SOURCE")
@click.option("--resource", default=None, help="Only this resource (X3 class, SX.e feed, http-json url).")
@click.option(
    "--noun", default=None, help="ion-ims: only BODs of this noun (SalesOrder) or document (Sync.SalesOrder)."
)
@click.option(
    "--sample", type=click.IntRange(1, 10_000), default=20, show_default=True,
    help="Records per resource (ion-ims: BODs per document).",
)  # fmt: skip
@click.option(
    "--mask",
    default=None,
    help="Regular expression of field names whose examples are masked [default: e-mail, phone, names, addresses, "
    "secrets]; values that look like e-mail addresses or phone numbers are always masked.",
)
@click.option("--json", "as_json", is_flag=True, help="The draft as JSON.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write here.")
def discover_cmd(
    config_path: Path | None, source_name: str, resource: str | None, noun: str | None, sample: int,
    mask: str | None, as_json: bool, out_path: Path | None,
) -> None:  # fmt: skip
    """Sample SOURCE's records and print a mapping draft (fields, fill rates, proposals, custom fields).

    Reads the ERP only: nothing is stored and no database file is created. For an ion-ims source, which is
    pushed to rather than read, the draft comes from the BOD element paths of the stored originals and the
    quarantined BODs of each noun (read from the store; nothing is written).
    """
    from relay.onboarding.discover import draft_json, render_draft
    from relay.ops import discover_ion, discover_source

    _, config, specs = _load_all(config_path)
    found = config.source(source_name)
    if found is not None and found.kind == "ion-ims":
        drafts = _run_store_free(discover_ion(config, specs, source_name, noun=noun, sample=sample, mask=mask))
    else:
        drafts = _run_store_free(
            discover_source(config, specs, source_name, resource=resource, sample=sample, mask=mask)
        )
    text = (
        orjson.dumps(draft_json(source_name, drafts), option=orjson.OPT_INDENT_2).decode() + "\n"
        if as_json
        else render_draft(source_name, drafts)
    )
    if out_path is not None:
        out_path.write_text(text, encoding="utf-8")
        click.echo(f"mapping draft of {len(drafts)} resource(s) written to {out_path}", err=True)
    else:
        click.echo(terminal_safe(text, multiline=True), nl=False)


@main.command("poll")
@CONFIG_OPTION
@click.argument("source_name", metavar="SOURCE")
@click.option("--dry-run", is_flag=True, required=True, help="Print what subscribers would receive; store nothing.")
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=None, help="Stop after N records in total.")
@click.option(
    "--keys",
    "keys_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Exactly these records: a file of entity keys, one a line (C00042, BOX-S-KRAFT-0001|ALD01).",
)
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="The same as --format json.")
def poll_cmd(
    config_path: Path | None, source_name: str, dry_run: bool, limit: int | None, keys_path: Path | None, fmt: str,
    as_json: bool,
) -> None:  # fmt: skip
    """Read SOURCE's current records and show the events subscribers would receive, beside the source values
    they come from, and which records fail validation and why. Stores nothing; opens no database."""
    from relay.onboarding.preview import parse_keys
    from relay.ops import preview_source
    from relay.views import preview_row_json

    config_path, config, specs = _load_all(config_path)
    if config.source(source_name) is None:
        click.echo(f"no source named {source_name!r} in {config_path}", err=True)
        raise SystemExit(1)
    keys = None
    if keys_path is not None:
        try:
            keys = parse_keys(keys_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise _fail([f"--keys {keys_path}: {exc}"]) from None
    rows = _run_store_free(preview_source(config, specs, source_name, keys=keys, limit=limit))
    failing = sum(1 for r in rows if r.status != "ok")
    if as_json or fmt == "json":
        _print_json([preview_row_json(r) for r in rows])
    elif fmt == "csv":
        _print_preview_csv([preview_row_json(r) for r in rows])
    else:
        table = Table("resource", "key", "status", "canonical ← source", "problems")
        for r in rows:
            pairs = "\n".join(
                terminal_safe(f"{f.canonical}={_plain(f.value)} ← {f.path}={_plain(f.source)}") for f in r.fields
            )
            problems = "\n".join(terminal_safe(p) for p in r.problems)
            table.add_row(_cell(r.resource), _cell(r.key), _cell(r.status), Text(pairs), Text(problems))
        _print_table(table, wide=False)
    click.echo(f"dry run: {len(rows)} record(s), {failing} would not be delivered; nothing was stored", err=True)


def _plain(value: Any) -> str:
    return "" if value is None else value if isinstance(value, str) else orjson.dumps(value).decode()


def _print_preview_csv(rows: list[dict[str, Any]]) -> None:
    """One line per record: key, status, problems, then each canonical field and its `path=source value`."""
    import csv

    names = list(dict.fromkeys(f["canonical"] for row in rows for f in row["fields"]))
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(
        ["resource", "channel", "key", "status", "problems", *(c for n in names for c in (n, f"{n} source"))]
    )
    for row in rows:
        by_name = {f["canonical"]: f for f in row["fields"]}
        cells = []
        for name in names:
            pair = by_name.get(name)
            cells += [_plain(pair["value"]), f"{pair['path']}={_plain(pair['source'])}"] if pair else ["", ""]
        writer.writerow(
            [terminal_safe(c) for c in (row["resource"], row["channel"], row["key"] or "", row["status"],
                                        "; ".join(row["problems"]), *cells)]
        )  # fmt: skip


# ------------------------------------------------------------------------------------------- events

WIDE_OPTION = click.option("--wide", is_flag=True, help="Never cut columns (the default when not on a terminal).")
SINCE_OPTION = click.option("--since", help="At or after: ISO 8601, or a time ago like 30m, 2h, 7d.")
UNTIL_OPTION = click.option("--until", help="Before: ISO 8601, or a time ago like 30m, 2h, 7d.")
FEED_PAGE = 1000  # events per look at the store while following; a larger backlog is read page by page at once


def _print_table(table: Table, wide: bool) -> None:
    """A table; cut to the terminal's width only on a terminal without --wide (piped output keeps full ids)."""
    if wide or not console.is_terminal:
        Console(width=1_000_000, soft_wrap=True).print(table)
    else:
        console.print(table)


def _print_rows(
    rows: list[dict[str, Any]],
    as_json: bool,
    columns: Sequence[str],
    cells: Callable[[dict[str, Any]], Sequence[object]],
    *,
    wide: bool,
    count: str | None = None,
) -> None:
    """What a list command prints: its rows (view JSON) as one JSON array with `--json`; otherwise a table of
    `columns` with one line of `cells(row)` a row, every cell terminal-safe (`_cell`), then the `count` line.
    `wide` as in `_print_table`.
    """
    if as_json:
        _print_json(rows)
        return
    table = Table(*columns)
    for row in rows:
        table.add_row(*map(_cell, cells(row)))
    _print_table(table, wide)
    if count is not None:
        console.print(count)


@main.group()
def events() -> None:
    """Inspect stored events."""


def _event_line(e: dict[str, Any]) -> str:
    """One followed event as a line: received, id, channel, source, key, version."""
    return "  ".join(str(e[k] or "-") for k in ("receivedAt", "eventId", "channel", "source", "entityKey", "version"))


def _follow(target: Target, flt: EventFilter, *, first: int, interval_s: float, as_json: bool) -> None:
    """Print the `first` newest matching events, then every new one as it is stored, until Ctrl-C."""

    def emit(views: list[dict[str, Any]]) -> None:
        for view in views:
            if as_json:
                sys.stdout.buffer.write(orjson.dumps(view) + b"\n")
            else:
                _echo(_event_line(view))
        sys.stdout.flush()

    start = dataclasses.replace(flt, limit=first)
    page = dataclasses.replace(flt, limit=FEED_PAGE)

    async def local(ops: Operations) -> None:
        feed = event_feed_json(await ops.event_feed(start))
        while True:
            emit(feed["events"])
            if len(feed["events"]) < FEED_PAGE:
                await asyncio.sleep(interval_s)
            feed = event_feed_json(await ops.event_feed(page, after=feed["cursor"]))

    def remote(client: AdminClient) -> None:
        feed = client.event_feed(start)
        while True:
            emit(feed["events"])
            if len(feed["events"]) < FEED_PAGE:
                time.sleep(interval_s)
            feed = client.event_feed(page, after=feed["cursor"])

    with contextlib.suppress(KeyboardInterrupt):
        _query(target, local, remote)


FOLLOW_INTERVAL_OPTION = click.option(
    "--interval",
    "interval_s",
    type=click.FloatRange(0.05, 60.0),
    default=1.0,
    show_default=True,
    help="Seconds between looks for new events.",
)


@events.command("list")
@target_options
@click.option("--channel")
@click.option("--source")
@click.option("--key", "entity_key", help="Entity key (e.g. a customer number).")
@SINCE_OPTION
@UNTIL_OPTION
@click.option("--limit", type=click.IntRange(1, 10_000_000), default=100, show_default=True)
@click.option("--oldest-first", is_flag=True, help="Oldest first (default: newest first).")
@click.option("-f", "--follow", is_flag=True, help="Then print new events as they are stored, like `events tail`.")
@FOLLOW_INTERVAL_OPTION
@WIDE_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one array; with --follow one object a line).")
def events_list(
    target: Target,
    channel: str | None,
    source: str | None,
    entity_key: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    oldest_first: bool,
    follow: bool,
    interval_s: float,
    wide: bool,
    as_json: bool,
) -> None:
    """List events, newest first (with --follow: the newest --limit oldest first, then new ones)."""
    flt = EventFilter(
        channel=channel,
        source=source,
        entity_key=entity_key,
        since=_parse_when(since),
        until=_parse_when(until),
        limit=limit,
        newest_first=not oldest_first,
    )
    if follow:
        _follow(target, flt, first=limit, interval_s=interval_s, as_json=as_json)
        return

    async def local(ops: Operations) -> list[dict[str, Any]]:
        return [event_json(e, with_payload=False) for e in await ops.list_events(flt)]

    found = _query(target, local, lambda c: c.list_events(flt))
    _print_rows(
        found,
        as_json,
        ("event id", "channel", "source", "key", "version", "received"),
        lambda e: (e["eventId"], e["channel"], e["source"], e["entityKey"], e["version"], e["receivedAt"]),
        wide=wide,
        count=f"{len(found)} event(s)",
    )


@events.command("tail")
@target_options
@click.option("--channel", help="A channel name or a glob such as 'order/*'.")
@click.option("--source")
@click.option("--key", "entity_key", help="Entity key (e.g. a customer number).")
@click.option(
    "-n", "--lines", type=click.IntRange(0, 100_000), default=10, show_default=True, help="Newest events shown first."
)
@FOLLOW_INTERVAL_OPTION
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line.")
def events_tail(
    target: Target,
    channel: str | None,
    source: str | None,
    entity_key: str | None,
    lines: int,
    interval_s: float,
    as_json: bool,
) -> None:
    """Print the newest events, then each new one as it is stored (one line each), until Ctrl-C."""
    flt = EventFilter(channel=channel, source=source, entity_key=entity_key)
    _follow(target, flt, first=lines, interval_s=interval_s, as_json=as_json)


@events.command("show")
@target_options
@click.argument("event_id")
@WIDE_OPTION
@click.option("--json", "as_json", is_flag=True)
def events_show(target: Target, event_id: str, wide: bool, as_json: bool) -> None:
    """Show one event with its payload and every delivery of it."""

    async def local(ops: Operations) -> dict[str, Any]:
        return event_detail_json(await ops.show_event(event_id))

    data = _query(target, local, lambda c: c.show_event(event_id))
    if as_json:
        _print_json(data)
        return
    for key, value in data.items():
        if key in ("payload", "original", "originalType", "deliveries"):
            continue
        _print_field(key, value)
    payload = Text(terminal_safe(orjson.dumps(data["payload"], option=orjson.OPT_INDENT_2).decode(), multiline=True))
    console.print(JSONHighlighter()(payload))
    if "original" in data:
        console.print(Text.assemble((f"original ({terminal_safe(data['originalType'])})", "bold"), ":"))
        _print_block(data["original"])
    console.print(Text("deliveries", "bold"))
    _print_deliveries(data["deliveries"], as_json=False, wide=wide)


# ------------------------------------------------------------------------------------------- quarantine


@main.group()
def quarantine() -> None:
    """Inspect refused input kept for inspection."""


@quarantine.command("list")
@target_options
@click.option("--source")
@click.option("--limit", type=click.IntRange(1, 100_000), default=100, show_default=True)
@WIDE_OPTION
@click.option("--json", "as_json", is_flag=True)
def quarantine_list(target: Target, source: str | None, limit: int, wide: bool, as_json: bool) -> None:
    """Newest quarantined inputs first."""

    async def local(ops: Operations) -> list[dict[str, Any]]:
        return [quarantine_json(r) for r in await ops.list_quarantine(source=source, limit=limit)]

    _print_rows(
        _query(target, local, lambda c: c.list_quarantine(source=source, limit=limit)),
        as_json,
        ("id", "received", "source", "channel", "reason", "bytes"),
        lambda r: (r["id"], r["receivedAt"], r["source"], r["channel"], r["reason"][:80], r["size"]),
        wide=wide,
    )


@quarantine.command("show")
@target_options
@click.argument("quarantine_id", type=click.IntRange(1, 2**63 - 1))
@click.option("--json", "as_json", is_flag=True)
def quarantine_show(target: Target, quarantine_id: int, as_json: bool) -> None:
    """One quarantined input with its reason and body."""

    async def local(ops: Operations) -> dict[str, Any]:
        return quarantine_json(await ops.show_quarantine(quarantine_id))

    data = _query(target, local, lambda c: c.show_quarantine(quarantine_id))
    if as_json:
        _print_json(data)
        return
    for key in ("id", "receivedAt", "source", "channel", "contentType", "reason"):
        _print_field(key, data[key])
    for d in data["details"]:
        console.print(Text.assemble("  ", _cell(d.get("path")), ": ", _cell(d.get("message"))))
    _print_block(data.get("body", ""))


@quarantine.command("retry")
@target_options
@click.argument("quarantine_id", type=click.IntRange(1, 2**63 - 1))
@click.option("--json", "as_json", is_flag=True)
def quarantine_retry(target: Target, quarantine_id: int, as_json: bool) -> None:
    """Check a quarantined input again (after fixing a spec or mapping); store it if it passes now."""

    async def local(ops: Operations) -> dict[str, Any]:
        return quarantine_retry_json(await ops.retry_quarantine(quarantine_id))

    result = _query(target, local, lambda c: c.retry_quarantine(quarantine_id), specs=True)
    if as_json:
        _print_json(result)
        raise SystemExit(0 if result["stored"] else 1)
    if not result["stored"]:
        click.echo(f"still refused ({len(result['problems'])} problem(s)):")
        for problem in result["problems"]:
            _echo(f"  {problem}")
        raise SystemExit(1)
    for e in result["events"]:
        _echo(f"{e['eventId']}: {e['status']} ({e['deliveries']} deliveries)")
    click.echo(f"quarantine entry {quarantine_id} stored and removed")


# ------------------------------------------------------------------------------------------- deliveries


@main.group()
def deliveries() -> None:
    """Inspect deliveries and their attempts."""


@deliveries.command("list")
@target_options
@click.option("--event-id")
@click.option("--subscriber")
@click.option("--state", type=click.Choice(["pending", "delivered", "dead", "stale", "superseded"]))
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=100, show_default=True)
@WIDE_OPTION
@click.option("--json", "as_json", is_flag=True)
def deliveries_list(
    target: Target,
    event_id: str | None,
    subscriber: str | None,
    state: str | None,
    limit: int,
    wide: bool,
    as_json: bool,
) -> None:
    """Newest deliveries first."""
    flt = DeliveryFilter(event_id=event_id, subscriber=subscriber, state=state, limit=limit)

    async def local(ops: Operations) -> list[dict[str, Any]]:
        return [delivery_json(d) for d in await ops.list_deliveries(flt)]

    _print_deliveries(_query(target, local, lambda c: c.list_deliveries(flt)), as_json, wide=wide)


@deliveries.command("show")
@target_options
@click.argument("delivery_id", type=click.IntRange(1, 2**63 - 1))
@WIDE_OPTION
@click.option("--json", "as_json", is_flag=True)
def deliveries_show(target: Target, delivery_id: int, wide: bool, as_json: bool) -> None:
    """One delivery: every attempt with status, duration and the subscriber's answer, and the next attempt."""

    async def local(ops: Operations) -> dict[str, Any]:
        return delivery_detail_json(await ops.show_delivery(delivery_id))

    data = _query(target, local, lambda c: c.show_delivery(delivery_id))
    if as_json:
        _print_json(data)
        return
    for key in ("id", "eventId", "subscriber", "channel", "entityKey", "state", "attempts", "createdAt"):
        _print_field(key, data[key])
    if data["nextAttemptAt"] is not None:
        _print_field("nextAttemptAt", data["nextAttemptAt"])
    if data["finishedAt"] is not None:
        _print_field("finishedAt", data["finishedAt"])
    table = Table("#", "started", "status", "duration ms", "error", "response")
    for a in data["attempts"]:
        table.add_row(
            *map(
                _cell,
                (
                    a["attempt"],
                    a["startedAt"],
                    a["status"],
                    f"{a['durationMs']:.1f}",
                    a["error"],
                    (a["response"] or "")[:200],
                ),
            )
        )
    _print_table(table, wide)


def _print_deliveries(rows: list[dict[str, Any]], as_json: bool, *, wide: bool = False) -> None:
    _print_rows(
        rows,
        as_json,
        ("id", "event id", "subscriber", "state", "attempts", "next attempt", "replay", "last error"),
        lambda d: (
            d["id"],
            d["eventId"],
            d["subscriber"],
            d["state"],
            d["attempts"],
            d["nextAttemptAt"],
            "yes" if d["replay"] else "",
            (d["lastError"] or "")[:60],
        ),
        wide=wide,
        count=f"{len(rows)} deliver{'y' if len(rows) == 1 else 'ies'}",
    )


@main.command("replay")
@target_options
@click.option("--subscriber", help="Only this subscriber (default: every matching one).")
@click.option("--channel", help="A channel name or a glob such as 'order/*'.")
@click.option("--source", help="Only events from this source.")
@SINCE_OPTION
@UNTIL_OPTION
@click.option("--event-id")
@click.option("--key", "entity_key", help="Entity key.")
@click.option("--dry-run", is_flag=True, help="Only count what would be replayed.")
@click.option("--json", "as_json", is_flag=True)
def replay_cmd(
    target: Target,
    subscriber: str | None,
    channel: str | None,
    source: str | None,
    since: str | None,
    until: str | None,
    event_id: str | None,
    entity_key: str | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Deliver stored events again (new deliveries flagged `relay-replay: true`)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    flt = EventFilter(
        channel=channel, source=source, entity_key=entity_key, since=_parse_when(since), until=_parse_when(until)
    )
    progress = Progress(
        TextColumn("replaying"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        disable=as_json or dry_run or target.url is not None or not err_console.is_terminal,
    )
    task = progress.add_task("replay", total=None)

    def on_progress(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)

    async def local(ops: Operations) -> dict[str, Any]:
        counted = await ops.replay(
            flt, event_id=event_id, subscriber=subscriber, dry_run=dry_run, on_progress=on_progress
        )
        return replay_json(counted)

    with progress:
        result = _query(
            target,
            local,
            lambda c: c.replay(flt, event_id=event_id, subscriber=subscriber, dry_run=dry_run),
            secrets=not dry_run,  # a dry run only reads
        )
    if as_json:
        _print_json(result)
    elif dry_run:
        click.echo(f"dry run: {result['events']} event(s) match; {result['deliveries']} deliveries would be created")
    else:
        click.echo(f"{result['deliveries']} replay deliveries created for {result['events']} event(s)")


@main.group()
def dlq() -> None:
    """Dead letters: deliveries that ran out of retries."""


@dlq.command("list")
@target_options
@click.option("--subscriber")
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=100, show_default=True)
@WIDE_OPTION
@click.option("--json", "as_json", is_flag=True)
def dlq_list(target: Target, subscriber: str | None, limit: int, wide: bool, as_json: bool) -> None:
    """Dead deliveries with their last reason, newest first."""
    flt = DeliveryFilter(subscriber=subscriber, limit=limit)

    async def local(ops: Operations) -> list[dict[str, Any]]:
        return [delivery_json(d) for d in await ops.list_dead(flt)]

    _print_deliveries(_query(target, local, lambda c: c.list_dead(flt)), as_json, wide=wide)


@dlq.command("redrive")
@target_options
@click.option("--subscriber")
@click.option("--channel")
@click.option("--event-id")
@click.option("--key", "entity_key")
@SINCE_OPTION
@UNTIL_OPTION
@click.option("--dry-run", is_flag=True, help="Only count the dead deliveries that would be redriven.")
def dlq_redrive(
    target: Target,
    subscriber: str | None,
    channel: str | None,
    event_id: str | None,
    entity_key: str | None,
    since: str | None,
    until: str | None,
    dry_run: bool,
) -> None:
    """Make matching dead deliveries pending again, due now (a running relay picks them up within 1 s)."""
    flt = DeliveryFilter(
        subscriber=subscriber,
        channel=channel,
        event_id=event_id,
        entity_key=entity_key,
        since=_parse_when(since),
        until=_parse_when(until),
    )
    count: int = _query(
        target,
        lambda ops: ops.redrive(flt, dry_run=dry_run),
        lambda c: c.redrive(flt, dry_run=dry_run),
        secrets=not dry_run,
    )
    noun = f"dead deliver{'y' if count == 1 else 'ies'}"
    click.echo(f"dry run: {count} {noun} would be redriven" if dry_run else f"{count} {noun} redriven")


@main.group()
def subscribers() -> None:
    """Subscriber health, and re-enabling after a 410."""


@subscribers.command("list")
@target_options
@WIDE_OPTION
@click.option("--json", "as_json", is_flag=True)
def subscribers_list(target: Target, wide: bool, as_json: bool) -> None:
    """Pending and dead counts, circuit state, last success, disabled flag."""

    async def local(ops: Operations) -> list[dict[str, Any]]:
        return [subscriber_json(s) for s in await ops.subscribers()]

    _print_rows(
        _query(target, local, lambda c: c.subscribers()),
        as_json,
        ("name", "url", "pending", "dead", "circuit", "last success", "disabled"),
        lambda r: (
            r["name"],
            mask_url(r["url"]),
            r["pending"],
            r["dead"],
            r["circuit"],
            r["lastSuccessAt"],
            (r["disabledReason"] or "yes") if r["disabled"] else "",
        ),
        wide=wide,
    )


@main.command("instances")
@target_options
@WIDE_OPTION
@click.option("--json", "as_json", is_flag=True)
def instances(target: Target, wide: bool, as_json: bool) -> None:
    """The live `relay serve` instances on the store: heartbeat, poll leases, deliveries in flight, version."""

    async def local(ops: Operations) -> list[dict[str, Any]]:
        return [instance_json(i) for i in await ops.instances()]

    _print_rows(
        _query(target, local, lambda c: c.instances()),
        as_json,
        ("id", "version", "started", "heartbeat", "poll leases", "in flight"),
        lambda r: (r["id"], r["version"], r["startedAt"], r["heartbeatAt"], r["pollLeases"], r["deliveriesInFlight"]),
        wide=wide,
    )


@subscribers.command("enable")
@target_options
@click.argument("name")
def subscribers_enable(target: Target, name: str) -> None:
    """Re-enable a subscriber that answered 410 Gone."""
    actor = _cli_actor()

    async def local(ops: Operations) -> None:
        await ops.enable_subscriber(name)
        ops.record_action(actor, "enable subscriber", 1, subscriber=name)

    _query(target, local, lambda c: c.enable_subscriber(name), secrets=True)
    click.echo(f"{name} enabled")


def _cli_actor() -> str:
    """Who an operator action from the CLI is logged as (with `--url` the relay logs the token's name)."""
    return f"cli:{getpass.getuser()}"


def _print_test_answer(result: dict[str, Any]) -> None:
    answer = f"HTTP {result['status']}" if result["status"] is not None else f"no answer: {result['error']}"
    _echo(f"{result['subscriber']}: {answer} in {result['durationMs']:.0f} ms (webhook-id {result['webhookId']})")
    if result["response"]:
        _echo(result["response"])


@subscribers.command("test")
@target_options
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
def subscribers_test(target: Target, name: str, as_json: bool) -> None:
    """Send a signed test event (channel relay/test) to a subscriber now and show its answer; exit 1 unless 2xx."""
    actor = _cli_actor()

    async def local(ops: Operations) -> dict[str, Any]:
        return test_delivery_json(await ops.send_test_event(name, actor=actor))

    result = _query(target, local, lambda c: c.test_subscriber(name), secrets=True)
    if as_json:
        _print_json(result)
    else:
        _print_test_answer(result)
    if not result["ok"]:
        raise SystemExit(1)


@subscribers.command("test-circuit")
@target_options
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
def subscribers_test_circuit(target: Target, name: str, as_json: bool) -> None:
    """Probe a subscriber now with a signed test event (the console's Test circuit now); exit 1 unless 2xx.

    With --url the running relay's circuit breaker counts the answer: a 2xx closes an open circuit at once, so
    waiting deliveries flow without the cooldown. Without it only the answer is shown (no circuit is running).
    """
    actor = _cli_actor()

    async def local(ops: Operations) -> dict[str, Any]:
        return circuit_probe_json(await ops.test_circuit(name, actor=actor))

    result = _query(target, local, lambda c: c.test_circuit(name), secrets=True)
    if as_json:
        _print_json(result)
    else:
        _print_test_answer(result)
        if result["circuitAfter"] is None:
            click.echo("circuit: not known outside relay serve (use --url to probe a running relay's circuit)")
        else:
            _echo(f"circuit: {result['circuitBefore']} -> {result['circuitAfter']}")
    if not result["ok"]:
        raise SystemExit(1)


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

    from relay._net import bound_port
    from relay.sim import SHUTDOWN_GRACE_S

    async def run() -> None:
        runners = []
        for app in apps:
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_GRACE_S)
            await runner.setup()
            site = web.TCPSite(runner, host, port)
            await site.start()
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
@click.option(
    "--fail-after-create",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Share of first order creates that are carried out and then not answered (write-back tests).",
)
@click.option("--after-create", type=click.Choice(["timeout", "drop"]), default="timeout", show_default=True)
def simulate_sxe(
    host: str,
    port: int,
    ionapi_out: Path | None,
    rows: int,
    changes_per_s: float,
    seed: int,
    fail_after_create: float,
    after_create: str,
) -> None:
    """SX.e's sxapirestservice feeds and order/customer creates behind a simulated ION API gateway and token."""
    from relay.sim.ion import IonSimulator
    from relay.sim.sxe import OPERATIONS, SxeSimulator

    sim = IonSimulator()
    sxe = SxeSimulator(seed=seed, after_create_rate=fail_after_create, after_create_mode=after_create)
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
@click.option(
    "--fail-after-create",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Share of first order creates that are carried out and then not answered (write-back tests).",
)
@click.option("--after-create", type=click.Choice(["timeout", "drop"]), default="timeout", show_default=True)
def simulate_x3(
    host: str, port: int, changes_per_s: float, seed: int, fail_after_create: float, after_create: str
) -> None:
    """Sage X3 (folder ALDGATE): api1 REST and GraphQL, records that change and disappear over time; sales order and
    customer creates (write-back)."""
    from relay.sim.x3 import X3Simulator

    sim = X3Simulator(seed=seed)
    sim.after_create_rate, sim.after_create_mode = fail_after_create, after_create
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
def spec_export(config_path: Path | None, version: str, output: Path | None) -> None:
    """Print one AsyncAPI document of every channel subscribers can receive (2.6 or 3.0).

    Without a configuration file, the documents shipped with the relay are exported.
    """
    import yaml

    from relay.spec import builtin_spec_paths, export_document, load_specs

    try:
        found: Path | None = find_config(config_path, os.environ)
    except ConfigError:
        found = None  # no configuration anywhere: the shipped documents
    paths = _load(found).spec_paths if found is not None and found.exists() else builtin_spec_paths()
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


# ------------------------------------------------------------------------------------------- state


@main.group()
def state() -> None:
    """The current state of business keys: the latest event of each key by version."""


@state.command("show")
@target_options
@click.argument("noun")
@click.argument("key")
@click.option("--json", "as_json", is_flag=True)
def state_show(target: Target, noun: str, key: str, as_json: bool) -> None:
    """Show the latest event of one key, e.g. `relay state show inventory 'P-100|MAIN'`."""

    async def local(ops: Operations) -> dict[str, Any]:
        return state_json(await ops.show_state(noun, key))

    data = _query(target, local, lambda c: c.show_state(noun, key))
    if as_json:
        _print_json(data)
        return
    for field_name, value in data.items():
        if field_name != "data":
            _print_field(field_name, value)
    body = Text(terminal_safe(orjson.dumps(data["data"], option=orjson.OPT_INDENT_2).decode(), multiline=True))
    console.print(JSONHighlighter()(body))


@state.command("list")
@target_options
@click.argument("noun")
@click.option("--prefix", default="", help="Only keys that start with this text (e.g. a part number and `|`).")
@click.option("--limit", type=click.IntRange(1, 100_000), default=100, show_default=True)
@WIDE_OPTION
@click.option("--json", "as_json", is_flag=True)
def state_list(target: Target, noun: str, prefix: str, limit: int, wide: bool, as_json: bool) -> None:
    """List the current state of the keys of NOUN in key order."""

    async def local(ops: Operations) -> list[dict[str, Any]]:
        return [state_json(r) for r in await ops.list_state(noun, prefix=prefix, limit=limit)]

    rows = _query(target, local, lambda c: c.list_state(noun, prefix=prefix, limit=limit))
    _print_rows(
        rows,
        as_json,
        ("key", "channel", "version", "deleted", "received"),
        lambda r: (r["entityKey"], r["channel"], r["version"], r["deleted"], r["receivedAt"]),
        wide=wide,
        count=f"{len(rows)} key(s)",
    )


if __name__ == "__main__":  # pragma: no cover
    main()


# ------------------------------------------------------------------------------------------- commands


@main.group()
def commands() -> None:
    """Write-back commands sent by services to the ERP (create orders and customers)."""


@commands.command("list")
@CONFIG_OPTION
@click.option("--source")
@click.option("--status", type=click.Choice(["accepted", "running", "succeeded", "failed"]))
@click.option("--command", "command_name", type=click.Choice(["order/create", "customer/create", "customer/update"]))
@click.option("--limit", type=click.IntRange(1, 100_000), default=100, show_default=True)
@WIDE_OPTION
@click.option("--json", "as_json", is_flag=True)
def commands_list(
    config_path: Path,
    source: str | None,
    status: str | None,
    command_name: str | None,
    limit: int,
    wide: bool,
    as_json: bool,
) -> None:
    """Newest commands first."""
    config = _load(config_path)
    found = _run_ops(
        config, lambda ops: ops.list_commands(source=source, status=status, command=command_name, limit=limit)
    )
    _print_rows(
        [command_json(r) for r in found],
        as_json,
        ("id", "created", "source", "command", "status", "attempts", "document", "error"),
        lambda r: (
            r["commandId"],
            r["createdAt"],
            r["source"],
            r["command"],
            r["status"],
            r["attempts"],
            (r["result"] or {}).get("documentNumber"),
            (r["error"] or {}).get("message", "")[:60] if r["status"] != "succeeded" else "",
        ),
        wide=wide,
    )


@commands.command("show")
@CONFIG_OPTION
@click.argument("command_id")
@click.option("--json", "as_json", is_flag=True)
def commands_show(config_path: Path, command_id: str, as_json: bool) -> None:
    """One command: status, attempts, the ERP's document number or messages, and the command sent."""
    config = _load(config_path)
    data = command_json(_run_ops(config, lambda ops: ops.show_command(command_id)), with_body=True)
    if as_json:
        _print_json(data)
        return
    for key in ("commandId", "source", "command", "idempotencyKey", "reference", "status", "attempts", "createdAt",
                "finishedAt", "nextAttemptAt"):  # fmt: skip
        _print_field(key, data[key])
    if data["result"]:
        _print_field("documentNumber", data["result"].get("documentNumber"))
    if data["error"]:
        _print_field("error", f"{data['error'].get('code')}: {data['error'].get('message')}")
        for message in data["error"].get("erpMessages") or []:
            console.print(Text.assemble("  ", _cell(message)))
    _print_block(orjson.dumps(data["body"], option=orjson.OPT_INDENT_2).decode())


@commands.command("retry")
@CONFIG_OPTION
@click.argument("command_id")
@click.option("--json", "as_json", is_flag=True)
def commands_retry(config_path: Path, command_id: str, as_json: bool) -> None:
    """Restart a failed command; a create is first looked up in the ERP so it is never made twice."""
    config = _load(config_path)
    data = command_json(_run_ops(config, lambda ops: ops.retry_command(command_id)))
    if as_json:
        _print_json(data)
        return
    click.echo(f"command {command_id} accepted again; a running relay executes it shortly")
