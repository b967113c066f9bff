"""The storage engine: connections, write locks, transactions and group commit under the verbs.

SQLite in WAL mode with ``synchronous=NORMAL``: it survives a process crash (a power loss is
covered by ``climate-bot replay``), and under gunicorn it took a minimal receiver from 0.16-0.21
of a bare Flask route's requests/s (rollback journal, ``synchronous=FULL``) to 0.35-0.39. One
connection per thread; writes that must be atomic run inside ``transaction()``, which takes
SQLite's write lock up front (``BEGIN IMMEDIATE``) so two processes never interleave.
The schema is managed by sqlite-utils' ``Migrations`` (``bot.storage.schema``).
"""

from __future__ import annotations

import fcntl
import os
import secrets
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import sqlite_utils

from bot.storage.schema import migrations

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


class Engine:
    """What every verb runs on: per-thread connections, the write locks, transactions, group
    commit, checkpoints, and whether the file can still be written (`Storage` adds the verbs)."""

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
            self.instance_id = self._ensure_instance_id()
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

    def _ensure_instance_id(self) -> str:
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('instance_id', ?)",
                (secrets.token_hex(8),),
            )
            return conn.execute("SELECT value FROM meta WHERE key = 'instance_id'").fetchone()[0]
