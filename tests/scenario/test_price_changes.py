"""A product's price and availability changes: each one told, old → new, never lost as a
duplicate; a thin event and its snapshot twin still tell one change once."""

from __future__ import annotations

import json

from bot.sandbox import stripe_objects as so
from tests.support.bot import CHANNEL
from tests.support.thin_events import thin


def priced(product: dict, **prices: int) -> dict:
    return so.product(id=product["id"], prices=prices)


def product_thread(fake_slack, product_id: str) -> list:
    [card] = [m for m in fake_slack.messages(CHANNEL) if product_id in json.dumps(m.blocks)]
    return fake_slack.replies(CHANNEL, card.ts)


def test_prices_going_a_b_a_b_are_four_changes_not_duplicates(running, fake_slack):
    a = so.product(prices={"usd": 56650})
    running.send_event(so.event("climate.product.created", a, created=1000))
    for step, price in enumerate((60000, 56650, 60000), start=1):
        answer = running.send_event(
            so.event(
                "climate.product.pricing_updated",
                priced(a, usd=price),
                created=1000 + step * 100,
            )
        )
        assert answer.json()["outcome"] == "queued", step
    running.deliver()
    replies = [r.text for r in product_thread(fake_slack, a["id"])]
    assert len(replies) == 3
    assert "$566.50 → $600.00" in replies[0] and "$600.00 → $566.50" in replies[1]
    assert "$566.50 → $600.00" in replies[2]


def test_an_availability_only_update_after_a_price_change_is_told(running, fake_slack):
    product = so.product(prices={"usd": 56650}, metric_tons_available="1000")
    running.send_event(so.event("climate.product.created", product, created=1000))
    repriced = so.product(id=product["id"], prices={"usd": 60000}, metric_tons_available="1000")
    running.send_event(so.event("climate.product.pricing_updated", repriced, created=1100))
    fewer = so.product(id=product["id"], prices={"usd": 60000}, metric_tons_available="250")
    answer = running.send_event(so.event("climate.product.pricing_updated", fewer, created=1200))
    assert answer.json()["outcome"] == "queued"
    running.deliver()
    replies = product_thread(fake_slack, product["id"])
    assert len(replies) == 2
    assert "250 t" in json.dumps(replies[1].blocks)


def test_a_partial_previous_attributes_diff_is_laid_over_the_known_prices(running, fake_slack):
    product = so.product(prices={"usd": 56650, "eur": 52000})
    running.send_event(so.event("climate.product.created", product, created=1000))
    repriced = priced(product, usd=60000, eur=52000)
    diff = {"current_prices_per_metric_ton": {"usd": {"amount_total": 56650}}}
    running.send_event(
        so.event(
            "climate.product.pricing_updated", repriced, created=1100, previous_attributes=diff
        )
    )
    running.deliver()
    [reply] = product_thread(fake_slack, product["id"])
    text = json.dumps(reply.blocks, ensure_ascii=False)
    assert "USD: $566.50 → $600.00 per tonne (+5.9%)" in text
    assert "EUR: €520.00 per tonne (unchanged)" in text
    assert "now offered" not in text  # an unchanged currency is not shown as new
    stored = running.bot.storage.product_row(product["id"])["old_prices"]
    assert stored["usd"]["amount_total"] == 56650 and stored["eur"]["amount_total"] == 52000
    # The fields the diff left out are what the card showed before, not the new prices'.
    assert stored["usd"] == product["current_prices_per_metric_ton"]["usd"]


def test_the_same_price_change_told_by_a_thin_event_and_its_twin_is_posted_once(
    running, fake_slack, fake_stripe
):
    product = so.product(prices={"usd": 56650})
    running.send_event(so.event("climate.product.created", product, created=1000))
    running.deliver()
    repriced = priced(product, usd=60000)
    fake_stripe.add_product(repriced)
    snapshot = so.event("climate.product.pricing_updated", repriced, created=1_900_000_000)
    # No snapshot_event link: the twins are matched by their change (created together).
    twin = thin("climate.product.pricing_updated", repriced, created="2030-03-17T17:46:40.250Z")
    assert running.send_event(twin).json()["outcome"] == "queued"
    running.deliver()  # the fetch job ingests the thin event's object
    assert running.send_event(snapshot).json()["outcome"] == "duplicate"
    running.deliver()
    assert len(product_thread(fake_slack, product["id"])) == 1


def test_two_different_changes_within_one_second_are_both_told(running, fake_slack):
    """Regression: the demo's story sends changes at once; keying on the second alone lost one."""
    product = so.product(prices={"usd": 56650})
    running.send_event(so.event("climate.product.created", product, created=1000))
    for price in (60000, 61000):
        answer = running.send_event(
            so.event("climate.product.pricing_updated", priced(product, usd=price), created=1100)
        )
        assert answer.json()["outcome"] == "queued"
    running.deliver()
    assert len(product_thread(fake_slack, product["id"])) == 2
