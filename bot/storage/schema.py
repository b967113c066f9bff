"""The database's tables: sqlite-utils migrations m001-m014, applied in order at start-up.

A database records each migration it applied by name: never rename, reorder or edit one here
(an existing database would run it again, or never); add the next one at the end.
"""

from __future__ import annotations

import time

import sqlite_utils
from sqlite_utils.migrations import Migrations

from bot.model import MAX_RETRY_AFTER_SECONDS

migrations = Migrations("climate-bot")


@migrations()
def m001_initial(db: sqlite_utils.Database) -> None:
    db.execute("""CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)""")
    db.execute(
        """CREATE TABLE events (
            id TEXT PRIMARY KEY,
            type TEXT NOT NULL,
            object_kind TEXT,
            object_id TEXT,
            created INTEGER NOT NULL,
            livemode INTEGER NOT NULL,
            account TEXT,
            handled INTEGER NOT NULL,
            late INTEGER NOT NULL DEFAULT 0,
            received_at REAL NOT NULL,
            payload TEXT NOT NULL
        )"""
    )
    db.execute("CREATE INDEX events_by_object ON events (object_id, created)")
    db.execute("CREATE INDEX events_by_received ON events (received_at)")
    db.execute(
        """CREATE TABLE orders (
            id TEXT PRIMARY KEY,
            account TEXT,
            livemode INTEGER NOT NULL,
            status TEXT NOT NULL,
            created INTEGER NOT NULL,
            snapshot TEXT NOT NULL,
            snapshot_created INTEGER NOT NULL,
            snapshot_rank INTEGER NOT NULL,
            headline_event TEXT NOT NULL,
            change TEXT,
            decision_deadline INTEGER,
            window_closed INTEGER NOT NULL DEFAULT 0,
            updated_at REAL NOT NULL
        )"""
    )
    db.execute("CREATE INDEX orders_by_created ON orders (created)")
    db.execute("CREATE INDEX orders_by_deadline ON orders (decision_deadline)")
    db.execute(
        """CREATE TABLE products (
            id TEXT PRIMARY KEY,
            account TEXT,
            livemode INTEGER NOT NULL,
            snapshot TEXT NOT NULL,
            snapshot_created INTEGER NOT NULL,
            snapshot_rank INTEGER NOT NULL,
            headline_event TEXT NOT NULL,
            updated_at REAL NOT NULL
        )"""
    )
    db.execute(
        """CREATE TABLE cards (
            key TEXT PRIMARY KEY,
            channel TEXT NOT NULL,
            ts TEXT NOT NULL,
            posted_at REAL NOT NULL
        )"""
    )
    db.execute(
        """CREATE TABLE outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            card_key TEXT NOT NULL,
            kind TEXT NOT NULL,
            event_id TEXT,
            facts TEXT,
            channel TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending',
            attempts INTEGER NOT NULL DEFAULT 0,
            available_at REAL NOT NULL,
            lease_owner TEXT,
            lease_until REAL,
            first_attempt_at REAL,
            last_error TEXT,
            created_at REAL NOT NULL,
            done_at REAL,
            posted_ts TEXT
        )"""
    )
    db.execute("CREATE INDEX outbox_pending ON outbox (status, card_key, id)")
    db.execute("""CREATE TABLE pacing (channel TEXT PRIMARY KEY, next_post_at REAL NOT NULL)""")


@migrations()
def m002_decisions(db: sqlite_utils.Database) -> None:
    # The decision on the order's current change (delay or substitution); reset by a new change.
    db.execute("ALTER TABLE orders ADD COLUMN decision TEXT")  # accepted | cancelling | cancelled
    db.execute("ALTER TABLE orders ADD COLUMN decided_by TEXT")
    db.execute("ALTER TABLE orders ADD COLUMN decided_at REAL")
    db.execute("ALTER TABLE orders ADD COLUMN decision_detail TEXT")
    db.execute("CREATE INDEX orders_pending ON orders (window_closed, decision, decision_deadline)")
    db.execute(
        """CREATE TABLE audit (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            order_id TEXT NOT NULL,
            action TEXT NOT NULL,
            slack_user TEXT,
            at REAL NOT NULL,
            outcome TEXT NOT NULL,
            stripe_request_id TEXT,
            error TEXT
        )"""
    )
    db.execute("CREATE INDEX audit_by_order ON audit (order_id, at)")
    db.execute(
        """CREATE TABLE reminders (
            order_id TEXT NOT NULL,
            deadline INTEGER NOT NULL,
            days INTEGER NOT NULL,
            sent_at REAL NOT NULL,
            PRIMARY KEY (order_id, deadline, days)
        )"""
    )


@migrations()
def m003_listing(db: sqlite_utils.Database) -> None:
    # `/climate orders [filter]` pages newest first by (created, id) without scanning.
    db.execute("ALTER TABLE orders ADD COLUMN change_kind TEXT")
    db.execute(
        "UPDATE orders SET change_kind = json_extract(change, '$.kind') WHERE change IS NOT NULL"
    )
    db.execute("DROP INDEX orders_by_created")
    db.execute("CREATE INDEX orders_newest ON orders (created DESC, id DESC)")
    db.execute("CREATE INDEX orders_by_status ON orders (status, created DESC, id DESC)")
    db.execute("CREATE INDEX orders_by_change ON orders (change_kind, created DESC, id DESC)")
    # Events API deliveries already handled: Slack retries after 3 s even while we work.
    db.execute("CREATE TABLE slack_events (event_id TEXT PRIMARY KEY, received_at REAL NOT NULL)")


@migrations()
def m004_change_keys(db: sqlite_utils.Database) -> None:
    # One change told by two events (a thin event and its snapshot twin) is recorded once.
    db.execute("ALTER TABLE events ADD COLUMN change_key TEXT")
    db.execute("CREATE UNIQUE INDEX events_by_change ON events (change_key)")


@migrations()
def m005_outbox_by_card(db: sqlite_utils.Database) -> None:
    # Looking up a card's rows (its channel, whether it is queued) must not scan every message
    # ever delivered (bench/outbox.py: 8.5 ms per event at 100,000 rows, under the write lock).
    db.execute("CREATE INDEX outbox_by_card ON outbox (card_key, kind, id)")


@migrations()
def m006_fewer_pages_per_event(db: sqlite_utils.Database) -> None:
    # Every index a row enters is one more 4 KiB page written to the WAL and copied back by the
    # checkpoint: a new order's event wrote 17 (bench/ingest.py). Orders without a delay or a
    # substitution (most of them) stay out of the indexes only those need; "latest events"
    # follows the rowid, which is the order of arrival; expired windows are found through
    # orders_pending, which made orders_by_deadline redundant.
    db.execute("DROP INDEX events_by_received")
    db.execute("DROP INDEX orders_by_deadline")
    for name, columns, condition in (
        (
            "orders_pending",
            "window_closed, decision, decision_deadline",
            "decision_deadline IS NOT NULL",
        ),
        ("orders_by_change", "change_kind, created DESC, id DESC", "change_kind IS NOT NULL"),
    ):
        db.execute(f"DROP INDEX {name}")
        db.execute(f"CREATE INDEX {name} ON orders ({columns}) WHERE {condition}")


@migrations()
def m007_outbox_queue(db: sqlite_utils.Database) -> None:
    # The delivery worker's looks search the pending rows by channel and kind, on the index
    # alone; delivered rows leave it. Earlier rows of a card are found through outbox_by_card.
    # A webhook's rows enter outbox_queue only (attempts = 0), as they entered outbox_pending.
    db.execute("DROP INDEX outbox_pending")
    db.execute("CREATE INDEX outbox_queue ON outbox (channel, kind, id) WHERE status = 'pending'")
    # Rows tried before and waiting again (back-off, lease): few, and only the worker adds them.
    db.execute(
        "CREATE INDEX outbox_retry ON outbox (available_at) WHERE status = 'pending'"
        " AND attempts > 0"
    )


@migrations()
def m008_outbox_failed(db: sqlite_utils.Database) -> None:
    # /healthz and /metrics read the parked rows and the outbox counts on every probe: on the
    # partial indexes (and the narrowest index for the total) instead of reading the whole table.
    db.execute("CREATE INDEX outbox_failed ON outbox (id) WHERE status = 'failed'")


@migrations()
def m009_decisions_in_flight(db: sqlite_utils.Database) -> None:
    # A delay or substitution that arrives while a cancel is being carried out waits here until
    # the cancel settles, instead of resetting the decision under way.
    db.execute("ALTER TABLE orders ADD COLUMN next_change TEXT")
    # What a decision rested on: the refund rule applied, the reason the decider gave.
    db.execute("ALTER TABLE audit ADD COLUMN detail TEXT")
    # Direct messages sent to deciders, so a retried job never sends one twice.
    db.execute(
        """CREATE TABLE direct_messages (
            order_id TEXT NOT NULL,
            occasion TEXT NOT NULL,
            user TEXT NOT NULL,
            outcome TEXT NOT NULL,
            at REAL NOT NULL,
            PRIMARY KEY (order_id, occasion, user)
        )"""
    )


@migrations()
def m010_price_changes(db: sqlite_utils.Database) -> None:
    # The prices before a product's last price change, so that its card shows old → new.
    db.execute("ALTER TABLE products ADD COLUMN old_prices TEXT")


@migrations()
def m011_event_sources(db: sqlite_utils.Database) -> None:
    # Where an event came from when not a webhook (a replay); counted in /metrics on this index.
    db.execute("ALTER TABLE events ADD COLUMN source TEXT")
    db.execute("CREATE INDEX events_by_source ON events (source) WHERE source IS NOT NULL")


@migrations()
def m012_bounded_waits(db: sqlite_utils.Database) -> None:
    # Slack's Retry-After was stored as it came: one 429 saying `1e9` or `inf` held its channel
    # (and put its row off) until the year 2061 or for ever, across restarts. Nothing waits
    # longer than the cap from the upgrade on; shorter waits are left as they are. The rows put
    # off were tried before (attempts > 0): on the outbox_retry index.
    ceiling = time.time() + MAX_RETRY_AFTER_SECONDS
    db.execute("UPDATE pacing SET next_post_at = ? WHERE next_post_at > ?", [ceiling, ceiling])
    db.execute(
        "UPDATE outbox SET available_at = ? WHERE status = 'pending' AND attempts > 0"
        " AND available_at > ?",
        [ceiling, ceiling],
    )


@migrations()
def m013_event_polling(db: sqlite_utils.Database) -> None:
    # Reading Stripe's Events API instead of (or beside) webhooks: where each account's reading
    # stands, and leases that let one process at a time do a job every process could do.
    db.execute(
        """CREATE TABLE poll_cursors (
            account TEXT PRIMARY KEY,  -- '' for the platform's own events
            created INTEGER NOT NULL,  -- events created at or after this are still to be read
            polled_at REAL NOT NULL,  -- when Stripe last answered a whole reading
            tried_at REAL,  -- when the last reading was tried, answered or not
            failures INTEGER NOT NULL DEFAULT 0,  -- readings failed in a row
            last_error TEXT
        )"""
    )
    db.execute(
        """CREATE TABLE leases (
            name TEXT PRIMARY KEY,
            holder TEXT NOT NULL,
            expires_at REAL NOT NULL
        )"""
    )
    # A reading that found a gap longer than Stripe keeps events: reported until acknowledged.
    db.execute(
        """CREATE TABLE event_gaps (
            id INTEGER PRIMARY KEY,
            account TEXT NOT NULL,
            gap_from REAL NOT NULL,  -- the last reading before the gap
            gap_to REAL NOT NULL,  -- the oldest moment Stripe still kept events for
            found_at REAL NOT NULL,
            acknowledged_at REAL
        )"""
    )


@migrations()
def m014_record_first(db: sqlite_utils.Database) -> None:
    # A webhook is acknowledged once its event is recorded; the delivery worker applies it to its
    # snapshot later (`applied_at`), or parks it with the reason (`apply_error`) when it cannot.
    # Events recorded before this version were applied as they were recorded.
    db.execute("ALTER TABLE events ADD COLUMN applied_at REAL")
    db.execute("ALTER TABLE events ADD COLUMN apply_error TEXT")
    db.execute("UPDATE events SET applied_at = received_at")
    # What is left to apply, in the order received (an index's entries end with the rowid).
    db.execute(
        "CREATE INDEX events_to_apply ON events (applied_at)"
        " WHERE applied_at IS NULL AND apply_error IS NULL"
    )
