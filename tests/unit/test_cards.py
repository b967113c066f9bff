"""What the order and product cards and their thread replies say, for the cases a team will see.

Tests run in the default locale, English, unless they say otherwise with ``use_locale``.
"""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from babel.dates import format_date

from bot import formatting
from bot.cards import (
    decision_direct_message,
    limit_problems,
    order_card,
    order_notice,
    order_reply,
    product_card,
    product_reply,
    status_answer,
)
from bot.formatting import (
    cancellation_reason_text,
    escape_mrkdwn,
    format_money,
    format_percent_change,
    format_tonnes,
    removal_pathway_label,
    slack_date,
    truncate,
)
from bot.i18n import use_locale
from bot.model import (
    ACCEPT_ACTION,
    CANCEL_ACTION,
    Change,
    Decision,
    Message,
    Notice,
    OrderState,
    OrderUpdate,
    ProductState,
    ProductUpdate,
)
from tests.support.cards import (
    DEADLINE,
    DELAYED_AT,
    delay,
    make_order,
    make_product,
    make_supplier,
    texts,
)


def card(
    order: dict[str, Any] | None = None,
    event: str = "climate.order.created",
    change: Change | None = None,
    now: int = DELAYED_AT + 60,
    product: dict[str, Any] | None = None,
    account: str | None = None,
) -> Message:
    state = OrderState(
        order=order or make_order(),
        product=product,
        headline_event=event,
        change=change,
        account=account,
    )
    message = order_card(state, now)
    assert limit_problems(message) == []
    return message


def all_text(message: Message) -> str:
    return "\n".join(texts(message))


def header(message: Message) -> str:
    return message.blocks[0]["text"]["text"]


def blocks_of(message: Message, kind: str) -> list[dict[str, Any]]:
    return [block for block in message.blocks if block["type"] == kind]


# --- formatting helpers ------------------------------------------------------------------------


def test_money_uses_each_currency_s_own_decimals():
    assert format_money(72187, "usd") == "$721.87"
    assert format_money(1250000, "jpy") == "¥1,250,000"
    assert format_money(1234, "bhd") == "BHD1.234"
    assert format_money(5, "usd") == "$0.05"


def test_money_with_a_code_that_is_not_iso_is_shown_escaped():
    assert format_money(1234, "<!x") == "1,234 &lt;!x"


def test_tonnes_are_exact_decimals():
    assert format_tonnes("0.01") == "0.01 t"
    assert format_tonnes("1000000") == "1,000,000 t"
    assert format_tonnes(Decimal("0.123456789012345678")) == "0.123456789012345678 t"


def test_malformed_tonnes_are_shown_escaped_rather_than_crashing():
    assert format_tonnes("metric_tons") == "metric_tons"
    assert format_tonnes("<!channel>") == "&lt;!channel&gt;"
    assert format_tonnes("NaN") == "NaN"
    assert len(format_tonnes("9" * 10_000)) <= 40


def test_percent_change():
    assert format_percent_change(56650, 60000) == "+5.9%"
    assert format_percent_change(1000, 970) == "\u22123.0%"
    assert format_percent_change(0, 10) == "n/a"
    assert format_percent_change(100, 100) == "0.0%"


def test_truncate_never_cuts_an_entity():
    escaped = escape_mrkdwn("ab<cd")
    assert escaped == "ab&lt;cd"
    for limit in range(len(escaped) + 1):
        cut = truncate(escaped, limit)
        assert len(cut) <= limit
        assert "&l" not in cut or "&lt;" in cut
    assert truncate("short", 10) == "short"
    assert truncate("abcdef", 4) == "abc…"


def test_slack_date_has_a_readable_utc_fallback():
    assert slack_date(1798761600) == "<!date^1798761600^{date_long}|1 Jan 2027 00:00 UTC>"


def test_labels_for_known_and_new_enum_values():
    assert removal_pathway_label("direct_air_capture") == "Direct air capture"
    assert removal_pathway_label("ocean_iron_fertilisation") == "Ocean iron fertilisation"
    assert cancellation_reason_text("expired") == "it was never confirmed and expired"
    assert cancellation_reason_text(None)
    assert "&lt;" in cancellation_reason_text("<!here>")


DASHBOARD_LINK = re.compile(r"<(https://dashboard\.stripe\.com[^|>]*)\|([^>]*)>")


@pytest.mark.parametrize("livemode", [True, False])
@pytest.mark.parametrize("account", [None, "acct_1Connected"])
def test_dashboard_links_are_only_the_climate_page_stripe_documents(livemode, account):
    """Stripe documents one Dashboard address for Climate, its Climate page; none for one order or
    one product (nor test-mode or connected-account forms of it). Cards link there and nowhere
    guessed."""
    order_message = card(make_order(livemode=livemode), account=account)
    product_message = product_card(
        ProductState(make_product(livemode=livemode), "climate.product.created", account=account)
    )
    for message in (order_message, product_message):
        links = DASHBOARD_LINK.findall(all_text(message))
        assert links == [
            ("https://dashboard.stripe.com/climate", "Climate in the Stripe Dashboard")
        ]


# --- order card ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "order", "change", "expected"),
    [
        ("climate.order.created", make_order(), None, "New carbon removal order"),
        ("climate.order.delayed", make_order(), delay(), "Order delayed — decision needed"),
        (
            "climate.order.product_substituted",
            make_order(),
            Change(kind="product_substituted", at=DELAYED_AT, old_product={"id": "climsku_old"}),
            "Product substituted — decision needed",
        ),
        (
            "climate.order.delivered",
            make_order(status="delivered", certificate="https://frontier.example/cert/1"),
            None,
            "Order delivered",
        ),
        (
            "climate.order.canceled",
            make_order(status="canceled", cancellation_reason="product_unavailable"),
            None,
            "Order cancelled",
        ),
    ],
)
def test_header_says_what_happened(event, order, change, expected):
    assert header(card(order, event, change)) == "[TEST] " + expected


def test_header_of_a_delay_without_a_decision_left_does_not_ask_for_one():
    message = card(make_order(), "climate.order.delayed", delay(), now=DEADLINE)
    assert header(message) == "[TEST] Order delayed"


def test_test_mode_is_marked_and_live_mode_is_not():
    test_card = card(make_order(livemode=False))
    live_card = card(make_order(livemode=True))
    assert header(test_card).startswith("[TEST] ")
    assert "Test mode — no real money moved" in all_text(test_card)
    assert test_card.text.startswith("[TEST] ")
    assert "TEST" not in all_text(live_card)
    assert "Test mode" not in all_text(live_card)


def test_order_facts_and_amounts():
    message = card(make_order(), product=make_product())
    text = all_text(message)
    assert "`climorder_1Pgc73B7WZ01zgkWaebIwEZ7`" in text
    assert "Frontier Climate" in text
    assert "10 t" in text
    assert "$103.00" in text
    assert "$100.00" in text and "$3.00" in text
    assert "Frontier's 2027 offtake portfolio" in text
    assert "Charm Industrial" in text  # the pathways and places are on the product card
    assert "2027" in text
    assert "Confirmed" in text
    assert "<https://dashboard.stripe.com/climate|Climate in the Stripe Dashboard>" in text


def test_an_order_card_names_two_suppliers_and_counts_the_rest():
    names = ["Charm Industrial", "Heirloom", "Lithos", "Vaulted Deep", "CarbonCapture Inc."]
    product = make_product(suppliers=[make_supplier(name=n) for n in names])
    text = all_text(card(make_order(), "climate.order.delayed", delay(), product=product))
    assert "Charm Industrial, Heirloom and 3 more" in text
    assert "Lithos" not in text and "Biomass carbon removal and storage" not in text
    # The full list stays where it belongs: the product's own card.
    product_text = all_text(product_card(ProductState(product, "climate.product.created")))
    assert all(name in product_text for name in names)


def test_a_delayed_card_puts_the_decision_before_the_facts():
    message = card(make_order(), "climate.order.delayed", delay(), now=DEADLINE - 1)
    kinds = [block["block_id"].split(".")[0] for block in message.blocks]
    assert kinds.index("change") < kinds.index("decision") < kinds.index("facts")
    [facts] = [b for b in message.blocks if b["block_id"].startswith("facts.")]
    assert len(facts["fields"]) <= 4  # two rows of two: the card reads at a glance


def test_jpy_total_has_no_decimals():
    message = card(make_order(currency="jpy", amount_total=1250000))
    assert "¥1,250,000" in all_text(message)


def test_usd_total_in_dollars_and_cents():
    message = card(make_order(amount_total=72187))
    assert "$721.87" in all_text(message)


def test_three_decimal_currency():
    message = card(make_order(currency="bhd", amount_total=1234))
    assert "BHD1.234" in all_text(message)


def test_tonnes_are_shown_exactly():
    message = card(make_order(metric_tons="0.01"))
    assert "0.01 t" in all_text(message)


def test_missing_beneficiary_is_the_account_itself():
    order = make_order()
    del order["beneficiary"]
    assert "Your account" in all_text(card(order))
    assert "Your account" in all_text(card(make_order(beneficiary=None)))


def test_product_id_is_shown_when_the_product_is_unknown():
    assert "climsku_frontier_offtake_portfolio_2027" in all_text(card(make_order()))


def test_expanded_product_on_the_order_is_used():
    message = card(make_order(product=make_product(name="Expanded portfolio")))
    assert "Expanded portfolio" in all_text(message)


def test_hostile_names_are_escaped_in_blocks_and_text():
    product = make_product(
        name="<https://evil.example|click>",
        suppliers=[make_supplier(name="<@U123> & co")],
    )
    order = make_order(beneficiary={"public_name": "<!channel>"}, product=product)
    message = card(order, "climate.order.created")
    for text in texts(message):
        assert "<!channel>" not in text
        assert "<https://evil.example" not in text
        assert "<@U123>" not in text
    blob = all_text(message)
    assert "&lt;!channel&gt;" in blob
    assert "&lt;https://evil.example|click&gt;" in blob
    assert "&lt;@U123&gt; &amp; co" in blob


def test_hostile_beneficiary_is_escaped_in_the_notification_text():
    order = make_order(beneficiary={"public_name": "<!channel>"}, id="climorder_<!here>")
    message = card(order)
    assert "<!" not in message.text
    assert "&lt;!here&gt;" in message.text


def test_a_name_cannot_start_a_line_of_its_own():
    product = make_product(name="Portfolio\n*Refund: $1,000,000*")
    message = card(make_order(), product=product)
    # One line, and its asterisks are look-alikes: the name reads as sent but bolds nothing.
    assert "Portfolio \u2217Refund: $1,000,000\u2217" in all_text(message)
    assert "\n*Refund" not in all_text(message) and "*Refund" not in all_text(message)


def test_delayed_card_before_the_deadline_offers_both_decisions():
    order = make_order(id="climorder_ABC", amount_total=10300)
    message = card(order, "climate.order.delayed", delay(), now=DEADLINE - 1)
    text = all_text(message)
    assert "Delivery moved from 2027 to 2028" in text
    assert f"<!date^{DEADLINE}^" in text
    assert "No answer means the delay is accepted." in text

    [actions] = blocks_of(message, "actions")
    accept, cancel = actions["elements"]
    assert accept["action_id"] == ACCEPT_ACTION
    assert accept["text"]["text"] == "Accept delay"
    assert accept["style"] == "primary"
    assert accept["value"] == "climorder_ABC"
    assert cancel["action_id"] == CANCEL_ACTION
    assert cancel["style"] == "danger"
    assert cancel["value"] == "climorder_ABC"
    # Cancel opens a dialog that shows the refund and asks for a reason: no confirm of its own.
    assert cancel["text"]["text"] == "Cancel order…" and "confirm" not in cancel
    assert "Decide by" in message.text


def test_delay_without_a_known_old_year():
    message = card(make_order(), "climate.order.delayed", delay(old_year=None))
    assert "Delivery moved to 2028" in all_text(message)


def test_substitution_names_old_and_new_products():
    change = Change(
        kind="product_substituted",
        at=DELAYED_AT,
        old_product={"id": "climsku_old"},
        new_product=make_product(name="New portfolio"),
    )
    message = card(make_order(), "climate.order.product_substituted", change)
    text = all_text(message)
    assert "`climsku_old` → New portfolio (Charm Industrial, Heirloom, Lithos and 2 more)" in text
    assert "No answer means the substitution is accepted." in text
    [actions] = blocks_of(message, "actions")
    assert actions["elements"][0]["text"]["text"] == "Accept substitution"


def test_after_the_deadline_no_buttons_and_the_window_is_closed():
    message = card(make_order(), "climate.order.delayed", delay(), now=DEADLINE)
    assert blocks_of(message, "actions") == []
    text = all_text(message)
    assert "Delivery moved from 2027 to 2028" in text
    assert "No decision by" in text
    assert "delay accepted by default." in text
    assert "Decide by" not in message.text


def test_delivered_order_with_an_old_delay_has_no_buttons():
    order = make_order(status="delivered", certificate="https://frontier.example/cert/1")
    message = card(order, "climate.order.delivered", delay(), now=DELAYED_AT + 60)
    assert blocks_of(message, "actions") == []
    assert "No decision by" not in all_text(message)


def test_cancelled_order_cannot_be_cancelled_again():
    order = make_order(status="canceled", cancellation_reason="requested")
    message = card(order, "climate.order.delayed", delay(), now=DELAYED_AT + 60)
    assert blocks_of(message, "actions") == []


def test_delivered_card_links_certificate_and_registry():
    details = [
        {
            "delivered_at": DELAYED_AT,
            "location": None,
            "metric_tons": "4",
            "registry_url": "https://registry.example/entries/1?a=1&b=2",
            "supplier": make_supplier(name="Charm Industrial"),
        },
        {
            "delivered_at": DELAYED_AT,
            "location": None,
            "metric_tons": "6",
            "registry_url": "javascript:alert(1)",
            "supplier": make_supplier(name="Heirloom"),
        },
    ]
    order = make_order(
        status="delivered",
        certificate="https://frontier.example/cert/1",
        delivery_details=details,
    )
    text = all_text(card(order, "climate.order.delivered"))
    on = f"on <!date^{DELAYED_AT}^{{date_short}}|21 Sep 2026 14:13 UTC>"
    assert "<https://frontier.example/cert/1|Delivery certificate>" in text
    assert f"Charm Industrial — 4 t {on} — <https://registry.example/entries/1?a=1&amp;b=2|" in text
    assert f"Heirloom — 6 t {on} — Registry entry: javascript:alert(1)" in text


def test_five_hundred_deliveries_are_summarised():
    details = [
        {
            "delivered_at": DELAYED_AT,
            "location": None,
            "metric_tons": "0.02",
            "registry_url": f"https://registry.example/{index}",
            "supplier": make_supplier(name=f"Supplier {index}"),
        }
        for index in range(500)
    ]
    message = card(make_order(status="delivered", delivery_details=details))
    assert "and 481 more deliveries" in all_text(message)  # 19 lines, each with its date


def test_long_certificate_and_long_registry_links_still_fit_one_section():
    """Regression: the delivery list had its own 2,500-char budget, so a 500-char certificate
    link before it pushed the section past Slack's 3,000."""
    event = "climate.order.delivered"
    details = [
        {
            "delivered_at": DELAYED_AT,
            "location": None,
            "metric_tons": "1" * 40,
            "registry_url": "https://registry.example/" + "r" * 448,
            "supplier": make_supplier(name="S" * 200),
        }
        for _ in range(600)
    ]
    order = make_order(
        status="delivered",
        certificate="https://cert.example/" + "c" * 475,
        delivery_details=details,
    )
    message = card(order, event)
    assert "more deliveries" in all_text(message)
    reply_message = order_reply(
        OrderUpdate(event_type=event, event_created=DELAYED_AT, order=order)
    )
    assert limit_problems(reply_message) == []


def test_absurd_amounts_do_not_crash():
    message = card(make_order(amount_total=10**5000, amount_subtotal=-(10**30)))
    assert "an implausibly large amount" in all_text(message)


@pytest.mark.parametrize(
    ("order_fields", "refund", "words"),
    [
        (
            {"cancellation_reason": "requested"},
            "Expected refund $100.00, the subtotal: Frontier keeps its fees of $3.00",
            "a cancellation was requested",
        ),
        (
            {"cancellation_reason": "requested", "delayed_at": 1_700_000_000},
            "Expected refund $103.00, the full total: a cancel within 30 days of a delay",
            "a cancellation was requested",
        ),
        (
            {"cancellation_reason": "product_unavailable"},
            "Expected refund $103.00, the full total: Stripe refunds in full when Frontier cancels",
            "the product is no longer available",
        ),
        (
            {"cancellation_reason": "expired"},
            "No refund: the order was never confirmed, so nothing was paid.",
            "never confirmed and expired",
        ),
        (
            {"cancellation_reason": "something_new"},
            "Stripe states no refund for this cancellation.",
            "something_new",
        ),
        ({"cancellation_reason": None}, "Stripe states no refund", "no reason was given"),
    ],
)
def test_cancelled_card_gives_reason_and_the_expected_refund_with_its_rule(
    order_fields, refund, words
):
    order = make_order(status="canceled", canceled_at=1_700_000_100, **order_fields)
    message = card(order, "climate.order.canceled")
    text = all_text(message)
    assert refund in text
    assert "Refund:" not in text  # never a refund stated as a fact Stripe returned
    assert words in text
    assert words in message.text


def test_an_order_that_was_never_confirmed_shows_no_refund_at_all():
    for fields in ({"status": "canceled", "cancellation_reason": "expired"}, {"status": "open"}):
        text = all_text(card(make_order(**fields), "climate.order.canceled"))
        assert "Expected refund" not in text and "$103.00 (" not in text
    expired = make_order(status="canceled", cancellation_reason="expired")
    assert "no refund" in card(expired, "climate.order.canceled").text


def test_block_ids_are_unique_and_change_with_the_content():
    order = make_order()
    before = card(order, "climate.order.delayed", delay(), now=DEADLINE - 1)
    after = card(order, "climate.order.delayed", delay(), now=DEADLINE)
    again = card(order, "climate.order.delayed", delay(), now=DEADLINE - 1)
    ids_before = [block["block_id"] for block in before.blocks]
    ids_after = [block["block_id"] for block in after.blocks]
    assert len(set(ids_before)) == len(ids_before)
    assert set(ids_before).isdisjoint(ids_after)
    assert ids_before == [block["block_id"] for block in again.blocks]


def test_notification_text_for_a_delay():
    message = card(make_order(id="climorder_123"), "climate.order.delayed", delay())
    assert message.text == (
        "[TEST] Order climorder_123 delayed: Delivery moved from 2027 to 2028. "
        "Decide by 21 Oct 2026 14:13 UTC."
    )


# --- order replies -------------------------------------------------------------------------------


def reply(event: str, order: dict[str, Any], **kwargs: Any) -> Message:
    message = order_reply(
        OrderUpdate(event_type=event, event_created=DELAYED_AT, order=order, **kwargs)
    )
    assert limit_problems(message) == []
    return message


def test_created_reply():
    message = reply("climate.order.created", make_order())
    assert "Order placed: 10 t for $103.00" in all_text(message)


def test_delayed_reply_gives_years_and_deadline():
    message = reply("climate.order.delayed", make_order(), change=delay())
    text = all_text(message)
    assert "Delivery moved from 2027 to 2028" in text
    assert f"<!date^{DEADLINE}^" in text
    assert "<!date" not in message.text


def test_substituted_reply_names_both_products():
    change = Change(
        kind="product_substituted",
        at=DELAYED_AT,
        old_product={"id": "climsku_old"},
        new_product={"id": "climsku_new", "name": "New portfolio"},
    )
    message = reply("climate.order.product_substituted", make_order(), change=change)
    assert "Product substituted: `climsku_old` → New portfolio" in all_text(message)


def test_delivered_reply_lists_suppliers_and_links():
    details = [
        {
            "delivered_at": DELAYED_AT,
            "location": None,
            "metric_tons": "10",
            "registry_url": "https://registry.example/1",
            "supplier": make_supplier(name="Charm Industrial"),
        }
    ]
    order = make_order(
        status="delivered", certificate="https://cert.example/1", delivery_details=details
    )
    text = all_text(reply("climate.order.delivered", order))
    assert "Delivered: 10 t." in text
    assert "<https://cert.example/1|Delivery certificate>" in text
    assert "Charm Industrial — 10 t on <!date^" in text
    assert "— <https://registry.example/1|Registry entry>" in text


def test_cancelled_reply_gives_reason_and_refund():
    order = make_order(status="canceled", cancellation_reason="requested")
    message = reply("climate.order.canceled", order)
    assert "a cancellation was requested" in all_text(message)
    assert "Expected refund $100.00, the subtotal: Frontier keeps its fees of $3.00" in all_text(
        message
    )


def test_late_order_reply_says_the_card_did_not_change():
    message = reply("climate.order.delayed", make_order(), change=delay(), late=True)
    text = all_text(message)
    assert "This update is older than what the card shows; the card was not changed." in text
    assert f"<!date^{DELAYED_AT}^" in text
    assert message.text.endswith("the card was not changed.")


def test_unknown_order_event_still_renders():
    message = reply("climate.order.<!channel>", make_order())
    assert "<!channel>" not in all_text(message)


# --- product card and replies --------------------------------------------------------------------


def test_product_card_headers():
    created = product_card(ProductState(make_product(), "climate.product.created"))
    updated = product_card(ProductState(make_product(), "climate.product.pricing_updated"))
    assert header(created) == "[TEST] New product from Frontier"
    assert header(updated) == "[TEST] Product price changed"
    live = product_card(ProductState(make_product(livemode=True), "climate.product.created"))
    assert header(live) == "New product from Frontier"


def test_product_card_shows_prices_suppliers_and_availability():
    product = make_product(
        current_prices_per_metric_ton={
            "usd": {"amount_fees": 1650, "amount_subtotal": 55000, "amount_total": 56650},
            "eur": {"amount_fees": 1500, "amount_subtotal": 50000, "amount_total": 51500},
            "jpy": {"amount_fees": 100, "amount_subtotal": 9000, "amount_total": 9100},
        }
    )
    message = product_card(ProductState(product, "climate.product.created", account="acct_2"))
    assert limit_problems(message) == []
    text = all_text(message)
    assert text.index("EUR: €515.00") < text.index("JPY: ¥9,100") < text.index("USD: $566.50")
    assert "1,000,000 t" in text
    assert "<https://frontierclimate.com/portfolio/heirloom|Heirloom> — Direct air capture" in text
    assert "Brisbane, CA, US" in text
    assert "<https://dashboard.stripe.com/climate|Climate in the Stripe Dashboard>" in text


@pytest.mark.parametrize(
    ("delivery_year", "now", "expected"),
    [
        (None, None, "Not set (spot inventory)"),
        (2023, 1_790_000_000, "2023 (spot inventory, guaranteed delivery)"),
        (2030, 1_790_000_000, "2030"),
    ],
)
def test_product_delivery_year(delivery_year, now, expected):
    product = make_product(delivery_year=delivery_year)
    message = product_card(ProductState(product, "climate.product.created"), now=now)
    assert f"*Delivery year*\n{expected}" in all_text(message)


def test_three_hundred_suppliers_are_summarised():
    suppliers = [make_supplier(name=f"Supplier {index}") for index in range(300)]
    message = product_card(ProductState(make_product(suppliers=suppliers), "x"))
    assert limit_problems(message) == []
    assert "and 285 more suppliers" in all_text(message)


def test_price_change_reply_compares_each_currency():
    product = make_product(
        current_prices_per_metric_ton={
            "usd": {"amount_fees": 0, "amount_subtotal": 0, "amount_total": 60000},
            "chf": {"amount_fees": 0, "amount_subtotal": 0, "amount_total": 50000},
        }
    )
    old_prices = {
        "usd": {"amount_fees": 1650, "amount_subtotal": 55000, "amount_total": 56650},
        "gbp": {"amount_fees": 0, "amount_subtotal": 0, "amount_total": 40000},
    }
    message = product_reply(
        ProductUpdate(
            event_type="climate.product.pricing_updated",
            event_created=DELAYED_AT,
            product=product,
            old_prices=old_prices,
        )
    )
    assert limit_problems(message) == []
    text = all_text(message)
    assert "USD: $566.50 → $600.00 per tonne (+5.9%)" in text
    assert "CHF: now offered at CHF500.00 per tonne" in text
    assert "GBP: no longer offered (was £400.00 per tonne)" in text
    assert "Tonnes available: 1,000,000 t" in text


def test_price_change_reply_without_old_prices_lists_new_ones():
    message = product_reply(
        ProductUpdate(
            event_type="climate.product.pricing_updated",
            event_created=DELAYED_AT,
            product=make_product(),
        )
    )
    assert "New prices:\nUSD: $566.50 per tonne" in all_text(message)


def test_late_product_reply_says_listed_and_late():
    message = product_reply(
        ProductUpdate(
            event_type="climate.product.created",
            event_created=DELAYED_AT,
            product=make_product(),
            late=True,
        )
    )
    assert limit_problems(message) == []
    text = all_text(message)
    assert "Listed: Frontier's 2027 offtake portfolio, 1,000,000 t available." in text
    assert "the card was not changed" in text


# --- test mode in thread replies and notices ----------------------------------------------------


def thread_messages(livemode: bool) -> dict[str, Message]:
    """Every kind of thread reply and notice, about an order or product in the given mode."""
    order = make_order(livemode=livemode, id="climorder_123")
    product = make_product(livemode=livemode)
    accepted = Decision("accepted", "U0ALICE", DELAYED_AT + 60)
    made = {
        f"reply {event} late={late}": order_reply(
            OrderUpdate(event, DELAYED_AT, order, change=change, late=late, mentions=("U0BOB",))
        )
        for event, change in (
            ("climate.order.created", None),
            ("climate.order.delayed", delay()),
            ("climate.order.delivered", None),
            ("climate.order.canceled", None),
            ("climate.order.from_the_future", None),
        )
        for late in (False, True)
    }
    for kind, decision, days in (
        ("reminder", None, 7),
        ("closed", None, None),
        ("decision_needed", None, None),
        ("decision", accepted, None),
        ("decision", None, None),
    ):
        notice = Notice(kind, order, delay(), decision, days, ("U0ALICE",))
        made[f"notice {kind} {decision is not None}"] = order_notice(notice)
    for event, old_prices in (
        ("climate.product.created", None),
        ("climate.product.pricing_updated", {"usd": {"amount_total": 50000}}),
        ("climate.product.from_the_future", None),
    ):
        for late in (False, True):
            update = ProductUpdate(event, DELAYED_AT, product, old_prices, late)
            made[f"product reply {event} late={late}"] = product_reply(update)
    for message in made.values():
        assert limit_problems(message) == []
    return made


def test_thread_replies_and_notices_about_test_mode_objects_are_marked_test():
    for name, message in thread_messages(livemode=False).items():
        assert message.text.startswith("[TEST] "), name
    for name, message in thread_messages(livemode=True).items():
        assert "TEST" not in message.text, name


def test_a_reminder_about_a_test_order_is_marked_in_japanese_too():
    notice = Notice("reminder", make_order(), delay(), None, 1, ("U0ALICE",))
    with use_locale("ja"):
        message = order_notice(notice)
    assert message.text.startswith("[テスト] ")
    assert message.text.endswith("<@U0ALICE>")  # the mark leads; the mention still ends it


# --- the dates finance books by ------------------------------------------------------------------

PLACED, CONFIRMED, DELIVERED = 1_767_225_600, 1_767_312_000, 1_798_761_600


def details_line(message: Message) -> str:
    [details] = [b for b in message.blocks if b["block_id"].startswith("details.")]
    [element] = details["elements"]
    return element["text"]


def day(ts: int) -> str:
    """The date token a card shows for `ts`, with its UTC fallback."""
    return slack_date(ts, "{date_short}")


def test_the_details_line_gives_the_order_s_dates():
    order = make_order(
        status="delivered", created=PLACED, confirmed_at=CONFIRMED, delivered_at=DELIVERED
    )
    line = details_line(card(order, "climate.order.delivered"))
    assert f"placed {day(PLACED)} · confirmed {day(CONFIRMED)} · delivered {day(DELIVERED)}" in line
    assert "cancelled" not in line
    cancelled = make_order(
        status="canceled", created=PLACED, confirmed_at=PLACED, canceled_at=CONFIRMED
    )
    line = details_line(card(cancelled, "climate.order.canceled"))
    # Stripe confirms an order as it is placed; the card says so once.
    assert f"placed and confirmed {day(PLACED)} · cancelled {day(CONFIRMED)}" in line


def test_an_order_never_confirmed_shows_only_when_it_was_placed():
    line = details_line(card(make_order(status="open", created=PLACED, confirmed_at=None)))
    assert f"placed {day(PLACED)}" in line
    assert "confirmed <!date" not in line


def test_a_delayed_card_keeps_its_rows_and_carries_its_dates_in_the_details_line():
    order = make_order(created=PLACED, confirmed_at=PLACED)
    message = card(order, "climate.order.delayed", delay(), now=DEADLINE - 1)
    kinds = [block["block_id"].split(".")[0] for block in message.blocks]
    assert kinds == ["header", "test", "change", "decision", "facts", "details"]
    [facts] = [b for b in message.blocks if b["block_id"].startswith("facts.")]
    assert len(facts["fields"]) == 4
    assert f"placed and confirmed {day(PLACED)}" in details_line(message)


def test_each_delivery_says_how_much_who_where_when_and_its_registry_entry():
    detail = {
        "delivered_at": DELIVERED,
        "location": {"city": "Reykjavík", "country": "IS", "region": None},
        "metric_tons": "4",
        "registry_url": "https://registry.example/1",
        "supplier": make_supplier(name="Climeworks"),
    }
    order = make_order(status="delivered", delivered_at=DELIVERED, delivery_details=[detail])
    expected = (
        f"• Climeworks (Reykjavík, IS) — 4 t on {day(DELIVERED)} — "
        "<https://registry.example/1|Registry entry>"
    )
    assert expected in all_text(card(order, "climate.order.delivered"))
    assert expected in all_text(reply("climate.order.delivered", order))


def test_climate_status_gives_the_dates_too():
    detail = {
        "delivered_at": DELIVERED,
        "location": None,
        "metric_tons": "10",
        "registry_url": None,
        "supplier": make_supplier(name="Charm Industrial"),
    }
    order = make_order(
        status="delivered",
        created=PLACED,
        confirmed_at=CONFIRMED,
        delivered_at=DELIVERED,
        delivery_details=[detail],
    )
    state = OrderState(order, make_product(), "climate.order.delivered")
    answer = status_answer(state, DELAYED_AT, as_of=None, card_link=None)
    assert limit_problems(answer) == []
    text = all_text(answer)
    assert f"placed {day(PLACED)} · confirmed {day(CONFIRMED)} · delivered {day(DELIVERED)}" in text
    assert f"• Charm Industrial — 10 t on {day(DELIVERED)}" in text


def test_every_date_in_a_plain_text_fallback_says_utc():
    order = make_order(id="climorder_123")
    decided = Decision("accepted", "U0ALICE", DELAYED_AT + 60)
    texts_with_dates = [
        card(order, "climate.order.delayed", delay(), now=DEADLINE - 1).text,
        decision_direct_message(
            OrderState(order, None, "climate.order.delayed", delay()), None
        ).text,
        order_notice(Notice("closed", order, delay())).text,
        order_notice(Notice("decision_needed", order, delay())).text,
        order_notice(Notice("decision", order, delay(), decided)).text,
    ]
    assert "Decide by 21 Oct 2026 14:13 UTC." in texts_with_dates[0]
    assert "Decide by 21 Oct 2026 14:13 UTC." in texts_with_dates[1]
    for text in texts_with_dates:
        assert re.search(r"\d{1,2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2} UTC", text), text
    with use_locale("ja"):
        japanese = card(order, "climate.order.delayed", delay(), now=DEADLINE - 1).text
    assert "2026年10月21日 14:13 UTC" in japanese
    # And every date token's fallback, which Slack shows where it cannot render the date.
    message = card(
        make_order(status="delivered", delivered_at=DELIVERED), "climate.order.delivered"
    )
    fallbacks = re.findall(r"<!date\^\d+\^[^|]*\|([^>]*)>", all_text(message))
    assert fallbacks and all(fallback.endswith(" UTC") for fallback in fallbacks)


# --- Stripe text cannot style the card -----------------------------------------------------------

STYLED = "*bold* _italic_ ~struck~ `code` snake_case"
INERT = "\u2217bold\u2217 \u02cditalic\u02cd \u223cstruck\u223c \u02cbcode\u02cb snake_case"


def test_stripe_text_cannot_style_the_card_but_reads_the_same():
    supplier = make_supplier(
        name=STYLED, locations=[{"city": "> quoted", "country": "US", "region": None}]
    )
    product = make_product(name=STYLED, suppliers=[supplier])
    order = make_order(beneficiary={"public_name": STYLED}, product=product)
    messages = [
        card(order, "climate.order.delayed", delay()),
        product_card(ProductState(product, "climate.product.created")),
        reply("climate.order.delayed", order, change=delay(), broadcast=True),
    ]
    for message in messages:
        text = all_text(message)
        for styled in ("*bold*", "_italic_", "~struck~", "`code`"):
            assert styled not in text
        assert INERT in text
    product_text = all_text(messages[1])
    assert "\u02c3 quoted, US" in product_text and "> quoted" not in product_text
    # Our own markup still works around it: bold labels, code spans for ids.
    card_text = all_text(messages[0])
    assert f"*Beneficiary*\n{INERT}" in card_text
    assert "*Delivery moved from 2027 to 2028*" in card_text
    assert "`climorder_1Pgc73B7WZ01zgkWaebIwEZ7`" in card_text


def test_ids_in_code_spans_stay_exactly_as_stripe_wrote_them():
    product = make_product(id="climsku_frontier_offtake_portfolio_2027")
    product_text = all_text(product_card(ProductState(product, "climate.product.created")))
    assert "`climsku_frontier_offtake_portfolio_2027`" in product_text
    text = all_text(card(make_order(id="climorder_*a*_b_~c~")))
    assert "`climorder_*a*_b_~c~`" in text  # inert inside a code span: kept as sent
    # A backtick would end the span early: it alone gets its look-alike.
    assert "`climorder_\u02cbx\u02cb`" in all_text(card(make_order(id="climorder_`x`")))


def test_a_decider_s_reason_cannot_style_the_card_either():
    decision = Decision("cancelling", "U0ALICE", DELAYED_AT + 60, reason="*urgent* _now_")
    order = make_order()
    state = OrderState(order, None, "climate.order.delayed", delay(), decision=decision)
    text = all_text(order_card(state, DELAYED_AT + 120))
    assert "Reason: “\u2217urgent\u2217 \u02cdnow\u02cd”" in text


def test_neutralise_styles_replaces_only_what_could_open_or_close_a_span():
    neutralise = formatting.neutralise_styles
    assert neutralise(STYLED) == INERT
    assert neutralise("a__b _a a_ x_1") == "a\u02cd\u02cdb \u02cda a\u02cd x_1"
    assert neutralise("> quote > not") == "\u02c3 quote > not"
    assert formatting.inert_mrkdwn("> <!here> *x*") == "\u02c3 &lt;!here&gt; \u2217x\u2217"


# --- the product card after a price change -------------------------------------------------------

OLD_USD = {"usd": {"amount_fees": 1650, "amount_subtotal": 55000, "amount_total": 56650}}
NEW_USD = {"usd": {"amount_fees": 1748, "amount_subtotal": 58252, "amount_total": 60000}}


def price_section(message: Message) -> str:
    [prices] = [b for b in message.blocks if b["block_id"].startswith("prices.")]
    return prices["text"]["text"]


def test_the_product_card_shows_old_and_new_prices_after_a_price_change():
    product = make_product(current_prices_per_metric_ton=NEW_USD)
    state = ProductState(product, "climate.product.pricing_updated", old_prices=OLD_USD)
    message = product_card(state)
    assert limit_problems(message) == []
    assert price_section(message) == ("*Price per tonne*\nUSD: $566.50 → $600.00 per tonne (+5.9%)")


def test_the_product_card_compares_each_currency_it_had_or_has():
    new = {**NEW_USD, "chf": {"amount_total": 50000}}
    old = {**OLD_USD, "gbp": {"amount_total": 40000}}
    state = ProductState(
        make_product(current_prices_per_metric_ton=new),
        "climate.product.pricing_updated",
        old_prices=old,
    )
    assert price_section(product_card(state)).split("\n")[1:] == [
        "CHF: now offered at CHF500.00 per tonne",
        "GBP: no longer offered (was £400.00 per tonne)",
        "USD: $566.50 → $600.00 per tonne (+5.9%)",
    ]


def test_without_earlier_prices_or_a_price_change_the_card_lists_prices():
    product = make_product(current_prices_per_metric_ton=NEW_USD)
    unknown = ProductState(product, "climate.product.pricing_updated")
    listed = ProductState(product, "climate.product.created", old_prices=OLD_USD)
    for state in (unknown, listed):
        assert price_section(product_card(state)) == "*Price per tonne*\nUSD: $600.00 per tonne"
    nothing = ProductState(
        make_product(current_prices_per_metric_ton={}),
        "climate.product.pricing_updated",
        old_prices={},
    )
    assert price_section(product_card(nothing)) == "*Price per tonne*\nNo prices listed"


# --- in Japanese ---------------------------------------------------------------------------------


def test_delayed_card_in_japanese_asks_for_a_decision_in_japanese():
    order = make_order(id="climorder_ABC", amount_total=10300)
    with use_locale("ja"):
        message = card(order, "climate.order.delayed", delay(), now=DEADLINE - 1)
    assert header(message) == "[テスト] 注文の配送遅延 — ご判断が必要です"
    text = all_text(message)
    assert "配送予定年が2027年から2028年に変更" in text
    assert "回答がない場合、遅延は承認されたものとみなされます。" in text
    assert "テストモード" in text
    [actions] = blocks_of(message, "actions")
    accept, cancel = actions["elements"]
    assert accept["text"]["text"] == "遅延を承認"
    assert cancel["text"]["text"] == "注文をキャンセル…"
    # The plain-text summary names the deadline as a Japanese date, in UTC and saying so.
    assert message.text == (
        "[テスト] 注文 climorder_ABC の配送遅延：配送予定年が2027年から2028年に変更。"
        "2026年10月21日 14:13 UTCまでにご判断ください。"
    )


def test_substitution_buttons_in_japanese():
    change = Change(kind="product_substituted", at=DELAYED_AT, old_product={"id": "climsku_old"})
    with use_locale("ja"):
        message = card(make_order(), "climate.order.product_substituted", change)
    assert header(message) == "[テスト] 商品の代替 — ご判断が必要です"
    [actions] = blocks_of(message, "actions")
    assert actions["elements"][0]["text"]["text"] == "代替を承認"


def test_jpy_total_in_english_and_japanese():
    order = make_order(currency="jpy", amount_total=1250000)
    assert "¥1,250,000" in all_text(card(order))
    with use_locale("ja"):
        japanese = all_text(card(order))
        shown = format_money(1250000, "jpy")
    # Babel's Japanese form uses the fullwidth yen sign; either sign is the yen.
    assert "1,250,000" in shown and shown[0] in "¥￥"
    assert shown in japanese
    assert format_money(1250000, "jpy", locale="ja") == shown


def test_money_keeps_the_currency_s_decimals_in_japanese():
    assert format_money(72187, "usd", locale="ja") == "$721.87"
    assert format_money(1234, "bhd", locale="ja").endswith("1.234")


def test_tonnes_are_exact_in_japanese():
    with use_locale("ja"):
        message = card(make_order(metric_tons="0.01"))
        assert format_tonnes("0.01") == "0.01 トン"
        assert format_tonnes(Decimal("0.123456789012345678")) == "0.123456789012345678 トン"
    assert "0.01 トン" in all_text(message)


def test_slack_date_fallback_in_japanese_uses_babel_s_japanese_date():
    japanese_date = format_date(date(2027, 1, 1), "long", locale="ja")
    assert japanese_date == "2027年1月1日"
    expected = f"<!date^1798761600^{{date_long}}|{japanese_date} 0:00 UTC>"
    assert slack_date(1798761600, locale="ja") == expected
    with use_locale("ja"):
        assert slack_date(1798761600) == expected
    assert slack_date(1798761600) == "<!date^1798761600^{date_long}|1 Jan 2027 00:00 UTC>"


def test_percent_change_and_labels_in_japanese():
    assert format_percent_change(56650, 60000, locale="ja") == "+5.9%"
    with use_locale("ja"):
        assert format_percent_change(0, 10) == "該当なし"
        assert removal_pathway_label("direct_air_capture") == "直接空気回収"
        assert cancellation_reason_text("<!here>").count("&lt;") == 1


def test_cancelled_card_in_japanese_gives_reason_and_refund():
    order = make_order(status="canceled", cancellation_reason="requested")
    with use_locale("ja"):
        message = card(order, "climate.order.canceled")
    assert header(message) == "[テスト] 注文のキャンセル"
    text = all_text(message)
    assert "理由：キャンセルのリクエスト" in text
    assert "返金見込額 $100.00（小計）" in text and "手数料 $3.00 は返金されません" in text


def test_counted_phrases_in_both_languages():
    suppliers = [make_supplier(name=f"Supplier {index}") for index in range(16)]
    product = make_product(suppliers=suppliers)
    assert "and 1 more supplier\n" in all_text(product_card(ProductState(product, "x"))) + "\n"
    with use_locale("ja"):
        japanese = all_text(product_card(ProductState(product, "x")))
    assert "ほか 1 社のサプライヤー" in japanese


def test_late_reply_in_japanese():
    with use_locale("ja"):
        message = reply("climate.order.delayed", make_order(), change=delay(), late=True)
    text = all_text(message)
    assert "この更新はカードの表示内容より古いため、カードは変更されていません。" in text
    assert f"<!date^{DELAYED_AT}^" in text
    assert message.text.endswith("カードは変更されていません。")


# --- the limit checker itself --------------------------------------------------------------------


def test_limit_problems_finds_what_slack_would_reject():
    section = {"type": "section", "text": {"type": "mrkdwn", "text": "x" * 2999}}
    too_many = Message(text="hi", blocks=[dict(section, block_id=str(i)) for i in range(51)])
    problems = limit_problems(too_many)
    assert any("51 blocks" in problem for problem in problems)
    assert any("block text" in problem for problem in problems)

    long_field = {"type": "section", "fields": [{"type": "mrkdwn", "text": "x" * 2001}]}
    assert any("field 0" in problem for problem in limit_problems(Message("hi", [long_field])))

    long_header = {"type": "header", "text": {"type": "plain_text", "text": "x" * 151}}
    assert any("150" in problem for problem in limit_problems(Message("hi", [long_header])))

    twice = [dict(section, block_id="a"), dict(section, block_id="a")]
    assert any("used twice" in problem for problem in limit_problems(Message("hi", twice)))

    assert limit_problems(Message("", [])) != []
    assert limit_problems(Message("hi", [{"type": "no_such_block"}])) != []


def test_an_error_text_from_stripe_or_slack_is_quoted_one_line_bounded_and_inert():
    quoted = formatting.quoted_error("<!here> *Card*\n> declined: `_x_` ~y~ <@U0BOB>")
    assert quoted == "“&lt;!here&gt; ∗Card∗ &gt; declined: ˋˍxˍˋ ∼y∼ &lt;@U0BOB&gt;”"
    long = formatting.quoted_error("é" * 1000)
    assert len(long) == formatting.ERROR_LIMIT + 2 and long.endswith("…”")  # the quotes
    assert formatting.quoted_error("") == formatting.quoted_error(None) == "no explanation"
    assert formatting.quoted_error("\u200b\x00  ") == "no explanation"
    # Slack's own markup in an error of ours is no HTML page: shown escaped.
    assert formatting.quoted_error("closed <!date^1790000000^{date}|x>").startswith("“closed &lt;")


def test_an_error_text_never_shows_an_html_page():
    page = "Received a response in a non-JSON format: <HTML><HEAD><TITLE>502 Bad Gateway</TITLE>"
    assert formatting.quoted_error(page, http_status=502) == "an error page (HTTP 502)"
    assert formatting.quoted_error(page) == "an error page"
    stripe_sdk = (
        "Invalid response body from API: <!DOCTYPE html><p>oops (HTTP response code was 503)"
    )
    assert formatting.quoted_error(stripe_sdk, http_status=503) == "an error page (HTTP 503)"
    assert formatting.quoted_error("<body>", http_status=7) == "an error page"


def test_an_error_text_is_masked_as_log_lines_are():
    text = "key sk_live_abcdefghijklmnop, token xoxb-123456-abcdef, https://hooks.slack.com/actions/T/1/x"
    assert formatting.quoted_error(text) == "“key [redacted], token [redacted], [redacted]”"
    # Masked before the cut: a secret past the limit leaves no visible prefix either.
    late = "x" * 190 + " sk_live_abcdefghijklmnop"
    assert "sk_" not in formatting.quoted_error(late)


def test_the_events_gap_notice_says_when_and_keeps_a_hostile_account_inert():
    from bot.cards import events_gap_notice

    message = events_gap_notice(
        DELAYED_AT - 40 * 86_400, DELAYED_AT - 30 * 86_400, "acct_1<!channel>*x*"
    )
    body = " ".join(texts(message))
    assert "<!channel>" not in body and "&lt;!channel&gt;" in body
    assert f"<!date^{DELAYED_AT - 40 * 86_400}^" in body and "climate-bot retry" in body
    assert "30 days" in body and message.text.startswith("Some Stripe events may be missing")
