"""Storage verbs about the outbox: what Slack must be told, leased, paced, held, retried, parked."""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import time
from dataclasses import dataclass

from bot.jobs import (
    CARD_JOBS,
    CARD_KINDS,
    NEEDS_CARD_KINDS,
    POSTING_KINDS,
    CardJob,
    Job,
    UnreadableJob,
    UpdateJob,
    job_of,
    to_facts,
)
from bot.model import MAX_RETRY_AFTER_SECONDS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Lease:
    """One outbox row leased by a delivery worker: its job, and what carrying it out needs."""

    id: int  # the row's (every post carries it in its metadata)
    job: Job  # what the row asks (bot/jobs.py); an update row is leased as its `CardJob`
    card_key: str
    channel: str
    event_id: str | None  # the event the row tells or was queued for
    attempts: int  # this one included
    first_attempt_at: float
    card_ts: str | None  # the card's ts when the card is posted
    owner: str  # the worker holding the lease: only it completes, reschedules or parks the row
    created_at: float  # when the row was queued (the event's arrival, for latency)

    @property
    def posts(self) -> bool:
        """Whether carrying it out posts a new message in its channel, taking the channel's
        pacing slot: a reply, or the card while it is not posted (then it is updated)."""
        if isinstance(self.job, CARD_JOBS):
            return self.card_ts is None
        return self.job.posts


@dataclass
class Failure:
    """A delivery parked after a permanent error."""

    id: int
    card_key: str
    kind: str
    last_error: str
    created_at: float


def _sql_list(kinds: tuple[str, ...]) -> str:
    """`kinds` (bot/jobs.py's, never input) as an SQL list of string literals."""
    if not kinds or not all(kind.isidentifier() for kind in kinds):
        raise ValueError(f"not a list of job kinds: {kinds!r}")
    return "(" + ", ".join(f"'{kind}'" for kind in kinds) + ")"


# The kinds of rows the queries treat apart, from the job classes (bot/jobs.py): those that may
# post a new message, those that wait for their card, and the card's own.
_POSTING = _sql_list(POSTING_KINDS)
_NEEDS_CARD = _sql_list(NEEDS_CARD_KINDS)
_CARD = _sql_list(CARD_KINDS)

# The oldest deliverable row: its card's earlier rows are done, a row that needs its card (a
# reply) finds it posted, and a row that may post a message waits for its channel's pacing slot;
# updates of a posted card and work for the worker do not.
# Searched group by group, a group being the pending rows of one channel and kind (`grp`, walked
# on the outbox_queue index one seek per group): a group that posts into a paced channel is
# skipped without reading a row of it, and in each other group the index's order is id order, so
# its first deliverable row is found at once. Scanning the index in one pass instead, a burst
# into one channel made every look read and sort the whole backlog: 90 ms with 263,000 rows
# pending and the channel paced, 380 ms when its slot was free (bench/outbox.py).
_LEASABLE = f"""
    WITH RECURSIVE grp(channel, kind) AS (
        SELECT channel, kind FROM (
            SELECT channel, kind FROM outbox INDEXED BY outbox_queue
            WHERE status = 'pending' AND channel >= '' ORDER BY channel, kind LIMIT 1)
        UNION ALL
        SELECT n.channel, n.kind FROM grp JOIN outbox n ON n.id = coalesce(
            (SELECT m.id FROM outbox m INDEXED BY outbox_queue
             WHERE m.status = 'pending' AND m.channel = grp.channel AND m.kind > grp.kind
             ORDER BY m.kind LIMIT 1),
            (SELECT m.id FROM outbox m INDEXED BY outbox_queue
             WHERE m.status = 'pending' AND m.channel > grp.channel
             ORDER BY m.channel, m.kind LIMIT 1))
    )
    SELECT o.*, c.ts AS card_ts FROM grp
    JOIN outbox o ON o.id = (
        SELECT f.id FROM outbox f INDEXED BY outbox_queue
        LEFT JOIN cards fc ON fc.key = f.card_key
        WHERE f.status = 'pending' AND f.channel = grp.channel AND f.kind = grp.kind
          AND f.available_at <= :now
          AND (f.lease_until IS NULL OR f.lease_until < :now)
          AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.card_key = f.card_key
                          AND p.status = 'pending' AND p.id < f.id)
          AND (f.kind NOT IN {_NEEDS_CARD} OR fc.ts IS NOT NULL)
        ORDER BY f.id LIMIT 1)
    LEFT JOIN cards c ON c.key = o.card_key
    WHERE grp.kind NOT IN {_POSTING}
       OR grp.channel NOT IN (SELECT channel FROM pacing WHERE next_post_at > :now)
    ORDER BY o.id LIMIT 1
"""
# Claims a row found by _LEASABLE, unless another worker leased it (or it was parked) meanwhile.
_UNCLAIMED = "id = ? AND status = 'pending' AND (lease_until IS NULL OR lease_until < ?)"


# A channel held longer than this from now is held by a Slack rate limit, not by our pacing (a
# second after each post): /healthz and /metrics report it, `climate-bot retry` releases it.
LONG_HOLD_SECONDS = 60.0


class OutboxVerbs:
    """The queue of Slack work and the channels' pacing (a part of `Storage`)."""

    def enqueue(
        self,
        key: str,
        job: Job,
        *,
        channel: str,
        event_id: str | None = None,
        new_card: bool = False,
    ) -> int | None:
        """Queue `job` (what Slack must be told, or work for the worker) under the card `key`.

        `channel`: where the row goes when the card `key` is neither posted nor queued (a new
        card, or a key of no card, like a direct message's). A card never moves: once it is
        posted or queued, every row of its key goes to its channel and `channel` is not used.
        `event_id`: the event the row tells or was queued for (a reply renders it, a fetch reads
        it, a card's delivery latency counts from its arrival).
        `new_card`: the caller found, in this transaction, that the card has no channel yet (so
        nothing of it is posted or queued).

        A `CardJob` is skipped when an untouched one is already queued for the same card: it will
        render the state current at delivery time, which includes this change. One for a card
        already posted is stored as an `UpdateJob`.
        """
        now = time.time()
        if not new_card:
            posted, queued = self._card_channels(key)
            channel = posted or queued or channel
            if isinstance(job, CardJob) and posted:
                job = UpdateJob()  # a chat.update, which the channel's pacing does not hold
        if isinstance(job, CARD_JOBS) and not new_card:
            waiting = self.conn.execute(
                f"SELECT 1 FROM outbox WHERE card_key = ? AND kind IN {_CARD}"
                " AND status = 'pending' AND attempts = 0 AND lease_owner IS NULL",
                (key,),
            ).fetchone()
            if waiting:
                return None
        cur = self.conn.execute(
            "INSERT INTO outbox (card_key, kind, event_id, facts, channel, available_at,"
            " created_at) VALUES (?,?,?,?,?,?,?)",
            (key, job.kind, event_id, json.dumps(to_facts(job)), channel, now, now),
        )
        return cur.lastrowid

    def lease_next(
        self, owner: str, *, lease_seconds: float = 60.0, pace_seconds: float = 1.0
    ) -> Lease | None:
        """Lease the oldest deliverable row for `owner`, or None.

        Rows of one card go strictly in order; a reply waits for its card; a row that posts a new
        message waits for its channel's pacing slot (Slack allows about one message per second
        per channel). The search reads outside the write lock (it can scan a long backlog);
        the claim is a compare-and-set under it, so two workers never take the same row. A row
        no job of this version reads is parked instead of leased (`UnreadableJob`), and the
        search goes on.
        """
        lost = 0
        while lost < 3:  # another worker may claim the row first: look again
            now = time.time()
            row = self.conn.execute(_LEASABLE, {"now": now}).fetchone()
            if row is None:
                return None
            try:
                job = _job_of_row(row)
            except UnreadableJob as exc:
                if not self._park_unreadable(row, str(exc), now):
                    lost += 1
                continue
            lease = Lease(
                id=row["id"],
                job=job,
                card_key=row["card_key"],
                channel=row["channel"],
                event_id=row["event_id"],
                attempts=row["attempts"] + 1,
                first_attempt_at=row["first_attempt_at"] or now,
                card_ts=row["card_ts"],
                owner=owner,
                created_at=row["created_at"],
            )
            with self.transaction() as conn:
                if lease.posts and self._next_post_at(lease.channel) > now:
                    lost += 1
                    continue
                claimed = conn.execute(
                    "UPDATE outbox SET lease_owner = ?, lease_until = ?, attempts = attempts + 1,"
                    f" first_attempt_at = coalesce(first_attempt_at, ?) WHERE {_UNCLAIMED}",
                    (owner, now + lease_seconds, now, lease.id, now),
                ).rowcount
                if not claimed:
                    lost += 1
                    continue
                if lease.posts:
                    conn.execute(
                        "INSERT INTO pacing (channel, next_post_at) VALUES (?, ?) ON CONFLICT"
                        " (channel) DO UPDATE SET next_post_at = excluded.next_post_at",
                        (lease.channel, now + pace_seconds),
                    )
            return lease
        return None

    def _park_unreadable(self, row: sqlite3.Row, error: str, now: float) -> bool:
        """Park a row `lease_next` found but cannot read, as a tried one; False if another
        worker took it first."""
        with self.transaction() as conn:
            parked = conn.execute(
                "UPDATE outbox SET status = 'failed', last_error = ?, attempts = attempts + 1,"
                f" first_attempt_at = coalesce(first_attempt_at, ?) WHERE {_UNCLAIMED}",
                (error, now, row["id"], now),
            ).rowcount
        if parked:
            log.error("delivery %s for %s parked: %s", row["id"], row["card_key"], error)
        return bool(parked)

    def _next_post_at(self, channel: str) -> float:
        row = self.conn.execute(
            "SELECT next_post_at FROM pacing WHERE channel = ?", (channel,)
        ).fetchone()
        return row[0] if row else 0.0

    def paced_channels(self, now: float) -> dict[str, float]:
        """Channels whose next post must wait, and until when (one row per channel ever used)."""
        rows = self.conn.execute(
            "SELECT channel, next_post_at FROM pacing WHERE next_post_at > ?", (now,)
        ).fetchall()
        return {channel: at for channel, at in rows}

    def next_delivery_at(self) -> float | None:
        """When the worker should look again after a look that found nothing; None if nothing
        is due by time.

        Called right after an empty look, so nothing is due now: what comes due is a paced
        channel with messages waiting getting its slot back, or a row that was tried before
        coming off its back-off or its lease. Rows waiting behind their card are not due by
        time. A few index searches, however long the backlog (bench/outbox.py).
        """
        return self.conn.execute(
            f"""
            SELECT min(due) FROM (
                SELECT min(p.next_post_at) AS due FROM pacing p
                WHERE p.next_post_at > :now AND EXISTS (
                    SELECT 1 FROM outbox o INDEXED BY outbox_queue WHERE o.status = 'pending'
                    AND o.channel = p.channel AND o.kind IN {_POSTING})
                UNION ALL
                SELECT min(max(o.available_at, coalesce(o.lease_until, 0))) FROM outbox o
                INDEXED BY outbox_retry WHERE o.status = 'pending' AND o.attempts > 0
                AND max(o.available_at, coalesce(o.lease_until, 0)) > :now
            )
            """,
            {"now": time.time()},
        ).fetchone()[0]

    def complete(
        self, lease: Lease, *, card_channel: str | None = None, ts: str | None = None
    ) -> None:
        """Mark a leased row delivered; for a newly posted card (`ts`, in `card_channel` or the
        row's channel), remember where it is — atomically."""
        with self.transaction() as conn:
            if isinstance(lease.job, CARD_JOBS) and lease.card_ts is None and ts:
                conn.execute(
                    "INSERT OR IGNORE INTO cards (key, channel, ts, posted_at) VALUES (?,?,?,?)",
                    (lease.card_key, card_channel or lease.channel, ts, time.time()),
                )
            conn.execute(
                "UPDATE outbox SET status = 'done', done_at = ?, posted_ts = ?,"
                " lease_owner = NULL, lease_until = NULL WHERE id = ? AND lease_owner = ?",
                (time.time(), ts, lease.id, lease.owner),
            )

    def reschedule(self, lease: Lease, *, delay: float, error: str) -> None:
        """Give a leased row back to be tried again after `delay` seconds."""
        self.conn.execute(
            "UPDATE outbox SET available_at = ?, last_error = ?, lease_owner = NULL,"
            " lease_until = NULL WHERE id = ? AND lease_owner = ?",
            (time.time() + delay, error, lease.id, lease.owner),
        )

    def hold_channel(self, channel: str, seconds: float) -> None:
        """Keep every worker from posting to `channel` for `seconds` (Slack said Retry-After).

        Never longer than MAX_RETRY_AFTER_SECONDS from now, whatever `seconds` is (`inf` and
        `nan` hold for the cap), even when the channel is already held longer: a stored hold
        outlives the process, so one wrong value must not silence the channel for good.
        """
        if not math.isfinite(seconds):
            seconds = MAX_RETRY_AFTER_SECONDS
        now = time.time()
        until = now + min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)
        self.conn.execute(
            "INSERT INTO pacing (channel, next_post_at) VALUES (?, ?) ON CONFLICT (channel)"
            " DO UPDATE SET next_post_at = min(max(next_post_at, excluded.next_post_at), ?)",
            (channel, until, now + MAX_RETRY_AFTER_SECONDS),
        )

    def long_holds(self, now: float) -> dict[str, float]:
        """Channels held more than LONG_HOLD_SECONDS past `now` (by a Slack rate limit, not
        our pacing), and until when. Read on every /healthz probe and /metrics scrape: the pacing
        table has a row per channel ever posted to, a few."""
        return self.paced_channels(now + LONG_HOLD_SECONDS)

    def release_long_holds(self) -> int:
        """Let every channel held more than LONG_HOLD_SECONDS from now post again; how many.

        Ordinary pacing (a second after each post) is left alone. Should Slack still be
        limiting, the next post gets a 429 and a new, bounded, hold.
        """
        cur = self.conn.execute(
            "DELETE FROM pacing WHERE next_post_at > ?", (time.time() + LONG_HOLD_SECONDS,)
        )
        return cur.rowcount

    def fail(self, lease: Lease, error: str) -> None:
        """Park a leased row after a permanent error; it stays visible until replayed."""
        self.conn.execute(
            "UPDATE outbox SET status = 'failed', last_error = ?, lease_owner = NULL,"
            " lease_until = NULL WHERE id = ? AND lease_owner = ?",
            (error, lease.id, lease.owner),
        )

    def failures(self) -> list[Failure]:
        rows = self.conn.execute(
            "SELECT id, card_key, kind, last_error, created_at FROM outbox"
            " WHERE status = 'failed' ORDER BY id"
        ).fetchall()
        return [Failure(**dict(r)) for r in rows]

    def retry_failed(self) -> int:
        """Put every parked row back in the queue (after an operator fixed the cause)."""
        cur = self.conn.execute(
            "UPDATE outbox SET status = 'pending', available_at = ?, attempts = 0"
            " WHERE status = 'failed'",
            (time.time(),),
        )
        return cur.rowcount

    def outbox_backlog(self) -> tuple[int, float | None]:
        """How many rows wait for delivery, and when the oldest of them was queued."""
        row = self.conn.execute(
            "SELECT count(*), min(created_at) FROM outbox WHERE status = 'pending'"
        ).fetchone()
        return row[0], row[1]

    def outbox_counts(self) -> dict[str, int]:
        """Rows by status (pending, failed, done), leaving out those with none.

        Counted on indexes, never the table: it runs on every /healthz probe and /metrics scrape.
        """
        total, pending, failed = self.conn.execute(
            "SELECT (SELECT count(*) FROM outbox),"
            " (SELECT count(*) FROM outbox WHERE status = 'pending'),"
            " (SELECT count(*) FROM outbox WHERE status = 'failed')"
        ).fetchone()
        counts = {"pending": pending, "failed": failed, "done": total - pending - failed}
        return {status: n for status, n in counts.items() if n}


def _job_of_row(row: sqlite3.Row) -> Job:
    """The job of a row `_LEASABLE` found (`job_of`); raises UnreadableJob as it does, and for
    facts that are not JSON."""
    try:
        facts = json.loads(row["facts"] or "{}")
    except ValueError:
        raise UnreadableJob(f"{row['kind']} row whose facts are not JSON") from None
    return job_of(row["kind"], facts, row["card_key"])
