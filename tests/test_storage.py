"""Storage: WAL mode, migrations through sqlite-utils, and the outbox's ordering rules."""

from __future__ import annotations

import sqlite_utils

from bot.storage import Storage, migrations


def test_database_uses_wal_and_sqlite_utils_migrations(tmp_path):
    storage = Storage(tmp_path / "bot.db")
    assert storage.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert storage.conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    db = sqlite_utils.Database(tmp_path / "bot.db")
    assert migrations.pending(db) == []
    assert {"events", "orders", "products", "cards", "outbox"} <= set(db.table_names())
    storage.close()


def test_reopening_keeps_the_instance_id_and_applies_nothing_twice(tmp_path):
    first = Storage(tmp_path / "bot.db")
    instance = first.instance_id
    first.close()
    second = Storage(tmp_path / "bot.db")
    assert second.instance_id == instance
    applied = second.conn.execute("SELECT count(*) FROM _sqlite_migrations").fetchone()[0]
    assert applied == len(migrations._migrations)
    second.close()


def test_rows_of_one_card_are_leased_in_order_and_replies_wait_for_the_card(tmp_path):
    storage = Storage(tmp_path / "bot.db")
    with storage.transaction():
        storage.enqueue("order:a", "card", channel="C1", event_id="evt_1")
        storage.enqueue("order:a", "reply", channel="C1", event_id="evt_2")
        storage.enqueue("order:b", "card", channel="C1", event_id="evt_3")
    first = storage.lease_next("w1", pace_seconds=0)
    second = storage.lease_next("w2", pace_seconds=0)
    assert (first.card_key, first.kind) == ("order:a", "card")
    assert (second.card_key, second.kind) == ("order:b", "card")  # a's reply waits for a's card
    assert storage.lease_next("w3", pace_seconds=0) is None
    storage.complete(first, card_channel="C1", ts="1.000100")
    reply = storage.lease_next("w3", pace_seconds=0)
    assert (reply.card_key, reply.kind, reply.card_ts) == ("order:a", "reply", "1.000100")
    storage.close()


def test_worker_sleep_accounts_for_pacing_and_for_replies_that_cannot_go_yet(tmp_path):
    """Regression: the worker spun at 100 Hz on rows it could not lease (pacing, failed card)."""
    storage = Storage(tmp_path / "bot.db")
    with storage.transaction():
        storage.enqueue("order:a", "card", channel="C1", event_id="evt_1")
        storage.enqueue("order:a", "reply", channel="C1", event_id="evt_2")
        storage.enqueue("order:b", "card", channel="C1", event_id="evt_3")
    card_a = storage.lease_next("w", pace_seconds=30)
    storage.fail(card_a, "channel_not_found")
    # order:b's card waits for the channel's pacing slot; a's reply waits for a's card.
    assert storage.next_delivery_at() >= card_a.first_attempt_at + 30
    assert storage.lease_next("w", pace_seconds=0) is None
    storage.conn.execute("UPDATE pacing SET next_post_at = 0")  # the slot comes round
    card_b = storage.lease_next("w", pace_seconds=0)
    assert card_b.card_key == "order:b"
    storage.complete(card_b, card_channel="C1", ts="2.000100")
    assert storage.next_delivery_at() is None  # only a's reply is left, and it cannot go yet
    storage.close()
