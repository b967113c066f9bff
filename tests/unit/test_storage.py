"""Storage: WAL mode, migrations through sqlite-utils, and the outbox's ordering rules."""

from __future__ import annotations

import json
import math
import threading
import time

import sqlite_utils
import time_machine

from bot.jobs import CancelJob, CardJob, OrderReplyJob
from bot.model import MAX_RETRY_AFTER_SECONDS
from bot.recording import record_event
from bot.sandbox import stripe_objects as so
from bot.storage import (
    CHECKPOINT_EVERY_WRITES,
    LONG_HOLD_SECONDS,
    READ_CACHE_KIB,
    Storage,
    migrations,
)
from tests.support.bot import wait_until

T0 = 1_900_000_000  # the frozen "now" of the tests of holds


def test_database_uses_wal_and_sqlite_utils_migrations(tmp_path):
    storage = Storage(tmp_path / "bot.db")
    assert storage.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert storage.conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    # Each thread's reading connection keeps a small cache; the one writing keeps SQLite's 2 MB.
    assert storage.conn.execute("PRAGMA cache_size").fetchone()[0] == -READ_CACHE_KIB
    with storage.transaction() as writing:
        assert writing.execute("PRAGMA cache_size").fetchone()[0] == -2000
        assert writing is not storage._local.conn
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


def test_rows_of_one_card_are_leased_in_order_and_replies_wait_for_the_card(storage):
    with storage.transaction():
        storage.enqueue("order:a", CardJob(), channel="C1", event_id="evt_1")
        storage.enqueue(
            "order:a", OrderReplyJob(late=False, change=None), channel="C1", event_id="evt_2"
        )
        storage.enqueue("order:b", CardJob(), channel="C1", event_id="evt_3")
    first = storage.lease_next("w1", pace_seconds=0)
    second = storage.lease_next("w2", pace_seconds=0)
    assert (first.card_key, first.job.kind) == ("order:a", "card")
    assert (second.card_key, second.job.kind) == ("order:b", "card")  # a's reply waits for a's card
    assert storage.lease_next("w3", pace_seconds=0) is None
    storage.complete(first, card_channel="C1", ts="1.000100")
    reply = storage.lease_next("w3", pace_seconds=0)
    assert (reply.card_key, reply.job.kind, reply.card_ts) == ("order:a", "reply", "1.000100")


def test_a_row_no_job_reads_is_parked_and_the_next_one_leased(storage, caplog):
    # Rows a newer version wrote (a kind unknown here) or a broken one: each is parked with
    # the reason, listed by `climate-bot failed`, and never holds the rows behind it.
    with storage.transaction() as conn:
        for key, kind, facts in [
            ("order:x", "from_the_future", "{}"),
            ("order:y", "card", "not json"),
            ("order:z", "card", "[1, 2]"),
        ]:
            conn.execute(
                "INSERT INTO outbox (card_key, kind, facts, channel, available_at, created_at)"
                " VALUES (?, ?, ?, 'C1', 0, 0)",
                (key, kind, facts),
            )
        storage.enqueue("order:a", CardJob(), channel="C1", event_id="evt_1")
    lease = storage.lease_next("w1", pace_seconds=0)
    assert (lease.card_key, lease.job) == ("order:a", CardJob())
    parked = {failure.card_key: failure.last_error for failure in storage.failures()}
    assert set(parked) == {"order:x", "order:y", "order:z"}
    assert "from_the_future" in parked["order:x"]
    assert storage.lease_next("w2", pace_seconds=0) is None
    assert sum("parked" in record.getMessage() for record in caplog.records) == 3


def test_worker_sleep_accounts_for_pacing_and_for_replies_that_cannot_go_yet(storage):
    """Regression: the worker spun at 100 Hz on rows it could not lease (pacing, failed card)."""
    with storage.transaction():
        storage.enqueue("order:a", CardJob(), channel="C1", event_id="evt_1")
        storage.enqueue(
            "order:a", OrderReplyJob(late=False, change=None), channel="C1", event_id="evt_2"
        )
        storage.enqueue("order:b", CardJob(), channel="C1", event_id="evt_3")
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


def _receive(storage: Storage, event: dict) -> None:
    record_event(storage, event, json.dumps(event), channel="C1")


def query_plans(storage: Storage, call) -> list[list[str]]:
    """EXPLAIN QUERY PLAN of each SELECT or UPDATE that `call` really runs on this thread's
    connection (traced, not copied from bot/storage/)."""
    statements: list[str] = []
    storage.conn.set_trace_callback(statements.append)
    try:
        call()
    finally:
        storage.conn.set_trace_callback(None)
    return [
        [row[3] for row in storage.conn.execute("EXPLAIN QUERY PLAN " + sql)]
        for sql in statements
        if sql.lstrip().upper().startswith(("SELECT", "UPDATE", "WITH"))
    ]


def test_the_queries_that_need_the_partial_indexes_still_search_them(storage):
    """Only orders with a decision window or a change enter three indexes now; the queries that
    need those must still use them. EXPLAIN each statement the methods really run."""
    for _ in range(3):
        order = so.order()
        _receive(storage, so.event("climate.order.created", order, created=1000))
        _receive(storage, so.event("climate.order.delayed", so.delayed(order, 2031, 2000)))
    _receive(storage, so.event("climate.order.created", so.order(), created=1000))

    def plan_of(call) -> str:
        return " | ".join(step for plan in query_plans(storage, call) for step in plan)

    def close_windows():
        storage.close_expired_windows(now=2**40)  # autocommit, on the connection traced

    expected = {
        "orders_pending": [
            lambda: storage.pending_decisions(now=0),
            lambda: storage.count_pending_decisions(now=0),
            lambda: storage.due_reminders(now=0, days=[7, 1]),
            close_windows,
        ],
        "orders_by_change": [lambda: storage.list_orders(change_kind="delayed")],
    }
    for index, calls in expected.items():
        for call in calls:
            plan = plan_of(call)
            assert f"USING INDEX {index}" in plan or f"USING COVERING INDEX {index}" in plan, plan
            assert "TEMP B-TREE" not in plan, plan
    for call in (storage.recent_events, storage.last_event_received_at):
        plan = plan_of(call)  # the newest rows by rowid: a backwards walk that stops early
        assert "TEMP B-TREE" not in plan, plan


def test_group_commit_runs_queued_works_together_and_a_failing_one_alone_rolls_back(storage):
    storage.conn  # noqa: B018 — migrated and open before the threads start
    release = threading.Event()
    ran_on: dict[int, str] = {}
    results: dict[int, object] = {}

    def work(n: int):
        def fn():
            ran_on[n] = threading.current_thread().name
            if n == 0:
                release.wait(10)  # the leader holds its batch open while the others queue
            storage.conn.execute("INSERT INTO meta (key, value) VALUES (?, 'x')", (f"k{n}",))
            if n == 3:
                raise ValueError("work 3 failed after writing")
            return n * 10

        def run():
            try:
                results[n] = storage.batched(fn)
            except ValueError as exc:
                results[n] = exc

        return threading.Thread(target=run, name=f"t{n}")

    threads = [work(n) for n in range(6)]
    threads[0].start()
    wait_until(lambda: 0 in ran_on, 10, "the first work never ran")
    for t in threads[1:]:
        t.start()
    wait_until(lambda: len(storage._batch_queue) == 5, 10, "the others never queued")
    release.set()
    for t in threads:
        t.join(10)
    assert {n: r for n, r in results.items() if n != 3} == {0: 0, 1: 10, 2: 20, 4: 40, 5: 50}
    assert isinstance(results[3], ValueError)
    keys = {r[0] for r in storage.conn.execute("SELECT key FROM meta WHERE value = 'x'")}
    assert keys == {"k0", "k1", "k2", "k4", "k5"}  # work 3's insert was rolled back alone
    # The five queued works ran together, on the thread of the first of them (promoted).
    assert len({ran_on[n] for n in range(1, 6)}) == 1
    assert ran_on[1] in {f"t{n}" for n in range(1, 6)}


def test_the_wal_is_copied_back_and_started_over_as_webhooks_come_in(tmp_path):
    """Left to grow, the WAL made every statement slower (80 MB during bench/ingest.py)."""
    storage = Storage(tmp_path / "bot.db")
    for _ in range(3 * CHECKPOINT_EVERY_WRITES + 10):
        _receive(storage, so.event("climate.order.created", so.order()))
    frames = storage.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
    assert 0 < frames < 25 * (CHECKPOINT_EVERY_WRITES // 2)  # only the writes since the last
    assert (tmp_path / "bot.db-wal").stat().st_size < 25 * CHECKPOINT_EVERY_WRITES * 4200
    storage.close()


def test_a_paced_channel_holds_new_messages_but_not_updates_or_jobs(storage):
    with storage.transaction():
        storage.enqueue("order:a", CardJob(), channel="C1", event_id="evt_1")
    card_a = storage.lease_next("w", pace_seconds=30)  # posts: C1's next slot is 30 s away
    storage.complete(card_a, card_channel="C1", ts="1.000100")
    with storage.transaction():
        storage.enqueue("order:b", CardJob(), channel="C1", event_id="evt_2")  # a new card
        storage.enqueue("order:a", CardJob(), channel="C1")  # an update of the posted card
        storage.enqueue("order:c", CancelJob(None, None), channel="C1")  # a job: Stripe, not Slack
    update = storage.lease_next("w", pace_seconds=30)
    assert (update.card_key, update.job.kind, update.card_ts) == ("order:a", "card", "1.000100")
    storage.complete(update)
    job = storage.lease_next("w", pace_seconds=30)
    assert (job.card_key, job.job.kind) == ("order:c", "cancel")
    assert storage.lease_next("w", pace_seconds=30) is None  # the new card waits for the slot
    assert storage.next_delivery_at() >= card_a.first_attempt_at + 29
    with storage.transaction():
        storage.enqueue("order:a", CardJob(), channel="C1")
        assert storage.enqueue("order:a", CardJob(), channel="C1") is None  # one update waits
    assert storage.lease_next("w", pace_seconds=30).card_key == "order:a"
    storage.conn.execute("UPDATE pacing SET next_post_at = 0")  # the slot comes round
    assert storage.lease_next("w", pace_seconds=30).card_key == "order:b"


def test_a_look_and_the_wake_up_only_search_however_long_the_backlog(storage):
    """A burst into one channel: every look read every waiting row (bench/outbox.py: 24 ms at
    20,000 rows; then, turned down on the index alone, 90 ms at 263,000, and 380 ms when the
    slot was free, to sort them). The look walks the (channel, kind) groups of waiting rows a
    seek each and takes each group's first row; the wake-up time comes from index searches."""
    with storage.transaction():
        for n in range(50):
            storage.enqueue(f"order:{n}", CardJob(), channel="C1")
    [look] = query_plans(storage, lambda: storage.lease_next("w", pace_seconds=60))
    [none] = query_plans(storage, lambda: storage.lease_next("w"))  # C1 paced: nothing to claim
    [wake] = query_plans(storage, storage.next_delivery_at)
    for plan in (look, none, wake):
        # Only the look's own list of groups and the pacing table (a row per channel) are read
        # through; every outbox row is reached by a search.
        scans = [step.split()[1] for step in plan if step.startswith("SCAN")]
        assert set(scans) <= {"grp", "pacing", "(subquery-1)"}, plan
    assert "SEARCH f USING INDEX outbox_queue (channel=? AND kind=?)" in look, look


def test_health_counts_the_outbox_on_indexes_and_gets_every_status_right(storage):
    """/healthz and /metrics count the outbox on every probe: a table scan took 26 ms at
    100,000 delivered rows; on the indexes it takes about 1 ms."""
    with storage.transaction():
        for n in range(4):
            storage.enqueue(f"order:{n}", CardJob(), channel="C1", event_id=f"evt_{n}")
    done = storage.lease_next("w", pace_seconds=0)
    storage.complete(done, card_channel="C1", ts="1.000100")
    failed = storage.lease_next("w", pace_seconds=0)
    storage.fail(failed, "channel_not_found")
    assert storage.outbox_counts() == {"done": 1, "failed": 1, "pending": 2}
    assert [f.id for f in storage.failures()] == [failed.id]
    [counting] = query_plans(storage, storage.outbox_counts)
    [parked] = query_plans(storage, storage.failures)
    for plan in (counting, parked):
        scans = [step for step in plan if step.startswith("SCAN outbox")]
        assert scans and all("INDEX" in step for step in scans), plan


def test_a_channel_is_never_held_longer_than_the_cap_whatever_the_caller_asks(storage):
    """Regression: one 429 with `Retry-After: 1e9` (or inf) held its channel for good."""
    cap = MAX_RETRY_AFTER_SECONDS
    with time_machine.travel(T0, tick=False) as clock:
        asked = {"C1": 1e9, "C2": math.inf, "C3": math.nan, "C4": 3600, "C5": -5, "C6": 7}
        for channel, seconds in asked.items():
            storage.hold_channel(channel, seconds)
        held = {"C1": T0 + cap, "C2": T0 + cap, "C3": T0 + cap, "C4": T0 + cap, "C6": T0 + 7}
        assert storage.paced_channels(T0) == held
        # Held again while held: never shortened, never pushed past the cap from now.
        storage.hold_channel("C6", 2)
        storage.hold_channel("C1", 1e9)
        assert storage.paced_channels(T0) == held
        clock.shift(cap + 1)
        assert storage.paced_channels(time.time()) == {}


def test_holds_and_waits_stored_by_an_older_version_are_cut_to_the_cap(tmp_path):
    """Before the cap, a database could keep a channel held (and a row waiting) until the year
    2061, or for ever: migration m012 cuts them to the cap, counted from the upgrade."""
    path = tmp_path / "bot.db"
    old = sqlite_utils.Database(path)
    migrations.apply(old, stop_before="m012_bounded_waits")
    with time_machine.travel(T0, tick=False) as clock:
        with old.conn:
            old.execute(
                "INSERT INTO pacing (channel, next_post_at) VALUES (?, ?), (?, ?), (?, ?)",
                ["C1", T0 + 1e9, "C2", math.inf, "C3", T0 + 0.5],
            )
            for key, channel, available_at in (
                ("order:a", "C1", T0 + 1e9),
                ("order:b", "C2", math.inf),
                ("order:c", "C3", T0 + 30),  # an ordinary back-off
            ):
                old.execute(
                    "INSERT INTO outbox (card_key, kind, channel, attempts, available_at,"
                    " first_attempt_at, created_at) VALUES (?, 'card', ?, 1, ?, ?, ?)",
                    [key, channel, available_at, T0 - 10, T0 - 10],
                )
        old.close()

        storage = Storage(path)
        assert migrations.pending(sqlite_utils.Database(storage.conn)) == []
        ceiling = T0 + MAX_RETRY_AFTER_SECONDS
        assert storage.paced_channels(T0) == {"C1": ceiling, "C2": ceiling, "C3": T0 + 0.5}
        waits = dict(storage.conn.execute("SELECT card_key, available_at FROM outbox"))
        assert waits == {"order:a": ceiling, "order:b": ceiling, "order:c": T0 + 30}
        assert storage.next_delivery_at() == T0 + 0.5
        clock.shift(MAX_RETRY_AFTER_SECONDS + 0.001)
        leased = [storage.lease_next("w", pace_seconds=0) for _ in range(4)]
        assert sorted(row.card_key for row in leased if row) == ["order:a", "order:b", "order:c"]
    storage.close()


def test_long_holds_are_found_and_released_without_touching_ordinary_pacing(storage):
    with time_machine.travel(T0, tick=False):
        storage.hold_channel("C_PACED", 1)  # pacing after a post
        storage.hold_channel("C_SHORT", LONG_HOLD_SECONDS)  # a minute: not reported
        storage.hold_channel("C_LONG", LONG_HOLD_SECONDS + 30)
        assert storage.long_holds(T0) == {"C_LONG": T0 + LONG_HOLD_SECONDS + 30}
        [plan] = query_plans(storage, lambda: storage.long_holds(T0))
        assert plan == ["SCAN pacing"], plan  # one row per channel ever posted to: a few
        assert storage.release_long_holds() == 1
        assert storage.long_holds(T0) == {}
        assert storage.paced_channels(T0) == {"C_PACED": T0 + 1, "C_SHORT": T0 + 60}
        assert storage.release_long_holds() == 0
