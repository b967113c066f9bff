"""The scheduler: time-driven work, driven by the database so it survives restarts.

It runs in every process (`python app.py`, each gunicorn worker, `climate-bot worker`); each job is
a compare-and-set in SQLite, so running it in several processes at once does everything once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from bot.storage import Storage, card_key

log = logging.getLogger(__name__)


class Scheduler:
    """Runs periodic jobs; `run_once(now)` is one pass, `run` the loop."""

    def __init__(self, storage: Storage, channel: str, *, wake: Callable[[], None] | None = None):
        self.storage = storage
        self.channel = channel
        self.wake = wake or (lambda: None)
        self._stop = threading.Event()

    def run_once(self, now: float | None = None) -> None:
        self.close_expired_windows(time.time() if now is None else now)

    def close_expired_windows(self, now: float) -> list[str]:
        """Re-render the cards whose decision window has closed, so their buttons go away."""
        with self.storage.transaction():
            closed = self.storage.close_expired_windows(now)
            for order_id in closed:
                self.storage.enqueue(card_key("order", order_id), "card", channel=self.channel)
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
