"""Engine, sessions and migrations for SQLite (embedded default) and PostgreSQL.

SQLite runs in WAL mode (readers never block the writer) with synchronous=NORMAL (a committed
transaction survives a process kill; only an OS crash may lose the last ones) and a busy
timeout, and write transactions begin IMMEDIATE: a deferred transaction that reads and then
writes can fail with "database is locked" instead of waiting its turn."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Table, event, insert
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from headend.observability import metrics
from headend.storage import unit
from headend.storage.models import OutboxRow

__all__ = [
    "BALANCE_LANE",
    "DEFAULT_LANE",
    "RELAY_LANE",
    "Database",
    "create_engine",
    "migrate",
    "migrate_sync",
]

OUTBOX: Table = OutboxRow.__table__  # type: ignore[assignment]

SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_CACHE_KIB = 512
"""Page cache per SQLite connection. Each pooled connection (one aiosqlite thread each, up to
15 per engine, two engines in the daemon) fills its own cache, 2 MiB by default, as the
database outgrows it: that filling was the daemon's RSS growth after warm-up in the soak
benchmark (Python objects stayed flat), tens of MB that settled only once every connection's
cache was full. The OS page cache holds the file anyway, so a smaller per-connection cache
costs a page copy on a miss, not a disk read."""
_BEGIN_OPTION = "headend_sqlite_begin"
_MIGRATION_LOCK_ID = 0x68656164  # "head"

# SQLite has one writer at a time, and a writer that finds the lock taken sleeps in SQLite's
# busy handler (1 ms .. 100 ms steps), so many concurrent writers wait far longer than their
# transactions take. Writers of one process queue here instead, first come first served;
# the busy timeout still covers other processes (the CLI, a second head-end).
# Keyed by event loop (a future belongs to one loop), then by database file.
# Waiting writers go by lane (issue 10): balance batches first (a batch of two hundred events
# is a few statements, and billing must not wait behind the commands' bookkeeping), then the
# relay commands' group commits, then everything else (readings batches, the outbox).
_SQLITE_WRITE_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _WriteLock]]
_SQLITE_WRITE_LOCKS = weakref.WeakKeyDictionary()


BALANCE_LANE = 0
RELAY_LANE = 1
DEFAULT_LANE = 2


class _WriteLock:
    """A lock whose waiters go by lane, each lane first come, first served."""

    def __init__(self) -> None:
        self.held = False
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = 0

    async def acquire(self, lane: int) -> None:
        if not self.held and not self._waiters:
            self.held = True
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._order += 1
        heapq.heappush(self._waiters, (lane, self._order, future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # handed over just as it was cancelled: pass it on
            else:
                future.cancel()
            raise

    def release(self) -> None:
        while self._waiters:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)  # the lock moves to that waiter; held stays True
                return
        self.held = False

    @asynccontextmanager
    async def hold(self, lane: int) -> AsyncIterator[None]:
        await self.acquire(lane)
        try:
            yield
        finally:
            self.release()


def _sqlite_file_key(url: str) -> str:
    database = make_url(url).database or ""
    return str(Path(database).expanduser().resolve()) if database not in ("", ":memory:") else url


def _sqlite_write_lock(key: str) -> _WriteLock:
    locks = _SQLITE_WRITE_LOCKS.setdefault(asyncio.get_running_loop(), {})
    lock = locks.get(key)
    if lock is None:
        lock = locks[key] = _WriteLock()
    return lock


MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def _dialect(url: str) -> str:
    return make_url(url).get_backend_name()


def create_engine(
    url: str,
    *,
    schema: str | None = None,
    echo: bool = False,
    idle_in_transaction_s: float | None = None,
    application_name: str | None = None,
) -> AsyncEngine:
    """An async engine for `url` (sqlite+aiosqlite or postgresql+asyncpg).

    `schema` (PostgreSQL only) puts every table in that schema via search_path: one database
    can then hold several head-ends, or one test per schema.

    `idle_in_transaction_s` (PostgreSQL only): the server ends a transaction this process
    leaves idle that long. A cluster member frozen inside a transaction (SIGSTOP, a stalled
    VM, a partition) would otherwise keep its row locks on meters, commands and meter keys
    for as long as it is frozen, and every other member's writes to those rows would wait
    behind them. (Frozen in the middle of a statement whose server waits for the client's
    data, a COPY, the transaction is not idle: cluster/evict.py ends those sessions.)
    `application_name` (PostgreSQL only) names this process's sessions in pg_stat_activity."""
    parsed = make_url(url)
    kwargs: dict[str, Any] = {"echo": echo}
    dialect = parsed.get_backend_name()
    if dialect == "postgresql":
        settings: dict[str, str] = {}
        if schema is not None:
            settings["search_path"] = schema
        if idle_in_transaction_s is not None:
            settings["idle_in_transaction_session_timeout"] = str(
                max(100, int(idle_in_transaction_s * 1000))
            )
        if application_name is not None:
            settings["application_name"] = application_name
        if settings:
            kwargs["connect_args"] = {"server_settings": settings}
        kwargs["pool_pre_ping"] = True
    elif dialect == "sqlite":
        if (schema, idle_in_transaction_s, application_name) != (None, None, None):
            raise ValueError("schema and the session settings are for PostgreSQL only")
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    else:
        raise ValueError(f"unsupported database: {parsed.drivername}")
    engine = create_async_engine(parsed, **kwargs)
    if dialect == "sqlite":
        _sqlite_setup(engine)
    return engine


def _sqlite_setup(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take over BEGIN from the driver so write transactions can begin IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


class Database:
    """One engine and its session factories; what the repository and the CLI share.

    `session()` is for reads; `transaction()` is one write transaction that commits on
    success and rolls back on any exception (so a kill -9 leaves either all or nothing)."""

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        echo: bool = False,
        idle_in_transaction_s: float | None = None,
        application_name: str | None = None,
    ) -> None:
        self.url = url
        self.schema = schema
        self.dialect = _dialect(url)
        self.engine = create_engine(
            url,
            schema=schema,
            echo=echo,
            idle_in_transaction_s=idle_in_transaction_s,
            application_name=application_name,
        )
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        writer = (
            self.engine.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})
            if self.dialect == "sqlite"
            else self.engine
        )
        self.write_sessions = async_sessionmaker(writer, expire_on_commit=False)
        self._file_key = _sqlite_file_key(url) if self.dialect == "sqlite" else url
        self.commit_listeners: set[Callable[[], None]] = set()
        """Called after a transaction that wrote outbox rows commits (the outbox's wake-up)."""

    def __repr__(self) -> str:
        return f"Database({make_url(self.url).render_as_string(hide_password=True)!r})"

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        schema: str | None = None,
        run_migrations: bool = True,
        idle_in_transaction_s: float | None = None,
        application_name: str | None = None,
    ) -> Database:
        """Open the database, first bringing its schema to the newest revision."""
        db = cls(
            url,
            schema=schema,
            idle_in_transaction_s=idle_in_transaction_s,
            application_name=application_name,
        )
        if run_migrations:
            try:
                await db.migrate()
            except BaseException:
                await db.dispose()
                raise
        return db

    def session(self) -> AsyncSession:
        return self.sessions()

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncSession]:
        """A session to read with: this task's unit of work on this database when it is in
        one (the read then sees its writes and takes no second connection), else a fresh
        read session."""
        joined = unit.current_unit(self._file_key)
        if joined is not None:
            yield joined.session
            return
        async with self.session() as session:
            yield session

    @asynccontextmanager
    async def transaction(self, *, lane: int = DEFAULT_LANE) -> AsyncIterator[AsyncSession]:
        """One write transaction, or the one this task's unit of work already holds on this
        database (storage/unit.py): then it commits with the unit, not here. `lane`: its
        place in the queue for SQLite's writer (BALANCE_LANE first)."""
        joined = unit.current_unit(self._file_key)
        if joined is not None:
            yield joined.session
            return
        async with contextlib.AsyncExitStack() as stack:
            stack.enter_context(metrics.DB_WRITE_SECONDS.time())
            if self.dialect == "sqlite":
                await stack.enter_async_context(_sqlite_write_lock(self._file_key).hold(lane))
            session = await stack.enter_async_context(self.write_sessions())
            work = unit.Unit(self._file_key, session, asyncio.current_task())
            token = unit.enter(work)
            try:
                async with session.begin():
                    yield session
                    if work.staged:
                        await session.execute(insert(OUTBOX), work.staged)
            finally:
                unit.leave(work, token)
        if work.staged:
            for listener in tuple(self.commit_listeners):
                listener()

    async def migrate(self) -> None:
        await migrate(self.engine)

    async def dispose(self) -> None:
        await self.engine.dispose()

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.dispose()


def _alembic_config(connection: Connection | None = None, url: str | None = None) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def _upgrade(connection: Connection, revision: str) -> None:
    from alembic import command

    if connection.dialect.name == "postgresql":
        # Two head-ends starting at once must not both create the tables.
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK_ID})")
    command.upgrade(_alembic_config(connection), revision)


async def migrate(
    target: str | AsyncEngine, *, revision: str = "head", schema: str | None = None
) -> None:
    """Bring the schema to `revision` (Alembic, programmatic: no alembic.ini needed).

    Safe to run on every start: an up-to-date database is left alone."""
    engine = create_engine(target, schema=schema) if isinstance(target, str) else target
    runner = engine
    if engine.dialect.name == "sqlite":
        runner = engine.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})
    try:
        async with runner.begin() as conn:
            await conn.run_sync(_upgrade, revision)
    finally:
        if isinstance(target, str):
            await engine.dispose()


def migrate_sync(url: str, *, revision: str = "head", schema: str | None = None) -> None:
    """`migrate` for callers without an event loop."""
    asyncio.run(migrate(url, revision=revision, schema=schema))
