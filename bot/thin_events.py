"""Thin events (Stripe event destinations, `v1.climate.*`): fetch the object, then ingest it.

The receiver records a thin event and queues a "fetch" job; this worker job asks Stripe for the
object the event names, as the SDK's `fetch_related_object` does (in the event's context), and
feeds a snapshot event built from it through the same path as webhooks. The snapshot takes the
id of the event's snapshot twin when Stripe names one (`snapshot_event`), and the change key makes
a thin event and its twin post once in either order.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from urllib.parse import quote

from bot.event_numbers import MalformedEvent, plausible_timestamp
from bot.jobs import FetchJob
from bot.recording import parse_event, record_event, thin_created
from bot.routing import Routing
from bot.storage import Lease, Storage
from bot.stripe_gateway import NotFound, StripeGateway

log = logging.getLogger(__name__)


class ThinEvents:
    """Carries out queued fetches of thin events' objects."""

    def __init__(
        self,
        storage: Storage,
        stripe: StripeGateway,
        routing: Routing,
        *,
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        self.storage = storage
        self.stripe = stripe
        self.routing = routing
        self.wake = wake

    def carry_out_fetch(self, lease: Lease, job: FetchJob) -> None:
        """Fetch the object of the thin event behind `lease` and ingest it as a snapshot event.

        Stripe being unreachable raises, so the worker retries the job with backoff.
        """
        thin = self.storage.event(lease.event_id or "")
        if thin is None:
            log.error("thin event %s is not recorded; nothing to fetch", lease.event_id)
            return
        kind, object_id = lease.card_key.split(":", 1)
        account = job.account
        try:
            obj = self.stripe.fetch_related_object(
                related_url(kind, object_id), context=account, event_id=thin["id"]
            ).data
        except NotFound:
            log.warning("thin event %s names %s, which Stripe does not know", thin["id"], object_id)
            return
        snapshot = {
            "id": job.snapshot_event or f"{thin['id']}-snapshot",
            "object": "event",
            "type": job.type,
            # The object was read now, so it may be fresher than the event that asked for it:
            # it is ordered by its own timestamps, or a later event's data would count as late.
            "created": max(thin_created(thin), latest_stamp(obj)),
            "livemode": bool(thin.get("livemode")),
            "pending_webhooks": 0,
            "request": None,
            "data": {"object": obj},
        }
        if account:
            snapshot["account"] = account
        raw = json.dumps(snapshot)
        try:
            # Checked as a webhook's body is: Stripe's answer is no more trusted than its events.
            parse_event(raw.encode("utf-8"))
        except MalformedEvent as exc:
            # Asking again would fetch the same object: not retried (as for an object Stripe
            # does not know), and nothing is recorded.
            log.warning(
                "thin event %s names %s, which cannot be kept: %s", thin["id"], object_id, exc
            )
            return
        received = record_event(
            self.storage,
            snapshot,
            raw,
            channel=self.routing.default_channel,
            routing=self.routing,
        )
        log.info("thin event %s → %s: %s", thin["id"], snapshot["type"], received.outcome.value)
        self.wake()


# An order's own timestamps: the latest says how far along the fetched object is.
_ORDER_STAMPS = (
    "created",
    "confirmed_at",
    "delayed_at",
    "product_substituted_at",
    "delivered_at",
    "canceled_at",
)


def latest_stamp(obj: dict) -> int:
    """The latest of an object's own unix timestamps (a product has only `created`); one out of
    range is left to the check of the snapshot, which names it."""
    stamps = [obj.get(name) for name in _ORDER_STAMPS]
    return max((s for s in stamps if plausible_timestamp(s)), default=0)


def related_url(kind: str, object_id: str) -> str:
    """The related object's API path, built from its id: never a URL taken from the event."""
    return f"/v1/climate/{'orders' if kind == 'order' else 'products'}/{quote(object_id, safe='')}"
