"""Where a verified Stripe event becomes state and queued Slack work, in ONE transaction.

Events arrive late, twice and out of order. An event id seen before is a no-op. A snapshot only
moves forward by the event's `created` (ties broken by how far along the lifecycle the event is),
so a late `delayed` after `delivered` is kept in the history and told in the thread, but never
reverts the card.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from bot.model import FINAL_STATUSES, HANDLED_EVENTS, ORDER_EVENTS, Change
from bot.routing import Routing
from bot.storage import Storage, card_key

# How far along its lifecycle an event puts an object; breaks ties between events of one second.
RANK = {
    "climate.order.created": 0,
    "climate.order.delayed": 1,
    "climate.order.product_substituted": 1,
    "climate.order.delivered": 2,
    "climate.order.canceled": 2,
    "climate.product.created": 0,
    "climate.product.pricing_updated": 1,
}


class Outcome(Enum):
    QUEUED = "queued"  # applied (or recorded as late) and Slack work queued
    DUPLICATE = "duplicate"  # this event id was recorded before: nothing to do
    IGNORED = "ignored"  # recorded, but not an event climate-bot posts about


@dataclass(frozen=True)
class Received:
    outcome: Outcome
    late: bool = False
    posts_to: str | None = None  # the channel the queued rows post into (None: no rows queued)


class MalformedEvent(ValueError):
    """The body is signed but is not a Stripe event climate-bot can read."""


class OutOfRange(MalformedEvent):
    """A number in the event that climate-bot cannot keep; the message names its field."""


# -- the numbers an event may carry ----------------------------------------------------------
#
# What climate-bot keeps of a number ends up in SQLite, whose INTEGER is a signed 64-bit value
# (Python's sqlite3 raises OverflowError for anything larger, mid-transaction), or on a card.
# So a signed event is refused, with a 400 naming the field and nothing recorded, when:
#
# - any integer anywhere in it lies outside the signed 64-bit range, or any number is not a
#   finite one (Python's json reads NaN, Infinity and 1e400, which JSON itself does not allow);
# - a timestamp is not a moment from 1970-01-01 to the end of 2100 (UTC). Timestamps are the
#   event's `created` and, inside a Climate event's data, every `created` and `..._at` however
#   deeply nested (an expanded product, each delivery). Stripe stamps things as they happen, in
#   unix seconds: it never sends one before 1970, and none decades ahead (its fixtures use
#   1234567890, our tests small values like 100, which stay fine). The end of 2100 also keeps a
#   decision deadline (a stamp + 30 days) and every date a card shows well inside what Python and
#   SQLite can compute with.
# - a delivery year (`expected_delivery_year`, `delivery_year`) is not from 1970 to 2100: the
#   same span, so a year and the moments around it agree.
#
# Amounts (`amount_total`, prices per tonne …) are only held to the 64-bit range: Stripe's own.
# Metadata is not read, so its values are not held to the rules for timestamps and years.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
EARLIEST_TIMESTAMP = 0  # 1970-01-01T00:00:00Z
LATEST_TIMESTAMP = 4_133_980_799  # 2100-12-31T23:59:59Z
EARLIEST_YEAR, LATEST_YEAR = 1970, 2100
_YEAR_FIELDS = frozenset({"expected_delivery_year", "delivery_year"})
# An integer of more digits than this cannot be in range; Python would refuse to even read one of
# more than 4,300 digits (ValueError), so longer ones are not converted at all.
_MAX_INTEGER_DIGITS = len(str(INT64_MIN))
_PATH_KEY_LIMIT = 40


class _LongInteger:
    """An integer of the body too long to be in range, kept unconverted until it is named."""

    __slots__ = ()


_LONG_INTEGER = _LongInteger()


def _read_integer(text: str) -> int | _LongInteger:
    return int(text) if len(text) <= _MAX_INTEGER_DIGITS else _LONG_INTEGER


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def plausible_timestamp(value: Any) -> bool:
    """True for a unix timestamp climate-bot accepts (see the rule above)."""
    return _whole(value) and EARLIEST_TIMESTAMP <= value <= LATEST_TIMESTAMP


def check_numbers(event: dict[str, Any]) -> None:
    """Raise OutOfRange naming the first number of `event` (in document order) that breaks the
    rule above."""
    climate = event.get("type") in HANDLED_EVENTS
    if _breaks_rule(event, climate):
        raise OutOfRange(_first_breach(event, climate))


def _breaks_rule(event: dict[str, Any], climate: bool) -> bool:
    """Whether any number of `event` breaks the rule: the quick look every webhook gets (no path
    is kept; `_first_breach` names the field)."""
    # (container, whether it is the envelope, whether the field rules apply within it); a stack,
    # so that depth costs no recursion.
    stack: list[tuple[Any, bool, bool]] = [(event, True, False)]
    while stack:
        node, envelope, ruled = stack.pop()
        for key, value in node.items() if isinstance(node, dict) else enumerate(node):
            kind = type(value)
            if kind is str or kind is bool or value is None:  # most values: nothing to check
                continue
            if kind is dict or kind is list:
                inside = ruled or (envelope and climate and key == "data")
                stack.append((value, False, inside and key != "metadata"))
            elif _number_problem(value, key, envelope=envelope, ruled=ruled):
                return True
    return False


def _first_breach(event: dict[str, Any], climate: bool) -> str:
    """`<field>: <what is wrong>` for the first number of `event` that breaks the rule."""
    stack: list[tuple[tuple[str | int, ...], Any, bool]] = [((), event, False)]
    while stack:
        path, value, ruled = stack.pop()
        if isinstance(value, dict | list):
            envelope = path == ()
            children = value.items() if isinstance(value, dict) else enumerate(value)
            for key, child in reversed(list(children)):
                inside = ruled or (envelope and climate and key == "data")
                stack.append(((*path, key), child, inside and key != "metadata"))
            continue
        problem = _number_problem(value, path[-1], envelope=len(path) == 1, ruled=ruled)
        if problem:
            return f"{_dotted(path)}: {problem}"
    return "a number: out of range"  # not reached: called only when `_breaks_rule` found one


def _number_problem(value: Any, name: str | int, *, envelope: bool, ruled: bool) -> str | None:
    """What is wrong with the number `value` of field `name`, or None (also for what is no
    number). `envelope`: a field of the event itself; `ruled`: inside a Climate event's data,
    outside metadata, where the rules for timestamps and years apply."""
    if value is _LONG_INTEGER:
        return "integer out of range"
    if isinstance(value, float):
        return None if math.isfinite(value) else "number is not finite"
    if not _whole(value):
        return None
    if not INT64_MIN <= value <= INT64_MAX:
        return "integer out of range"
    if not isinstance(name, str):
        return None
    stamp = (envelope and name == "created") or (
        ruled and (name == "created" or name.endswith("_at"))
    )
    if stamp and not plausible_timestamp(value):
        return "timestamp out of range"
    if ruled and name in _YEAR_FIELDS and not EARLIEST_YEAR <= value <= LATEST_YEAR:
        return "year out of range"
    return None


def _dotted(path: tuple[str | int, ...]) -> str:
    """A field's path as the 400 names it: `data.object.delivery_details[0].delivered_at`."""
    out = ""
    for step in path:
        if isinstance(step, int):
            out += f"[{step}]"
            continue
        key = "".join(char for char in step if char.isprintable())
        if len(key) > _PATH_KEY_LIMIT:
            key = key[: _PATH_KEY_LIMIT - 1] + "…"
        out += f".{key}" if out else key
    return out


def parse_event(raw: bytes) -> dict[str, Any]:
    """Parse and shape-check a webhook body (a snapshot or a thin event); raise MalformedEvent
    (OutOfRange for a number climate-bot cannot keep: `check_numbers`)."""
    try:
        event = json.loads(raw, parse_int=_read_integer)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedEvent(f"body is not JSON: {exc}") from None
    except RecursionError:
        raise MalformedEvent("body is nested too deeply") from None
    if not isinstance(event, dict):
        raise MalformedEvent("body is not a JSON object")
    check_numbers(event)
    if not isinstance(event.get("id"), str) or not event["id"]:
        raise MalformedEvent("event has no id")
    if not isinstance(event.get("type"), str):
        raise MalformedEvent("event has no type")
    if is_thin(event):
        return _check_thin(event)
    if not isinstance(event.get("created"), int):
        raise MalformedEvent("event has no integer created")
    if event["type"] in HANDLED_EVENTS:
        obj = (
            (event.get("data") or {}).get("object") if isinstance(event.get("data"), dict) else None
        )
        if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
            raise MalformedEvent("event carries no data.object with an id")
        expected = "climate.order" if event["type"] in ORDER_EVENTS else "climate.product"
        if obj.get("object") != expected:
            raise MalformedEvent(f"data.object is not a {expected}")
    return event


def is_thin(event: dict[str, Any]) -> bool:
    """A thin event (event destinations, `v1.climate.*`): it names its object, carries no data."""
    return event.get("object") == "v2.core.event"


def thin_created(event: dict[str, Any]) -> int:
    """A thin event's ISO-8601 `created` as unix seconds."""
    return int(datetime.fromisoformat(event["created"].replace("Z", "+00:00")).timestamp())


def _check_thin(event: dict[str, Any]) -> dict[str, Any]:
    try:
        created = thin_created(event)
    except (KeyError, AttributeError, ValueError):
        raise MalformedEvent("thin event has no ISO-8601 created") from None
    if not plausible_timestamp(created):
        raise OutOfRange("created: timestamp out of range")
    if snapshot_type(event) in HANDLED_EVENTS:
        related = event.get("related_object")
        if not isinstance(related, dict) or not isinstance(related.get("id"), str):
            raise MalformedEvent("thin event names no related_object")
    return event


def snapshot_type(thin_event: dict[str, Any]) -> str:
    """`v1.climate.order.delayed` → `climate.order.delayed`."""
    return thin_event["type"].removeprefix("v1.")


def change_key(event_type: str, obj: dict[str, Any], created: int) -> str | None:
    """What identifies the change an event tells, whichever event tells it.

    A thin event and its snapshot twin have different ids but the same change key, so the change
    is recorded (and posted) once; two changes never share one. An order's changes are stamped
    on the order itself (`delayed_at` …). A product's price or availability changes carry no
    stamp of their own, so the event's `created` second and what it says stand for it: a thin
    event and its twin are created together and say the same, while prices that go A → B → A, a
    change of the tonnes available only, or two changes within one second are each their own.
    """
    stamp_field = {
        "climate.order.created": "created",
        "climate.order.delayed": "delayed_at",
        "climate.order.product_substituted": "product_substituted_at",
        "climate.order.delivered": "delivered_at",
        "climate.order.canceled": "canceled_at",
        "climate.product.created": "created",
    }.get(event_type)
    if stamp_field is not None:
        stamp = obj.get(stamp_field)
        return f"{event_type}:{obj.get('id')}:{stamp}" if stamp is not None else None
    if event_type == "climate.product.pricing_updated":
        what = [obj.get("current_prices_per_metric_ton"), obj.get("metric_tons_available")]
        text = json.dumps(what, sort_keys=True, default=str)
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        return f"{event_type}:{obj.get('id')}:{created}:{digest}"
    return None


def record_thin_event(
    storage: Storage, event: dict[str, Any], raw: str, *, channel: str, routing: Routing | None
) -> Received:
    """Record a thin event and queue the fetch of its object (the worker asks Stripe, then
    ingests it like a snapshot); nothing is fetched on the receiving path."""
    stype = snapshot_type(event)
    related = event.get("related_object") or {}
    handled = stype in HANDLED_EVENTS
    kind = None if not handled else ("order" if stype in ORDER_EVENTS else "product")
    account = event.get("context") if isinstance(event.get("context"), str) else None
    if routing is not None:
        channel = routing.channel_for(stype, account)

    def record() -> Received:
        fresh = storage.insert_event(
            event_id=event["id"],
            type=event["type"],
            object_kind=kind,
            object_id=related.get("id") if handled else None,
            created=thin_created(event),
            livemode=bool(event.get("livemode")),
            account=account,
            handled=False,  # the snapshot built from it is the handled one
            payload=raw,
        )
        if not fresh:
            return Received(Outcome.DUPLICATE)
        if not handled:
            return Received(Outcome.IGNORED)
        storage.enqueue(
            card_key(kind, related["id"]),
            "fetch",
            channel=channel,
            event_id=event["id"],
            facts={
                "type": stype,
                "account": account,
                "snapshot_event": event.get("snapshot_event"),
            },
        )
        return Received(Outcome.QUEUED)

    return storage.batched(record)


def record_event(
    storage: Storage,
    event: dict[str, Any],
    raw: str,
    *,
    channel: str,
    routing: Routing | None = None,
    source: str | None = None,
) -> Received:
    """Record `event`, apply it to its snapshot and queue the Slack work, atomically.

    `source`: where the event came from when not a webhook (``"replay"``), for the record.

    The card goes to `routing`'s channel for the event (default: `channel`); a card that exists
    keeps its channel.
    """
    etype = event["type"]
    handled = etype in HANDLED_EVENTS
    obj = event["data"]["object"] if handled else None
    kind = None if obj is None else ("order" if etype in ORDER_EVENTS else "product")
    account = event.get("account") if isinstance(event.get("account"), str) else None
    if routing is not None:
        channel = routing.channel_for(etype, account)

    def record() -> Received:
        fresh = storage.insert_event(
            event_id=event["id"],
            type=etype,
            object_kind=kind,
            object_id=obj["id"] if obj else None,
            created=event["created"],
            livemode=bool(event.get("livemode")),
            account=account,
            handled=handled,
            payload=raw,
            change_key=change_key(etype, obj, event["created"]) if obj else None,
            source=source,
        )
        if not fresh:
            return Received(Outcome.DUPLICATE)
        if obj is None:
            return Received(Outcome.IGNORED)
        apply = _apply_order if kind == "order" else _apply_product
        late, posts_to = apply(storage, event, obj, account, channel)
        if late:
            storage.mark_event_late(event["id"])
        return Received(Outcome.QUEUED, late=late, posts_to=posts_to)

    # One transaction, shared with other webhooks arriving at once (group commit): the event is
    # acknowledged only after it is committed.
    return storage.batched(record)


def _is_newer(event: dict[str, Any], row: dict[str, Any] | None) -> bool:
    if row is None:
        return True
    mine = (event["created"], RANK[event["type"]])
    return mine >= (row["snapshot_created"], row["snapshot_rank"])


def _apply_order(
    storage: Storage,
    event: dict[str, Any],
    order: dict[str, Any],
    account: str | None,
    channel: str,
) -> tuple[bool, str]:
    key = card_key("order", order["id"])
    row, card_channel = storage.row_and_card_channel("order", order["id"])
    newer = _is_newer(event, row)
    # A late event must not resurrect buttons on a delivered or cancelled order.
    if newer and row is not None and row["status"] in FINAL_STATUSES:
        newer = order.get("status") in FINAL_STATUSES
    previous = row["snapshot"] if row else None
    change = _change_of(event, order, previous, storage)
    if newer:
        kept = row["change"] if row else None
        new_change = change or kept
        waiting = row["next_change"] if row else None
        if (
            row is not None
            and row["decision"] == "cancelling"
            and change
            and kept
            and Change(**change).decision_deadline != Change(**kept).decision_deadline
        ):
            # A cancel is being carried out: the decision under way is not reset. The new change
            # waits and is decided once the cancel settles (Storage.settle_decision).
            new_change, waiting = kept, change
        storage.save_order(
            order,
            account=account,
            snapshot_created=event["created"],
            snapshot_rank=RANK[event["type"]],
            headline_event=event["type"],
            change=new_change,
            decision_deadline=(Change(**new_change).decision_deadline if new_change else None),
            next_change=waiting,
        )
    facts = {"late": not newer, "change": change}
    posts_to = _queue(storage, key, event, facts, channel, card_channel)
    if change is not None and newer:
        # On a card that exists, the event's own reply is sent to the channel (see _queue); a
        # new card is itself in the channel, and a reply in its thread names the deciders.
        queue_decision_alerts(
            storage, order["id"], change, posts_to, thread_notice=card_channel is None
        )
    return not newer, posts_to


def queue_decision_alerts(
    storage: Storage,
    order_id: str,
    change: dict[str, Any],
    channel: str,
    *,
    thread_notice: bool,
    broadcast: bool = False,
) -> None:
    """Make sure the deciders notice a change that awaits their decision.

    `thread_notice`: a "decision needed" reply naming the deciders goes to the card's thread
    (sent to the channel too with `broadcast`); without it the caller already queued the
    channel-visible message. Each decider who is a user also gets a direct message (a job of its
    own, so a failed one never holds the card's rows).
    """
    if thread_notice:
        storage.enqueue(
            card_key("order", order_id),
            "reply",
            channel=channel,
            facts={"notice": "decision_needed", "broadcast": broadcast},
        )
    storage.enqueue(
        direct_message_key(order_id),
        "direct_message",
        channel=channel,
        facts={"occasion": f"{change['kind']}:{change['at']}", "why": "change"},
    )


def direct_message_key(order_id: str) -> str:
    """The outbox key of an order's direct messages: apart from its card's, so that a direct
    message being retried never holds the card's own rows."""
    return f"dm:{order_id}"


def _apply_product(
    storage: Storage,
    event: dict[str, Any],
    product: dict[str, Any],
    account: str | None,
    channel: str,
) -> tuple[bool, str]:
    key = card_key("product", product["id"])
    row, card_channel = storage.row_and_card_channel("product", product["id"])
    newer = _is_newer(event, row)
    old_prices = None
    if event["type"] == "climate.product.pricing_updated":
        stored = row["snapshot"].get("current_prices_per_metric_ton") if row else None
        diff = _previous_attributes(event).get("current_prices_per_metric_ton")
        if isinstance(diff, dict):
            # previous_attributes gives nested objects as diffs: only what changed is in it.
            base = (
                stored if isinstance(stored, dict) else product.get("current_prices_per_metric_ton")
            )
            old_prices = _merged(base if isinstance(base, dict) else {}, diff)
        elif newer and isinstance(stored, dict):
            old_prices = stored
    if newer:
        storage.save_product(
            product,
            account=account,
            snapshot_created=event["created"],
            snapshot_rank=RANK[event["type"]],
            headline_event=event["type"],
            old_prices=old_prices if event["type"] == "climate.product.pricing_updated" else None,
        )
    facts = {"late": not newer, "old_prices": old_prices}
    return not newer, _queue(storage, key, event, facts, channel, card_channel)


def _queue(
    storage: Storage,
    key: str,
    event: dict[str, Any],
    facts: dict[str, Any],
    channel: str,
    existing: str | None,
) -> str:
    """The first event about an object posts its card; every later one replies and updates it.

    `existing` is the card's channel if it has one (cards never move). Returns the channel the
    rows post into.
    """
    if existing is not None:
        if facts.get("change") and not facts["late"]:
            # A delay or substitution is the decision moment: seen in the channel, not only in a
            # thread of a card that may be weeks old.
            facts = {**facts, "broadcast": True}
        storage.enqueue(key, "reply", channel=existing, event_id=event["id"], facts=facts)
        if not facts["late"]:
            storage.enqueue(key, "card", channel=existing)
        return existing
    storage.enqueue(key, "card", channel=channel, event_id=event["id"], new_card=True)
    return channel


def _change_of(
    event: dict[str, Any],
    order: dict[str, Any],
    previous: dict[str, Any] | None,
    storage: Storage,
) -> dict[str, Any] | None:
    """What a delay or substitution changed, from the previous snapshot or previous_attributes."""
    prev_attrs = _previous_attributes(event)
    if event["type"] == "climate.order.delayed":
        old_year = prev_attrs.get("expected_delivery_year")
        if old_year is None and previous is not None:
            old_year = previous.get("expected_delivery_year")
        new_year = order.get("expected_delivery_year")
        if old_year == new_year:
            old_year = None
        return {
            "kind": "delayed",
            "at": _int(order.get("delayed_at")) or event["created"],
            "old_year": old_year if isinstance(old_year, int) else None,
            "new_year": new_year if isinstance(new_year, int) else None,
        }
    if event["type"] == "climate.order.product_substituted":
        old = prev_attrs.get("product")
        if old is None and previous is not None:
            old = previous.get("product")
        new = order.get("product")
        return {
            "kind": "product_substituted",
            "at": _int(order.get("product_substituted_at")) or event["created"],
            "old_product": _product_ref(old, storage),
            "new_product": _product_ref(new, storage),
        }
    return None


def _merged(prices: dict[str, Any], diff: dict[str, Any]) -> dict[str, Any]:
    """The prices before a change: `prices` with a partial `previous_attributes` diff laid over
    them, per currency (a currency the diff gives as null was not offered before)."""
    before = {code: dict(price) for code, price in prices.items() if isinstance(price, dict)}
    for code, price in diff.items():
        if price is None or price == "":
            before.pop(code, None)
        elif isinstance(price, dict):
            before[code] = {**before.get(code, {}), **price}
    return before


def _previous_attributes(event: dict[str, Any]) -> dict[str, Any]:
    """`data.previous_attributes` when it is an object (it is optional, and not documented for
    Climate events)."""
    previous = event["data"].get("previous_attributes")
    return previous if isinstance(previous, dict) else {}


def _product_ref(product: Any, storage: Storage) -> dict[str, Any] | None:
    """A product as fully as known: the expanded object, our snapshot, or just its id."""
    if isinstance(product, dict):
        return product
    if isinstance(product, str):
        row = storage.product_row(product)
        return row["snapshot"] if row else {"id": product}
    return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
