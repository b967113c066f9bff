"""`climate-bot trigger`: POST a realistic, correctly signed Climate event to a running bot.

The local equivalent of `stripe trigger`, for checking a deployment end to end: the event is built
from Stripe's fixtures (`bot.sandbox.stripe_objects`), signed with the webhook secret the bot
verifies with, and sent to its `/stripe/webhook`. Only STRIPE_WEBHOOK_SECRET and PORT are read, so
it works from a shell that has no Slack or Stripe API keys.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.formatting import format_money
from bot.model import HANDLED_EVENTS, ORDER_EVENTS
from bot.sandbox import stripe_objects
from bot.settings import DESCRIPTIONS, SettingsError, WebhookSecret, _problems

TRIGGER_TYPES = HANDLED_EVENTS

PRICE_CHANGE_PERCENT = 6  # pricing_updated raises every price per tonne by this much


class UnknownEventType(ValueError):
    """The event type is not one of the seven Climate events climate-bot handles."""


class BotUnreachable(Exception):
    """Nothing answered at the URL (the bot is not running there, or the network is down)."""


class TriggerSettings(BaseSettings):
    """The two settings `trigger` needs, read like `Settings` (environment, then `.env`)."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=True
    )

    STRIPE_WEBHOOK_SECRET: WebhookSecret = Field(repr=False)
    PORT: int = Field(default=3000, ge=1, le=65535)

    @property
    def webhook_url(self) -> str:
        """Where a bot started with `python app.py` or `climate-bot serve` on this host listens."""
        return f"http://127.0.0.1:{self.PORT}/stripe/webhook"


def load_trigger_settings(
    env: Mapping[str, str] | None = None, *, env_file: str | Path | None = ".env"
) -> TriggerSettings:
    """Read STRIPE_WEBHOOK_SECRET and PORT; raise SettingsError naming what is wrong."""
    try:
        if env is None:
            return TriggerSettings(_env_file=env_file)  # type: ignore[call-arg]
        return TriggerSettings.model_validate({k: v for k, v in env.items() if k in DESCRIPTIONS})
    except ValidationError as exc:
        raise SettingsError(_problems(exc)) from None


@dataclass(frozen=True)
class TriggerResult:
    """What was sent and what the bot answered."""

    event: dict[str, Any]
    url: str
    status: int
    answer: str

    @property
    def accepted(self) -> bool:
        return 200 <= self.status < 300


def build_event(
    event_type: str, *, order_id: str | None = None, now: int | None = None
) -> dict[str, Any]:
    """A snapshot event of `event_type` as Stripe would send it now.

    Order events carry a lifecycle-consistent order with id `order_id` (a fresh one when None),
    so triggers run one after another with the same id tell one order's story: its `created` is
    the start of the current UTC day, and the event's own timestamp (`delayed_at`, …) is now.
    Product events carry the fixture product (Frontier's 2027 offtake portfolio).
    """
    if event_type not in TRIGGER_TYPES:
        raise UnknownEventType(event_type)
    now = int(time.time()) if now is None else now
    placed = now - now % 86_400
    if event_type in ORDER_EVENTS:
        return stripe_objects.event(
            event_type,
            _order_for(event_type, order_id or stripe_objects.new_id("climorder"), placed, now),
            created=now,
            # Only the order's creation is the team's own API call; Frontier does the rest.
            request_id=stripe_objects.new_id("req") if event_type.endswith(".created") else None,
        )
    product = stripe_objects.product(created=placed)
    if event_type == "climate.product.pricing_updated":
        product["current_prices_per_metric_ton"] = {
            currency: stripe_objects.price_per_ton(
                price["amount_total"] * (100 + PRICE_CHANGE_PERCENT) // 100
            )
            for currency, price in product["current_prices_per_metric_ton"].items()
        }
    # No previous_attributes: Stripe documents them only for `*.updated` events, not Climate's,
    # so the bot must compare with the product it already knows, and this checks that it does.
    return stripe_objects.event(event_type, product, created=now)


def _order_for(event_type: str, order_id: str, placed: int, now: int) -> dict[str, Any]:
    confirmed = stripe_objects.order("confirmed", id=order_id, created=placed)
    if event_type == "climate.order.delayed":
        return stripe_objects.delayed(confirmed, confirmed["expected_delivery_year"] + 1, now)
    if event_type == "climate.order.product_substituted":
        # Frontier swaps in its next portfolio, delivered a year later.
        year = confirmed["expected_delivery_year"] + 1
        substitute = stripe_objects.product(delivery_year=year)
        return stripe_objects.substituted(
            confirmed, substitute["id"], now, expected_delivery_year=year
        )
    if event_type == "climate.order.delivered":
        return stripe_objects.order("delivered", id=order_id, created=placed, delivered_at=now)
    if event_type == "climate.order.canceled":
        # Frontier's own cancel (the team cancels from Slack): a full refund, nothing to decide.
        return stripe_objects.order(
            "canceled",
            id=order_id,
            created=placed,
            canceled_at=now,
            cancellation_reason="product_unavailable",
        )
    return confirmed


def send_event(
    event: Mapping[str, Any], url: str, secret: str, *, timeout: float = 10.0
) -> TriggerResult:
    """POST `event` signed with `secret`, exactly as Stripe would; raise BotUnreachable when
    nothing answers."""
    body, headers = stripe_objects.webhook_request(event, secret)
    try:
        response = requests.post(url, data=body, headers=headers, timeout=timeout)
    except requests.RequestException as exc:
        # The exception's text repeats the URL inside urllib3 internals; its kind says enough.
        raise BotUnreachable(f"nothing answered at {url} ({type(exc).__name__})") from None
    return TriggerResult(dict(event), url, response.status_code, response.text.strip())


def describe(event: Mapping[str, Any]) -> str:
    """One line naming the event and what it says, for the operator."""
    obj = event["data"]["object"]
    detail = ""
    if event["type"] == "climate.order.delayed":
        detail = f", delivery now expected in {obj['expected_delivery_year']}"
    elif event["type"] == "climate.order.product_substituted":
        detail = f", product now {obj['product']}"
    elif event["type"] == "climate.order.canceled":
        detail = f", reason {obj['cancellation_reason']}"
    elif event["type"] == "climate.product.pricing_updated":
        prices = obj["current_prices_per_metric_ton"]
        detail = ", per tonne " + ", ".join(
            format_money(p["amount_total"], cur) for cur, p in sorted(prices.items())
        )
    return f"{event['type']} {event['id']} ({obj['object']} {obj['id']}{detail})"
