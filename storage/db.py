"""Database engines for SQLite (embedded default) and PostgreSQL (scale-out), and the one
place where driver errors become complaintflow errors."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from importlib import resources
from typing import Any, NoReturn

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.pool import StaticPool

from complaintflow.errors import (
    ConcurrentUpdate,
    FieldProblem,
    IdempotencyConflict,
    InvalidInput,
    StorageError,
)
from complaintflow.storage.tables import UTCDateTime
from complaintflow.storage.tables import idempotency_keys as _KEYS

__all__ = ["SQLITE_BUSY_TIMEOUT_MS", "SQLITE_SYNCHRONOUS", "SqliteWrite", "SqliteWriter",
           "alembic_config", "autocommit", "connect", "execute_pipeline", "fetch_one", "read",
           "sqlite_datetime_in", "sqlite_datetime_out", "sqlite_pragmas", "translate_errors",
           "upgrade", "write"]

SQLITE_BUSY_TIMEOUT_MS = 30_000
# Durable commits: in WAL mode, synchronous=NORMAL skips the WAL fsync at commit, so a power
# loss or OS crash can roll back transactions already reported committed: a complaint
# number handed to the customer could be handed out again, an outbox notification another
# system already acted on could vanish from the history. FULL syncs the WAL at every commit,
# as PostgreSQL does with synchronous_commit=on.
SQLITE_SYNCHRONOUS = "FULL"


def sqlite_pragmas(*, memory: bool = False) -> tuple[str, ...]:
    """The pragmas every SQLite connection of the engine runs when it opens (WAL only for a
    file database); the benchmarks' raw baselines run the same ones."""
    return (
        *(() if memory else ("PRAGMA journal_mode=WAL",)),
        f"PRAGMA synchronous={SQLITE_SYNCHRONOUS}",
        "PRAGMA foreign_keys=ON",
        f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
    )


_URL_FORMS = "sqlite:///FILE, sqlite:// (in memory) or postgresql://USER@HOST:PORT/DATABASE"


def _bad_url(message: str) -> InvalidInput:
    return InvalidInput([FieldProblem("url", f"{message} (expected {_URL_FORMS})")],
                        context="database URL")


def _normalise(url: str | URL) -> URL:
    if not isinstance(url, str | URL):
        raise _bad_url(f"text, not {type(url).__name__}")
    try:
        parsed = make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        # the parser's message may quote a password: say only what is wrong
        raise _bad_url("not a database URL" if "://" not in str(url)
                       else "a malformed database URL (host, port or query)") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def connect(url: str | URL, *, pool_size: int | None = None, max_overflow: int | None = None,
            **kwargs: Any) -> Engine:
    """An engine for ``url``. SQLite gets WAL with durable commits (``synchronous=FULL``),
    foreign keys, a busy timeout, and ``BEGIN IMMEDIATE`` for write transactions so writers
    queue instead of failing. ``pool_size`` and ``max_overflow`` size the connection pool
    (SQLAlchemy's defaults, 5 and 10, when None; an in-memory SQLite database has one
    connection)."""
    parsed = _normalise(url)
    memory = parsed.get_backend_name() == "sqlite" and parsed.database in (None, "",
                                                                           ":memory:")
    if not memory:
        if pool_size is not None:
            kwargs["pool_size"] = pool_size
        if max_overflow is not None:
            kwargs["max_overflow"] = max_overflow
    if parsed.get_backend_name() == "sqlite":
        try:
            engine = sa.create_engine(
                parsed,
                poolclass=StaticPool if memory else None,
                connect_args={"check_same_thread": False,
                              "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
                **kwargs,
            )
        except sa.exc.NoSuchModuleError:
            raise _bad_url(f"unknown SQLite driver {parsed.get_driver_name()!r}") from None

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
            cursor = dbapi_connection.cursor()
            for pragma in sqlite_pragmas(memory=memory):
                cursor.execute(pragma)
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            readonly = conn.get_execution_options().get("complaintflow_readonly", False)
            # straight through the driver: SQLAlchemy's statement machinery costs more than
            # the BEGIN itself, on every transaction
            dbapi_connection: Any = conn.connection.dbapi_connection
            if dbapi_connection.in_transaction:
                return  # a Connection made inside a ``SqliteWriter`` transaction
            try:
                dbapi_connection.execute("BEGIN" if readonly else "BEGIN IMMEDIATE")
            except conn.dialect.loaded_dbapi.Error as exc:
                _driver_error(conn, exc, dbapi_connection)

        return engine
    if parsed.get_backend_name() == "postgresql":
        # no pool_pre_ping: it costs a round trip per transaction; stale connections are
        # recycled instead (a dropped connection fails one call as a StorageError)
        try:
            return sa.create_engine(parsed, pool_recycle=1800, **kwargs)
        except sa.exc.NoSuchModuleError:
            raise _bad_url(f"unknown PostgreSQL driver {parsed.get_driver_name()!r}") from None
        except ImportError as exc:
            raise StorageError(f"the PostgreSQL driver cannot be imported ({exc}); install "
                               "complaintflow[postgres]", exc) from None
    raise _bad_url(f"unsupported database {parsed.get_backend_name()!r}")


def _key_taken(exc: sa.exc.IntegrityError) -> bool:
    """Whether ``exc`` is the unique violation of an idempotency key already stored."""
    diag = getattr(exc.orig, "diag", None)  # psycopg names the constraint
    if diag is not None:
        return getattr(diag, "constraint_name", None) == _KEYS.primary_key.name
    return f"{_KEYS.name}.key" in str(exc.orig)  # sqlite3: "UNIQUE constraint failed: ..."


@contextlib.contextmanager
def translate_errors(number: str | None = None,
                     idempotency_key: str | None = None) -> Iterator[None]:
    """Driver errors become ``StorageError``, or ``ConcurrentUpdate`` for a lost race on
    the complaint ``number``, or ``IdempotencyConflict`` when the ``idempotency_key`` being
    written was stored first by a concurrent request (PostgreSQL: both looked it up before
    either wrote it; SQLite's write transactions come one after another, so there the
    lookup finds it)."""
    try:
        yield
    except sa.exc.IntegrityError as exc:
        if idempotency_key is not None and _key_taken(exc):
            raise IdempotencyConflict(idempotency_key) from exc
        if number is not None:
            raise ConcurrentUpdate(number, None, None) from exc
        raise StorageError(f"database constraint violated: {exc.orig}", exc) from exc
    except sa.exc.OperationalError as exc:
        text = str(exc.orig)
        if number is not None and ("could not serialize" in text or "deadlock" in text):
            raise ConcurrentUpdate(number, None, None) from exc
        raise StorageError(f"database error: {exc.orig}", exc) from exc
    except sa.exc.DBAPIError as exc:
        raise StorageError(f"database error: {exc.orig}", exc) from exc


@contextlib.contextmanager
def write(engine: Engine, number: str | None = None, *,
          idempotency_key: str | None = None) -> Iterator[Connection]:
    """One write transaction (``BEGIN IMMEDIATE`` on SQLite); errors as
    ``translate_errors`` gives them."""
    with translate_errors(number, idempotency_key), engine.begin() as conn:
        yield conn


def autocommit_engine(url: str | URL, *, pool_size: int | None = None,
                      max_overflow: int | None = None) -> Engine:
    """PostgreSQL: an engine whose connections stay in autocommit (for ``autocommit``) and
    plan their prepared statements once (``plan_cache_mode = force_generic_plan``): a
    fire's statements look rows up by key, so a plan made for the actual parameters is no
    better, yet the server would otherwise plan a statement with several CTEs anew at
    every execution (measured in the server log: a bind of 66-118 us, 23-24 us with
    generic plans)."""
    engine = connect(url, isolation_level="AUTOCOMMIT", pool_size=pool_size,
                     max_overflow=max_overflow)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET plan_cache_mode = force_generic_plan")

    return engine


@contextlib.contextmanager
def autocommit(engine: Engine, number: str | None = None, *,
               idempotency_key: str | None = None) -> Iterator[Connection]:
    """A connection in autocommit: every statement is its own transaction (PostgreSQL: no
    BEGIN and no COMMIT round trips). For a write that is ONE statement, after reads
    whose outcome that statement re-checks (an optimistic version check). ``engine`` is
    made with ``connect(url, isolation_level="AUTOCOMMIT")``: its connections stay in
    autocommit, so none is switched and switched back per use. Errors as
    ``translate_errors`` gives them."""
    with translate_errors(number, idempotency_key), engine.connect() as conn:
        dbapi_connection: Any = conn.connection.dbapi_connection
        if not dbapi_connection.autocommit:
            raise StorageError("db.autocommit needs an engine made with "
                               "connect(url, isolation_level='AUTOCOMMIT')")
        yield conn


def fetch_one(conn: Connection, statement: str, params: Any) -> tuple[Any, ...] | None:
    """PostgreSQL: run ``statement`` (SQL text in psycopg's paramstyle) on ``conn``'s DBAPI
    connection, bypassing SQLAlchemy's statement machinery; its first row (a plain tuple),
    or None. Values come as the driver gives them (no SQLAlchemy type processing). Driver
    errors come out as SQLAlchemy's, so ``translate_errors`` treats them as any other."""
    dbapi_connection: Any = conn.connection.dbapi_connection
    try:
        with dbapi_connection.cursor() as cursor:
            cursor.execute(statement, params, prepare=True)
            row: tuple[Any, ...] | None = cursor.fetchone()
            return row
    except conn.dialect.loaded_dbapi.Error as exc:
        _driver_error(conn, exc, dbapi_connection)


def _driver_error(conn: Connection, exc: Any, dbapi_connection: Any) -> NoReturn:
    _raise_driver_error(conn.dialect, exc, dbapi_connection, conn.invalidate)


def _raise_driver_error(dialect: Any, exc: Any, dbapi_connection: Any,
                        invalidate: Callable[[BaseException], None]) -> NoReturn:
    """A driver error as SQLAlchemy's (``translate_errors`` handles those); a lost
    connection is invalidated first, so the pool does not hand it out again."""
    if dialect.is_disconnect(exc, dbapi_connection, None):
        invalidate(exc)
    raise sa.exc.DBAPIError.instance(None, None, exc, dialect.loaded_dbapi.Error,
                                     dialect=dialect) from exc


# SQLite through the driver: a timestamp as SQLAlchemy stores it (UTC, ISO text without a
# zone) and reads it back (aware UTC), so both write paths store the same text. Reading goes
# through SQLAlchemy's own result processor for the column type; writing formats the text
# directly (a test checks it against SQLAlchemy's bind processor), which costs a fifth.
def _sqlite_datetime() -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    dialect = sqlite.dialect()
    impl = UTCDateTime().dialect_impl(dialect)
    stored, read = impl.bind_processor(dialect), impl.result_processor(dialect, None)
    assert stored is not None and read is not None
    return stored, read


sqlite_datetime_out = _sqlite_datetime()[1]


def sqlite_datetime_in(value: datetime | None) -> str | None:
    """An aware datetime as the SQLite column stores it (UTC, ``YYYY-MM-DD HH:MM:SS.ffffff``);
    None stays None. A naive datetime raises ``ValueError``, as ``UTCDateTime`` does."""
    global _stored_last
    if value is None:
        return None
    last = _stored_last
    if value is last[0]:  # the same instant again (``now``, several times in one fire)
        return last[1]
    given = value
    if value.tzinfo is not UTC:
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        value = value.astimezone(UTC)
    text = value.replace(tzinfo=None).isoformat(" ", "microseconds")
    _stored_last = (given, text)
    return text


#: the last datetime ``sqlite_datetime_in`` wrote and its text (see ``hashing.iso``)
_stored_last: tuple[object, str] = (object(), "")


class SqliteWrite:
    """One SQLite write transaction held straight on a pooled DBAPI connection
    (``SqliteWriter.transaction``). ``cursor`` runs SQL text in sqlite3's named paramstyle
    (sqlite3 keeps the prepared statements by their text); values go in and come out as
    the driver takes and gives them (timestamps: ``sqlite_datetime_in`` / ``_out``).
    ``connection()`` is a SQLAlchemy ``Connection`` inside the same transaction, for the
    rare reads left to SQLAlchemy (a rule set not compiled yet, a history to replay); it is
    made on first use, so a transaction that needs none pays for none."""

    __slots__ = ("_connection", "_engine", "_fairy", "cursor")

    def __init__(self, engine: Engine, fairy: Any) -> None:
        self._engine = engine
        self._fairy = fairy
        self._connection: Connection | None = None
        self.cursor: Any = None

    def connection(self) -> Connection:
        if self._connection is None:
            # SQLAlchemy begins its own transaction on first use; ``_on_begin`` sees the
            # driver's open one and issues no second BEGIN
            self._connection = Connection(self._engine, connection=self._fairy)
        return self._connection


class SqliteWriter:
    """SQLite write transactions (``BEGIN IMMEDIATE`` ... ``COMMIT``) issued straight on
    connections of ``engine``'s pool, bypassing SQLAlchemy's Connection and Transaction
    machinery, which costs more than a small transaction's own statements. Between
    transactions the writer keeps up to ``keep`` connections checked out for itself (one
    per thread writing at once, so the pool's checkout, reset and checkin are not paid per
    transaction); ``close`` gives them back, and ``engine.dispose()`` closes them.
    ``transaction`` is rolled back if its body raises; driver errors come out as
    ``write``'s do (``translate_errors``)."""

    def __init__(self, engine: Engine, keep: int = 2) -> None:
        self._engine = engine
        # an in-memory database's one shared connection is not kept aside
        self._keep = 0 if isinstance(engine.pool, StaticPool) else keep
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._error = engine.dialect.loaded_dbapi.Error
        self._pid = os.getpid()
        #: counts ``dispose`` calls: a connection taken before one is of the replaced pool
        self._generation = 0
        event.listen(engine, "engine_disposed", self._disposed)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for fairy in idle:
            fairy.close()

    def _disposed(self, _engine: Engine) -> None:
        """The kept connections belong to the pool ``dispose`` replaced, which would take
        them back only to drop them when collected: closed now. In a forked child (where
        ``dispose(close=False)`` is the documented call) they are the parent's: only
        forgotten."""
        with self._lock:
            idle, self._idle = self._idle, []
            self._generation += 1  # those in use now are closed when their write ends
        if os.getpid() == self._pid:
            for fairy in idle:
                fairy.invalidate()

    @contextlib.contextmanager
    def transaction(self, number: str | None = None) -> Iterator[SqliteWrite]:
        with translate_errors(number):
            with self._lock:
                fairy = self._idle.pop() if self._idle else None
                generation = self._generation
            if fairy is None:
                fairy = self._engine.raw_connection()
            dbapi_connection: Any = fairy.dbapi_connection
            tx = SqliteWrite(self._engine, fairy)
            reusable = False  # ended cleanly, committed or rolled back (a refusal)
            try:
                try:
                    dbapi_connection.execute("BEGIN IMMEDIATE")
                    tx.cursor = dbapi_connection.cursor()
                    yield tx
                    dbapi_connection.execute("COMMIT")
                finally:
                    if tx.cursor is not None:
                        tx.cursor.close()
                    if dbapi_connection.in_transaction:
                        dbapi_connection.rollback()
                    reusable = True
            except self._error as exc:
                reusable = False
                _raise_driver_error(self._engine.dialect, exc, dbapi_connection,
                                    fairy.invalidate)
            finally:
                with self._lock:
                    current = generation == self._generation  # its pool not replaced
                    kept = (tx._connection is None and reusable and current
                            and len(self._idle) < self._keep)
                    if kept:
                        self._idle.append(fairy)
                if not current:  # of a pool ``dispose`` replaced while it was in use
                    fairy.invalidate()
                if tx._connection is not None:
                    tx._connection.close()  # ends its (finished) transaction, checks in
                elif not kept:
                    fairy.close()


def execute_pipeline(conn: Connection, statements: Sequence[tuple[str, Any]]) -> None:
    """PostgreSQL: run ``statements`` ((SQL text in psycopg's paramstyle, parameters)) as
    ONE transaction on ``conn``'s DBAPI connection, which must be in autocommit: they go
    out as one pipeline closed by a single Sync, so the server runs them in one implicit
    transaction, committed at the Sync (one round trip, no BEGIN or COMMIT), or rolled
    back entirely, with the statements after a failing one skipped. Bypasses SQLAlchemy's
    statement machinery; driver errors come out as SQLAlchemy's, so ``translate_errors``
    treats them as any other. A single statement goes out without pipeline mode (the same
    one round trip, less client work)."""
    dbapi_connection: Any = conn.connection.dbapi_connection
    assert dbapi_connection.autocommit, "a pipeline is one implicit transaction only in autocommit"
    error = conn.dialect.loaded_dbapi.Error
    # The first error is the one to report: the driver may raise it while statements are
    # still being queued (results are read as they arrive) or at the final Sync; after it,
    # the rest of the pipeline is reported as aborted.
    first: Exception | None = None
    if len(statements) == 1:  # one statement is its own implicit transaction: no pipeline
        statement, params = statements[0]
        try:
            with dbapi_connection.cursor() as cursor:
                cursor.execute(statement, params, prepare=True)
        except error as exc:
            _driver_error(conn, exc, dbapi_connection)
        return
    try:
        with dbapi_connection.pipeline(), dbapi_connection.cursor() as cursor:
            for statement, params in statements:
                try:
                    # prepared from the first use: psycopg (3.3) counts executions before
                    # preparing, and a pipeline aborted just as a statement reached the
                    # count would leave it recorded as prepared though its Parse was
                    # skipped ("prepared statement ... does not exist" afterwards)
                    cursor.execute(statement, params, prepare=True)
                except error as exc:
                    first = exc
                    break
    except error as exc:
        first = first or exc
    if first is not None:
        _driver_error(conn, first, dbapi_connection)


@contextlib.contextmanager
def read(engine: Engine) -> Iterator[Connection]:
    """One read-only transaction (a consistent snapshot, no write lock)."""
    with translate_errors(), engine.connect() as base:
        conn = base.execution_options(complaintflow_readonly=True)
        with conn.begin():
            yield conn


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("script_location",
                        str(resources.files("complaintflow.migrations")))
    cfg.set_main_option("version_locations",
                        str(resources.files("complaintflow.migrations") / "versions"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Create or upgrade the schema to ``revision`` with Alembic."""
    with translate_errors(), engine.begin() as conn:
        command.upgrade(alembic_config(conn), revision)
