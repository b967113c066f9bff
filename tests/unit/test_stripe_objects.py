"""The Stripe Climate factories produce schema-valid, lifecycle-consistent objects and events."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
import stripe
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.sandbox import stripe_objects as so
from tests.support import stripe_schema

SECRET = "whsec_test_secret"

LIFECYCLE_STAMPS = ("confirmed_at", "delivered_at", "canceled_at", "delayed_at")


@pytest.mark.parametrize("status", so.ORDER_STATUSES)
def test_each_status_is_valid_and_lifecycle_consistent(status):
    order = so.order(status)
    assert stripe_schema.validate(order, "climate.order") == []
    assert order["status"] == status
    stamps = {k for k in LIFECYCLE_STAMPS if order[k] is not None}
    expected = {
        "open": set(),
        "awaiting_funds": set(),
        "confirmed": {"confirmed_at"},
        "delivered": {"confirmed_at", "delivered_at"},
        "canceled": {"confirmed_at", "canceled_at"},
    }[status]
    assert stamps == expected
    assert (order["cancellation_reason"] is not None) == (status == "canceled")
    assert (order["certificate"] is not None) == (status == "delivered")
    assert bool(order["delivery_details"]) == (status == "delivered")
    assert order["amount_total"] == order["amount_subtotal"] + order["amount_fees"]


def test_expired_cancel_was_never_confirmed():
    order = so.order("canceled", cancellation_reason="expired")
    assert order["confirmed_at"] is None
    assert stripe_schema.validate(order, "climate.order") == []


def test_delivered_order_splits_tons_across_suppliers():
    order = so.order(
        "delivered",
        metric_tons="0.01",
        delivered_by=["climsup_heirloom", "climsup_lithos", so.supplier(id="climsup_vaulted")],
    )
    assert stripe_schema.validate(order, "climate.order") == []
    details = order["delivery_details"]
    assert [d["supplier"]["name"] for d in details] == ["Heirloom", "Lithos", "Vaulted Deep"]
    assert sum(Decimal(d["metric_tons"]) for d in details) == Decimal("0.01")
    assert all(d["registry_url"].startswith("https://") for d in details)
    assert all(d["delivered_at"] == order["delivered_at"] for d in details)
    assert order["delivered_at"] > order["created"]


def test_amounts_round_like_stripe_and_jpy_is_zero_decimal():
    assert so.order(metric_tons="0.01")["amount_total"] == 567  # 550 + 17, the docs' example
    jpy = so.order(currency="jpy", metric_tons="10")
    assert (jpy["currency"], jpy["amount_total"]) == ("jpy", 849750)
    assert stripe_schema.validate(jpy, "climate.order") == []
    priced = so.order(product=so.product(prices={"jpy": 90000}), currency="jpy", metric_tons="1")
    assert priced["amount_total"] == 90000 and isinstance(priced["product"], dict)
    assert stripe_schema.validate(priced, "climate.order") == []


def test_product_and_supplier_factories():
    product = so.product(delivery_year=2028, prices={"usd": 56650, "jpy": 84975}, livemode=True)
    assert stripe_schema.validate(product, "climate.product") == []
    assert product["id"] == "climsku_frontier_offtake_portfolio_2028"
    assert product["current_prices_per_metric_ton"]["usd"] == {
        "amount_fees": 1650,
        "amount_subtotal": 55000,
        "amount_total": 56650,
    }
    assert all(s["livemode"] for s in product["suppliers"])
    spot = so.product(delivery_year=None, metric_tons_available=Decimal("12.5"))
    assert spot["metric_tons_available"] == "12.5"
    assert stripe_schema.validate(spot, "climate.product") == []

    lithos = so.supplier(id="climsup_lithos")
    assert lithos["removal_pathway"] == "enhanced_weathering"
    assert stripe_schema.validate(lithos, "climate.supplier") == []
    assert stripe_schema.validate(so.supplier(), "climate.supplier") == []


def test_delayed_and_substituted_keep_status_and_stay_valid():
    base = so.order()
    late = so.delayed(base, 2028, at=1_790_000_000)
    assert (late["status"], late["expected_delivery_year"], late["delayed_at"]) == (
        "confirmed",
        2028,
        1_790_000_000,
    )
    assert base["delayed_at"] is None  # inputs are not mutated
    swapped = so.substituted(base, "climsku_frontier_offtake_portfolio_2028", at=1_790_000_500)
    assert swapped["product"] == "climsku_frontier_offtake_portfolio_2028"
    assert swapped["product_substituted_at"] == 1_790_000_500
    assert swapped["amount_total"] == base["amount_total"]
    expanded = so.substituted(base, so.product(delivery_year=2029), 1, expected_delivery_year=2029)
    for order in (late, swapped, expanded):
        assert stripe_schema.validate(order, "climate.order") == []

    with pytest.raises(ValueError):
        so.delayed(so.order("canceled"), 2030, at=1)
    with pytest.raises(ValueError):
        so.delayed(base, 2026, at=1)  # not later


def _event_object(event_type: str) -> dict:
    at = 1_790_000_000
    return {
        "climate.order.created": so.order(),
        "climate.order.delayed": so.delayed(so.order(), 2028, at),
        "climate.order.delivered": so.order("delivered"),
        "climate.order.product_substituted": so.substituted(
            so.order(), "climsku_frontier_offtake_portfolio_2028", at
        ),
        "climate.order.canceled": so.order("canceled"),
        "climate.product.created": so.product(delivery_year=2029),
        "climate.product.pricing_updated": so.product(prices={"usd": 60000}),
    }[event_type]


@pytest.mark.parametrize("event_type", so.CLIMATE_EVENT_TYPES)
def test_each_climate_event_type_validates(event_type):
    obj = _event_object(event_type)
    event = so.event(event_type, obj)
    assert stripe_schema.validate_event(event) == []
    assert event["id"].startswith("evt_") and event["object"] == "event"
    assert event["data"]["object"] == obj and "previous_attributes" not in event["data"]
    assert "account" not in event
    assert event["request"] == {"id": None, "idempotency_key": None}


def test_event_defaults_follow_the_object():
    order = so.delayed(so.order(livemode=True), 2028, at=1_790_000_000)
    event = so.event(
        "climate.order.delayed",
        order,
        account="acct_1Connected",
        previous_attributes={"expected_delivery_year": 2027},
        request_id="req_123",
    )
    assert event["created"] == 1_790_000_000  # the delay's own timestamp
    assert event["livemode"] is True
    assert event["account"] == "acct_1Connected"
    assert event["data"]["previous_attributes"] == {"expected_delivery_year": 2027}
    assert event["request"]["id"] == "req_123"
    assert stripe_schema.validate_event(event) == []
    assert so.event("climate.order.created", order)["id"] != event["id"]
    assert event["api_version"] == stripe.api_version  # the version the installed SDK pins
    with pytest.raises(ValueError):
        so.event("climate.order.delayed", so.product())


@pytest.mark.parametrize(
    ("breakage", "field"),
    [
        (lambda o: o.update(metric_tons=10), "metric_tons"),
        (lambda o: o.pop("currency"), "currency"),
        (lambda o: o.update(status="shipped"), "status"),
    ],
)
def test_broken_orders_are_rejected(breakage, field):
    order = so.order()
    breakage(order)
    problems = stripe_schema.validate(order, "climate.order")
    assert problems and any(field in p for p in problems)
    assert stripe_schema.validate_event(so.event("climate.order.created", order)) != []


def test_factories_refuse_typos_and_floats():
    with pytest.raises(TypeError):
        so.order(metric_ton="1")
    with pytest.raises(TypeError):
        so.order(metric_tons=0.1)
    with pytest.raises(KeyError):
        stripe_schema.validate({}, "climate.orders")


def test_webhook_request_verifies_like_stripe_sent_it():
    event = so.event("climate.order.delivered", so.order("delivered"))
    body, headers = so.webhook_request(event, SECRET)
    assert isinstance(body, bytes) and json.loads(body) == event
    assert headers["Content-Type"].startswith("application/json")
    assert headers["User-Agent"] == so.WEBHOOK_USER_AGENT
    sig = headers["Stripe-Signature"]
    assert stripe.WebhookSignature.verify_header(body, sig, SECRET, tolerance=300)

    parsed = stripe.Webhook.construct_event(body, sig, SECRET)
    assert isinstance(parsed.data.object, stripe.climate.Order)
    assert parsed.data.object.metric_tons == Decimal("10")

    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(body, sig, "whsec_other", tolerance=300)
    old_body, old_headers = so.webhook_request(event, SECRET, timestamp=1_000_000_000)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(
            old_body, old_headers["Stripe-Signature"], SECRET, tolerance=300
        )
    raw, raw_headers = so.webhook_request('{"id": "evt_raw"}', SECRET)
    assert raw == b'{"id": "evt_raw"}'


@settings(max_examples=40, deadline=None)
@given(
    tons=st.decimals(min_value=Decimal("0.001"), max_value=Decimal("5000"), places=3),
    currency=st.sampled_from(["usd", "jpy"]),
    status=st.sampled_from(so.ORDER_STATUSES),
    suppliers=st.integers(min_value=1, max_value=5),
)
def test_any_tonnage_gives_a_valid_consistent_order(tons, currency, status, suppliers):
    ids = [s["id"] for s in so.product()["suppliers"]][:suppliers]
    order = so.order(status, metric_tons=tons, currency=currency, delivered_by=ids)
    assert stripe_schema.validate(order, "climate.order") == []
    assert Decimal(order["metric_tons"]) == tons
    assert order["amount_total"] == order["amount_subtotal"] + order["amount_fees"]
    if status == "delivered":
        assert sum(Decimal(d["metric_tons"]) for d in order["delivery_details"]) == tons
