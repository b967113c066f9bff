"""Bench: do receiving an event and waking the delivery worker stay fast as the outbox grows?

What it measures
----------------
In process, on fresh SQLite files, with the bot's own code (no HTTP):

- ``record_event`` (bot/recording.py: record, apply the snapshot, queue the card, one transaction)
  for new-order ``climate.order.created`` events, on a database whose outbox already holds N
  delivered rows (``status = 'done'``; rows are never deleted, so N is every message the bot
  has ever sent). The rows are inserted with SQL, as the worker leaves them: queuing 100,000
  through ``Storage.enqueue`` would itself take minutes, for the reason this bench shows.
- one wake-up of the delivery worker (``Storage.lease_next`` + ``Storage.next_delivery_at``,
  what ``Deliverer.run`` does each time a received event sets ``wake``) with N cards pending
  for one channel whose pacing slot is taken, so nothing can be leased: the state of the outbox
  during a burst into one channel. The search runs outside the write lock; the row it finds is
  claimed under it.

The sizes are 1,000 (the baseline) and 10,000 and 100,000 (``--quick``: 1,000 and 20,000).

How to read it
--------------
``ratio = median(N) / median(1,000)`` for the same operation in the same run. About 1.0 means
the operation does not grow with the outbox; a ratio near N / 1,000 means a scan per call.
There is no goal for this in issue 8 (``bench/slash.py`` holds its queries to < 1.5); the query
plans at the end show which statements scan. Informational: the exit code is always 0 unless
something raised.

Usage: ``.venv/bin/python bench/outbox.py [--quick] [--repeat N]``
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import CHANNEL, machine

from bot.recording import parse_event, record_event
from bot.sandbox import stripe_objects
from bot.storage import Storage

BASELINE = 1_000
WARMUP = 20


def fill_outbox(storage: Storage, rows: int, *, status: str, channel: str) -> None:
    """`rows` card rows for distinct orders, as the worker leaves them (`done`) or as queued."""
    now = time.time()
    with storage.transaction() as conn:
        conn.executemany(
            "INSERT INTO outbox (card_key, kind, facts, channel, status, attempts, available_at,"
            " created_at, done_at) VALUES (?, 'card', '{}', ?, ?, ?, ?, ?, ?)",
            (
                (
                    f"order:climorder_fill{i:07d}",
                    channel,
                    status,
                    1 if status == "done" else 0,
                    now,
                    now,
                    now if status == "done" else None,
                )
                for i in range(rows)
            ),
        )


def new_order_events(count: int, tag: str) -> list[tuple[dict[str, Any], str]]:
    """Parsed `climate.order.created` events for new orders, with their raw text."""
    events = []
    for i in range(count):
        order = stripe_objects.order("confirmed", id=f"climorder_bench{tag}{i:06d}")
        event = stripe_objects.event("climate.order.created", order, id=f"evt_bench{tag}{i:06d}")
        raw = json.dumps(event, indent=2)
        events.append((parse_event(raw.encode()), raw))
    return events


def time_receive(workdir: Path, size: int, repeat: int) -> list[float]:
    """Milliseconds per `record_event` with `size` delivered rows in the outbox."""
    storage = Storage(workdir / f"receive-{size}.db")
    try:
        fill_outbox(storage, size, status="done", channel=CHANNEL)
        samples = []
        for n, (event, raw) in enumerate(new_order_events(WARMUP + repeat, f"r{size}x")):
            started = time.perf_counter()
            record_event(storage, event, raw, channel=CHANNEL)
            if n >= WARMUP:
                samples.append((time.perf_counter() - started) * 1000)
        return samples
    finally:
        storage.close()


def time_wake(workdir: Path, size: int, repeat: int) -> list[float]:
    """Milliseconds per worker wake-up (lease_next + next_delivery_at) with `size` cards pending
    for one channel whose pacing slot is taken."""
    storage = Storage(workdir / f"wake-{size}.db")
    try:
        fill_outbox(storage, size, status="pending", channel=CHANNEL)
        storage.hold_channel(CHANNEL, 3600)  # held (for the 120 s cap): nothing is leasable
        samples = []
        for n in range(WARMUP + repeat):
            started = time.perf_counter()
            row = storage.lease_next("bench")
            storage.next_delivery_at()
            if row is not None:
                raise RuntimeError("a row was leased from a paced channel")
            if n >= WARMUP:
                samples.append((time.perf_counter() - started) * 1000)
        return samples
    finally:
        storage.close()


def query_plans(database: Path) -> list[str]:
    """EXPLAIN the statements the measured methods really run (traced, not copied)."""
    storage = Storage(database)
    try:
        calls = {
            "Storage.row_and_card_channel (ingest's read of the order and its card)": lambda: (
                storage.row_and_card_channel("order", "climorder_x")
            ),
            "Storage.lease_next (the worker's look)": lambda: storage.lease_next("bench"),
            "Storage.next_delivery_at (the worker's wake-up)": storage.next_delivery_at,
        }
        lines = []
        for title, call in calls.items():
            statements: list[str] = []
            storage.conn.set_trace_callback(statements.append)
            try:
                call()
            finally:
                storage.conn.set_trace_callback(None)
            lines.append(f"  {title}")
            for sql in statements[:1]:
                plan = storage.conn.execute("EXPLAIN QUERY PLAN " + sql).fetchall()
                lines += [f"    {row[3]}" for row in plan]
        return lines
    finally:
        storage.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 vs 20,000 rows")
    parser.add_argument("--repeat", type=int, default=None, help="timed calls per size (200)")
    args = parser.parse_args(argv)
    sizes = (BASELINE, 20_000) if args.quick else (BASELINE, 10_000, 100_000)
    repeat = args.repeat if args.repeat is not None else (100 if args.quick else 200)
    if repeat < 1:
        parser.error("--repeat must be at least 1")

    print(f"bench/outbox.py: {machine()}")
    print(f"  outbox sizes {', '.join(f'{s:,}' for s in sizes)}; {repeat} timed calls each")
    workdir = Path(tempfile.mkdtemp(prefix="climate-bot-bench-outbox-"))
    results: dict[str, dict[int, float]] = {"receive": {}, "wake": {}}
    try:
        for size in sizes:
            results["receive"][size] = statistics.median(time_receive(workdir, size, repeat))
            results["wake"][size] = statistics.median(time_wake(workdir, size, repeat))
            print(f"  {size:>7,} rows done")
        plans = query_plans(workdir / f"receive-{sizes[-1]}.db")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print()
    labels = {
        "receive": "record_event, new order   (N delivered rows in the outbox)",
        "wake": "worker wake-up, nothing due (N pending rows, one paced channel)",
    }
    print(f"  {'operation':<64} {'rows':>8} {'median ms':>10} {'ratio':>7}")
    for key, label in labels.items():
        for size in sizes:
            ms = results[key][size]
            ratio = ms / results[key][BASELINE]
            print(f"  {label:<64} {size:>8,} {ms:>10.3f} {ratio:>7.2f}")
    print()
    print(f"query plans (what ingest and the worker run against the outbox), {sizes[-1]:,} rows:")
    print("\n".join(plans))
    return 0


if __name__ == "__main__":
    sys.exit(main())
