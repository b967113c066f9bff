"""POST /stripe/webhook: only signed, well-formed events get in, each recorded once, atomically."""

from __future__ import annotations

import json
import logging
import sqlite3
import time

import pytest
import requests
import stripe
from click.testing import CliRunner

from bot.cli import main
from bot.sandbox import stripe_objects as so
from bot.settings import load_settings
from tests.support.bot import WEBHOOK_SECRET, env_for, serve_bot


def count(bot, sql: str) -> int:
    return bot.storage.conn.execute(sql).fetchone()[0]


def test_signed_event_is_recorded_queued_and_acknowledged(running, fake_slack, fake_stripe):
    event = so.event("climate.order.created", so.order())
    response = running.send_event(event)
    assert response.status_code == 200
    assert response.json()["outcome"] == "queued"
    assert count(running.bot, "SELECT count(*) FROM events") == 1
    assert count(running.bot, "SELECT count(*) FROM orders") == 1
    assert count(running.bot, "SELECT count(*) FROM outbox WHERE status = 'pending'") == 1
    # Nothing reaches Slack or Stripe on the receiving path.
    assert fake_slack.calls == []
    assert fake_stripe.calls == []


def test_missing_signature_is_refused_and_nothing_written(running):
    body = json.dumps(so.event("climate.order.created", so.order()))
    response = requests.post(
        running.url + "/stripe/webhook", data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert "Stripe-Signature" in response.json()["error"]
    assert count(running.bot, "SELECT count(*) FROM events") == 0


def test_signature_with_the_wrong_secret_is_refused(running):
    response = running.send_event(
        so.event("climate.order.created", so.order()), secret="whsec_someone_else"
    )
    assert response.status_code == 400
    assert count(running.bot, "SELECT count(*) FROM events") == 0


def test_tampered_body_is_refused(running):
    event = so.event("climate.order.created", so.order())
    body, headers = so.webhook_request(event, WEBHOOK_SECRET)
    tampered = body.replace(b'"livemode": false', b'"livemode": true', 1)
    assert tampered != body
    response = requests.post(running.url + "/stripe/webhook", data=tampered, headers=headers)
    assert response.status_code == 400
    assert count(running.bot, "SELECT count(*) FROM events") == 0


def test_stale_signature_is_refused(running):
    event = so.event("climate.order.created", so.order())
    response = running.send_event(event, timestamp=int(time.time()) - 301)
    assert response.status_code == 400
    assert "tolerance" in response.json()["error"]
    assert count(running.bot, "SELECT count(*) FROM events") == 0


def test_signed_but_malformed_json_is_refused(running):
    response = running.send_event('{"id": "evt_1", "type": ')
    assert response.status_code == 400
    assert "not JSON" in response.json()["error"]
    assert count(running.bot, "SELECT count(*) FROM events") == 0


def test_signed_json_that_is_not_an_event_is_refused(running):
    for body in ("[]", '{"type": "climate.order.created"}', '{"id": "evt_1", "type": 5}'):
        response = running.send_event(body)
        assert response.status_code == 400, body
    climate_without_object = so.event("climate.order.created", so.order())
    climate_without_object["data"]["object"] = {"id": "x", "object": "plan"}
    assert running.send_event(climate_without_object, hostile=True).status_code == 400
    assert count(running.bot, "SELECT count(*) FROM events") == 0


def test_oversize_body_is_refused_with_413(running):
    event = so.event("climate.order.created", so.order(metadata={"pad": "x" * 500}))
    body = json.dumps(event) + " " * (1024 * 1024)
    response = running.send_event(body)
    assert response.status_code == 413
    assert count(running.bot, "SELECT count(*) FROM events") == 0


def test_unknown_event_type_is_recorded_but_posts_nothing(running, fake_slack):
    plan_event = so.event("plan.created", {"id": "plan_1", "object": "plan"})
    response = running.send_event(plan_event)
    assert response.status_code == 200
    assert response.json()["outcome"] == "ignored"
    assert count(running.bot, "SELECT count(*) FROM events WHERE handled = 0") == 1
    assert count(running.bot, "SELECT count(*) FROM outbox") == 0
    running.deliver()
    assert fake_slack.calls_to("chat.postMessage") == []


def test_redelivered_event_is_acknowledged_and_posted_once(running, fake_slack):
    event = so.event("climate.order.created", so.order())
    assert running.send_event(event).json()["outcome"] == "queued"
    running.deliver()
    for _ in range(3):
        response = running.send_event(event)
        assert response.status_code == 200
        assert response.json()["outcome"] == "duplicate"
    running.deliver()
    assert len(fake_slack.calls_to("chat.postMessage")) == 1
    assert count(running.bot, "SELECT count(*) FROM outbox") == 1


def test_the_webhook_only_records_and_the_worker_applies_in_order(running, fake_slack, caplog):
    caplog.set_level(logging.INFO)
    order = so.order()
    events = [
        so.event("climate.order.created", order, created=100),
        so.event("climate.order.delayed", so.delayed(order, 2030, at=200), created=200),
    ]
    for event in events:
        assert running.send_event(event, apply=False).json()["outcome"] == "queued"
    # Acknowledged once recorded: no snapshot touched, nothing queued for Slack yet.
    assert count(running.bot, "SELECT count(*) FROM events WHERE applied_at IS NULL") == 2
    assert count(running.bot, "SELECT count(*) FROM orders") == 0
    assert count(running.bot, "SELECT count(*) FROM outbox") == 0
    assert running.bot.health()["events_to_apply"] == 2
    # One INFO line per event, written by the worker when it applies it, not by the request.
    assert not [r for r in caplog.records if r.levelno >= logging.INFO and "evt_" in r.message]
    assert len(running.apply()) == 2  # both in one step, oldest first
    applied = [r.getMessage() for r in caplog.records if r.name == "bot.recording"]
    assert applied == [f"stripe event {e['id']} ({e['type']}) applied" for e in events]
    assert running.bot.storage.order_row(order["id"])["snapshot"]["delayed_at"] == 200
    running.deliver()
    [card] = fake_slack.messages("C0CLIMATE")
    assert len(fake_slack.replies("C0CLIMATE", card.ts)) == 1


def test_a_failure_while_applying_loses_nothing_acknowledged(running, fake_slack, caplog):
    """The database refuses the applying (here a trigger, at the batch's second event; a full
    disk alike): the batch rolls back, its events stay recorded, none is logged as applied, and
    the next step applies each exactly once."""
    caplog.set_level(logging.INFO)
    first = so.event("climate.order.created", so.order())
    second = so.event("climate.order.created", so.order())
    db = sqlite3.connect(running.bot.settings.DATABASE_PATH)
    db.execute(
        "CREATE TRIGGER outbox_broken BEFORE INSERT ON outbox"
        f" WHEN NEW.card_key = 'order:{second['data']['object']['id']}' BEGIN"
        " SELECT RAISE(ABORT, 'disk trouble'); END"
    )
    db.commit()
    for event in (first, second):
        response = running.send_event(event, apply=False)
        assert response.status_code == 200  # recorded: Stripe need not send it again
    with pytest.raises(sqlite3.IntegrityError):
        running.apply()
    assert count(running.bot, "SELECT count(*) FROM events WHERE applied_at IS NULL") == 2
    assert count(running.bot, "SELECT count(*) FROM orders") == 0
    assert running.bot.storage.parked_events() == []  # not the events' fault: not parked
    assert not [r for r in caplog.records if "applied" in r.getMessage()]  # rolled back
    db.execute("DROP TRIGGER outbox_broken")
    db.commit()
    db.close()
    # Stripe's redelivery of the same event is a duplicate; the worker applies the one recorded.
    assert running.send_event(first, apply=False).json()["outcome"] == "duplicate"
    running.deliver()
    assert len(fake_slack.messages("C0CLIMATE")) == 2
    applied = [r.getMessage() for r in caplog.records if r.name == "bot.recording"]
    assert applied == [f"stripe event {e['id']} ({e['type']}) applied" for e in (first, second)]


def test_an_event_that_cannot_be_applied_is_parked_visibly_and_retried(
    tmp_path, running, fake_slack, fake_stripe
):
    good = so.event("climate.order.created", so.order(), created=100)
    broken = so.event("climate.order.created", so.order(), created=100)
    for event in (broken, good):
        assert running.send_event(event, apply=False).status_code == 200
    # A row of a shape this version cannot read (written by another version, or a bug).
    running.bot.storage.conn.execute(
        "UPDATE events SET payload = ? WHERE id = ?",
        (json.dumps({**broken, "data": {"object": "not an object"}}), broken["id"]),
    )
    running.deliver()
    assert len(fake_slack.messages("C0CLIMATE")) == 1  # the good one is not held back
    [parked] = running.bot.storage.parked_events()
    assert parked["id"] == broken["id"] and "MalformedEvent" in parked["apply_error"]
    health = running.bot.health()
    assert health["status"] == "degraded"
    assert any(
        broken["id"] in reason and "climate-bot retry" in reason for reason in health["reasons"]
    )
    env = env_for(tmp_path, fake_slack, fake_stripe)
    listed = CliRunner().invoke(main, ["failed"], env=env)
    assert (
        broken["id"] in listed.output
        and "1 Stripe events recorded but not applied" in listed.output
    )
    running.bot.storage.conn.execute(
        "UPDATE events SET payload = ? WHERE id = ?", (json.dumps(broken), broken["id"])
    )  # the bug is fixed
    retried = CliRunner().invoke(main, ["retry"], env=env)
    assert "1 Stripe events to be applied again" in retried.output
    running.deliver()
    assert len(fake_slack.messages("C0CLIMATE")) == 2
    assert running.bot.health()["status"] == "ok"


def test_events_recorded_before_a_crash_are_applied_after_the_restart(
    tmp_path, fake_slack, fake_stripe
):
    settings = load_settings(env_for(tmp_path, fake_slack, fake_stripe))
    with serve_bot(settings) as before_the_crash:
        for _ in range(3):
            event = so.event("climate.order.created", so.order())
            assert before_the_crash.send_event(event, apply=False).status_code == 200
    # (the process dies here, its worker never having looked)
    with serve_bot(settings) as restarted:
        restarted.deliver()
        assert restarted.bot.health()["events_to_apply"] == 0
    assert len(fake_slack.messages("C0CLIMATE")) == 3


def test_account_and_livemode_are_recorded(running):
    event = so.event("climate.order.created", so.order(livemode=True), account="acct_123")
    assert running.send_event(event).status_code == 200
    row = running.bot.storage.conn.execute("SELECT account, livemode FROM events").fetchone()
    assert (row["account"], row["livemode"]) == ("acct_123", 1)
    order = running.bot.storage.order_row(event["data"]["object"]["id"])
    assert order["account"] == "acct_123"


def test_every_climate_event_type_is_handled(running, fake_slack):
    product = so.product()
    order = so.order(product=product["id"])
    events = [
        so.event("climate.product.created", product, created=100),
        so.event("climate.product.pricing_updated", product, created=200),
        so.event("climate.order.created", order, created=100),
        so.event("climate.order.delayed", so.delayed(order, 2029, at=150), created=150),
        so.event(
            "climate.order.product_substituted",
            so.substituted(order, "climsku_other", at=160),
            created=160,
        ),
        so.event(
            "climate.order.delivered", so.order(status="delivered", id=order["id"]), created=300
        ),
    ]
    canceled = so.order(status="canceled")
    events.append(so.event("climate.order.canceled", canceled, created=100))
    for event in events:
        assert running.send_event(event).json()["outcome"] == "queued", event["type"]
    running.deliver()
    top = fake_slack.messages("C0CLIMATE")
    assert len(top) == 3  # the product's card, the order's card, the cancelled order's card
    order_card = next(m for m in top if order["id"] in json.dumps(m.blocks))
    assert len(fake_slack.replies("C0CLIMATE", order_card.ts)) == 3


def test_stripe_signature_check_uses_the_sdk_tolerance():
    """Pin the SDK behaviour the receiver relies on: an old timestamp fails verification."""
    body = json.dumps(so.event("climate.order.created", so.order()))
    old = stripe.WebhookSignature.generate_signature_header(
        body, WEBHOOK_SECRET, int(time.time()) - 400
    )
    try:
        stripe.WebhookSignature.verify_header(body, old, WEBHOOK_SECRET, tolerance=300)
    except stripe.SignatureVerificationError:
        pass
    else:
        raise AssertionError("a 400-second-old signature was accepted")


def test_an_event_signed_with_any_of_several_secrets_is_accepted(tmp_path, fake_slack, fake_stripe):
    """A thin-event destination and a snapshot endpoint each have a secret; a rolled secret has
    two valid at once."""
    env = {
        **env_for(tmp_path, fake_slack, fake_stripe),
        "STRIPE_WEBHOOK_SECRET": f"whsec_rolled_old, {WEBHOOK_SECRET}",
    }
    with serve_bot(load_settings(env)) as bot:
        second = bot.send_event(so.event("climate.order.created", so.order()))
        first = bot.send_event(
            so.event("climate.order.created", so.order()), secret="whsec_rolled_old"
        )
        neither = bot.send_event(
            so.event("climate.order.created", so.order()), secret="whsec_someone_else"
        )
        stale = bot.send_event(
            so.event("climate.order.created", so.order()),
            secret="whsec_rolled_old",
            timestamp=int(time.time()) - 3600,
        )
        assert (second.status_code, first.status_code) == (200, 200)
        assert (neither.status_code, stale.status_code) == (400, 400)
        assert count(bot.bot, "SELECT count(*) FROM events") == 2


def _nothing_written(bot) -> bool:
    return all(
        count(bot, f"SELECT count(*) FROM {table}") == 0
        for table in ("events", "orders", "products", "outbox")
    )


def _hostile(path: str, value) -> dict:
    """A delayed order's event (its product expanded, one delivery) with `value` at `path`
    (dotted, as the 400 names a field: `data.object.delivery_details[0].delivered_at`)."""
    product = so.product()
    order = so.delayed(
        so.order(product=product, delivery_details=[so.delivery()]), 2030, at=1_900_000_000
    )
    event = so.event("climate.order.delayed", order, created=1_900_000_000)
    steps = [
        int(s) if s.isdigit() else s for s in path.replace("[", ".").replace("]", "").split(".")
    ]
    parent = event
    for step in steps[:-1]:
        parent = parent[step]
    parent[steps[-1]] = value
    return event


PRICE = "data.object.product.current_prices_per_metric_ton.usd"


@pytest.mark.parametrize(
    ("path", "value", "problem"),
    [
        ("created", 10**30, "integer out of range"),
        ("data.object.delayed_at", 10**19, "integer out of range"),
        ("data.object.delayed_at", -(10**19), "integer out of range"),
        ("data.object.amount_total", 2**63, "integer out of range"),
        ("data.object.amount_fees", -(2**63) - 1, "integer out of range"),
        (f"{PRICE}.amount_total", 10**25, "integer out of range"),
        ("data.object.delivery_details[0].delivered_at", 2**64, "integer out of range"),
        ("data.object.amount_subtotal", float("inf"), "number is not finite"),
        ("data.object.metric_tons", float("nan"), "number is not finite"),
        (
            "data.object.product.suppliers[0].locations[0].latitude",
            -float("inf"),
            "number is not finite",
        ),
        # Within 64 bits, but no moment or year Stripe stamps.
        ("created", -1, "timestamp out of range"),
        ("data.object.delayed_at", 10**15, "timestamp out of range"),
        ("data.object.expected_delivery_year", 10**12, "year out of range"),
        ("data.object.product.delivery_year", -2027, "year out of range"),
    ],
)
def test_a_number_climate_bot_cannot_keep_is_a_400_naming_it_with_nothing_written(
    running, path, value, problem
):
    response = running.send_event(_hostile(path, value), hostile=True)
    assert response.status_code == 400
    assert response.json() == {"error": f"{path}: {problem}"}
    assert _nothing_written(running.bot)


@pytest.mark.parametrize(
    ("literal", "problem"),
    [
        ("1" * 5000, "integer out of range"),  # more digits than Python even reads
        ("-" + "9" * 30, "integer out of range"),
        ("1e400", "number is not finite"),
        ("Infinity", "number is not finite"),
        ("NaN", "number is not finite"),
    ],
)
def test_numbers_written_beyond_what_json_allows_are_a_400_too(running, literal, problem):
    body = json.dumps(_hostile("data.object.amount_total", 123456789), indent=2)
    body = body.replace('"amount_total": 123456789', f'"amount_total": {literal}')
    assert literal in body
    response = running.send_event(body)
    assert response.status_code == 400
    assert response.json() == {"error": f"data.object.amount_total: {problem}"}
    assert _nothing_written(running.bot)


def test_the_bounds_take_every_moment_and_year_stripe_can_send_and_nothing_past_them(
    running, fake_slack
):
    """Stripe's own fixture values, the edges of the span, and the largest amounts SQLite holds
    are kept; one second, one year or one unit past them is not."""
    fixture_like = so.order(created=1234567890, expected_delivery_year=2027)
    assert running.send_event(so.event("climate.order.created", fixture_like)).status_code == 200
    edge = so.order(
        created=0,
        expected_delivery_year=2099,
        amount_total=2**63 - 1,
        amount_subtotal=2**63 - 1,
        amount_fees=0,
    )
    edges = so.event("climate.order.delayed", so.delayed(edge, 2100, at=4_133_980_799))
    assert edges["created"] == 4_133_980_799
    assert running.send_event(edges).status_code == 200
    # Metadata is not read: a number there is held to 64 bits only, not to the date rules.
    tagged = so.event("climate.order.created", so.order())
    tagged["data"]["object"]["metadata"] = {"renew_at": -5}
    assert running.send_event(tagged, hostile=True).status_code == 200
    running.deliver()
    assert len(fake_slack.messages("C0CLIMATE")) == 3
    assert running.bot.storage.failures() == []
    for path, past in (
        ("created", -1),
        ("created", 4_133_980_800),
        ("data.object.delayed_at", 4_133_980_800),
        ("data.object.expected_delivery_year", 2101),
        ("data.object.expected_delivery_year", 1969),
        ("data.object.amount_total", 2**63),
        ("data.object.amount_total", -(2**63) - 1),
    ):
        response = running.send_event(_hostile(path, past), hostile=True)
        assert response.status_code == 400 and response.json()["error"].startswith(path), past


def test_an_unhandled_event_type_is_held_to_the_same_bounds(running):
    plan = so.event("plan.created", {"id": "plan_1", "object": "plan", "amount": 10**20})
    response = running.send_event(plan)
    assert (response.status_code, response.json()) == (
        400,
        {"error": "data.object.amount: integer out of range"},
    )
    assert _nothing_written(running.bot)
