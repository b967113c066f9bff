"""Every `/climate` answer (status, history, pending, orders, products) and the App Home tab.

Each is a message for the person who asked, not the channel: ``commands`` reads storage (or
Stripe) and hands the rows to these.
"""

from __future__ import annotations

from typing import Any

from bot.cards.blocks import (
    _bounded_lines,
    _code,
    _context,
    _dict,
    _header,
    _link,
    _message,
    _money,
    _plain,
    _raw,
    _section,
    _text,
)
from bot.cards.changes import refund_sentence
from bot.cards.limits import (
    ID_LIMIT,
    LIST_BUDGET,
    MAX_BUTTON_TEXT,
    MAX_BUTTON_VALUE,
    MAX_SECTION_TEXT,
    SUPPLIER_BUDGET_SHORT,
)
from bot.cards.orders import _beneficiary, _status_text, order_card
from bot.cards.products import (
    _delivery_year,
    _order_product,
    _price_lines,
    _prices,
    _product_name,
    _suppliers_section,
)
from bot.formatting import (
    escape_mrkdwn,
    format_number,
    format_tonnes,
    neutralise_styles,
    quoted_error,
    slack_date,
    slack_mention,
    truncate,
)
from bot.i18n import N_, _, ngettext
from bot.model import ExpectedRefund, Message, OrderState

_AUDIT_OUTCOMES = {
    "accepted": N_("accepted the change"),
    "cancelled": N_("cancelled the order"),
    "refused": N_("tried to cancel; Stripe refused"),
    "failed": N_("tried to decide; it failed"),
    "not_allowed": N_("clicked, but may not decide"),
    "already_decided": N_("clicked after the decision was made"),
    "already_final": N_("tried to cancel; the order was already final at Stripe"),
    "too_late": N_("clicked after the window closed"),
}
_EVENT_NAMES = {
    "climate.order.created": N_("Order placed"),
    "climate.order.delayed": N_("Delivery delayed"),
    "climate.order.product_substituted": N_("Product substituted"),
    "climate.order.delivered": N_("Delivered"),
    "climate.order.canceled": N_("Cancelled"),
}
HISTORY_SHOWN = 40
PENDING_SHOWN = 40


def history_answer(
    order_id: str,
    events: list[dict[str, Any]],
    audit: list[dict[str, Any]],
    order: dict[str, Any] | None = None,
) -> Message:
    """`/climate history`: the order's events and the decisions about it, in time order, with
    what each decision rested on (the reason given, the refund rule applied); `order` is the
    order's snapshot (its currency)."""
    entries: list[tuple[float, str]] = []
    for event in events:
        name = (
            _(_EVENT_NAMES[event["type"]])
            if event["type"] in _EVENT_NAMES
            else _text(event["type"])
        )
        if event.get("late"):
            name = _("{event} (arrived late)").format(event=name)
        entries.append((event["created"], name))
    for row in audit:
        outcome = row["outcome"]
        what = _(_AUDIT_OUTCOMES[outcome]) if outcome in _AUDIT_OUTCOMES else _text(outcome)
        user = slack_mention(_raw(row.get("slack_user"))) or _("someone")
        line = _("{user} {what}").format(user=user, what=what)
        if row.get("error"):
            # The audit keeps Stripe's or Slack's words in full; a person sees them quoted.
            line = _("{line}: {error}").format(line=line, error=quoted_error(row["error"]))
        detail = _dict(row.get("detail"))
        if detail.get("refund_rule"):
            refund = ExpectedRefund(detail.get("refund"), detail["refund_rule"])
            line = _("{line} — {refund}").format(
                line=line, refund=refund_sentence(refund, _dict(order))
            )
        if isinstance(detail.get("reason"), str) and detail["reason"].strip():
            reason = neutralise_styles(
                truncate(escape_mrkdwn(" ".join(detail["reason"].split())), 200)
            )
            line = _("{line} — reason: “{reason}”").format(line=line, reason=reason)
        entries.append((row["at"], line))
    entries.sort(key=lambda entry: entry[0])
    lines = [
        _("{when} — {what}").format(when=slack_date(int(at), "{date_short} {time}"), what=what)
        for at, what in entries
    ]
    title = _("*History of order {order_id}*").format(order_id=_code(order_id))
    shown = _bounded_lines(
        iter(lines),
        len(lines),
        LIST_BUDGET,
        HISTORY_SHOWN,
        lambda hidden: ngettext(
            "and {count} more entry", "and {count} more entries", hidden
        ).format(count=format_number(hidden)),
    )
    body = (
        "\n".join([title, *shown])
        if lines
        else _("{title}\nNothing recorded yet.").format(title=title)
    )
    text = _("History of order {order_id}").format(order_id=_text(order_id, ID_LIMIT))
    return _message(text, [("history", _section(body))])


# Characters of the whole `/climate pending` list; it is split into sections of whole lines.
PENDING_BUDGET = 7500


def _listed_sections(name: str, lines: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """Whole lines packed into as few sections as Slack's section length allows (a line is
    never cut, so the links in it stay whole); the first is called `name`."""
    sections: list[list[str]] = [[]]
    used = 0
    for line in lines:
        line = truncate(line, MAX_SECTION_TEXT)  # never happens: each line is bounded
        if sections[-1] and used + 1 + len(line) > MAX_SECTION_TEXT:
            sections.append([])
            used = 0
        used += len(line) + (1 if sections[-1] else 0)
        sections[-1].append(line)
    return [
        (name if index == 0 else f"{name}{index}", _section("\n".join(section)))
        for index, section in enumerate(sections)
    ]


def _listed_order(order: Any) -> dict[str, str]:
    """What lets a person recognise an order in a list: beneficiary, tonnes and total."""
    order = _dict(order)
    return {
        "beneficiary": _beneficiary(order),
        "tonnes": format_tonnes(order.get("metric_tons")),
        "total": _money(order.get("amount_total"), order.get("currency")),
    }


def pending_answer(
    rows: list[dict[str, Any]], links: dict[str, str] | None = None, total: int | None = None
) -> Message:
    """`/climate pending`: orders awaiting a decision, soonest deadline first, each with its
    beneficiary, tonnes, total, deadline and card link.

    `rows` are the first ones by deadline, as storage returns them (`snapshot` decoded); `total`
    counts them all (default: `len(rows)`).
    """
    links = links or {}
    total = len(rows) if total is None else max(total, len(rows))
    if not rows:
        return _message(
            _("No order is waiting for a decision."),
            [("pending", _section(_("No order is waiting for a decision.")))],
        )
    lines = []
    for row in rows:
        change = _dict(row.get("change"))
        what = _("delay") if change.get("kind") == "delayed" else _("substitution")
        line = _(
            "{order_id} — {beneficiary} · {tonnes} · {total} — {what}, decide by {deadline}"
        ).format(
            order_id=_code(row["id"]),
            **_listed_order(row.get("snapshot")),
            what=what,
            deadline=slack_date(int(row["decision_deadline"]), "{date_long} {time}"),
        )
        link = _link(links.get(row["id"]), _("card"))
        lines.append(_("{line} · {link}").format(line=line, link=link) if link else line)
    shown = _bounded_lines(
        iter(lines),
        len(lines),
        PENDING_BUDGET,
        PENDING_SHOWN,
        lambda hidden: ngettext("and {count} more order", "and {count} more orders", hidden).format(
            count=format_number(hidden + total - len(rows))
        ),
    )
    if total > len(rows) and len(shown) == len(lines):
        hidden = total - len(rows)
        shown.append(
            ngettext("and {count} more order", "and {count} more orders", hidden).format(
                count=format_number(hidden)
            )
        )
    title = ngettext(
        "*{count} order awaits a decision*", "*{count} orders await a decision*", total
    ).format(count=format_number(total))
    text = ngettext(
        "{count} order awaits a decision.", "{count} orders await a decision.", total
    ).format(count=format_number(total))
    return _message(text, _listed_sections("pending", [title, *shown]))


ORDERS_NEXT_ACTION = "orders_next"
ORDERS_PER_PAGE = 10


def status_answer(
    state: OrderState, now: int, *, as_of: float | None, card_link: str | None
) -> Message:
    """`/climate status`: the order's card without its buttons, and how fresh it is.

    `as_of` is None when the order was just read from Stripe, else the time of the local snapshot
    shown because Stripe could not be asked.
    """
    card = order_card(state, now)
    blocks = [
        (block["block_id"].split(".")[0], {k: v for k, v in block.items() if k != "block_id"})
        for block in card.blocks
        if block["type"] != "actions"
    ]
    # The card names two suppliers; the answer to a question about the order lists them all.
    product, _product_id = _order_product(state.product, _dict(state.order))
    suppliers = _suppliers_section(product, SUPPLIER_BUDGET_SHORT)
    if suppliers is not None:
        blocks.insert(len(blocks) - 1, ("suppliers", suppliers))
    notes = []
    if as_of is None:
        notes.append(_("Fresh from Stripe."))
    else:
        notes.append(
            _("Stripe could not be reached; as of {when}.").format(
                when=slack_date(int(as_of), "{date_short} {time}")
            )
        )
    link = _link(card_link, _("Open the card in the channel"))
    if link:
        notes.append(link)
    blocks.append(("freshness", _context(*notes)))
    return _message(card.text, blocks)


def orders_page(
    rows: list[dict[str, Any]],
    *,
    filter_name: str | None,
    next_cursor: str | None,
    links: dict[str, str] | None = None,
) -> Message:
    """One page of `/climate orders [filter]`, newest first, with a Next button.

    `rows` (at most `ORDERS_PER_PAGE`) come from storage with `snapshot` decoded; each line shows
    the order's beneficiary, status, tonnes, total, date and card link.
    """
    links = links or {}
    if not rows:
        text = (
            _("No {filter} orders.").format(filter=_(_ORDER_FILTERS[filter_name]))
            if filter_name
            else _("No orders yet.")
        )
        return _message(text, [("orders", _section(text))])
    lines = []
    for row in rows:
        line = _(
            "{order_id} — {beneficiary} · {status} · {tonnes} · {total} · placed {when}"
        ).format(
            order_id=_code(row["id"]),
            **_listed_order(row.get("snapshot")),
            status=_status_text(row.get("status")),
            when=slack_date(int(row.get("created") or 0), "{date_short}"),
        )
        link = _link(links.get(row["id"]), _("card"))
        lines.append(_("{line} · {link}").format(line=line, link=link) if link else line)
    title = (
        _("*{filter} orders, newest first*").format(filter=_(_ORDER_FILTERS[filter_name]))
        if filter_name
        else _("*Orders, newest first*")
    )
    blocks = _listed_sections("orders", [title, *lines])
    if next_cursor is not None and len(next_cursor) <= MAX_BUTTON_VALUE:
        blocks.append(
            (
                "more",
                {
                    "type": "actions",
                    "elements": [
                        {
                            "type": "button",
                            "action_id": ORDERS_NEXT_ACTION,
                            "text": _plain(_("Next"), MAX_BUTTON_TEXT),
                            "value": next_cursor,
                        }
                    ],
                },
            )
        )
    text = ngettext("{count} order.", "{count} orders.", len(rows)).format(
        count=format_number(len(rows))
    )
    return _message(text, blocks)


_ORDER_FILTERS = {
    "open": N_("Open"),
    "confirmed": N_("Confirmed"),
    "delayed": N_("Delayed"),
    "delivered": N_("Delivered"),
    "canceled": N_("Cancelled"),
}
ORDER_FILTERS = tuple(_ORDER_FILTERS)
PRODUCTS_SHOWN = 20


def products_answer(products: list[dict[str, Any]], *, as_of: float | None, now: int) -> Message:
    """`/climate products`: what Frontier sells now, per product its year, tonnes and prices."""
    if not products:
        text = _("Frontier offers no products right now.")
        return _message(text, [("products", _section(text))])
    blocks: list[tuple[str, dict[str, Any]]] = []
    for index, product in enumerate(products[:PRODUCTS_SHOWN]):
        product = _dict(product)
        prices = _prices(product)
        price_lines = _price_lines(prices) if prices else [_("No prices listed")]
        body = "\n".join(
            [
                _("*{name}* — delivery {year}, {tonnes} available").format(
                    name=_product_name(product),
                    year=_delivery_year(product, now),
                    tonnes=format_tonnes(product.get("metric_tons_available")),
                ),
                *price_lines,
            ]
        )
        blocks.append((f"product{index}", _section(truncate(body, MAX_SECTION_TEXT))))
    hidden = len(products) - PRODUCTS_SHOWN
    if hidden > 0:
        blocks.append(
            (
                "more",
                _context(
                    ngettext(
                        "and {count} more product", "and {count} more products", hidden
                    ).format(count=format_number(hidden))
                ),
            )
        )
    if as_of is not None:
        blocks.append(
            (
                "freshness",
                _context(
                    _("Stripe could not be reached; as of {when}.").format(
                        when=slack_date(int(as_of), "{date_short} {time}")
                    )
                ),
            )
        )
    text = ngettext(
        "Frontier offers {count} product.", "Frontier offers {count} products.", len(products)
    ).format(count=format_number(len(products)))
    return _message(text, blocks)


HOME_LIST_SHOWN = 10


def home_view(
    pending: list[dict[str, Any]],
    events: list[dict[str, Any]],
    *,
    last_event_at: float | None,
    failed_deliveries: int,
    links: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The App Home tab: what needs deciding, what happened lately, and the bot's health."""
    decisions = pending_answer(pending[:HOME_LIST_SHOWN], links)
    history_lines = [
        _("{when} — {what} {object_id}").format(
            when=slack_date(int(event["received_at"]), "{date_short} {time}"),
            what=_event_name(event["type"]),
            object_id=_code(event.get("object_id")),
        )
        for event in events[:HOME_LIST_SHOWN]
    ]
    health = [
        _("Last Stripe event received {when}.").format(
            when=slack_date(int(last_event_at), "{date_short} {time}")
        )
        if last_event_at
        else _("No Stripe event received yet."),
        ngettext(
            "{count} delivery to Slack failed and waits for an operator.",
            "{count} deliveries to Slack failed and wait for an operator.",
            failed_deliveries,
        ).format(count=format_number(failed_deliveries))
        if failed_deliveries
        else _("Every delivery to Slack succeeded."),
    ]
    named = [
        ("title", _header(_("climate-bot"))),
        *[(f"pending{i}", b) for i, b in enumerate(_unnamed(decisions.blocks))],
        ("divider1", {"type": "divider"}),
        (
            "events",
            _section("\n".join([_("*Latest events*"), *(history_lines or [_("Nothing yet.")])])),
        ),
        ("divider2", {"type": "divider"}),
        ("health", _section("\n".join([_("*Health*"), *health]))),
    ]
    message = _message(_("climate-bot"), named)
    return {"type": "home", "blocks": message.blocks}


_PRODUCT_EVENT_NAMES = {
    "climate.product.created": N_("New product"),
    "climate.product.pricing_updated": N_("Price changed"),
}


def _event_name(event_type: str) -> str:
    names = {**_EVENT_NAMES, **_PRODUCT_EVENT_NAMES}
    return _(names[event_type]) if event_type in names else _("Update")


def _unnamed(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in block.items() if k != "block_id"} for block in blocks]
