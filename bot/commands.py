"""`/climate …` and the App Home: answers about orders and products, ephemeral.

Each subcommand is one method returning a `Message`; anything unrecognised answers the usage.
`status` and `products` ask Stripe (with a short time-out, falling back to what the database
knows) and `status`, `orders` and `pending` ask Slack for card links, so the listener
acknowledges first and answers through the response_url. Only the usage and `history`, made
from the text and the database alone (`Commands.answers_offline`), are answered in the
acknowledgement itself.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from bot import cards
from bot.event_numbers import INT64_MAX, INT64_MIN
from bot.formatting import escape_mrkdwn
from bot.i18n import N_, _
from bot.model import ORDER_ID, Message
from bot.slack_gateway import SlackGateway
from bot.storage import Storage, card_key
from bot.stripe_gateway import NotFound, StripeFailure, StripeGateway

log = logging.getLogger(__name__)

USAGE = N_(
    "*Usage:* `/climate <subcommand>`\n"
    "• `status <order_id>` — an order as Stripe has it now\n"
    "• `orders [open|confirmed|delayed|delivered|canceled]` — orders, newest first\n"
    "• `products` — what Frontier sells now\n"
    "• `pending` — orders awaiting a decision\n"
    "• `history <order_id>` — everything that happened to an order\n"
    "• `help` — this message\n"
    "Example: `/climate status climorder_1Pgc73B7WZ01zgkWaebIwEZ7`"
)
PRODUCTS_CACHE_SECONDS = 300.0
# Subcommands answered from the database alone. Any other (and any added later) may ask Slack
# or Stripe, which can take longer than Slack's 3 seconds: it is acknowledged first.
OFFLINE_SUBCOMMANDS = ("history",)


class Commands:
    """The `/climate` subcommands and the App Home view."""

    def __init__(
        self,
        storage: Storage,
        slack: SlackGateway,
        stripe: StripeGateway,
        *,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.storage = storage
        self.slack = slack
        self.stripe = stripe  # with a short time-out: a person is waiting
        self.now = now
        self._products: tuple[float, list[dict[str, Any]]] | None = None
        self._lock = threading.Lock()

    @staticmethod
    def answers_offline(text: str) -> bool:
        """True when `/climate <text>` is answered without asking Slack or Stripe (the usage,
        `history`): the answer may go in the acknowledgement. Otherwise acknowledge first and
        answer through the response_url."""
        parsed = _parse(text)
        return parsed is None or parsed[0] in OFFLINE_SUBCOMMANDS

    def answer(self, text: str) -> Message:
        """The answer to `/climate <text>`."""
        parsed = _parse(text)
        if parsed is None:
            return usage()
        name, arg = parsed
        if name == "status":
            return self.status(str(arg))
        if name == "history":
            return self.history(str(arg))
        if name == "orders":
            return self.orders(arg)
        if name == "products":
            return self.products()
        return self.pending()

    # -- subcommands -----------------------------------------------------------------------

    def status(self, order_id: str) -> Message:
        if not ORDER_ID.match(order_id):
            return no_order(order_id)
        row = self.storage.order_row(order_id)
        as_of: float | None = None
        try:
            order = self.stripe.retrieve_order(
                order_id, account=row["account"] if row else None
            ).data
        except NotFound:
            return no_order(order_id)
        except StripeFailure as exc:
            log.info("status of %s from the database: %s", order_id, exc)
            if row is None:
                return Message(
                    text=_(
                        "Stripe could not be reached and climate-bot has no record of {order_id}."
                    ).format(order_id=escape_mrkdwn(order_id[:100]))
                )
            order, as_of = row["snapshot"], row["updated_at"]
        state = self.storage.order_state(order_id, order=order)
        card = self.storage.card(card_key("order", order_id))
        link = self.slack.permalink(card["channel"], card["ts"]) if card else None
        return cards.status_answer(state, int(self.now()), as_of=as_of, card_link=link)

    def history(self, order_id: str) -> Message:
        row = self.storage.order_row(order_id)
        if row is None:
            return no_order(order_id)
        return cards.history_answer(
            order_id,
            self.storage.order_events(order_id),
            self.storage.audit_rows(order_id),
            row["snapshot"],
        )

    def orders(self, filter_name: str | None, cursor: str | None = None) -> Message:
        """A page of orders; `cursor` is the Next button's value from the previous page."""
        try:
            before = _decode_cursor(cursor)
        except ValueError:
            return stale_page_link()
        kwargs: dict[str, Any] = {}
        if filter_name == "delayed":
            kwargs["change_kind"] = "delayed"
        elif filter_name:
            kwargs["status"] = filter_name
        rows = self.storage.list_orders(before=before, limit=cards.ORDERS_PER_PAGE + 1, **kwargs)
        page, more = rows[: cards.ORDERS_PER_PAGE], len(rows) > cards.ORDERS_PER_PAGE
        next_cursor = (
            _encode_cursor(filter_name, page[-1]["created"], page[-1]["id"]) if more else None
        )
        return cards.orders_page(
            page, filter_name=filter_name, next_cursor=next_cursor, links=self._links(page)
        )

    def next_orders(self, cursor: str) -> Message:
        """The page after the one whose Next button carried `cursor`."""
        filter_name = cursor.split("|", 1)[0] or None
        if not cursor or (filter_name is not None and filter_name not in cards.ORDER_FILTERS):
            return stale_page_link()
        return self.orders(filter_name, cursor)

    def products(self) -> Message:
        now = self.now()
        with self._lock:
            cached = self._products
        if cached and now - cached[0] < PRODUCTS_CACHE_SECONDS:
            return cards.products_answer(cached[1], as_of=None, now=int(now))
        try:
            products = self.stripe.list_products()
        except StripeFailure as exc:
            log.info("products from the database: %s", exc)
            known = self.storage.known_products()
            as_of = max((p["updated_at"] for p in known), default=now)
            return cards.products_answer([p["snapshot"] for p in known], as_of=as_of, now=int(now))
        with self._lock:
            self._products = (now, products)
        return cards.products_answer(products, as_of=None, now=int(now))

    def pending(self) -> Message:
        now = self.now()
        rows = self.storage.pending_decisions(now)
        total = self.storage.count_pending_decisions(now)
        return cards.pending_answer(rows, self._links(rows), total)

    def home(self) -> dict[str, Any]:
        """The App Home view: pending decisions, latest events, health."""
        pending = self.storage.pending_decisions(self.now(), limit=cards.HOME_LIST_SHOWN)
        return cards.home_view(
            pending,
            self.storage.recent_events(cards.HOME_LIST_SHOWN),
            last_event_at=self.storage.last_event_received_at(),
            failed_deliveries=len(self.storage.failures()),
            links=self._links(pending),
        )

    def _links(self, rows: list[dict[str, Any]]) -> dict[str, str]:
        """Card links for a list of orders: one query for the cards, no Slack call per row."""
        found = self.storage.cards_of([card_key("order", r["id"]) for r in rows])
        links = {}
        for key, card in found.items():
            link = self.slack.message_link(card["channel"], card["ts"])
            if not link:
                # Every link comes from the one workspace URL: without it there is none, and
                # asking Slack again for each row would keep the person waiting.
                break
            links[key.split(":", 1)[1]] = link
        return links


def usage() -> Message:
    return Message(text=_(USAGE))


def _parse(text: str) -> tuple[str, str | None] | None:
    """`/climate <text>` as (subcommand, its argument), or None when the usage is the answer."""
    words = (text or "").split()
    name, args = (words[0].lower(), words[1:]) if words else ("help", [])
    if name in ("status", "history") and len(args) == 1:
        return name, args[0]
    if name == "orders" and len(args) <= 1:
        wanted = args[0].lower() if args else None
        if wanted is None or wanted in cards.ORDER_FILTERS:
            return name, wanted
    if name in ("products", "pending") and not args:
        return name, None
    return None


def no_order(order_id: str) -> Message:
    return Message(text=_("No order {order_id}.").format(order_id=escape_mrkdwn(order_id[:100])))


def stale_page_link() -> Message:
    """The answer to a Next button whose value is not a page of ours (or no longer is one)."""
    return Message(text=_("That page link is no longer valid. Run `/climate orders` again."))


def _encode_cursor(filter_name: str | None, created: int, order_id: str) -> str:
    return f"{filter_name or ''}|{created}|{order_id}"


# The `created` of the last order of a page, as `_encode_cursor` writes it: an integer SQLite can
# compare (signed 64-bit), in ASCII digits (int() would also take "+1", " 1", "1_0", "١").
_CURSOR_CREATED = re.compile(r"-?[0-9]{1,19}")


def _decode_cursor(cursor: str | None) -> tuple[int, str] | None:
    """The keyset (created, order id) a Next button carries; None for the first page. Raises
    ValueError for a value no page of ours carries: the listener answers, never crashes."""
    if not cursor:
        return None
    _filter, created, order_id = cursor.split("|", 2)  # too few parts: ValueError
    if not _CURSOR_CREATED.fullmatch(created):
        raise ValueError("not a page of ours")
    value = int(created)
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError("created out of range")
    return value, order_id
