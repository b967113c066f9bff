"""The states climate-bot keeps and renders: what a card shows, what a thread reply says.

These are plain frozen dataclasses built by the storage layer from the database and handed to the
pure renderers in ``bot.cards``. Stripe objects are kept as the JSON dicts Stripe sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

DECISION_WINDOW_SECONDS = 30 * 24 * 60 * 60

# The longest climate-bot waits on Slack's word (`Retry-After` on a 429) before posting to a
# channel again. Slack asks for a second up to about a minute; a larger value is a proxy's or a
# bug's, and taken as it came it kept a channel silent for good (the hold is stored). Two minutes
# leaves room for Slack's real values and bounds the cost of a wrong one.
MAX_RETRY_AFTER_SECONDS = 120.0

# What a Stripe Climate order id looks like; anything else from Slack names no order of ours.
ORDER_ID = re.compile(r"^climorder_[A-Za-z0-9]{1,200}$")

ORDER_EVENTS = (
    "climate.order.created",
    "climate.order.delayed",
    "climate.order.product_substituted",
    "climate.order.delivered",
    "climate.order.canceled",
)
PRODUCT_EVENTS = (
    "climate.product.created",
    "climate.product.pricing_updated",
)
HANDLED_EVENTS = ORDER_EVENTS + PRODUCT_EVENTS

# Order statuses after which nothing can be decided any more.
FINAL_STATUSES = ("delivered", "canceled")

# Buttons on a card: their action_id, and the order id as their value.
ACCEPT_ACTION = "accept_change"
CANCEL_ACTION = "cancel_order"

StripeObject = dict[str, Any]


@dataclass(frozen=True)
class Change:
    """A delay or a product substitution: what changed, and when the decision window closes."""

    kind: Literal["delayed", "product_substituted"]
    at: int  # delayed_at / product_substituted_at, unix seconds
    old_year: int | None = None  # delayed: expected_delivery_year before, when known
    new_year: int | None = None  # delayed: expected_delivery_year after
    old_product: StripeObject | None = None  # substituted: product before ({"id": …} at least)
    new_product: StripeObject | None = None  # substituted: product after

    @property
    def decision_deadline(self) -> int:
        """Unix time at which the 30-day window to cancel for a full refund closes."""
        return self.at + DECISION_WINDOW_SECONDS


# Which rule gives a refund figure. Stripe's cancel answers carry no refund amount, so every
# figure the bot shows is an expectation derived from one of these documented rules.
RefundRule = Literal["change_window", "self_service", "frontier", "not_confirmed", "unknown"]


@dataclass(frozen=True)
class ExpectedRefund:
    """What Stripe is expected to refund for a cancel, and the rule that says so.

    `amount` is in the order's minor units; None when nothing is refunded (`not_confirmed`) or
    no documented rule applies (`unknown`).
    """

    amount: int | None
    rule: RefundRule


def _whole(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def expected_refund(
    order: StripeObject,
    *,
    reason: str | None = None,
    at: float | None = None,
    change: Change | None = None,
) -> ExpectedRefund:
    """The refund a cancel of `order` is expected to bring, by the rule that applies.

    - An order that was never confirmed (`expired`, or still `open`/`awaiting_funds`) was never
      paid for: no refund.
    - Frontier's own cancel (`product_unavailable`) refunds `amount_total` (API reference).
    - A cancel the team asks for within 30 days of a delay or substitution refunds in full,
      `amount_total` (Stripe's Climate webhooks guide).
    - Any other cancel the team asks for refunds `amount_subtotal`; Frontier keeps
      `amount_fees` (API reference, cancel an order).

    `reason` is the cancellation reason to assume (default: the order's own); a cancel being
    asked for now is `requested`. `at` is when the cancel was asked for (default: the order's
    `canceled_at`); `change` the delay or substitution it answers, when the bot knows it.
    """
    reason = reason if reason is not None else order.get("cancellation_reason")
    status = order.get("status")
    if reason == "expired" or (
        status in ("open", "awaiting_funds") and reason not in ("product_unavailable",)
    ):
        return ExpectedRefund(None, "not_confirmed")
    total, subtotal = _whole(order.get("amount_total")), _whole(order.get("amount_subtotal"))
    if reason == "product_unavailable":
        return ExpectedRefund(total, "frontier")
    if reason == "requested":
        when = at if at is not None else _whole(order.get("canceled_at"))
        changes = [_whole(order.get(f)) for f in ("delayed_at", "product_substituted_at")]
        if change is not None:
            changes.append(change.at)
        for changed_at in filter(None, changes):
            if when is None or changed_at <= when <= changed_at + DECISION_WINDOW_SECONDS:
                return ExpectedRefund(total, "change_window")
        return ExpectedRefund(subtotal, "self_service")
    return ExpectedRefund(None, "unknown")


@dataclass(frozen=True)
class Decision:
    """What the team decided about the current change, who decided, and when."""

    kind: Literal["accepted", "cancelling", "cancelled"]
    by: str  # Slack user id
    at: int  # unix seconds
    refund: ExpectedRefund | None = None  # cancelled: what Stripe is expected to refund
    reason: str | None = None  # cancelling / cancelled: the reason the decider gave, as typed


@dataclass(frozen=True)
class Notice:
    """A thread reply that is not a Stripe event: a decision recorded, or a reminder."""

    kind: Literal["decision", "reminder", "closed", "decision_needed"]
    order: StripeObject
    change: Change | None = None
    decision: Decision | None = None
    days_left: int | None = None  # reminder
    mentions: tuple[str, ...] = ()  # who may decide (user and user-group ids), to be pinged


@dataclass(frozen=True)
class OrderState:
    """Everything the order's card shows: the newest snapshot and the change awaiting a decision."""

    order: StripeObject
    product: StripeObject | None  # the order's product snapshot, when known
    headline_event: str  # the event type that last moved the card forward
    change: Change | None = None  # the latest delay/substitution, if any
    account: str | None = None  # Connect account the event came from
    decision: Decision | None = None  # the decision on `change`, once made
    # A delay or substitution that arrived while a cancel was being carried out: decided once
    # the cancel settles (cancelled: nothing left to decide; refused: its window opens).
    next_change: Change | None = None


@dataclass(frozen=True)
class OrderUpdate:
    """One event on an order, for the reply in the card's thread."""

    event_type: str
    event_created: int
    order: StripeObject  # the order as this event carried it
    product: StripeObject | None = None
    change: Change | None = None  # delayed / substituted: old → new
    late: bool = False  # older than what the card shows: recorded, the card did not move
    broadcast: bool = False  # sent to the channel too, away from the card
    mentions: tuple[str, ...] = ()  # the deciders to ping
    cancelled_by: str | None = None  # canceled: the decider whose cancel this confirms


@dataclass(frozen=True)
class ProductState:
    """Everything a product's card shows."""

    product: StripeObject
    headline_event: str
    account: str | None = None
    # The prices per tonne before the last price change (currency → price), when one is known:
    # the product card shows old → new.
    old_prices: dict[str, dict[str, int]] | None = None


@dataclass(frozen=True)
class ProductUpdate:
    """One event on a product, for the reply in the product card's thread."""

    event_type: str
    event_created: int
    product: StripeObject
    old_prices: dict[str, dict[str, int]] | None = None  # pricing_updated: prices before
    late: bool = False


@dataclass(frozen=True)
class Message:
    """A Slack message: Block Kit blocks plus the plain-text fallback for notifications."""

    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)
