"""Bench: do `/climate orders` and `/climate pending` stay fast as the orders table grows?

What it measures
----------------
For a small and a large database (1,000 and 100,000 orders; ``--quick``: 1,000 and 20,000) it
fills a fresh SQLite file through ``Storage.save_order`` (the app's own write path), serves the
real Flask app (``create_app``) on loopback with werkzeug, and times signed slash-command POSTs
to ``/slack/events`` end to end with ``requests``: signature check, Bolt dispatch, the ack, the
database query, rendering, and the answer at the fake's response_url (``orders`` and ``pending``
ask Slack for card links, so they acknowledge first and answer there; ``help`` answers in the
ack). Each command is sent ``--repeat`` times (interleaved, after a warm-up); every answer must be
HTTP 200 and name the order the command should list first, or the bench exits non-zero.

How to read it
--------------
The first table gives the median and p95 wall time per request. The ratio is
``median(large) / median(small)`` for the same command in the same run, so machine speed cancels
out: about 1.0 means the command does not grow with the table (index range scans, a fixed page),
and the goal is under 1.5. A ratio near size(large)/size(small) would mean a scan per request.
``help`` never touches the database: it is the framework's floor, shown for scale.

End to end, that floor is most of the time: Bolt waits for a listener's ``ack()`` by polling
every 10 ms, so a handler that takes 1 ms and one that takes 9 ms look alike over HTTP. The
second table therefore times the same commands in process on the same database —
``Commands.answer()`` (query and rendering: what the listener runs after the ack) and the
storage verb alone — and their ratios are printed beside the end-to-end one. They are the
sensitive columns; the goal verdict is on the end-to-end ratio.

The query plans at the end show which index each query uses; ``SCAN orders`` without ``USING
INDEX``, or ``USE TEMP B-TREE FOR ORDER BY``, would be the thing to fix. Timings are
informational: the exit code is 0 whether the goal is met or missed, and 1 only when a request
failed or an answer did not list the order it should list first.

Usage: ``.venv/bin/python bench/slash.py [--quick] [--repeat N] [--seed N]``
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import sqlite3
import statistics
import string
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from werkzeug.serving import make_server

from bot.commands import Commands
from bot.i18n import use_locale
from bot.jobs import CardJob
from bot.sandbox import stripe_objects
from bot.sandbox.bot_env import (
    BOT_TOKEN,
    CHANNEL,
    SIGNING_SECRET,
    STRIPE_KEY,
    fake_bot_env,
)
from bot.sandbox.slack import RESPONSE_URL_METHOD, FakeSlack
from bot.sandbox.slack_requests import sign_slack_request, slash_command_body
from bot.sandbox.stripe import FakeStripe
from bot.settings import Settings, load_settings
from bot.slack_gateway import SlackGateway
from bot.storage import Storage, card_key
from bot.stripe_gateway import StripeGateway
from bot.web import create_app

DAY = 86_400
DECISION_WINDOW = 30 * DAY
GOAL_RATIO = 1.5
WARMUP = 5
EXTRA_CARDS = 200  # cards for random orders besides those the commands show

# Share of orders in each status; pending delays are drawn from the non-terminal ones.
STATUS_MIX = (("delivered", 0.45), ("confirmed", 0.35), ("canceled", 0.10), ("open", 0.10))
PENDING_SHARE = 0.10  # of all orders: a delay whose decision window is still open
PAST_DELAY_SHARE = 0.05  # of all orders: a delay whose window closed long ago

# The commands timed, in the order they are sent each round; `help` is the no-database floor.
COMMANDS = ("orders", "orders delivered", "pending", "help")
GOAL_COMMANDS = ("orders", "orders delivered", "pending")

# Equivalents of the SQL in bot/storage/orders.py (list_orders, pending_decisions), EXPLAIN only.
PLANS: dict[str, tuple[str, tuple[Any, ...]]] = {
    "orders  (Storage.list_orders())": (
        "SELECT * FROM orders ORDER BY created DESC, id DESC LIMIT ?",
        (11,),
    ),
    "orders delivered  (Storage.list_orders(status=...))": (
        "SELECT * FROM orders WHERE status = ? ORDER BY created DESC, id DESC LIMIT ?",
        ("delivered", 11),
    ),
    "orders, next page  (Storage.list_orders(before=...))": (
        "SELECT * FROM orders WHERE status = ? AND (created, id) < (?, ?)"
        " ORDER BY created DESC, id DESC LIMIT ?",
        ("delivered", 1_700_000_000, "climorder_x", 11),
    ),
    "pending  (Storage.pending_decisions())": (
        "SELECT * FROM orders WHERE window_closed = 0 AND decision IS NULL"
        " AND decision_deadline > ? AND status NOT IN ('delivered', 'canceled')"
        " ORDER BY decision_deadline LIMIT ?",
        (1_700_000_000, 50),
    ),
}


@dataclass
class Dataset:
    """What was put in the database, and what each command must therefore show first."""

    size: int
    path: Path
    fill_seconds: float = 0.0
    cards_seconds: float = 0.0
    pending: int = 0
    cards: int = 0
    expected_first: dict[str, str] = field(default_factory=dict)


@dataclass
class Timing:
    """Wall times of one command on one database, measured at one layer."""

    size: int
    command: str
    samples_ms: list[float]
    layer: str = "http"  # http: end to end; handler: Commands.answer(); query: the storage verb

    @property
    def median(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def p95(self) -> float:
        ordered = sorted(self.samples_ms)
        return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


class BenchFailure(Exception):
    """A request failed or answered wrongly: the timings would mean nothing."""


# -- filling the database ----------------------------------------------------------------------


def _templates() -> dict[str, dict[str, Any]]:
    """One factory-built order per status; every bench order is a shallow copy of one of them."""
    return {status: stripe_objects.order(status) for status, _share in STATUS_MIX}


def _ids(rng: random.Random, n: int) -> list[str]:
    alphabet = string.ascii_letters + string.digits
    ids: set[str] = set()
    while len(ids) < n:
        ids.add("climorder_" + "".join(rng.choices(alphabet, k=24)))
    return list(ids)


def fill(path: Path, size: int, *, now: int, seed: int) -> Dataset:
    """Create a database of `size` orders at `path` through `Storage.save_order`, in one
    transaction, plus cards for the orders the commands show (through the outbox verbs)."""
    rng = random.Random(seed + size)
    templates = _templates()
    statuses = rng.choices([s for s, _w in STATUS_MIX], weights=[w for _s, w in STATUS_MIX], k=size)
    # Unique creation times over the last three years, so "newest first" has one right answer.
    span = 3 * 365 * DAY
    created = [now - span + offset for offset in rng.sample(range(span - DAY), size)]
    ids = _ids(rng, size)

    open_like = [i for i, s in enumerate(statuses) if s in ("confirmed", "open")]
    n_pending = min(len(open_like), round(size * PENDING_SHARE))
    pending_idx = set(rng.sample(open_like, n_pending))
    # A pending delay happened in the last 29 days (unique seconds), so its deadline is ahead.
    delay_ages = rng.sample(range(DAY, DECISION_WINDOW - 60), n_pending)
    delay_at = dict(zip(sorted(pending_idx), (now - age for age in delay_ages), strict=True))
    rest = [i for i in range(size) if i not in pending_idx]
    for i in rng.sample(rest, min(len(rest), round(size * PAST_DELAY_SHARE))):
        # An old delay: its window closed long ago (the scheduler closes it below).
        delay_at[i] = max(created[i] + DAY, now - rng.randrange(60 * DAY, 700 * DAY))

    storage = Storage(path)
    started = time.perf_counter()
    with storage.transaction():
        for i in range(size):
            status = statuses[i]
            order = dict(templates[status])
            order["id"] = ids[i]
            order["created"] = created[i]
            if order.get("confirmed_at") is not None:
                order["confirmed_at"] = created[i]
            if status == "canceled":
                order["canceled_at"] = created[i] + 3600
            if status == "delivered":
                order["delivered_at"] = created[i] + 30 * DAY
                order["certificate"] = f"https://climate.stripe.com/certificates/{ids[i]}"
            change = None
            deadline = None
            snapshot_created = created[i]
            if i in delay_at:
                at = snapshot_created = delay_at[i]
                old_year = order["expected_delivery_year"]
                order["delayed_at"] = at
                order["expected_delivery_year"] = old_year + 1
                change = {
                    "kind": "delayed",
                    "at": at,
                    "old_year": old_year,
                    "new_year": old_year + 1,
                }
                deadline = at + DECISION_WINDOW
            storage.save_order(
                order,
                account=None,
                snapshot_created=snapshot_created,
                snapshot_rank=1 if change else 0,
                headline_event="climate.order.delayed" if change else "climate.order.created",
                change=change,
                decision_deadline=deadline,
            )
        storage.close_expired_windows(now)
    fill_seconds = time.perf_counter() - started

    # What each command must list first, computed from the generated data (not the database).
    newest = sorted(range(size), key=lambda i: (created[i], ids[i]), reverse=True)
    delivered = [i for i in newest if statuses[i] == "delivered"]
    soonest = sorted(pending_idx, key=lambda i: delay_at[i])
    expected = {
        "orders": ids[newest[0]],
        "orders delivered": ids[delivered[0]],
        "pending": ids[soonest[0]],
    }

    # Cards (so answers carry card links, as in production) for every order the commands show,
    # plus a few random ones, posted through enqueue → lease_next → complete.
    shown = {*newest[:11], *delivered[:11], *soonest[:50]}
    shown.update(rng.sample(range(size), min(size, EXTRA_CARDS)))
    started = time.perf_counter()
    with storage.transaction():
        for i in shown:
            storage.enqueue(card_key("order", ids[i]), CardJob(), channel=CHANNEL)
    posted = 0
    while (row := storage.lease_next("bench", pace_seconds=0)) is not None:
        posted += 1
        storage.complete(row, card_channel=CHANNEL, ts=f"{now}.{posted:06d}")
    cards_seconds = time.perf_counter() - started
    storage.close()
    return Dataset(
        size=size,
        path=path,
        fill_seconds=fill_seconds,
        cards_seconds=cards_seconds,
        pending=n_pending,
        cards=posted,
        expected_first=expected,
    )


# -- serving and timing ------------------------------------------------------------------------


@contextmanager
def serve(database: Path) -> Iterator[tuple[str, FakeSlack, Settings]]:
    """The real app for `database` on a loopback port, with fake Slack and Stripe behind it."""
    with FakeSlack(bot_token=BOT_TOKEN) as fake_slack, FakeStripe(api_key=STRIPE_KEY) as fake:
        settings = load_settings(fake_bot_env(database, fake_slack.api_url, fake.url))
        app = create_app(settings)
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        bot = app.extensions["climate-bot"]
        try:
            yield f"http://127.0.0.1:{server.server_port}", fake_slack, settings
        finally:
            server.shutdown()
            thread.join(timeout=5)
            bot.stop_background()
            bot.storage.close()


def post_command(session: requests.Session, url: str, fake_slack: FakeSlack, text: str) -> str:
    """One signed `/climate <text>`; returns the answer (the ack's body, or what arrived at the
    response_url when the ack was empty) or raises BenchFailure."""
    response_url = fake_slack.new_response_url()
    body = slash_command_body(text=text, response_url=response_url)
    headers = sign_slack_request(body, SIGNING_SECRET)
    response = session.post(url + "/slack/events", data=body, headers=headers, timeout=30)
    if response.status_code != 200:
        raise BenchFailure(f"/climate {text}: HTTP {response.status_code}: {response.text[:300]}")
    if response.text.strip():
        return response.text
    hook = urllib.parse.urlsplit(response_url).path
    try:
        fake_slack.wait_for(lambda c: c.method == RESPONSE_URL_METHOD and c.path == hook)
    except AssertionError as exc:
        raise BenchFailure(f"/climate {text}: no answer at the response_url: {exc}") from None
    return json.dumps(fake_slack.responses(response_url))


def check(text: str, answer: str, expected_first: dict[str, str]) -> None:
    if text == "help":
        if "status <order_id>" not in answer:
            raise BenchFailure(f"/climate help did not answer the usage: {answer[:300]}")
        return
    wanted = expected_first[text]
    if wanted not in answer:
        raise BenchFailure(
            f"/climate {text}: answer lacks {wanted} (the order it should list first): "
            f"{answer[:300]}"
        )


def time_in_process(data: Dataset, settings: Settings, repeat: int, now: float) -> list[Timing]:
    """The same commands without HTTP or Bolt: `Commands.answer` (query + rendering, what the
    listener runs inside the ack) and the storage verb alone, on the same database."""
    storage = Storage(data.path)
    commands = Commands(
        storage,
        SlackGateway(settings.SLACK_BOT_TOKEN, settings.SLACK_API_URL),
        StripeGateway(settings.STRIPE_API_KEY, settings.STRIPE_API_BASE, timeout=2.0, retries=0),
    )
    queries = {
        "orders": lambda: storage.list_orders(limit=11),
        "orders delivered": lambda: storage.list_orders(status="delivered", limit=11),
        "pending": lambda: storage.pending_decisions(now),
        "help": lambda: None,
    }
    handler: dict[str, list[float]] = {text: [] for text in COMMANDS}
    query: dict[str, list[float]] = {text: [] for text in COMMANDS}
    try:
        with use_locale(settings.BOT_LOCALE):
            for round_ in range(WARMUP + repeat):
                for text in COMMANDS:
                    started = time.perf_counter()
                    answer = commands.answer(text)
                    elapsed = (time.perf_counter() - started) * 1000
                    check(text, answer.text + repr(answer.blocks), data.expected_first)
                    started = time.perf_counter()
                    queries[text]()
                    query_ms = (time.perf_counter() - started) * 1000
                    if round_ >= WARMUP:
                        handler[text].append(elapsed)
                        query[text].append(query_ms)
    finally:
        storage.close()
    return [Timing(data.size, t, handler[t], "handler") for t in COMMANDS] + [
        Timing(data.size, t, query[t], "query") for t in COMMANDS
    ]


def time_commands(data: Dataset, repeat: int, now: float) -> tuple[list[Timing], int]:
    """Samples per command and layer, and how many Slack API calls the timed requests made."""
    samples: dict[str, list[float]] = {text: [] for text in COMMANDS}
    with serve(data.path) as (url, fake_slack, settings), requests.Session() as session:
        session.trust_env = False  # loopback: never through a proxy from the environment
        for _ in range(WARMUP):
            for text in COMMANDS:
                check(text, post_command(session, url, fake_slack, text), data.expected_first)
        slack_calls_before = len(fake_slack.calls)
        for _ in range(repeat):
            for text in COMMANDS:
                started = time.perf_counter()
                answer = post_command(session, url, fake_slack, text)
                samples[text].append((time.perf_counter() - started) * 1000)
                check(text, answer, data.expected_first)
        slack_calls = len(fake_slack.calls) - slack_calls_before
        inner = time_in_process(data, settings, repeat, now)
    return [Timing(data.size, text, samples[text]) for text in COMMANDS] + inner, slack_calls


# -- reporting ---------------------------------------------------------------------------------


def query_plans(database: Path) -> list[str]:
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        lines = []
        for title, (sql, params) in PLANS.items():
            lines.append(f"  {title}")
            for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params):
                lines.append(f"    {row[3]}")
        return lines
    finally:
        conn.close()


def report(timings: list[Timing], small: int, large: int) -> bool:
    """Print the table and the ratios; True when every goal command's end-to-end ratio passes."""
    by_key = {(t.layer, t.size, t.command): t for t in timings}
    print()
    print("end to end: signed POST /slack/events -> the answer, in the ack or at the response_url")
    print(f"{'orders':>8}  {'command':<18} {'median ms':>10} {'p95 ms':>8} {'n':>5}")
    for size in (small, large):
        for command in COMMANDS:
            t = by_key[("http", size, command)]
            print(
                f"{size:>8,}  {command:<18} {t.median:>10.2f} {t.p95:>8.2f} {len(t.samples_ms):>5}"
            )
    print()
    print("in process, same database: handler = Commands.answer(), query = the storage verb")
    print(f"{'orders':>8}  {'command':<18} {'handler ms':>10} {'p95 ms':>8} {'query ms':>9}")
    for size in (small, large):
        for command in GOAL_COMMANDS:
            h, q = by_key[("handler", size, command)], by_key[("query", size, command)]
            print(f"{size:>8,}  {command:<18} {h.median:>10.3f} {h.p95:>8.3f} {q.median:>9.3f}")
    print()
    print(f"ratio median({large:,}) / median({small:,})   goal < {GOAL_RATIO} (end to end)")
    print(f"  {'command':<18} {'e2e':>6}  {'verdict':<7} {'handler':>8} {'query':>7}")
    all_met = True
    for command in COMMANDS:
        ratios = [
            by_key[(layer, large, command)].median / by_key[(layer, small, command)].median
            for layer in ("http", "handler", "query")
        ]
        if command in GOAL_COMMANDS:
            verdict = "PASS" if ratios[0] < GOAL_RATIO else "MISS"
            all_met &= ratios[0] < GOAL_RATIO
            e2e, handler, query = ratios
            print(f"  {command:<18} {e2e:>6.2f}  {verdict:<7} {handler:>8.2f} {query:>7.2f}")
        else:
            print(
                f"  {command:<18} {ratios[0]:>6.2f}  (no database: the framework floor, for scale)"
            )
    return all_met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="1,000 vs 20,000 orders and 30 requests per command"
    )
    parser.add_argument("--repeat", type=int, default=None, help="timed requests per command")
    parser.add_argument("--seed", type=int, default=2026, help="seed of the generated orders")
    args = parser.parse_args(argv)
    small, large = (1_000, 20_000) if args.quick else (1_000, 100_000)
    repeat = args.repeat if args.repeat is not None else (30 if args.quick else 100)
    if repeat < 1:
        parser.error("--repeat must be at least 1")
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")  # the app's own calls to the fakes
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access log line per request

    now = int(time.time())
    workdir = Path(tempfile.mkdtemp(prefix="climate-bot-bench-"))
    timings: list[Timing] = []
    plans: list[str] = []
    print(f"bench/slash.py: {small:,} vs {large:,} orders, {repeat} timed requests per command")
    try:
        for size in (small, large):
            data = fill(workdir / f"orders-{size}.db", size, now=now, seed=args.seed)
            print(
                f"  {size:>7,} orders: filled in {data.fill_seconds:.2f} s"
                f" ({size / data.fill_seconds:,.0f} orders/s), {data.pending:,} pending,"
                f" {data.cards} cards in {data.cards_seconds:.2f} s"
            )
            started = time.perf_counter()
            measured, slack_calls = time_commands(data, repeat, now)
            timings.extend(measured)
            print(
                f"           timed {len(COMMANDS)} x {repeat} requests in"
                f" {time.perf_counter() - started:.2f} s; Slack API calls meanwhile: {slack_calls}"
            )
            if size == large:
                plans = query_plans(data.path)
    except BenchFailure as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    all_met = report(timings, small, large)
    print()
    print(f"query plans on the {large:,}-order database:")
    print("\n".join(plans))
    print()
    print("goal met" if all_met else "goal missed (informational; exit code 0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
