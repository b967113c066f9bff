"""Storage: every SQL statement climate-bot runs lives here, behind verbs.

SQLite in WAL mode with ``synchronous=NORMAL``: it survives a process crash (a power loss is
covered by ``climate-bot replay``), and under gunicorn it took a minimal receiver from 0.16-0.21
of a bare Flask route's requests/s (rollback journal, ``synchronous=FULL``) to 0.35-0.39. One
connection per thread; writes that must be atomic run inside ``transaction()``, which takes
SQLite's write lock up front (``BEGIN IMMEDIATE``) so two processes never interleave.
The schema is managed by sqlite-utils' ``Migrations``.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import secrets
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import sqlite_utils
from sqlite_utils.migrations import Migrations

from bot.model import DECISION_WINDOW_SECONDS, MAX_RETRY_AFTER_SECONDS

migrations = Migrations("climate-bot")


@migrations()
def m001_initial(db: sqlite_utils.Database) -> None:
    db.execute("""CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)""")
    db.execute(
        """CREATE TABLE events (
            id TEXT PRIMARY KEY,
            type TEXT NOT NULL,
            object_kind TEXT,
            object_id TEXT,
            created INTEGER NOT NULL,
            livemode INTEGER NOT NULL,
            account TEXT,
            handled INTEGER NOT NULL,
            late INTEGER NOT NULL DEFAULT 0,
            received_at REAL NOT NULL,
            payload TEXT NOT NULL
        )"""
    )
    db.execute("CREATE INDEX events_by_object ON events (object_id, created)")
    db.execute("CREATE INDEX events_by_received ON events (received_at)")
    db.execute(
        """CREATE TABLE orders (
            id TEXT PRIMARY KEY,
            account TEXT,
            livemode INTEGER NOT NULL,
            status TEXT NOT NULL,
            created INTEGER NOT NULL,
            snapshot TEXT NOT NULL,
            snapshot_created INTEGER NOT NULL,
            snapshot_rank INTEGER NOT NULL,
            headline_event TEXT NOT NULL,
            change TEXT,
            decision_deadline INTEGER,
            window_closed INTEGER NOT NULL DEFAULT 0,
            updated_at REAL NOT NULL
        )"""
    )
    db.execute("CREATE INDEX orders_by_created ON orders (created)")
    db.execute("CREATE INDEX orders_by_deadline ON orders (decision_deadline)")
    db.execute(
        """CREATE TABLE products (
            id TEXT PRIMARY KEY,
            account TEXT,
            livemode INTEGER NOT NULL,
            snapshot TEXT NOT NULL,
            snapshot_created INTEGER NOT NULL,
            snapshot_rank INTEGER NOT NULL,
            headline_event TEXT NOT NULL,
            updated_at REAL NOT NULL
        )"""
    )
    db.execute(
        """CREATE TABLE cards (
            key TEXT PRIMARY KEY,
            channel TEXT NOT NULL,
            ts TEXT NOT NULL,
            posted_at REAL NOT NULL
        )"""
    )
    db.execute(
        """CREATE TABLE outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            card_key TEXT NOT NULL,
            kind TEXT NOT NULL,
            event_id TEXT,
            facts TEXT,
            channel TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending',
            attempts INTEGER NOT NULL DEFAULT 0,
            available_at REAL NOT NULL,
            lease_owner TEXT,
            lease_until REAL,
            first_attempt_at REAL,
            last_error TEXT,
            created_at REAL NOT NULL,
            done_at REAL,
            posted_ts TEXT
        )"""
    )
    db.execute("CREATE INDEX outbox_pending ON outbox (status, card_key, id)")
    db.execute("""CREATE TABLE pacing (channel TEXT PRIMARY KEY, next_post_at REAL NOT NULL)""")


@migrations()
def m002_decisions(db: sqlite_utils.Database) -> None:
    # The decision on the order's current change (delay or substitution); reset by a new change.
    db.execute("ALTER TABLE orders ADD COLUMN decision TEXT")  # accepted | cancelling | cancelled
    db.execute("ALTER TABLE orders ADD COLUMN decided_by TEXT")
    db.execute("ALTER TABLE orders ADD COLUMN decided_at REAL")
    db.execute("ALTER TABLE orders ADD COLUMN decision_detail TEXT")
    db.execute("CREATE INDEX orders_pending ON orders (window_closed, decision, decision_deadline)")
    db.execute(
        """CREATE TABLE audit (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            order_id TEXT NOT NULL,
            action TEXT NOT NULL,
            slack_user TEXT,
            at REAL NOT NULL,
            outcome TEXT NOT NULL,
            stripe_request_id TEXT,
            error TEXT
        )"""
    )
    db.execute("CREATE INDEX audit_by_order ON audit (order_id, at)")
    db.execute(
        """CREATE TABLE reminders (
            order_id TEXT NOT NULL,
            deadline INTEGER NOT NULL,
            days INTEGER NOT NULL,
            sent_at REAL NOT NULL,
            PRIMARY KEY (order_id, deadline, days)
        )"""
    )


@migrations()
def m003_listing(db: sqlite_utils.Database) -> None:
    # `/climate orders [filter]` pages newest first by (created, id) without scanning.
    db.execute("ALTER TABLE orders ADD COLUMN change_kind TEXT")
    db.execute(
        "UPDATE orders SET change_kind = json_extract(change, '$.kind') WHERE change IS NOT NULL"
    )
    db.execute("DROP INDEX orders_by_created")
    db.execute("CREATE INDEX orders_newest ON orders (created DESC, id DESC)")
    db.execute("CREATE INDEX orders_by_status ON orders (status, created DESC, id DESC)")
    db.execute("CREATE INDEX orders_by_change ON orders (change_kind, created DESC, id DESC)")
    # Events API deliveries already handled: Slack retries after 3 s even while we work.
    db.execute("CREATE TABLE slack_events (event_id TEXT PRIMARY KEY, received_at REAL NOT NULL)")


@migrations()
def m004_change_keys(db: sqlite_utils.Database) -> None:
    # One change told by two events (a thin event and its snapshot twin) is recorded once.
    db.execute("ALTER TABLE events ADD COLUMN change_key TEXT")
    db.execute("CREATE UNIQUE INDEX events_by_change ON events (change_key)")


@migrations()
def m005_outbox_by_card(db: sqlite_utils.Database) -> None:
    # Looking up a card's rows (its channel, whether it is queued) must not scan every message
    # ever delivered (bench/outbox.py: 8.5 ms per event at 100,000 rows, under the write lock).
    db.execute("CREATE INDEX outbox_by_card ON outbox (card_key, kind, id)")


@migrations()
def m006_fewer_pages_per_event(db: sqlite_utils.Database) -> None:
    # Every index a row enters is one more 4 KiB page written to the WAL and copied back by the
    # checkpoint: a new order's event wrote 17 (bench/ingest.py). Orders without a delay or a
    # substitution (most of them) stay out of the indexes only those need; "latest events"
    # follows the rowid, which is the order of arrival; expired windows are found through
    # orders_pending, which made orders_by_deadline redundant.
    db.execute("DROP INDEX events_by_received")
    db.execute("DROP INDEX orders_by_deadline")
    for name, columns, condition in (
        (
            "orders_pending",
            "window_closed, decision, decision_deadline",
            "decision_deadline IS NOT NULL",
        ),
        ("orders_by_change", "change_kind, created DESC, id DESC", "change_kind IS NOT NULL"),
    ):
        db.execute(f"DROP INDEX {name}")
        db.execute(f"CREATE INDEX {name} ON orders ({columns}) WHERE {condition}")


@migrations()
def m007_outbox_queue(db: sqlite_utils.Database) -> None:
    # The delivery worker's looks search the pending rows by channel and kind, on the index
    # alone; delivered rows leave it. Earlier rows of a card are found through outbox_by_card.
    # A webhook's rows enter outbox_queue only (attempts = 0), as they entered outbox_pending.
    db.execute("DROP INDEX outbox_pending")
    db.execute("CREATE INDEX outbox_queue ON outbox (channel, kind, id) WHERE status = 'pending'")
    # Rows tried before and waiting again (back-off, lease): few, and only the worker adds them.
    db.execute(
        "CREATE INDEX outbox_retry ON outbox (available_at) WHERE status = 'pending'"
        " AND attempts > 0"
    )


@migrations()
def m008_outbox_failed(db: sqlite_utils.Database) -> None:
    # /healthz and /metrics read the parked rows and the outbox counts on every probe: on the
    # partial indexes (and the narrowest index for the total) instead of reading the whole table.
    db.execute("CREATE INDEX outbox_failed ON outbox (id) WHERE status = 'failed'")


@migrations()
def m009_decisions_in_flight(db: sqlite_utils.Database) -> None:
    # A delay or substitution that arrives while a cancel is being carried out waits here until
    # the cancel settles, instead of resetting the decision under way.
    db.execute("ALTER TABLE orders ADD COLUMN next_change TEXT")
    # What a decision rested on: the refund rule applied, the reason the decider gave.
    db.execute("ALTER TABLE audit ADD COLUMN detail TEXT")
    # Direct messages sent to deciders, so a retried job never sends one twice.
    db.execute(
        """CREATE TABLE direct_messages (
            order_id TEXT NOT NULL,
            occasion TEXT NOT NULL,
            user TEXT NOT NULL,
            outcome TEXT NOT NULL,
            at REAL NOT NULL,
            PRIMARY KEY (order_id, occasion, user)
        )"""
    )


@migrations()
def m010_price_changes(db: sqlite_utils.Database) -> None:
    # The prices before a product's last price change, so that its card shows old → new.
    db.execute("ALTER TABLE products ADD COLUMN old_prices TEXT")


@migrations()
def m011_event_sources(db: sqlite_utils.Database) -> None:
    # Where an event came from when not a webhook (a replay); counted in /metrics on this index.
    db.execute("ALTER TABLE events ADD COLUMN source TEXT")
    db.execute("CREATE INDEX events_by_source ON events (source) WHERE source IS NOT NULL")


@migrations()
def m012_bounded_waits(db: sqlite_utils.Database) -> None:
    # Slack's Retry-After was stored as it came: one 429 saying `1e9` or `inf` held its channel
    # (and put its row off) until the year 2061 or for ever, across restarts. Nothing waits
    # longer than the cap from the upgrade on; shorter waits are left as they are. The rows put
    # off were tried before (attempts > 0): on the outbox_retry index.
    ceiling = time.time() + MAX_RETRY_AFTER_SECONDS
    db.execute("UPDATE pacing SET next_post_at = ? WHERE next_post_at > ?", [ceiling, ceiling])
    db.execute(
        "UPDATE outbox SET available_at = ? WHERE status = 'pending' AND attempts > 0"
        " AND available_at > ?",
        [ceiling, ceiling],
    )


@dataclass
class OutboxRow:
    """One thing Slack must be told, as leased by a delivery worker."""

    id: int
    card_key: str
    # "card": post or update the card (queued as "update" when the card was already posted);
    # "reply": a reply in the card's thread; anything else: a job (`Deliverer.jobs`)
    kind: str
    event_id: str | None
    facts: dict[str, Any]
    channel: str
    attempts: int
    first_attempt_at: float | None
    card_ts: str | None  # the card's ts when the card exists
    lease_owner: str
    created_at: float = 0.0  # when the row was queued (the event's arrival, for latency)


@dataclass
class Failure:
    """A delivery parked after a permanent error."""

    id: int
    card_key: str
    kind: str
    last_error: str
    created_at: float


# The oldest deliverable row: its card's earlier rows are done, a reply's card exists, and a row
# that may post a message ("card" or "reply") waits for its channel's pacing slot; updates of a
# posted card ("update") and jobs do not.
# Rows of paced channels are turned down on the outbox_queue index alone, without reading them:
# a burst into one channel made every look read the whole backlog (bench/outbox.py).
_LEASABLE = """
    SELECT o.*, c.ts AS card_ts FROM outbox o INDEXED BY outbox_queue
    LEFT JOIN cards c ON c.key = o.card_key
    WHERE o.status = 'pending'
      AND (o.kind NOT IN ('card', 'reply')
           OR o.channel NOT IN (SELECT channel FROM pacing WHERE next_post_at > :now))
      AND o.available_at <= :now
      AND (o.lease_until IS NULL OR o.lease_until < :now)
      AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.card_key = o.card_key
                      AND p.status = 'pending' AND p.id < o.id)
      AND (o.kind <> 'reply' OR c.ts IS NOT NULL)
    ORDER BY o.id LIMIT 1
"""


# A channel held longer than this from now is held by a Slack rate limit, not by our pacing (a
# second after each post): /healthz and /metrics report it, `climate-bot retry` releases it.
LONG_HOLD_SECONDS = 60.0

# Below this much free space on its disk the database is about to fail writes (a webhook writes
# a few pages, a checkpoint copies up to the WAL's size): /readyz says not ready.
MIN_FREE_BYTES = 1024 * 1024

# A checkpoint after every this many writes of a process (the WAL stays around 10 MB).
CHECKPOINT_EVERY_WRITES = 200
# A thread's own connection only reads (commands, /healthz, the worker's look-ups), and every
# request thread of the pool keeps one: a small page cache each keeps the process's size flat
# (bench/memory.py: 16 threads x SQLite's default 2 MB). Writes go through one connection with
# the default cache.
READ_CACHE_KIB = 256
FALLBACK_CHECKPOINT_PAGES = 20_000

T = TypeVar("T")


class _Work:
    """One thread's part of a group commit (`Storage.batched`)."""

    __slots__ = ("fn", "wakeup", "finished", "result", "error")

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.wakeup = threading.Event()
        self.finished = False
        self.result: Any = None
        self.error: BaseException | None = None


# Where a card is: its channel once posted, and the channel of its first queued "card" row.
_CARD_CHANNELS = (
    "(SELECT channel FROM cards WHERE key = :key) AS posted_channel,"
    " (SELECT channel FROM outbox WHERE card_key = :key AND kind = 'card'"
    " ORDER BY id LIMIT 1) AS queued_channel"
)
# The JSON columns of a row of orders and of products, decoded on reading.
_ORDER_JSON = ("snapshot", "change", "decision_detail", "next_change")
_PRODUCT_JSON = ("snapshot", "old_prices")


def card_key(kind: str, object_id: str) -> str:
    """The key of the one card an order or product ever has."""
    return f"{kind}:{object_id}"


class StorageUnavailable(Exception):
    """The database cannot take a write: its file was deleted or replaced under the running bot,
    or it is read-only, full or failing. Nothing was written; the webhook answers 503 (Stripe
    retries it), /readyz says why."""


# SQLite's primary result codes that say the file or its disk, not the statement, is at fault.
_CANNOT_WRITE = {
    sqlite3.SQLITE_READONLY: "the database is read-only",
    sqlite3.SQLITE_IOERR: "the disk failed a read or write (I/O error)",
    sqlite3.SQLITE_CORRUPT: "the database file is corrupt",
    sqlite3.SQLITE_FULL: "the disk is full",
    sqlite3.SQLITE_CANTOPEN: "the database file cannot be opened",
    sqlite3.SQLITE_NOTADB: "the file is not a SQLite database",
}


def _why(exc: BaseException) -> str:
    """One line on why the database could not be opened: no traceback for an operator."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror} ({exc.filename})" if exc.filename else exc.strerror
    reason = cannot_write(exc)
    if reason is None or isinstance(exc, StorageUnavailable):
        return str(exc)
    return f"{reason} ({exc})"


def cannot_write(exc: BaseException) -> str | None:
    """Why `exc` means the database cannot be written at all (None for any other error)."""
    if isinstance(exc, StorageUnavailable):
        return str(exc)
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(exc, sqlite3.Error) and code is not None:
        return _CANNOT_WRITE.get(code & 0xFF)
    return None


class Storage:
    """The database, opened per application; thread-safe through per-thread connections."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._local = threading.local()
        # Each thread's connection, forgotten (and so closed) when the thread object goes: werkzeug
        # serves every request on a new thread, gunicorn's threads live on and keep theirs.
        self._by_thread: weakref.WeakKeyDictionary[threading.Thread, sqlite3.Connection] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()
        # Writers queue for SQLite's write lock here, not in SQLite's busy handler, whose sleeps
        # of up to 100 ms made the p99 of webhook acks (bench/ingest.py): threads of this process
        # on a mutex, processes on a file lock, where the kernel wakes the next one at once.
        self._write_lock = threading.RLock()
        # This process's writing side (pid, lock file, connection): opened after any fork.
        self._writer: tuple[int, Any, sqlite3.Connection] | None = None
        self._writes = 0  # write transactions (and works of a group commit), for checkpoints
        # Group commit (`batched`): works queued by threads of this process, and whether one of
        # them is leading (running a batch, or promoted to run the next).
        self._batch_mutex = threading.Lock()
        self._batch_queue: list[_Work] = []
        self._batch_leading = False
        # Why the last write failed for want of a writable database (None once one succeeds).
        self.write_failure: str | None = None
        try:
            self._migrate()
            self._identity = self._file_identity()
            self.instance_id = self._instance_id()
        except (OSError, sqlite3.Error, StorageUnavailable) as exc:
            self.close()
            raise StorageUnavailable(f"cannot open the database {self.path}: {_why(exc)}") from exc

    # -- connections and transactions ------------------------------------------------------

    @property
    def conn(self) -> sqlite3.Connection:
        """This thread's connection; inside `transaction()`, the process's writing one."""
        conn = getattr(self._local, "tx", None) or getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._open(cache_kib=READ_CACHE_KIB)
            with self._lock:
                self._by_thread[threading.current_thread()] = conn
        return conn

    def _open(self, *, cache_kib: int = 2000) -> sqlite3.Connection:
        # mode=rw: a connection never creates the file (`_migrate` does, once). A database
        # deleted under the running bot used to come back empty at the next connection.
        conn = sqlite3.connect(
            f"file:{quote(self.path)}?mode=rw",
            uri=True,
            timeout=30,
            isolation_level=None,
            check_same_thread=False,
        )
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA cache_size=-{cache_kib}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA temp_store=MEMORY")
        # Checkpoints run every CHECKPOINT_EVERY_WRITES writes of this process, after their
        # COMMIT (`transaction`); SQLite's own, at this many pages, only as a backstop.
        conn.execute(f"PRAGMA wal_autocheckpoint={FALLBACK_CHECKPOINT_PAGES}")
        return conn

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """This process's writing connection, holding the write lock between processes; enter
        with `_write_lock` held (one thread at a time).

        One connection writes for the whole process: SQLite drops a connection's page cache when
        another connection has written since its last transaction, so with a connection per
        thread every webhook began with a cold cache (bench/ingest.py). The lock is a flock,
        which belongs to an open file; a fork shares open files, so each process opens its own.
        """
        pid = os.getpid()
        if self._writer is None or self._writer[0] != pid:
            lock_file = open(self.path + ".write-lock", "a")  # noqa: SIM115
            self._writer = (pid, lock_file, self._open())
        _, lock_file, conn = self._writer
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield conn
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)

    @contextmanager
    def transaction(self, *, works: int = 1) -> Iterator[sqlite3.Connection]:
        """One write transaction holding SQLite's write lock from the start."""
        with self._write_lock, self._writing() as conn:
            outer = getattr(self._local, "tx", None)
            self._local.tx = conn
            try:
                self.check_file()
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    if conn.in_transaction:  # some errors (disk full, I/O) end it themselves
                        conn.execute("ROLLBACK")
                    raise
                else:
                    conn.execute("COMMIT")
            except sqlite3.Error as exc:
                reason = cannot_write(exc)
                if reason is None:
                    raise
                self.write_failure = f"{reason}: {exc}"
                raise StorageUnavailable(self.write_failure) from exc
            except StorageUnavailable as exc:
                self.write_failure = str(exc)
                raise
            finally:
                self._local.tx = outer
            self.write_failure = None
            before, self._writes = self._writes, self._writes + works
            if before // CHECKPOINT_EVERY_WRITES != self._writes // CHECKPOINT_EVERY_WRITES:
                # Still holding the write locks, so no frame is added meanwhile and the copy can
                # complete, letting the next writer start the WAL over. Outside them, a steady
                # stream of webhooks starved it: the WAL grew to 80 MB and every statement was
                # slower for it (bench/ingest.py).
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def batched(self, fn: Callable[[], T]) -> T:
        """Run `fn` inside a write transaction that it may share with other threads' (group
        commit), and return its result once that transaction is committed.

        The first thread to arrive leads: it runs every work queued so far and commits them
        together; threads that arrive meanwhile queue, and the first of them leads the next
        batch. If a work raises, the batch is rolled back and each work runs again in a
        transaction of its own, so only the failing one fails (its thread gets the exception).
        Alone, a thread just runs its own transaction. Under load one COMMIT, and one trip
        through the write locks, serves many webhooks (bench/ingest.py).

        `fn` must only touch the database, through `self.conn` (it may run on another thread,
        and twice), and must not open a transaction itself.
        """
        work = _Work(fn)
        with self._batch_mutex:
            self._batch_queue.append(work)
            leading = not self._batch_leading
            self._batch_leading = True
        if not leading:
            work.wakeup.wait()  # set when our work is done, or when we are promoted to lead
        if not work.finished:
            self._run_batch()
        if work.error is not None:
            raise work.error
        return work.result  # type: ignore[return-value]

    def _run_batch(self) -> None:
        with self._batch_mutex:
            batch, self._batch_queue = self._batch_queue, []
        try:
            try:
                with self.transaction(works=len(batch)):
                    for work in batch:
                        work.result = work.fn()
            except Exception as exc:
                if len(batch) == 1:
                    batch[0].error = exc
                else:  # all rolled back: run each alone, so only the failing one fails
                    for work in batch:
                        try:
                            with self.transaction():
                                work.result = work.fn()
                        except Exception as alone:
                            work.result, work.error = None, alone
        except BaseException as exc:  # an interrupt: nothing after it is stored
            for work in batch:
                if work.error is None and not work.finished:
                    work.result, work.error = None, exc
            raise
        finally:
            for work in batch:
                work.finished = True
                work.wakeup.set()
            with self._batch_mutex:
                if self._batch_queue:
                    self._batch_queue[0].wakeup.set()  # promoted: it leads the next batch
                else:
                    self._batch_leading = False

    def close(self) -> None:
        with self._lock:
            for conn in list(self._by_thread.values()):
                conn.close()
            self._by_thread.clear()
            if self._writer is not None and self._writer[0] == os.getpid():
                self._writer[1].close()
                self._writer[2].close()
            self._writer = None
        self._local = threading.local()

    def _file_identity(self) -> tuple[int, int]:
        info = os.stat(self.path)
        return info.st_dev, info.st_ino

    def check_file(self) -> None:
        """Raise StorageUnavailable unless the file at our path is still the one we opened.

        Deleted or replaced under a running bot, the open connections go on reading and writing
        the old, unlinked file: every webhook was acknowledged into a file no restart would see.
        One stat per write transaction.
        """
        try:
            identity = self._file_identity()
        except FileNotFoundError:
            raise StorageUnavailable(
                f"the database file {self.path} was deleted while the bot was running"
            ) from None
        if identity != self._identity:
            raise StorageUnavailable(
                f"the database file {self.path} was replaced while the bot was running"
            )

    def readiness(self) -> str | None:
        """Why this process cannot take a webhook now (None when it can): the file is not the
        one it opened, the last write failed for want of a writable database, or the disk has
        less than MIN_FREE_BYTES left. A write is tried when the last one failed, so readiness
        comes back by itself once the cause is fixed."""
        self.check_file()
        if self.write_failure is not None:
            try:
                with self.transaction() as conn:
                    conn.execute("UPDATE meta SET value = value WHERE key = 'instance_id'")
            except StorageUnavailable as exc:
                return str(exc)
        disk = os.statvfs(os.path.dirname(os.path.abspath(self.path)))
        free = disk.f_bavail * disk.f_frsize
        if free < MIN_FREE_BYTES:
            return f"the disk holding {self.path} has only {free} bytes free"
        return None

    def _migrate(self) -> None:
        # Several gunicorn workers start at once; a file lock lets exactly one apply migrations.
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        if not os.path.exists(self.path):
            open(self.path, "ab").close()  # an empty file is an empty database
        with open(self.path + ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            migrations.apply(sqlite_utils.Database(self.conn))

    def _instance_id(self) -> str:
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('instance_id', ?)",
                (secrets.token_hex(8),),
            )
            return conn.execute("SELECT value FROM meta WHERE key = 'instance_id'").fetchone()[0]

    # -- events ----------------------------------------------------------------------------

    def insert_event(
        self,
        *,
        event_id: str,
        type: str,
        object_kind: str | None,
        object_id: str | None,
        created: int,
        livemode: bool,
        account: str | None,
        handled: bool,
        payload: str,
        change_key: str | None = None,
        source: str | None = None,
    ) -> bool:
        """Record an event; False when its id, or the change it tells, was already recorded.

        `source`: where it came from when not a webhook (``"replay"``)."""
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO events (id, type, object_kind, object_id, created, livemode,"
            " account, handled, received_at, payload, change_key, source)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                event_id,
                type,
                object_kind,
                object_id,
                created,
                int(livemode),
                account,
                int(handled),
                time.time(),
                payload,
                change_key,
                source,
            ),
        )
        return cur.rowcount == 1

    def events_by_source(self) -> dict[str, int]:
        """How many events came from each source other than webhooks (a replay)."""
        rows = self.conn.execute(
            "SELECT source, count(*) FROM events INDEXED BY events_by_source"
            " WHERE source IS NOT NULL GROUP BY source"
        ).fetchall()
        return {row[0]: row[1] for row in rows}

    def known_accounts(self) -> list[str]:
        """The Connect accounts orders and products have come from."""
        rows = self.conn.execute(
            "SELECT account FROM orders WHERE account IS NOT NULL"
            " UNION SELECT account FROM products WHERE account IS NOT NULL ORDER BY 1"
        ).fetchall()
        return [row[0] for row in rows]

    def mark_event_late(self, event_id: str) -> None:
        self.conn.execute("UPDATE events SET late = 1 WHERE id = ?", (event_id,))

    def event(self, event_id: str) -> dict[str, Any] | None:
        """The recorded event envelope as Stripe sent it."""
        row = self.conn.execute("SELECT payload FROM events WHERE id = ?", (event_id,)).fetchone()
        return json.loads(row["payload"]) if row else None

    def count_events(self) -> int:
        return self.conn.execute("SELECT count(*) FROM events").fetchone()[0]

    def last_event_received_at(self) -> float | None:
        row = self.conn.execute(
            "SELECT received_at FROM events ORDER BY rowid DESC LIMIT 1"
        ).fetchone()
        return row[0] if row else None

    # -- orders and products ---------------------------------------------------------------

    def row_and_card_channel(
        self, kind: str, object_id: str
    ) -> tuple[dict[str, Any] | None, str | None]:
        """An order's or product's row (as `order_row`/`product_row`) and its card's channel (as
        `card_channel`), in one statement: ingest asks both for every event."""
        table, json_columns = {
            "order": ("orders", _ORDER_JSON),
            "product": ("products", _PRODUCT_JSON),
        }[kind]
        row = self.conn.execute(
            f"SELECT {_CARD_CHANNELS}, t.* FROM (SELECT 1) LEFT JOIN {table} t ON t.id = :id",
            {"key": card_key(kind, object_id), "id": object_id},
        ).fetchone()
        found = _decode(row, *json_columns) if row["id"] is not None else None
        if found is not None:
            del found["posted_channel"], found["queued_channel"]
        return found, row["posted_channel"] or row["queued_channel"]

    def order_row(self, order_id: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT * FROM orders WHERE id = ?", (order_id,)).fetchone()
        return _decode(row, *_ORDER_JSON)

    # -- decisions ---------------------------------------------------------------------------

    def claim_decision(
        self,
        order_id: str,
        decision: str,
        *,
        user: str,
        deadline: int,
        now: float,
        detail: dict[str, Any] | None = None,
    ) -> bool:
        """Compare-and-set: record `decision` by `user` unless the change is already decided.

        Fails when another decision (or a cancel in flight) is recorded, the window is closed or
        past, or the order moved on to another change (`deadline` no longer matches).
        """
        cur = self.conn.execute(
            "UPDATE orders SET decision = ?, decided_by = ?, decided_at = ?, decision_detail = ?"
            " WHERE id = ? AND decision IS NULL AND window_closed = 0 AND decision_deadline = ?"
            " AND decision_deadline > ? AND status NOT IN ('delivered', 'canceled')",
            (decision, user, now, _json_or_null(detail), order_id, deadline, now),
        )
        return cur.rowcount == 1

    def settle_decision(
        self, order_id: str, *, expected: str, decision: str | None, detail: dict | None = None
    ) -> bool:
        """Move a decision on from `expected` (a cancel in flight) to `decision`; False when the
        order's decision is not `expected` any more (nothing is changed then).

        `decision` None undoes it: the change is open again, or, when another change arrived
        while the cancel was in flight, that change becomes the one to decide, with its own
        window. `detail` is merged into what the claim recorded (the reason stays).
        """
        if decision is None:
            cur = self.conn.execute(
                "UPDATE orders SET decision = NULL, decided_by = NULL, decided_at = NULL,"
                " decision_detail = NULL, window_closed = CASE WHEN next_change IS NULL"
                " THEN window_closed ELSE 0 END,"
                " change = coalesce(next_change, change),"
                " change_kind = coalesce(json_extract(next_change, '$.kind'), change_kind),"
                " decision_deadline = coalesce(json_extract(next_change, '$.at') + ?,"
                " decision_deadline), next_change = NULL WHERE id = ? AND decision = ?",
                (DECISION_WINDOW_SECONDS, order_id, expected),
            )
        else:
            cur = self.conn.execute(
                "UPDATE orders SET decision = ?, next_change = NULL,"
                " decision_detail = json_patch(coalesce(decision_detail, '{}'), ?)"
                " WHERE id = ? AND decision = ?",
                (decision, json.dumps(detail or {}), order_id, expected),
            )
        return cur.rowcount == 1

    def refresh_order(self, order: dict[str, Any], *, headline_event: str | None = None) -> None:
        """Replace an order's snapshot with what Stripe just returned (newer than any event)."""
        sets = "snapshot = ?, status = ?, updated_at = ?"
        params: list[Any] = [json.dumps(order), str(order.get("status")), time.time()]
        if headline_event:
            sets += ", headline_event = ?"
            params.append(headline_event)
        self.conn.execute(f"UPDATE orders SET {sets} WHERE id = ?", (*params, order["id"]))

    def audit(
        self,
        order_id: str,
        action: str,
        outcome: str,
        *,
        user: str | None,
        stripe_request_id: str | None = None,
        error: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Record a decision, refusal or failure: who, what, when, how it ended, and what it
        rested on (`detail`: the refund rule applied, the reason given)."""
        self.conn.execute(
            "INSERT INTO audit (order_id, action, slack_user, at, outcome, stripe_request_id,"
            " error, detail) VALUES (?,?,?,?,?,?,?,?)",
            (
                order_id,
                action,
                user,
                time.time(),
                outcome,
                stripe_request_id,
                error,
                _json_or_null(detail),
            ),
        )

    def cancel_attempts(self, order_id: str) -> int:
        """How many cancels of this order ended without cancelling (refused, failed)."""
        return self.conn.execute(
            "SELECT count(*) FROM audit WHERE order_id = ? AND action = 'cancel'"
            " AND outcome IN ('refused', 'failed')",
            (order_id,),
        ).fetchone()[0]

    def audit_rows(self, order_id: str) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT * FROM audit WHERE order_id = ? ORDER BY at, id", (order_id,)
        ).fetchall()
        return [_decode(r, "detail") for r in rows]

    def order_events(self, order_id: str) -> list[dict[str, Any]]:
        """The order's recorded events in time order (id, type, created, late)."""
        rows = self.conn.execute(
            "SELECT id, type, created, late, received_at FROM events WHERE object_id = ?"
            " ORDER BY created, received_at",
            (order_id,),
        ).fetchall()
        return [dict(r) for r in rows]

    def list_orders(
        self,
        *,
        status: str | None = None,
        change_kind: str | None = None,
        before: tuple[int, str] | None = None,
        limit: int = 10,
    ) -> list[dict[str, Any]]:
        """Orders newest first (by `created`, then id), optionally of one status or change kind,
        after the keyset `before` = (created, id) of the last order of the previous page."""
        where, params = [], []
        if status:
            where.append("status = ?")
            params.append(status)
        if change_kind:
            where.append("change_kind = ? AND status NOT IN ('delivered', 'canceled')")
            params.append(change_kind)
        if before:
            where.append("(created, id) < (?, ?)")  # a range on the index, not a scan
            params.extend([before[0], before[1]])
        sql = "SELECT * FROM orders"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created DESC, id DESC LIMIT ?"
        rows = self.conn.execute(sql, (*params, limit)).fetchall()
        return [_decode(r, *_ORDER_JSON) for r in rows]

    def recent_events(self, limit: int = 10) -> list[dict[str, Any]]:
        """The latest Climate events received, newest first."""
        rows = self.conn.execute(
            "SELECT id, type, object_id, created, received_at, late FROM events"
            " WHERE handled = 1 ORDER BY rowid DESC LIMIT ?",  # rows are never deleted
            (limit,),
        ).fetchall()
        return [dict(r) for r in rows]

    def first_sight_of_slack_event(self, event_id: str) -> bool:
        """Record an Events API delivery; False if it was handled before (a retry)."""
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO slack_events (event_id, received_at) VALUES (?, ?)",
            (event_id, time.time()),
        )
        return cur.rowcount == 1

    def pending_decisions(self, now: float, *, limit: int = 50) -> list[dict[str, Any]]:
        """Orders awaiting a decision, soonest deadline first."""
        rows = self.conn.execute(
            "SELECT * FROM orders WHERE window_closed = 0 AND decision IS NULL"
            " AND decision_deadline > ? AND status NOT IN ('delivered', 'canceled')"
            " ORDER BY decision_deadline LIMIT ?",
            (now, limit),
        ).fetchall()
        return [_decode(r, *_ORDER_JSON) for r in rows]

    def count_pending_decisions(self, now: float) -> int:
        """How many orders await a decision (walks the pending index, not the table)."""
        return self.conn.execute(
            "SELECT count(*) FROM orders WHERE window_closed = 0 AND decision IS NULL"
            " AND decision_deadline > ? AND status NOT IN ('delivered', 'canceled')",
            (now,),
        ).fetchone()[0]

    def due_reminders(self, now: float, days: list[int]) -> list[tuple[str, int, int]]:
        """(order id, deadline, days) for every reminder due now and not yet sent."""
        due = []
        for d in days:
            rows = self.conn.execute(
                "SELECT o.id, o.decision_deadline FROM orders o WHERE o.window_closed = 0"
                " AND o.decision IS NULL AND o.status NOT IN ('delivered', 'canceled')"
                " AND o.decision_deadline > ? AND o.decision_deadline - ? <= ?"
                " AND NOT EXISTS (SELECT 1 FROM reminders r WHERE r.order_id = o.id"
                " AND r.deadline = o.decision_deadline AND r.days <= ?)",
                (now, d * 86400, now, d),
            ).fetchall()
            due.extend((r[0], r[1], d) for r in rows)
        return due

    def mark_reminded(self, order_id: str, deadline: int, days: int) -> bool:
        """Record a reminder as sent; False if another process already sent it."""
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO reminders (order_id, deadline, days, sent_at) VALUES (?,?,?,?)",
            (order_id, deadline, days, time.time()),
        )
        return cur.rowcount == 1

    def save_order(
        self,
        order: dict[str, Any],
        *,
        account: str | None,
        snapshot_created: int,
        snapshot_rank: int,
        headline_event: str,
        change: dict[str, Any] | None,
        decision_deadline: int | None,
        next_change: dict[str, Any] | None = None,
    ) -> None:
        """Make `order` the snapshot of its order (the caller decided it is newer).

        A decision stays while `decision_deadline` is the one it was made for; `next_change` is
        a change that waits for the cancel in flight to settle (`settle_decision`).
        """
        self.conn.execute(
            "INSERT INTO orders (id, account, livemode, status, created, snapshot,"
            " snapshot_created, snapshot_rank, headline_event, change, decision_deadline,"
            " updated_at, change_kind, next_change) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
            " ON CONFLICT (id) DO UPDATE SET account = excluded.account,"
            " livemode = excluded.livemode, status = excluded.status,"
            " created = excluded.created, snapshot = excluded.snapshot,"
            " snapshot_created = excluded.snapshot_created,"
            " snapshot_rank = excluded.snapshot_rank,"
            " headline_event = excluded.headline_event, change = excluded.change,"
            " window_closed = CASE WHEN excluded.decision_deadline IS orders.decision_deadline"
            " THEN orders.window_closed ELSE 0 END,"
            " decision = CASE WHEN excluded.decision_deadline IS orders.decision_deadline"
            " THEN orders.decision ELSE NULL END,"
            " decided_by = CASE WHEN excluded.decision_deadline IS orders.decision_deadline"
            " THEN orders.decided_by ELSE NULL END,"
            " decided_at = CASE WHEN excluded.decision_deadline IS orders.decision_deadline"
            " THEN orders.decided_at ELSE NULL END,"
            " decision_detail = CASE WHEN excluded.decision_deadline IS orders.decision_deadline"
            " THEN orders.decision_detail ELSE NULL END,"
            " decision_deadline = excluded.decision_deadline, updated_at = excluded.updated_at,"
            " change_kind = excluded.change_kind, next_change = excluded.next_change",
            (
                order["id"],
                account,
                int(bool(order.get("livemode"))),
                str(order.get("status")),
                _whole(order.get("created")),
                json.dumps(order),
                snapshot_created,
                snapshot_rank,
                headline_event,
                json.dumps(change) if change else None,
                decision_deadline,
                time.time(),
                change.get("kind") if change else None,
                _json_or_null(next_change),
            ),
        )

    def close_expired_windows(self, now: float) -> list[str]:
        """Mark every open decision window that has passed as closed; return those order ids.

        A compare-and-set: when several processes run the scheduler, each window closes once.
        """
        ids = [
            r[0]
            for r in self.conn.execute(
                "SELECT id FROM orders WHERE decision_deadline <= ? AND window_closed = 0",
                (now,),
            ).fetchall()
        ]
        closed = []
        for order_id in ids:
            cur = self.conn.execute(
                "UPDATE orders SET window_closed = 1 WHERE id = ? AND window_closed = 0",
                (order_id,),
            )
            if cur.rowcount == 1:
                closed.append(order_id)
        return closed

    def direct_message_sent(self, order_id: str, occasion: str, user: str) -> bool:
        """True when `user` was already messaged (or given up on) for this occasion."""
        return (
            self.conn.execute(
                "SELECT 1 FROM direct_messages WHERE order_id = ? AND occasion = ? AND user = ?",
                (order_id, occasion, user),
            ).fetchone()
            is not None
        )

    def record_direct_message(self, order_id: str, occasion: str, user: str, outcome: str) -> None:
        """Record that `user` was messaged for this occasion (`outcome`: sent, or why not)."""
        self.conn.execute(
            "INSERT OR IGNORE INTO direct_messages (order_id, occasion, user, outcome, at)"
            " VALUES (?,?,?,?,?)",
            (order_id, occasion, user, outcome, time.time()),
        )

    def product_row(self, product_id: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT * FROM products WHERE id = ?", (product_id,)).fetchone()
        return _decode(row, *_PRODUCT_JSON)

    def save_product(
        self,
        product: dict[str, Any],
        *,
        account: str | None,
        snapshot_created: int,
        snapshot_rank: int,
        headline_event: str,
        old_prices: dict[str, Any] | None = None,
    ) -> None:
        """Make `product` the snapshot of its product (the caller decided it is newer);
        `old_prices`: its prices before this change, when the change is one of prices."""
        self.conn.execute(
            "INSERT INTO products (id, account, livemode, snapshot, snapshot_created,"
            " snapshot_rank, headline_event, updated_at, old_prices) VALUES (?,?,?,?,?,?,?,?,?)"
            " ON CONFLICT (id) DO UPDATE SET account = excluded.account,"
            " livemode = excluded.livemode, snapshot = excluded.snapshot,"
            " snapshot_created = excluded.snapshot_created,"
            " snapshot_rank = excluded.snapshot_rank,"
            " headline_event = excluded.headline_event, updated_at = excluded.updated_at,"
            " old_prices = excluded.old_prices",
            (
                product["id"],
                account,
                int(bool(product.get("livemode"))),
                json.dumps(product),
                snapshot_created,
                snapshot_rank,
                headline_event,
                time.time(),
                json.dumps(old_prices) if old_prices is not None else None,
            ),
        )

    # -- outbox ----------------------------------------------------------------------------

    def enqueue(
        self,
        key: str,
        kind: str,
        *,
        channel: str,
        event_id: str | None = None,
        facts: dict[str, Any] | None = None,
        new_card: bool = False,
    ) -> int | None:
        """Queue what Slack must be told about a card.

        A card never moves: once it is posted or queued, its rows go to its channel, whatever
        `channel` says. A "card" row is skipped when an untouched one is already queued for the
        same card: it will render the state current at delivery time, which includes this change.
        `new_card`: the caller found, in this transaction, that the card has no channel yet (so
        nothing of it is posted or queued).
        """
        now = time.time()
        if not new_card:
            posted, queued = self._card_channels(key)
            channel = posted or queued or channel
            if kind == "card" and posted:
                kind = "update"  # a chat.update, which the channel's pacing does not hold
        if kind in ("card", "update") and not new_card:
            waiting = self.conn.execute(
                "SELECT 1 FROM outbox WHERE card_key = ? AND kind IN ('card', 'update')"
                " AND status = 'pending' AND attempts = 0 AND lease_owner IS NULL",
                (key,),
            ).fetchone()
            if waiting:
                return None
        cur = self.conn.execute(
            "INSERT INTO outbox (card_key, kind, event_id, facts, channel, available_at,"
            " created_at) VALUES (?,?,?,?,?,?,?)",
            (key, kind, event_id, json.dumps(facts or {}), channel, now, now),
        )
        return cur.lastrowid

    def card_channel(self, key: str) -> str | None:
        """The channel of a card that is posted or queued, else None."""
        posted, queued = self._card_channels(key)
        return posted or queued

    def _card_channels(self, key: str) -> tuple[str | None, str | None]:
        """The card's channel if it is posted, and its first queued card row's channel."""
        row = self.conn.execute(f"SELECT {_CARD_CHANNELS}", {"key": key}).fetchone()
        return row[0], row[1]

    def lease_next(
        self, owner: str, *, lease_seconds: float = 60.0, pace_seconds: float = 1.0
    ) -> OutboxRow | None:
        """Lease the oldest deliverable row, or None.

        Rows of one card go strictly in order; a reply waits for its card; a row that posts a new
        message waits for its channel's pacing slot (Slack allows about one message per second
        per channel). The search reads outside the write lock (it can scan a long backlog);
        the claim is a compare-and-set under it, so two workers never take the same row.
        """
        for _ in range(3):  # another worker may claim the row first: look again
            now = time.time()
            row = self.conn.execute(_LEASABLE, {"now": now}).fetchone()
            if row is None:
                return None
            posts = row["kind"] == "reply" or (row["kind"] == "card" and row["card_ts"] is None)
            with self.transaction() as conn:
                if posts and self._next_post_at(row["channel"]) > now:
                    continue
                claimed = conn.execute(
                    "UPDATE outbox SET lease_owner = ?, lease_until = ?, attempts = attempts + 1,"
                    " first_attempt_at = coalesce(first_attempt_at, ?) WHERE id = ?"
                    " AND status = 'pending' AND (lease_until IS NULL OR lease_until < ?)",
                    (owner, now + lease_seconds, now, row["id"], now),
                ).rowcount
                if not claimed:
                    continue
                if posts:
                    conn.execute(
                        "INSERT INTO pacing (channel, next_post_at) VALUES (?, ?) ON CONFLICT"
                        " (channel) DO UPDATE SET next_post_at = excluded.next_post_at",
                        (row["channel"], now + pace_seconds),
                    )
            break
        else:
            return None
        return OutboxRow(
            id=row["id"],
            card_key=row["card_key"],
            kind="card" if row["kind"] == "update" else row["kind"],  # delivered alike
            event_id=row["event_id"],
            facts=json.loads(row["facts"] or "{}"),
            channel=row["channel"],
            attempts=row["attempts"] + 1,
            first_attempt_at=row["first_attempt_at"] or now,
            card_ts=row["card_ts"],
            lease_owner=owner,
            created_at=row["created_at"],
        )

    def _next_post_at(self, channel: str) -> float:
        row = self.conn.execute(
            "SELECT next_post_at FROM pacing WHERE channel = ?", (channel,)
        ).fetchone()
        return row[0] if row else 0.0

    def paced_channels(self, now: float) -> dict[str, float]:
        """Channels whose next post must wait, and until when (one row per channel ever used)."""
        rows = self.conn.execute(
            "SELECT channel, next_post_at FROM pacing WHERE next_post_at > ?", (now,)
        ).fetchall()
        return {channel: at for channel, at in rows}

    def next_delivery_at(self) -> float | None:
        """When the worker should look again after a look that found nothing; None if nothing
        is due by time.

        Called right after an empty look, so nothing is due now: what comes due is a paced
        channel with messages waiting getting its slot back, or a row that was tried before
        coming off its back-off or its lease. Rows waiting behind their card are not due by
        time. A few index searches, however long the backlog (bench/outbox.py).
        """
        return self.conn.execute(
            """
            SELECT min(due) FROM (
                SELECT min(p.next_post_at) AS due FROM pacing p
                WHERE p.next_post_at > :now AND EXISTS (
                    SELECT 1 FROM outbox o INDEXED BY outbox_queue WHERE o.status = 'pending'
                    AND o.channel = p.channel AND o.kind IN ('card', 'reply'))
                UNION ALL
                SELECT min(max(o.available_at, coalesce(o.lease_until, 0))) FROM outbox o
                INDEXED BY outbox_retry WHERE o.status = 'pending' AND o.attempts > 0
                AND max(o.available_at, coalesce(o.lease_until, 0)) > :now
            )
            """,
            {"now": time.time()},
        ).fetchone()[0]

    def complete(self, row: OutboxRow, *, card_channel: str | None = None, ts: str | None = None):
        """Mark a row delivered; for a newly posted card, remember where it is — atomically."""
        with self.transaction() as conn:
            if row.kind == "card" and row.card_ts is None and ts:
                conn.execute(
                    "INSERT OR IGNORE INTO cards (key, channel, ts, posted_at) VALUES (?,?,?,?)",
                    (row.card_key, card_channel or row.channel, ts, time.time()),
                )
            conn.execute(
                "UPDATE outbox SET status = 'done', done_at = ?, posted_ts = ?,"
                " lease_owner = NULL, lease_until = NULL WHERE id = ? AND lease_owner = ?",
                (time.time(), ts, row.id, row.lease_owner),
            )

    def reschedule(self, row: OutboxRow, *, delay: float, error: str) -> None:
        """Give a row back to be tried again after `delay` seconds."""
        self.conn.execute(
            "UPDATE outbox SET available_at = ?, last_error = ?, lease_owner = NULL,"
            " lease_until = NULL WHERE id = ? AND lease_owner = ?",
            (time.time() + delay, error, row.id, row.lease_owner),
        )

    def hold_channel(self, channel: str, seconds: float) -> None:
        """Keep every worker from posting to `channel` for `seconds` (Slack said Retry-After).

        Never longer than MAX_RETRY_AFTER_SECONDS from now, whatever `seconds` is (`inf` and
        `nan` hold for the cap), even when the channel is already held longer: a stored hold
        outlives the process, so one wrong value must not silence the channel for good.
        """
        if not math.isfinite(seconds):
            seconds = MAX_RETRY_AFTER_SECONDS
        now = time.time()
        until = now + min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)
        self.conn.execute(
            "INSERT INTO pacing (channel, next_post_at) VALUES (?, ?) ON CONFLICT (channel)"
            " DO UPDATE SET next_post_at = min(max(next_post_at, excluded.next_post_at), ?)",
            (channel, until, now + MAX_RETRY_AFTER_SECONDS),
        )

    def long_holds(self, now: float) -> dict[str, float]:
        """Channels held more than LONG_HOLD_SECONDS past `now` (by a Slack rate limit, not
        our pacing), and until when. Read on every /healthz probe and /metrics scrape: the pacing
        table has a row per channel ever posted to, a few."""
        return self.paced_channels(now + LONG_HOLD_SECONDS)

    def release_long_holds(self) -> int:
        """Let every channel held more than LONG_HOLD_SECONDS from now post again; how many.

        Ordinary pacing (a second after each post) is left alone. Should Slack still be
        limiting, the next post gets a 429 and a new, bounded, hold.
        """
        cur = self.conn.execute(
            "DELETE FROM pacing WHERE next_post_at > ?", (time.time() + LONG_HOLD_SECONDS,)
        )
        return cur.rowcount

    def fail(self, row: OutboxRow, error: str) -> None:
        """Park a row after a permanent error; it stays visible until replayed."""
        self.conn.execute(
            "UPDATE outbox SET status = 'failed', last_error = ?, lease_owner = NULL,"
            " lease_until = NULL WHERE id = ? AND lease_owner = ?",
            (error, row.id, row.lease_owner),
        )

    def failures(self) -> list[Failure]:
        rows = self.conn.execute(
            "SELECT id, card_key, kind, last_error, created_at FROM outbox"
            " WHERE status = 'failed' ORDER BY id"
        ).fetchall()
        return [Failure(**dict(r)) for r in rows]

    def retry_failed(self) -> int:
        """Put every parked row back in the queue (after an operator fixed the cause)."""
        cur = self.conn.execute(
            "UPDATE outbox SET status = 'pending', available_at = ?, attempts = 0"
            " WHERE status = 'failed'",
            (time.time(),),
        )
        return cur.rowcount

    def outbox_backlog(self) -> tuple[int, float | None]:
        """How many rows wait for delivery, and when the oldest of them was queued."""
        row = self.conn.execute(
            "SELECT count(*), min(created_at) FROM outbox WHERE status = 'pending'"
        ).fetchone()
        return row[0], row[1]

    def outbox_counts(self) -> dict[str, int]:
        """Rows by status (pending, failed, done), leaving out those with none.

        Counted on indexes, never the table: it runs on every /healthz probe and /metrics scrape.
        """
        total, pending, failed = self.conn.execute(
            "SELECT (SELECT count(*) FROM outbox),"
            " (SELECT count(*) FROM outbox WHERE status = 'pending'),"
            " (SELECT count(*) FROM outbox WHERE status = 'failed')"
        ).fetchone()
        counts = {"pending": pending, "failed": failed, "done": total - pending - failed}
        return {status: n for status, n in counts.items() if n}

    def cards_of(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        """The cards of many orders or products in one query, by key."""
        if not keys:
            return {}
        marks = ",".join("?" * len(keys))
        rows = self.conn.execute(f"SELECT * FROM cards WHERE key IN ({marks})", keys).fetchall()
        return {r["key"]: dict(r) for r in rows}

    def known_products(self, limit: int = 100) -> list[dict[str, Any]]:
        """Product snapshots received by webhook, newest first."""
        rows = self.conn.execute(
            "SELECT * FROM products ORDER BY updated_at DESC LIMIT ?", (limit,)
        ).fetchall()
        return [_decode(r, *_PRODUCT_JSON) for r in rows]

    def card(self, key: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT * FROM cards WHERE key = ?", (key,)).fetchone()
        return dict(row) if row else None


def _json_or_null(value: dict[str, Any] | None) -> str | None:
    return json.dumps(value) if value else None


def _whole(value: Any) -> int:
    """An integer field of a Stripe object, 0 when it is anything else (signed but odd input)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _decode(row: sqlite3.Row | None, *json_columns: str) -> dict[str, Any] | None:
    if row is None:
        return None
    out = dict(row)
    for col in json_columns:
        if out.get(col) is not None:
            out[col] = json.loads(out[col])
    return out
