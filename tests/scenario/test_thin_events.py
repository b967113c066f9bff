"""Thin events (`v1.climate.*`): verified, their object fetched by the worker, posted once."""

from __future__ import annotations

import json
import logging

import pytest

from bot.sandbox import stripe_objects as so
from tests.support.bot import CHANNEL
from tests.support.thin_events import thin


def test_thin_event_is_acknowledged_then_fetched_by_the_worker(running, fake_slack, fake_stripe):
    order = so.order()
    fake_stripe.add_order(order)
    response = running.send_event(thin("climate.order.created", order))
    assert response.status_code == 200 and response.json()["outcome"] == "queued"
    assert fake_stripe.calls_to("/v1/climate/orders") == []  # nothing fetched on receipt
    running.deliver()
    assert len(fake_stripe.calls_to(f"/v1/climate/orders/{order['id']}")) == 1
    [card] = fake_slack.messages(CHANNEL)
    assert order["id"] in json.dumps(card.blocks)


def test_thin_and_snapshot_events_for_one_change_post_once(running, fake_slack, fake_stripe):
    order = so.order()
    delayed = so.delayed(order, 2030, at=1_900_000_000)
    fake_stripe.add_order(delayed)
    running.send_event(so.event("climate.order.created", order, created=1000))
    snapshot = so.event("climate.order.delayed", delayed, created=1_900_000_000)
    running.send_event(snapshot)
    running.send_event(thin("climate.order.delayed", delayed))  # no twin named
    running.deliver()
    [card] = fake_slack.messages(CHANNEL)
    assert len(fake_slack.replies(CHANNEL, card.ts)) == 1
    # The other order: thin first, naming its twin, which arrives after.
    other = so.order()
    fake_stripe.add_order(other)
    twin = so.event("climate.order.created", other)
    running.send_event(thin("climate.order.created", other, twin=twin["id"]))
    running.deliver()
    assert running.send_event(twin).json()["outcome"] == "duplicate"
    running.deliver()
    assert len(fake_slack.messages(CHANNEL)) == 2


def test_thin_product_event_of_a_connected_account_is_fetched_on_that_account(
    running, fake_slack, fake_stripe
):
    product = so.product(prices={"usd": 60000})
    fake_stripe.add_account("acct_partner1")
    fake_stripe.add_product(product)
    running.send_event(thin("climate.product.pricing_updated", product, context="acct_partner1"))
    running.deliver()
    [call] = fake_stripe.calls_to(f"/v1/climate/products/{product['id']}")
    assert call.account == "acct_partner1"
    # Fetched as the SDK's fetch_related_object does: in the event's context, naming the event.
    assert call.context == "acct_partner1" and "stripe-account" not in call.headers
    assert call.headers["stripe-request-trigger"].startswith("event=evt_thin_")
    assert "$600.00" in json.dumps(fake_slack.messages(CHANNEL)[0].blocks)


def test_fresher_data_fetched_for_an_older_thin_event_is_not_discarded_as_late(
    running, fake_slack, fake_stripe
):
    t0, t1, t2 = 1_900_000_000, 1_900_000_500, 1_900_001_000
    order = so.order(created=t0 - 1000)
    delayed = so.delayed(order, 2030, at=t0)
    running.send_event(so.event("climate.order.created", order, created=t0 - 1000))
    # A thin event about the delay; its object is fetched later, by the worker ...
    running.send_event(thin("climate.order.delayed", delayed, created="2030-03-17T17:46:40Z"))
    # ... meanwhile a later change arrives as a snapshot event, and Frontier delivers.
    swapped = so.substituted(delayed, "climsku_other", at=t1)
    running.send_event(so.event("climate.order.product_substituted", swapped, created=t1))
    fake_stripe.add_order({**swapped, "status": "delivered", "delivered_at": t2})
    running.deliver()
    row = running.bot.storage.order_row(order["id"])
    assert row["status"] == "delivered"  # the fetched order is the freshest data: it is kept
    assert row["snapshot_created"] == t2


def test_thin_event_while_stripe_is_down_is_retried_not_lost(running, fake_slack, fake_stripe):
    import time_machine

    order = so.order()
    fake_stripe.add_order(order)
    with time_machine.travel(1_900_000_000, tick=False) as clock:
        fake_stripe.set_down(True)
        running.send_event(thin("climate.order.created", order))
        running.deliver()
        assert fake_slack.messages(CHANNEL) == []
        fake_stripe.set_down(False)
        clock.shift(10)
        running.deliver()
    assert len(fake_slack.messages(CHANNEL)) == 1


def test_unknown_thin_types_and_bad_thin_bodies(running, fake_slack):
    unknown = thin("climate.order.created", so.order())
    unknown["type"] = "v1.billing.meter.error_report_triggered"
    assert running.send_event(unknown).json()["outcome"] == "ignored"
    no_object = thin("climate.order.created", so.order())
    del no_object["related_object"]
    assert running.send_event(no_object).status_code == 400
    bad_time = thin("climate.order.created", so.order())
    bad_time["created"] = "yesterday"
    assert running.send_event(bad_time).status_code == 400
    assert (
        running.send_event(thin("climate.order.created", so.order()), secret="whsec_x1").status_code
        == 400
    )
    running.deliver()
    assert fake_slack.messages(CHANNEL) == []


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("delayed_at", 10**19, "integer out of range"),
        ("amount_total", -(10**30), "integer out of range"),
        ("amount_fees", float("nan"), "number is not finite"),
        ("expected_delivery_year", 10**6, "year out of range"),
    ],
)
def test_an_object_stripe_returns_with_numbers_out_of_range_is_logged_once_not_retried(
    running, fake_slack, fake_stripe, caplog, field, value, problem
):
    order = so.delayed(so.order(), 2030, at=1_900_000_000)
    fake_stripe.add_order({**order, field: value})
    response = running.send_event(thin("climate.order.delayed", order))
    assert response.json()["outcome"] == "queued"
    caplog.set_level(logging.WARNING)
    running.deliver()
    assert len(fake_stripe.calls_to(f"/v1/climate/orders/{order['id']}")) == 1  # asked once
    storage = running.bot.storage
    assert storage.outbox_counts() == {"done": 1}  # the fetch: done, neither retried nor parked
    assert storage.order_row(order["id"]) is None and storage.count_events() == 1  # the thin one
    assert fake_slack.messages(CHANNEL) == []
    [warning] = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert f"data.object.{field}: {problem}" in warning
