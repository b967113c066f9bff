"""Pure renderers: an order's or product's state → the Slack message that shows it.

Handlers change state, then call these to (re)build the card or a thread reply; nothing here does
I/O or reads the clock (``now`` is passed in). Every Stripe-supplied string is hostile: it is
escaped before it reaches mrkdwn and cut to a fixed size, and every list is summarised, so a card
stays within Slack's Block Kit limits whatever Stripe sends. ``limit_problems`` checks that.

Every word comes from the catalog of the active locale (``bot.i18n.use_locale``): labels are
marked with ``N_`` where defined and translated with ``_`` when rendered, and sentences are whole
catalog entries with named placeholders, so a translation can put the parts in its own order.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from slack_sdk.models.blocks import Block

from bot.formatting import (
    BACKTICK_LOOKALIKE,
    ELLIPSIS,
    cancellation_reason_text,
    climate_dashboard_url,
    escape_mrkdwn,
    format_money,
    format_names,
    format_number,
    format_percent_change,
    format_tonnes,
    neutralise_styles,
    plain_date,
    quoted_error,
    removal_pathway_label,
    single_line,
    slack_date,
    slack_mention,
    truncate,
)
from bot.i18n import N_, _, ngettext
from bot.model import (
    ACCEPT_ACTION,
    CANCEL_ACTION,
    FINAL_STATUSES,
    Change,
    Decision,
    ExpectedRefund,
    Message,
    Notice,
    OrderState,
    OrderUpdate,
    ProductState,
    ProductUpdate,
    expected_refund,
)

# Slack's documented limits (docs.slack.dev/reference/block-kit), checked by limit_problems.
MAX_BLOCKS = 50
MAX_HEADER = 150
MAX_SECTION_TEXT = 3000
MAX_FIELDS = 10
MAX_FIELD_TEXT = 2000
MAX_CONTEXT_ELEMENTS = 10
MAX_CONTEXT_TEXT = 3000
MAX_ACTIONS_ELEMENTS = 25
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2000
MAX_BUTTON_URL = 3000
MAX_ID = 255
MAX_CONFIRM_TITLE = 100
MAX_CONFIRM_TEXT = 300
MAX_CONFIRM_BUTTON = 30
# Slack cuts top-level text past 40,000 and chat.update rejects more than 4,000; we keep far less.
MAX_TEXT = 3000
# Undocumented: Slack answers msg_blocks_too_long somewhere around 13,000 chars of block text.
MAX_MESSAGE_BLOCK_TEXT = 12_000

# How much of each Stripe string we show. With these, the largest possible card stays under
# ~8,000 chars of block text, well inside MAX_MESSAGE_BLOCK_TEXT.
NAME_LIMIT = 80
ID_LIMIT = 100
PLACE_LIMIT = 40
URL_LIMIT = 500  # a longer URL is shown as text rather than as a link
SHOWN_URL_LIMIT = 80
LIST_BUDGET = 2500  # characters of one bulleted list in a section
PRICE_BUDGET = 1500
SUPPLIER_BUDGET_SHORT = 1200
TEXT_LIMIT = 600  # the notification text; anything longer is noise in a notification

DELIVERIES_SHOWN = 20
SUPPLIERS_SHOWN = 15
PRICES_SHOWN = 20
SUPPLIER_NAMES_SHOWN = 3
# On an order card, suppliers beyond these are counted ("Charm Industrial, Heirloom and 3 more");
# the product card and `/climate status` list them all.
CARD_SUPPLIER_NAMES = 2
REASON_LIMIT = 500  # characters of a decider's reason kept and shown

# The cancel dialog (views.open) and what its submission carries back.
CANCEL_MODAL = "cancel_order"
REASON_BLOCK = "reason"
REASON_INPUT = "reason"
MAX_MODAL_TITLE = 24
MAX_PRIVATE_METADATA = 3000

_LINKABLE = re.compile(r"https?://[^\s<>|\x00-\x1f\x7f]+", re.IGNORECASE)

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
_PRODUCT_HEADLINES = {
    "climate.product.created": N_("New product from Frontier"),
    "climate.product.pricing_updated": N_("Product price changed"),
}
_PRODUCT_HEADLINE = N_("Carbon removal product")
_ORDER_STATUSES = {
    "open": N_("Open (not yet confirmed)"),
    "awaiting_funds": N_("Awaiting funds"),
    "confirmed": N_("Confirmed"),
    "delivered": N_("Delivered"),
    "canceled": N_("Cancelled"),
}
# Marks the header and the notification text of a test-mode object (cards, thread replies and
# notices alike); {text} is what it marks.
_TEST_PREFIX = N_("[TEST] {text}")
_TEST_NOTE = N_("Test mode — no real money moved")


# --- reading hostile Stripe objects ---------------------------------------------------------------


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _raw(value: Any) -> str:
    """A Stripe value as unescaped text: for plain_text objects, button values and hashing."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    try:
        return str(value)
    except ValueError:  # an int too long for str(): not something Stripe sends
        return ELLIPSIS


def _text(value: Any, limit: int = NAME_LIMIT) -> str:
    """A Stripe value as one line of mrkdwn-safe text of at most ``limit`` characters: it cannot
    mention, link, ping, style or quote (``neutralise_styles`` after the cut)."""
    return neutralise_styles(truncate(escape_mrkdwn(single_line(_raw(value))), limit))


def _code(value: Any, limit: int = ID_LIMIT) -> str:
    """An id in a code span, so it reads as an identifier, exactly as Stripe wrote it: styling is
    inert inside a code span, so only a backtick (which would end it) gets its look-alike."""
    shown = truncate(escape_mrkdwn(single_line(_raw(value))), limit)
    if not shown:
        return _("(no id)")
    return "`" + shown.replace("`", BACKTICK_LOOKALIKE) + "`"


def _year(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if value is None:
        return _("not set")
    return _text(value, 12)


def _utc_year(ts: Any) -> int | None:
    if isinstance(ts, bool) or not isinstance(ts, int):
        return None
    try:
        return datetime.fromtimestamp(ts, tz=UTC).year
    except (OverflowError, OSError, ValueError):
        return None


def _money(amount: Any, currency: Any) -> str:
    if amount is None:
        return _("an unknown amount")
    return format_money(amount, _raw(currency))


def _is_test(obj: dict[str, Any]) -> bool:
    # Anything but an explicit livemode=true is marked as test: better a false "test" label
    # than a test order that looks like real money.
    return obj.get("livemode") is not True


def _link(url: Any, label: str) -> str | None:
    """``<url|label>`` for a plain http(s) URL, or None when the URL cannot be shown as a link.

    ``label`` must already be mrkdwn-safe; a ``|`` in it would end the URL part early, so it is
    replaced by a look-alike.
    """
    if not isinstance(url, str) or len(url) > URL_LIMIT or not _LINKABLE.fullmatch(url):
        return None
    return "<{url}|{label}>".format(url=url.replace("&", "&amp;"), label=label.replace("|", "¦"))


def _link_or_text(url: Any, label: str) -> str:
    """A link when possible; else the label followed by the URL as inert text; else the label."""
    link = _link(url, label)
    if link is not None:
        return link
    if url is None or _raw(url) == "":
        return label
    return _("{label}: {url}").format(label=label, url=_text(url, SHOWN_URL_LIMIT))


def _test_marked(text: str, test: bool) -> str:
    """``text`` marked as test mode when ``test``."""
    return _(_TEST_PREFIX).format(text=text) if test else text


def _bounded_lines(
    lines: Iterable[str],
    count: int,
    budget: int,
    shown: int,
    more: Callable[[int], str],
) -> list[str]:
    """Keep the first lines that fit in ``budget`` characters (at most ``shown`` of them), and
    say how many were left out with ``more(hidden)``.

    Lines are never cut, so links inside them stay whole.
    """
    kept: list[str] = []
    used = 0
    reserve = len(more(count)) + 1
    for index, line in enumerate(lines):
        last = index == count - 1
        cost = len(line) + 1
        if len(kept) >= shown or used + cost + (0 if last else reserve) > budget:
            break
        kept.append(line)
        used += cost
    hidden = count - len(kept)
    if hidden > 0:
        kept.append(more(hidden))
    return kept


# --- products and suppliers -------------------------------------------------------------------


def _supplier_name(supplier: dict[str, Any]) -> str:
    name = _text(supplier.get("name"))
    if name:
        return name
    return _code(supplier.get("id")) if _raw(supplier.get("id")) else _("Unnamed supplier")


def _location(location: dict[str, Any]) -> str:
    parts = (location.get("city"), location.get("region"), location.get("country"))
    return ", ".join(_text(part, PLACE_LIMIT) for part in parts if _raw(part).strip())


def _supplier_place(locations: list[Any]) -> str:
    """The first location that names a place, and how many more locations there are."""
    place = next((text for text in map(_location, map(_dict, locations)) if text), "")
    if not place or len(locations) == 1:
        return place
    more = len(locations) - 1
    return ngettext(
        "{place} (and {count} more location)", "{place} (and {count} more locations)", more
    ).format(place=place, count=format_number(more))


def _supplier_line(supplier: Any) -> str:
    """One bullet: linked name, pathway, first location."""
    supplier = _dict(supplier)
    plain_name = _supplier_name(supplier)
    name = _link(supplier.get("info_url"), plain_name) or plain_name
    pathway = removal_pathway_label(supplier.get("removal_pathway"))
    place = _supplier_place(_list(supplier.get("locations")))
    if place:
        return _("• {name} — {pathway} — {place}").format(name=name, pathway=pathway, place=place)
    return _("• {name} — {pathway}").format(name=name, pathway=pathway)


def _suppliers_section(product: dict[str, Any], budget: int) -> dict[str, Any] | None:
    """The product's suppliers, one line each, as many as fit in `budget` characters."""
    suppliers = _list(product.get("suppliers"))
    if not suppliers:
        return None
    lines = _bounded_lines(
        (_supplier_line(supplier) for supplier in suppliers),
        len(suppliers),
        budget,
        SUPPLIERS_SHOWN,
        lambda hidden: ngettext(
            "and {count} more supplier", "and {count} more suppliers", hidden
        ).format(count=format_number(hidden)),
    )
    return _section("\n".join([_("*Suppliers*"), *lines]))


def _supplier_names(suppliers: list[Any], shown: int = SUPPLIER_NAMES_SHOWN) -> str:
    """A short inline list: "Charm Industrial, Heirloom, Lithos and 3 more"."""
    names = format_names([_supplier_name(_dict(supplier)) for supplier in suppliers[:shown]])
    if len(suppliers) <= shown:
        return names
    more = len(suppliers) - shown
    return ngettext("{names} and {count} more", "{names} and {count} more", more).format(
        names=names, count=format_number(more)
    )


def _product_name(product: dict[str, Any], product_id: Any = None) -> str:
    return _text(product.get("name")) or _code(product.get("id") or product_id)


def _product_label(product: Any) -> str:
    """Name a product with its first suppliers; it may be just ``{"id": …}``."""
    product = _dict(product)
    if not product:
        return _("an unknown product")
    suppliers = _list(product.get("suppliers"))
    name = _product_name(product)
    if not suppliers:
        return name
    return _("{product} ({suppliers})").format(product=name, suppliers=_supplier_names(suppliers))


def _order_product(state_product: Any, order: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """The product snapshot to show (state's, else the expanded one on the order) and its id."""
    expanded = order.get("product")
    product = _dict(state_product) or _dict(expanded)
    product_id = product.get("id") or (expanded if isinstance(expanded, str) else None)
    return product, product_id


# --- blocks ---------------------------------------------------------------------------------------


def _mrkdwn(text: str) -> dict[str, Any]:
    # verbatim: Slack must not turn names into links or mentions; our own <…> markup still works.
    return {"type": "mrkdwn", "text": text, "verbatim": True}


def _plain(text: str, limit: int) -> dict[str, Any]:
    return {"type": "plain_text", "text": truncate(text, limit), "emoji": True}


def _header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": _plain(text, MAX_HEADER)}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": _mrkdwn(text)}


def _fields(fields: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "type": "section",
        "fields": [_mrkdwn(f"*{label}*\n{value}") for label, value in fields[:MAX_FIELDS]],
    }


def _context(*texts: str) -> dict[str, Any]:
    return {"type": "context", "elements": [_mrkdwn(text) for text in texts[:MAX_CONTEXT_ELEMENTS]]}


def _message(text: str, named_blocks: list[tuple[str, dict[str, Any]]]) -> Message:
    """Give every block an id that is unique in the message and new whenever anything changes.

    A hash of the whole rendered message makes Slack re-render every block of an updated card
    (and drop stale button state) instead of reusing what it has under an old id.
    """
    text = truncate(text, TEXT_LIMIT) or _("Carbon removal update")
    content = json.dumps([text, named_blocks], sort_keys=True, ensure_ascii=False, default=str)
    digest = hashlib.sha256(content.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    blocks = [{**block, "block_id": f"{name}.{digest}"} for name, block in named_blocks]
    return Message(text=text, blocks=blocks)


def _dashboard_link() -> str:
    """The way to Stripe: its Dashboard's Climate page, the one Dashboard address Stripe
    documents for Climate (there is none for one order or one product)."""
    return _link(climate_dashboard_url(), _("Climate in the Stripe Dashboard")) or ""


def _late_sentence() -> str:
    return _("This update is older than what the card shows; the card was not changed.")


def _reply(lines: list[str], summary: str, late: bool, event_created: Any) -> Message:
    """A thread reply: the lines in one section, and for a late event a note saying so, in the
    blocks and in the notification text."""
    blocks: list[tuple[str, dict[str, Any]]] = [("reply", _section("\n".join(lines)))]
    if not late:
        return _message(summary, blocks)
    note = _("{late} Event time: {when}.").format(
        late=_late_sentence(), when=slack_date(event_created, "{date_long} {time}")
    )
    blocks.append(("late", _context(note)))
    with_note = _("{summary} {late}")
    # Cut the summary, never the note: the note is what makes a late reply make sense.
    room = TEXT_LIMIT - len(with_note.format(summary="", late=_late_sentence()))
    return _message(
        with_note.format(summary=truncate(summary, room), late=_late_sentence()), blocks
    )


# --- orders ---------------------------------------------------------------------------------------


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


def _closed_line(change: Change) -> str:
    closed = (
        _("No decision by {date} — delay accepted by default.")
        if change.kind == "delayed"
        else _("No decision by {date} — substitution accepted by default.")
    )
    return closed.format(date=slack_date(change.decision_deadline, "{date_long}"))


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


def _order_line(order: dict[str, Any]) -> str:
    """Beneficiary · tonnes · amount: enough to recognise an order without opening it."""
    return _("{beneficiary} · {tonnes} · {total}").format(
        beneficiary=_beneficiary(order),
        tonnes=format_tonnes(order.get("metric_tons")),
        total=_money(order.get("amount_total"), order.get("currency")),
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


_MARKUP = re.compile(r"<(?:!date\^[^|>]*\|([^>]*)|[^|>]*\|([^>]*))>")


def _strip_markup(line: str) -> str:
    """Replace our own ``<…|label>`` markup by its label, for the notification text."""
    return _MARKUP.sub(lambda match: match.group(1) or match.group(2) or "", line).replace("*", "")


# --- products -------------------------------------------------------------------------------------


def _prices(product: dict[str, Any]) -> dict[str, dict[str, Any]]:
    prices = _dict(product.get("current_prices_per_metric_ton"))
    return {_raw(code): _dict(price) for code, price in prices.items()}


def _currency_label(code: str) -> str:
    return _text(code.upper(), 12) or "?"


def _delivery_year(product: dict[str, Any], now: int | None) -> str:
    year = product.get("delivery_year")
    if year is None:
        return _("Not set (spot inventory)")
    reference = _utc_year(now) if now is not None else _utc_year(product.get("created"))
    if isinstance(year, int) and reference is not None and year < reference:
        # Stripe: a past delivery year means spot inventory with guaranteed delivery.
        return _("{year} (spot inventory, guaranteed delivery)").format(year=_year(year))
    return _year(year)


def _price_lines(prices: dict[str, dict[str, Any]]) -> list[str]:
    codes = sorted(prices)
    return _bounded_lines(
        (
            _("{currency}: {total} per tonne").format(
                currency=_currency_label(code),
                total=_money(prices[code].get("amount_total"), code),
            )
            for code in codes
        ),
        len(codes),
        PRICE_BUDGET,
        PRICES_SHOWN,
        lambda hidden: ngettext(
            "and {count} more currency", "and {count} more currencies", hidden
        ).format(count=format_number(hidden)),
    )


def product_card(state: ProductState, now: int | None = None) -> Message:
    """Render a product's card. ``now`` (optional) tells whether the delivery year is past;
    without it the product's own ``created`` year is the reference. After a price change whose
    earlier prices are known (``state.old_prices``), each price shows old → new."""
    product = _dict(state.product)
    test = _is_test(product)
    headline = _(_PRODUCT_HEADLINES.get(state.headline_event, _PRODUCT_HEADLINE))
    blocks: list[tuple[str, dict[str, Any]]] = [("header", _header(_test_marked(headline, test)))]
    if test:
        blocks.append(("test", _context(_(_TEST_NOTE))))
    name = _product_name(product)
    tonnes = format_tonnes(product.get("metric_tons_available"))
    blocks.append(
        (
            "facts",
            _fields(
                [
                    (_("Product"), name),
                    (_("Delivery year"), _delivery_year(product, now)),
                    (_("Tonnes available"), tonnes),
                    (_("Product id"), _code(product.get("id"))),
                ]
            ),
        )
    )
    prices = _prices(product)
    if state.headline_event == "climate.product.pricing_updated" and state.old_prices is not None:
        price_lines = _price_change_lines(state.old_prices, prices)
    else:
        price_lines = _price_lines(prices) if prices else []
    price_lines = price_lines or [_("No prices listed")]
    blocks.append(("prices", _section("\n".join([_("*Price per tonne*"), *price_lines]))))

    suppliers_block = _suppliers_section(product, LIST_BUDGET)
    if suppliers_block is not None:
        blocks.append(("suppliers", suppliers_block))
    blocks.append(("dashboard", _context(_dashboard_link())))

    text = _("{headline}: {name}, {tonnes} available.").format(
        headline=headline, name=name, tonnes=tonnes
    )
    return _message(_test_marked(text, test), blocks)


def _price_change_lines(
    old_prices: dict[str, dict[str, int]] | None, new_prices: dict[str, dict[str, Any]]
) -> list[str]:
    if old_prices is None:
        # Without the earlier prices there is nothing to compare; list the new ones.
        return [_("New prices:"), *_price_lines(new_prices)] if new_prices else []
    old = {_raw(code): _dict(price) for code, price in _dict(old_prices).items()}
    codes = sorted(set(old) | set(new_prices))

    def line(code: str) -> str:
        currency = _currency_label(code)
        before = old.get(code, {}).get("amount_total")
        after = new_prices.get(code, {}).get("amount_total")
        if code not in new_prices:
            return _("{currency}: no longer offered (was {old} per tonne)").format(
                currency=currency, old=_money(before, code)
            )
        if code not in old:
            return _("{currency}: now offered at {new} per tonne").format(
                currency=currency, new=_money(after, code)
            )
        if before == after:
            return _("{currency}: {new} per tonne (unchanged)").format(
                currency=currency, new=_money(after, code)
            )
        return _("{currency}: {old} → {new} per tonne ({change})").format(
            currency=currency,
            old=_money(before, code),
            new=_money(after, code),
            change=format_percent_change(before, after),
        )

    return _bounded_lines(
        (line(code) for code in codes),
        len(codes),
        PRICE_BUDGET,
        PRICES_SHOWN,
        lambda hidden: ngettext(
            "and {count} more currency", "and {count} more currencies", hidden
        ).format(count=format_number(hidden)),
    )


def product_reply(update: ProductUpdate) -> Message:
    """Render the thread reply for one product event: the price change, or the listing."""
    product = _dict(update.product)
    name = _product_name(product)
    tonnes = format_tonnes(product.get("metric_tons_available"))
    prices = _prices(product)
    if update.event_type == "climate.product.pricing_updated":
        lines = _price_change_lines(update.old_prices, prices) or [_("No prices listed")]
        lines.append(_("Tonnes available: {tonnes}").format(tonnes=tonnes))
        text = _("Price change for {name}: {first}").format(
            name=name, first=_strip_markup(lines[0])
        )
    elif update.event_type == "climate.product.created":
        lines = [_("Listed: {name}, {tonnes} available.").format(name=name, tonnes=tonnes)]
        text = lines[0]
    else:
        lines = [_("Product updated ({event}).").format(event=_text(update.event_type, NAME_LIMIT))]
        text = _("{name}: {what}").format(name=name, what=lines[0])

    return _reply(lines, _test_marked(text, _is_test(product)), update.late, update.event_created)


# --- checking limits ------------------------------------------------------------------------------


def _text_objects(value: Any) -> Iterable[dict[str, Any]]:
    """Every text object (plain_text or mrkdwn) anywhere inside a block."""
    if isinstance(value, dict):
        if value.get("type") in ("plain_text", "mrkdwn") and "text" in value:
            yield value
        for child in value.values():
            yield from _text_objects(child)
    elif isinstance(value, list):
        for child in value:
            yield from _text_objects(child)


def _length(text_object: Any) -> int:
    text = _dict(text_object).get("text")
    return len(text) if isinstance(text, str) else 0


def _too_long(problems: list[str], where: str, text_object: Any, limit: int) -> None:
    if _length(text_object) > limit:
        problems.append(f"{where}: {_length(text_object)} characters, more than Slack's {limit}")


def _check_plain(problems: list[str], where: str, text_object: Any, limit: int) -> None:
    if _dict(text_object).get("type") != "plain_text":
        problems.append(f"{where}: must be a plain_text object")
    _too_long(problems, where, text_object, limit)


def _check_button(problems: list[str], where: str, button: dict[str, Any]) -> None:
    _check_plain(problems, f"{where} text", button.get("text"), MAX_BUTTON_TEXT)
    for key, limit in (("value", MAX_BUTTON_VALUE), ("action_id", MAX_ID), ("url", MAX_BUTTON_URL)):
        value = button.get(key)
        if isinstance(value, str) and len(value) > limit:
            problems.append(f"{where} {key}: {len(value)} characters, more than Slack's {limit}")
    if "confirm" in button:
        confirm = _dict(button.get("confirm"))
        for key, limit in (
            ("title", MAX_CONFIRM_TITLE),
            ("text", MAX_CONFIRM_TEXT),
            ("confirm", MAX_CONFIRM_BUTTON),
            ("deny", MAX_CONFIRM_BUTTON),
        ):
            _check_plain(problems, f"{where} confirm {key}", confirm.get(key), limit)


def _check_block(problems: list[str], where: str, block: dict[str, Any]) -> None:
    kind = block.get("type")
    if kind == "header":
        _check_plain(problems, f"{where} text", block.get("text"), MAX_HEADER)
    elif kind == "section":
        if "text" in block:
            _too_long(problems, f"{where} text", block.get("text"), MAX_SECTION_TEXT)
        fields = _list(block.get("fields"))
        if len(fields) > MAX_FIELDS:
            problems.append(f"{where}: {len(fields)} fields, more than Slack's {MAX_FIELDS}")
        for index, field in enumerate(fields):
            _too_long(problems, f"{where} field {index}", field, MAX_FIELD_TEXT)
    elif kind == "context":
        elements = _list(block.get("elements"))
        if len(elements) > MAX_CONTEXT_ELEMENTS:
            problems.append(
                f"{where}: {len(elements)} elements, more than Slack's {MAX_CONTEXT_ELEMENTS}"
            )
        for index, element in enumerate(elements):
            _too_long(problems, f"{where} element {index}", element, MAX_CONTEXT_TEXT)
    elif kind == "actions":
        elements = _list(block.get("elements"))
        if len(elements) > MAX_ACTIONS_ELEMENTS:
            problems.append(
                f"{where}: {len(elements)} elements, more than Slack's {MAX_ACTIONS_ELEMENTS}"
            )
        action_ids = [_dict(element).get("action_id") for element in elements]
        if len(set(action_ids)) != len(action_ids):
            problems.append(f"{where}: action_ids are not unique")
        for index, element in enumerate(elements):
            if _dict(element).get("type") == "button":
                _check_button(problems, f"{where} button {index}", element)


def limit_problems(message: Message) -> list[str]:
    """List, in words, every way ``message`` breaks a Slack limit; an empty list means it is fine.

    Checks Slack's documented limits, the ones ``slack_sdk`` does not enforce (50 blocks, field
    length, the whole-message text cap), empty text objects, and runs each block through
    ``slack_sdk``'s own validation.
    """
    problems: list[str] = []
    text = message.text
    if not isinstance(text, str) or not text.strip():
        problems.append("text: the notification fallback is empty")
    elif len(text) > MAX_TEXT:
        problems.append(f"text: {len(text)} characters, more than {MAX_TEXT}")
    blocks = message.blocks
    if len(blocks) > MAX_BLOCKS:
        problems.append(f"message: {len(blocks)} blocks, more than Slack's {MAX_BLOCKS}")
    block_ids: set[str] = set()
    total = 0
    for index, block in enumerate(blocks):
        if not isinstance(block, dict):
            problems.append(f"block {index}: not an object")
            continue
        where = f"block {index} ({block.get('type')})"
        block_id = block.get("block_id")
        if block_id is not None:
            if not isinstance(block_id, str) or not block_id or len(block_id) > MAX_ID:
                problems.append(f"{where}: block_id must be 1–{MAX_ID} characters")
            elif block_id in block_ids:
                problems.append(f"{where}: block_id {block_id!r} is used twice")
            else:
                block_ids.add(block_id)
        for text_object in _text_objects(block):
            value = text_object.get("text")
            if not isinstance(value, str) or not value.strip():
                problems.append(f"{where}: a text object is empty")
            total += _length(text_object)
        _check_block(problems, where, block)
        try:
            parsed = Block.parse(block)
            if parsed is None:
                problems.append(f"{where}: slack_sdk does not know this block type")
            else:
                parsed.to_dict()
        except Exception as error:  # any validation failure is a problem to report, not a crash
            problems.append(f"{where}: {error}")
    if total >= MAX_MESSAGE_BLOCK_TEXT:
        problems.append(
            f"message: {total} characters of block text;"
            f" Slack rejects around {MAX_MESSAGE_BLOCK_TEXT}"
        )
    return problems
