"""The bot in tests: its fake environment, and its app served over HTTP on loopback."""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import requests
from werkzeug.serving import make_server

from bot.sandbox import stripe_objects
from bot.sandbox.bot_env import (  # noqa: F401  (tests import them from here)
    BOT_TOKEN,
    CHANNEL,
    SIGNING_SECRET,
    STRIPE_KEY,
    WEBHOOK_SECRET,
    fake_bot_env,
)
from bot.sandbox.slack import FakeSlack
from bot.sandbox.stripe import FakeStripe
from bot.settings import Settings
from bot.web import create_app
from bot.wiring import ClimateBot
from tests.support.stripe_schema import validate_event


def env_for(tmp_path, fake_slack: FakeSlack, fake_stripe: FakeStripe) -> dict[str, str]:
    return fake_bot_env(tmp_path / "climate-bot.db", fake_slack.api_url, fake_stripe.url)


def wait_until(predicate, timeout: float, message: str) -> None:
    """Poll `predicate` until it holds; fail with `message` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(message)


@dataclass
class RunningBot:
    """The bot's Flask app served over real HTTP on loopback, with its worker driven by hand."""

    url: str
    bot: ClimateBot

    def send_event(
        self,
        event: dict | str,
        *,
        timestamp: int | None = None,
        secret: str = WEBHOOK_SECRET,
        hostile: bool = False,
        apply: bool = True,
    ):
        """POST a signed event; unless `hostile`, Climate events must match Stripe's schemas.

        The webhook only records the event; with `apply` (the default) the test then takes the
        worker's next step and applies it, so that its state and queued rows are there, as they
        are a moment later in a running bot."""
        climate = isinstance(event, dict) and str(event.get("type", "")).startswith("climate.")
        if climate and not hostile:
            assert validate_event(event) == []
        body, headers = stripe_objects.webhook_request(event, secret, timestamp=timestamp)
        response = requests.post(
            self.url + "/stripe/webhook", data=body, headers=headers, timeout=10
        )
        if apply:
            self.apply()
        return response

    def apply(self) -> list[str | None]:
        """Apply the events webhooks recorded, as the worker does before each look."""
        return self.bot.deliverer.apply()

    def deliver(self) -> None:
        """Drain the outbox once, as the worker would, and wait for nothing else."""
        self.bot.deliverer.drain()

    @contextmanager
    def worker_running(self, *, idle_seconds: float = 60) -> Iterator[None]:
        """The worker's own loop in a thread for the block (it sleeps up to `idle_seconds`
        between looks unless woken), stopped and joined after it."""
        thread = threading.Thread(
            target=self.bot.deliverer.run, kwargs={"idle_seconds": idle_seconds}, daemon=True
        )
        thread.start()
        try:
            yield
        finally:
            self.bot.deliverer.stop()
            thread.join(timeout=10)

    def worker_asleep(self) -> bool:
        """Whether the running worker is sleeping (until woken or its next look)."""
        return self.bot.deliverer.sleep_until < math.inf


@contextmanager
def serve_bot(settings: Settings, *, rng: random.Random | None = None) -> Iterator[RunningBot]:
    """The bot's app on a loopback port, without background threads (tests drive the worker).

    `rng`: the worker's randomness (its back-off jitter), seeded to replay a run."""
    app = create_app(settings)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    bot = app.extensions["climate-bot"]
    bot.deliverer.pace_seconds = 0  # pacing has its own test; here it would only slow drains
    if rng is not None:
        bot.deliverer.rng = rng
    try:
        yield RunningBot(f"http://127.0.0.1:{server.server_port}", bot)
    finally:
        server.shutdown()
        bot.stop_background()
        bot.storage.close()
