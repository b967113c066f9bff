"""Orders, products and suppliers built from Stripe's fixtures, and the text a card shows."""

from __future__ import annotations

import copy
import json
from importlib import resources
from typing import Any

from bot.model import DECISION_WINDOW_SECONDS, Change, Message

FIXTURES = json.loads(
    resources.files("bot.sandbox")
    .joinpath("stripe_data/climate-fixtures.json")
    .read_text(encoding="utf-8")
)
DELAYED_AT = 1_790_000_000
DEADLINE = DELAYED_AT + DECISION_WINDOW_SECONDS


def make_order(**changes: Any) -> dict[str, Any]:
    """A confirmed order built from Stripe's fixture, with the fields a test cares about."""
    order = copy.deepcopy(FIXTURES["resources"]["climate.order"])
    order.update(
        status="confirmed",
        canceled_at=None,
        delayed_at=None,
        delivered_at=None,
        product_substituted_at=None,
    )
    order.update(changes)
    return order


def make_product(**changes: Any) -> dict[str, Any]:
    product = copy.deepcopy(FIXTURES["resources"]["climate.product"])
    product.update(changes)
    return product


def make_supplier(**changes: Any) -> dict[str, Any]:
    supplier = copy.deepcopy(FIXTURES["resources"]["climate.supplier"])
    supplier.update(changes)
    return supplier


def delay(old_year: int | None = 2027, new_year: int = 2028) -> Change:
    return Change(kind="delayed", at=DELAYED_AT, old_year=old_year, new_year=new_year)


def texts(message: Message, *, of_type: str | None = None) -> list[str]:
    """Every piece of text in the message: the fallback and each text object in the blocks
    (only those of type `of_type` when given: ``"mrkdwn"`` is everything Slack parses)."""
    found = [message.text]

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if isinstance(value.get("text"), str) and of_type in (None, value.get("type")):
                found.append(value["text"])
            for child in value.values():
                walk(child)
        elif isinstance(value, list):
            for child in value:
                walk(child)

    walk(message.blocks)
    return found
