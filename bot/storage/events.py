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
        applied: bool = True,
    ) -> bool:
        """Record an event; False when its id, or the change it tells, was already recorded.

        `source`: where it came from when not a webhook (``"replay"``). `applied`: False when
        the delivery worker is still to apply it (`events_to_apply`)."""
        now = time.time()
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO events (id, type, object_kind, object_id, created, livemode,"
            " account, handled, received_at, payload, change_key, source, applied_at)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                event_id,
                type,
                object_kind,
                object_id,
                created,
                int(livemode),
                account,
                int(handled),
                now,
                payload,
                change_key,
                source,
                now if applied else None,
            ),
        )
        return cur.rowcount == 1

    # -- the events recorded and not yet applied (the webhook's inbox) ----------------------

    def events_to_apply(self, limit: int) -> list[tuple[str, str]]:
        """The oldest `limit` events recorded and not yet applied nor parked, in the order they
        were received: (id, payload)."""
        rows = self.conn.execute(
            "SELECT id, payload FROM events INDEXED BY events_to_apply"
            " WHERE applied_at IS NULL AND apply_error IS NULL ORDER BY rowid LIMIT ?",
            (limit,),
        ).fetchall()
        return [(row[0], row[1]) for row in rows]

    def mark_applied(self, event_id: str) -> None:
        self.conn.execute("UPDATE events SET applied_at = ? WHERE id = ?", (time.time(), event_id))

    def park_event(self, event_id: str, error: str) -> None:
        """Set an event the worker could not apply aside, with the reason (`retry_parked_events`
        puts it back)."""
        self.conn.execute("UPDATE events SET apply_error = ? WHERE id = ?", (error, event_id))

    def parked_events(self) -> list[dict[str, Any]]:
        """The events that could not be applied, oldest first: id, type, object, error, when."""
        rows = self.conn.execute(
            "SELECT id, type, object_id, apply_error, received_at FROM events"
            " WHERE applied_at IS NULL AND apply_error IS NOT NULL ORDER BY rowid"
        ).fetchall()
        return [dict(row) for row in rows]

    def retry_parked_events(self) -> int:
        """Put every parked event back to be applied again; how many."""
        with self.transaction() as conn:
            return conn.execute(
                "UPDATE events SET apply_error = NULL"
                " WHERE applied_at IS NULL AND apply_error IS NOT NULL"
            ).rowcount

    def apply_backlog(self) -> tuple[int, float | None]:
        """How many recorded events wait to be applied, and when the oldest was received."""
        row = self.conn.execute(
            "SELECT count(*), min(received_at) FROM events INDEXED BY events_to_apply"
            " WHERE applied_at IS NULL AND apply_error IS NULL"
        ).fetchone()
        return row[0], row[1]

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
