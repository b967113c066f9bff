"""The order card the channel sees, and its thread replies: one per Stripe event about the order.

What a delay or substitution and its decision say is in ``changes``; the reminders and other
notices for the deciders, their direct message and the cancel dialog are in ``deciders``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bot.cards.blocks import (
    _TEST_NOTE,
    _bounded_lines,
    _code,
    _context,
    _dashboard_link,
    _dict,
    _fields,
    _header,
    _is_test,
    _link_or_text,
    _list,
    _message,
    _money,
    _plain,
    _raw,
    _reply,
    _section,
    _strip_markup,
    _test_marked,
    _text,
    _utc_year,
    _year,
)
from bot.cards.changes import (
    _change_facts,
    _closed_line,
    _decision_line,
    _decision_open,
    _default_sentence,
    _refund_of,
    _short_refund,
    refund_sentence,
)
from bot.cards.limits import (
    CARD_SUPPLIER_NAMES,
    DELIVERIES_SHOWN,
    ID_LIMIT,
    LIST_BUDGET,
    MAX_BUTTON_TEXT,
    MAX_ID,
    MAX_SECTION_TEXT,
    NAME_LIMIT,
)
from bot.cards.products import (
    _location,
    _order_product,
    _product_label,
    _product_name,
    _supplier_name,
    _supplier_names,
)
from bot.formatting import (
    cancellation_reason_text,
    format_number,
    format_tonnes,
    plain_date,
    slack_date,
    slack_mention,
)
from bot.i18n import N_, _, ngettext
from bot.model import (
    ACCEPT_ACTION,
    CANCEL_ACTION,
    FINAL_STATUSES,
    Change,
    Message,
    OrderState,
    OrderUpdate,
    expected_refund,
)

_ORDER_HEADLINES = {
    "climate.order.created": N_("New carbon removal order"),
    "climate.order.delayed": N_("Order delayed"),
    "climate.order.product_substituted": N_("Product substituted"),
    "climate.order.delivered": N_("Order delivered"),
    "climate.order.canceled": N_("Order cancelled"),
}
_ORDER_HEADLINE = N_("Carbon removal order")  # an event type Stripe adds later
# While the team can still cancel, the header says so.
_DECISION_HEADLINES = {
    "delayed": N_("Order delayed — decision needed"),
    "product_substituted": N_("Product substituted — decision needed"),
}
_ORDER_STATUSES = {
    "open": N_("Open (not yet confirmed)"),
    "awaiting_funds": N_("Awaiting funds"),
    "confirmed": N_("Confirmed"),
    "delivered": N_("Delivered"),
    "canceled": N_("Cancelled"),
}


def _status_text(status: Any) -> str:
    if isinstance(status, str) and status in _ORDER_STATUSES:
        return _(_ORDER_STATUSES[status])
    words = " ".join(_raw(status).replace("_", " ").split())
    return _text(words[:1].upper() + words[1:], 40) or _("Unknown")


def _beneficiary(order: dict[str, Any]) -> str:
    return _text(_dict(order.get("beneficiary")).get("public_name")) or _("Your account")


def _expected_delivery(order: dict[str, Any]) -> str:
    year = order.get("expected_delivery_year")
    created_year = _utc_year(order.get("created"))
    if isinstance(year, int) and created_year is not None and year < created_year:
        # Stripe: a delivery year before the purchase means spot inventory, delivered in 30 days.
        return _("{year} (spot purchase)").format(year=_year(year))
    return _year(year)


def _decision_actions(change: Change, order: dict[str, Any]) -> dict[str, Any] | None:
    order_id = _raw(order.get("id"))
    # A value we had to cut would name a different order; Stripe ids are at most 255 characters.
    if not order_id or len(order_id) > MAX_ID:
        return None
    accept = _("Accept delay") if change.kind == "delayed" else _("Accept substitution")
    # Cancel opens a dialog (cancel_modal) that shows the expected refund and asks for a
    # reason: it is the confirmation, so the button carries no `confirm` of its own.
    return {
        "type": "actions",
        "elements": [
            {
                "type": "button",
                "action_id": ACCEPT_ACTION,
                "text": _plain(accept, MAX_BUTTON_TEXT),
                "style": "primary",
                "value": order_id,
            },
            {
                "type": "button",
                "action_id": CANCEL_ACTION,
                "text": _plain(_("Cancel order…"), MAX_BUTTON_TEXT),
                "style": "danger",
                "value": order_id,
            },
        ],
    }


def _delivery_line(detail: Any) -> str:
    """One delivery: who delivered how much, where and when, and its registry entry."""
    detail = _dict(detail)
    supplier = _supplier_name(_dict(detail.get("supplier")))
    place = _location(_dict(detail.get("location")))
    if place:
        supplier = _("{supplier} ({place})").format(supplier=supplier, place=place)
    tonnes = format_tonnes(detail.get("metric_tons"))
    when = _day(detail.get("delivered_at"))
    if when:
        tonnes = _("{tonnes} on {date}").format(tonnes=tonnes, date=when)
    if detail.get("registry_url") is None:
        return _("• {supplier} — {tonnes}").format(supplier=supplier, tonnes=tonnes)
    return _("• {supplier} — {tonnes} — {registry}").format(
        supplier=supplier,
        tonnes=tonnes,
        registry=_link_or_text(detail.get("registry_url"), _("Registry entry")),
    )


def _remaining(lines: list[str]) -> int:
    """What is left of a list's budget after the lines already in its section."""
    return min(LIST_BUDGET, MAX_SECTION_TEXT - 100 - sum(len(line) + 1 for line in lines))


def _delivery_lines(order: dict[str, Any], budget: int) -> list[str]:
    details = _list(order.get("delivery_details"))
    return _bounded_lines(
        (_delivery_line(detail) for detail in details),
        len(details),
        budget,
        DELIVERIES_SHOWN,
        lambda hidden: ngettext(
            "and {count} more delivery", "and {count} more deliveries", hidden
        ).format(count=format_number(hidden)),
    )


def _certificate_line(order: dict[str, Any]) -> str | None:
    if order.get("certificate") is None:
        return None
    return _link_or_text(order.get("certificate"), _("Delivery certificate"))


def _order_facts(order: dict[str, Any], product: dict[str, Any], product_id: Any) -> dict:
    """The order's facts in one compact fields section: who, how much, what."""
    suppliers = _list(product.get("suppliers"))
    product_text = _product_name(product, product_id)
    if suppliers:
        product_text = f"{product_text}\n{_supplier_names(suppliers, CARD_SUPPLIER_NAMES)}"
    return _fields(
        [
            (_("Beneficiary"), _beneficiary(order)),
            (_("Carbon removal"), format_tonnes(order.get("metric_tons"))),
            (_("Total"), _money(order.get("amount_total"), order.get("currency"))),
            (_("Product"), product_text),
        ]
    )


def _day(ts: Any) -> str | None:
    """A Stripe timestamp as a date in each reader's time zone (the fallback says UTC), or None
    when it is not one."""
    return slack_date(ts, "{date_short}") if _utc_year(ts) is not None else None


def _order_dates(order: dict[str, Any]) -> list[str]:
    """The dates finance books an order by, those Stripe has set: placed, confirmed, delivered,
    cancelled. An order confirmed as it was placed (Stripe's usual case) says so once."""
    placed, confirmed = _day(order.get("created")), _day(order.get("confirmed_at"))
    dates = []
    if placed and confirmed and order.get("created") == order.get("confirmed_at"):
        dates.append(_("placed and confirmed {date}").format(date=placed))
    else:
        if placed:
            dates.append(_("placed {date}").format(date=placed))
        if confirmed:
            dates.append(_("confirmed {date}").format(date=confirmed))
    delivered, cancelled = _day(order.get("delivered_at")), _day(order.get("canceled_at"))
    if delivered:
        dates.append(_("delivered {date}").format(date=delivered))
    if cancelled:
        dates.append(_("cancelled {date}").format(date=cancelled))
    return dates


def _order_context(order: dict[str, Any]) -> dict[str, Any]:
    """One line under the facts: id, status, delivery year, the amounts' parts, the order's dates
    and the way to Stripe's Dashboard. The dates go here rather than in rows of their own, so a
    card that asks for a decision stays short."""
    currency = order.get("currency")
    parts = [
        _code(order.get("id")),
        _status_text(order.get("status")),
        _("delivery expected {year}").format(year=_expected_delivery(order)),
        _("subtotal {subtotal} + Frontier fees {fees}").format(
            subtotal=_money(order.get("amount_subtotal"), currency),
            fees=_money(order.get("amount_fees"), currency),
        ),
        *_order_dates(order),
        _dashboard_link(),
    ]
    return _context(" · ".join(part for part in parts if part))


def _waiting_line(change: Change, order: dict[str, Any], product: dict[str, Any]) -> str:
    return _("Meanwhile: {facts}. It is decided once the cancel under way settles.").format(
        facts=_change_facts(change, order, product)
    )


def order_card(state: OrderState, now: int) -> Message:
    """Render the order's living card from its current state; ``now`` decides whether the
    decision buttons are still offered. Called for the first post and for every update.

    What to do comes first (what changed, the deadline, the buttons, or who decided), then the
    order's facts in one fields section, then one line of details.
    """
    order = _dict(state.order)
    product, product_id = _order_product(state.product, order)
    change = state.change
    decision = state.decision
    status = order.get("status")
    test = _is_test(order)
    decision_open = _decision_open(state, now)
    actions = _decision_actions(change, order) if change and decision_open else None

    headline = _(_ORDER_HEADLINES.get(state.headline_event, _ORDER_HEADLINE))
    if actions is not None and change is not None:
        headline = _(_DECISION_HEADLINES[change.kind])
    blocks: list[tuple[str, dict[str, Any]]] = [("header", _header(_test_marked(headline, test)))]
    if test:
        blocks.append(("test", _context(_(_TEST_NOTE))))

    earlier: list[str] = []  # a past change, once the order has moved on
    if status in FINAL_STATUSES:
        if change is not None:
            earlier.append(
                _("Earlier: {facts}.").format(facts=_change_facts(change, order, product))
            )
        if status == "canceled" and decision is not None and decision.kind == "cancelled":
            blocks.append(("outcome", _section(_decision_line(decision, change, order))))
        elif status == "canceled":
            blocks.append(
                (
                    "outcome",
                    _section(
                        _("*Cancelled* because {reason}.\n{refund}").format(
                            reason=cancellation_reason_text(order.get("cancellation_reason")),
                            refund=refund_sentence(expected_refund(order), order),
                        )
                    ),
                )
            )
        else:
            certificate = _certificate_line(order)
            lines = [
                _("*Delivered:* {tonnes}").format(tonnes=format_tonnes(order.get("metric_tons")))
            ]
            if certificate is not None:
                lines.append(certificate)
            lines.extend(_delivery_lines(order, _remaining(lines)))
            blocks.append(("outcome", _section("\n".join(lines))))
            if decision is not None:
                earlier.append(_strip_markup(_decision_line(decision, change, order)))
    elif change is not None:
        facts = _change_facts(change, order, product)
        if decision_open:
            text = _("*{facts}*\nDecide by {deadline}. {default}").format(
                facts=facts,
                deadline=slack_date(change.decision_deadline, "{date_long} {time}"),
                default=_default_sentence(change),
            )
        elif decision is not None:
            text = _("*{facts}*\n{decision}").format(
                facts=facts, decision=_decision_line(decision, change, order)
            )
        else:
            text = _("*{facts}*\n{closed}").format(facts=facts, closed=_closed_line(change))
        blocks.append(("change", _section(text)))
        if actions is not None:
            blocks.append(("decision", actions))
    if state.next_change is not None and status not in FINAL_STATUSES:
        blocks.append(("waiting", _context(_waiting_line(state.next_change, order, product))))

    blocks.append(("facts", _order_facts(order, product, product_id)))
    if earlier:
        blocks.append(("earlier", _context(*earlier)))
    blocks.append(("details", _order_context(order)))

    tonnes = format_tonnes(order.get("metric_tons"))
    total = _money(order.get("amount_total"), order.get("currency"))
    return _message(
        _test_marked(_order_summary(state, order, product, tonnes, total, now), test), blocks
    )


def _order_summary(
    state: OrderState,
    order: dict[str, Any],
    product: dict[str, Any],
    tonnes: str,
    total: str,
    now: int,
) -> str:
    """The notification sentence: plain words, no links."""
    order_id = _text(order.get("id"), ID_LIMIT) or _("(no id)")
    event = state.headline_event
    change = state.change
    if event in ("climate.order.delayed", "climate.order.product_substituted") and change:
        delayed = change.kind == "delayed"
        if _decision_open(state, now):
            summary = (
                _("Order {order_id} delayed: {facts}. Decide by {date}.")
                if delayed
                else _("Order {order_id}: product substituted, {facts}. Decide by {date}.")
            )
        else:
            summary = (
                _("Order {order_id} delayed: {facts}.")
                if delayed
                else _("Order {order_id}: product substituted, {facts}.")
            )
        return summary.format(
            order_id=order_id,
            facts=_change_facts(change, order, product),
            date=plain_date(change.decision_deadline),
        )
    if event == "climate.order.delivered":
        return _("Order {order_id} delivered: {tonnes}.").format(order_id=order_id, tonnes=tonnes)
    if event == "climate.order.canceled":
        decision = state.decision if state.decision and state.decision.kind == "cancelled" else None
        if decision is not None:
            return _("Order {order_id} cancelled by {user}, {refund}.").format(
                order_id=order_id,
                user=slack_mention(_raw(decision.by)) or _("someone"),
                refund=_short_refund(_refund_of(decision, order), order),
            )
        return _("Order {order_id} cancelled because {reason}, {refund}.").format(
            order_id=order_id,
            reason=cancellation_reason_text(order.get("cancellation_reason")),
            refund=_short_refund(expected_refund(order), order),
        )
    if event == "climate.order.created":
        return _("New carbon removal order {order_id}: {tonnes} for {total}.").format(
            order_id=order_id, tonnes=tonnes, total=total
        )
    return _("Carbon removal order {order_id}: {status}.").format(
        order_id=order_id, status=_status_text(order.get("status"))
    )


def order_reply(update: OrderUpdate) -> Message:
    """Render the short thread reply that says what one order event did."""
    order = _dict(update.order)
    product, _product_id = _order_product(update.product, order)
    change = update.change
    currency = order.get("currency")
    tonnes = format_tonnes(order.get("metric_tons"))
    event = update.event_type
    lines: list[str] = []

    if event == "climate.order.created":
        lines.append(
            _("Order placed: {tonnes} for {total}").format(
                tonnes=tonnes, total=_money(order.get("amount_total"), currency)
            )
        )
    elif event in ("climate.order.delayed", "climate.order.product_substituted"):
        if change is None:
            lines.append(
                _("Delivery delayed; now expected in {year}.").format(
                    year=_year(order.get("expected_delivery_year"))
                )
                if event == "climate.order.delayed"
                else _("Product substituted: now {product}.").format(
                    product=_product_label(product or None)
                )
            )
        else:
            facts = _change_facts(change, order, product)
            if change.kind == "product_substituted":
                facts = _("Product substituted: {facts}").format(facts=facts)
            lines.append(
                _("{facts}. Decide by {deadline}. {default}").format(
                    facts=facts,
                    deadline=slack_date(change.decision_deadline, "{date_long} {time}"),
                    default=_default_sentence(change),
                )
            )
            if update.broadcast:
                # Seen in the channel, away from its card: say which order it is about.
                lines.append(
                    _("*Decision needed* on order {order_id} — {order}").format(
                        order_id=_code(order.get("id")), order=_order_line(order)
                    )
                )
    elif event == "climate.order.delivered":
        lines.append(_("Delivered: {tonnes}.").format(tonnes=tonnes))
        certificate = _certificate_line(order)
        if certificate is not None:
            lines.append(certificate)
        if _list(order.get("delivery_details")):
            lines.extend(_delivery_lines(order, _remaining(lines)))
    elif event == "climate.order.canceled":
        if update.cancelled_by is not None:
            # The decision's own reply already said who cancelled and what is refunded.
            lines.append(
                _("Stripe confirmed the cancellation requested by {user}.").format(
                    user=slack_mention(_raw(update.cancelled_by)) or _("someone")
                )
            )
        else:
            lines.append(
                _("Cancelled because {reason}. {refund}").format(
                    reason=cancellation_reason_text(order.get("cancellation_reason")),
                    refund=refund_sentence(expected_refund(order), order),
                )
            )
    else:
        lines.append(_("Order updated ({event}).").format(event=_text(event, NAME_LIMIT)))

    text = _("Order {order_id}: {what}").format(
        order_id=_text(order.get("id"), ID_LIMIT) or _("(no id)"),
        what=_strip_markup(lines[0]),
    )
    text = _test_marked(text, _is_test(order))
    mentions = _mentions(update.mentions)
    if mentions:
        lines.append(mentions)
        text = _("{text} {mentions}").format(text=text, mentions=mentions)
    return _reply(lines, text, update.late, update.event_created)


def _mentions(ids: Iterable[str]) -> str:
    """The deciders as mentions (users <@U…>, user groups <!subteam^S…>); never @here/@channel."""
    return " ".join(filter(None, map(slack_mention, ids)))


def _order_line(order: dict[str, Any]) -> str:
    """Beneficiary · tonnes · amount: enough to recognise an order without opening it."""
    return _("{beneficiary} · {tonnes} · {total}").format(
        beneficiary=_beneficiary(order),
        tonnes=format_tonnes(order.get("metric_tons")),
        total=_money(order.get("amount_total"), order.get("currency")),
    )
