"""Faults: Slack down, Slack failing at random, a 429 asking to wait for ever, Stripe down
mid-cancel, the database locked by another writer, the process out of file descriptors, slow
clients holding half-sent requests open. Each asserts that no acknowledged event is lost and no
top-level message is doubled.

More faults live with their features: SIGKILL of `python app.py` in the middle of a burst is
`process/test_crash.py::test_sigkill_mid_burst_loses_nothing_and_posts_no_card_twice`, Stripe
down during a single cancel is
`scenario/test_decisions.py::test_stripe_down_during_a_cancel_changes_nothing_and_says_so`, the
database deleted, replaced, full or unopenable is `process/test_database_faults.py`, and the
same slow clients against gunicorn behind nginx are `process/test_proxy.py`.

Where the worker's backoff would take minutes of real time, the test runs the bot in-process and
steps its worker as the worker's own loop would (deliver what is due, then sleep until the next
row is due), with the clock frozen by time-machine and moved instead of slept through. Where the
worker thread's own timing matters (the database lock), the test runs the real `python app.py`.
"""

from __future__ import annotations

import json
import random
import resource
import socket
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import time_machine

from bot import server
from bot.model import ACCEPT_ACTION, CANCEL_ACTION, MAX_RETRY_AFTER_SECONDS
from bot.sandbox import stripe_objects as so
from bot.stripe_gateway import cancel_idempotency_key
from tests.support.bot import CHANNEL, serve_bot, wait_until
from tests.support.decisions import answers, click, delayed_order
from tests.support.processes import bot_env, post, start_bot, stop
from tests.support.slow_clients import (
    SLOW_CLIENTS,
    assert_still_serving,
    closed_by_server,
    half_sent_requests,
)

T0 = 1_900_000_000  # the frozen "now" of the in-process tests


def run_worker(bot, clock, *, until: float | None = None, max_steps: int = 5_000) -> None:
    """Step the worker as `Deliverer.run` does: deliver everything due, then sleep until the next
    row is due — here by moving the frozen clock. Stops when nothing is left to deliver, or when
    the next row is due after `until` (the clock is then moved to `until`)."""
    for _ in range(max_steps):
        bot.deliverer.drain()
        due = bot.storage.next_delivery_at()
        if due is None:
            return
        if until is not None and due > until:
            clock.shift(max(0.0, until - time.time()))
            return
        clock.shift(max(0.0, due - time.time()) + 0.001)
    raise AssertionError(f"the worker was still busy after {max_steps} steps")


def the_card(fake_slack, order_id: str):
    """The one top-level message about `order_id` (fails if there are none, or several)."""
    cards = [m for m in fake_slack.messages(CHANNEL) if order_id in json.dumps(m.blocks)]
    assert len(cards) == 1, f"{len(cards)} top-level messages about {order_id}"
    return cards[0]


def assert_delivered_exactly_once(bot, fake_slack, orders: list[dict], delayed: set[str]) -> None:
    """One card per order, in its final state; one reply per delay; nothing pending or parked."""
    assert len(fake_slack.messages(CHANNEL)) == len(orders), "a card was posted twice"
    for order in orders:
        card = the_card(fake_slack, order["id"])
        blocks = json.dumps(card.blocks)
        replies = fake_slack.replies(CHANNEL, card.ts)
        if order["id"] in delayed:
            assert "Order delayed" in blocks and "2030" in blocks, order["id"]
            assert '"actions"' in blocks, "the delayed card lost its buttons"
            assert len(replies) == 1, f"{len(replies)} replies under {order['id']}"
            assert "2030" in replies[0].text
        else:
            assert "New carbon removal order" in blocks
            assert replies == []
        assert bot.storage.card(f"order:{order['id']}")["ts"] == card.ts
    counts = bot.storage.outbox_counts()
    assert set(counts) == {"done"}, counts  # nothing pending, nothing parked


def burst(orders: list[dict], delayed_at: int) -> list[dict]:
    """Each order's created event, then a delay of every other order."""
    created = [so.event("climate.order.created", o, created=delayed_at - 600) for o in orders]
    delays = [
        so.event("climate.order.delayed", so.delayed(o, 2030, at=delayed_at), created=delayed_at)
        for o in orders[::2]
    ]
    return created + delays


# -- Slack ------------------------------------------------------------------------------------


def test_slack_down_for_twenty_minutes_then_back_delivers_every_acknowledged_event_once(
    running, fake_slack
):
    orders = [so.order() for _ in range(8)]
    events = burst(orders, delayed_at=T0 - 60)
    with time_machine.travel(T0, tick=False) as clock:
        for event in events[:3]:
            assert running.send_event(event).json()["outcome"] == "queued"
        run_worker(running.bot, clock)
        assert len(fake_slack.messages(CHANNEL)) == 3
        # The outage starts with a post that Slack accepted but never answered.
        fake_slack.fail_next("chat.postMessage", status=503, after_success=True)
        for event in events[3:]:
            assert running.send_event(event).json()["outcome"] == "queued"
        assert running.bot.deliverer.run_once()
        fake_slack.set_down(True)
        run_worker(running.bot, clock, until=time.time() + 20 * 60)
        assert len(fake_slack.messages(CHANNEL)) == 4  # the one that got through before it all
        outage = [c for c in fake_slack.calls if c.status == 503]
        assert len(outage) > len(events) - 3, "the worker did not keep trying during the outage"
        assert "failed" not in running.bot.storage.outbox_counts()

        fake_slack.set_down(False)
        run_worker(running.bot, clock)
        # Asked at the frozen time: back at today's, the pacing slots taken at T0 (years ahead)
        # would be holds of years, which /healthz reports.
        assert requests.get(running.url + "/healthz", timeout=10).json()["status"] == "ok"

    assert_delivered_exactly_once(
        running.bot, fake_slack, orders, delayed={o["id"] for o in orders[::2]}
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_slack_failing_30_percent_of_calls_at_random_delivers_everything_exactly_once(
    settings, fake_slack, seed
):
    # Both the fake's failures and the worker's backoff jitter are seeded: a failure replays.
    with serve_bot(settings, rng=random.Random(seed)) as running:
        fake_slack.set_random_failures(0.3, seed=seed)
        orders = [so.order() for _ in range(10)]
        every_order_delayed = [
            event
            for order in orders
            for event in (
                so.event("climate.order.created", order, created=T0 - 600),
                so.event(
                    "climate.order.delayed", so.delayed(order, 2030, at=T0 - 60), created=T0 - 60
                ),
            )
        ]
        with time_machine.travel(T0, tick=False) as clock:
            for event in every_order_delayed:
                assert running.send_event(event).json()["outcome"] == "queued"
            run_worker(running.bot, clock)

        statuses = [c.status for c in fake_slack.calls]
        assert statuses.count(429) > 0 and statuses.count(500) > 0, "no fault was injected"
        assert_delivered_exactly_once(
            running.bot, fake_slack, orders, delayed={o["id"] for o in orders}
        )
        posted = [c for c in fake_slack.calls_to("chat.postMessage") if c.ok]
        assert len(posted) == 2 * len(orders), "Slack accepted a post twice"


@pytest.mark.parametrize(
    ("retry_after", "wait"),
    [("inf", 1.0), ("1e9", MAX_RETRY_AFTER_SECONDS), ("3600", MAX_RETRY_AFTER_SECONDS)],
)
def test_a_429_asking_to_wait_for_ever_holds_the_channel_two_minutes_at_most(
    running, fake_slack, retry_after, wait
):
    """Regression: one 429 with an absurd `Retry-After` held the channel in the database for
    good (across restarts and `climate-bot retry`) while /healthz said ok. `inf` is no number
    of seconds: it gets the default back-off."""
    orders = [so.order() for _ in range(3)]
    with time_machine.travel(T0, tick=False) as clock:
        fake_slack.fail_next("chat.postMessage", retry_after=retry_after)
        for order in orders:
            event = so.event("climate.order.created", order, created=T0 - 60)
            assert running.send_event(event).json()["outcome"] == "queued"
        assert running.bot.deliverer.run_once()  # the first card's post: 429
        assert running.bot.storage.paced_channels(T0) == {CHANNEL: T0 + wait}
        health = requests.get(running.url + "/healthz", timeout=10).json()
        # Held for two minutes: worth an operator's look; a second's back-off is not.
        assert health["status"] == ("degraded" if wait > 60 else "ok"), health
        assert any(CHANNEL in reason for reason in health["reasons"]) == (wait > 60), health
        run_worker(running.bot, clock, until=T0 + MAX_RETRY_AFTER_SECONDS + 5)
        assert time.time() <= T0 + wait + 1, "the worker waited longer than it was held"
        assert requests.get(running.url + "/healthz", timeout=10).json()["status"] == "ok"

    assert_delivered_exactly_once(running.bot, fake_slack, orders, delayed=set())
    statuses = [c.status for c in fake_slack.calls_to("chat.postMessage")]
    assert statuses == [429, 200, 200, 200], statuses  # held meanwhile: no post went too soon


# -- Stripe -----------------------------------------------------------------------------------


def successful_cancels(fake_stripe, order_id: str) -> list:
    return [
        c
        for c in fake_stripe.calls_to(f"/v1/climate/orders/{order_id}/cancel")
        if c.status == 200 and not c.replayed
    ]


def work_until(bot, done, message: str) -> None:
    """Run the worker one outbox row at a time until `done()` holds."""
    for _ in range(50):
        if done():
            return
        assert bot.deliverer.run_once(), message
    raise AssertionError(message)


def test_stripe_down_midway_through_several_cancels_cancels_each_order_at_most_once(
    running, fake_slack, fake_stripe
):
    first, during, halfway, after = (delayed_order(running, fake_stripe) for _ in range(4))
    for order in (first, during, halfway, after):
        assert "Cancelling order" in click(running, fake_slack, CANCEL_ACTION, order["id"])
    bot = running.bot

    work_until(
        bot,
        lambda: fake_stripe.get_order(first["id"])["status"] == "canceled",
        "the first cancel never reached Stripe",
    )
    fake_stripe.set_down(True)  # connections dropped: retrieve fails, after the SDK's retries
    work_until(
        bot,
        lambda: [r["outcome"] for r in bot.storage.audit_rows(during["id"])] == ["failed"],
        "the cancel during the outage was not recorded as failed",
    )
    fake_stripe.set_down(False)
    # Stripe answers the re-read of `halfway`, then fails its cancel, retries included.
    fake_stripe.fail_next(f"/v1/climate/orders/{halfway['id']}/cancel", status=503, times=3)
    running.deliver()

    # After the outage, someone clicks Cancel again on `during`, and on `first` by mistake.
    assert "Cancelling order" in click(running, fake_slack, CANCEL_ACTION, during["id"])
    assert "already cancelled" in click(running, fake_slack, CANCEL_ACTION, first["id"])
    running.deliver()

    for order in (first, during, after):
        assert fake_stripe.get_order(order["id"])["status"] == "canceled"
        assert len(successful_cancels(fake_stripe, order["id"])) == 1, order["id"]
        assert bot.storage.order_row(order["id"])["decision"] == "cancelled"
        blocks = json.dumps(the_card(fake_slack, order["id"]).blocks)
        assert "Cancelled by <@U0ALICE>" in blocks and '"actions"' not in blocks
    # `halfway` was not cancelled, and can still be: its buttons are back.
    assert fake_stripe.get_order(halfway["id"])["status"] == "confirmed"
    assert successful_cancels(fake_stripe, halfway["id"]) == []
    assert bot.storage.order_row(halfway["id"])["decision"] is None
    assert '"actions"' in json.dumps(the_card(fake_slack, halfway["id"]).blocks)
    assert "You accepted" in click(running, fake_slack, ACCEPT_ACTION, halfway["id"])

    outcomes = {
        o["id"]: [r["outcome"] for r in bot.storage.audit_rows(o["id"])]
        for o in (first, during, halfway, after)
    }
    assert outcomes == {
        first["id"]: ["cancelled", "too_late"],
        during["id"]: ["failed", "cancelled"],
        halfway["id"]: ["failed", "accepted"],
        after["id"]: ["cancelled"],
    }
    # The retry after a failure is a new attempt, with a new Idempotency-Key.
    [retried] = successful_cancels(fake_stripe, during["id"])
    assert retried.idempotency_key == cancel_idempotency_key(during["id"], 1)
    assert sum("could not be reached" in text for text in answers(fake_slack)) == 2
    assert len(fake_slack.messages(CHANNEL)) == 4


# -- the database and the process (real `python app.py`) -------------------------------------


LOCK_SECONDS = 3.0


def test_database_locked_by_another_writer_for_seconds_loses_and_doubles_nothing(
    tmp_path, fake_slack, fake_stripe
):
    env = bot_env(tmp_path, fake_slack, fake_stripe)
    log = tmp_path / "bot.log"
    orders = [so.order() for _ in range(6)]
    events = burst(orders, delayed_at=int(time.time()) - 60)
    # The orders' created events wait for the lock together; the delays come after them, since
    # a delay recorded before its order's created event makes that one late (a thread reply of
    # its own), and the arrival order of concurrent webhooks is the scheduler's.
    created, delays = events[: len(orders)], events[len(orders) :]
    proc = start_bot(env, tmp_path, log)
    try:
        assert post(env, events[0]) == 200
        wait_until(lambda: len(fake_slack.messages(CHANNEL)) == 1, 30, "the first card was lost")

        locked, release = threading.Event(), threading.Event()
        released_at: list[float] = []

        def other_writer() -> None:
            db = sqlite3.connect(env["DATABASE_PATH"], isolation_level=None)
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('fault', 'locked')")
            locked.set()
            # The fault itself: hold the write lock for LOCK_SECONDS, or until every webhook
            # has been answered (which, with the lock held, would be a failure of its own).
            release.wait(LOCK_SECONDS)
            released_at.append(time.monotonic())
            db.execute("COMMIT")
            db.close()

        def post_and_time(event: dict) -> tuple[int, float]:
            return post(env, event), time.monotonic()

        writer = threading.Thread(target=other_writer)
        writer.start()
        assert locked.wait(10)
        health = requests.get(f"http://127.0.0.1:{env['PORT']}/healthz", timeout=10)
        assert health.status_code == 200  # WAL: readers go on while the writer holds the lock
        with ThreadPoolExecutor(len(created) - 1) as pool:
            answered = list(pool.map(post_and_time, created[1:]))
            release.set()
        writer.join(timeout=10)

        acknowledged_early = [at for status, at in answered if status < 300 and at < released_at[0]]
        assert acknowledged_early == [], "a webhook was acknowledged without waiting for the lock"
        # Stripe redelivers anything that did not get a 2xx (none should need it: 30 s busy
        # timeout), and may redeliver the rest anyway.
        redelivered = [
            post(env, e)
            for (status, _), e in zip(answered, created[1:], strict=True)
            if status >= 300
        ]
        assert all(status == 200 for status in redelivered)
        assert all(post(env, event) == 200 for event in delays)
        assert all(post(env, event) == 200 for event in events)

        def delivered() -> bool:
            top = fake_slack.messages(CHANNEL)
            replies = sum(len(fake_slack.replies(CHANNEL, m.ts)) for m in top)
            return len(top) == len(orders) and replies == len(orders[::2])

        wait_until(delivered, 60, "not every acknowledged event reached Slack")
        health_url = f"http://127.0.0.1:{env['PORT']}/healthz"
        wait_until(
            lambda: set(requests.get(health_url, timeout=10).json()["outbox"]) == {"done"},
            30,
            "the outbox did not drain, or parked something",
        )
    finally:
        stop(proc)
    db = sqlite3.connect(env["DATABASE_PATH"])
    assert db.execute("SELECT count(*) FROM events").fetchone()[0] == len(events)
    db.close()
    assert len(fake_slack.messages(CHANNEL)) == len(orders)
    for order in orders:
        the_card(fake_slack, order["id"])
    # With a 30 s busy timeout, a 3 s lock costs time, not errors: nothing needed redelivery.
    assert redelivered == [], log.read_text()


@pytest.mark.skipif(not hasattr(resource, "prlimit"), reason="needs Linux prlimit")
def test_hundreds_of_webhooks_under_a_256_file_descriptor_limit_are_all_acknowledged(
    tmp_path, fake_slack, fake_stripe
):
    env = bot_env(tmp_path, fake_slack, fake_stripe)
    proc = start_bot(env, tmp_path, tmp_path / "bot.log")
    try:
        resource.prlimit(proc.pid, resource.RLIMIT_NOFILE, (256, 256))
        # Events the bot records but posts nothing about: this is about receiving only.
        events = [
            so.event("plan.created", {"id": f"plan_{i}", "object": "plan"}) for i in range(300)
        ]
        statuses = [post(env, event) for event in events]
        health = requests.get(f"http://127.0.0.1:{env['PORT']}/healthz", timeout=10)
    finally:
        stop(proc)
    assert statuses.count(200) == len(events), {s: statuses.count(s) for s in set(statuses)}
    assert health.status_code == 200
    db = sqlite3.connect(env["DATABASE_PATH"])
    assert db.execute("SELECT count(*) FROM events").fetchone()[0] == len(events)
    db.close()


# -- slow clients -------------------------------------------------------------------------------


def test_forty_half_sent_requests_do_not_stop_the_embedded_server(
    tmp_path, fake_slack, fake_stripe
):
    env = bot_env(tmp_path, fake_slack, fake_stripe)
    base = f"http://127.0.0.1:{env['PORT']}"
    proc = start_bot(env, tmp_path, tmp_path / "bot.log")
    orders = [so.order() for _ in range(3)]
    try:
        slow = half_sent_requests(int(env["PORT"]), SLOW_CLIENTS)
        for order in orders:
            assert_still_serving(base, env, order)
        # The server drops each of them after REQUEST_SECONDS, whatever they do next.
        dropped = [closed_by_server(sock) for sock in slow]
        wait_until(
            lambda: len(fake_slack.messages(CHANNEL)) == len(orders), 30, "cards not delivered"
        )
    finally:
        stop(proc)
    assert all(dropped), f"{dropped.count(False)} slow connections still open after 30 s"
    assert len(fake_slack.messages(CHANNEL)) == len(orders)  # nothing lost, nothing doubled


def test_a_request_trickling_one_byte_at_a_time_is_dropped_after_the_deadline(
    tmp_path, fake_slack, fake_stripe
):
    # Each byte resets an idle timeout; only a deadline for the whole request ends it.
    env = bot_env(tmp_path, fake_slack, fake_stripe)
    proc = start_bot(env, tmp_path, tmp_path / "bot.log")
    try:
        sock = socket.create_connection(("127.0.0.1", int(env["PORT"])), timeout=5)
        request = b"POST /stripe/webhook HTTP/1.1\r\nHost: bot\r\nContent-Length: 500\r\n\r\n"
        request += b"x" * 500
        started = time.monotonic()
        sent = 0
        try:
            for sent, byte in enumerate(request, start=1):  # noqa: B007 (`sent` is read below)
                sock.sendall(bytes([byte]))
                time.sleep(0.25)  # the client's pace, not a wait for the server
                if time.monotonic() - started > 20:
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass
        elapsed = time.monotonic() - started
        sock.close()
    finally:
        stop(proc)
    assert sent < len(request), "the whole trickled request was accepted"
    assert elapsed < server.REQUEST_SECONDS + 4, f"the connection stayed open for {elapsed:.0f}s"
