"""Every message climate-bot renders is fully translated, in every shipped language.

Each kind of card and thread reply is rendered in English and Japanese: no string the renderers
look up may be missing from a catalog, and nothing in a Japanese render may fall back to an
English sentence of the catalog. A coverage check proves the renders below reach every string of
``bot.cards`` and ``bot.formatting``, so a new string cannot slip past these tests untranslated.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from babel.messages.extract import extract_from_file
from babel.messages.pofile import read_po

from bot import cards, formatting, i18n, model
from bot.cards import (
    ORDER_FILTERS,
    answers,
    cancel_modal,
    decision_direct_message,
    events_gap_notice,
    history_answer,
    home_view,
    limit_problems,
    notice_view,
    order_card,
    order_notice,
    order_reply,
    orders_page,
    pending_answer,
    product_card,
    product_reply,
    products_answer,
    status_answer,
)
from bot.formatting import STRIPE_THREE_DECIMAL, STRIPE_ZERO_DECIMAL
from bot.i18n import LOCALES_DIR, SUPPORTED_LOCALES, use_locale
from bot.model import (
    ORDER_EVENTS,
    Change,
    Decision,
    ExpectedRefund,
    Message,
    Notice,
    OrderState,
    OrderUpdate,
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

# The keywords `make messages` extracts.
KEYWORDS = {"_": None, "N_": None, "ngettext": (1, 2)}
# Looked up only when a notification text would otherwise be empty, which no renderer produces.
UNREACHABLE = {"Carbon removal update"}

# More currencies than a card lists (zero- and three-decimal ones among them), each with a price,
# so "and N more currencies" shows.
CURRENCIES = sorted(
    code.lower()
    for code in (*STRIPE_ZERO_DECIMAL, *STRIPE_THREE_DECIMAL, "USD", "EUR", "GBP", "CHF")
)
NEW_PRICES = {
    code: {"amount_fees": 0, "amount_subtotal": 0, "amount_total": 50_000 + index}
    for index, code in enumerate(CURRENCIES)
}
OLD_PRICES = {
    "chf": {"amount_fees": 0, "amount_subtotal": 0, "amount_total": 40_000},  # changed
    "eur": NEW_PRICES["eur"],  # unchanged
    "bhd": {"amount_fees": 0, "amount_subtotal": 0, "amount_total": 0},  # from 0: n/a
    "aud": {"amount_fees": 0, "amount_subtotal": 0, "amount_total": 1234},  # withdrawn
}

PATHWAYS = [
    "biomass_carbon_removal_and_storage",
    "direct_air_capture",
    "enhanced_weathering",
    "marine_carbon_removal",
    None,
    "ocean_alkalinity_enhancement",
]
LOCATION = {"city": "Reykjavík", "country": "IS", "region": None}


def suppliers(count: int) -> list[dict[str, Any]]:
    """Suppliers with every removal pathway, one with several locations, one without a name."""
    made = [
        make_supplier(name=f"Supplier {index}", removal_pathway=PATHWAYS[index % len(PATHWAYS)])
        for index in range(count)
    ]
    made[0]["locations"] = [LOCATION, LOCATION, LOCATION]
    made[1].update(name=None, id=None, locations=[])
    return made


def deliveries(count: int) -> list[dict[str, Any]]:
    """Delivery details with a linkable registry entry, an unlinkable one and none at all, with
    and without a location."""
    urls = ["https://registry.example/entry/1", "javascript:alert(1)", None]
    return [
        {
            "delivered_at": DELAYED_AT,
            "location": LOCATION if index % 2 else None,
            "metric_tons": "0.5",
            "registry_url": urls[index % len(urls)],
            "supplier": make_supplier(name=f"Supplier {index}"),
        }
        for index in range(count)
    ]


SUBSTITUTION = Change(
    kind="product_substituted",
    at=DELAYED_AT,
    old_product=make_product(name="Old portfolio", suppliers=suppliers(5)),
    new_product={"id": "climsku_new"},
)
UNKNOWN_SUBSTITUTION = Change(kind="product_substituted", at=DELAYED_AT)
YEARLESS_DELAY = Change(kind="delayed", at=DELAYED_AT)


def order_for(event: str, **changes: Any) -> dict[str, Any]:
    """An order whose status and details fit `event`."""
    if event == "climate.order.delivered":
        changes = {
            "status": "delivered",
            "certificate": "https://frontier.example/cert/1",
            "delivered_at": DELAYED_AT,
            "delivery_details": deliveries(25),
            **changes,
        }
    elif event == "climate.order.canceled":
        changes = {
            "status": "canceled",
            "cancellation_reason": "requested",
            "canceled_at": DELAYED_AT,
            **changes,
        }
    return make_order(**changes)


def order_cards() -> Iterator[tuple[str, Callable[[], Message]]]:
    """Every headline event, with and without a change, before and after the deadline."""
    product = make_product(suppliers=suppliers(18))
    for event in (*ORDER_EVENTS, "climate.order.from_the_future"):
        for name, change in (("no change", None), ("delay", delay()), ("swap", SUBSTITUTION)):
            for when, now in (("before", DEADLINE - 1), ("after", DEADLINE)):
                state = OrderState(order_for(event), product, event, change, "acct_1")
                yield f"card {event} {name} {when}", lambda s=state, n=now: order_card(s, n)
    odd_orders = {
        "statuses": [
            make_order(status=status)
            for status in ("open", "awaiting_funds", "confirmed", "delivered", "canceled")
        ],
        "unknown status": [make_order(status=None), make_order(status="on_hold")],
        "reasons": [
            order_for("climate.order.canceled", cancellation_reason=reason)
            for reason in ("expired", "product_unavailable", "something_new", None)
        ],
        "odd values": [
            make_order(
                id=None,
                beneficiary=None,
                amount_total=None,
                amount_fees=10**50,
                expected_delivery_year=2001,
            ),
            make_order(livemode=True, expected_delivery_year=None),
        ],
        "dates": [
            make_order(confirmed_at=DELAYED_AT),  # confirmed after it was placed
            make_order(status="open", confirmed_at=None),
        ],
    }
    for name, orders in odd_orders.items():
        for index, order in enumerate(orders):
            for change in (YEARLESS_DELAY, delay(old_year=None), UNKNOWN_SUBSTITUTION):
                state = OrderState(order, None, "climate.order.delayed", change)
                yield f"card {name} {index} {change}", lambda s=state: order_card(s, DELAYED_AT)


def order_replies() -> Iterator[tuple[str, Callable[[], Message]]]:
    """Every order event, with and without the change it carries, on time and late."""
    for event in (*ORDER_EVENTS, "climate.order.from_the_future"):
        for name, change in (("no change", None), ("delay", delay()), ("swap", SUBSTITUTION)):
            for late in (False, True):
                update = OrderUpdate(event, DELAYED_AT, order_for(event), None, change, late)
                yield f"reply {event} {name} late={late}", lambda u=update: order_reply(u)
    update = OrderUpdate(
        "climate.order.delayed", DELAYED_AT, make_order(expected_delivery_year=None)
    )
    yield "reply delay without a year", lambda: order_reply(update)


def product_cards() -> Iterator[tuple[str, Callable[[], Message]]]:
    products = {
        "full": make_product(suppliers=suppliers(18), current_prices_per_metric_ton=NEW_PRICES),
        "spot": make_product(delivery_year=2020, livemode=True),
        "no year, no prices": make_product(delivery_year=None, current_prices_per_metric_ton={}),
    }
    for name, product in products.items():
        for event in ("climate.product.created", "climate.product.pricing_updated", "x"):
            state = model.ProductState(product, event, "acct_1")
            yield f"product card {name} {event}", lambda s=state: product_card(s, DELAYED_AT)
            # After a price change whose earlier prices are known: old → new on the card.
            state = model.ProductState(product, event, "acct_1", OLD_PRICES)
            yield (
                f"product card {name} {event} with old prices",
                lambda s=state: product_card(s, DELAYED_AT),
            )


def product_replies() -> Iterator[tuple[str, Callable[[], Message]]]:
    product = make_product(current_prices_per_metric_ton=NEW_PRICES)
    unpriced = make_product(current_prices_per_metric_ton={})
    cases = {
        "price change": ("climate.product.pricing_updated", product, OLD_PRICES),
        "new prices": ("climate.product.pricing_updated", product, None),
        "no prices": ("climate.product.pricing_updated", unpriced, None),
        "listed": ("climate.product.created", product, None),
        "unknown": ("climate.product.from_the_future", product, None),
    }
    for name, (event, the_product, old_prices) in cases.items():
        for late in (False, True):
            update = model.ProductUpdate(event, DELAYED_AT, the_product, old_prices, late)
            yield f"product reply {name} late={late}", lambda u=update: product_reply(u)


def decisions() -> Iterator[tuple[str, Callable[[], Message]]]:
    """Cards and thread notices once the team decided, and reminders before the deadline."""
    product = make_product(suppliers=suppliers(3))
    made = {
        "accepted": Decision("accepted", "U0ALICE", DELAYED_AT + 60),
        "cancelling": Decision("cancelling", "U0ALICE", DELAYED_AT + 60),
        "cancelling with a reason": Decision(
            "cancelling", "U0ALICE", DELAYED_AT + 60, reason="<!channel> *too late*"
        ),
        **{
            f"cancelled {rule}": Decision(
                "cancelled",
                "U0BOB",
                DELAYED_AT + 60,
                refund=ExpectedRefund(
                    None if rule in ("not_confirmed", "unknown") else 10300, rule
                ),
                reason="Budget moved",
            )
            for rule in ("change_window", "self_service", "frontier", "not_confirmed", "unknown")
        },
        "odd user": Decision("accepted", "<!channel>", DELAYED_AT + 60),
    }
    for name, decision in made.items():
        for label, change in (("delay", delay()), ("swap", SUBSTITUTION)):
            status = "canceled" if decision.kind == "cancelled" else "confirmed"
            order = order_for("climate.order.canceled" if status == "canceled" else "x")
            state = OrderState(order, product, "climate.order.delayed", change, None, decision)
            yield f"decided card {name} {label}", lambda s=state: order_card(s, DELAYED_AT)
            notice = Notice("decision", order, change, decision)
            yield f"decision notice {name} {label}", lambda n=notice: order_notice(n)
    for days in (1, 7):
        for mentions in ((), ("U0ALICE", "S0DECIDERS", "not-an-id")):
            notice = Notice("reminder", make_order(), delay(), None, days, mentions)
            yield f"reminder {days} {mentions}", lambda n=notice: order_notice(n)
    yield "notice without a change", lambda: order_notice(Notice("decision", make_order()))
    deciders = ("U0ALICE", "S0DECIDERS")
    for kind in ("closed", "decision_needed"):
        for label, change in (("delay", delay()), ("swap", SUBSTITUTION)):
            for mentions in ((), deciders):
                notice = Notice(kind, make_order(), change, None, None, mentions)
                yield f"{kind} {label} {mentions}", lambda n=notice: order_notice(n)
    waiting = OrderState(
        make_order(),
        product,
        "climate.order.delayed",
        delay(),
        None,
        made["cancelling"],
        next_change=delay(old_year=2028, new_year=2029),
    )
    yield "cancel under way, another change waiting", lambda: order_card(waiting, DELAYED_AT)
    for label, change in (("delay", delay()), ("swap", SUBSTITUTION), ("none", None)):
        state = OrderState(make_order(), product, "climate.order.delayed", change)
        for days in (None, 1, 2):
            yield (
                f"direct message {label} {days}",
                lambda s=state, d=days: decision_direct_message(
                    s, "https://x.example/card", days_left=d
                ),
            )
        if change is not None:
            yield (
                f"cancel dialog {label}",
                lambda s=state: view_message(cancel_modal(s, DELAYED_AT + 60, "{}")),
            )
    for fields in ({"status": "open"}, {"status": "confirmed"}):
        state = OrderState(make_order(**fields), product, "climate.order.created", None)
        yield f"cancel dialog {fields}", lambda s=state: view_message(cancel_modal(s, 0, "{}"))
    yield "notice dialog", lambda: view_message(notice_view("Not cancelled", "Why"))
    for reason in ("requested", "expired", "product_unavailable", "something_new", None):
        cancelled = order_for("climate.order.canceled", cancellation_reason=reason)
        for decision in (None, made["cancelled change_window"]):
            state = OrderState(
                cancelled, product, "climate.order.canceled", delay(), None, decision
            )
            yield (
                f"cancelled card {reason} {decision is not None}",
                lambda s=state: order_card(s, DELAYED_AT),
            )
    audit = [
        {
            "at": DELAYED_AT,
            "slack_user": "U0ALICE",
            "outcome": "cancelled",
            "error": None,
            "detail": {"refund": 10300, "refund_rule": "change_window", "reason": "<!here> x"},
        }
    ]
    yield (
        "history with a reason and a refund rule",
        lambda: history_answer("climorder_1", [], audit, make_order()),
    )
    update = OrderUpdate(
        "climate.order.canceled", DELAYED_AT, order_for("climate.order.canceled"), None, None
    )
    yield (
        "cancellation confirmed by Stripe",
        lambda: order_reply(replace(update, cancelled_by="U0ALICE")),
    )
    yield (
        "delay broadcast with deciders",
        lambda: order_reply(
            OrderUpdate(
                "climate.order.delayed",
                DELAYED_AT,
                order_for("climate.order.delayed"),
                None,
                delay(),
                broadcast=True,
                mentions=deciders,
            )
        ),
    )


def view_message(view: dict[str, Any]) -> Message:
    """A modal as a message, so the same checks apply (its text: its title)."""
    blocks = [b for b in view["blocks"] if b["type"] != "input"]
    inputs = [b for b in view["blocks"] if b["type"] == "input"]
    words = [view["title"]["text"], *(b["label"]["text"] for b in inputs)]
    words += [b["hint"]["text"] for b in inputs if "hint" in b]
    for key in ("submit", "close"):
        if key in view:
            words.append(view[key]["text"])
    return Message(
        " · ".join(words),
        [*blocks, {"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(words)}]}],
    )


def record_answers() -> Iterator[tuple[str, Callable[[], Message]]]:
    """`/climate history` and `/climate pending`, empty, typical and overflowing."""
    events = [
        {"type": event, "created": DELAYED_AT + i, "late": i % 2}
        for i, event in enumerate((*ORDER_EVENTS, "climate.order.from_the_future"))
    ]
    outcomes = [*answers._AUDIT_OUTCOMES, "something_new"]
    audit = [
        {"at": DELAYED_AT + i, "slack_user": "U0ALICE", "outcome": outcome, "error": "boom"}
        for i, outcome in enumerate(outcomes)
    ] + [{"at": DELAYED_AT, "slack_user": "<!here>", "outcome": "accepted", "error": None}]
    yield "history", lambda: history_answer("climorder_1", events, audit)
    yield "long history", lambda: history_answer("climorder_1", events * 20, audit * 20)
    yield "empty history", lambda: history_answer("climorder_1", [], [])
    # What Stripe and Slack answered, as people are shown it: quoted, or an HTML page named.
    page = "Received a response in a non-JSON format: <html><title>502 Bad Gateway</title>"
    failures = [
        {"at": DELAYED_AT, "slack_user": "U0ALICE", "outcome": "failed", "error": error}
        for error in (page, " ", "Orders can only be canceled within 30 days.")
    ]
    yield "history of failures", lambda: history_answer("climorder_1", [], failures)
    yield (
        "error texts",
        lambda: Message(
            " · ".join(
                formatting.quoted_error(text, http_status=status)
                for text, status in ((page, 502), (page, None), ("", None), ("boom", 500))
            )
        ),
    )
    rows = [
        {"id": f"climorder_{i}", "decision_deadline": DEADLINE + i, "change": change}
        for i, change in enumerate([{"kind": "delayed"}, {"kind": "product_substituted"}] * 30)
    ]
    yield "pending", lambda: pending_answer(rows[:2])
    yield "one pending", lambda: pending_answer(rows[:1])
    yield "many pending", lambda: pending_answer(rows)
    yield "nothing pending", lambda: pending_answer([])
    yield (
        "pending with links",
        lambda: pending_answer(rows[:3], {"climorder_1": "https://x.example/a"}),
    )
    state = OrderState(
        order_for("climate.order.delivered"), make_product(), "climate.order.delivered"
    )
    yield (
        "status fresh",
        lambda: status_answer(state, DELAYED_AT, as_of=None, card_link="https://x.example/c"),
    )
    yield "status stale", lambda: status_answer(state, DELAYED_AT, as_of=DELAYED_AT, card_link=None)
    listed = [
        {
            "id": f"climorder_{i}",
            "status": "confirmed",
            "created": DELAYED_AT,
            "snapshot": make_order(),
        }
        for i in range(3)
    ]
    for name in (None, *ORDER_FILTERS):
        yield (
            f"orders {name}",
            lambda n=name: orders_page(
                listed,
                filter_name=n,
                next_cursor="x|1|climorder_1",
                links={"climorder_0": "https://x.example/o"},
            ),
        )
        yield f"no orders {name}", lambda n=name: orders_page([], filter_name=n, next_cursor=None)
    yield "one order", lambda: orders_page(listed[:1], filter_name=None, next_cursor=None)
    many = [make_product(current_prices_per_metric_ton=NEW_PRICES)] * 25
    yield "products", lambda: products_answer(many, as_of=None, now=DELAYED_AT)
    yield "one product", lambda: products_answer(many[:1], as_of=DELAYED_AT, now=DELAYED_AT)
    yield "no products", lambda: products_answer([], as_of=None, now=DELAYED_AT)
    home_events = [
        {"type": t, "object_id": "climorder_1", "received_at": DELAYED_AT, "created": DELAYED_AT}
        for t in (*ORDER_EVENTS, "climate.product.created", "climate.product.pricing_updated", "x")
    ]
    for failed in (0, 1, 3):
        for last in (None, DELAYED_AT):
            yield (
                f"home {failed} {last}",
                lambda f=failed, t=last: home_message(
                    home_view(rows[:2], home_events, last_event_at=t, failed_deliveries=f)
                ),
            )
    yield (
        "empty home",
        lambda: home_message(home_view([], [], last_event_at=None, failed_deliveries=0)),
    )


def channel_notices() -> Iterator[tuple[str, Callable[[], Message]]]:
    """The bot's own messages to the channel: Stripe events that may be missing."""
    yield (
        "events gap",
        lambda: events_gap_notice(DELAYED_AT - 40 * 86_400, DELAYED_AT - 30 * 86_400),
    )
    yield (
        "events gap of an account",
        lambda: events_gap_notice(DELAYED_AT - 40 * 86_400, DELAYED_AT, "acct_1*<!channel>*"),
    )


def home_message(view: dict[str, Any]) -> Message:
    """The Home view as a message, so the same checks apply (its text: the blocks' words)."""
    return Message(json.dumps(view["blocks"], ensure_ascii=False)[:3000], view["blocks"])


RENDERS = dict(
    [
        *order_cards(),
        *order_replies(),
        *product_cards(),
        *product_replies(),
        *decisions(),
        *record_answers(),
        *channel_notices(),
    ]
)


def render_all(locale: str) -> dict[str, Message]:
    """Render every case in `locale`, each one within Slack's limits."""
    with use_locale(locale):
        rendered = {name: render() for name, render in RENDERS.items()}
    for name, message in rendered.items():
        assert limit_problems(message) == [], name
    return rendered


@cache
def english_fragments() -> tuple[str, ...]:
    """The English text of every catalog entry longer than three words, cut at placeholders into
    the literal runs of at least two words that a Japanese render must never contain."""
    with open(LOCALES_DIR / "messages.pot", "rb") as fp:
        template = read_po(fp)
    fragments = set()
    for message in template:
        for msgid in message.id if message.pluralizable else (message.id,):
            if len(msgid.split()) <= 3:
                continue
            for run in re.split(r"\{\w+\}", msgid):
                if len(re.findall(r"[A-Za-z]+", run)) >= 2:
                    fragments.add(run.strip())
    return tuple(sorted(fragments))


def renderer_msgids() -> set[str]:
    """Every string `bot.cards` and `bot.formatting` mark for translation (singular forms)."""
    found = set()
    for path in (*sorted(Path(cards.__file__).parent.glob("*.py")), Path(formatting.__file__)):
        for _line, msgid, _comments, _context in extract_from_file(
            "python", path, keywords=KEYWORDS
        ):
            found.add(msgid[0] if isinstance(msgid, tuple) else msgid)
    return found


@pytest.mark.parametrize("locale", SUPPORTED_LOCALES)
def test_every_render_finds_every_string_in_the_catalog(locale):
    i18n.missing.clear()
    render_all(locale)
    assert i18n.missing == set()


def test_japanese_renders_do_not_fall_back_to_english():
    english = english_fragments()
    assert "No answer means the delay is accepted." in english  # the check has teeth
    rendered = render_all("ja")
    for name, message in rendered.items():
        japanese = "\n".join(texts(message))
        leaked = [fragment for fragment in english if fragment in japanese]
        assert leaked == [], f"{name}: {leaked}"


def test_japanese_and_english_renders_differ_everywhere():
    english = render_all("en")
    japanese = render_all("ja")
    for name in RENDERS:
        assert english[name].text != japanese[name].text, name


def test_the_renders_reach_every_string_of_the_renderers():
    """Guards the tests above: a string no case renders would go unchecked."""
    with i18n.recording_lookups() as seen:
        render_all("ja")
    assert renderer_msgids() - UNREACHABLE - seen == set()


@pytest.mark.parametrize("locale", SUPPORTED_LOCALES)
def test_every_catalog_entry_is_translated_with_its_placeholders_and_markup(locale):
    with open(LOCALES_DIR / locale / "LC_MESSAGES" / "messages.po", "rb") as fp:
        catalog = read_po(fp, locale=locale)
    for message in catalog:
        if not message.id:
            continue
        msgid = message.id[0] if message.pluralizable else message.id
        strings = message.string if message.pluralizable else (message.string,)
        assert "fuzzy" not in message.flags, msgid
        for string in strings:
            assert string, f"{locale}: no translation for {msgid!r}"
            assert sorted(re.findall(r"\{\w*\}", string)) == sorted(
                re.findall(r"\{\w*\}", msgid)
            ), msgid
            for markup in ("*", "`", "<", ">"):
                assert string.count(markup) == msgid.count(markup), (msgid, markup)
