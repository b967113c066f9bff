"""The outbox's jobs, typed: what each kind of row asks the worker to do, and the facts it carries.

One frozen dataclass per kind of row. A row keeps its job as a `kind` string and a JSON object of
`facts`; `to_facts` and `job_of` are the only code that writes or reads them, so the stored format
lives here alone. It is the format of every earlier version, key for key: a field without a
default is always written (a row without it is not read); one with a default is written only when
it differs from it, and a missing one reads as the default, as the facts were always read.

Which function carries out which job is `Deliverer.handlers` (bot/delivery.py); the outbox queues
them (`Storage.enqueue`).
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from bot.storage import OutboxRow


@dataclass(frozen=True)
class CardJob:
    """Post the card, or update it in place once it is posted: rendered from the state current at
    delivery time, so one queued card row tells every change made before it is delivered."""

    kind: ClassVar[str] = "card"


@dataclass(frozen=True)
class UpdateJob:
    """A `CardJob` queued when its card is already posted: a chat.update, which the channel's
    pacing does not hold. `Storage.enqueue` stores a card row so; leased, it is a card row again."""

    kind: ClassVar[str] = "update"


# A "reply" row is one of three jobs: a notice when its facts name one, else the reply to the
# Stripe event of the row (its `event_id`) on an order's card or on a product's.


@dataclass(frozen=True)
class OrderReplyJob:
    """A reply in an order card's thread that tells the row's event."""

    kind: ClassVar[str] = "reply"

    late: bool  # the event is older than what the card shows: told, never applied
    change: dict[str, Any] | None  # the delay or substitution it tells (`Change`'s fields)
    broadcast: bool = False  # sent to the channel too (`reply_broadcast`), naming the deciders


@dataclass(frozen=True)
class ProductReplyJob:
    """A reply in a product card's thread that tells the row's event."""

    kind: ClassVar[str] = "reply"

    late: bool  # the event is older than what the card shows: told, never applied
    old_prices: dict[str, Any] | None  # the prices before a pricing update
    broadcast: bool = False  # sent to the channel too (`reply_broadcast`); no product reply is


@dataclass(frozen=True)
class NoticeJob:
    """A reply in an order card's thread that tells no event: what the deciders must know now."""

    kind: ClassVar[str] = "reply"

    notice: str  # decision_needed | decision | reminder | closed
    days: int | None = None  # a reminder's days left to decide
    # Sent to the channel too (`reply_broadcast`); None (not written) for a notice that never is:
    # a decision's own record.
    broadcast: bool | None = None


@dataclass(frozen=True)
class CancelJob:
    """Cancel the card's order at Stripe, as a decider asked (`Decisions.carry_out_cancel`)."""

    kind: ClassVar[str] = "cancel"

    user: str | None  # the decider who asked
    response_url: str | None  # where the decider is answered


@dataclass(frozen=True)
class FetchJob:
    """Fetch the object a thin event names and ingest it as a snapshot event
    (`ThinEvents.carry_out_fetch`); the thin event is the row's `event_id`."""

    kind: ClassVar[str] = "fetch"

    type: str  # the snapshot event's type (`climate.order.delayed`)
    account: str | None  # the connected account the event came from (its context)
    snapshot_event: str | None  # the id of the event's snapshot twin, when Stripe names one


@dataclass(frozen=True)
class DirectMessageJob:
    """Direct-message each decider named as a user about the order (`DirectMessages.carry_out`)."""

    kind: ClassVar[str] = "direct_message"

    occasion: str  # what the message is about (`delayed:<at>`, `…:reminder:<days>`): told once
    why: str  # change | reminder, for the record (nothing reads it)
    days: int | None = None  # the reminder's days left to decide


Job = (
    CardJob
    | UpdateJob
    | OrderReplyJob
    | ProductReplyJob
    | NoticeJob
    | CancelJob
    | FetchJob
    | DirectMessageJob
)

# The jobs that are Slack messages of the card's own, delivered by the Deliverer itself; the
# others are work, carried out by the functions registered for them.
CARD_JOBS = (CardJob, UpdateJob)
REPLY_JOBS = (OrderReplyJob, ProductReplyJob, NoticeJob)

_BY_KIND: dict[str, type[Job]] = {
    job.kind: job for job in (CardJob, UpdateJob, CancelJob, FetchJob, DirectMessageJob)
}


class UnreadableJob(ValueError):
    """A row whose kind or facts no job of this version reads: parked, never guessed at."""


def to_facts(job: Job) -> dict[str, Any]:
    """The facts a row keeps for `job` (its kind is `job.kind`)."""
    return {
        f.name: getattr(job, f.name)
        for f in fields(job)
        if f.default is MISSING or getattr(job, f.name) != f.default
    }


def job_of(row: OutboxRow) -> Job:
    """The job a leased row stands for; raises UnreadableJob for one of an unknown kind or
    without a fact its kind always carries."""
    if row.kind == "reply" and row.facts.get("notice"):
        cls: type[Job] = NoticeJob
    elif row.kind == "reply":
        cls = OrderReplyJob if row.card_key.startswith("order:") else ProductReplyJob
    elif row.kind in _BY_KIND:
        cls = _BY_KIND[row.kind]
    else:
        raise UnreadableJob(f"unknown outbox kind {row.kind!r}")
    missing = [f.name for f in fields(cls) if f.default is MISSING and f.name not in row.facts]
    if missing:
        raise UnreadableJob(f"{row.kind} row without {', '.join(missing)}")
    return cls(**{f.name: row.facts[f.name] for f in fields(cls) if f.name in row.facts})
