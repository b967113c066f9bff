"""Bench: how fast does the bot acknowledge Stripe webhooks, next to a bare Flask route?

What it measures
----------------
The bot is started as in production, ``gunicorn -c gunicorn.conf.py app:app`` from the repo
(fake Slack and Stripe served by this process, a temporary ``DATABASE_PATH``), and beside it
``bench/bare_app.py``, a Flask app whose webhook route only answers 200. Both get the same
gunicorn flags on the command line (2 gthread workers x 8 threads, timeouts, access log to
stdout, no control socket), which override gunicorn.conf.py's identical values; the bare app
is started from ``bench/`` without the config file, whose start-up check needs the bot's
settings. A third server, ``split``, is the README's other layout: the bot's app without the
delivery worker and scheduler threads in its processes (``web_tier:app``, under the same
gunicorn flags) and beside it one ``climate-bot worker`` process on the same database, which
applies what the web processes record (their webhooks cannot wake it: it finds their events at
its next look, within a second, and applies them in batches). Its CPU columns count the worker
process too, and the web processes' share is printed apart: that share is what the receiving
path alone costs.

At concurrency 1, 16 and 64 the same signed ``climate.order.created`` events (each a new order,
distinct ids, signed before timing) are sent to every server over keep-alive loopback
connections, after a warm-up on other events. Each server is timed alone, three times per
concurrency (``--repeat``), the servers taking turns and each repeat starting with another one,
because this machine's speed drifts by 10-20 % from one second to the next: the figures printed
are the medians of the repeats (with the spread of req/s beside them). For each it prints
requests/s, p50 and p99 latency (request written -> answer read), and the CPU the server's
processes used per request (from /proc). Every answer must be HTTP 200 and every event must be
in the bot's database afterwards, or the bench exits 1.

How to read it
--------------
``ratio = req/s(bot) / req/s(bare)`` at the same concurrency, in the same run: what the receiving
path (signature check, JSON parse, one SQLite transaction that records the event, metrics, the
log line) leaves of gunicorn + Flask's own speed. Goal: >= 0.7 at every concurrency, and p99
under 50 ms at concurrency 16 (for ``bot``, the production layout). The delivery worker applies
what the webhooks recorded (the snapshot, the queued card) beside them: for ``bot`` and ``split``
the bench also prints the events applied per second over each phase, how many were left to apply
at its end and how long after it the last one was applied. Goal: >= 95 % applied by the end of
each phase, all within 5 s after it.
``--seconds 30`` sizes each phase to last at least 30 s on the bare app.

The ``CPU`` columns (CPU ms/request of bare / of the bot) are the steadier
figures: they do not depend on how the two CPUs were shared. Timings are informational: a
missed goal prints MISS and the exit code stays 0.

Each timed phase line also says how its connections fell on the server's two workers. The
kernel hands a new connection to whichever worker accepts first and a worker keeps its keep-alive
connections for the whole phase, so a phase can land 16+0: one process then does all the work and
any server's req/s drops (halves, on this machine), which is much of the spread between repeats.

The load generator is Python in this process, on the same 2 CPUs: it competes with the server
for CPU, more so against the faster bare app, which therefore flatters the ratio a little. It is
the same lean generator for all (harness.py: asyncio, pre-built requests); its CPU use is shown.

Every event queues a card for the one channel, and the bot posts at most one message per second
per channel, so the outbox grows during the run (its size is printed after each phase): the
later phases measure a receiver whose outbox has a backlog, as after a real burst.

Usage: ``.venv/bin/python bench/ingest.py [--quick] [--requests N] [--repeat N] [--time-limit S]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from harness import (
    BENCH,
    BOT_TOKEN,
    BOT_VARIABLES,
    CLIMATE_BOT,
    GUNICORN,
    REPO,
    STRIPE_KEY,
    BenchError,
    Children,
    LoadResult,
    bot_environment,
    connections_per_process,
    cpu_seconds,
    descendants,
    drive,
    free_port,
    get_json,
    machine,
    signed_order_events,
    wait_until_serving,
)

from bot.sandbox.slack import FakeSlack
from bot.sandbox.stripe import FakeStripe

CONCURRENCIES = (1, 16, 64)
FULL_REQUESTS = {1: 1_000, 16: 5_000, 64: 5_000}
QUICK_REQUESTS = {1: 200, 16: 1_000, 64: 1_000}
GOAL_RATIO = 0.7
GOAL_APPLIED_SHARE = 0.95  # of a phase's acknowledged events, applied by its end
GOAL_DRAINED_SECONDS = 5.0  # and every one of them within this after it
GOAL_P99_MS = 50.0
GOAL_P99_CONCURRENCY = 16
APPLYING = ("bot", "split")  # the layouts of the bot, each applying what it acknowledges


def gunicorn_flags(port: int) -> list[str]:
    """The production settings of gunicorn.conf.py, spelled out so both servers get the same."""
    return [
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "2",
        "--worker-class",
        "gthread",
        "--threads",
        "8",
        "--timeout",
        "30",
        "--graceful-timeout",
        "10",
        "--access-logfile",
        "-",
        "--no-control-socket",
    ]


@dataclass
class Server:
    """One gunicorn under test."""

    name: str
    port: int
    pid: int
    database: Path | None = None  # the bot's, to check that every acked event was recorded
    sent: int = 0
    worker_pid: int | None = None  # the `climate-bot worker` process beside it (split)


@dataclass
class Phase:
    """One server at one concurrency."""

    server: str
    concurrency: int
    load: LoadResult
    server_cpu: float  # CPU seconds of the server's processes during the timed run
    web_cpu: float  # of which its web (gunicorn) processes
    others_cpu: float  # CPU seconds of the other (idle) servers meanwhile
    split: tuple[int, ...]  # the timed connections each worker accepted, most first
    outbox_pending: int | None = None
    applied: int | None = None  # the bot's: events of the phase applied by its end
    backlog: int | None = None  # events of the phase still to apply at its end
    drained_after: float | None = None  # seconds after the end until the last was applied

    def cpu_ms_per_request(self, seconds: float) -> float:
        return seconds * 1000 / max(1, len(self.load.ok))


def run_phase(
    server: Server,
    others: list[Server],
    concurrency: int,
    requests: list[bytes],
    warmup: int,
    time_limit: float,
) -> Phase:
    """Warm up on the first `warmup` requests, then time the rest."""
    warm = drive(server.port, requests[:warmup], concurrency=concurrency, time_limit=time_limit)
    if warm.errors:
        raise BenchError(f"{server.name} warm-up: {warm.errors} failed requests {warm.failures}")
    web = descendants(server.pid)
    mine = web + ([server.worker_pid] if server.worker_pid else [])
    theirs = [pid for other in others for pid in _processes(other)]
    cpu_mine, cpu_web, cpu_theirs = cpu_seconds(mine), cpu_seconds(web), cpu_seconds(theirs)
    split: list[int] = []

    def accepted() -> None:
        """Which worker took each connection: the kernel hands them to whichever accepts first,
        and a worker keeps its keep-alive connections for the whole phase."""
        deadline = time.monotonic() + 2
        while True:
            split[:] = sorted(connections_per_process(web[1:], server.port), reverse=True)
            if sum(split) >= concurrency or time.monotonic() > deadline:
                return
            time.sleep(0.005)

    started = time.time()  # the warm-up's events were all received before this
    load = drive(
        server.port,
        requests[warmup:],
        concurrency=concurrency,
        time_limit=time_limit,
        on_connected=accepted,
    )
    ended = time.time()
    server_cpu, others_cpu = cpu_seconds(mine) - cpu_mine, cpu_seconds(theirs) - cpu_theirs
    web_cpu = cpu_seconds(web) - cpu_web
    server.sent += len(warm.ok) + len(load.ok)
    if load.errors:
        statuses = sorted({s.status for s in load.done if s.status != 200})
        raise BenchError(
            f"{server.name} at concurrency {concurrency}: {load.errors} of {len(load.samples)}"
            f" requests failed or were not sent in {time_limit:.0f} s (statuses {statuses})"
            f" {load.failures}"
        )
    phase = Phase(server.name, concurrency, load, server_cpu, web_cpu, others_cpu, tuple(split))
    if server.database is not None:
        phase.applied, phase.backlog = applied_by(server.database, started, ended, len(load.ok))
        phase.drained_after = wait_until_applied(server.database, ended)
    if server.database is not None:
        health = get_json(f"http://127.0.0.1:{server.port}/healthz")
        phase.outbox_pending = health["outbox"].get("pending", 0)
    return phase


def _processes(server: Server) -> list[int]:
    return descendants(server.pid) + ([server.worker_pid] if server.worker_pid else [])


def _unapplied(conn: sqlite3.Connection) -> int:
    """Events recorded and not yet applied (none, before the webhook only recorded)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
    if "applied_at" not in columns:
        return 0
    return conn.execute("SELECT count(*) FROM events WHERE applied_at IS NULL").fetchone()[0]


def applied_by(database: Path, started: float, ended: float, sent: int) -> tuple[int, int]:
    """Of the `sent` events of a phase timed from `started` to `ended`, how many were applied by
    its end, and how many events were still to apply (read right after the phase)."""
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
        if "applied_at" not in columns:  # a version that applied each event as it recorded it
            return sent, 0
        late = conn.execute(
            "SELECT count(*) FROM events WHERE received_at >= ?"
            " AND (applied_at IS NULL OR applied_at > ?)",
            (started, ended),
        ).fetchone()[0]
        return sent - late, _unapplied(conn)
    finally:
        conn.close()


def wait_until_applied(database: Path, ended: float, limit: float = 30.0) -> float | None:
    """Seconds from the phase's end until nothing was left to apply (None: not within `limit`)."""
    while time.time() - ended < limit:
        conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
        try:
            if _unapplied(conn) == 0:
                return max(0.0, time.time() - ended)
        finally:
            conn.close()
        time.sleep(0.05)  # polling the database, not waiting for behaviour
    return None


@dataclass
class Summary:
    """One server at one concurrency over the repeats: the median of each figure."""

    server: str
    concurrency: int
    requests: int
    throughput: float
    p50: float
    p99: float
    server_cpu_ms: float
    web_cpu_ms: float  # of which the web processes'
    generator_cpu_ms: float
    others_cpu: float
    outbox_pending: int | None
    spread: tuple[float, float]  # lowest and highest req/s of the repeats
    wall: float  # seconds of the median phase
    applied_share: float | None  # of the acknowledged events, applied by the phase's end
    applied_rate: float | None  # events applied per second over the phase
    backlog: int | None  # left to apply at the end (the largest of the repeats)
    drained_after: float | None  # the slowest repeat's seconds until all were applied


def summarise(phases: list[Phase]) -> dict[tuple[str, int], Summary]:
    grouped: dict[tuple[str, int], list[Phase]] = {}
    for p in phases:
        grouped.setdefault((p.server, p.concurrency), []).append(p)
    out = {}
    for (server, c), group in grouped.items():
        med = statistics.median
        rates = [p.load.throughput for p in group]
        out[(server, c)] = Summary(
            server,
            c,
            sum(len(p.load.ok) for p in group),
            med(rates),
            med(p.load.latency_ms(50) for p in group),
            med(p.load.latency_ms(99) for p in group),
            med(p.cpu_ms_per_request(p.server_cpu) for p in group),
            med(p.cpu_ms_per_request(p.web_cpu) for p in group),
            med(p.cpu_ms_per_request(p.load.generator_cpu) for p in group),
            sum(p.others_cpu for p in group),
            group[-1].outbox_pending,
            (min(rates), max(rates)),
            med(p.load.wall for p in group),
            *_applying(group),
        )
    return out


def _applying(group: list[Phase]) -> tuple[float | None, float | None, int | None, float | None]:
    if any(p.applied is None for p in group):
        return None, None, None, None
    shares = [p.applied / max(1, len(p.load.ok)) for p in group]
    rates = [p.applied / max(1e-9, p.load.wall) for p in group]
    drained = [p.drained_after for p in group]
    slowest = None if None in drained else max(d for d in drained if d is not None)
    return (
        statistics.median(shares),
        statistics.median(rates),
        max(p.backlog or 0 for p in group),
        slowest,
    )


def report(phases: list[Phase], concurrencies: tuple[int, ...]) -> None:
    by_key = summarise(phases)
    servers = list(dict.fromkeys(p.server for p in phases))
    print()
    print(
        f"{'conc':>4}  {'server':<8} {'requests':>8} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8}"
        f" {'server CPU':>11} {'of it web':>10} {'generator CPU':>14}"
    )
    print(
        f"{'':>4}  {'':<8} {'':>8} {'':>7} {'':>8} {'':>8} {'ms/req':>11} {'ms/req':>10}"
        f" {'ms/req':>14}   req/s of each repeat"
    )
    for c in concurrencies:
        for server in servers:
            p = by_key[(server, c)]
            low, high = p.spread
            print(
                f"{c:>4}  {server:<8} {p.requests:>8,} {p.throughput:>7.0f}"
                f" {p.p50:>8.2f} {p.p99:>8.2f} {p.server_cpu_ms:>11.3f} {p.web_cpu_ms:>10.3f}"
                f" {p.generator_cpu_ms:>14.3f}   {low:.0f}-{high:.0f}"
            )
    print()
    print(
        f"ratio req/s(server) / req/s(bare)   goal >= {GOAL_RATIO}"
        "   (and CPU/req bare / CPU/req of the server, of its web processes)"
    )
    print(
        f"  {'conc':>4}  {'bot':>5}  {'verdict':<7} {'CPU':>5} {'web':>5}"
        f"   {'split':>5}  {'verdict':<7} {'CPU':>5} {'web':>5}"
    )
    for c in concurrencies:
        bare = by_key[("bare", c)]
        cells = []
        for server in APPLYING:
            p = by_key[(server, c)]
            ratio = p.throughput / bare.throughput
            cells.append(
                f"{ratio:>5.2f}  {'PASS' if ratio >= GOAL_RATIO else 'MISS':<7}"
                f" {bare.server_cpu_ms / p.server_cpu_ms:>5.2f}"
                f" {bare.server_cpu_ms / p.web_cpu_ms:>5.2f}"
            )
        print(f"  {c:>4}  " + "   ".join(cells))
    if GOAL_P99_CONCURRENCY in concurrencies:
        print()
        for server in APPLYING:
            p99 = by_key[(server, GOAL_P99_CONCURRENCY)].p99
            verdict = "PASS" if p99 < GOAL_P99_MS else "MISS"
            print(
                f"{server} p99 ack at concurrency {GOAL_P99_CONCURRENCY}: {p99:.2f} ms"
                f"   goal < {GOAL_P99_MS:.0f} ms   {verdict}"
            )
    print()
    print(
        f"applying what was acknowledged: goal >= {GOAL_APPLIED_SHARE:.0%} applied by the end of"
        f" each phase, all within {GOAL_DRAINED_SECONDS:.0f} s after it"
    )
    print(
        f"  {'conc':>4}  {'server':<8} {'phase s':>7} {'acked/s':>8} {'applied/s':>9}"
        f" {'applied by end':>14} {'left at end':>11} {'all applied after':>17}  verdict"
    )
    for c in concurrencies:
        for server in APPLYING:
            p = by_key[(server, c)]
            if p.applied_share is None:
                continue
            drained = "never" if p.drained_after is None else f"{p.drained_after:.2f} s"
            ok = (
                p.applied_share >= GOAL_APPLIED_SHARE
                and p.drained_after is not None
                and p.drained_after <= GOAL_DRAINED_SECONDS
            )
            print(
                f"  {c:>4}  {server:<8} {p.wall:>7.1f} {p.throughput:>8.0f}"
                f" {p.applied_rate:>9.0f} {p.applied_share:>14.1%} {p.backlog:>11,}"
                f" {drained:>17}  {'PASS' if ok else 'MISS'}"
            )
    print()
    print("cards waiting in the outbox after each phase (one channel; the bot posts <= 1/s):")
    for c in concurrencies:
        cells = [f"{s} {by_key[(s, c)].outbox_pending:,}" for s in APPLYING]
        print(f"  concurrency {c:>2}: " + ", ".join(cells))
    print()
    print("CPU seconds the idle servers used while the others were timed (background threads):")
    for c in concurrencies:
        cells = [f"during {s} {by_key[(s, c)].others_cpu:.2f} s" for s in servers]
        print(f"  concurrency {c:>2}: " + ", ".join(cells))


def calibrate(bare: Server, seconds: float, time_limit: float) -> dict[int, int]:
    """Requests per phase at each concurrency that keep the bare app busy `seconds` (the bot,
    slower, takes longer on the same requests)."""
    counts = {}
    for c in CONCURRENCIES:
        # A probe of a few seconds, after a warm-up: a short cold one ran at 60 % of the speed
        # the phase then had, and the bare app's phase at concurrency 1 lasted 20 s, not 30.
        warm = [e.request for e in signed_order_events(200 + 8 * c, tag=f"calw{c}x")]
        drive(bare.port, warm, concurrency=c, time_limit=time_limit)
        probe = [e.request for e in signed_order_events(3000, tag=f"cal{c}x")]
        load = drive(bare.port, probe, concurrency=c, time_limit=time_limit)
        counts[c] = int(load.throughput * seconds * 1.2) + 1
    return counts


def count_events(database: Path) -> int:
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="200/1,000/1,000 requests instead of 1,000/5,000/5,000"
    )
    parser.add_argument("--requests", type=int, default=None, help="timed requests per phase")
    parser.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="size each phase to last at least this long on the bare app (measured first)",
    )
    parser.add_argument(
        "--time-limit", type=float, default=120.0, help="seconds allowed per timed phase"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="timed runs per server and concurrency, interleaved; medians are reported",
    )
    args = parser.parse_args(argv)
    counts = dict(QUICK_REQUESTS if args.quick else FULL_REQUESTS)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.requests is not None:
        if args.requests < 1:
            parser.error("--requests must be at least 1")
        counts = {c: args.requests for c in CONCURRENCIES}

    print(f"bench/ingest.py: {machine()}")
    print(
        "  requests per phase: "
        + ", ".join(f"{counts[c]:,} at concurrency {c}" for c in CONCURRENCIES)
        + f"; {args.repeat} phases per server and concurrency, interleaved"
    )
    print(
        "  note: the load generator is Python in this process and competes with the servers for"
        " the same CPUs;\n  it is the same generator for every server (its CPU use is shown)."
    )
    workdir = Path(tempfile.mkdtemp(prefix="climate-bot-bench-ingest-"))
    phases: list[Phase] = []
    try:
        with (
            Children() as children,
            FakeSlack(bot_token=BOT_TOKEN) as slack,
            FakeStripe(api_key=STRIPE_KEY) as stripe,
        ):
            servers = []
            # (name, gunicorn arguments before the flags, app, cwd, is the bot, with a worker)
            layouts = (
                ("bare", [], "bare_app:app", BENCH, False, False),
                ("bot", ["-c", "gunicorn.conf.py"], "app:app", REPO, True, False),
                ("split", ["-c", "gunicorn.conf.py"], "web_tier:app", REPO, True, True),
            )
            for name, before, module, cwd, is_bot, with_worker in layouts:
                port = free_port()
                database = workdir / f"{name}.db" if is_bot else None
                if database is not None:
                    env = bot_environment(
                        database=database,
                        slack_api_url=slack.api_url,
                        stripe_api_base=stripe.url,
                        port=port,
                        workdir=workdir,
                    )
                else:
                    env = {k: v for k, v in os.environ.items() if k not in BOT_VARIABLES}
                log = workdir / f"{name}.log"
                argv_ = [GUNICORN, *before, *gunicorn_flags(port), module]
                proc = children.start(argv_, env=env, cwd=cwd, log=log)
                wait_until_serving(f"http://127.0.0.1:{port}/healthz", proc, log=log)
                server = Server(name, port, proc.pid, database)
                if with_worker:
                    worker_log = workdir / f"{name}-worker.log"
                    worker = children.start(
                        [CLIMATE_BOT, "worker"], env=env, cwd=cwd, log=worker_log
                    )
                    server.worker_pid = worker.pid
                servers.append(server)
                print(
                    f"  {name:<8} gunicorn {module} on :{port}, pids {descendants(proc.pid)}"
                    + (f", climate-bot worker {server.worker_pid}" if with_worker else "")
                )
            if args.seconds is not None:
                counts = calibrate(servers[0], args.seconds, args.time_limit)
                print(
                    f"  requests per phase, for {args.seconds:.0f} s on the bare app: "
                    + ", ".join(f"{counts[c]:,} at concurrency {c}" for c in CONCURRENCIES)
                )
            for c in CONCURRENCIES:
                warmup = max(50, 4 * c)
                for repeat in range(args.repeat):
                    events = signed_order_events(warmup + counts[c], tag=f"c{c}r{repeat}x")
                    requests = [e.request for e in events]
                    # Each repeat starts with another server, so none is always timed first.
                    turn = repeat % len(servers)
                    for server in servers[turn:] + servers[:turn]:
                        others = [s for s in servers if s is not server]
                        phase = run_phase(server, others, c, requests, warmup, args.time_limit)
                        phases.append(phase)
                        print(
                            f"  concurrency {c:>2} {server.name:<8} #{repeat + 1}:"
                            f" {len(phase.load.ok):,} requests in {phase.load.wall:.2f} s,"
                            f" connections per worker {'+'.join(map(str, phase.split))}"
                        )
            for server in servers:
                if server.database is not None:
                    recorded = count_events(server.database)
                    if recorded != server.sent:
                        raise BenchError(
                            f"{server.name} acknowledged {server.sent:,} events but recorded"
                            f" {recorded:,}"
                        )
            print("  every acknowledged event is in the bot's database")
    except BenchError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: the bot's processes were stopped", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    report(phases, CONCURRENCIES)
    return 0


if __name__ == "__main__":
    sys.exit(main())
