"""`climate-bot replay`: fetch missed Climate events from Stripe's Events API and receive them
exactly as webhooks are received.

Every page is fetched before anything is written, so an outage half-way leaves the database as it
was. Events are then fed oldest first (the order they happened, so an order's card is born from
its first event) through `parse_event` and `record_event`, each in its own transaction: an id
already recorded is a no-op, and the running bot's delivery worker posts what was queued. SQLite's
write lock makes this safe beside a serving bot.
"""

from __future__ import annotations

import calendar
import contextlib
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Protocol

from bot.event_numbers import MalformedEvent
from bot.model import HANDLED_EVENTS
from bot.recording import Outcome, parse_event, record_event
from bot.settings import Settings
from bot.storage import Storage

log = logging.getLogger(__name__)

# Stripe keeps events for 30 days: `GET /v1/events` lists nothing older.
RETENTION_SECONDS = 30 * 24 * 60 * 60
PAGE_SIZE = 100  # Stripe's maximum
MAX_PAGES = 1000  # 100,000 events: far beyond 30 days of Climate events; stops a runaway cursor

Progress = Callable[[list[dict[str, Any]]], AbstractContextManager[Iterable[dict[str, Any]]]]


class EventSource(Protocol):
    """What replay needs from Stripe: `StripeGateway.events`."""

    def events(
        self,
        *,
        types: list[str] | tuple[str, ...],
        created_gte: int | None = None,
        created_lte: int | None = None,
        starting_after: str | None = None,
        limit: int = 100,
        account: str | None = None,
    ) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ListedEvent:
    """One event as replay lists it: enough to recognise it, and whether it was new."""

    id: str
    type: str
    object_id: str | None
    created: int
    status: str  # "new", "skipped" (already recorded) or "failed"
    error: str | None = None

    def line(self) -> str:
        when = datetime.fromtimestamp(self.created, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        note = {"new": "", "skipped": "  (already recorded)", "failed": f"  FAILED: {self.error}"}
        return f"{self.id}  {self.type:<34} {self.object_id or '-'}  {when}{note[self.status]}"


@dataclass
class ReplaySummary:
    """What a replay did (or, for a dry run, would do), event by event, oldest first."""

    dry_run: bool = False
    events: list[ListedEvent] = field(default_factory=list)

    def _count(self, status: str) -> int:
        return sum(1 for e in self.events if e.status == status)

    @property
    def new(self) -> int:
        return self._count("new")

    @property
    def skipped(self) -> int:
        return self._count("skipped")

    @property
    def failed(self) -> int:
        return self._count("failed")

    def __str__(self) -> str:
        if self.dry_run:
            return (
                f"dry run: {self.new} would be new, {self.skipped} skipped (already recorded), "
                f"{self.failed} failed; nothing was written"
            )
        return f"{self.new} new, {self.skipped} skipped (already recorded), {self.failed} failed"


def parse_when(text: str, *, end_of_day: bool = False) -> int:
    """Unix seconds from `2026-11-01` (UTC midnight, or 23:59:59 with `end_of_day`), an ISO
    datetime (`2026-11-01T12:00:00Z`; without an offset it is UTC) or unix seconds."""
    text = text.strip()
    if re.fullmatch(r"\d+", text):
        return int(text)
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            start = calendar.timegm(date.fromisoformat(text).timetuple())
            return start + 86_399 if end_of_day else start
        moment = datetime.fromisoformat(text)
    except ValueError:
        pass
    else:
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return int(moment.timestamp())
    raise ValueError(
        f"{text!r} is not a date (2026-11-01), an ISO datetime (2026-11-01T12:00:00Z) "
        "or unix seconds"
    )


def retention_warning(since: int, *, now: float | None = None) -> str | None:
    """A sentence for the operator when `since` is older than what Stripe still keeps."""
    oldest = int(now if now is not None else time.time()) - RETENTION_SECONDS
    if since >= oldest:
        return None
    day = datetime.fromtimestamp(oldest, UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"Stripe keeps events for 30 days only: nothing before {day} can be replayed; "
        "events older than that are gone."
    )


def fetch_events(
    stripe: EventSource,
    *,
    since: int,
    until: int | None = None,
    page_size: int = PAGE_SIZE,
    accounts: Iterable[str | None] = (None,),
) -> list[dict[str, Any]]:
    """Every Climate event created in [since, until] on each of `accounts` (None: the
    platform's own; `acct_…`: a connected account's), all pages, oldest first.

    Raises the gateway's `StripeFailure` (nothing fetched is returned then).
    """
    events: list[dict[str, Any]] = []
    for account in dict.fromkeys(accounts):  # each account once, in the order given
        events.extend(_account_events(stripe, account, since, until, page_size))
    events.sort(key=_created_of)  # stable: each account's events keep their creation order
    return events


def _account_events(
    stripe: EventSource, account: str | None, since: int, until: int | None, page_size: int
) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    after: str | None = None
    for _ in range(MAX_PAGES):
        page = stripe.events(
            types=list(HANDLED_EVENTS),
            created_gte=since,
            created_lte=until,
            starting_after=after,
            limit=page_size,
            account=account,
        )
        data = page.get("data") or []
        events.extend(data)
        if not page.get("has_more") or not data:
            break
        after = data[-1]["id"]
    else:
        log.warning("replay stopped after %s pages of events", MAX_PAGES)
    for event in events:
        # A connected account's events say so, as its webhooks do; they are handled on it.
        if account and isinstance(event, dict) and not event.get("account"):
            event["account"] = account
    # Stripe lists newest first; ties keep Stripe's order reversed, i.e. creation order.
    events.reverse()
    events.sort(key=_created_of)
    return events


def replay_accounts(
    settings: Settings, storage: Storage | None, extra: Iterable[str] = ()
) -> list[str | None]:
    """Whose events to replay: the platform's own, each connected account the routing file names
    or the database has seen, and `extra` (`--account`)."""
    seen = storage.known_accounts() if storage is not None else []
    return [None, *dict.fromkeys([*settings.routing.accounts, *seen, *extra])]


def _created_of(event: Any) -> int:
    created = event.get("created") if isinstance(event, dict) else None
    return created if isinstance(created, int) else 0


def replay(
    stripe: EventSource,
    storage: Storage | None,
    settings: Settings,
    *,
    since: int,
    until: int | None = None,
    dry_run: bool = False,
    page_size: int = PAGE_SIZE,
    progress: Progress | None = None,
    accounts: Iterable[str | None] = (None,),
) -> ReplaySummary:
    """Fetch the Climate events of [since, until] and receive each like a webhook.

    With `dry_run`, nothing is written: each event is only checked and looked up (`storage` may be
    None when there is no database yet). `progress` wraps the list of fetched events, e.g.
    `lambda items: click.progressbar(items)`. Raises `StripeFailure` before writing anything when
    Stripe cannot list the events.
    """
    if storage is None and not dry_run:
        raise ValueError("replay writes to the database: give it the storage")
    events = fetch_events(stripe, since=since, until=until, page_size=page_size, accounts=accounts)
    summary = ReplaySummary(dry_run=dry_run)
    wrap = progress or _no_progress
    with wrap(events) as items:
        for event in items:
            summary.events.append(receive(event, storage, settings, dry_run=dry_run))
    return summary


@contextlib.contextmanager
def _no_progress(items: list[dict[str, Any]]) -> Iterator[Iterable[dict[str, Any]]]:
    yield items


def receive(
    event: dict[str, Any],
    storage: Storage | None,
    settings: Settings,
    *,
    dry_run: bool = False,
    source: str = "replay",
) -> ListedEvent:
    """Receive one listed event as its webhook would have been (`source`: where it came from,
    ``"replay"`` or ``"poll"``); with `dry_run`, only check it and look it up."""
    # The exact bytes a webhook would have carried are not available from a list; the event
    # serialised alone is what gets recorded, like a webhook body.
    raw = json.dumps(event, indent=2, ensure_ascii=False)
    try:
        parsed = parse_event(raw.encode("utf-8"))
    except MalformedEvent as exc:
        return _listed(event, "failed", str(exc))
    if dry_run or storage is None:
        seen = storage is not None and storage.event(parsed["id"]) is not None
        return _listed(parsed, "skipped" if seen else "new")
    try:
        received = record_event(
            storage,
            parsed,
            raw,
            channel=settings.SLACK_CHANNEL,
            routing=settings.routing,  # a new card goes where its webhook would have sent it
            source=source,
        )
    except Exception as exc:
        # One event the bot cannot take (its transaction rolled back) must not stop the others;
        # it is counted, shown, and logged for the operator.
        log.exception("%s could not receive event %s", source, parsed["id"])
        return _listed(parsed, "failed", f"{type(exc).__name__}: {exc}")
    return _listed(parsed, "skipped" if received.outcome is Outcome.DUPLICATE else "new")


def _listed(event: Any, status: str, error: str | None = None) -> ListedEvent:
    envelope = event if isinstance(event, dict) else {}
    data = envelope.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    object_id = obj.get("id") if isinstance(obj, dict) else None
    return ListedEvent(
        id=str(envelope.get("id") or "?"),
        type=str(envelope.get("type") or "?"),
        object_id=object_id if isinstance(object_id, str) else None,
        created=_created_of(envelope),
        status=status,
        error=error,
    )
