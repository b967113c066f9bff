"""Whatever Stripe sends, every message stays within Slack's limits and no Stripe text can ping,
mention, link, style or quote, in every language: property tests over schema-shaped but hostile
orders and products, each rendered in English and in Japanese."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot import i18n
from bot.cards import (
    ORDER_FILTERS,
    ORDERS_PER_PAGE,
    blocks,
    cancel_modal,
    decision_direct_message,
    limit_problems,
    limits,
    order_card,
    order_notice,
    order_reply,
    orders_page,
    pending_answer,
    product_card,
    product_reply,
)
from bot.formatting import (
    escape_mrkdwn,
    format_money,
    format_tonnes,
    minor_unit_exponent,
    single_line,
    truncate,
)
from bot.i18n import use_locale
from bot.model import (
    DECISION_WINDOW_SECONDS,
    ORDER_EVENTS,
    PRODUCT_EVENTS,
    Change,
    Decision,
    ExpectedRefund,
    Message,
    Notice,
    OrderState,
    OrderUpdate,
    ProductState,
    ProductUpdate,
)
from tests.support.cards import texts

PROPERTY_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example],
)

HOSTILE_FRAGMENTS = [
    "<!channel>",
    "<!here|here>",
    "<@U123ABC>",
    "<#C123>",
    "<https://evil.example|click>",
    "<http://evil.example>",
    "&amp;",
    "&lt;",
    "&",
    "<",
    ">",
    "|",
    "*",
    "`",
    "_",
    "~",
    "*bold*",
    "_italic_",
    "~struck~",
    "`code`",
    "```block```",
    ">",
    "> quote",
    "snake_case_name",
    # Style characters next to a letter no template of ours contains: a style character of ours is
    # never next to it, so one found there came from Stripe (STRIPE_STYLE).
    "Ж*",
    "*Ж",
    "Ж_",
    "_Ж",
    "Ж~",
    "~Ж",
    "Ж`",
    "`Ж",
    "\n",
    "\u202e",
    "💥",
    "é",
]

fragment = st.one_of(st.sampled_from(HOSTILE_FRAGMENTS), st.text(max_size=12))
# Mostly short text full of Slack control characters, sometimes up to 10,000 characters long.
hostile_text = st.one_of(
    st.lists(fragment, max_size=6).map("".join),
    st.tuples(fragment, st.integers(0, 10_000)).map(lambda pair: (pair[0] * pair[1])[:10_000]),
)
maybe_text = st.one_of(st.none(), hostile_text)
urls = st.one_of(
    st.none(),
    hostile_text,
    st.sampled_from(
        [
            "https://registry.example/entry?a=1&b=2",
            "http://x",
            "https://x.example/<!channel>",
            "https://x.example|click",
            "javascript:alert(1)",
            "HTTPS://LOUD.EXAMPLE/",
        ]
    ),
    hostile_text.map(lambda text: "https://x.example/" + text),
)
unix_time = st.integers(0, 2**33)
amount = st.integers(-(10**6), 10**18)
currency = st.one_of(
    st.sampled_from(["usd", "jpy", "bhd", "eur", "gbp", "chf", "kwd", "isk", "currency"]),
    hostile_text,
)
decimal_string = st.one_of(
    st.sampled_from(["0.01", "1000000", "1E+3", "metric_tons", "NaN", "-0", "1e999999"]),
    st.decimals(allow_nan=False, allow_infinity=False).map(str),
    hostile_text,
)
pathway = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "biomass_carbon_removal_and_storage",
            "direct_air_capture",
            "enhanced_weathering",
            "marine_carbon_removal",
        ]
    ),
    hostile_text,
)
location = st.fixed_dictionaries(
    {"country": hostile_text},
    optional={
        "city": maybe_text,
        "region": maybe_text,
        "latitude": st.one_of(st.none(), st.floats()),
        "longitude": st.one_of(st.none(), st.floats()),
    },
)
supplier = st.fixed_dictionaries(
    {
        "id": hostile_text,
        "object": st.just("climate.supplier"),
        "livemode": st.booleans(),
        "name": hostile_text,
        "info_url": urls,
        "removal_pathway": pathway,
        "locations": st.lists(location, max_size=3),
    },
    optional={"extra_field_from_a_new_api_version": hostile_text},
)


def many(elements: st.SearchStrategy[Any], most: int) -> st.SearchStrategy[list[Any]]:
    """Lists of 0..most items, built by repeating a few generated ones so huge lists stay cheap."""
    return st.tuples(st.lists(elements, min_size=1, max_size=3), st.integers(0, most)).map(
        lambda pair: (pair[0] * (pair[1] // len(pair[0]) + 1))[: pair[1]]
    )


price = st.fixed_dictionaries(
    {"amount_fees": amount, "amount_subtotal": amount, "amount_total": amount}
)
prices = st.dictionaries(currency, price, max_size=40)
product = st.fixed_dictionaries(
    {
        "id": hostile_text,
        "object": st.just("climate.product"),
        "livemode": st.booleans(),
        "created": unix_time,
        "name": hostile_text,
        "current_prices_per_metric_ton": prices,
        "delivery_year": st.one_of(st.none(), st.integers(1900, 3000)),
        "metric_tons_available": decimal_string,
        "suppliers": many(supplier, 300),
    }
)
product_ref = st.one_of(
    st.none(), st.fixed_dictionaries({"id": hostile_text}), product, st.just({"id": None})
)
delivery = st.fixed_dictionaries(
    {
        "delivered_at": unix_time,
        "location": st.one_of(st.none(), location),
        "metric_tons": decimal_string,
        "registry_url": urls,
        "supplier": supplier,
    }
)
order = st.fixed_dictionaries(
    {
        "id": st.one_of(st.just("climorder_1Pgc73B7WZ01zgkWaebIwEZ7"), hostile_text),
        "object": st.just("climate.order"),
        "amount_fees": amount,
        "amount_subtotal": amount,
        "amount_total": amount,
        "canceled_at": st.one_of(st.none(), unix_time),
        "cancellation_reason": st.one_of(
            st.none(),
            st.sampled_from(["expired", "product_unavailable", "requested"]),
            hostile_text,
        ),
        "certificate": urls,
        "confirmed_at": st.one_of(st.none(), unix_time),
        "created": unix_time,
        "currency": currency,
        "delayed_at": st.one_of(st.none(), unix_time),
        "delivered_at": st.one_of(st.none(), unix_time),
        "delivery_details": many(delivery, 600),
        "expected_delivery_year": st.integers(1900, 3000),
        "livemode": st.booleans(),
        "metadata": st.dictionaries(hostile_text, hostile_text, max_size=2),
        "metric_tons": decimal_string,
        "product": st.one_of(hostile_text, product),
        "product_substituted_at": st.one_of(st.none(), unix_time),
        "status": st.one_of(
            st.sampled_from(["open", "awaiting_funds", "confirmed", "delivered", "canceled"]),
            hostile_text,
        ),
    },
    optional={
        "beneficiary": st.one_of(
            st.none(), st.fixed_dictionaries({}, optional={"public_name": maybe_text})
        )
    },
)
change = st.builds(
    Change,
    kind=st.sampled_from(["delayed", "product_substituted"]),
    at=unix_time,
    old_year=st.one_of(st.none(), st.integers(1900, 3000)),
    new_year=st.one_of(st.none(), st.integers(1900, 3000)),
    old_product=product_ref,
    new_product=product_ref,
)
order_event = st.one_of(st.sampled_from(ORDER_EVENTS), hostile_text)
slack_user = st.one_of(st.sampled_from(["U0ALICE", "W0GRID", "S0GROUP"]), hostile_text)
refund_rule = st.sampled_from(
    ["change_window", "self_service", "frontier", "not_confirmed", "unknown"]
)
decision = st.builds(
    Decision,
    kind=st.sampled_from(["accepted", "cancelling", "cancelled"]),
    by=slack_user,
    at=unix_time,
    refund=st.one_of(
        st.none(), st.builds(ExpectedRefund, st.one_of(st.none(), amount), refund_rule)
    ),
    reason=st.one_of(st.none(), hostile_text, st.text(min_size=4000, max_size=6000)),
)
# Japanese text is often longer in characters per idea than English is in bytes, and uses other
# punctuation: every renderer is checked in both shipped languages.
locales = st.sampled_from(["en", "ja"])
product_event = st.one_of(st.sampled_from(PRODUCT_EVENTS), hostile_text)
account = st.one_of(st.none(), st.just("acct_1Connected"), hostile_text)


@st.composite
def order_states(draw: st.DrawFn) -> tuple[OrderState, int]:
    """An order state and a moment: often just before or just after the decision deadline."""
    the_change = draw(st.one_of(st.none(), change))
    state = OrderState(
        order=draw(order),
        product=draw(st.one_of(st.none(), product)),
        headline_event=draw(order_event),
        change=the_change,
        account=draw(account),
        decision=draw(st.one_of(st.none(), decision)),
        next_change=draw(st.one_of(st.none(), change)),
    )
    if the_change is not None and draw(st.booleans()):
        now = the_change.at + DECISION_WINDOW_SECONDS + draw(st.integers(-2, 1))
    else:
        now = draw(unix_time)
    return state, now


# Our own markup, the only "<…>" allowed in mrkdwn: a date, or a link to a plain http(s) URL
# whose label cannot end the link early.
OWN_MARKUP = re.compile(
    r"<!date\^\d+\^[^|<>]*\|[^|<>]*>|<https?://[^\s<>|]+\|[^<>|]*>"
    r"|<@[UW][A-Z0-9]+>|<!subteam\^S[A-Z0-9]+>",  # mentions of validated user and group ids
    re.IGNORECASE,
)


def mrkdwn_texts(message: Message) -> list[str]:
    """The notification text and every mrkdwn text object: everything Slack parses."""
    return texts(message, of_type="mrkdwn")


# What is left of a mrkdwn text once our own markup is taken out: links become their labels (a
# label may be a Stripe name), dates and validated mentions go, and so do our code spans (ids:
# styling is inert inside them).
OWN_LINK = re.compile(r"<https?://[^\s<>|]+\|([^<>|]*)>", re.IGNORECASE)
OWN_TOKENS = re.compile(r"<!date\^\d+\^[^|<>]*\|[^|<>]*>|<@[UW][A-Z0-9]+>|<!subteam\^S[A-Z0-9]+>")
CODE_SPAN = re.compile(r"`[^`\n]*`")
# Slack's style characters where they can open or close a span: every *, ~ and backtick, an
# underscore unless it sits inside an ASCII word, and a quote at the start of a line.
SPAN_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
# An asterisk next to Ж is ours only where a bold span of ours opens or closes around a Stripe
# string that begins or ends with it (`*Ж… → …*`): after a space or at a line's start, before a
# space, punctuation or the line's end.
STRIPE_STYLE = re.compile(r"[_~`]Ж|Ж[_~`]|(?<=\S)\*Ж|Ж\*(?=[^\s.,:;!?)])")
DATE_FALLBACK = re.compile(r"<!date\^\d+\^[^|<>]*\|([^|<>]*)>")


def assert_no_stripe_style(text: str) -> None:
    """No Stripe string can open or close a mrkdwn style span, or quote a line: once our own
    markup is out, no ~, backtick or span-capable underscore is left (our templates write none),
    no line starts a quote, and the asterisks left are our bold spans, paired on each line."""
    left = CODE_SPAN.sub("", OWN_TOKENS.sub("", OWN_LINK.sub(r"\1", text)))
    assert "~" not in left and "`" not in left, text
    assert not SPAN_UNDERSCORE.search(left), text
    assert not STRIPE_STYLE.search(left), text
    for line in left.split("\n"):
        assert line.count("*") % 2 == 0, text
        assert not line.startswith(("&gt;", ">")), text


def assert_safe_and_within_limits(message: Message) -> None:
    assert limit_problems(message) == []
    assert i18n.missing == set(), "a string the renderer used is missing from a catalog"
    assert message.text.strip()
    assert len(message.text) <= 3000
    for text in mrkdwn_texts(message):
        leftover = OWN_MARKUP.sub("", text)
        assert "<" not in leftover, text
        assert ">" not in leftover, text
        for match in re.finditer("&", leftover):
            assert leftover.startswith(("&amp;", "&lt;", "&gt;"), match.start()), text
        assert_no_stripe_style(text)
        # A date token's fallback, shown where Slack cannot render the date, names its zone.
        for fallback in DATE_FALLBACK.findall(text):
            assert fallback.endswith(" UTC"), text


def marker_of_test_mode(locale: str) -> str:
    """How a test-mode notification text begins in `locale`."""
    with use_locale(locale):
        return i18n._("[TEST] {text}").format(text="")


def render(locale: str, renderer: Any, *args: Any, **kwargs: Any) -> Message:
    """Render in ``locale``, starting from an empty record of missing translations."""
    i18n.missing.clear()
    with use_locale(locale):
        return renderer(*args, **kwargs)


@PROPERTY_SETTINGS
@given(order_states(), locales)
def test_order_card_is_safe_and_within_limits(state_and_now, locale):
    state, now = state_and_now
    assert_safe_and_within_limits(render(locale, order_card, state, now))


@PROPERTY_SETTINGS
@given(order_states(), locales)
def test_order_card_offers_buttons_only_inside_an_open_window(state_and_now, locale):
    state, now = state_and_now
    message = render(locale, order_card, state, now)
    has_buttons = any(block["type"] == "actions" for block in message.blocks)
    if has_buttons:
        assert state.change is not None
        assert now < state.change.decision_deadline
        assert state.order.get("status") not in ("delivered", "canceled")


@PROPERTY_SETTINGS
@given(
    event=order_event,
    created=unix_time,
    the_order=order,
    the_product=st.one_of(st.none(), product),
    the_change=st.one_of(st.none(), change),
    late=st.booleans(),
    locale=locales,
)
def test_order_reply_is_safe_and_within_limits(
    event, created, the_order, the_product, the_change, late, locale
):
    update = OrderUpdate(
        event_type=event,
        event_created=created,
        order=the_order,
        product=the_product,
        change=the_change,
        late=late,
    )
    message = render(locale, order_reply, update)
    assert_safe_and_within_limits(message)
    if the_order["livemode"] is not True:
        assert message.text.startswith(marker_of_test_mode(locale)), message.text


@PROPERTY_SETTINGS
@given(
    the_product=product,
    event=st.one_of(st.just("climate.product.pricing_updated"), product_event),
    the_account=account,
    old_prices=st.one_of(st.none(), prices),
    now=st.one_of(st.none(), unix_time),
    locale=locales,
)
def test_product_card_is_safe_and_within_limits(
    the_product, event, the_account, old_prices, now, locale
):
    state = ProductState(
        product=the_product, headline_event=event, account=the_account, old_prices=old_prices
    )
    assert_safe_and_within_limits(render(locale, product_card, state, now=now))


@PROPERTY_SETTINGS
@given(
    event=product_event,
    created=unix_time,
    the_product=product,
    old_prices=st.one_of(st.none(), prices),
    late=st.booleans(),
    locale=locales,
)
def test_product_reply_is_safe_and_within_limits(
    event, created, the_product, old_prices, late, locale
):
    update = ProductUpdate(
        event_type=event,
        event_created=created,
        product=the_product,
        old_prices=old_prices,
        late=late,
    )
    message = render(locale, product_reply, update)
    assert_safe_and_within_limits(message)
    if the_product["livemode"] is not True:
        assert message.text.startswith(marker_of_test_mode(locale)), message.text


# Rows as storage returns them (the snapshot decoded), and card links: short and real-looking,
# or as long as a link may be.
card_links = st.one_of(
    st.none(),
    st.just("https://acme.slack.com/archives/C0CLIMATE/p1797000000000100"),
    st.integers(1, 480).map(lambda n: "https://acme.slack.com/archives/" + "C" * n),
)


@st.composite
def stored_orders(draw: st.DrawFn, most: int) -> tuple[list[dict[str, Any]], dict[str, str]]:
    rows, links = [], {}
    for the_order in draw(many(order, most)):
        the_id = draw(st.one_of(st.just(the_order["id"]), hostile_text))
        rows.append(
            {
                "id": the_id,
                "status": draw(st.one_of(st.just(the_order["status"]), hostile_text)),
                "created": draw(unix_time),
                "decision_deadline": draw(unix_time),
                "change": {"kind": draw(st.sampled_from(["delayed", "product_substituted"]))},
                "snapshot": the_order,
            }
        )
        link = draw(card_links)
        if link:
            links[the_id] = link
    return rows, links


@PROPERTY_SETTINGS
@given(stored=stored_orders(60), extra=st.integers(0, 10_000), locale=locales)
def test_pending_list_is_safe_and_within_limits(stored, extra, locale):
    rows, links = stored
    message = render(locale, pending_answer, rows, links, len(rows) + extra)
    assert_safe_and_within_limits(message)


@PROPERTY_SETTINGS
@given(
    stored=stored_orders(ORDERS_PER_PAGE),
    filter_name=st.one_of(st.none(), st.sampled_from(ORDER_FILTERS)),
    cursor=st.one_of(st.none(), hostile_text),
    locale=locales,
)
def test_orders_page_is_safe_and_within_limits(stored, filter_name, cursor, locale):
    rows, links = stored
    message = render(
        locale, orders_page, rows, filter_name=filter_name, next_cursor=cursor, links=links
    )
    assert_safe_and_within_limits(message)
    # One line per order, none left out: the Next button's page starts after the last one.
    sections = [b["text"]["text"] for b in message.blocks if b["type"] == "section"]
    assert sum(text.count("\n") + 1 for text in sections) == 1 + len(rows) if rows else 1


@settings(max_examples=200, deadline=None)
@given(text=hostile_text, limit=st.integers(0, 200))
def test_truncated_escaped_text_is_short_and_keeps_entities_whole(text, limit):
    cut = truncate(escape_mrkdwn(text), limit)
    assert len(cut) <= limit
    assert "<" not in cut and ">" not in cut
    for match in re.finditer("&", cut):
        assert cut.startswith(("&amp;", "&lt;", "&gt;"), match.start())


LOOKALIKES = {"*": "\u2217", "_": "\u02cd", "~": "\u223c", "`": "\u02cb", ">": "\u02c3"}


@settings(max_examples=300, deadline=None)
@given(text=hostile_text, limit=st.integers(0, 200))
def test_no_stripe_string_can_open_or_close_a_style_span(text, limit):
    """Each Stripe string as a card shows it reads as sent (each style character becomes its
    look-alike, nothing else changes) and can neither open nor close a style span nor quote."""
    shown = blocks._text(text, limit)
    assert "*" not in shown and "~" not in shown and "`" not in shown
    assert not SPAN_UNDERSCORE.search(shown)
    assert not shown.startswith(("&gt;", ">"))
    # Faithful: character for character the escaped text, but for look-alikes of style ones.
    sent = single_line(text)
    escaped = sent[:1] + escape_mrkdwn(sent[1:]) if sent.startswith(">") else escape_mrkdwn(sent)
    inert = blocks._text(text, 10**6)
    assert len(inert) == len(escaped)
    assert all(a == b or LOOKALIKES.get(b) == a for a, b in zip(inert, escaped, strict=True))
    # An id keeps everything but a backtick, inside one code span of ours.
    code = blocks._code(text)
    if sent:
        expected = truncate(escape_mrkdwn(sent), limits.ID_LIMIT).replace("`", "\u02cb")
        assert code == f"`{expected}`"


@settings(max_examples=200, deadline=None)
@given(
    minor=st.integers(0, 10**15),
    code=st.sampled_from(
        ["usd", "jpy", "bhd", "kwd", "eur", "gbp", "chf", "krw", "isk", "huf", "twd", "ugx"]
    ),
    locale=locales,
)
def test_money_shows_exactly_the_currency_s_decimals(minor, code, locale):
    """Stripe's minor units: JPY/KRW/UGX 0, BHD/KWD 3, and HUF/TWD/ISK 2 (unlike ISO/CLDR),
    whatever the locale would round cash amounts to."""
    shown = format_money(minor, code, locale=locale)
    precision = minor_unit_exponent(code.upper())
    digits = re.search(r"[\d,]+(?:\.(\d+))?", shown)
    assert digits is not None
    assert len(digits.group(1) or "") == precision
    assert Decimal(digits.group(0).replace(",", "")) == Decimal(minor).scaleb(-precision)


@settings(max_examples=200, deadline=None)
@given(
    st.decimals(allow_nan=False, allow_infinity=False, places=6, min_value=0, max_value=10**12),
    locales,
)
def test_tonnes_are_exact(value, locale):
    i18n.missing.clear()
    with use_locale(locale):
        shown = format_tonnes(str(value))
    number, unit = shown.split(" ", 1)
    assert unit  # "t", "トン": the unit comes from the catalog
    assert Decimal(number.replace(",", "")) == value
    assert i18n.missing == set()


@PROPERTY_SETTINGS
@given(
    the_state=order_states(),
    kind=st.sampled_from(["decision", "reminder", "closed", "decision_needed", "odd"]),
    days=st.one_of(st.none(), st.integers(0, 10**6)),
    mentions=st.lists(slack_user, max_size=30),
    locale=locales,
)
def test_notices_are_safe_and_within_limits(the_state, kind, days, mentions, locale):
    state, _now = the_state
    notice = Notice(kind, state.order, state.change, state.decision, days, tuple(mentions))
    message = render(locale, order_notice, notice)
    assert_safe_and_within_limits(message)
    assert "<!here>" not in message.text and "<!channel>" not in message.text
    if state.order["livemode"] is not True:
        assert message.text.startswith(marker_of_test_mode(locale)), message.text


@PROPERTY_SETTINGS
@given(
    the_state=order_states(),
    link=st.one_of(st.none(), urls),
    days=st.one_of(st.none(), st.integers(0, 10**6)),
    locale=locales,
)
def test_direct_messages_are_safe_and_within_limits(the_state, link, days, locale):
    state, _now = the_state
    assert_safe_and_within_limits(
        render(locale, decision_direct_message, state, link, days_left=days)
    )


@PROPERTY_SETTINGS
@given(the_state=order_states(), metadata=st.text(max_size=4000), locale=locales)
def test_the_cancel_dialog_stays_within_slacks_modal_limits(the_state, metadata, locale):
    state, now = the_state
    view = render(locale, cancel_modal, state, now, metadata)
    for key in ("title", "submit", "close"):
        assert 0 < len(view[key]["text"]) <= 24
    assert len(view["private_metadata"]) <= 3000
    blocks = [b for b in view["blocks"] if b["type"] != "input"]
    assert_safe_and_within_limits(Message(text=view["title"]["text"], blocks=blocks))
    [reason] = [b for b in view["blocks"] if b["type"] == "input"]
    assert reason["element"]["max_length"] <= 3000 and reason["optional"] is True


def test_a_cut_never_leaves_one_of_our_code_spans_open():
    # Found by the direct-message property: a notification text cut inside `…` showed the rest
    # of the text as code.
    text = "Order `climorder_1` → `" + "x" * 50 + "` and more"
    cut = truncate(text, 30)
    assert cut == "Order `climorder_1` →…"
    assert cut.count("`") % 2 == 0
