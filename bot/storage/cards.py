"""Storage verbs about cards: the one Slack message an order or product has, and its channel."""

from __future__ import annotations

from typing import Any

from bot.jobs import CardJob

# Where a card is: its channel once posted, and the channel of its first queued "card" row.
_CARD_CHANNELS = (
    "(SELECT channel FROM cards WHERE key = :key) AS posted_channel,"
    f" (SELECT channel FROM outbox WHERE card_key = :key AND kind = '{CardJob.kind}'"
    " ORDER BY id LIMIT 1) AS queued_channel"
)


def card_key(kind: str, object_id: str) -> str:
    """The key of the one card an order or product ever has."""
    return f"{kind}:{object_id}"


class CardVerbs:
    """Where each card is (a part of `Storage`)."""

    def card(self, key: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT * FROM cards WHERE key = ?", (key,)).fetchone()
        return dict(row) if row else None

    def cards_of(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        """The cards of many orders or products in one query, by key."""
        if not keys:
            return {}
        marks = ",".join("?" * len(keys))
        rows = self.conn.execute(f"SELECT * FROM cards WHERE key IN ({marks})", keys).fetchall()
        return {r["key"]: dict(r) for r in rows}

    def card_channel(self, key: str) -> str | None:
        """The channel of a card that is posted or queued, else None."""
        posted, queued = self._card_channels(key)
        return posted or queued

    def _card_channels(self, key: str) -> tuple[str | None, str | None]:
        """The card's channel if it is posted, and its first queued card row's channel."""
        row = self.conn.execute(f"SELECT {_CARD_CHANNELS}", {"key": key}).fetchone()
        return row[0], row[1]
