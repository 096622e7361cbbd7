"""PostgreSQL driver choice: asyncpg vs psycopg 3 on the store's two hot statements.

Measures, on a throw-away database of the local server, (1) the ingest batch: 100 events and 300 deliveries
(fan-out to 3 subscribers) inserted in one transaction, by `executemany` and by `unnest` arrays; (2) the claim:
100 due deliveries leased with `FOR UPDATE SKIP LOCKED` out of 10,000 pending, then given back.

    .venv/bin/python -m bench.pg_driver [--dsn postgresql://postgres@127.0.0.1:5432/postgres] [--rounds 200]

Prints one line per (driver, statement) with the median and p90 in milliseconds and events/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import psycopg
from psycopg_pool import AsyncConnectionPool

from bench.pgserver import throwaway_database

SCHEMA = """
CREATE TABLE events (seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, event_id text NOT NULL UNIQUE,
    channel text NOT NULL, received_at text COLLATE "C" NOT NULL, payload bytea NOT NULL);
CREATE TABLE deliveries (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id text NOT NULL REFERENCES events (event_id) ON DELETE CASCADE, subscriber text NOT NULL,
    state text NOT NULL, next_attempt_at text COLLATE "C" NOT NULL, lease_owner text, lease_expires_at text COLLATE "C",
    lease_token bigint);
CREATE INDEX deliveries_claim ON deliveries (subscriber, next_attempt_at, id) WHERE state = 'pending';
CREATE SEQUENCE lease_tokens;
"""
EVENTS_PER_BATCH = 100
SUBSCRIBERS = ("s1", "s2", "s3")
PAYLOAD = b'{"eventId":"x","data":{"orderNo":"SO-1","lines":[1,2,3]}}' * 8
TS = "2026-11-20T09:00:00.000000Z"
CLAIM = """
UPDATE deliveries SET lease_owner = {owner}, lease_expires_at = '2099-01-01T00:00:00.000000Z',
       lease_token = nextval('lease_tokens')
WHERE id IN (SELECT id FROM deliveries WHERE state = 'pending' AND subscriber = 's1'
             AND next_attempt_at <= {now} AND (lease_expires_at IS NULL OR lease_expires_at < {now})
             ORDER BY next_attempt_at, id LIMIT 100 FOR UPDATE SKIP LOCKED)
RETURNING id
"""
RELEASE = "UPDATE deliveries SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner IS NOT NULL"


def batch_rows() -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    ids = [secrets.token_hex(12) for _ in range(EVENTS_PER_BATCH)]
    return (
        [(i, "order/synced", TS, PAYLOAD) for i in ids],
        [(i, s, "pending", TS) for i in ids for s in SUBSCRIBERS],
    )


def columns(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    return [list(col) for col in zip(*rows, strict=True)]


async def timed(rounds: int, fn: Callable[[], Awaitable[None]]) -> list[float]:
    for _ in range(10):  # warm the statement caches and the buffer pool
        await fn()
    out = []
    for _ in range(rounds):
        started = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - started) * 1000)
    return out


def report(driver: str, what: str, ms: list[float], events: int) -> None:
    median = statistics.median(ms)
    p90 = statistics.quantiles(ms, n=10)[-1]
    print(f"{driver:8} {what:22} median {median:7.2f} ms  p90 {p90:7.2f} ms  {events / median * 1000:9,.0f} events/s")


async def bench_asyncpg(dsn: str, rounds: int) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=2, max_size=2)
    async with pool.acquire() as conn:

        async def executemany() -> None:
            events, deliveries = batch_rows()
            async with conn.transaction():
                await conn.executemany(
                    "INSERT INTO events (event_id, channel, received_at, payload) VALUES ($1, $2, $3, $4)", events
                )
                await conn.executemany(
                    "INSERT INTO deliveries (event_id, subscriber, state, next_attempt_at) VALUES ($1, $2, $3, $4)",
                    deliveries,
                )

        async def unnest() -> None:
            events, deliveries = batch_rows()
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO events (event_id, channel, received_at, payload) "
                    "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[])",
                    *columns(events),
                )
                await conn.execute(
                    "INSERT INTO deliveries (event_id, subscriber, state, next_attempt_at) "
                    "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])",
                    *columns(deliveries),
                )

        async def claim() -> None:
            rows = await conn.fetch(CLAIM.format(owner="$1", now="$2"), "bench", TS)
            assert len(rows) == 100, len(rows)
            await conn.execute(RELEASE)

        report("asyncpg", "ingest executemany", await timed(rounds, executemany), EVENTS_PER_BATCH)
        report("asyncpg", "ingest unnest", await timed(rounds, unnest), EVENTS_PER_BATCH)
        report("asyncpg", "claim+release 100", await timed(rounds, claim), 100)
    await pool.close()


async def bench_psycopg(dsn: str, rounds: int) -> None:
    pool = AsyncConnectionPool(dsn, min_size=2, max_size=2, open=False)
    await pool.open()
    async with pool.connection() as conn:

        async def executemany() -> None:
            events, deliveries = batch_rows()
            async with conn.transaction(), conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO events (event_id, channel, received_at, payload) VALUES (%s, %s, %s, %s)", events
                )
                await cur.executemany(
                    "INSERT INTO deliveries (event_id, subscriber, state, next_attempt_at) VALUES (%s, %s, %s, %s)",
                    deliveries,
                )

        async def unnest() -> None:
            events, deliveries = batch_rows()
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO events (event_id, channel, received_at, payload) "
                    "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::bytea[])",
                    columns(events),
                )
                await conn.execute(
                    "INSERT INTO deliveries (event_id, subscriber, state, next_attempt_at) "
                    "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[])",
                    columns(deliveries),
                )

        async def claim() -> None:
            async with conn.transaction():
                cur = await conn.execute(CLAIM.format(owner="%(owner)s", now="%(now)s"), {"owner": "bench", "now": TS})
                rows = await cur.fetchall()
                assert len(rows) == 100, len(rows)
                await conn.execute(RELEASE)

        report("psycopg", "ingest executemany", await timed(rounds, executemany), EVENTS_PER_BATCH)
        report("psycopg", "ingest unnest", await timed(rounds, unnest), EVENTS_PER_BATCH)
        report("psycopg", "claim+release 100", await timed(rounds, claim), 100)
    await pool.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument(
        "--dsn", default=os.environ.get("BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    server = args.dsn.rsplit("/", 1)[0]
    async with throwaway_database(server) as dsn:
        for bench in (bench_asyncpg, bench_psycopg):
            conn = await asyncpg.connect(dsn)
            version = conn.get_server_version()
            await conn.execute("DROP TABLE IF EXISTS deliveries, events; DROP SEQUENCE IF EXISTS lease_tokens;")
            await conn.execute(SCHEMA)
            # The claim's table: 10,000 due deliveries of one subscriber besides what the ingest rounds add.
            await conn.execute(
                "INSERT INTO events (event_id, channel, received_at, payload) "
                "SELECT 'seed-' || g, 'order/synced', $1, $2 FROM generate_series(1, 10000) g",
                TS,
                PAYLOAD,
            )
            await conn.execute(
                "INSERT INTO deliveries (event_id, subscriber, state, next_attempt_at) "
                "SELECT 'seed-' || g, 's1', 'pending', $1 FROM generate_series(1, 10000) g",
                TS,
            )
            await conn.execute("ANALYZE")
            await conn.close()
            await bench(dsn, args.rounds)
        print(f"PostgreSQL {version}, asyncpg {asyncpg.__version__}, psycopg {psycopg.__version__}")


if __name__ == "__main__":
    asyncio.run(main())
