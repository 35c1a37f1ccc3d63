"""Opening a store's database: the URL (checked, relative SQLite paths made absolute), the engine (SQLite in WAL
mode with a busy timeout and BEGIN IMMEDIATE for claims; read-only opening enforced by the database), and the
check that an SQLite file does not lie on a network filesystem.

SQLite (the default, results/harness.db) is right for the processes of one machine. Its locking is not reliable
on network filesystems and WAL needs every process on one host, so workers on several machines share a
PostgreSQL server (postgresql+psycopg://...).
"""

from __future__ import annotations

import os
from contextlib import contextmanager

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url

from harness.atomic import file_in_the_way, missing_folders, remove_empty
from harness.spec.errors import EXIT_FAILED, InputError
from harness.spec.layout import DEFAULT_DB_URL
from harness.store.values import store_json

# filesystems on which SQLite's locking cannot be trusted (several machines, or no POSIX locks)
NETWORK_FILESYSTEMS = ("nfs", "nfs4", "lustre", "gpfs", "cifs", "smb3", "smbfs", "beegfs", "cephfs", "ceph",
                       "glusterfs", "fuse.sshfs", "9p", "panfs", "wekafs")
READ_ONLY_BACKENDS = ("sqlite", "postgresql", "mysql", "mariadb")   # where read-only is enforced by the server
# how long an SQLite connection waits for another's lock (and for another's switch to WAL), where the URL gives no
# ?timeout=SECONDS (busy_timeout_s); SQLite's busy timeout is a count of milliseconds in 32 bits: past MAX_BUSY_S it
# read 0, and below MIN_BUSY_S it is 0: no wait at all, where two workers opening a fresh store or claiming at once
# fail on each other's lock (?timeout=0: 8 of 20 opens of a fresh store by two processes)
BUSY_TIMEOUT_S = 30
MIN_BUSY_S, MAX_BUSY_S = 0.001, (2 ** 31 - 1) // 1000
# How long opening a PostgreSQL connection may take, where the URL names no connect_timeout. libpq's own default
# waits forever: a server host that accepts TCP but never answers (hung, or a firewall that drops the replies) froze
# every command, and a worker's heartbeat with it, instead of reaching the store-outage path. Well under the
# default heartbeat (30 s), so a worker still renews its lease on a retry.
PG_CONNECT_TIMEOUT_S = 10
LIBPQ_DRIVERS = ("psycopg", "psycopg2")   # the drivers that take libpq's connect_timeout (pg8000 does not)


def default_db_url() -> str:
    return os.environ.get("HARNESS_DB") or DEFAULT_DB_URL


def sqlite_file(url) -> str | None:
    """The file of an SQLite URL; None for other databases and in-memory SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return parsed.database


def absolute_db_url(url: str | None) -> str | None:
    """sqlite:///relative.db made absolute (against the current directory, once): every process and Slurm task
    that gets the URL then opens the same file, wherever it starts. Other URLs are returned as they are."""
    if not url:
        return url
    try:
        path = sqlite_file(url)
    except Exception:
        return url   # make_engine reports it
    if path is None or os.path.isabs(path):
        return url
    return make_url(url).set(database=os.path.abspath(os.path.expanduser(path))).render_as_string(
        hide_password=False)


def _to_wal(cur, busy_s: float) -> None:
    """Put the file in WAL mode. Switching a new file needs an exclusive lock, and when two connections race for
    it SQLite answers "database is locked" at once instead of waiting out busy_timeout (it would deadlock
    otherwise) - as happens when the ranks of a DDP cell or the workers of one machine open a fresh store
    together. WAL is a property of the file, so once one connection has switched it the others find it set:
    they wait for that, briefly and with jitter, up to the busy timeout (`busy_s`)."""
    import random
    import sqlite3
    import time

    deadline = time.monotonic() + busy_s
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
        time.sleep(random.uniform(0.005, 0.05))


def _sqlite_pragmas(engine: Engine, read_only: bool, busy_s: float) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        # the driver's own BEGIN is deferred and comes only before the first write: too late for a claim, which
        # must hold the write lock from its first read. So BEGIN is ours (below).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={int(busy_s * 1000)}")   # over the driver's own (its ?timeout=, else 5 s)
        if not read_only:
            _to_wal(cur, busy_s)
            cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # IMMEDIATE takes the write lock at once: a claim's read and write are one step for every process
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("immediate") else "BEGIN")


def _file_state(path: str) -> tuple:
    """Which file it is, its size and its times: what a write changes, except where the file system's clock is
    coarse (no fine-grained timestamps) and a checkpoint rewrites it within the same tick, at the same size, as the
    read began: that one write goes unseen."""
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _sqlite_read_only_engine(path: str, busy_s: float) -> Engine:
    """A SQLite engine that cannot write: mode=ro on a file: URI built from the path itself (percent-encoded, so
    '#', '?' and '%' in a file name stay part of it and never open a different file), plus query_only.

    Reading must leave nothing beside the store: a read-only connection to a WAL store creates its -shm and -wal
    and, being read-only, cannot remove them (status, export, compare, estimate and the board left both beside a
    store no worker had open). So each connection decides for itself (no pool keeps one: the board's next load
    decides again): where no -wal nor rollback -journal lies beside the file, no connection has the store open and
    all of it is in the file, which is read as immutable: without locks and without those files. A store being
    written (a -wal or a -journal beside it) is read as before, with locks, and sees every commit.
    Immutable is right only while nobody writes the file: a writer may start during such a read, and its commits
    go to a -wal it creates, leaving the file as it was, until a checkpoint (its last connection closing, or a
    -wal of 1000 pages) or a switch to WAL writes the file itself. So every transaction on such a connection
    ends by checking that the file is the one it opened, unchanged (_check_unchanged): a read that could have
    been torn is refused, never returned."""
    import sqlite3
    from urllib.parse import quote

    from sqlalchemy.pool import NullPool

    base = f"file:{quote(os.path.abspath(path), safe='/')}?mode=ro"

    class Connection(sqlite3.Connection):
        at_rest = None   # the file's state (_file_state) when it was opened immutable

    # SQLite keeps the -wal and -journal beside the file a symlinked path names, not beside the link: looked for
    # beside the link, a worker's commits in the -wal went unseen (read at rest, from the file alone)
    real = os.path.realpath(path)

    def connect():
        at_rest = None
        if not any(os.path.exists(f"{real}-{kind}") for kind in ("wal", "journal")):
            at_rest = _file_state(path)   # before the first byte is read
        conn = sqlite3.connect(base + ("&immutable=1" if at_rest else ""), uri=True, check_same_thread=False,
                               factory=Connection)
        conn.at_rest = at_rest
        conn.execute("PRAGMA query_only=ON")
        return conn

    # connections of its own, made anew for each use (NullPool): "sqlite://" alone means an in-memory database,
    # whose pool hands every connection of a thread the same one (a read inside a snapshot, Store.snapshot, began
    # a second transaction on the snapshot's own: "cannot start a transaction within a transaction")
    engine = create_engine("sqlite://", creator=connect, poolclass=NullPool)
    _sqlite_pragmas(engine, read_only=True, busy_s=busy_s)

    @event.listens_for(engine, "rollback")
    @event.listens_for(engine, "commit")
    def _check_unchanged(conn):
        at_rest = getattr(conn.connection.dbapi_connection, "at_rest", None)
        if at_rest is not None and _state_or_none(path) != at_rest:
            raise StoreChanged(f"--db: the store {path} was written while it was read (no connection had it "
                               f"open when the read began, so it was read without locks): run the command again")

    return engine


def _state_or_none(path: str):
    try:
        return _file_state(path)
    except OSError:   # removed or replaced while read
        return None


class StoreChanged(InputError):
    """A store read at rest (without locks) was written during the read: its answer could mix two states. Not
    bad input, but told in one line as InputError is; EXIT_FAILED (running the command again reads it anew)."""

    exit_code = EXIT_FAILED


def _in_memory(parsed) -> bool:
    """An SQLite database that lives in the process only (sqlite://, sqlite:///:memory:, file::memory: URIs)."""
    database = parsed.database or ""
    return (not database or database == ":memory:" or database.startswith("file::memory:")
            or parsed.query.get("mode") == "memory" or "mode=memory" in database)


def check_db_url(url: str):
    """The parsed URL of a store, or InputError: not a URL, or an in-memory SQLite database (every command runs in
    a process of its own: what one writes there is lost when it ends, and nothing can be read back)."""
    try:
        parsed = make_url(url)
    except Exception:
        from harness.store.redact import redact_text

        raise InputError(f'--db: not a database URL: "{redact_text(url)}" (e.g. {DEFAULT_DB_URL})') from None
    if parsed.get_backend_name() == "sqlite" and _in_memory(parsed):
        raise InputError(f'--db: "{url}" is an in-memory database: what a command writes there is lost when it '
                         f'ends; give a file (e.g. {DEFAULT_DB_URL})')
    if parsed.get_backend_name() == "sqlite":
        _refuse_dropped_arguments(parsed)
    path = sqlite_file(parsed)
    if path and (path.endswith(os.sep) or os.path.isdir(path)):   # SQLite said "disk I/O error" for a folder
        raise InputError(f"--db: {path} is a folder, not a database file (e.g. sqlite:///"
                         f"{os.path.join(path, 'harness.db')})")
    return parsed


def _refuse_dropped_arguments(parsed) -> None:
    """InputError for an SQLite URL whose query the harness would not honour. SQLAlchemy's driver takes its own
    arguments (timeout, ...) and hands the rest to SQLite only with uri=true, else warns and drops them: a store
    given as `sqlite:///h.db?mode=ro` was opened read-write and written (ingest added its records). With uri=true
    the database is a `file:` URI, which the harness (its own read-only opening, its folder checks) would read as a
    file's path and open another file. Which arguments the driver drops is asked of the driver itself; a value it
    cannot take (?timeout=abc) is refused here too, for every command: the read-only engine never passes the
    query to the driver, so a reader went on and read the store. So is a timeout SQLite's busy timeout cannot hold
    (busy_timeout_s: the harness sets it on every connection, the read-only ones too)."""
    try:
        taken = _driver_args(parsed)
    except Exception as e:   # a value of the wrong type, a host in the URL: named, the argument alone first
        bad = next((f"{key}={value}" for key, value in parsed.query.items()
                    if _refused_by(_driver_args, parsed.set(query={key: value}))), None)
        raise InputError(f"--db: {bad + ': ' if bad else ''}{_reason(e)}") from None
    hint = "give the file as sqlite:///PATH (commands that only read open the store read-only themselves)"
    if taken.get("uri"):
        raise InputError(f"--db: uri=true (an SQLite file: URI) is not supported: {hint}")
    # nan too; 0, -1, inf, 1e10 all read as no wait (0 was taken: workers meeting on the file failed at once)
    if "timeout" in taken and not MIN_BUSY_S <= taken["timeout"] <= MAX_BUSY_S:
        raise InputError(f"--db: timeout={parsed.query['timeout']}: SQLite's busy timeout must be from {MIN_BUSY_S:g} "
                         f"to {MAX_BUSY_S} seconds")
    dropped = sorted(set(parsed.query) - set(taken))
    if dropped:
        raise InputError(f"--db: {', '.join(dropped)}: not an argument of the SQLite driver, which would ignore it "
                         f"(SQLite's own URI arguments, as mode=ro, are dropped without uri=true) and open the "
                         f"store read-write: {hint}")


def _driver_args(url) -> dict:
    """The arguments SQLAlchemy's SQLite driver takes from the URL's query, as it reads them (timeout a float)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the drop warning: _refuse_dropped_arguments says it, in one line
        return url.get_dialect()().create_connect_args(url)[1]


def busy_timeout_s(parsed) -> float:
    """How long a connection to the SQLite store of URL `parsed` waits for another's lock: the URL's ?timeout=
    (seconds), else BUSY_TIMEOUT_S. The harness sets SQLite's busy timeout itself (every connection, the read-only
    ones too, whose URL never reaches the driver), so it is this one value: a fixed 30 s overrode ?timeout=1."""
    return _driver_args(parsed).get("timeout", BUSY_TIMEOUT_S)


def _refused_by(connect_args, url) -> bool:
    try:
        connect_args(url)
    except Exception:
        return True
    return False


def _reason(exc: BaseException) -> str:
    """One line on why a store could not be opened, from an OS, DB-API or SQLAlchemy error."""
    from sqlalchemy.exc import DBAPIError

    if isinstance(exc, DBAPIError) and exc.orig is not None:
        exc = exc.orig
    if isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def _probe(engine: Engine, backend: str) -> None:
    """Connect and read once: a file that is not a database, a server that does not answer, a folder where the
    file cannot be created fail here, when the store is opened, not at the first query of a command."""
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT count(*) FROM sqlite_master" if backend == "sqlite" else "SELECT 1")


def new_sqlite_file(url: str) -> bool:
    """Whether `url` names an SQLite file that does not exist yet (opening it would create it); refused in one
    line where a file stands where its folder would be."""
    parsed = check_db_url(url)
    path = sqlite_file(parsed) if parsed.get_backend_name() == "sqlite" else None
    if not path or os.path.exists(path):
        return False
    _refuse_file_in_the_way(path)
    return True


def _refuse_file_in_the_way(path: str) -> None:
    """One line where a file stands where the folder of an SQLite store's file would be."""
    blocking = file_in_the_way(os.path.dirname(os.path.abspath(path)))
    if blocking:
        raise InputError(f"--db: cannot open the store {path}: {blocking} is a file, not a folder")


def make_engine(url: str, read_only: bool = False) -> Engine:
    """The engine of a store, connected once. Every reason a store cannot be opened (not a URL, in memory, not a
    database, no server, a folder that cannot hold it) becomes one InputError naming --db; a read-only SQLite
    store that does not exist is FileNotFoundError (the caller decides whether that is an error)."""
    parsed = check_db_url(url)
    shown = parsed.render_as_string(hide_password=True)
    path = sqlite_file(parsed) if parsed.get_backend_name() == "sqlite" and not read_only else None
    # the folders opening it creates: removed again where it cannot be opened (a store that fails leaves nothing)
    created = missing_folders(os.path.dirname(os.path.abspath(path))) if path else []
    engine = None
    try:
        engine = _make_engine(parsed, read_only)
        _probe(engine, parsed.get_backend_name())
    except (InputError, FileNotFoundError):
        remove_empty(created)
        raise
    except Exception as e:   # OSError, the driver's errors, SQLAlchemy's: the store cannot be opened
        if engine is not None:
            engine.dispose()
        remove_empty(created)
        what = "cannot use" if isinstance(e, ImportError) else "cannot open the store"
        raise InputError(f"--db: {what} {shown}: {_reason(e)}") from None
    return engine


def _timeout_given(parsed) -> bool:
    """Whether the user set libpq's connect timeout: in the URL, or where libpq reads it (a service file, the
    environment); the harness's default then stays out of the way."""
    return ("connect_timeout" in parsed.query or "service" in parsed.query
            or any(os.environ.get(v) for v in ("PGCONNECT_TIMEOUT", "PGSERVICE")))


def _make_engine(parsed, read_only: bool) -> Engine:
    backend = parsed.get_backend_name()
    if read_only and backend not in READ_ONLY_BACKENDS:
        raise InputError(f"--db: {backend} cannot be opened read-only here (read-only is enforced only for "
                         f"{', '.join(READ_ONLY_BACKENDS)}); refusing rather than risk writing to it")
    if backend == "sqlite":
        path = sqlite_file(parsed)
        if path:
            _refuse_file_in_the_way(path)
            if read_only:
                if not os.path.exists(path):
                    raise FileNotFoundError(path)
                # the leaderboard can never write to a shared store
                return _sqlite_read_only_engine(path, busy_timeout_s(parsed))
        # the URL's driver arguments (?timeout=abc) are refused here, before the store's folders are made: refused
        # after, make_engine removed the folders again, from under another worker opening the same new store
        engine = create_engine(parsed, json_serializer=store_json)
        if path:
            try:
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            except OSError as e:   # /proc, a read-only mount, no permission
                raise InputError(f"--db: cannot create the folder of the store {path}: {_reason(e)}") from None
        _sqlite_pragmas(engine, read_only, busy_timeout_s(parsed))
        return engine
    connect_args = {}
    if backend == "postgresql" and parsed.get_driver_name() in LIBPQ_DRIVERS and not _timeout_given(parsed):
        connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT_S
    try:
        engine = create_engine(parsed, json_serializer=store_json, connect_args=connect_args)
    except Exception as e:  # missing driver etc.
        raise InputError(f"--db: cannot use {parsed.render_as_string(hide_password=True)}: {e}") from None
    if read_only:
        @event.listens_for(engine, "begin")
        def _read_only(conn):   # every transaction, before its first statement
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")
    return engine


@contextmanager
def write_transaction(engine: Engine):
    """A write transaction that holds the write lock from its first statement (SQLite: BEGIN IMMEDIATE)."""
    with engine.connect() as conn:
        conn.execution_options(immediate=True)
        with conn.begin():
            yield conn


@contextmanager
def read_snapshot(engine: Engine):
    """A connection whose every read sees the store as it was at one moment: what a table, a status or an export
    computes from several queries (the runs, then the cells still queued) is one state of the store, not two with
    a worker's claim or finish in between (a seed counted in neither read). SQLite: one transaction (BEGIN, from
    the engine's begin event: the driver's own opens none for reads), which in WAL mode reads one snapshot from its
    first SELECT on. PostgreSQL: REPEATABLE READ (READ COMMITTED, the default, takes a new snapshot per statement),
    read-only. Rolled back at the end: it only reads."""
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        with conn.begin() as transaction:
            try:
                yield conn
            finally:
                transaction.rollback()


def sqlite_location_warning(url: str) -> str | None:
    """Why this SQLite store should not be shared by several machines, if its file lies on a network filesystem."""
    database = sqlite_file(url)
    if database is None:
        return None
    path = os.path.realpath(os.path.abspath(database))
    best, fstype = "", None
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3:
                    mount = parts[1].replace("\\040", " ")
                    if (path == mount or path.startswith(mount.rstrip("/") + "/")) and len(mount) > len(best):
                        best, fstype = mount, parts[2]
    except OSError:
        return None
    if fstype and (fstype in NETWORK_FILESYSTEMS or fstype.startswith("nfs")):
        return (f"the SQLite store {path} is on a {fstype} filesystem: SQLite locking is not reliable there and "
                f"WAL needs every process on one host; workers on several machines need PostgreSQL "
                f"(--db postgresql+psycopg://USER@HOST/DB)")
    return None
