"""Storage verbs about orders (snapshots, decisions, reminders, direct messages) and products."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from bot.model import DECISION_WINDOW_SECONDS
from bot.storage.cards import _CARD_CHANNELS, card_key

# The JSON columns of a row of orders and of products, decoded on reading.
_ORDER_JSON = ("snapshot", "change", "decision_detail", "next_change")
_PRODUCT_JSON = ("snapshot", "old_prices")


class OrderVerbs:
    """Orders, decisions on their changes, and products (a part of `Storage`)."""

    # -- orders ------------------------------------------------------------------------------

    def row_and_card_channel(
        self, kind: str, object_id: str
    ) -> tuple[dict[str, Any] | None, str | None]:
        """An order's or product's row (as `order_row`/`product_row`) and its card's channel (as
        `card_channel`), in one statement: ingest asks both for every event."""
        table, json_columns = {
            "order": ("orders", _ORDER_JSON),
            "product": ("products", _PRODUCT_JSON),
        }[kind]
        row = self.conn.execute(
            f"SELECT {_CARD_CHANNELS}, t.* FROM (SELECT 1) LEFT JOIN {table} t ON t.id = :id",
            {"key": card_key(kind, object_id), "id": object_id},
        ).fetchone()
        found = _decode(row, *json_columns) if row["id"] is not None else None
        if found is not None:
            del found["posted_channel"], found["queued_channel"]
        return found, row["posted_channel"] or row["queued_channel"]

    def order_row(self, order_id: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT * FROM orders WHERE id = ?", (order_id,)).fetchone()
        return _decode(row, *_ORDER_JSON)

    def refresh_order(self, order: dict[str, Any], *, headline_event: str | None = None) -> None:
        """Replace an order's snapshot with what Stripe just returned (newer than any event)."""
        sets = "snapshot = ?, status = ?, updated_at = ?"
        params: list[Any] = [json.dumps(order), str(order.get("status")), time.time()]
        if headline_event:
            sets += ", headline_event = ?"
            params.append(headline_event)
        self.conn.execute(f"UPDATE orders SET {sets} WHERE id = ?", (*params, order["id"]))

    def list_orders(
        self,
        *,
        status: str | None = None,
        change_kind: str | None = None,
        before: tuple[int, str] | None = None,
        limit: int = 10,
    ) -> list[dict[str, Any]]:
        """Orders newest first (by `created`, then id), optionally of one status or change kind,
        after the keyset `before` = (created, id) of the last order of the previous page."""
        where, params = [], []
        if status:
            where.append("status = ?")
            params.append(status)
        if change_kind:
            where.append("change_kind = ? AND status NOT IN ('delivered', 'canceled')")
            params.append(change_kind)
        if before:
            where.append("(created, id) < (?, ?)")  # a range on the index, not a scan
            params.extend([before[0], before[1]])
        sql = "SELECT * FROM orders"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created DESC, id DESC LIMIT ?"
        rows = self.conn.execute(sql, (*params, limit)).fetchall()
        return [_decode(r, *_ORDER_JSON) for r in rows]

    def save_order(
        self,
        order: dict[str, Any],
        *,
        account: str | None,
        snapshot_created: int,
        snapshot_rank: int,
        headline_event: str,
        change: dict[str, Any] | None,
        decision_deadline: int | None,
        next_change: dict[str, Any] | None = None,
    ) -> None:
        """Make `order` the snapshot of its order (the caller decided it is newer).

        A decision stays while `decision_deadline` is the one it was made for; `next_change` is
        a change that waits for the cancel in flight to settle (`settle_decision`).
        """
        self.conn.execute(
            "INSERT INTO orders (id, account, livemode, status, created, snapshot,"
            " snapshot_created, snapshot_rank, headline_event, change, decision_deadline,"
            " updated_at, change_kind, next_change) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
            " ON CONFLICT (id) DO UPDATE SET account = excluded.account,"
            " livemode = excluded.livemode, status = excluded.status,"
            " created = excluded.created, snapshot = excluded.snapshot,"
            " snapshot_created = excluded.snapshot_created,"
            " snapshot_rank = excluded.snapshot_rank,"
            " headline_event = excluded.headline_event, change = excluded.change,"
            " window_closed = CASE WHEN excluded.decision_deadline IS orders.decision_deadline"
            " THEN orders.window_closed ELSE 0 END,"
            " decision = CASE WHEN excluded.decision_deadline IS orders.decision_deadline"
            " THEN orders.decision ELSE NULL END,"
            " decided_by = CASE WHEN excluded.decision_deadline IS orders.decision_deadline"
            " THEN orders.decided_by ELSE NULL END,"
            " decided_at = CASE WHEN excluded.decision_deadline IS orders.decision_deadline"
            " THEN orders.decided_at ELSE NULL END,"
            " decision_detail = CASE WHEN excluded.decision_deadline IS orders.decision_deadline"
            " THEN orders.decision_detail ELSE NULL END,"
            " decision_deadline = excluded.decision_deadline, updated_at = excluded.updated_at,"
            " change_kind = excluded.change_kind, next_change = excluded.next_change",
            (
                order["id"],
                account,
                int(bool(order.get("livemode"))),
                str(order.get("status")),
                _whole(order.get("created")),
                json.dumps(order),
                snapshot_created,
                snapshot_rank,
                headline_event,
                json.dumps(change) if change else None,
                decision_deadline,
                time.time(),
                change.get("kind") if change else None,
                _json_or_null(next_change),
            ),
        )

    # -- decisions ---------------------------------------------------------------------------

    def claim_decision(
        self,
        order_id: str,
        decision: str,
        *,
        user: str,
        deadline: int,
        now: float,
        detail: dict[str, Any] | None = None,
    ) -> bool:
        """Compare-and-set: record `decision` by `user` unless the change is already decided.

        Fails when another decision (or a cancel in flight) is recorded, the window is closed or
        past, or the order moved on to another change (`deadline` no longer matches).
        """
        cur = self.conn.execute(
            "UPDATE orders SET decision = ?, decided_by = ?, decided_at = ?, decision_detail = ?"
            " WHERE id = ? AND decision IS NULL AND window_closed = 0 AND decision_deadline = ?"
            " AND decision_deadline > ? AND status NOT IN ('delivered', 'canceled')",
            (decision, user, now, _json_or_null(detail), order_id, deadline, now),
        )
        return cur.rowcount == 1

    def settle_decision(
        self, order_id: str, *, expected: str, decision: str | None, detail: dict | None = None
    ) -> bool:
        """Move a decision on from `expected` (a cancel in flight) to `decision`; False when the
        order's decision is not `expected` any more (nothing is changed then).

        `decision` None undoes it: the change is open again, or, when another change arrived
        while the cancel was in flight, that change becomes the one to decide, with its own
        window. `detail` is merged into what the claim recorded (the reason stays).
        """
        if decision is None:
            cur = self.conn.execute(
                "UPDATE orders SET decision = NULL, decided_by = NULL, decided_at = NULL,"
                " decision_detail = NULL, window_closed = CASE WHEN next_change IS NULL"
                " THEN window_closed ELSE 0 END,"
                " change = coalesce(next_change, change),"
                " change_kind = coalesce(json_extract(next_change, '$.kind'), change_kind),"
                " decision_deadline = coalesce(json_extract(next_change, '$.at') + ?,"
                " decision_deadline), next_change = NULL WHERE id = ? AND decision = ?",
                (DECISION_WINDOW_SECONDS, order_id, expected),
            )
        else:
            cur = self.conn.execute(
                "UPDATE orders SET decision = ?, next_change = NULL,"
                " decision_detail = json_patch(coalesce(decision_detail, '{}'), ?)"
                " WHERE id = ? AND decision = ?",
                (decision, json.dumps(detail or {}), order_id, expected),
            )
        return cur.rowcount == 1

    def audit(
        self,
        order_id: str,
        action: str,
        outcome: str,
        *,
        user: str | None,
        stripe_request_id: str | None = None,
        error: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Record a decision, refusal or failure: who, what, when, how it ended, and what it
        rested on (`detail`: the refund rule applied, the reason given)."""
        self.conn.execute(
            "INSERT INTO audit (order_id, action, slack_user, at, outcome, stripe_request_id,"
            " error, detail) VALUES (?,?,?,?,?,?,?,?)",
            (
                order_id,
                action,
                user,
                time.time(),
                outcome,
                stripe_request_id,
                error,
                _json_or_null(detail),
            ),
        )

    def cancel_attempts(self, order_id: str) -> int:
        """How many cancels of this order ended without cancelling (refused, failed)."""
        return self.conn.execute(
            "SELECT count(*) FROM audit WHERE order_id = ? AND action = 'cancel'"
            " AND outcome IN ('refused', 'failed')",
            (order_id,),
        ).fetchone()[0]

    def audit_rows(self, order_id: str) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT * FROM audit WHERE order_id = ? ORDER BY at, id", (order_id,)
        ).fetchall()
        return [_decode(r, "detail") for r in rows]

    def pending_decisions(self, now: float, *, limit: int = 50) -> list[dict[str, Any]]:
        """Orders awaiting a decision, soonest deadline first."""
        rows = self.conn.execute(
            "SELECT * FROM orders WHERE window_closed = 0 AND decision IS NULL"
            " AND decision_deadline > ? AND status NOT IN ('delivered', 'canceled')"
            " ORDER BY decision_deadline LIMIT ?",
            (now, limit),
        ).fetchall()
        return [_decode(r, *_ORDER_JSON) for r in rows]

    def count_pending_decisions(self, now: float) -> int:
        """How many orders await a decision (walks the pending index, not the table)."""
        return self.conn.execute(
            "SELECT count(*) FROM orders WHERE window_closed = 0 AND decision IS NULL"
            " AND decision_deadline > ? AND status NOT IN ('delivered', 'canceled')",
            (now,),
        ).fetchone()[0]

    def due_reminders(self, now: float, days: list[int]) -> list[tuple[str, int, int]]:
        """(order id, deadline, days) for every reminder due now and not yet sent."""
        due = []
        for d in days:
            rows = self.conn.execute(
                "SELECT o.id, o.decision_deadline FROM orders o WHERE o.window_closed = 0"
                " AND o.decision IS NULL AND o.status NOT IN ('delivered', 'canceled')"
                " AND o.decision_deadline > ? AND o.decision_deadline - ? <= ?"
                " AND NOT EXISTS (SELECT 1 FROM reminders r WHERE r.order_id = o.id"
                " AND r.deadline = o.decision_deadline AND r.days <= ?)",
                (now, d * 86400, now, d),
            ).fetchall()
            due.extend((r[0], r[1], d) for r in rows)
        return due

    def mark_reminded(self, order_id: str, deadline: int, days: int) -> bool:
        """Record a reminder as sent; False if another process already sent it."""
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO reminders (order_id, deadline, days, sent_at) VALUES (?,?,?,?)",
            (order_id, deadline, days, time.time()),
        )
        return cur.rowcount == 1

    def close_expired_windows(self, now: float) -> list[str]:
        """Mark every open decision window that has passed as closed; return those order ids.

        A compare-and-set: when several processes run the scheduler, each window closes once.
        """
        ids = [
            r[0]
            for r in self.conn.execute(
                "SELECT id FROM orders WHERE decision_deadline <= ? AND window_closed = 0",
                (now,),
            ).fetchall()
        ]
        closed = []
        for order_id in ids:
            cur = self.conn.execute(
                "UPDATE orders SET window_closed = 1 WHERE id = ? AND window_closed = 0",
                (order_id,),
            )
            if cur.rowcount == 1:
                closed.append(order_id)
        return closed

    def direct_message_sent(self, order_id: str, occasion: str, user: str) -> bool:
        """True when `user` was already messaged (or given up on) for this occasion."""
        return (
            self.conn.execute(
                "SELECT 1 FROM direct_messages WHERE order_id = ? AND occasion = ? AND user = ?",
                (order_id, occasion, user),
            ).fetchone()
            is not None
        )

    def record_direct_message(self, order_id: str, occasion: str, user: str, outcome: str) -> None:
        """Record that `user` was messaged for this occasion (`outcome`: sent, or why not)."""
        self.conn.execute(
            "INSERT OR IGNORE INTO direct_messages (order_id, occasion, user, outcome, at)"
            " VALUES (?,?,?,?,?)",
            (order_id, occasion, user, outcome, time.time()),
        )

    # -- products ----------------------------------------------------------------------------

    def product_row(self, product_id: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT * FROM products WHERE id = ?", (product_id,)).fetchone()
        return _decode(row, *_PRODUCT_JSON)

    def product_snapshot(self, product_id: str) -> dict[str, Any] | None:
        """The product as we last stored it (its Stripe object), None when not recorded."""
        row = self.product_row(product_id)
        return row["snapshot"] if row else None

    def save_product(
        self,
        product: dict[str, Any],
        *,
        account: str | None,
        snapshot_created: int,
        snapshot_rank: int,
        headline_event: str,
        old_prices: dict[str, Any] | None = None,
    ) -> None:
        """Make `product` the snapshot of its product (the caller decided it is newer);
        `old_prices`: its prices before this change, when the change is one of prices."""
        self.conn.execute(
            "INSERT INTO products (id, account, livemode, snapshot, snapshot_created,"
            " snapshot_rank, headline_event, updated_at, old_prices) VALUES (?,?,?,?,?,?,?,?,?)"
            " ON CONFLICT (id) DO UPDATE SET account = excluded.account,"
            " livemode = excluded.livemode, snapshot = excluded.snapshot,"
            " snapshot_created = excluded.snapshot_created,"
            " snapshot_rank = excluded.snapshot_rank,"
            " headline_event = excluded.headline_event, updated_at = excluded.updated_at,"
            " old_prices = excluded.old_prices",
            (
                product["id"],
                account,
                int(bool(product.get("livemode"))),
                json.dumps(product),
                snapshot_created,
                snapshot_rank,
                headline_event,
                time.time(),
                json.dumps(old_prices) if old_prices is not None else None,
            ),
        )

    def known_products(self, limit: int = 100) -> list[dict[str, Any]]:
        """Product snapshots received by webhook, newest first."""
        rows = self.conn.execute(
            "SELECT * FROM products ORDER BY updated_at DESC LIMIT ?", (limit,)
        ).fetchall()
        return [_decode(r, *_PRODUCT_JSON) for r in rows]


def _json_or_null(value: dict[str, Any] | None) -> str | None:
    return json.dumps(value) if value else None


def _whole(value: Any) -> int:
    """An integer field of a Stripe object, 0 when it is anything else (signed but odd input)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _decode(row: sqlite3.Row | None, *json_columns: str) -> dict[str, Any] | None:
    if row is None:
        return None
    out = dict(row)
    for col in json_columns:
        if out.get(col) is not None:
            out[col] = json.loads(out[col])
    return out
