"""The delivery worker: one card per order, replies in its thread, never lost, never doubled."""

from __future__ import annotations

import json
import threading

import requests
import time_machine
from prometheus_client import REGISTRY

from bot.delivery import Deliverer
from bot.jobs import CardJob
from bot.recording import APPLY_BATCH, record_inbound
from bot.sandbox import stripe_objects as so
from bot.slack_gateway import SlackGateway
from bot.storage import Storage
from tests.support.bot import BOT_TOKEN, CHANNEL, wait_until


def card_of(fake_slack, order_id: str):
    cards = [m for m in fake_slack.messages(CHANNEL) if order_id in json.dumps(m.blocks)]
    assert len(cards) == 1, f"{len(cards)} top-level messages mention {order_id}"
    return cards[0]


def test_first_event_posts_the_card_and_later_ones_reply_and_update_it(running, fake_slack):
    order = so.order()
    running.send_event(so.event("climate.order.created", order, created=1000))
    running.deliver()
    card = card_of(fake_slack, order["id"])
    assert "New carbon removal order" in json.dumps(card.blocks)
    assert card.updates == 0

    running.send_event(
        so.event("climate.order.delayed", so.delayed(order, 2030, at=2000), created=2000)
    )
    running.deliver()
    card = card_of(fake_slack, order["id"])
    assert card.updates == 1
    assert "Order delayed" in json.dumps(card.blocks)
    assert "2030" in json.dumps(card.blocks)
    replies = fake_slack.replies(CHANNEL, card.ts)
    assert len(replies) == 1
    assert "2030" in replies[0].text
    # The card's ts is remembered, and only one top-level message exists for the order.
    assert running.bot.storage.card(f"order:{order['id']}")["ts"] == card.ts
    assert len(fake_slack.messages(CHANNEL)) == 1


def test_product_card_then_price_change_in_its_thread(running, fake_slack):
    product = so.product(prices={"usd": 56650})
    running.send_event(so.event("climate.product.created", product, created=1000))
    repriced = so.product(id=product["id"], prices={"usd": 60000})
    running.send_event(
        so.event(
            "climate.product.pricing_updated",
            repriced,
            created=2000,
            previous_attributes={
                "current_prices_per_metric_ton": product["current_prices_per_metric_ton"]
            },
        )
    )
    running.deliver()
    [card] = fake_slack.messages(CHANNEL)
    assert "600.00" in json.dumps(card.blocks)
    [reply] = fake_slack.replies(CHANNEL, card.ts)
    assert "566.50" in reply.text and "600.00" in reply.text


def test_late_delayed_after_delivered_does_not_bring_the_buttons_back(running, fake_slack):
    order = so.order()
    delivered = so.order(status="delivered", id=order["id"])
    running.send_event(so.event("climate.order.created", order, created=1000))
    running.send_event(so.event("climate.order.delivered", delivered, created=3000))
    running.send_event(
        so.event("climate.order.delayed", so.delayed(order, 2030, at=2000), created=2000)
    )
    running.deliver()
    card = card_of(fake_slack, order["id"])
    blocks = json.dumps(card.blocks)
    assert "Order delivered" in blocks
    assert '"actions"' not in blocks
    replies = fake_slack.replies(CHANNEL, card.ts)
    assert len(replies) == 2
    assert "older than what the card shows" in replies[-1].text
    assert running.bot.storage.order_row(order["id"])["status"] == "delivered"


def test_out_of_order_first_event_still_makes_one_card(running, fake_slack):
    order = so.order()
    delivered = so.order(status="delivered", id=order["id"])
    running.send_event(so.event("climate.order.delivered", delivered, created=3000))
    running.send_event(so.event("climate.order.created", order, created=1000))
    running.deliver()
    card = card_of(fake_slack, order["id"])
    assert "Order delivered" in json.dumps(card.blocks)
    assert len(fake_slack.replies(CHANNEL, card.ts)) == 1


def test_rate_limit_waits_retry_after_then_delivers(running, fake_slack):
    with time_machine.travel(1_900_000_000, tick=False) as clock:
        fake_slack.fail_next("chat.postMessage", retry_after=7)
        running.send_event(so.event("climate.order.created", so.order()))
        running.deliver()
        assert fake_slack.messages(CHANNEL) == []
        clock.shift(6)
        running.deliver()
        assert fake_slack.messages(CHANNEL) == []  # still inside Retry-After
        clock.shift(2)
        running.deliver()
        assert len(fake_slack.messages(CHANNEL)) == 1


def test_server_error_is_retried_with_backoff_and_posted_once(running, fake_slack):
    with time_machine.travel(1_900_000_000, tick=False) as clock:
        fake_slack.fail_next("chat.postMessage", status=500, times=2)
        running.send_event(so.event("climate.order.created", so.order()))
        running.deliver()
        running.deliver()
        assert fake_slack.messages(CHANNEL) == []
        for _ in range(3):
            clock.shift(10)
            running.deliver()
        assert len(fake_slack.messages(CHANNEL)) == 1
        assert len(fake_slack.calls_to("chat.postMessage")) == 3


def test_dropped_connection_is_retried(running, fake_slack):
    with time_machine.travel(1_900_000_000, tick=False) as clock:
        fake_slack.fail_next("chat.postMessage", disconnect=True)
        running.send_event(so.event("climate.order.created", so.order()))
        running.deliver()
        assert fake_slack.messages(CHANNEL) == []
        clock.shift(5)
        running.deliver()
        assert len(fake_slack.messages(CHANNEL)) == 1


def test_not_in_channel_joins_and_posts(running, fake_slack):
    fake_slack.add_channel(CHANNEL, "climate", is_member=False)
    running.send_event(so.event("climate.order.created", so.order()))
    running.deliver()
    assert len(fake_slack.calls_to("conversations.join")) == 1
    assert len(fake_slack.messages(CHANNEL)) == 1


def test_permanent_error_parks_the_delivery_and_health_says_why(running, fake_slack):
    fake_slack.add_channel(CHANNEL, "climate", is_archived=True)
    running.send_event(so.event("climate.order.created", so.order()))
    running.deliver()
    running.deliver()
    assert len(fake_slack.calls_to("chat.postMessage")) == 1  # not retried forever
    health = requests.get(running.url + "/healthz").json()
    assert health["status"] == "degraded"
    assert "is_archived" in health["reasons"][0]
    # The operator unarchives the channel and retries: nothing was lost.
    fake_slack.add_channel(CHANNEL, "climate")
    assert running.bot.storage.retry_failed() == 1
    running.deliver()
    assert len(fake_slack.messages(CHANNEL)) == 1
    assert requests.get(running.url + "/healthz").json()["status"] == "ok"


def test_revoked_token_parks_every_delivery_without_crashing(running, fake_slack):
    fake_slack.set_token_state("token_revoked")
    for _ in range(2):
        running.send_event(so.event("climate.order.created", so.order()))
    running.deliver()
    failures = running.bot.storage.failures()
    assert [f.last_error.split(":")[0] for f in failures] == ["token_revoked", "token_revoked"]
    assert requests.get(running.url + "/healthz").status_code == 200


def test_reply_waits_for_a_card_that_failed_and_follows_it_after_retry(running, fake_slack):
    fake_slack.fail_next("chat.postMessage", error="channel_not_found")
    order = so.order()
    running.send_event(so.event("climate.order.created", order, created=1000))
    running.send_event(
        so.event("climate.order.delayed", so.delayed(order, 2030, at=2000), created=2000)
    )
    running.deliver()
    assert fake_slack.messages(CHANNEL) == []
    # The reply waits for its card; the deciders' direct messages (none here) do not.
    assert running.bot.storage.outbox_counts() == {"failed": 1, "pending": 1, "done": 1}
    running.bot.storage.retry_failed()
    running.deliver()
    card = card_of(fake_slack, order["id"])
    assert len(fake_slack.replies(CHANNEL, card.ts)) == 1


def test_post_that_reached_slack_before_a_crash_is_not_posted_again(running, fake_slack):
    """Slack accepted the card, then the process died before storing its ts."""
    storage = running.bot.storage
    order = so.order()
    with time_machine.travel(1_900_000_000, tick=False) as clock:
        running.send_event(so.event("climate.order.created", order))
        row = storage.lease_next("crashed-worker", pace_seconds=0)
        crashed = Deliverer(storage, SlackGateway(BOT_TOKEN, fake_slack.api_url))
        crashed.slack.post_message(
            CHANNEL,
            crashed.render_card(row.card_key),
            marker={"db": storage.instance_id, "outbox": row.id},
        )
        # ... the process is killed here. The lease runs out and another worker takes over.
        clock.shift(61)
        running.deliver()
    assert len(fake_slack.messages(CHANNEL)) == 1
    assert storage.card(f"order:{order['id']}")["ts"] == fake_slack.messages(CHANNEL)[0].ts
    assert storage.outbox_counts() == {"done": 1}


def test_pacing_keeps_to_one_message_per_second_per_channel(running, fake_slack):
    running.bot.deliverer.pace_seconds = 1.0
    fake_slack.enforce_pacing = True
    with time_machine.travel(1_900_000_000, tick=False) as clock:
        for _ in range(3):
            running.send_event(so.event("climate.order.created", so.order()))
        running.deliver()
        assert len(fake_slack.messages(CHANNEL)) == 1
        clock.shift(1)
        running.deliver()
        assert len(fake_slack.messages(CHANNEL)) == 2
        clock.shift(1)
        running.deliver()
    assert len(fake_slack.messages(CHANNEL)) == 3
    assert fake_slack.ratelimited_count == 0


def test_two_workers_on_one_database_never_post_twice(running, fake_slack, settings):
    orders = [so.order() for _ in range(12)]
    for order in orders:
        running.send_event(so.event("climate.order.created", order, created=1000))
        running.send_event(
            so.event("climate.order.delayed", so.delayed(order, 2030, at=2000), created=2000)
        )
    workers = []
    for _ in range(3):  # separate connections, as separate processes would have
        storage = Storage(settings.DATABASE_PATH)
        workers.append(
            Deliverer(storage, SlackGateway(BOT_TOKEN, fake_slack.api_url), pace_seconds=0)
        )
    threads = [threading.Thread(target=w.drain) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    running.deliver()
    top = fake_slack.messages(CHANNEL)
    assert len(top) == len(orders)
    for order in orders:
        card = card_of(fake_slack, order["id"])
        assert len(fake_slack.replies(CHANNEL, card.ts)) == 1
    for w in workers:
        w.storage.close()


def test_ambiguous_failure_after_slack_posted_is_reconciled_not_reposted(running, fake_slack):
    """Slack posted the card but the answer was lost (5xx/time-out): the retry finds it."""
    order = so.order()
    with time_machine.travel(1_900_000_000, tick=False) as clock:
        fake_slack.fail_next("chat.postMessage", status=503, after_success=True)
        running.send_event(so.event("climate.order.created", order, created=1000))
        running.deliver()
        assert len(fake_slack.messages(CHANNEL)) == 1  # it did reach Slack
        clock.shift(5)
        running.deliver()
        fake_slack.fail_next("chat.postMessage", disconnect=True, after_success=True)
        running.send_event(
            so.event("climate.order.delayed", so.delayed(order, 2030, at=2000), created=2000)
        )
        running.deliver()
        clock.shift(5)
        running.deliver()
    [card] = fake_slack.messages(CHANNEL)
    assert len(fake_slack.replies(CHANNEL, card.ts)) == 1
    assert running.bot.storage.card(f"order:{order['id']}")["ts"] == card.ts
    assert running.bot.storage.outbox_counts() == {"done": 4}  # card, reply, update, DM job
    assert len(fake_slack.calls_to("conversations.history")) == 1
    assert len(fake_slack.calls_to("conversations.replies")) == 1


def test_stripe_text_cannot_ping_or_disguise_links(running, fake_slack):
    order = so.order(
        beneficiary={"public_name": "<!channel> <@U0ALICE> <https://evil.example|Stripe>"}
    )
    running.send_event(so.event("climate.order.created", order))
    running.deliver()
    [card] = fake_slack.messages(CHANNEL)
    everything = card.text + json.dumps(card.blocks)
    for raw in ("<!channel>", "<@U0ALICE>", "<https://evil.example|Stripe>"):
        assert raw not in everything
    assert "&lt;!channel&gt;" in everything


def test_test_mode_and_live_mode_cards_differ_visibly(running, fake_slack):
    running.send_event(so.event("climate.order.created", so.order(livemode=False)))
    running.send_event(so.event("climate.order.created", so.order(livemode=True)))
    running.deliver()
    test_card, live_card = fake_slack.messages(CHANNEL)
    assert "[TEST]" in json.dumps(test_card.blocks)
    assert "[TEST]" not in json.dumps(live_card.blocks)


def looks(found: str) -> float:
    return REGISTRY.get_sample_value("climate_bot_delivery_looks_total", {"found": found}) or 0.0


def test_a_burst_of_recorded_events_is_applied_batch_after_batch(running, fake_slack):
    """More events than one batch, all for a channel whose slot is taken: the worker applies the
    next batch at once, not at its next look (a batch a second behind a web tier whose webhooks
    cannot wake it, `climate-bot worker`)."""
    deliverer = running.bot.deliverer
    deliverer.pace_seconds = 60  # once the first card is posted, the channel stays paced
    with running.worker_running():
        running.send_event(so.event("climate.order.created", so.order()), apply=False)
        wait_until(lambda: len(fake_slack.messages(CHANNEL)) == 1, 10, "no card was posted")
        wait_until(running.worker_asleep, 10, "the worker never slept")
        burst = 2 * APPLY_BATCH + 50
        for _ in range(burst):  # recorded by another process's web tier: no one tells the worker
            event = so.event("climate.order.created", so.order())
            assert record_inbound(running.bot.storage, event, json.dumps(event)).outcome.value == (
                "queued"
            )
        deliverer.poke()  # its next look (here: something else queued)
        wait_until(
            lambda: running.bot.storage.apply_backlog()[0] == 0,
            10,
            "the worker waited for its next look between batches",
        )
        assert running.bot.storage.outbox_counts() == {"done": 1, "pending": burst}
        assert len(fake_slack.messages(CHANNEL)) == 1


def test_a_poke_is_looked_at_even_when_what_was_applied_waits_for_its_channel(running, fake_slack):
    """Applying events whose rows all wait for a paced channel skips the look that would find
    nothing there; it must not skip one owed to rows queued elsewhere (a cancel, a fetch, another
    channel's card), or they waited out the channel's slot (up to a 429's two minutes)."""
    deliverer = running.bot.deliverer
    deliverer.pace_seconds = 60  # once the first card is posted, the channel stays paced
    with running.worker_running():
        running.send_event(so.event("climate.order.created", so.order()), apply=False)
        wait_until(lambda: len(fake_slack.messages(CHANNEL)) == 1, 10, "no card was posted")
        wait_until(running.worker_asleep, 10, "the worker never slept")
        event = so.event("climate.order.created", so.order())  # for the paced channel
        record_inbound(running.bot.storage, event, json.dumps(event))
        with running.bot.storage.transaction():
            running.bot.storage.enqueue("order:elsewhere", CardJob(), channel="C0OTHER")
        deliverer.poke()  # the worker applies the event first, then owes the poke a look

        def looked_at() -> bool:  # leased and tried (the row names no order: it is parked)
            row = running.bot.storage.conn.execute(
                "SELECT attempts FROM outbox WHERE card_key = 'order:elsewhere'"
            ).fetchone()
            return row[0] > 0

        wait_until(looked_at, 10, "the poked row waited for the paced channel's slot")
        assert len(fake_slack.messages(CHANNEL)) == 1


def test_webhooks_into_a_paced_channel_do_not_wake_the_worker_for_nothing(running, fake_slack):
    """During a burst into one channel every webhook used to cost the worker a look at the
    outbox that could find nothing (the channel's slot was taken): a look per request, and with
    a backlog each look is a scan, so webhooks arriving during one chained the next."""
    deliverer = running.bot.deliverer
    deliverer.pace_seconds = 60  # the channel stays paced for the whole test
    asleep = running.worker_asleep
    with running.worker_running():
        running.send_event(so.event("climate.order.created", so.order()), apply=False)
        wait_until(lambda: len(fake_slack.messages(CHANNEL)) == 1, 10, "no card was posted")
        with running.bot.storage.transaction():  # a backlog: each look now takes a while
            for n in range(3000):
                running.bot.storage.enqueue(f"order:backlog{n}", CardJob(), channel=CHANNEL)
        start = looks("no")
        deliverer.poke()
        wait_until(lambda: looks("no") > start and asleep(), 10, "the worker never slept")
        before = looks("no")
        for _ in range(30):  # the worker applies each; what it queued waits for the slot
            event = so.event("climate.order.created", so.order())
            assert running.send_event(event, apply=False).ok
        wait_until(
            lambda: running.bot.storage.apply_backlog()[0] == 0 and asleep(),
            10,
            "the worker did not apply the webhooks' events",
        )
        assert looks("no") == before
        deliverer.poke()  # something else queued (a job, a decision): that does wake it
        wait_until(lambda: looks("no") > before and asleep(), 10, "a poke woke nothing")
        assert looks("no") == before + 1
        assert len(fake_slack.messages(CHANNEL)) == 1
        assert running.bot.storage.outbox_counts() == {"done": 1, "pending": 3030}
