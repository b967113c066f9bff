"""Storage verbs about events: Stripe's, recorded and looked back on; Slack's, deduplicated."""

from __future__ import annotations

import json
import time
from typing import Any


class EventVerbs:
    """Recording events and reading them back (a part of `Storage`)."""

    def insert_event(
        self,
        *,
        event_id: str,
        type: str,
        object_kind: str | None,
        object_id: str | None,
        created: int,
        livemode: bool,
        account: str | None,
        handled: bool,
        payload: str,
        change_key: str | None = None,
        source: str | None = None,
    ) -> bool:
        """Record an event; False when its id, or the change it tells, was already recorded.

        `source`: where it came from when not a webhook (``"replay"``)."""
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO events (id, type, object_kind, object_id, created, livemode,"
            " account, handled, received_at, payload, change_key, source)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                event_id,
                type,
                object_kind,
                object_id,
                created,
                int(livemode),
                account,
                int(handled),
                time.time(),
                payload,
                change_key,
                source,
            ),
        )
        return cur.rowcount == 1

    def events_by_source(self) -> dict[str, int]:
        """How many events came from each source other than webhooks (a replay)."""
        rows = self.conn.execute(
            "SELECT source, count(*) FROM events INDEXED BY events_by_source"
            " WHERE source IS NOT NULL GROUP BY source"
        ).fetchall()
        return {row[0]: row[1] for row in rows}

    def known_accounts(self) -> list[str]:
        """The Connect accounts orders and products have come from."""
        rows = self.conn.execute(
            "SELECT account FROM orders WHERE account IS NOT NULL"
            " UNION SELECT account FROM products WHERE account IS NOT NULL ORDER BY 1"
        ).fetchall()
        return [row[0] for row in rows]

    def mark_event_late(self, event_id: str) -> None:
        self.conn.execute("UPDATE events SET late = 1 WHERE id = ?", (event_id,))

    def event(self, event_id: str) -> dict[str, Any] | None:
        """The recorded event envelope as Stripe sent it."""
        row = self.conn.execute("SELECT payload FROM events WHERE id = ?", (event_id,)).fetchone()
        return json.loads(row["payload"]) if row else None

    def count_events(self) -> int:
        return self.conn.execute("SELECT count(*) FROM events").fetchone()[0]

    def last_event_received_at(self) -> float | None:
        row = self.conn.execute(
            "SELECT received_at FROM events ORDER BY rowid DESC LIMIT 1"
        ).fetchone()
        return row[0] if row else None

    def order_events(self, order_id: str) -> list[dict[str, Any]]:
        """The order's recorded events in time order (id, type, created, late)."""
        rows = self.conn.execute(
            "SELECT id, type, created, late, received_at FROM events WHERE object_id = ?"
            " ORDER BY created, received_at",
            (order_id,),
        ).fetchall()
        return [dict(r) for r in rows]

    def recent_events(self, limit: int = 10) -> list[dict[str, Any]]:
        """The latest Climate events received, newest first."""
        rows = self.conn.execute(
            "SELECT id, type, object_id, created, received_at, late FROM events"
            " WHERE handled = 1 ORDER BY rowid DESC LIMIT ?",  # rows are never deleted
            (limit,),
        ).fetchall()
        return [dict(r) for r in rows]

    def record_slack_event(self, event_id: str) -> bool:
        """Record an Events API delivery; False if it was handled before (a retry)."""
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO slack_events (event_id, received_at) VALUES (?, ?)",
            (event_id, time.time()),
        )
        return cur.rowcount == 1
