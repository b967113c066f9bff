"""Pure renderers: an order's or product's state → the Slack message that shows it.

Handlers change state, then call these to (re)build the card or a thread reply; nothing here does
I/O or reads the clock (``now`` is passed in). Every Stripe-supplied string is hostile: it is
escaped before it reaches mrkdwn and cut to a fixed size, and every list is summarised, so a card
stays within Slack's Block Kit limits whatever Stripe sends. ``limit_problems`` checks that.

Every word comes from the catalog of the active locale (``bot.i18n.use_locale``): labels are
marked with ``N_`` where defined and translated with ``_`` when rendered, and sentences are whole
catalog entries with named placeholders, so a translation can put the parts in its own order.

By audience: ``orders`` (the order card and its thread replies, for the channel), ``deciders``
(notices, the direct message and the cancel dialog, for those who decide), ``products`` (the
product card and its replies), ``notices`` (the bot's own messages about itself, for the channel)
and ``answers`` (``/climate`` and the App Home tab, for the person
who asked). Beneath them: ``changes`` (what a change and its decision say), ``blocks`` (Block Kit
builders, readers of Stripe values) and ``limits`` (Slack's limits, the sizes we cut to);
``checks`` holds ``limit_problems``.

This package re-exports only what the rest of the bot and the tests use (``__all__``); everything
else is imported from its module.
"""

from bot.cards.answers import (
    HOME_LIST_SHOWN,
    ORDER_FILTERS,
    ORDERS_NEXT_ACTION,
    ORDERS_PER_PAGE,
    history_answer,
    home_view,
    orders_page,
    pending_answer,
    products_answer,
    status_answer,
)
from bot.cards.changes import refund_sentence
from bot.cards.checks import limit_problems
from bot.cards.deciders import (
    CANCEL_MODAL,
    REASON_BLOCK,
    REASON_INPUT,
    cancel_modal,
    decision_direct_message,
    notice_view,
    order_notice,
)
from bot.cards.limits import REASON_LIMIT
from bot.cards.notices import events_gap_notice
from bot.cards.orders import order_card, order_reply
from bot.cards.products import product_card, product_reply

__all__ = [
    "CANCEL_MODAL",
    "HOME_LIST_SHOWN",
    "ORDERS_NEXT_ACTION",
    "ORDERS_PER_PAGE",
    "ORDER_FILTERS",
    "REASON_BLOCK",
    "REASON_INPUT",
    "REASON_LIMIT",
    "cancel_modal",
    "decision_direct_message",
    "events_gap_notice",
    "history_answer",
    "home_view",
    "limit_problems",
    "notice_view",
    "order_card",
    "order_notice",
    "order_reply",
    "orders_page",
    "pending_answer",
    "product_card",
    "product_reply",
    "products_answer",
    "refund_sentence",
    "status_answer",
]
