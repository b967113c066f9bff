"""Bench: how much memory does `python app.py` hold, idle and after 10,000 events?

What it measures
----------------
The bot runs as ``python app.py`` (web server, delivery worker and scheduler in one process), a
child process with a fresh database, against a FakeSlack (pacing not enforced) and a FakeStripe
served by this process. Its resident size (``VmRSS`` in ``/proc/PID/status``) is read:

- idle, a few seconds after it started serving;
- warm, after the first 1,000 events (``--quick``: 200) were received and their cards delivered;
- after all 10,000 events (``--quick``: 2,000), each a signed ``climate.order.created`` about a
  new order, sent as fast as the bot acknowledges them (4 connections), once the outbox has
  drained (``/healthz`` outbox counts; bounded by ``--time-limit``), and again after a pause.

The events come from distinct Connect accounts that a ``ROUTING_FILE`` sends to 200 channels:
the bot posts at most one message per second per channel, and 10,000 cards in one channel would
take close to three hours to drain. ``VmHWM`` (the peak) is shown too.

How to read it
--------------
Goals: resident size after the events under 150 MB, and growth over idle under 20 MB. The
growth over the warm figure separates what keeps growing with the number of events (a leak, or
a cache without a bound) from one-off start-up costs (imports, the first rendering, the
connection pools). The drain rate (cards per second) is the delivery worker's throughput with
no pacing in the way. Figures are informational: the exit code is 1 only when an event was
refused, the bot died, or the outbox did not drain in time.

Usage: ``.venv/bin/python bench/memory.py [--quick] [--events N] [--time-limit S]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import (
    BOT_TOKEN,
    STRIPE_KEY,
    BenchError,
    Children,
    account_for_channel,
    add_bench_channels,
    drive,
    machine,
    open_files,
    signed_order_events,
    start_app_py,
    status_kib,
    wait_for_drain,
    write_routing_file,
)

from bot.sandbox.slack import FakeSlack
from bot.sandbox.stripe import FakeStripe

CHANNELS = 200
SENDERS = 4
CHUNK = 500  # events sent between two looks at the resident size
SETTLE_SECONDS = 3.0
GOAL_RSS_MB = 150.0
GOAL_GROWTH_MB = 20.0


@dataclass
class Reading:
    label: str
    events: int
    rss_kib: int
    hwm_kib: int
    fds: int  # open file descriptors
    database_fds: int  # of which on the SQLite files (db, -wal, -shm)
    threads: int


def mib(kib: int) -> float:
    return kib / 1024


def read(label: str, events: int, pid: int, database: Path) -> Reading:
    return Reading(
        label,
        events,
        status_kib(pid, "VmRSS"),
        status_kib(pid, "VmHWM"),
        open_files(pid),
        open_files(pid, str(database)),
        len(os.listdir(f"/proc/{pid}/task")),
    )


def send(port: int, count: int, tag: str, time_limit: float) -> float:
    """Send `count` new-order events as fast as they are acknowledged; return the seconds."""
    events = signed_order_events(
        count, tag=tag, account_for=lambda i: account_for_channel(i % CHANNELS)
    )
    load = drive(port, [e.request for e in events], concurrency=SENDERS, time_limit=time_limit)
    if load.errors:
        statuses = sorted({s.status for s in load.done if s.status != 200})
        raise BenchError(
            f"{load.errors} of {count} events refused or not sent (statuses {statuses})"
            f" {load.failures}"
        )
    return load.wall


def drain(port: int, proc: Any, log: Path, deadline: float, limit: float) -> tuple[float, int]:
    """Wait for the outbox to drain; return (seconds waited, rows delivered in all)."""
    started = time.monotonic()
    drained, counts = wait_for_drain(
        port, proc, timeout=max(1.0, deadline - time.monotonic()), log=log
    )
    if not drained:
        raise BenchError(f"the outbox did not drain within --time-limit {limit:.0f} s: {counts}")
    if counts.get("failed"):
        raise BenchError(f"deliveries failed: {counts}")
    return time.monotonic() - started, counts.get("done", 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 events instead of 10,000")
    parser.add_argument("--events", type=int, default=None, help="events to send in all")
    parser.add_argument(
        "--time-limit", type=float, default=400.0, help="seconds allowed for sending and draining"
    )
    parser.add_argument(
        "--max-rss",
        type=float,
        default=1024.0,
        help="MB: stop sending (and report) when the bot grows past this",
    )
    args = parser.parse_args(argv)
    total = args.events if args.events is not None else (2_000 if args.quick else 10_000)
    if total < 2:
        parser.error("--events must be at least 2")
    warm = max(1, total // 10)

    print(f"bench/memory.py: {machine()}")
    print(
        f"  {total:,} events ({warm:,} to warm up), spread over {CHANNELS} channels;"
        " resident size of `python app.py` from /proc/PID/status"
    )
    workdir = Path(tempfile.mkdtemp(prefix="climate-bot-bench-memory-"))
    database = workdir / "memory.db"
    readings: list[Reading] = []
    stopped_early = False
    deadline = time.monotonic() + args.time_limit
    try:
        with (
            Children() as children,
            FakeSlack(bot_token=BOT_TOKEN) as slack,
            FakeStripe(api_key=STRIPE_KEY) as stripe,
        ):
            routing = write_routing_file(
                workdir / "routing.toml", add_bench_channels(slack, CHANNELS)
            )
            proc, port, log = start_app_py(
                children,
                workdir=workdir,
                name="memory",
                slack_api_url=slack.api_url,
                stripe_api_base=stripe.url,
                routing_file=routing,
            )
            time.sleep(SETTLE_SECONDS)
            readings.append(read("idle", 0, proc.pid, database))

            seconds = send(port, warm, "warm", deadline - time.monotonic())
            waited, _done = drain(port, proc, log, deadline, args.time_limit)
            print(
                f"  warm-up: {warm:,} events sent in {seconds:.1f} s, drained {waited:.1f} s later"
            )
            readings.append(read("warm", warm, proc.pid, database))

            sent, sending, chunk = warm, 0.0, 0
            while sent < total:
                count = min(CHUNK, total - sent)
                sending += send(port, count, f"m{chunk}x", deadline - time.monotonic())
                sent, chunk = sent + count, chunk + 1
                if mib(status_kib(proc.pid, "VmRSS")) > args.max_rss:
                    stopped_early = True
                    readings.append(read("at the guard", sent, proc.pid, database))
                    break
            waited, delivered = drain(port, proc, log, deadline, args.time_limit)
            rate = (sent - warm) / (sending + waited)
            print(
                f"  {sent - warm:,} more events sent in {sending:.1f} s"
                f" ({(sent - warm) / sending:,.0f}/s); outbox drained {waited:.1f} s after the"
                f" last ack ({rate:,.0f} cards/s from first event to drained)"
            )
            readings.append(read("after, drained", sent, proc.pid, database))
            time.sleep(SETTLE_SECONDS)
            readings.append(read("after, settled", sent, proc.pid, database))
            cards = len(slack.calls_to("chat.postMessage"))
            if cards != sent or delivered != sent:
                raise BenchError(
                    f"{sent:,} events but {cards:,} chat.postMessage calls, {delivered:,} delivered"
                )
    except BenchError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: the bot's processes were stopped", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    report(readings, stopped_early, args.max_rss, total)
    return 0


def report(readings: list[Reading], stopped_early: bool, max_rss: float, total: int) -> None:
    idle, warm, final = readings[0], readings[1], readings[-1]
    print()
    print(
        f"  {'when':<16} {'events':>7} {'VmRSS MB':>9} {'VmHWM MB':>9} {'open fds':>9}"
        f" {'on the db':>10} {'threads':>8}"
    )
    for r in readings:
        print(
            f"  {r.label:<16} {r.events:>7,} {mib(r.rss_kib):>9.1f} {mib(r.hwm_kib):>9.1f}"
            f" {r.fds:>9,} {r.database_fds:>10,} {r.threads:>8}"
        )
    growth = mib(final.rss_kib - idle.rss_kib)
    print()
    if stopped_early:
        print(
            f"stopped sending at {final.events:,} of {total:,} events: the bot grew past"
            f" --max-rss {max_rss:.0f} MB"
        )
    ok = not stopped_early and mib(final.rss_kib) < GOAL_RSS_MB
    print(
        f"resident after {final.events:,} events: {mib(final.rss_kib):.1f} MB"
        f"   goal < {GOAL_RSS_MB:.0f} MB   {'PASS' if ok else 'MISS'}"
    )
    verdict = "PASS" if not stopped_early and growth < GOAL_GROWTH_MB else "MISS"
    print(f"growth over idle: {growth:+.1f} MB   goal < {GOAL_GROWTH_MB:.0f} MB   {verdict}")
    per_event = (final.rss_kib - warm.rss_kib) / max(1, final.events - warm.events)
    print(
        f"growth over warm ({warm.events:,} events): {mib(final.rss_kib - warm.rss_kib):+.1f} MB"
        f" for {final.events - warm.events:,} more events ({per_event:.1f} KiB per event);"
        f" open fds on the database {warm.database_fds:,} -> {final.database_fds:,}"
    )


if __name__ == "__main__":
    sys.exit(main())
