"""Storage verbs about reading Stripe's Events API: each account's cursor, the gaps found, and
leases that let one process at a time do a job every process could do."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from bot.jobs import EventsGapNoticeJob

# The platform's own events are stored under this account name (a primary key cannot be NULL).
PLATFORM = ""


@dataclass(frozen=True)
class PollCursor:
    """Where the reading of one account's events stands."""

    account: str | None  # None: the platform's own events
    created: int  # events created at or after this second are still to be read
    polled_at: float  # when Stripe last answered a whole reading
    tried_at: float | None
    failures: int  # readings failed in a row
    last_error: str | None


@dataclass(frozen=True)
class EventGap:
    """A stretch of time whose events Stripe no longer keeps, found by a reading after it."""

    id: int
    account: str | None
    gap_from: float  # the last reading before the gap
    gap_to: float  # the oldest moment Stripe still kept events for, when the gap was found
    found_at: float


def _cursor(row) -> PollCursor:
    return PollCursor(
        account=row["account"] or None,
        created=row["created"],
        polled_at=row["polled_at"],
        tried_at=row["tried_at"],
        failures=row["failures"],
        last_error=row["last_error"],
    )


class PollingVerbs:
    """Leases, cursors and gaps of the Events API reading (a part of `Storage`)."""

    # -- leases ------------------------------------------------------------------------------

    def take_lease(self, name: str, holder: str, *, seconds: float, now: float) -> bool:
        """Hold the lease `name` for `seconds` from `now`: True when `holder` has it (it was free,
        had lapsed, or `holder` held it already and now holds it longer)."""
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO leases (name, holder, expires_at) VALUES (:name, :holder, :until)"
                " ON CONFLICT (name) DO UPDATE SET holder = :holder, expires_at = :until"
                " WHERE leases.holder = :holder OR leases.expires_at <= :now",
                {"name": name, "holder": holder, "until": now + seconds, "now": now},
            )
            return cur.rowcount == 1

    def release_lease(self, name: str, holder: str) -> None:
        """Give the lease up at once (a clean stop), if `holder` still holds it."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder))

    def lease_holder(self, name: str, *, now: float) -> str | None:
        row = self.conn.execute(
            "SELECT holder FROM leases WHERE name = ? AND expires_at > ?", (name, now)
        ).fetchone()
        return row[0] if row else None

    # -- cursors -----------------------------------------------------------------------------

    def poll_cursor(self, account: str | None) -> PollCursor | None:
        row = self.conn.execute(
            "SELECT * FROM poll_cursors WHERE account = ?", (account or PLATFORM,)
        ).fetchone()
        return _cursor(row) if row else None

    def poll_cursors(self) -> list[PollCursor]:
        rows = self.conn.execute("SELECT * FROM poll_cursors ORDER BY account").fetchall()
        return [_cursor(row) for row in rows]

    def start_cursor(self, account: str | None, *, created: int, now: float) -> PollCursor:
        """The account's cursor, begun at `created` if it had none."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO poll_cursors (account, created, polled_at) VALUES (?, ?, ?)",
                (account or PLATFORM, created, now),
            )
        cursor = self.poll_cursor(account)
        assert cursor is not None
        return cursor

    def advance_cursor(self, account: str | None, *, created: int, now: float) -> None:
        """A whole reading answered: the account's events before `created` are all recorded."""
        with self.transaction() as conn:
            conn.execute(
                "UPDATE poll_cursors SET created = max(created, ?), polled_at = ?, tried_at = ?,"
                " failures = 0, last_error = NULL WHERE account = ?",
                (created, now, now, account or PLATFORM),
            )

    def poll_failed(self, account: str | None, error: str, *, now: float) -> int:
        """A reading failed; how many have failed in a row now."""
        with self.transaction() as conn:
            conn.execute(
                "UPDATE poll_cursors SET tried_at = ?, failures = failures + 1, last_error = ?"
                " WHERE account = ?",
                (now, error, account or PLATFORM),
            )
            row = conn.execute(
                "SELECT failures FROM poll_cursors WHERE account = ?", (account or PLATFORM,)
            ).fetchone()
        return row[0] if row else 0

    def latest_event_created(self, account: str | None) -> int | None:
        """When the newest event recorded for `account` (None: the platform) was created."""
        row = self.conn.execute(
            "SELECT max(created) FROM events WHERE coalesce(account, '') = ?",
            (account or PLATFORM,),
        ).fetchone()
        return row[0] if row else None

    def recorded_event_ids(self, ids: Iterable[str]) -> set[str]:
        """Which of `ids` are recorded already (a reading skips them without a write)."""
        wanted = list(dict.fromkeys(ids))
        found: set[str] = set()
        for start in range(0, len(wanted), 500):  # SQLite's bound parameters, well within
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.conn.execute(f"SELECT id FROM events WHERE id IN ({marks})", chunk)
            found.update(row[0] for row in rows)
        return found

    # -- gaps --------------------------------------------------------------------------------

    def record_gap(
        self, account: str | None, *, gap_from: float, gap_to: float, now: float, channel: str
    ) -> EventGap:
        """Record a gap and queue its notice to `channel`, atomically."""
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO event_gaps (account, gap_from, gap_to, found_at) VALUES (?, ?, ?, ?)",
                (account or PLATFORM, gap_from, gap_to, now),
            )
            gap = EventGap(cur.lastrowid or 0, account, gap_from, gap_to, now)
            self.enqueue(
                f"bot:events-gap:{gap.id}",
                EventsGapNoticeJob(int(gap_from), int(gap_to), account),
                channel=channel,
            )
        return gap

    def open_gaps(self) -> list[EventGap]:
        """The gaps found and not yet acknowledged by the operator, oldest first."""
        rows = self.conn.execute(
            "SELECT * FROM event_gaps WHERE acknowledged_at IS NULL ORDER BY id"
        ).fetchall()
        return [
            EventGap(r["id"], r["account"] or None, r["gap_from"], r["gap_to"], r["found_at"])
            for r in rows
        ]

    def acknowledge_gaps(self, *, now: float) -> int:
        """Mark every open gap as seen by the operator; how many there were."""
        with self.transaction() as conn:
            cur = conn.execute(
                "UPDATE event_gaps SET acknowledged_at = ? WHERE acknowledged_at IS NULL", (now,)
            )
        return cur.rowcount
