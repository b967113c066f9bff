"""The outbox's jobs, typed: what each kind of row asks the worker to do, and the facts it carries.

One frozen dataclass per kind of row. A row keeps its job as a `kind` string and a JSON object of
`facts`; `to_facts` and `job_of` are the only code that writes or reads them, so the stored format
lives here alone. It is the format of every earlier version, key for key: a field without a
default is always written (a row without it is not read); one with a default is written only when
it differs from it, and a missing one reads as the default, as the facts were always read. Facts
no field names are not read: direct-message rows of earlier versions carry a `why` (change or
reminder, which their occasion already says), and an earlier version parks a row without it.

Each class also says what the outbox's queries need to know of its rows (`posts`, `needs_card`);
the kind lists those queries use are built from them below (bot/storage/outbox.py).
Which function carries out which job is `Deliverer.handlers` (bot/delivery.py); the outbox queues
them (`Storage.enqueue`) and leases them (`Storage.lease_next`, as a `Lease`).
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from typing import Any, ClassVar, get_args


@dataclass(frozen=True)
class CardJob:
    """Post the card, or update it in place once it is posted: rendered from the state current at
    delivery time, so one queued card row tells every change made before it is delivered."""

    kind: ClassVar[str] = "card"
    # Whether the job may post a new message in its channel, and so waits for the channel's
    # pacing slot (Slack allows about one message per second per channel). A card already
    # posted when its row is leased is updated in place instead (`Lease.posts`).
    posts: ClassVar[bool] = True
    # Whether the job waits until its card is posted: a reply goes in the card's thread.
    needs_card: ClassVar[bool] = False


@dataclass(frozen=True)
class UpdateJob:
    """A `CardJob` queued when its card is already posted: a chat.update, which the channel's
    pacing does not hold. `Storage.enqueue` stores a card row so; leased, it is a card row again."""

    kind: ClassVar[str] = "update"
    posts: ClassVar[bool] = False
    needs_card: ClassVar[bool] = False


# A "reply" row is one of three jobs: a notice when its facts name one, else the reply to the
# Stripe event of the row (its `event_id`) on an order's card or on a product's.


@dataclass(frozen=True)
class OrderReplyJob:
    """A reply in an order card's thread that tells the row's event."""

    kind: ClassVar[str] = "reply"
    posts: ClassVar[bool] = True
    needs_card: ClassVar[bool] = True

    late: bool  # the event is older than what the card shows: told, never applied
    change: dict[str, Any] | None  # the delay or substitution it tells (`Change`'s fields)
    broadcast: bool = False  # sent to the channel too (`reply_broadcast`), naming the deciders


@dataclass(frozen=True)
class ProductReplyJob:
    """A reply in a product card's thread that tells the row's event."""

    kind: ClassVar[str] = "reply"
    posts: ClassVar[bool] = True
    needs_card: ClassVar[bool] = True

    late: bool  # the event is older than what the card shows: told, never applied
    old_prices: dict[str, Any] | None  # the prices before a pricing update
    broadcast: bool = False  # sent to the channel too (`reply_broadcast`); no product reply is


@dataclass(frozen=True)
class NoticeJob:
    """A reply in an order card's thread that tells no event: what the deciders must know now."""

    kind: ClassVar[str] = "reply"
    posts: ClassVar[bool] = True
    needs_card: ClassVar[bool] = True

    notice: str  # decision_needed | decision | reminder | closed
    days: int | None = None  # a reminder's days left to decide
    # Sent to the channel too (`reply_broadcast`); None (not written) for a notice that never is:
    # a decision's own record.
    broadcast: bool | None = None


@dataclass(frozen=True)
class CancelJob:
    """Cancel the card's order at Stripe, as a decider asked (`Decisions.carry_out_cancel`)."""

    kind: ClassVar[str] = "cancel"
    posts: ClassVar[bool] = False
    needs_card: ClassVar[bool] = False

    user: str | None  # the decider who asked
    response_url: str | None  # where the decider is answered


@dataclass(frozen=True)
class FetchJob:
    """Fetch the object a thin event names and ingest it as a snapshot event
    (`ThinEvents.carry_out_fetch`); the thin event is the row's `event_id`."""

    kind: ClassVar[str] = "fetch"
    posts: ClassVar[bool] = False
    needs_card: ClassVar[bool] = False

    type: str  # the snapshot event's type (`climate.order.delayed`)
    account: str | None  # the connected account the event came from (its context)
    snapshot_event: str | None  # the id of the event's snapshot twin, when Stripe names one


@dataclass(frozen=True)
class DirectMessageJob:
    """Direct-message each decider named as a user about the order (`DirectMessages.carry_out`)."""

    kind: ClassVar[str] = "direct_message"
    posts: ClassVar[bool] = False
    needs_card: ClassVar[bool] = False

    occasion: str  # what the message is about (`delayed:<at>`, `…:reminder:<days>`): told once
    days: int | None = None  # the reminder's days left to decide


@dataclass(frozen=True)
class EventsGapNoticeJob:
    """A message of the bot's own at the top of a channel, about no card: that Stripe events may
    be lost (`events_gap_notice` in bot/cards/notices.py). Its row's key is the gap's own."""

    kind: ClassVar[str] = "events_gap_notice"
    posts: ClassVar[bool] = True
    needs_card: ClassVar[bool] = False

    since: int  # the gap's start (unix seconds): when Stripe was last read
    until: int  # its end: the oldest moment Stripe still kept events for
    account: str | None = None  # the connected account whose events, None the platform's


Job = (
    CardJob
    | UpdateJob
    | OrderReplyJob
    | ProductReplyJob
    | NoticeJob
    | CancelJob
    | FetchJob
    | DirectMessageJob
    | EventsGapNoticeJob
)

JOBS: tuple[type[Job], ...] = get_args(Job)  # every job, in the union's order
# The jobs that are Slack messages of the card's own, delivered by the Deliverer itself; the
# others are work, carried out by the functions registered for them.
CARD_JOBS = (CardJob, UpdateJob)
REPLY_JOBS = (OrderReplyJob, ProductReplyJob, NoticeJob)


def _kinds(jobs: tuple[type[Job], ...]) -> tuple[str, ...]:
    """The kinds of `jobs`, each once, in their order."""
    return tuple(dict.fromkeys(job.kind for job in jobs))


def _check_kinds() -> None:
    """The outbox reads a row's kind alone, so jobs that share a kind must agree on what the
    queries need of them; the reply jobs must share one (`job_of` tells them apart)."""
    for kind in _kinds(JOBS):
        alike = {(job.posts, job.needs_card) for job in JOBS if job.kind == kind}
        if len(alike) > 1:
            raise TypeError(f"the jobs of kind {kind!r} disagree on posts or needs_card")
    if len(_kinds(REPLY_JOBS)) != 1:
        raise TypeError("the reply jobs must share one kind")


_check_kinds()

# What the outbox's queries know of a row, by its kind (bot/storage/outbox.py): the rows that may
# post a new message wait for their channel's pacing slot, the rows that need their card wait
# for it to be posted, and the card's own rows are queued once (`Storage.enqueue`).
POSTING_KINDS = _kinds(tuple(job for job in JOBS if job.posts))
NEEDS_CARD_KINDS = _kinds(tuple(job for job in JOBS if job.needs_card))
CARD_KINDS = _kinds(CARD_JOBS)

[_REPLY_KIND] = _kinds(REPLY_JOBS)
_BY_KIND: dict[str, type[Job]] = {job.kind: job for job in JOBS if job not in REPLY_JOBS}
# Leased, an update row is the card's job again: delivered alike, as an update while the card
# is posted (`Lease.card_ts`).
_BY_KIND[UpdateJob.kind] = CardJob


class NotYet(Exception):
    """Raised by a job's function when what the job needs is still queued (a direct message's
    card not yet posted): the job is tried again after the usual back-off, without the
    traceback an error gets."""


class UnreadableJob(ValueError):
    """A row whose kind or facts no job of this version reads: parked, never guessed at."""


def to_facts(job: Job) -> dict[str, Any]:
    """The facts a row keeps for `job` (its kind is `job.kind`)."""
    return {
        f.name: getattr(job, f.name)
        for f in fields(job)
        if f.default is MISSING or getattr(job, f.name) != f.default
    }


def job_of(kind: str, facts: Any, card_key: str) -> Job:
    """The job a row stands for, from its `kind`, its `facts` (their JSON, read) and its card's
    key; raises UnreadableJob for a row of an unknown kind, or whose facts are not an object or
    lack one its kind always carries."""
    if not isinstance(facts, dict):
        raise UnreadableJob(f"{kind} row whose facts are not an object")
    if kind == _REPLY_KIND and facts.get("notice"):
        cls: type[Job] = NoticeJob
    elif kind == _REPLY_KIND:
        cls = OrderReplyJob if card_key.startswith("order:") else ProductReplyJob
    elif kind in _BY_KIND:
        cls = _BY_KIND[kind]
    else:
        raise UnreadableJob(f"unknown outbox kind {kind!r}")
    missing = [f.name for f in fields(cls) if f.default is MISSING and f.name not in facts]
    if missing:
        raise UnreadableJob(f"{kind} row without {', '.join(missing)}")
    return cls(**{f.name: facts[f.name] for f in fields(cls) if f.name in facts})
