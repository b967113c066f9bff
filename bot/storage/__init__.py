"""Storage: every SQL statement climate-bot runs lives in this package, behind verbs.

One idea per class, as sqlite-utils keeps them, composed into the one `Storage` object the bot
opens per application:

- ``engine``: connections, the write locks, transactions, group commit, checkpoints, and whether
  the file can still be written (`StorageUnavailable`);
- ``schema``: the tables, as migrations;
- the verbs, by what they are about: ``events``, ``orders`` (with decisions and products),
  ``outbox``, ``cards``, ``states`` (rows read as the states a card shows) and ``polling``
  (reading Stripe's Events API: cursors, gaps, leases).
"""

from __future__ import annotations

from bot.storage.cards import CardVerbs, card_key
from bot.storage.engine import (
    CHECKPOINT_EVERY_WRITES,
    MIN_FREE_BYTES,
    READ_CACHE_KIB,
    Engine,
    StorageUnavailable,
    cannot_write,
)
from bot.storage.events import EventVerbs
from bot.storage.orders import OrderVerbs
from bot.storage.outbox import LONG_HOLD_SECONDS, Failure, Lease, OutboxVerbs
from bot.storage.polling import EventGap, PollCursor, PollingVerbs
from bot.storage.schema import migrations
from bot.storage.states import StateVerbs


class Storage(EventVerbs, OrderVerbs, StateVerbs, OutboxVerbs, CardVerbs, PollingVerbs, Engine):
    """The database, opened per application; thread-safe through per-thread connections."""


__all__ = [
    "CHECKPOINT_EVERY_WRITES",
    "LONG_HOLD_SECONDS",
    "MIN_FREE_BYTES",
    "READ_CACHE_KIB",
    "EventGap",
    "Failure",
    "Lease",
    "PollCursor",
    "Storage",
    "StorageUnavailable",
    "cannot_write",
    "card_key",
    "migrations",
]
