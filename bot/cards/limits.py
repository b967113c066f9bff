"""Slack's Block Kit limits, and how much of each Stripe value and list a message shows.

``bot.cards.checks`` checks a message against Slack's limits; the cuts and budgets below them are
ours, and keep every message within them whatever Stripe sends.
"""

from __future__ import annotations

# Slack's documented limits (docs.slack.dev/reference/block-kit), checked by limit_problems.
MAX_BLOCKS = 50
MAX_HEADER = 150
MAX_SECTION_TEXT = 3000
MAX_FIELDS = 10
MAX_FIELD_TEXT = 2000
MAX_CONTEXT_ELEMENTS = 10
MAX_CONTEXT_TEXT = 3000
MAX_ACTIONS_ELEMENTS = 25
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2000
MAX_BUTTON_URL = 3000
MAX_ID = 255
MAX_CONFIRM_TITLE = 100
MAX_CONFIRM_TEXT = 300
MAX_CONFIRM_BUTTON = 30
# Slack cuts top-level text past 40,000 and chat.update rejects more than 4,000; we keep far less.
MAX_TEXT = 3000
# Undocumented: Slack answers msg_blocks_too_long somewhere around 13,000 chars of block text.
MAX_MESSAGE_BLOCK_TEXT = 12_000

# How much of each Stripe string we show. With these, the largest possible card stays under
# ~8,000 chars of block text, well inside MAX_MESSAGE_BLOCK_TEXT.
NAME_LIMIT = 80
ID_LIMIT = 100
PLACE_LIMIT = 40
URL_LIMIT = 500  # a longer URL is shown as text rather than as a link
SHOWN_URL_LIMIT = 80
LIST_BUDGET = 2500  # characters of one bulleted list in a section
PRICE_BUDGET = 1500
SUPPLIER_BUDGET_SHORT = 1200
TEXT_LIMIT = 600  # the notification text; anything longer is noise in a notification

DELIVERIES_SHOWN = 20
SUPPLIERS_SHOWN = 15
PRICES_SHOWN = 20
SUPPLIER_NAMES_SHOWN = 3
# On an order card, suppliers beyond these are counted ("Charm Industrial, Heirloom and 3 more");
# the product card and `/climate status` list them all.
CARD_SUPPLIER_NAMES = 2
REASON_LIMIT = 500  # characters of a decider's reason kept and shown

# A modal's title and the private_metadata that comes back with its submission (views.open).
MAX_MODAL_TITLE = 24
MAX_PRIVATE_METADATA = 3000
