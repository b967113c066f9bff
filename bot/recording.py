"""Where a verified Stripe event is recorded, and becomes state and queued Slack work.

A webhook only records its event (`record_inbound`) and is acknowledged; the delivery worker then
applies what was recorded (`apply_recorded`), oldest first, many events to a transaction. A
replay or a reading of the Events API records and applies at once (`record_event`).

Events arrive late, twice and out of order. An event id seen before is a no-op. A snapshot only
moves forward by the event's `created` (ties broken by how far along the lifecycle the event is),
so a late `delayed` after `delivered` is kept in the history and told in the thread, but never
reverts the card.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
from dataclasses import dataclass, replace
from datetime import datetime
from enum import Enum
from typing import Any

from bot.event_numbers import (
    MalformedEvent,
    OutOfRange,
    check_numbers,
    plausible_timestamp,
    read_json,
)
from bot.jobs import (
    CardJob,
    DirectMessageJob,
    FetchJob,
    NoticeJob,
    OrderReplyJob,
    ProductReplyJob,
)
from bot.model import FINAL_STATUSES, HANDLED_EVENTS, ORDER_EVENTS, Change
from bot.routing import Routing
from bot.storage import Storage, StorageUnavailable, card_key

log = logging.getLogger(__name__)

# Events applied in one transaction of the worker: a burst is applied in a few commits, while one
# batch holds the write lock only a few milliseconds.
APPLY_BATCH = 200
_LATE = ": older than the state kept"

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
    # The channel all the queued rows post into: None when none was queued, or some wait for no
    # channel's slot (a direct message).
    posts_to: str | None = None


def parse_event(raw: bytes, *, numbers: bool = True) -> dict[str, Any]:
    """Parse and shape-check a webhook body (a snapshot or a thin event); raise MalformedEvent
    (OutOfRange for a number climate-bot cannot keep: `check_numbers`, unless `numbers` is False
    for a body checked when it was recorded)."""
    try:
        event = read_json(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedEvent(f"body is not JSON: {exc}") from None
    except RecursionError:
        raise MalformedEvent("body is nested too deeply") from None
    if not isinstance(event, dict):
        raise MalformedEvent("body is not a JSON object")
    if numbers:
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


def _event_row(event: dict[str, Any]) -> dict[str, Any]:
    """The events table's columns for a verified snapshot or thin event, and whether there is
    anything to apply (`to_apply`: an event climate-bot posts about)."""
    if is_thin(event):
        stype = snapshot_type(event)
        related = event.get("related_object") or {}
        handled = stype in HANDLED_EVENTS
        return {
            "type": event["type"],
            "object_kind": _kind(stype) if handled else None,
            "object_id": related.get("id") if handled else None,
            "created": thin_created(event),
            "account": event.get("context") if isinstance(event.get("context"), str) else None,
            "handled": False,  # the snapshot built from it is the handled one
            "change_key": None,
            "to_apply": handled,
        }
    etype = event["type"]
    obj = event["data"]["object"] if etype in HANDLED_EVENTS else None
    return {
        "type": etype,
        "object_kind": _kind(etype) if obj else None,
        "object_id": obj["id"] if obj else None,
        "created": event["created"],
        "account": event.get("account") if isinstance(event.get("account"), str) else None,
        "handled": obj is not None,
        "change_key": change_key(etype, obj, event["created"]) if obj else None,
        "to_apply": obj is not None,
    }


def _kind(event_type: str) -> str:
    return "order" if event_type in ORDER_EVENTS else "product"


def _insert(
    storage: Storage, event: dict[str, Any], raw: str, row: dict[str, Any], **extra: Any
) -> bool:
    fields = {k: v for k, v in row.items() if k != "to_apply"}
    return storage.insert_event(
        event_id=event["id"], livemode=bool(event.get("livemode")), payload=raw, **fields, **extra
    )


def record_inbound(storage: Storage, event: dict[str, Any], raw: str) -> Received:
    """The webhook's whole work: record the verified event (snapshot or thin), to be applied by
    the delivery worker (`apply_recorded`). QUEUED: recorded, to be applied; DUPLICATE: its id or
    its change was recorded before; IGNORED: recorded, nothing to apply."""
    row = _event_row(event)

    def record() -> Received:
        if not _insert(storage, event, raw, row, applied=not row["to_apply"]):
            return Received(Outcome.DUPLICATE)
        return Received(Outcome.QUEUED if row["to_apply"] else Outcome.IGNORED)

    # One transaction, shared with other webhooks arriving at once (group commit): the event is
    # acknowledged only after it is committed.
    return storage.batched(record)


def apply_recorded(
    storage: Storage, *, channel: str, routing: Routing | None, limit: int = APPLY_BATCH
) -> list[Received]:
    """Apply up to `limit` recorded events to their snapshots and queue the Slack work, oldest
    first, in one transaction; an event that cannot be applied (a bug, a payload of a shape no one
    foresaw) is parked with the reason, rolled back alone, and the others go on."""
    results: list[Received] = []
    applied: list[tuple[str, str, bool]] = []
    if not storage.events_to_apply(1):  # a read of an index: most looks find nothing to apply
        return results
    with storage.transaction() as conn:
        # Read again under the write lock: another process may have applied them meanwhile.
        for event_id, payload in storage.events_to_apply(limit):
            conn.execute("SAVEPOINT apply_one")
            try:
                # Its numbers were checked when it was recorded: again, that would be a quarter
                # of the cost of applying it. The shape is checked (another version wrote it?).
                event = parse_event(payload.encode("utf-8"), numbers=False)
                received = _apply(storage, event, channel, routing)
                storage.mark_applied(event_id)
            except (sqlite3.Error, StorageUnavailable):
                raise  # the database's fault, not the event's: the whole batch is tried again
            except Exception as exc:
                conn.execute("ROLLBACK TO apply_one")
                storage.park_event(event_id, f"{type(exc).__name__}: {exc}"[:1000])
                log.exception("event %s could not be applied; parked (climate-bot retry)", event_id)
            else:
                results.append(received)
                applied.append((event_id, event["type"], received.late))
            conn.execute("RELEASE apply_one")
    for event_id, etype, late in applied:  # once committed, outside the write lock
        log.info("stripe event %s (%s) applied%s", event_id, etype, _LATE if late else "")
    return results


def record_event(
    storage: Storage,
    event: dict[str, Any],
    raw: str,
    *,
    channel: str,
    routing: Routing | None = None,
    source: str | None = None,
) -> Received:
    """Record a snapshot `event`, apply it to its snapshot and queue the Slack work, atomically:
    what a replay, a reading of the Events API and a thin event's fetch do (the webhook only
    records, `record_inbound`).

    `source`: where the event came from when not a webhook (``"replay"``), for the record.

    The card goes to `routing`'s channel for the event (default: `channel`); a card that exists
    keeps its channel.
    """
    row = _event_row(event)

    def record() -> Received:
        if not _insert(storage, event, raw, row, source=source):
            return Received(Outcome.DUPLICATE)
        if not row["to_apply"]:
            return Received(Outcome.IGNORED)
        return _apply(storage, event, channel, routing)

    return storage.batched(record)


def _apply(
    storage: Storage, event: dict[str, Any], channel: str, routing: Routing | None
) -> Received:
    """Apply a recorded event: a snapshot to its order's or product's state, with the Slack work
    it makes; a thin event, the fetch of its object."""
    if is_thin(event):
        stype = snapshot_type(event)
        if stype not in HANDLED_EVENTS:
            return Received(Outcome.IGNORED)
        account = event.get("context") if isinstance(event.get("context"), str) else None
        related = event["related_object"]
        storage.enqueue(
            card_key(_kind(stype), related["id"]),
            FetchJob(type=stype, account=account, snapshot_event=event.get("snapshot_event")),
            channel=routing.channel_for(stype, account) if routing is not None else channel,
            event_id=event["id"],
        )
        return Received(Outcome.QUEUED)
    etype = event["type"]
    obj = event["data"]["object"]
    account = event.get("account") if isinstance(event.get("account"), str) else None
    if routing is not None:
        channel = routing.channel_for(etype, account)
    apply = _apply_order if etype in ORDER_EVENTS else _apply_product
    late, posts_to = apply(storage, event, obj, account, channel)
    if late:
        storage.mark_event_late(event["id"])
    return Received(Outcome.QUEUED, late=late, posts_to=posts_to)


def _is_newer(event: dict[str, Any], row: dict[str, Any] | None) -> bool:
    if row is None:
        return True
    mine = (event["created"], RANK[event["type"]])
    return mine >= (row["snapshot_created"], row["snapshot_rank"])


def _stored(
    storage: Storage, event: dict[str, Any], kind: str, object_id: str
) -> tuple[str, dict[str, Any] | None, str | None, bool]:
    """The card key of the object, its stored row and card channel, and whether `event` is newer
    than the snapshot stored."""
    row, card_channel = storage.row_and_card_channel(kind, object_id)
    return card_key(kind, object_id), row, card_channel, _is_newer(event, row)


def _apply_order(
    storage: Storage,
    event: dict[str, Any],
    order: dict[str, Any],
    account: str | None,
    channel: str,
) -> tuple[bool, str]:
    key, row, card_channel, newer = _stored(storage, event, "order", order["id"])
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
    reply = OrderReplyJob(late=not newer, change=change)
    posts_to = _queue(storage, key, event, reply, channel, card_channel)
    if change is not None and newer:
        # On a card that exists, the event's own reply is sent to the channel (see _queue); a
        # new card is itself in the channel, and a reply in its thread names the deciders.
        queue_decision_alerts(
            storage, order["id"], change, posts_to, thread_notice=card_channel is None
        )
        return not newer, None  # and direct messages, which wait for no channel's slot
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
            NoticeJob("decision_needed", broadcast=broadcast),
            channel=channel,
        )
    storage.enqueue(
        direct_message_key(order_id),
        DirectMessageJob(occasion=f"{change['kind']}:{change['at']}"),
        channel=channel,
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
    key, row, card_channel, newer = _stored(storage, event, "product", product["id"])
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
    reply = ProductReplyJob(late=not newer, old_prices=old_prices)
    return not newer, _queue(storage, key, event, reply, channel, card_channel)


def _queue(
    storage: Storage,
    key: str,
    event: dict[str, Any],
    reply: OrderReplyJob | ProductReplyJob,
    channel: str,
    existing: str | None,
) -> str:
    """The first event about an object posts its card; every later one replies and updates it.

    `reply`: the event's reply, queued on a card that exists. `existing` is the card's channel if
    it has one (cards never move). Returns the channel the rows post into.
    """
    if existing is not None:
        if isinstance(reply, OrderReplyJob) and reply.change and not reply.late:
            # A delay or substitution is the decision moment: seen in the channel, not only in a
            # thread of a card that may be weeks old.
            reply = replace(reply, broadcast=True)
        storage.enqueue(key, reply, channel=existing, event_id=event["id"])
        if not reply.late:
            storage.enqueue(key, CardJob(), channel=existing)
        return existing
    storage.enqueue(key, CardJob(), channel=channel, event_id=event["id"], new_card=True)
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
        snapshot = storage.product_snapshot(product)
        return snapshot if snapshot is not None else {"id": product}
    return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
