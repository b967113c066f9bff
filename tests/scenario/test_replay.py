"""`climate-bot replay`: missed events come back from Stripe's Events API through the webhook path.

Everything runs for real: the stripe SDK against FakeStripe over HTTP, the bot's storage and ingest,
the delivery worker posting to the fake Slack. The last section pins FakeStripe's `/v1/events`.
"""

from __future__ import annotations

import calendar
import json
import time

import pytest
import requests
import stripe
from click.testing import CliRunner

from bot.cli import main
from bot.model import HANDLED_EVENTS
from bot.replay import parse_when, replay, retention_warning
from bot.sandbox import stripe_objects as so
from bot.sandbox.stripe import FakeStripe
from bot.settings import load_settings
from bot.storage import Storage
from bot.stripe_gateway import StripeGateway, Unavailable
from tests.support import stripe_schema
from tests.support.bot import CHANNEL, STRIPE_KEY, env_for, serve_bot
from tests.support.routing import ROUTES

DAY = 24 * 60 * 60
EVENTS = "/v1/events"


def gateway(fake: FakeStripe) -> StripeGateway:
    return StripeGateway(STRIPE_KEY, fake.url, retries=0)


def order_story(now: int) -> tuple[dict, list[dict]]:
    """An order placed three days ago and delayed two days ago, and a product added yesterday."""
    order = so.order("confirmed", created=now - 3 * DAY)
    return order, [
        so.event("climate.order.created", order),
        so.event("climate.order.delayed", so.delayed(order, 2028, now - 2 * DAY)),
        so.event("climate.product.created", so.product(created=now - DAY)),
    ]


def add_events(fake: FakeStripe, events: list[dict]) -> None:
    for event in events:
        fake.add_event(event)


def count(storage: Storage, table: str) -> int:
    return storage.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def events_answer_problems(fake: FakeStripe) -> list[str]:
    """Every /v1/events answer has Stripe's shape: a list of valid events, or an error body.

    The vendored spec subset has no /v1/events path, so the list envelope is checked by hand and
    each event against the spec's `event` and Climate object schemas.
    """
    problems = []
    for call in fake.calls_to(EVENTS):
        body = call.response
        if body is None:
            continue
        if call.status != 200:
            found = stripe_schema.validate(body, "error")
        elif call.path == EVENTS:
            found = [] if set(body) == {"object", "data", "has_more", "url"} else ["envelope"]
            found += [] if body["object"] == "list" and body["url"] == EVENTS else ["list"]
            found += [p for event in body["data"] for p in stripe_schema.validate_event(event)]
        else:
            found = stripe_schema.validate_event(body)
        problems += [f"{call.method} {call.path} -> {call.status}: {p}" for p in found]
    return problems + fake.errors


def run_cli(tmp_path, fake_slack, fake_stripe, *args: str):
    env = env_for(tmp_path, fake_slack, fake_stripe)
    return CliRunner().invoke(main, ["replay", *args], env=env)


# -- replaying through the webhook path ------------------------------------------------------------


def test_events_in_range_are_recorded_queued_and_posted_by_the_worker(
    running, fake_stripe, fake_slack, settings
):
    now = int(time.time())
    order, story = order_story(now)
    too_old = so.event("climate.order.created", so.order(created=now - 9 * DAY))
    too_new = so.event("climate.order.canceled", so.order("canceled", canceled_at=now - 60))
    not_climate = so.event("climate.order.created", so.order(created=now - DAY))
    not_climate["type"] = "customer.created"  # filtered out by Stripe: replay asks for Climate only
    add_events(fake_stripe, [too_old, *story, too_new, not_climate])

    summary = replay(
        gateway(fake_stripe),
        running.bot.storage,
        settings,
        since=now - 5 * DAY,
        until=now - 3600,
    )

    assert (summary.new, summary.skipped, summary.failed) == (3, 0, 0)
    assert str(summary) == "3 new, 0 skipped (already recorded), 0 failed"
    assert [e.id for e in summary.events] == [e["id"] for e in story]  # oldest first
    storage = running.bot.storage
    assert all(storage.event(e["id"]) == e for e in story)
    assert storage.event(too_old["id"]) is None and storage.event(too_new["id"]) is None
    [call] = fake_stripe.calls_to(EVENTS)
    assert call.params["types"] == list(HANDLED_EVENTS)
    assert call.params["created"] == {"gte": str(now - 5 * DAY), "lte": str(now - 3600)}
    assert call.params["limit"] == "100"
    assert count(storage, "outbox WHERE status = 'pending'") > 0

    running.deliver()
    cards = fake_slack.messages(CHANNEL)
    assert len(cards) == 2  # the order's card and the product's card
    order_card = next(m for m in cards if order["id"] in json.dumps(m.blocks))
    assert len(fake_slack.replies(CHANNEL, order_card.ts)) == 1  # the delay, in its thread
    assert storage.order_row(order["id"])["change"]["new_year"] == 2028
    assert events_answer_problems(fake_stripe) == []


def test_events_the_webhook_already_delivered_are_skipped(
    running, fake_stripe, fake_slack, settings
):
    now = int(time.time())
    _, story = order_story(now)
    assert running.send_event(story[0]).json()["outcome"] == "queued"
    running.deliver()
    add_events(fake_stripe, story)

    summary = replay(gateway(fake_stripe), running.bot.storage, settings, since=now - 5 * DAY)

    assert (summary.new, summary.skipped, summary.failed) == (2, 1, 0)
    assert [e.status for e in summary.events] == ["skipped", "new", "new"]
    assert count(running.bot.storage, "events") == 3
    running.deliver()
    assert len(fake_slack.calls_to("chat.postMessage")) == 3  # order card, its reply, product

    again = replay(gateway(fake_stripe), running.bot.storage, settings, since=now - 5 * DAY)
    assert (again.new, again.skipped) == (0, 3)
    running.deliver()
    assert len(fake_slack.calls_to("chat.postMessage")) == 3  # nothing posted twice


def test_every_page_is_fetched_following_starting_after(running, fake_stripe, settings):
    now = int(time.time())
    events = [so.event("climate.order.created", so.order(created=now - DAY + i)) for i in range(7)]
    add_events(fake_stripe, events)

    summary = replay(
        gateway(fake_stripe), running.bot.storage, settings, since=now - 2 * DAY, page_size=3
    )

    assert summary.new == 7
    assert [e.id for e in summary.events] == [e["id"] for e in events]
    calls = fake_stripe.calls_to(EVENTS)
    newest_first = [e["id"] for e in reversed(events)]
    assert [c.params.get("starting_after") for c in calls] == [
        None,
        newest_first[2],
        newest_first[5],
    ]
    assert events_answer_problems(fake_stripe) == []


def test_cli_replays_more_than_a_page_of_events(
    tmp_path, running, fake_stripe, fake_slack, settings
):
    now = int(time.time())
    events = [
        so.event("climate.order.created", so.order(created=now - DAY + i)) for i in range(101)
    ]
    add_events(fake_stripe, events)

    result = run_cli(tmp_path, fake_slack, fake_stripe, "--since", str(now - 2 * DAY))

    assert result.exit_code == 0, result.output
    assert "101 Climate events at Stripe" in result.output
    assert "101 new, 0 skipped (already recorded), 0 failed" in result.output
    assert "the running bot" in result.output  # the CLI queues; the bot's worker posts
    assert len(fake_stripe.calls_to(EVENTS)) == 2
    assert count(running.bot.storage, "events") == 101
    running.deliver()  # the serving bot's worker picks up what the CLI queued
    assert len(fake_slack.messages(CHANNEL)) == 101
    assert events_answer_problems(fake_stripe) == []


def test_cli_dry_run_lists_events_and_writes_nothing(tmp_path, fake_stripe, fake_slack):
    now = int(time.time())
    order, story = order_story(now)
    add_events(fake_stripe, story)
    database = tmp_path / "climate-bot.db"

    result = run_cli(tmp_path, fake_slack, fake_stripe, "--since", str(now - 5 * DAY), "--dry-run")

    assert result.exit_code == 0, result.output
    for event in story:
        assert event["id"] in result.output
    assert "climate.order.delayed" in result.output and order["id"] in result.output
    assert "dry run: 3 would be new, 0 skipped (already recorded)" in result.output
    assert not database.exists()  # not even an empty database was created

    replay_once = run_cli(tmp_path, fake_slack, fake_stripe, "--since", str(now - 5 * DAY))
    assert replay_once.exit_code == 0, replay_once.output
    storage = Storage(database)
    before = (count(storage, "events"), count(storage, "outbox"))
    delivered = so.order("delivered", id=order["id"], delivered_at=now - 60)
    fake_stripe.add_event(so.event("climate.order.delivered", delivered))
    dry = run_cli(tmp_path, fake_slack, fake_stripe, "--since", str(now - 5 * DAY), "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "(already recorded)" in dry.output
    assert "1 would be new, 3 skipped (already recorded)" in dry.output
    assert (count(storage, "events"), count(storage, "outbox")) == before
    storage.close()


def test_stripe_down_mid_replay_writes_nothing(running, fake_stripe, settings):
    now = int(time.time())
    add_events(
        fake_stripe,
        [so.event("climate.order.created", so.order(created=now - DAY + i)) for i in range(5)],
    )

    class OutageAfterFirstPage:
        """The real gateway, with Stripe going down right after the first page."""

        def __init__(self, real: StripeGateway) -> None:
            self.real = real

        def events(self, **params):
            page = self.real.events(**params)
            fake_stripe.set_down(True)
            return page

    with pytest.raises(Unavailable):
        replay(
            OutageAfterFirstPage(gateway(fake_stripe)),
            running.bot.storage,
            settings,
            since=now - 2 * DAY,
            page_size=2,
        )
    assert count(running.bot.storage, "events") == 0
    assert count(running.bot.storage, "outbox") == 0


def test_cli_says_when_stripe_is_down_and_exits_non_zero(
    tmp_path, fake_stripe, fake_slack, running
):
    fake_stripe.set_down(True, mode="503")
    result = run_cli(tmp_path, fake_slack, fake_stripe, "--since", "2026-11-01")
    assert result.exit_code == 1
    assert "Stripe could not list the events; nothing was written" in result.output
    assert count(running.bot.storage, "events") == 0


def test_cli_says_when_the_stripe_key_is_wrong(tmp_path, fake_stripe, fake_slack):
    env = {**env_for(tmp_path, fake_slack, fake_stripe), "STRIPE_API_KEY": "sk_test_unknown"}
    result = CliRunner().invoke(main, ["replay", "--since", "2026-11-01"], env=env)
    assert result.exit_code == 1
    assert "Invalid API Key" in result.output


def test_an_unreadable_event_fails_alone(tmp_path, running, fake_stripe, fake_slack, settings):
    now = int(time.time())
    _, story = order_story(now)
    broken = so.event("climate.order.created", so.order(created=now - 4 * DAY))
    del broken["data"]["object"]["id"]
    add_events(fake_stripe, [broken, *story])

    summary = replay(gateway(fake_stripe), running.bot.storage, settings, since=now - 5 * DAY)

    assert (summary.new, summary.skipped, summary.failed) == (3, 0, 1)
    [failure] = [e for e in summary.events if e.status == "failed"]
    assert failure.id == broken["id"] and "no data.object with an id" in failure.error
    assert running.bot.storage.event(broken["id"]) is None
    assert count(running.bot.storage, "events") == 3

    result = run_cli(tmp_path, fake_slack, fake_stripe, "--since", str(now - 5 * DAY))
    assert result.exit_code == 1  # an operator must notice what could not be replayed
    assert "0 new, 3 skipped (already recorded), 1 failed" in result.output
    assert "FAILED" in result.output


def test_since_older_than_thirty_days_is_told(tmp_path, fake_stripe, fake_slack):
    since = int(time.time()) - 40 * DAY
    result = run_cli(tmp_path, fake_slack, fake_stripe, "--since", str(since))
    assert result.exit_code == 0, result.output
    assert "Stripe keeps events for 30 days only" in result.output
    assert retention_warning(int(time.time()) - 29 * DAY) is None


def test_until_before_since_and_unreadable_dates_are_usage_errors(
    tmp_path, fake_stripe, fake_slack
):
    result = run_cli(
        tmp_path, fake_slack, fake_stripe, "--since", "2026-11-05", "--until", "2026-11-01"
    )
    assert result.exit_code == 2
    assert "--until" in result.output
    result = run_cli(tmp_path, fake_slack, fake_stripe, "--since", "last tuesday")
    assert result.exit_code == 2
    assert "unix seconds" in result.output
    assert fake_stripe.calls == []


def test_dates_in_every_accepted_form():
    midnight = calendar.timegm((2026, 11, 1, 0, 0, 0))
    assert parse_when("2026-11-01") == midnight
    assert parse_when("2026-11-01", end_of_day=True) == midnight + DAY - 1
    assert parse_when("2026-11-01T12:30:00Z") == midnight + 12 * 3600 + 1800
    assert parse_when("2026-11-01T12:30:00") == midnight + 12 * 3600 + 1800  # naive = UTC
    assert parse_when("2026-11-01T14:30:00+02:00") == midnight + 12 * 3600 + 1800
    assert parse_when(str(midnight)) == midnight
    for bad in ("", "yesterday", "2026-13-01", "-5"):
        with pytest.raises(ValueError):
            parse_when(bad)


# -- FakeStripe's Events API -----------------------------------------------------------------------


@pytest.fixture
def client(fake_stripe: FakeStripe) -> stripe.StripeClient:
    return fake_stripe.client()


def test_fake_lists_events_newest_first_with_type_and_created_filters(fake_stripe, client):
    now = int(time.time())
    _, story = order_story(now)
    add_events(fake_stripe, story)
    ids = [e["id"] for e in story]

    listed = client.v1.events.list(params={"limit": 10})
    assert [e.id for e in listed.data] == list(reversed(ids))
    orders = client.v1.events.list(params={"type": "climate.order.*"})
    assert [e.id for e in orders.data] == [ids[1], ids[0]]
    exact = client.v1.events.list(params={"types": ["climate.product.created"]})
    assert [e.id for e in exact.data] == [ids[2]]
    window = client.v1.events.list(params={"created": {"gt": now - 3 * DAY, "lt": now - DAY}})
    assert [e.id for e in window.data] == [ids[1]]
    assert [e.id for e in client.v1.events.list(params={"created": now - DAY}).data] == [ids[2]]
    # The fake delivers no webhooks: every event is still pending for its one endpoint.
    assert len(client.v1.events.list(params={"delivery_success": False}).data) == 3
    assert client.v1.events.list(params={"delivery_success": True}).data == []
    assert events_answer_problems(fake_stripe) == []


def test_fake_serves_the_events_its_api_calls_generate(fake_stripe, client):
    created = client.v1.climate.orders.create(
        params={"product": fake_stripe.product_id, "metric_tons": "1"}
    )
    client.v1.climate.orders.cancel(created.id)
    listed = client.v1.events.list()
    assert [e.type for e in listed.data] == ["climate.order.canceled", "climate.order.created"]
    one = client.v1.events.retrieve(listed.data[0].id)
    assert one.data.object.id == created.id
    assert events_answer_problems(fake_stripe) == []


def test_fake_keeps_events_thirty_days_and_per_account(fake_stripe, client):
    now = int(time.time())
    old = fake_stripe.add_event(so.event("climate.order.created", so.order(created=now - 31 * DAY)))
    connected = fake_stripe.add_event(
        so.event("climate.order.created", so.order(created=now - DAY), account="acct_1Shop")
    )
    fake_stripe.add_account("acct_1Shop")
    assert client.v1.events.list().data == []
    with pytest.raises(stripe.InvalidRequestError) as gone:
        client.v1.events.retrieve(old["id"])
    assert gone.value.http_status == 404 and gone.value.code == "resource_missing"
    theirs = client.v1.events.list(options={"stripe_account": "acct_1Shop"})
    assert [e.id for e in theirs.data] == [connected["id"]]
    assert events_answer_problems(fake_stripe) == []


@pytest.mark.parametrize(
    "params, message",
    [
        ({"type": "climate.order.created", "types": ["climate.order.created"]}, "one of these"),
        ({"types": [f"t.{i}" for i in range(21)]}, "at most 20"),
        ({"created": {"gte": "soon"}}, "Invalid integer"),
        ({"created": {"after": 5}}, "unknown parameter: created[after]"),
        ({"starting_after": "evt_nowhere"}, "No such event: 'evt_nowhere'"),
        ({"limit": 101}, "less than or equal to 100"),
        ({"colour": "green"}, "unknown parameter: colour"),
    ],
)
def test_fake_refuses_what_stripe_refuses(fake_stripe, client, params, message):
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.events.list(params=params)
    assert refused.value.http_status == 400
    assert message in str(refused.value)
    assert events_answer_problems(fake_stripe) == []


def test_restricted_key_without_event_read_cannot_list_events(fake_stripe):
    fake_stripe.add_api_key("rk_test_climate_only", ["climate_order_write"])
    with pytest.raises(stripe.PermissionError):
        fake_stripe.client("rk_test_climate_only").v1.events.list()
    fake_stripe.add_api_key("rk_test_events", ["event_read"])
    assert fake_stripe.client("rk_test_events").v1.events.list().data == []


# -- routing and connected accounts --------------------------------------------------------------


def test_replay_follows_routing_and_reaches_connected_accounts(tmp_path, fake_slack, fake_stripe):
    """A replayed event goes where its webhook would have gone, for every account known."""
    for channel, name in (("C0PRODUCTS", "products"), ("C0PARTNER", "partner"), ("C0ALERTS", "a")):
        fake_slack.add_channel(channel, name)
    (tmp_path / "routing.toml").write_text(ROUTES)
    env = {
        **env_for(tmp_path, fake_slack, fake_stripe),
        "ROUTING_FILE": str(tmp_path / "routing.toml"),
    }
    now = int(time.time())
    for account in ("acct_partner1", "acct_1Seen", "acct_1Asked"):
        fake_stripe.add_account(account)
    product = so.event("climate.product.created", so.product(created=now - DAY))
    partner = so.event(
        "climate.order.created", so.order(created=now - DAY), account="acct_partner1"
    )
    seen_before = so.event("climate.order.created", so.order(created=now - 2 * DAY))
    seen_before["account"] = "acct_1Seen"
    seen = so.event("climate.order.created", so.order(created=now - DAY), account="acct_1Seen")
    asked = so.event("climate.order.created", so.order(created=now - DAY), account="acct_1Asked")
    add_events(fake_stripe, [product, partner, seen, asked])
    with serve_bot(load_settings(env)) as bot:
        bot.send_event(seen_before)  # the database has seen acct_1Seen
        result = CliRunner().invoke(
            main, ["replay", "--since", str(now - 5 * DAY), "--account", "acct_1Asked"], env=env
        )
        assert result.exit_code == 0, result.output
        assert "4 new, 0 skipped (already recorded), 0 failed" in result.output
        accounts = [c.headers.get("stripe-account") for c in fake_stripe.calls_to(EVENTS)]
        assert accounts == [None, "acct_partner1", "acct_1Seen", "acct_1Asked"]
        storage = bot.bot.storage
        assert storage.event(partner["id"])["account"] == "acct_partner1"
        assert storage.order_row(partner["data"]["object"]["id"])["account"] == "acct_partner1"
        bot.deliver()
        assert len(fake_slack.messages("C0PRODUCTS")) == 1  # routed, not SLACK_CHANNEL
        assert len(fake_slack.messages("C0PARTNER")) == 1
        metrics = requests.get(bot.url + "/metrics", timeout=10).text
        assert 'climate_bot_events_recorded_total{source="replay"} 4.0' in metrics
        assert "--account" in CliRunner().invoke(main, ["replay", "--help"]).output
        bad = CliRunner().invoke(main, ["replay", "--since", "1", "--account", "shop"], env=env)
        assert bad.exit_code == 2 and "acct_" in bad.output
