"""The scheduler: time-driven work, driven by the database so it survives restarts.

It runs in every process (`python app.py`, each gunicorn worker, `climate-bot worker`); each job is
a compare-and-set in SQLite, so running it in several processes at once does everything once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from bot.jobs import CardJob, DirectMessageJob, NoticeJob
from bot.recording import direct_message_key
from bot.storage import Storage, card_key

log = logging.getLogger(__name__)

# A decision window that closed longer ago than this is not announced in the channel.
ANNOUNCE_CLOSED_WITHIN = 24 * 60 * 60


class Scheduler:
    """Runs periodic jobs; `run_once(now)` is one pass, `run` the loop."""

    def __init__(
        self,
        storage: Storage,
        channel: str,
        *,
        reminder_days: list[int] | None = None,
        wake: Callable[[], None] | None = None,
    ):
        self.storage = storage
        self.channel = channel
        self.reminder_days = reminder_days if reminder_days is not None else [7, 1]
        self.wake = wake or (lambda: None)
        self._stop = threading.Event()

    def run_once(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.send_reminders(now)
        self.close_expired_windows(now)

    def send_reminders(self, now: float) -> list[tuple[str, int]]:
        """Remind in the card's thread N days before a window closes, once, while undecided.

        Reminders name the deciders. The last one (the fewest days of `REMINDER_DAYS`) is also
        sent to the channel, and each decider who is a user gets it as a direct message. When
        several reminders are due at once (the bot was down), only the latest one is posted.
        """
        sent = []
        last = min(self.reminder_days, default=None)
        with self.storage.transaction():
            due: dict[str, list[tuple[int, int]]] = {}
            for order_id, deadline, days in self.storage.due_reminders(now, self.reminder_days):
                due.setdefault(order_id, []).append((days, deadline))
            for order_id, entries in due.items():
                fresh = [e for e in entries if self.storage.mark_reminded(order_id, e[1], e[0])]
                if not fresh:
                    continue
                days = min(d for d, _ in fresh)
                final = days == last
                self.storage.enqueue(
                    card_key("order", order_id),
                    NoticeJob("reminder", days=days, broadcast=final),
                    channel=self.channel,
                )
                if final:
                    self._queue_direct_messages(order_id, days)
                sent.append((order_id, days))
        if sent:
            log.info("reminders queued: %s", sent)
            self.wake()
        return sent

    def _queue_direct_messages(self, order_id: str, days: int) -> None:
        row = self.storage.order_row(order_id)
        change = (row or {}).get("change")
        if not change:
            return
        self.storage.enqueue(
            direct_message_key(order_id),
            DirectMessageJob(
                occasion=f"{change['kind']}:{change['at']}:reminder:{days}",
                days=days,
            ),
            channel=self.channel,
        )

    def close_expired_windows(self, now: float) -> list[str]:
        """Re-render the cards whose decision window has closed, so their buttons go away; when
        nobody decided, say so in the thread and in the channel, naming the deciders."""
        with self.storage.transaction():
            closed = self.storage.close_expired_windows(now)
            for order_id in closed:
                key = card_key("order", order_id)
                row = self.storage.order_row(order_id) or {}
                if (
                    not row.get("decision")
                    and row.get("status") not in ("delivered", "canceled")
                    # A window long gone (an old event replayed, a bot down for days) is shown
                    # on the card, not announced as news.
                    and (row.get("decision_deadline") or 0) > now - ANNOUNCE_CLOSED_WITHIN
                ):
                    self.storage.enqueue(
                        key, NoticeJob("closed", broadcast=True), channel=self.channel
                    )
                self.storage.enqueue(key, CardJob(), channel=self.channel)
        if closed:
            log.info("decision window closed for %s", ", ".join(closed))
            self.wake()
        return closed

    def run(self, *, interval: float = 30.0) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:
                log.exception("scheduler pass failed")
            self._stop.wait(interval)

    def stop(self) -> None:
        self._stop.set()


def start_scheduler_thread(scheduler: Scheduler) -> threading.Thread:
    thread = threading.Thread(target=scheduler.run, name="climate-bot-scheduler", daemon=True)
    thread.start()
    return thread
