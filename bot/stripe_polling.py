"""Reading Stripe's Events API instead of waiting for webhooks (`STRIPE_POLL_INTERVAL`).

Stripe Climate sends a few events a year per company, and Stripe keeps every event for 30 days
at `GET /v1/events`: reading it every few seconds is as timely as a webhook, needs no public URL,
and cannot miss an event while the bot is down for less than 30 days. Each reading lists the
Climate events of one account created since its cursor (less a few minutes, so that an event
Stripe lists a moment late is still seen), every page before anything is written, and then
receives each new one oldest first exactly as a webhook is received (`record_event`, deduplicated
by event id: webhooks and readings together post nothing twice). The cursor moves only once a
whole reading is recorded, so a crash half-way reads the same events again and skips those it
has. One process at a time reads (a lease in the database); the others stand by.

Thin `v1.climate.*` events are not read: they notify the same changes Stripe records as the
snapshot events read here (a thin event is a second way to be told, not another change), so
reading both would tell each change twice.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bot.replay import RETENTION_SECONDS, fetch_events, receive, replay_accounts
from bot.settings import Settings
from bot.storage import Storage
from bot.stripe_gateway import StripeFailure, StripeGateway

log = logging.getLogger(__name__)

LEASE = "stripe-events"
# Each reading starts this far before its cursor: an event created a moment before the newest one
# seen may be listed a moment after it; it is found the next time, and known ids cost no write.
OVERLAP_SECONDS = 300
MAX_BACKOFF_SECONDS = 300.0  # a failing Stripe is asked again at least this often
# Readings failed in a row before /healthz says degraded: one 500 or 429 is Stripe's weather.
FAILURES_BEFORE_ALARM = 3
# Stripe answered that the key itself is wrong: no reading can succeed until it is replaced.
FATAL_STATUSES = (401,)
# Stripe refused the key this account (a restricted key without `event_read`, a disconnected
# account): that account is no longer read; the others are.
REFUSED_STATUSES = (403,)


def holder_name() -> str:
    """Who holds a lease: this host and process, and a random part (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


@dataclass
class Reading:
    """What one reading of every account did."""

    new: int = 0
    skipped: int = 0
    failed: int = 0
    errors: dict[str, str] = field(default_factory=dict)  # account ("" platform) → why
    leased: bool = True  # False: another process reads; nothing was asked


class EventPoller:
    """Reads each account's Climate events at `interval` seconds and records the new ones."""

    def __init__(
        self,
        storage: Storage,
        stripe: StripeGateway,
        settings: Settings,
        *,
        interval: float,
        clock: Callable[[], float] = time.time,
        holder: str | None = None,
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        self.storage = storage
        self.stripe = stripe
        self.settings = settings
        self.interval = interval
        self.clock = clock
        self.holder = holder or holder_name()
        self.wake_worker = wake  # the delivery worker, when a reading queued messages
        self.stopped = threading.Event()
        self.wake = threading.Event()
        self.stopped_because: str | None = None  # the key was refused: no more readings
        self.refused: dict[str | None, str] = {}  # accounts Stripe refused this key, and why
        self.failures = 0  # readings in a row with an error

    # -- one reading --------------------------------------------------------------------------

    def poll_once(self) -> Reading:
        """Read every account once, if this process holds the lease (or can take it)."""
        reading = Reading()
        if self.stopped_because is not None:
            reading.errors[""] = self.stopped_because
            return reading
        now = self.clock()
        if not self.storage.take_lease(LEASE, self.holder, seconds=self.lease_seconds, now=now):
            reading.leased = False
            return reading
        for account in replay_accounts(self.settings, self.storage):
            if account in self.refused:
                continue
            self._read(account, now, reading)
            if self.stopped_because is not None:
                break
        self.failures = self.failures + 1 if reading.errors else 0
        return reading

    @property
    def lease_seconds(self) -> float:
        # Long enough to outlast a reading and the wait before the next; short enough that a
        # process killed holding it hands it on within half a minute. A reading slower than
        # that may overlap another process's: each event is still recorded once (by its id).
        return max(30.0, 3 * self.interval)

    def _read(self, account: str | None, now: float, reading: Reading) -> None:
        cursor = self.storage.poll_cursor(account) or self.storage.start_cursor(
            account, created=self._starting_point(account, now), now=now
        )
        oldest_kept = int(now) - RETENTION_SECONDS
        if cursor.polled_at < oldest_kept:
            self._report_gap(account, cursor.polled_at, oldest_kept, now)
        since = max(cursor.created - OVERLAP_SECONDS, oldest_kept)
        try:
            events = fetch_events(self.stripe, since=since, accounts=[account])
        except StripeFailure as exc:
            self._failed(account, exc, now, reading)
            return
        known = self.storage.recorded_event_ids(
            e["id"] for e in events if isinstance(e.get("id"), str)
        )
        newest = cursor.created
        for event in events:
            created = event.get("created")
            if isinstance(created, int):
                newest = max(newest, created)
            if event.get("id") in known:
                reading.skipped += 1
                continue
            listed = receive(event, self.storage, self.settings, source="poll")
            if listed.status == "new":
                reading.new += 1
            elif listed.status == "skipped":
                reading.skipped += 1
            else:
                reading.failed += 1
        self.storage.advance_cursor(account, created=min(newest, int(now)), now=now)
        if reading.new:
            self.wake_worker()
            log.info(
                "read %d new Climate event(s) from Stripe%s",
                reading.new,
                f" for {account}" if account else "",
            )

    def _starting_point(self, account: str | None, now: float) -> int:
        """Where a first reading of `account` begins: after the newest event recorded for it (a
        bot that took webhooks until now catches up from there), else now."""
        latest = self.storage.latest_event_created(account)
        return max(latest, int(now) - RETENTION_SECONDS) if latest is not None else int(now)

    def _failed(self, account: str | None, exc: StripeFailure, now: float, reading: Reading):
        who = f" for {account}" if account else ""
        why = f"Stripe answered {exc.http_status}: {exc.message}" if exc.http_status else str(exc)
        reading.errors[account or ""] = why
        in_a_row = self.storage.poll_failed(account, why, now=now)
        if exc.http_status in FATAL_STATUSES:
            self.stopped_because = (
                f"Stripe refused STRIPE_API_KEY ({why}); reading events stopped until the bot is"
                " restarted with a valid key"
            )
            log.error("%s", self.stopped_because)
        elif exc.http_status in REFUSED_STATUSES:
            self.refused[account] = why
            log.error(
                "reading Stripe events%s stopped: the key may not read them (%s); give it"
                " event_read%s and restart",
                who,
                why,
                " on that account" if account else "",
            )
        elif in_a_row == 1 or in_a_row % 10 == 0:  # said once, then now and then, not per try
            log.warning("reading Stripe events%s failed (%d in a row): %s", who, in_a_row, why)

    def _report_gap(self, account: str | None, gap_from: float, gap_to: float, now: float) -> None:
        self.storage.record_gap(
            account,
            gap_from=gap_from,
            gap_to=gap_to,
            now=now,
            channel=self.settings.routing.channel_for("climate.order.created", account),
        )
        self.wake_worker()
        log.error(
            "events may be lost%s: Stripe was last read %s and keeps events for 30 days only, so"
            " what happened between then and %s is gone; look at the Stripe Dashboard for orders"
            " changed meanwhile (`climate-bot retry` acknowledges this)",
            f" for {account}" if account else "",
            _utc(gap_from),
            _utc(gap_to),
        )

    # -- the thread ----------------------------------------------------------------------------

    def next_wait(self) -> float:
        """Seconds until the next reading: the interval, longer while readings fail."""
        if not self.failures:
            return self.interval
        return min(self.interval * 2 ** min(self.failures, 16), max(MAX_BACKOFF_SECONDS, 1.0))

    def run(self) -> None:
        """Read until stopped (a thread's target)."""
        while not self.stopped.is_set():
            try:
                self.poll_once()
            except Exception:  # a bug or the database: logged, and the next reading tries again
                self.failures += 1
                log.exception("reading Stripe events failed")
            self.wake.wait(self.next_wait())
            self.wake.clear()
        try:
            self.storage.release_lease(LEASE, self.holder)
        except Exception:  # the database is gone: the lease lapses by itself
            log.debug("could not release the events lease", exc_info=True)

    def stop(self) -> None:
        self.stopped.set()
        self.wake.set()

    # -- what the operator sees -------------------------------------------------------------

    def health_reasons(self, now: float) -> list[str]:
        """Why /healthz says degraded about the reading (empty when all is well)."""
        reasons = []
        if self.stopped_because:
            reasons.append(self.stopped_because)
        reasons += [
            f"Stripe events for {account or 'the platform'} are not read: {why}"
            for account, why in self.refused.items()
        ]
        for cursor in self.storage.poll_cursors():
            if cursor.failures >= FAILURES_BEFORE_ALARM:
                reasons.append(
                    f"Stripe events{f' for {cursor.account}' if cursor.account else ''} last read"
                    f" {_utc(cursor.polled_at)} ({cursor.failures} failed readings since:"
                    f" {cursor.last_error})"
                )
        for gap in self.storage.open_gaps():
            reasons.append(
                f"events may be lost{f' for {gap.account}' if gap.account else ''}: nothing was"
                f" read between {_utc(gap.gap_from)} and {_utc(gap.gap_to)}, older than the 30"
                " days Stripe keeps; `climate-bot retry` acknowledges this"
            )
        return reasons


def start_poller_thread(poller: EventPoller) -> threading.Thread:
    thread = threading.Thread(target=poller.run, name="stripe-events", daemon=True)
    thread.start()
    return thread


def _utc(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M UTC")
