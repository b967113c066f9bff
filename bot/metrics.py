"""Prometheus metrics at `/metrics`.

Counters and the latency histogram are process-local; under gunicorn (`gunicorn.conf.py` sets
`PROMETHEUS_MULTIPROC_DIR`) prometheus-client adds up every worker's values. The outbox gauges are
read from the database at scrape time, so every process reports the same truth.
"""

from __future__ import annotations

import functools
import glob
import os
import time
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bot.model import HANDLED_EVENTS
from bot.storage import LONG_HOLD_SECONDS, Storage

# A `_created` series per counter and histogram doubles the scrape and no dashboard reads it.
disable_created_metrics()

EVENTS = Counter(
    "climate_bot_events_received",
    "Stripe webhook requests by event type and outcome (queued, duplicate, ignored, refused,"
    " unavailable).",
    ["type", "outcome"],
)
SLACK_CALLS = Counter(
    "climate_bot_slack_calls", "Slack Web API calls by method and result.", ["method", "result"]
)
DELIVERY_SECONDS = Histogram(
    "climate_bot_delivery_seconds",
    "From a Stripe event received to Slack accepting the message about it.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800),
)
DELIVERY_LOOKS = Counter(
    "climate_bot_delivery_looks",
    "Searches of the outbox by the delivery worker, by whether they found a row to deliver.",
    ["found"],
)
DECISIONS = Counter(
    "climate_bot_decisions", "Clicks on Accept/Cancel by action and outcome.", ["action", "outcome"]
)


def event_label(event_type: object) -> str:
    """Keep the label set small: the Climate types by name, everything else as "other"."""
    return event_type if event_type in HANDLED_EVENTS else "other"  # type: ignore[return-value]


def count_event(label: str, outcome: str) -> None:
    """Count one webhook request under `label` (`event_label`'s, or "unverified")."""
    _event_counter(label, outcome).inc()  # the label children are looked up once


@functools.cache
def _event_counter(label: str, outcome: str) -> Any:
    return EVENTS.labels(label, outcome)


class OutboxCollector(Collector):
    """Outbox depth, age of the oldest pending row, parked rows and held channels, read at
    scrape time."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def collect(self) -> Iterator[Metric]:
        depth, oldest = self.storage.outbox_backlog()
        counts = self.storage.outbox_counts()
        yield GaugeMetricFamily(
            "climate_bot_outbox_pending", "Messages waiting to be delivered to Slack.", value=depth
        )
        yield GaugeMetricFamily(
            "climate_bot_outbox_oldest_pending_age_seconds",
            "Age of the oldest message waiting for delivery (0 when none).",
            value=max(0.0, time.time() - oldest) if oldest else 0.0,
        )
        to_apply, oldest_recorded = self.storage.apply_backlog()
        yield GaugeMetricFamily(
            "climate_bot_events_to_apply",
            "Stripe events recorded by a webhook and not yet applied by the delivery worker.",
            value=to_apply,
        )
        yield GaugeMetricFamily(
            "climate_bot_events_to_apply_oldest_age_seconds",
            "Age of the oldest Stripe event waiting to be applied (0 when none).",
            value=max(0.0, time.time() - oldest_recorded) if oldest_recorded else 0.0,
        )
        yield GaugeMetricFamily(
            "climate_bot_events_parked",
            "Stripe events that could not be applied (climate-bot failed lists them).",
            value=len(self.storage.parked_events()),
        )
        yield GaugeMetricFamily(
            "climate_bot_outbox_failed",
            "Deliveries parked after a permanent error.",
            value=counts.get("failed", 0),
        )
        # Channels whose posting slot is taken now (pacing: a second after a post; a Slack rate
        # limit: up to MAX_RETRY_AFTER_SECONDS), and those held past a minute, as /healthz says.
        now = time.time()
        held = GaugeMetricFamily(
            "climate_bot_channel_held_seconds",
            "Seconds until climate-bot may post to the channel again, for channels held now.",
            labels=["channel"],
        )
        paced = self.storage.paced_channels(now)
        for channel, until in sorted(paced.items()):
            held.add_metric([channel], until - now)
        yield held
        yield GaugeMetricFamily(
            "climate_bot_channels_held_long",
            "Channels held by a Slack rate limit for more than a minute from now.",
            value=sum(until > now + LONG_HOLD_SECONDS for until in paced.values()),
        )
        # Replays run in a process of their own (climate-bot replay): counted from the record.
        recorded = CounterMetricFamily(
            "climate_bot_events_recorded",
            "Stripe events recorded from a source other than webhooks, by source.",
            labels=["source"],
        )
        for source, count in sorted(self.storage.events_by_source().items()):
            recorded.add_metric([source], count)
        yield recorded
        yield from self._readings(now)

    def _readings(self, now: float) -> Iterator[Metric]:
        """How the reading of Stripe's Events API stands, per account (STRIPE_POLL_INTERVAL)."""
        cursors = self.storage.poll_cursors()
        if not cursors:
            return
        age = GaugeMetricFamily(
            "climate_bot_stripe_events_read_age_seconds",
            "Seconds since Stripe's Events API last answered a whole reading, by account.",
            labels=["account"],
        )
        failing = GaugeMetricFamily(
            "climate_bot_stripe_events_failed_readings",
            "Readings of Stripe's Events API failed in a row, by account (0: the last succeeded).",
            labels=["account"],
        )
        for cursor in cursors:
            account = cursor.account or "platform"
            age.add_metric([account], max(0.0, now - cursor.polled_at))
            failing.add_metric([account], cursor.failures)
        yield age
        yield failing
        yield GaugeMetricFamily(
            "climate_bot_stripe_event_gaps",
            "Gaps longer than the 30 days Stripe keeps events, found and not yet acknowledged.",
            value=len(self.storage.open_gaps()),
        )


class _WorkerFiles(multiprocess.MultiProcessCollector):
    """Every gunicorn worker's values, skipping a file a worker is creating at this moment.

    prometheus-client creates a worker's file empty and only then gives it its size and header;
    read in between, it raised `struct.error` and the scrape answered 500 (a histogram's file is
    created when the delivery worker first observes a delivery, at any time). Files only grow,
    so a file of at least a header's size is whole.
    """

    def collect(self) -> Iterable[Metric]:
        files = [
            path
            for path in glob.glob(os.path.join(self._path, "*.db"))
            if _size(path) >= _FILE_HEADER_BYTES
        ]
        return self.merge(files, accumulate=True)


_FILE_HEADER_BYTES = 8  # the used-bytes count and its padding


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:  # a dead worker's file, removed meanwhile
        return 0


class _ProcessMetrics(Collector):
    """This process's own counters, when not running with several gunicorn workers."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def render(storage: Storage) -> tuple[bytes, str]:
    """The scrape body and its content type."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        _WorkerFiles(registry)
    else:
        registry.register(_ProcessMetrics())
    registry.register(OutboxCollector(storage))
    return generate_latest(registry), CONTENT_TYPE_LATEST
