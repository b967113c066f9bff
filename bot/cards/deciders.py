"""What asks the deciders to decide, and what they are told: the notices in an order card's
thread (reminder, window closed, decision needed, decided), the direct message to a decider, the
cancel dialog and the dialog that only says something."""

from __future__ import annotations

from typing import Any

from bot.cards.blocks import (
    _code,
    _dict,
    _is_test,
    _link,
    _message,
    _mrkdwn,
    _plain,
    _section,
    _strip_markup,
    _test_marked,
    _text,
)
from bot.cards.changes import (
    _change_facts,
    _closed_line,
    _decision_line,
    _default_sentence,
    refund_sentence,
)
from bot.cards.limits import ID_LIMIT, MAX_MODAL_TITLE, MAX_PRIVATE_METADATA, REASON_LIMIT
from bot.cards.orders import _mentions, _order_line, _status_text
from bot.cards.products import _order_product
from bot.formatting import format_number, plain_date, slack_date
from bot.i18n import _, ngettext
from bot.model import Message, Notice, OrderState, expected_refund

# The cancel dialog (views.open) and what its submission carries back.
CANCEL_MODAL = "cancel_order"
REASON_BLOCK = "reason"
REASON_INPUT = "reason"


def order_notice(notice: Notice) -> Message:
    """Render a thread reply that is not a Stripe event: a recorded decision, a reminder, a
    window that closed undecided, or a decision that a new card needs."""
    order = _dict(notice.order)
    order_id = _text(order.get("id"), ID_LIMIT) or _("(no id)")
    change = notice.change
    mentions = _mentions(notice.mentions)
    test = _is_test(order)

    def pinged(name: str, line: str, text: str) -> Message:
        lines = [line, mentions] if mentions else [line]
        text = _test_marked(text, test)
        text = _("{text} {mentions}").format(text=text, mentions=mentions) if mentions else text
        return _message(text, [(name, _section("\n".join(lines)))])

    if notice.kind == "reminder" and change is not None:
        days = notice.days_left or 0
        line = ngettext(
            "*Reminder:* {days} day left to decide on order {order_id}: accept, or cancel for a "
            "full refund, by {deadline}. {default}",
            "*Reminder:* {days} days left to decide on order {order_id}: accept, or cancel for a "
            "full refund, by {deadline}. {default}",
            days,
        ).format(
            days=format_number(days),
            order_id=_code(order.get("id")),
            deadline=slack_date(change.decision_deadline, "{date_long} {time}"),
            default=_default_sentence(change),
        )
        text = ngettext(
            "Reminder: {days} day left to decide on order {order_id}.",
            "Reminder: {days} days left to decide on order {order_id}.",
            days,
        ).format(days=format_number(days), order_id=order_id)
        return pinged("reminder", line, text)
    if notice.kind == "closed" and change is not None:
        line = _("Order {order_id}: {closed}").format(
            order_id=_code(order.get("id")), closed=_closed_line(change)
        )
        return pinged("closed", line, _strip_markup(line))
    if notice.kind == "decision_needed" and change is not None:
        line = _("*Decision needed* on order {order_id}: {facts}. Decide by {deadline}.").format(
            order_id=_code(order.get("id")),
            facts=_change_facts(change, order, {}),
            deadline=slack_date(change.decision_deadline, "{date_long} {time}"),
        )
        return pinged("needed", line, _strip_markup(line))
    if notice.decision is not None:
        line = _decision_line(notice.decision, change, order)
        text = _("Order {order_id}: {what}").format(
            order_id=order_id, what=_strip_markup(line.split("\n")[0])
        )
        return _message(_test_marked(text, test), [("decided", _section(line))])
    text = _("Order {order_id}: {status}.").format(
        order_id=order_id, status=_status_text(order.get("status"))
    )
    return _message(
        _test_marked(text, test), [("notice", _section(_status_text(order.get("status"))))]
    )


def decision_direct_message(
    state: OrderState, card_link: str | None, *, days_left: int | None = None
) -> Message:
    """The direct message to a decider: which order, what changed, by when, and the way to the
    card (the one place with buttons). `days_left`: a last reminder rather than the change."""
    order = _dict(state.order)
    product, _product_id = _order_product(state.product, order)
    change = state.change
    order_id = _text(order.get("id"), ID_LIMIT) or _("(no id)")
    if change is None:
        return _message(
            _("Order {order_id} needs no decision now.").format(order_id=order_id),
            [
                (
                    "dm",
                    _section(
                        _("Order {order_id} needs no decision now.").format(order_id=order_id)
                    ),
                )
            ],
        )
    if days_left is not None:
        title = ngettext(
            "*Last reminder: {days} day left to decide on an order*",
            "*Last reminder: {days} days left to decide on an order*",
            days_left,
        ).format(days=format_number(days_left))
    elif change.kind == "delayed":
        title = _("*An order was delayed — your decision is needed*")
    else:
        title = _("*An order's product was substituted — your decision is needed*")
    lines = [
        title,
        _("{order} ({order_id})").format(order=_order_line(order), order_id=_code(order.get("id"))),
        _("{facts}.").format(facts=_change_facts(change, order, product)),
        _("Decide by {deadline}: accept, or cancel for a full refund. {default}").format(
            deadline=slack_date(change.decision_deadline, "{date_long} {time}"),
            default=_default_sentence(change),
        ),
    ]
    link = _link(card_link, _("Open the card to decide"))
    if link:
        lines.append(link)
    text = _("Decision needed on order {order_id}: {facts}. Decide by {date}.").format(
        order_id=order_id,
        facts=_strip_markup(_change_facts(change, order, product)),
        date=plain_date(change.decision_deadline),
    )
    return _message(_test_marked(text, _is_test(order)), [("dm", _section("\n".join(lines)))])


def cancel_modal(state: OrderState, now: float, private_metadata: str) -> dict[str, Any]:
    """The dialog Cancel opens: the order, its expected refund and rule, an optional reason.

    `private_metadata` comes back with the submission (what the submit needs to act on).
    """
    order = _dict(state.order)
    product, _product_id = _order_product(state.product, order)
    refund = expected_refund(order, reason="requested", at=now, change=state.change)
    lines = [
        _("*Cancel order {order_id}?*").format(order_id=_code(order.get("id"))),
        _order_line(order),
    ]
    if state.change is not None:
        lines.append(_("{facts}.").format(facts=_change_facts(state.change, order, product)))
    named = [
        ("order", _section("\n".join(lines))),
        ("refund", _section(refund_sentence(refund, order))),
        (
            REASON_BLOCK,
            {
                "type": "input",
                "optional": True,
                "label": _plain(_("Reason"), 2000),
                "hint": _plain(_("Shown on the card and in /climate history."), 2000),
                "element": {
                    "type": "plain_text_input",
                    "action_id": REASON_INPUT,
                    "multiline": True,
                    "max_length": REASON_LIMIT,
                },
            },
        ),
    ]
    return {
        "type": "modal",
        "callback_id": CANCEL_MODAL,
        "private_metadata": private_metadata[:MAX_PRIVATE_METADATA],
        "title": _plain(_("Cancel order"), MAX_MODAL_TITLE),
        "submit": _plain(_("Cancel order"), MAX_MODAL_TITLE),
        "close": _plain(_("Keep it"), MAX_MODAL_TITLE),
        "blocks": [{**block, "block_id": name} for name, block in named],
    }


def notice_view(title: str, text: str) -> dict[str, Any]:
    """A modal that only says something (a submission that could not be carried out)."""
    return {
        "type": "modal",
        "title": _plain(title, MAX_MODAL_TITLE),
        "close": _plain(_("Close"), MAX_MODAL_TITLE),
        "blocks": [{"type": "section", "block_id": "notice", "text": _mrkdwn(text)}],
    }
