"""Stripe's side of events in the demo: sign each event like Stripe and POST it to the bot, or,
with ``--socket-mode``, keep it in FakeStripe's Events API for the bot to read.

Two kinds of events go out, in the order they happen: those the story makes up for Frontier
(a delay, a delivery …), and those FakeStripe itself emits when the Stripe API is called (an order
created by the team, a cancel made by the bot), which Stripe would send too.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any, Protocol

import requests

from bot.sandbox import stripe_objects
from bot.sandbox.stripe import FakeStripe

log = logging.getLogger(__name__)

ATTEMPTS = 3


class EventSink(Protocol):
    """Where the story's events go: `WebhookSender` or `EventsApiPublisher`."""

    def send(self, event: Mapping[str, Any]) -> bool: ...

    def forward_new(self) -> int: ...

    def forward_forever(self, interval: float = 0.25) -> None: ...


class EventsApiPublisher:
    """Stripe's side when the bot reads the Events API itself (``STRIPE_POLL_INTERVAL``): an event
    the story makes up joins FakeStripe's `GET /v1/events`, where the bot's next reading finds it.
    FakeStripe's own events are there already, so nothing is forwarded."""

    def __init__(self, stripe: FakeStripe) -> None:
        self.stripe = stripe
        self.sent = 0

    def send(self, event: Mapping[str, Any]) -> bool:
        self.stripe.add_event(event)
        self.sent += 1
        return True

    def forward_new(self) -> int:
        return 0

    def forward_forever(self, interval: float = 0.25) -> None:
        return None  # nothing to forward: no thread needed


class WebhookSender:
    """POSTs signed snapshot events to the bot's ``/stripe/webhook``, one at a time, in order."""

    def __init__(
        self, url: str, secret: str, stripe: FakeStripe, *, stop: threading.Event | None = None
    ) -> None:
        self.url = url
        self.secret = secret
        self.stripe = stripe
        self.stop = stop or threading.Event()
        self.sent = 0
        self._forwarded = 0  # how many of FakeStripe's own events went out
        self._lock = threading.Lock()
        self._http = requests.Session()
        self._http.trust_env = False  # loopback only: a proxy from the environment must not apply

    def send(self, event: Mapping[str, Any]) -> bool:
        """Deliver `event` now (retrying briefly, as Stripe retries); True once the bot took it."""
        with self._lock:
            return self._deliver(event)

    def forward_new(self) -> int:
        """Deliver the events FakeStripe emitted since the last call; returns how many."""
        with self._lock:
            fresh = self.stripe.events[self._forwarded :]
            for event in fresh:
                self._forwarded += 1
                self._deliver(event)
            return len(fresh)

    def forward_forever(self, interval: float = 0.25) -> None:
        """Keep forwarding FakeStripe's events until `stop` is set (a thread's target)."""
        while not self.stop.wait(interval):
            try:
                self.forward_new()
            except Exception:  # the demo must keep running; the next round tries again
                log.exception("forwarding Stripe events failed")

    def _deliver(self, event: Mapping[str, Any]) -> bool:
        body, headers = stripe_objects.webhook_request(event, self.secret)
        for attempt in range(ATTEMPTS):
            try:
                response = self._http.post(self.url, data=body, headers=headers, timeout=10)
            except requests.RequestException as exc:
                log.warning("webhook %s not delivered: %s", event.get("type"), exc)
            else:
                if response.ok:
                    self.sent += 1
                    return True
                log.warning(
                    "webhook %s refused: HTTP %s %s",
                    event.get("type"),
                    response.status_code,
                    response.text[:200],
                )
            if self.stop.wait(0.5 * 2**attempt):
                break
        return False
