"""What a delay or a substitution and the team's decision about it say, on every card, reply,
notice and answer: what moved, by when, the expected refund, who decided and why."""

from __future__ import annotations

from typing import Any

from bot.cards.blocks import _dict, _money, _raw, _year
from bot.cards.limits import REASON_LIMIT
from bot.cards.products import _product_label
from bot.formatting import escape_mrkdwn, neutralise_styles, slack_date, slack_mention, truncate
from bot.i18n import _
from bot.model import FINAL_STATUSES, Change, Decision, ExpectedRefund, OrderState, expected_refund


def refund_sentence(refund: ExpectedRefund, order: dict[str, Any]) -> str:
    """The expected refund in words, with the rule that gives it: Stripe returns no amount."""
    currency = order.get("currency")
    amount = _money(refund.amount, currency)
    if refund.rule == "not_confirmed":
        return _("No refund: the order was never confirmed, so nothing was paid.")
    if refund.rule == "change_window":
        return _(
            "Expected refund {amount}, the full total: a cancel within 30 days of a delay or "
            "substitution is refunded in full (Stripe's Climate webhooks guide)."
        ).format(amount=amount)
    if refund.rule == "frontier":
        return _(
            "Expected refund {amount}, the full total: Stripe refunds in full when Frontier "
            "cancels (API reference)."
        ).format(amount=amount)
    if refund.rule == "self_service":
        return _(
            "Expected refund {amount}, the subtotal: Frontier keeps its fees of {fees} for a "
            "cancel you ask for (API reference)."
        ).format(amount=amount, fees=_money(order.get("amount_fees"), currency))
    return _("Stripe states no refund for this cancellation.")


def _short_refund(refund: ExpectedRefund, order: dict[str, Any]) -> str:
    """The expected refund in a few words, for one-line summaries."""
    if refund.amount is None:
        return _("no refund") if refund.rule == "not_confirmed" else _("refund not stated")
    return _("expected refund {amount}").format(amount=_money(refund.amount, order.get("currency")))


def _refund_of(decision: Decision | None, order: dict[str, Any]) -> ExpectedRefund:
    """The refund recorded with a decision, else the one the order's own fields give."""
    if decision is not None and decision.refund is not None:
        return decision.refund
    return expected_refund(order)


def _reason_line(decision: Decision) -> str | None:
    if not decision.reason or not decision.reason.strip():
        return None
    reason = neutralise_styles(
        truncate(escape_mrkdwn(" ".join(decision.reason.split())), REASON_LIMIT)
    )
    return _("Reason: “{reason}”").format(reason=reason)


def _decision_line(decision: Decision, change: Change | None, order: dict[str, Any]) -> str:
    """Who decided what, and when, said once: stays on the card once the buttons are gone."""
    who = slack_mention(_raw(decision.by)) or _("someone")
    when = slack_date(decision.at, "{date_long} {time}")
    if decision.kind == "cancelled":
        line = _("*Cancelled by {user}* · {when}\n{refund}").format(
            user=who, when=when, refund=refund_sentence(_refund_of(decision, order), order)
        )
    elif decision.kind == "cancelling":
        line = _("*Cancellation requested by {user}* · {when} — waiting for Stripe…").format(
            user=who, when=when
        )
    elif change is not None and change.kind == "product_substituted":
        line = _("*Substitution accepted by {user}* · {when}").format(user=who, when=when)
    else:
        line = _("*Delay accepted by {user}* · {when}").format(user=who, when=when)
    reason = _reason_line(decision) if decision.kind != "accepted" else None
    return f"{line}\n{reason}" if reason else line


def _change_facts(change: Change, order: dict[str, Any], product: dict[str, Any]) -> str:
    """One sentence: what moved, old → new."""
    if change.kind == "delayed":
        new_year = change.new_year
        if new_year is None:
            new_year = order.get("expected_delivery_year")
        if change.old_year is not None and new_year is not None:
            return _("Delivery moved from {old_year} to {new_year}").format(
                old_year=_year(change.old_year), new_year=_year(new_year)
            )
        if new_year is not None:
            return _("Delivery moved to {new_year}").format(new_year=_year(new_year))
        return _("Delivery was delayed")
    return _("{old} → {new}").format(
        old=_product_label(change.old_product),
        new=_product_label(change.new_product or product or None),
    )


def _default_sentence(change: Change) -> str:
    if change.kind == "delayed":
        return _("No answer means the delay is accepted.")
    return _("No answer means the substitution is accepted.")


def _decision_open(state: OrderState, now: int) -> bool:
    """Buttons are offered only inside the 30-day window and only while the order is not final."""
    change = state.change
    order = _dict(state.order)
    return (
        change is not None
        and state.decision is None
        and order.get("status") not in FINAL_STATUSES
        and isinstance(now, int)
        and now < change.decision_deadline
    )


def _closed_line(change: Change) -> str:
    closed = (
        _("No decision by {date} — delay accepted by default.")
        if change.kind == "delayed"
        else _("No decision by {date} — substitution accepted by default.")
    )
    return closed.format(date=slack_date(change.decision_deadline, "{date_long}"))
