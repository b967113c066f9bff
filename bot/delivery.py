"""The delivery worker: drains the outbox into Slack, never losing or doubling a message.

Each row is leased in SQLite, so several workers (gunicorn processes, or web + `climate-bot worker`)
can run at once. The first row of a card posts it and stores its ts; later rows post a reply in its
thread or update it in place, rendered from the state current at delivery time.

A post that failed ambiguously (time-out, 5xx, crash after Slack accepted it) is retried only after
looking for the message it may have left: every post carries our outbox id in its metadata.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import random
import threading
import time
import uuid
from collections.abc import Callable
from typing import TypeVar

from bot import cards, metrics
from bot.i18n import DEFAULT_LOCALE, use_locale
from bot.jobs import (
    CARD_JOBS,
    REPLY_JOBS,
    CardJob,
    EventsGapNoticeJob,
    Job,
    NoticeJob,
    NotYet,
    OrderReplyJob,
    ProductReplyJob,
    UpdateJob,
)
from bot.model import (
    Change,
    Message,
    Notice,
    OrderState,
    OrderUpdate,
    ProductState,
    ProductUpdate,
)
from bot.slack_gateway import NotInChannel, Permanent, RateLimited, SlackGateway, Transient
from bot.storage import Lease, Storage, StorageUnavailable

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 300.0
MAX_PAUSE_SECONDS = 0.25
# A transient error that never heals is parked once the row has been failing this long: a day
# rides out a Slack or Stripe outage (Stripe itself retries webhooks for three days).
GIVE_UP_AFTER_SECONDS = 24 * 60 * 60

J = TypeVar("J", bound=Job)


def backoff(attempts: int, rng: random.Random) -> float:
    """Seconds to wait before retry number `attempts`: exponential, capped, with jitter (`rng`'s).

    Retries are persisted in the outbox (they survive restarts), so this is computed from the
    stored attempt count rather than by an in-process retry loop.
    """
    base = min(MAX_BACKOFF_SECONDS, 2.0 ** min(attempts, 16))
    return base / 2 + rng.uniform(0, base / 2)


class Deliverer:
    """Delivers outbox rows one at a time; `run_once` is one step, `run` the loop."""

    def __init__(
        self,
        storage: Storage,
        slack: SlackGateway,
        *,
        locale_for: Callable[[str], str] = lambda channel: DEFAULT_LOCALE,
        mentions: tuple[str, ...] = (),
        pace_seconds: float = 1.0,
        now: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.storage = storage
        self.slack = slack
        self.locale_for = locale_for  # the language of each channel
        self.mentions = mentions  # the deciders, pinged by what is sent to the channel
        self.pace_seconds = pace_seconds  # Slack allows about one message per second per channel
        self.now = now
        self.rng = rng if rng is not None else random.Random()  # the jitter of retries' back-off
        # Applies the events webhooks recorded (`recording.apply_recorded`), before each look
        # at the outbox, where what they make is queued; returns, for each event applied, the
        # channel its first row posts to (None: rows that post nothing, or none).
        self.apply: Callable[[], list[str | None]] = lambda: []
        # Which function carries out which job: the card's own messages here, the work (a
        # cancel at Stripe, a thin event's fetch, direct messages) as `register`ed.
        self.handlers: dict[type[Job], Callable[[Lease, Job], None]] = {
            CardJob: self._send_message,
            UpdateJob: self._send_message,
            OrderReplyJob: self._send_message,
            ProductReplyJob: self._send_message,
            NoticeJob: self._send_message,
            EventsGapNoticeJob: self._send_message,
        }
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.wake = threading.Event()
        self._stop = threading.Event()
        self._unavailable: str | None = None  # why the database last refused a write
        # Guarded by `_poke_lock`: when the sleeping worker will look again on its own (inf while
        # it is awake), until when each paced channel's posting slot is taken, whether an event
        # was recorded while it was awake, and whether a look is owed (rows were queued, or
        # came due) that applying must not skip.
        self._poke_lock = threading.Lock()
        self.sleep_until = math.inf
        self._paced: dict[str, float] = {}
        self._recorded = False
        self._look_wanted = False

    # -- the loop --------------------------------------------------------------------------

    def poke(self) -> None:
        """Tell the worker that rows were queued: it looks at once, or right after this look."""
        with self._poke_lock:
            self._look_wanted = True
        self.wake.set()

    def recorded(self) -> None:
        """Tell the worker that an event was recorded for it to apply.

        What applying queues is weighed by `run_once`. While the worker is looking, the event
        is most likely applied by that very look (it applies everything recorded first), so
        the poke only asks for another apply, not another look at the outbox: during a burst
        into a paced channel a look per webhook would find nothing.
        """
        with self._poke_lock:
            if self.sleep_until == math.inf:
                self._recorded = True
                return
        self.wake.set()

    def run(self, *, idle_seconds: float = 1.0) -> None:
        """Deliver until `stop()`; sleeps until woken by a new event or the next row is due.

        Events recorded by other processes (a web tier beside `climate-bot worker`) are applied
        at its next look, within `idle_seconds`: their webhooks cannot wake it.
        """
        pause = 0.0
        look = True  # False: woken only to apply what was recorded during the last look
        while not self._stop.is_set():
            # A look searches the outbox, but still reads the rows it must pass over (many in
            # back-off, or waiting behind their card); after a look that found nothing, rest a
            # few times what it cost, so looking never takes more than a sixth of a core (and
            # nothing, when cheap).
            if pause > 0 and self._stop.wait(pause):
                break
            started = time.monotonic()
            try:
                if self.run_once(look=look):
                    pause, look = 0.0, True
                    continue
            except StorageUnavailable as exc:  # told once; looked at again every few seconds
                if str(exc) != self._unavailable:
                    self._unavailable = str(exc)
                    log.error("delivery paused, the database cannot be written: %s", exc)
                pause = MAX_PAUSE_SECONDS
                continue
            except Exception:  # keep the worker alive; the row's lease expires and it is retried
                log.exception("delivery step failed")
            self._unavailable = None
            pause = min(MAX_PAUSE_SECONDS, 5 * (time.monotonic() - started))
            now = self.now()
            paced = self.storage.paced_channels(now)
            due = self.storage.next_delivery_at()
            wait = max(0.01, idle_seconds if due is None else min(idle_seconds, due - now))
            with self._poke_lock:
                recorded, self._recorded = self._recorded, False
                self._paced = paced
                if recorded:  # apply it; a look follows only if what it queued can go now
                    look = False
                    continue
                look = True
                self.sleep_until = now + wait
            woken = self.wake.wait(wait)
            with self._poke_lock:
                self.sleep_until = math.inf
                self.wake.clear()  # under the lock: a poke from now on is not lost
                if not woken:  # the look it slept until: a row may have come due
                    self._look_wanted = True

    def stop(self) -> None:
        self._stop.set()
        self.wake.set()

    def run_once(self, *, look: bool = True) -> bool:
        """Apply the events recorded meanwhile, then deliver one row if one is ready; True if
        anything was done. `look=False`: only apply."""
        applied = self.apply()
        if applied:
            # During a burst into one channel its slot is taken: what was just queued cannot go
            # before the worker's next look anyway, and a look now would find nothing (a look
            # per webhook). Anything else is looked at at once.
            now = self.now()
            with self._poke_lock:
                paced, wanted = dict(self._paced), self._look_wanted
            if wanted or not all(c is not None and paced.get(c, 0.0) > now for c in applied):
                return True
            return bool(self.storage.events_to_apply(1))  # a burst: apply the next batch now
        if not look:
            return False
        with self._poke_lock:
            self._look_wanted = False
        lease = self.storage.lease_next(self.owner, pace_seconds=self.pace_seconds)
        metrics.DELIVERY_LOOKS.labels("no" if lease is None else "yes").inc()
        if lease is None:
            return False
        self.deliver(lease)
        return True

    def drain(self, *, timeout: float = 30.0) -> None:
        """Deliver until nothing is ready (for tests and one-shot commands)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.run_once():
            pass

    def register(self, job_type: type[J], carry_out: Callable[[Lease, J], None]) -> None:
        """Have jobs of `job_type` (work, not a message of the card's) carried out by `carry_out`,
        which records its own outcome: only a crash is retried (`_run_job`)."""
        self.handlers[job_type] = functools.partial(self._run_job, carry_out)

    # -- one row ---------------------------------------------------------------------------

    def deliver(self, lease: Lease) -> None:
        """Carry out one leased row with the handler of its job; park a row no handler takes."""
        handler = self.handlers.get(type(lease.job))
        if handler is None:
            self._park(lease, f"no handler for {lease.job.kind} jobs in this worker")
            return
        handler(lease, lease.job)

    def _send_message(self, lease: Lease, job: Job) -> None:
        """Post or update the card, or post a reply in its thread, as Slack's answer allows."""
        try:
            with use_locale(self.locale_for(lease.channel)):
                channel, ts = self._send(lease, job)
        except RateLimited as exc:
            self.storage.hold_channel(lease.channel, exc.retry_after)
            self.storage.reschedule(lease, delay=exc.retry_after, error=str(exc))
        except NotInChannel:
            self._join_and_retry(lease)
        except Permanent as exc:
            self._park(lease, str(exc))
        except Transient as exc:
            if self._gave_up(lease):
                self._park(lease, f"gave up after {lease.attempts} attempts over a day: {exc}")
            else:
                self.storage.reschedule(lease, delay=self._backoff(lease), error=str(exc))
        else:
            self.storage.complete(lease, card_channel=channel, ts=ts)
            if lease.posts:
                # The next post's slot counts from Slack's answer, not from our lease: a slow
                # answer or a reconcile call would otherwise land posts under a second apart.
                self.storage.hold_channel(lease.channel, self.pace_seconds)
            if lease.event_id and lease.created_at:
                metrics.DELIVERY_SECONDS.observe(max(0.0, self.now() - lease.created_at))
            log.info(
                "delivered %s %s for %s to %s ts=%s",
                job.kind,
                lease.id,
                lease.card_key,
                channel or lease.channel,
                ts or lease.card_ts,
            )

    def _run_job(self, carry_out: Callable[[Lease, J], None], lease: Lease, job: J) -> None:
        """Carry out a queued job; it records its own outcome, so only a crash is retried."""
        try:
            with use_locale(self.locale_for(lease.channel)):
                carry_out(lease, job)
        except Exception as exc:
            if isinstance(exc, NotYet):
                log.info("job %s for %s waits: %r", job.kind, lease.card_key, exc)
            else:
                log.exception("job %s for %s failed", job.kind, lease.card_key)
            if self._gave_up(lease):
                self._park(lease, f"gave up after {lease.attempts} attempts over a day: {exc!r}")
            else:
                self.storage.reschedule(lease, delay=self._backoff(lease), error=repr(exc))
            return
        self.storage.complete(lease)

    def _backoff(self, lease: Lease) -> float:
        return backoff(lease.attempts, self.rng)

    def _gave_up(self, lease: Lease) -> bool:
        return self.now() - lease.first_attempt_at >= GIVE_UP_AFTER_SECONDS

    def _join_and_retry(self, lease: Lease) -> None:
        try:
            self.slack.join(lease.channel)
        except Permanent as exc:
            self._park(lease, f"not_in_channel, and joining failed: {exc}")
            return
        except (Transient, RateLimited) as exc:
            self.storage.reschedule(lease, delay=self._backoff(lease), error=str(exc))
            return
        self.storage.reschedule(lease, delay=0, error="joined the channel")

    def _park(self, lease: Lease, error: str) -> None:
        log.error("delivery %s for %s parked: %s", lease.id, lease.card_key, error)
        self.storage.fail(lease, error)

    def _send(self, lease: Lease, job: Job) -> tuple[str | None, str | None]:
        marker = {"db": self.storage.instance_id, "outbox": lease.id}
        if isinstance(job, CARD_JOBS) and lease.card_ts:
            self.slack.update_message(
                lease.channel, lease.card_ts, self.render_card(lease.card_key)
            )
            return None, None
        thread_ts = lease.card_ts if isinstance(job, REPLY_JOBS) else None
        if lease.attempts > 1:
            found = self.slack.find_marked(
                lease.channel, marker, oldest=lease.first_attempt_at - 5, thread_ts=thread_ts
            )
            if found:
                log.info("outbox %s was already posted as %s; not posting again", lease.id, found)
                return lease.channel, found
        if isinstance(job, CARD_JOBS):
            return self.slack.post_message(
                lease.channel, self.render_card(lease.card_key), marker=marker
            )
        if isinstance(job, EventsGapNoticeJob):
            message = cards.events_gap_notice(job.since, job.until, job.account)
            return self.slack.post_message(lease.channel, message, marker=marker)
        return self.slack.post_message(
            lease.channel,
            self.render_reply(lease, job),
            thread_ts=thread_ts,
            broadcast=bool(job.broadcast),
            marker=marker,
        )

    # -- rendering from state --------------------------------------------------------------

    def render_card(self, key: str) -> Message:
        kind, object_id = key.split(":", 1)
        if kind == "order":
            return cards.order_card(self.order_state(object_id), int(self.now()))
        return cards.product_card(self.product_state(object_id))

    def render_reply(
        self, lease: Lease, job: OrderReplyJob | ProductReplyJob | NoticeJob
    ) -> Message:
        if isinstance(job, NoticeJob):
            return self.render_notice(lease, job)
        event = self.storage.event(lease.event_id or "")
        if event is None:
            raise Permanent("event_missing", f"event {lease.event_id} is not recorded")
        obj = event["data"]["object"]
        late = bool(job.late)
        if isinstance(job, OrderReplyJob):  # a row of an order's card (`job_of`)
            change = job.change
            cancelled_by = None
            if event["type"] == "climate.order.canceled" and not late:
                decision = self.storage.decision(obj["id"])
                if decision is not None and decision.kind == "cancelled":
                    cancelled_by = decision.by
            return cards.order_reply(
                OrderUpdate(
                    event_type=event["type"],
                    event_created=event["created"],
                    order=obj,
                    product=self.storage.order_product(obj),
                    change=Change(**change) if change else None,
                    late=late,
                    broadcast=bool(job.broadcast),
                    mentions=self.mentions if job.broadcast else (),
                    cancelled_by=cancelled_by,
                )
            )
        return cards.product_reply(
            ProductUpdate(
                event_type=event["type"],
                event_created=event["created"],
                product=obj,
                old_prices=job.old_prices,
                late=late,
            )
        )

    def render_notice(self, lease: Lease, job: NoticeJob) -> Message:
        state = self.order_state(lease.card_key.split(":", 1)[1])
        kind = job.notice
        return cards.order_notice(
            Notice(
                kind=kind,
                order=state.order,
                change=state.change,
                decision=state.decision,
                days_left=job.days,
                # Everything but a decision's own record calls the deciders.
                mentions=self.mentions if kind != "decision" else (),
            )
        )

    def order_state(self, order_id: str) -> OrderState:
        state = self.storage.order_state(order_id)
        if state is None:
            raise Permanent("order_missing", f"no snapshot of {order_id}")
        return state

    def product_state(self, product_id: str) -> ProductState:
        state = self.storage.product_state(product_id)
        if state is None:
            raise Permanent("product_missing", f"no snapshot of {product_id}")
        return state


def start_worker_thread(deliverer: Deliverer) -> threading.Thread:
    """Run the delivery loop in a daemon thread of this process."""
    thread = threading.Thread(target=deliverer.run, name="climate-bot-delivery", daemon=True)
    thread.start()
    return thread
