"""The states climate-bot keeps and renders: what a card shows, what a thread reply says.

These are plain frozen dataclasses built by the storage layer from the database and handed to the
pure renderers in ``bot.cards``. Stripe objects are kept as the JSON dicts Stripe sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

DECISION_WINDOW_SECONDS = 30 * 24 * 60 * 60

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


def refund_amount(order: StripeObject) -> int:
    """What Stripe refunds for a cancelled order, in minor units.

    Frontier's cancels refund everything. A cancel the team requested refunds the whole total when
    it answers a delay or substitution (Stripe's 30-day policy: "full refund"), and otherwise only
    the subtotal: Frontier keeps its fees (API reference, cancel).
    """
    total = order.get("amount_total")
    subtotal = order.get("amount_subtotal")
    answered_change = order.get("delayed_at") or order.get("product_substituted_at")
    if order.get("cancellation_reason") == "requested" and not answered_change:
        return subtotal if isinstance(subtotal, int) else 0
    return total if isinstance(total, int) else 0


def fees_kept(order: StripeObject) -> bool:
    """True when a cancelled order's refund leaves out Frontier's fees."""
    return refund_amount(order) != order.get("amount_total")


@dataclass(frozen=True)
class Decision:
    """What the team decided about the current change, who decided, and when."""

    kind: Literal["accepted", "cancelling", "cancelled"]
    by: str  # Slack user id
    at: int  # unix seconds
    refund: int | None = None  # cancelled: amount refunded, in the order's minor units


@dataclass(frozen=True)
class Notice:
    """A thread reply that is not a Stripe event: a decision recorded, or a reminder."""

    kind: Literal["decision", "reminder"]
    order: StripeObject
    change: Change | None = None
    decision: Decision | None = None
    days_left: int | None = None  # reminder
    mentions: tuple[str, ...] = ()  # reminder: who may decide (user and user-group ids)


@dataclass(frozen=True)
class OrderState:
    """Everything the order's card shows: the newest snapshot and the change awaiting a decision."""

    order: StripeObject
    product: StripeObject | None  # the order's product snapshot, when known
    headline_event: str  # the event type that last moved the card forward
    change: Change | None = None  # the latest delay/substitution, if any
    account: str | None = None  # Connect account the event came from
    decision: Decision | None = None  # the decision on `change`, once made


@dataclass(frozen=True)
class OrderUpdate:
    """One event on an order, for the reply in the card's thread."""

    event_type: str
    event_created: int
    order: StripeObject  # the order as this event carried it
    product: StripeObject | None = None
    change: Change | None = None  # delayed / substituted: old → new
    late: bool = False  # older than what the card shows: recorded, the card did not move


@dataclass(frozen=True)
class ProductState:
    """Everything a product's card shows."""

    product: StripeObject
    headline_event: str
    account: str | None = None


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
