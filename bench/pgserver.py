"""The local PostgreSQL server as the benchmark sees it: a throw-away database per scenario, and the CPU time of
the server processes that work for that database.

On one machine the database server's CPU is part of what an event costs, so the PostgreSQL scenarios sum the
CPU time (utime + stime from /proc) of the postmaster and of its children that serve the scenario's database:
the client backends connected to it and the cluster's background processes (checkpointer, background writer,
WAL writer, …), which work for every database. Backends of other databases (a test suite using the same
server at the same time) are left out and count as other work. A backend that exits inside a window takes its
CPU time with it; the relays keep their connections open, so that loses little.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from bench.common import CLK_TCK

# The server the benchmark uses (trust authentication, like the test suite's); BENCH_PG_SERVER for another.
PG_SERVER = os.environ.get("BENCH_PG_SERVER", "postgresql://postgres@127.0.0.1:5432")
_CLIENT_BACKEND = re.compile(r"^\S+ (?P<db>\S+) (?:\S+\(\d+\)|\[local\])(?: |$)")
_AUTOVACUUM_WORKER = re.compile(r"^autovacuum worker(?: (?P<db>\S+))?")
_SETTINGS = ("server_version", "synchronous_commit", "fsync", "autovacuum", "shared_buffers", "max_connections")


@contextlib.asynccontextmanager
async def throwaway_database(server: str = PG_SERVER, prefix: str = "relay_bench") -> AsyncIterator[str]:
    """Create a database on `server` (a URL without a database), yield its URL, and drop it WITH (FORCE) at the
    end, also when the body fails or is cancelled."""
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(f"{server}/postgres", timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield f"{server}/{name}"
    finally:
        admin = await asyncpg.connect(f"{server}/postgres", timeout=10)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def process_title(cmdline: bytes) -> str:
    """A server process's title from /proc/PID/cmdline, without the `postgres: CLUSTER: ` prefix."""
    text = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
    if not text.startswith("postgres: "):
        return text  # the postmaster itself: its command line
    rest = text.removeprefix("postgres: ")
    head, sep, tail = rest.partition(": ")
    # `cluster_name` (Debian: "15/main") is shown before the process kind when it is set; it has no spaces.
    return tail if sep and " " not in head else rest


def serves_database(title: str, database: str) -> bool:
    """Whether a server process (by its title, see `process_title`) works for `database`.

    Client backends (`user database host(port) activity`) and autovacuum workers count for their own database
    only; every other process of the cluster (postmaster, checkpointer, WAL writer, …) counts for all.
    """
    if (m := _CLIENT_BACKEND.match(title)) is not None:
        return m["db"] == database
    if (m := _AUTOVACUUM_WORKER.match(title)) is not None:
        return m["db"] in (None, database)
    return True


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) from /proc/PID/stat; None when the process is gone or not readable."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_list(pid: int) -> str | None:
    """The CPUs a process may run on (`Cpus_allowed_list`, e.g. "0-1")."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                return line.split(":", 1)[1].strip()
    return None


@dataclass(frozen=True, slots=True)
class DbServer:
    """The local PostgreSQL cluster that holds `database`, found through a backend of it."""

    postmaster: int
    database: str
    settings: dict[str, str]

    @classmethod
    async def find(cls, url: str) -> DbServer | None:
        """None when the server is not on this machine (its processes are not in /proc)."""
        conn = await asyncpg.connect(url, timeout=10)
        try:
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            database = await conn.fetchval("SELECT current_database()")
            settings = {name: str(await conn.fetchval(f"SHOW {name}")) for name in _SETTINGS}
            info = _stat(int(pid))
        finally:
            await conn.close()
        if info is None:
            return None
        return cls(info[0], str(database), settings)

    def cpu(self) -> dict[int, float]:
        """CPU seconds of each process that serves the database, now."""
        out: dict[int, float] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            info = _stat(pid)
            if info is None or (pid != self.postmaster and info[0] != self.postmaster):
                continue
            try:
                title = process_title(Path(f"/proc/{pid}/cmdline").read_bytes())
            except OSError:
                continue
            if pid == self.postmaster or serves_database(title, self.database):
                out[pid] = info[1]
        return out

    def describe(self) -> dict[str, Any]:
        return {"cpus": cpu_list(self.postmaster), "database": self.database, **self.settings}


def cpu_between(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two `DbServer.cpu()` readings by the processes alive at the second one (a process
    started in between counts from zero)."""
    return sum(max(0.0, seconds - before.get(pid, 0.0)) for pid, seconds in after.items())
