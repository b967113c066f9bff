"""`/climate …`: answers about orders, ephemeral, from the database.

Each subcommand is one function returning a `Message`; anything unrecognised answers the usage.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from bot import cards
from bot.formatting import escape_mrkdwn
from bot.i18n import N_, _
from bot.model import Message
from bot.storage import Storage

USAGE = N_(
    "*Usage:* `/climate <subcommand>`\n"
    "• `status <order_id>` — an order as Stripe has it now\n"
    "• `orders` — recent orders\n"
    "• `products` — what Frontier sells now\n"
    "• `pending` — orders awaiting a decision\n"
    "• `history <order_id>` — everything that happened to an order\n"
    "• `help` — this message\n"
    "Example: `/climate status climorder_1Pgc73B7WZ01zgkWaebIwEZ7`"
)


class Commands:
    """The `/climate` subcommands."""

    def __init__(self, storage: Storage, *, now: Callable[[], float] = time.time) -> None:
        self.storage = storage
        self.now = now

    def answer(self, text: str) -> Message:
        """The answer to `/climate <text>`."""
        words = (text or "").split()
        name, args = (words[0].lower(), words[1:]) if words else ("help", [])
        if name == "history" and len(args) == 1:
            return self.history(args[0])
        if name == "pending" and not args:
            return self.pending()
        return usage()

    def history(self, order_id: str) -> Message:
        if self.storage.order_row(order_id) is None:
            return _plain(_("No order {order_id}.").format(order_id=order_id[:100]))
        return cards.history_answer(
            order_id, self.storage.order_events(order_id), self.storage.audit_rows(order_id)
        )

    def pending(self) -> Message:
        return cards.pending_answer(self.storage.pending_decisions(self.now()))


def usage() -> Message:
    return Message(text=_(USAGE))


def _plain(text: str) -> Message:
    return Message(text=escape_mrkdwn(text))
