"""One bot wired together: storage, the Slack and Stripe gateways, decisions, the delivery worker
and its jobs, the scheduler, the Events API reader, the Bolt app and its Slack socket
(`build_bot`). The web app (`bot.web`) and `climate-bot worker` both start from here; the worker
never imports the web module.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from slack_bolt import App

from bot import logs
from bot.commands import Commands
from bot.decisions import Deciders, Decisions
from bot.delivery import Deliverer, start_worker_thread
from bot.direct_messages import DirectMessages
from bot.jobs import CancelJob, DirectMessageJob, FetchJob
from bot.recording import apply_recorded
from bot.scheduler import Scheduler, start_scheduler_thread
from bot.settings import Settings
from bot.slack_gateway import SlackGateway
from bot.slack_listeners import build_bolt_app
from bot.slack_socket import SlackSocket
from bot.storage import Storage, StorageUnavailable
from bot.stripe_gateway import StripeGateway
from bot.stripe_polling import EventPoller, start_poller_thread
from bot.thin_events import ThinEvents

log = logging.getLogger(__name__)


@dataclass
class ClimateBot:
    """The resources one app holds: settings, storage, the Bolt app, the worker and scheduler."""

    settings: Settings
    storage: Storage
    bolt: App
    deliverer: Deliverer
    scheduler: Scheduler
    poller: EventPoller | None = None  # with STRIPE_POLL_INTERVAL: reads Stripe's Events API
    socket: SlackSocket | None = None  # with SLACK_APP_TOKEN: Slack's requests over Socket Mode
    threads: list[Any] = field(default_factory=list)

    def start_background(self) -> None:
        """Run the delivery worker, the scheduler, the Events API reader and the Slack socket as
        threads (the socket connects only in the process that holds its lease)."""
        if not self.threads:
            self.threads = [
                start_worker_thread(self.deliverer),
                start_scheduler_thread(self.scheduler),
            ]
            if self.poller is not None:
                self.threads.append(start_poller_thread(self.poller))
            if self.socket is not None:
                self.threads.append(self.socket.start())

    def stop_background(self) -> None:
        self.deliverer.stop()
        self.scheduler.stop()
        if self.poller is not None:
            self.poller.stop()
        if self.socket is not None:
            self.socket.stop()  # waits for the socket to close and the lease to be given up
        for thread in self.threads:
            thread.join(timeout=5)
        self.threads = []

    def health(self) -> dict[str, Any]:
        try:
            self.storage.check_file()
        except StorageUnavailable as exc:  # what the file now holds is not ours to report
            return {
                "status": "degraded",
                "reasons": [f"database: {exc}", *self._socket_reasons()],
                **self._socket_state(),
                "checked_at": time.time(),
            }
        failures = self.storage.failures()
        reasons = [f"delivery {f.id} ({f.card_key}) failed: {f.last_error}" for f in failures[:10]]
        if len(failures) > 10:
            reasons.append(f"and {len(failures) - 10} more failed deliveries")
        # A channel whose posts wait more than a minute: a Slack rate limit, not our pacing.
        now = time.time()
        held = sorted(self.storage.long_holds(now).items())
        reasons += [
            f"channel {channel} is held by a Slack rate limit until {_utc(until)}"
            f" ({until - now:.0f} s from now); `climate-bot retry` releases it"
            for channel, until in held[:10]
        ]
        if len(held) > 10:
            reasons.append(f"and {len(held) - 10} more held channels")
        parked = self.storage.parked_events()
        reasons += [
            f"Stripe event {p['id']} ({p['type']}) could not be applied: {p['apply_error']};"
            " `climate-bot retry` applies it again"
            for p in parked[:10]
        ]
        if len(parked) > 10:
            reasons.append(f"and {len(parked) - 10} more Stripe events not applied")
        if self.poller is not None:
            reasons += self.poller.health_reasons(self.poller.clock())
        reasons += self._socket_reasons()
        if self.storage.write_failure is not None:
            reasons.insert(0, f"database: {self.storage.write_failure}")
        return {
            "status": "degraded" if reasons else "ok",
            "reasons": reasons,
            "outbox": self.storage.outbox_counts(),
            "events_to_apply": self.storage.apply_backlog()[0],
            "last_event_received_at": self.storage.last_event_received_at(),
            **self._socket_state(),
            "checked_at": time.time(),
        }

    def _socket_reasons(self) -> list[str]:
        return self.socket.health_reasons(time.time()) if self.socket is not None else []

    def _socket_state(self) -> dict[str, str]:
        """`slack_socket`: connected, connecting, standing by or stopped: why (Socket Mode only)."""
        return {"slack_socket": self.socket.state()} if self.socket is not None else {}


def _utc(at: float) -> str:
    """A unix time as an ISO date and time in UTC; one too far out to be a date, as seconds."""
    try:
        return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return f"unix time {at:g}"


def build_bot(settings: Settings) -> ClimateBot:
    # Whoever configured logging, this app's secrets are masked in its log lines and in the
    # error texts of Stripe and Slack it shows people (bot.formatting.quoted_error).
    logs.add_secrets(settings.secrets())
    storage = Storage(settings.database_path)
    slack = SlackGateway(settings.SLACK_BOT_TOKEN, settings.SLACK_API_URL)
    stripe = StripeGateway(settings.STRIPE_API_KEY, settings.STRIPE_API_BASE)
    deciders = Deciders(settings.allowed_deciders, slack)
    decisions = Decisions(storage, slack, stripe, deciders, channel=settings.SLACK_CHANNEL)
    thin_events = ThinEvents(storage, stripe, settings.routing)
    deliverer = Deliverer(
        storage,
        slack,
        locale_for=settings.locale_for,
        mentions=settings.allowed_deciders,
    )
    direct_messages = DirectMessages(storage, slack, deciders.users(), deliverer.order_state)
    deliverer.apply = lambda: [
        received.posts_to
        for received in apply_recorded(
            storage, channel=settings.SLACK_CHANNEL, routing=settings.routing
        )
    ]
    deliverer.register(CancelJob, decisions.carry_out_cancel)
    deliverer.register(FetchJob, thin_events.carry_out_fetch)
    deliverer.register(DirectMessageJob, direct_messages.carry_out)
    decisions.wake = thin_events.wake = deliverer.poke
    decisions.state_of = deliverer.order_state
    scheduler = Scheduler(
        storage,
        settings.SLACK_CHANNEL,
        reminder_days=settings.reminder_days,
        wake=deliverer.poke,
    )
    # A person waits for /climate answers: ask Stripe briefly, then fall back to the database.
    quick_stripe = StripeGateway(
        settings.STRIPE_API_KEY, settings.STRIPE_API_BASE, timeout=2.0, retries=0
    )
    commands = Commands(storage, slack, quick_stripe)
    bolt = build_bolt_app(settings, decisions, commands, storage, slack)
    poller = None
    if settings.STRIPE_POLL_INTERVAL is not None:
        interval = settings.STRIPE_POLL_INTERVAL
        poller = EventPoller(storage, stripe, settings, interval=interval, wake=deliverer.poke)
    socket = None
    if settings.SLACK_APP_TOKEN is not None:  # settings.socket_mode
        socket = SlackSocket(
            bolt, storage, app_token=settings.SLACK_APP_TOKEN, api_url=settings.SLACK_API_URL
        )
    return ClimateBot(settings, storage, bolt, deliverer, scheduler, poller=poller, socket=socket)
