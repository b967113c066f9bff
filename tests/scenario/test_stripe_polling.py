"""STRIPE_POLL_INTERVAL: the bot reads Stripe's Events API itself, with no webhook and no public
URL, through the same path as a webhook; nothing is missed, nothing is told twice.

The real stripe SDK reads FakeStripe's `/v1/events` over HTTP (newest first, pages, `created`
filters, `Stripe-Account`, 30 days kept); the delivery worker posts to the fake Slack. The reader
is stepped by hand (`poll_once`) on a clock the test sets, as the worker is.
"""

from __future__ import annotations

import logging

import pytest
import requests
from click.testing import CliRunner

from bot.cli import main
from bot.sandbox import stripe_objects as so
from bot.sandbox.stripe import ORDER_WRITE
from bot.settings import load_settings
from bot.stripe_polling import LEASE, EventPoller
from tests.support.bot import CHANNEL, STRIPE_KEY, env_for, serve_bot
from tests.support.faults import FaultyStripe
from tests.support.routing import ROUTES

DAY = 24 * 60 * 60
EVENTS = "/v1/events"
START = 1_790_000_000  # 2026-09-21, the tests' "now" when they set the clock


class Clock:
    """A clock a test moves by hand; the reader and FakeStripe both read it."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def polling_env(tmp_path, fake_slack, fake_stripe, **extra: str) -> dict[str, str]:
    env = env_for(tmp_path, fake_slack, fake_stripe)
    del env["STRIPE_WEBHOOK_SECRET"]  # no webhooks at all
    return {**env, "STRIPE_POLL_INTERVAL": "5", **extra}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def stripe_at(clock):
    """A FakeStripe whose clock (what it keeps, what `created` new objects get) is `clock`."""
    with FaultyStripe(api_key=STRIPE_KEY, clock=clock) as fake:
        yield fake


@pytest.fixture
def polling(tmp_path, fake_slack, stripe_at, clock):
    with serve_bot(load_settings(polling_env(tmp_path, fake_slack, stripe_at))) as running:
        running.bot.poller.clock = clock
        yield running


def order_events(count: int, start: int) -> list[dict]:
    """`count` orders placed one a minute from `start`, each then delayed a second later."""
    events = []
    for n in range(count):
        order = so.order("confirmed", created=start + 60 * n)
        events.append(so.event("climate.order.created", order, created=start + 60 * n))
        delayed = so.delayed(order, 2028, start + 60 * n + 1)
        events.append(so.event("climate.order.delayed", delayed, created=start + 60 * n + 1))
    return events


def cards(fake_slack) -> list:
    return [m for m in fake_slack.messages(CHANNEL) if m.thread_ts is None]


def test_an_event_while_running_is_read_posted_and_never_told_twice(
    polling, stripe_at, fake_slack, clock
):
    poller = polling.bot.poller
    assert poller.poll_once().new == 0  # the first reading starts the cursor at now
    order = so.order("confirmed", created=int(clock.now) + 10)
    stripe_at.add_event(so.event("climate.order.created", order, created=int(clock.now) + 10))
    clock.now += 15
    reading = poller.poll_once()
    assert (reading.new, reading.failed, reading.errors) == (1, 0, {})
    polling.deliver()
    [card] = cards(fake_slack)
    assert order["id"] in str(card.blocks)
    # The next readings overlap the last minutes: the event is seen again and skipped.
    clock.now += 5
    again = poller.poll_once()
    assert (again.new, again.skipped) == (0, 1)
    polling.deliver()
    assert len(fake_slack.messages(CHANNEL)) == 1
    recorded = polling.bot.storage.conn.execute("SELECT source FROM events").fetchall()
    assert [row[0] for row in recorded] == ["poll"]


def test_events_from_before_the_first_reading_are_not_posted(polling, stripe_at, clock):
    old = so.order("confirmed", created=int(clock.now) - DAY)
    stripe_at.add_event(so.event("climate.order.created", old, created=int(clock.now) - DAY))
    assert polling.bot.poller.poll_once().new == 0  # history is `climate-bot replay`'s
    assert polling.bot.storage.count_events() == 0


def test_250_events_while_down_are_read_oldest_first_across_pages(
    polling, stripe_at, fake_slack, clock
):
    poller = polling.bot.poller
    poller.poll_once()
    down_at = int(clock.now)
    events = order_events(125, down_at + 60)  # 250 events over two hours of downtime
    for event in events:
        stripe_at.add_event(event)
    clock.now += 3 * 60 * 60
    stripe_at.clear_calls()
    assert poller.poll_once().new == 250
    pages = stripe_at.calls_to(EVENTS)
    assert len(pages) == 3 and [bool(c.params.get("starting_after")) for c in pages] == [
        False,
        True,
        True,
    ]
    assert all(set(c.params["types"]) >= {"climate.order.created"} for c in pages)
    recorded = polling.bot.storage.conn.execute("SELECT id FROM events ORDER BY rowid").fetchall()
    assert [row[0] for row in recorded] == [e["id"] for e in events]  # in the order they happened
    polling.deliver()
    posted = cards(fake_slack)
    assert len(posted) == 125 and len({m.ts for m in posted}) == 125
    assert len(fake_slack.messages(CHANNEL)) == 125  # every delay is on its card, nothing twice
    assert all(len(fake_slack.replies(CHANNEL, m.ts)) == 1 for m in posted)  # its delay


@pytest.mark.parametrize("status", [429, 500])
def test_a_failure_mid_page_writes_nothing_and_the_next_reading_gets_it_all(
    polling, stripe_at, fake_slack, clock, status
):
    poller = polling.bot.poller
    poller.poll_once()
    for event in order_events(75, int(clock.now) + 60):
        stripe_at.add_event(event)
    clock.now += 2 * 60 * 60
    # The second page fails three times: through the SDK's own retries (it retries a 500, not a
    # 429), then the reader's, which waits longer each time.
    stripe_at.fail_next(EVENTS, status=status, times=3, after=1)
    reading = poller.poll_once()
    assert reading.new == 0 and str(status) in reading.errors[""]
    assert polling.bot.storage.count_events() == 0  # every page is read before anything is written
    assert poller.next_wait() > poller.interval  # backing off
    assert polling.bot.health()["status"] == "ok"  # one failure is not yet worth an alarm
    cursor = polling.bot.storage.poll_cursor(None)
    assert (cursor.failures, str(status) in cursor.last_error) == (1, True)
    metrics = requests.get(polling.url + "/metrics", timeout=5).text
    assert 'climate_bot_stripe_events_failed_readings{account="platform"} 1.0' in metrics

    waits = []
    for _ in range(3):
        waits.append(poller.next_wait())
        clock.now += waits[-1]
        reading = poller.poll_once()
        if not reading.errors:
            break
        assert polling.bot.storage.count_events() == 0
    assert reading.new == 150
    assert waits == sorted(waits) and waits[0] > poller.interval
    assert poller.next_wait() == poller.interval
    polling.deliver()
    assert len(cards(fake_slack)) == 75
    assert polling.bot.storage.poll_cursor(None).failures == 0


def test_readings_that_keep_failing_make_healthz_say_so(polling, stripe_at, clock):
    poller = polling.bot.poller
    poller.poll_once()
    stripe_at.set_down(True)
    for _ in range(3):
        clock.now += 60
        poller.poll_once()
    reasons = polling.bot.health()["reasons"]
    assert polling.bot.health()["status"] == "degraded"
    assert any("Stripe events last read" in r and "3 failed readings" in r for r in reasons)
    stripe_at.set_down(False)
    clock.now += 60
    poller.poll_once()
    assert polling.bot.health()["status"] == "ok"


def test_webhooks_and_readings_together_tell_each_event_once(
    tmp_path, fake_slack, stripe_at, clock
):
    env = {**env_for(tmp_path, fake_slack, stripe_at), "STRIPE_POLL_INTERVAL": "5"}
    with serve_bot(load_settings(env)) as running:
        running.bot.poller.clock = clock
        running.bot.poller.poll_once()
        first = so.event("climate.order.created", so.order("confirmed"), created=int(clock.now) + 1)
        second = so.event("climate.product.created", so.product(), created=int(clock.now) + 2)
        for event in (first, second):
            stripe_at.add_event(event)
        assert running.send_event(first).json()["outcome"] == "queued"  # its webhook came first
        clock.now += 10
        reading = running.bot.poller.poll_once()
        assert (reading.new, reading.skipped) == (1, 1)
        # read before its webhook came:
        assert running.send_event(second).json()["outcome"] == "duplicate"
        running.deliver()
        assert len(fake_slack.messages(CHANNEL)) == 2


def test_a_gap_longer_than_stripe_keeps_events_is_reported_loudly(
    tmp_path, polling, stripe_at, fake_slack, clock, caplog
):
    poller = polling.bot.poller
    poller.poll_once()
    last_read = clock.now
    clock.now += 31 * DAY
    after = so.order("confirmed", created=int(clock.now) - 60)
    stripe_at.add_event(so.event("climate.order.created", after, created=int(clock.now) - 60))
    with caplog.at_level(logging.ERROR, logger="bot.stripe_polling"):
        assert poller.poll_once().new == 1  # what Stripe still keeps is read
    [line] = [r.getMessage() for r in caplog.records if "events may be lost" in r.getMessage()]
    assert "30 days" in line and "climate-bot retry" in line
    health = polling.bot.health()
    assert health["status"] == "degraded"
    assert any("events may be lost" in r and "30" in r for r in health["reasons"])
    polling.deliver()
    [notice] = [m for m in cards(fake_slack) if "may be missing" in m.text]
    assert f"<!date^{int(last_read)}^" in str(notice.blocks)
    assert "climate-bot retry" in str(notice.blocks)
    metrics = requests.get(polling.url + "/metrics", timeout=5).text
    assert "climate_bot_stripe_event_gaps 1.0" in metrics
    # The next reading finds no new gap; the operator acknowledges the one found.
    clock.now += 5
    poller.poll_once()
    assert len(polling.bot.storage.open_gaps()) == 1
    result = CliRunner().invoke(
        main, ["retry"], env=polling_env(tmp_path, fake_slack, stripe_at), catch_exceptions=False
    )
    assert "1 gaps in Stripe's events acknowledged" in result.output
    assert polling.bot.health()["status"] == "ok"


def test_a_bad_key_stops_reading_with_a_clear_message_and_no_loop(
    tmp_path, fake_slack, stripe_at, clock, caplog
):
    env = polling_env(tmp_path, fake_slack, stripe_at, STRIPE_API_KEY="sk_test_revoked")
    with serve_bot(load_settings(env)) as running:
        poller = running.bot.poller
        poller.clock = clock
        with caplog.at_level(logging.ERROR, logger="bot.stripe_polling"):
            reading = poller.poll_once()
            calls = len(stripe_at.calls_to(EVENTS))
            for _ in range(3):
                clock.now += 60
                poller.poll_once()
        assert "401" in reading.errors[""]
        assert len(stripe_at.calls_to(EVENTS)) == calls == 1  # asked once, then stopped
        [line] = [r.getMessage() for r in caplog.records]
        assert "STRIPE_API_KEY" in line and "restarted with a valid key" in line
        assert "sk_test_revoked" not in line
        health = running.bot.health()
        assert health["status"] == "degraded"
        assert any("Stripe refused STRIPE_API_KEY" in r for r in health["reasons"])


def test_a_restricted_key_without_event_read_is_told_to_get_it(
    tmp_path, fake_slack, stripe_at, clock
):
    stripe_at.add_account("acct_1Other")
    stripe_at.add_api_key("rk_test_orders_only", permissions=[ORDER_WRITE])
    env = polling_env(tmp_path, fake_slack, stripe_at, STRIPE_API_KEY="rk_test_orders_only")
    with serve_bot(load_settings(env)) as running:
        running.bot.poller.clock = clock
        reading = running.bot.poller.poll_once()
        assert "403" in reading.errors[""]
        reasons = running.bot.health()["reasons"]
        assert any("the platform are not read" in r and "403" in r for r in reasons)


def test_each_connected_account_is_read_with_its_stripe_account(
    tmp_path, fake_slack, stripe_at, clock
):
    routing = tmp_path / "routing.toml"
    routing.write_text(ROUTES)  # names acct_partner1
    stripe_at.add_account("acct_partner1")
    fake_slack.add_channel("C0PARTNER", "partner")
    env = polling_env(tmp_path, fake_slack, stripe_at, ROUTING_FILE=str(routing))
    with serve_bot(load_settings(env)) as running:
        poller = running.bot.poller
        poller.clock = clock
        poller.poll_once()
        assert {call.account for call in stripe_at.calls_to(EVENTS)} == {None, "acct_partner1"}
        order = so.order("confirmed", created=int(clock.now) + 1)
        event = so.event("climate.order.created", order, created=int(clock.now) + 1)
        stripe_at.add_event({**event, "account": "acct_partner1"})
        clock.now += 10
        assert poller.poll_once().new == 1
        stored = running.bot.storage.conn.execute("SELECT account FROM events").fetchall()
        assert [row[0] for row in stored] == ["acct_partner1"]
        running.deliver()
        assert len(fake_slack.messages("C0PARTNER")) == 1  # routed as its webhook would be


def test_an_account_stripe_refuses_is_not_read_and_the_others_are(
    tmp_path, fake_slack, stripe_at, clock, caplog
):
    routing = tmp_path / "routing.toml"
    routing.write_text(ROUTES)  # names acct_partner1, which this key cannot reach
    env = polling_env(tmp_path, fake_slack, stripe_at, ROUTING_FILE=str(routing))
    with serve_bot(load_settings(env)) as running:
        poller = running.bot.poller
        poller.clock = clock
        with caplog.at_level(logging.ERROR, logger="bot.stripe_polling"):
            reading = poller.poll_once()
        assert "403" in reading.errors["acct_partner1"] and "" not in reading.errors
        [line] = [r.getMessage() for r in caplog.records]
        assert "acct_partner1" in line and "event_read" in line
        stripe_at.clear_calls()
        clock.now += 10
        poller.poll_once()
        assert {call.account for call in stripe_at.calls_to(EVENTS)} == {None}
        reasons = running.bot.health()["reasons"]
        assert any("acct_partner1 are not read" in r for r in reasons)


def test_one_process_reads_at_a_time_and_another_takes_over_a_lapsed_lease(
    polling, stripe_at, clock
):
    first = polling.bot.poller
    second = EventPoller(
        polling.bot.storage, first.stripe, first.settings, interval=5, clock=clock, holder="other"
    )
    assert first.poll_once().leased
    stripe_at.clear_calls()
    assert not second.poll_once().leased
    assert stripe_at.calls_to(EVENTS) == []  # the one standing by asks Stripe nothing
    assert polling.bot.storage.lease_holder(LEASE, now=clock.now) == first.holder
    clock.now += first.lease_seconds + 1  # the first process died holding it
    assert second.poll_once().leased
    assert not first.poll_once().leased


def test_without_a_webhook_secret_the_webhook_endpoint_says_why_and_stores_nothing(polling):
    event = so.event("climate.order.created", so.order("confirmed"))
    answer = polling.send_event(event)
    assert answer.status_code == 404
    assert "STRIPE_POLL_INTERVAL" in answer.json()["error"]
    assert polling.bot.storage.count_events() == 0
