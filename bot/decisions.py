"""Deciding from Slack: accept or cancel a delayed or substituted order, once, on the record.

A click is acknowledged at once; the listener then checks, in this order, who clicked (`Deciders`),
whether the order exists, is still open and inside its 30-day window, and records the decision as a
compare-and-set in SQLite, so the loser of a race is told who won. Accepting needs no Stripe call.
Cancelling is queued as an outbox job and carried out by the worker (never by a web worker): it
re-reads the order at Stripe, cancels with one Idempotency-Key per order, and answers the clicker.
Every decision, refusal and failure is an audit row; the card is re-rendered from state.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from bot import cards, metrics
from bot.formatting import escape_mrkdwn, quoted_error, slack_date, slack_mention
from bot.i18n import _
from bot.jobs import CancelJob, CardJob, NoticeJob
from bot.model import FINAL_STATUSES, ORDER_ID, Change, Message, OrderState, expected_refund
from bot.recording import queue_decision_alerts
from bot.slack_gateway import SlackError, SlackGateway
from bot.storage import Lease, Storage, card_key
from bot.stripe_gateway import (
    IdempotencyConflict,
    NotFound,
    Refused,
    StripeFailure,
    StripeGateway,
    StripeResult,
    Unavailable,
)

log = logging.getLogger(__name__)

ACCEPT = "accept"
CANCEL = "cancel"


class Deciders:
    """Who may decide: `SLACK_ALLOWED_DECIDERS` users and members of its user groups.

    Empty means anyone of the workspace who can see the channel. Someone from another workspace
    (a Slack Connect channel) may decide only when named in it as a user. User groups are resolved
    with `usergroups.users.list` and cached briefly, so a membership change takes effect within a
    minute.
    """

    def __init__(
        self,
        allowed: tuple[str, ...],
        slack: SlackGateway,
        *,
        cache_seconds: float = 60.0,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.allowed = allowed
        self.slack = slack
        self.cache_seconds = cache_seconds
        self.now = now
        self._groups: dict[str, tuple[float, frozenset[str]]] = {}
        self._lock = threading.Lock()

    def may_decide(self, user: str, *, foreign: bool = False) -> bool:
        """True if `user` may decide; raises SlackError if a user group cannot be read.

        `foreign`: the user belongs to another workspace than the bot's.
        """
        if user in self.allowed:
            return True
        if foreign:
            return False
        if not self.allowed:
            return True
        return any(user in self._members(g) for g in self.allowed if g.startswith("S"))

    def mentions(self) -> str:
        """The deciders as Slack mentions, for reminders and refusals."""
        return ", ".join(slack_mention(d) for d in self.allowed)

    def users(self) -> tuple[str, ...]:
        """The deciders named as users (not groups): each gets direct messages."""
        return tuple(d for d in self.allowed if d[:1] in ("U", "W"))

    def _members(self, group: str) -> frozenset[str]:
        with self._lock:
            cached = self._groups.get(group)
            if cached and self.now() - cached[0] < self.cache_seconds:
                return cached[1]
        members = frozenset(self.slack.usergroup_members(group))
        with self._lock:
            self._groups[group] = (self.now(), members)
        return members


@dataclass(frozen=True)
class Click:
    """A click on Accept or Cancel (or the submit of the cancel dialog), as read from Slack."""

    action: str  # ACCEPT | CANCEL
    order_id: str
    user: str
    channel: str
    response_url: str | None
    trigger_id: str = ""  # opens the cancel dialog
    user_team: str = ""  # the clicker's workspace (user.team_id)
    home_team: str = ""  # the workspace the bot is installed in (team.id of the payload)
    reason: str | None = None  # the cancel dialog's reason, as typed
    deadline: int | None = None  # the dialog's: the decision window it was opened for

    @property
    def foreign(self) -> bool:
        """The clicker belongs to another workspace (a Slack Connect channel)."""
        return bool(self.user_team and self.home_team and self.user_team != self.home_team)


class Decisions:
    """Turns clicks into recorded decisions, and carries out queued cancels."""

    def __init__(
        self,
        storage: Storage,
        slack: SlackGateway,
        stripe: StripeGateway,
        deciders: Deciders,
        *,
        channel: str,
        wake: Callable[[], None] = lambda: None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.storage = storage
        self.slack = slack
        self.stripe = stripe
        self.deciders = deciders
        self.channel = channel
        self.wake = wake
        self.now = now
        # Builds the card's state for the cancel dialog (the delivery worker's, set when wired).
        self.state_of: Callable[[str], OrderState] | None = None

    # -- in the listener, after ack: database only, no Stripe call ---------------------------

    def click(self, click: Click) -> str | None:
        """Act on a click; return the ephemeral answer for the clicker, or None when the cancel
        dialog was opened instead (a refusal always comes before any dialog)."""
        refusal, row = self._refusal(click)
        if refusal is not None:
            return refusal
        if click.action == ACCEPT:
            return self._accept(click, row)
        return self._open_cancel_dialog(click, row)

    def submit_cancel(self, click: Click) -> tuple[bool, str]:
        """The cancel dialog was submitted: queue the cancel (database only).

        Returns (refused, text): why it cannot be, for the dialog; or the answer for the
        clicker's response_url.
        """
        refusal, row = self._refusal(click)
        if refusal is not None:
            return True, refusal
        return False, self._request_cancel(click, row)

    def _refusal(self, click: Click) -> tuple[str | None, dict]:
        """Why `click` cannot decide (who clicked, the order's state), or None; and the order."""
        if not ORDER_ID.match(click.order_id or ""):
            return _("This button does not name an order climate-bot knows."), {}
        try:
            allowed = self.deciders.may_decide(click.user, foreign=click.foreign)
        except SlackError as exc:
            log.warning("could not resolve deciders: %s", exc)
            self._record(click, "failed", error=f"could not read user groups: {exc}")
            return _(
                "climate-bot could not check who may decide: Slack answered with {error}. Try "
                "again."
            ).format(error=quoted_error(exc.error, http_status=exc.http_status)), {}
        if not allowed:
            self._record(click, "not_allowed", error="another workspace" if click.foreign else None)
            return self._not_allowed(click), {}
        row = self.storage.order_row(click.order_id)
        if row is None:
            return _("No order {order_id}.").format(order_id=click.order_id), {}
        refusal = self._too_late(row, click)
        if refusal:
            self._record(click, "too_late", error=refusal)
            return refusal, row
        if row["decision"]:
            return self._already_decided(click, row), row
        return None, row

    def _not_allowed(self, click: Click) -> str:
        order = _code(click.order_id)
        if click.foreign:
            return _(
                "You are in another workspace than climate-bot's, so you may not decide on order "
                "{order_id} unless its operators name you as a decider. Nothing was changed."
            ).format(order_id=order)
        return _("Only {deciders} may decide on order {order_id}. Nothing was changed.").format(
            deciders=self.deciders.mentions(), order_id=order
        )

    def _too_late(self, row: dict, click: Click) -> str | None:
        if row["status"] in FINAL_STATUSES:
            return _("Order {order_id} is already {status}: there is nothing to decide.").format(
                order_id=_code(row["id"]), status=_status_word(row["status"])
            )
        deadline = row["decision_deadline"]
        if deadline is None:
            return _("Order {order_id} has no delay or substitution awaiting a decision.").format(
                order_id=_code(row["id"])
            )
        if row["decision"] == "cancelling":
            return None  # told as a cancel under way, whatever the window says
        if row["window_closed"] or deadline <= self.now():
            return _(
                "The decision window for order {order_id} closed {deadline}. Nothing was sent "
                "to Stripe; the change stands."
            ).format(order_id=_code(row["id"]), deadline=slack_date(deadline))
        if click.deadline is not None and click.deadline != deadline and not row["decision"]:
            return _(
                "Order {order_id} changed again while the dialog was open. Nothing was sent to "
                "Stripe; decide on the card, which shows the new change."
            ).format(order_id=_code(row["id"]))
        return None

    def _accept(self, click: Click, row: dict) -> str:
        now = self.now()
        with self.storage.transaction():
            won = self.storage.claim_decision(
                click.order_id,
                "accepted",
                user=click.user,
                deadline=row["decision_deadline"],
                now=now,
            )
            if won:
                self._audit(click.order_id, ACCEPT, "accepted", user=click.user)
                self._tell_thread(click.order_id)
        if not won:
            return self._already_decided(click)
        self.wake()
        kind = (row["change"] or {}).get("kind")
        if kind == "product_substituted":
            return _(
                "You accepted the substitution on order {order_id}. The card shows it."
            ).format(order_id=_code(click.order_id))
        return _("You accepted the delay on order {order_id}. The card shows it.").format(
            order_id=_code(click.order_id)
        )

    def _open_cancel_dialog(self, click: Click, row: dict) -> str | None:
        if self.state_of is None or not click.trigger_id:
            return _("Slack sent no way to open the cancel dialog. Click Cancel again.")
        metadata = json.dumps(
            {
                "order_id": click.order_id,
                "channel": click.channel,
                "response_url": click.response_url,
                "deadline": row["decision_deadline"],
            }
        )
        view = cards.cancel_modal(self.state_of(click.order_id), self.now(), metadata)
        try:
            self.slack.open_view(click.trigger_id, view)
        except SlackError as exc:
            log.warning("cancel dialog for %s not opened: %s", click.order_id, exc)
            return _(
                "Slack did not open the cancel dialog: it answered with {error}. Nothing was "
                "changed; click Cancel again."
            ).format(error=quoted_error(exc.error, http_status=exc.http_status))
        return None

    def _request_cancel(self, click: Click, row: dict) -> str:
        now = self.now()
        reason = _clean_reason(click.reason)
        with self.storage.transaction():
            won = self.storage.claim_decision(
                click.order_id,
                "cancelling",
                user=click.user,
                deadline=row["decision_deadline"],
                now=now,
                detail={"reason": reason} if reason else None,
            )
            if won:
                self.storage.enqueue(
                    card_key("order", click.order_id),
                    CancelJob(user=click.user, response_url=click.response_url),
                    channel=self.channel,
                )
                self.storage.enqueue(
                    card_key("order", click.order_id), CardJob(), channel=self.channel
                )
        if not won:
            return self._already_decided(click)
        self.wake()
        return _("Cancelling order {order_id} at Stripe…").format(order_id=_code(click.order_id))

    def _already_decided(self, click: Click, row: dict | None = None) -> str:
        row = row or self.storage.order_row(click.order_id) or {}
        self._record(click, "already_decided", error=f"decision {row.get('decision')}")
        by, at = row.get("decided_by"), row.get("decided_at")
        if row.get("decision") == "cancelling" and by:
            return _(
                "A cancel of order {order_id} by <@{user}> is under way; nothing else can be "
                "decided until Stripe answers."
            ).format(order_id=_code(click.order_id), user=by)
        if row.get("decision") and by:
            return _("Order {order_id} was already decided by <@{user}> {when}.").format(
                order_id=_code(click.order_id), user=by, when=slack_date(int(at))
            )
        return _("Order {order_id} can no longer be decided here.").format(
            order_id=_code(click.order_id)
        )

    def _audit(self, order_id: str, action: str, outcome: str, **details) -> None:
        """Record a decision, refusal or failure, and count it."""
        self.storage.audit(order_id, action, outcome, **details)
        metrics.DECISIONS.labels(action, outcome).inc()
        log.info("decision on %s: %s → %s by %s", order_id, action, outcome, details.get("user"))

    def _record(self, click: Click, outcome: str, *, error: str | None = None) -> None:
        self._audit(click.order_id, click.action, outcome, user=click.user, error=error)

    def _tell_thread(self, order_id: str) -> None:
        """Queue the decision's reply in the card's thread and the card's re-render."""
        key = card_key("order", order_id)
        self.storage.enqueue(key, NoticeJob("decision"), channel=self.channel)
        self.storage.enqueue(key, CardJob(), channel=self.channel)

    # -- in the worker: the Stripe side of a cancel ------------------------------------------

    def carry_out_cancel(self, lease: Lease, job: CancelJob) -> None:
        """Re-read the order at Stripe, cancel it unless already final, record and answer."""
        order_id = lease.card_key.split(":", 1)[1]
        local = self.storage.order_row(order_id)
        account = local["account"] if local else None
        attempt = self.storage.cancel_attempts(order_id)
        try:
            fresh = self.stripe.retrieve_order(order_id, account=account)
            if fresh.data.get("status") in FINAL_STATUSES:
                if not _maybe_ours(fresh.data):
                    self._already_final(order_id, job, fresh.data, fresh.request_id)
                    return
                # Cancelled as a cancel asks for: perhaps by this very attempt, whose answer
                # was lost (the worker died after the call). The same Idempotency-Key replays
                # Stripe's first answer if so; if someone else cancelled, it is refused.
                try:
                    result = self.stripe.cancel_order(order_id, attempt=attempt, account=account)
                except (Refused, IdempotencyConflict):
                    self._already_final(order_id, job, fresh.data, fresh.request_id)
                    return
            else:
                result = self.stripe.cancel_order(order_id, attempt=attempt, account=account)
        except (Refused, NotFound) as exc:
            answer = _("Stripe did not cancel order {order_id}: {message}")
            self._cancel_failed(order_id, job, "refused", exc, answer)
            return
        except IdempotencyConflict as exc:
            answer = _(
                "Stripe turned this cancel of order {order_id} down as a repeat of another "
                "request ({message}). Nothing changed; you can click Cancel again."
            )
            self._cancel_failed(order_id, job, "failed", exc, answer, error=f"idempotency: {exc}")
            return
        except Unavailable as exc:
            answer = _(
                "Stripe could not be reached to cancel order {order_id}: {message}. Nothing "
                "changed; you can click Cancel again."
            )
            self._cancel_failed(order_id, job, "failed", exc, answer)
            return
        self._cancelled(order_id, job, result, local or {})

    def _cancelled(self, order_id: str, job: CancelJob, result: StripeResult, local: dict) -> None:
        """Stripe cancelled the order: record who decided, the refund rule, and answer."""
        order = result.data
        change = Change(**local["change"]) if local.get("change") else None
        refund = expected_refund(
            order, reason="requested", at=local.get("decided_at"), change=change
        )
        reason = (local.get("decision_detail") or {}).get("reason")
        detail = {"refund": refund.amount, "refund_rule": refund.rule}
        with self.storage.transaction():
            self.storage.refresh_order(order, headline_event="climate.order.canceled")
            settled = self.storage.settle_decision(
                order_id,
                expected="cancelling",
                decision="cancelled",
                detail={**detail, "stripe_request_id": result.request_id},
            )
            if not settled:
                # Stripe cancelled; whatever moved the record on, the cancel is the fact.
                log.warning("cancel of %s carried out, but its decision had moved on", order_id)
                self.storage.settle_decision(
                    order_id,
                    expected=str((self.storage.order_row(order_id) or {}).get("decision")),
                    decision="cancelled",
                    detail={**detail, "stripe_request_id": result.request_id},
                )
            self._audit(
                order_id,
                CANCEL,
                "cancelled",
                user=job.user,
                stripe_request_id=result.request_id,
                detail={**detail, "reason": reason} if reason else detail,
            )
            self._tell_thread(order_id)
        self.wake()
        self._answer(
            job,
            _("Order {order_id} is cancelled. {refund}").format(
                order_id=_code(order_id), refund=cards.refund_sentence(refund, order)
            ),
        )

    def _already_final(self, order_id, job: CancelJob, order, request_id) -> None:
        status = order.get("status")
        headline = "climate.order.canceled" if status == "canceled" else "climate.order.delivered"
        with self.storage.transaction():
            self.storage.refresh_order(order, headline_event=headline)
            if not self.storage.settle_decision(order_id, expected="cancelling", decision=None):
                log.warning("cancel of %s found no decision under way to undo", order_id)
            self._audit(
                order_id,
                CANCEL,
                "already_final",
                user=job.user,
                stripe_request_id=request_id,
                error=f"order already {status} at Stripe; cancel not sent",
            )
            self.storage.enqueue(card_key("order", order_id), CardJob(), channel=self.channel)
        self.wake()
        self._answer(
            job,
            _(
                "Order {order_id} is already {status} at Stripe, so nothing was cancelled. "
                "The card now shows it."
            ).format(order_id=_code(order_id), status=_status_word(str(status))),
        )

    def _cancel_failed(
        self,
        order_id: str,
        job: CancelJob,
        outcome: str,
        exc: StripeFailure,
        answer: str,
        *,
        error: str | None = None,
    ) -> None:
        """Stripe did not cancel: undo the decision under way, record why (`error`, default
        Stripe's message, in full), re-render the card, and tell the clicker `answer` (a sentence
        with `{order_id}` and `{message}`, Stripe's message as a person may see it)."""
        before = self.storage.order_row(order_id) or {}
        with self.storage.transaction():
            undone = self.storage.settle_decision(order_id, expected="cancelling", decision=None)
            if not undone:
                log.warning("failed cancel of %s found no decision under way to undo", order_id)
            self._audit(
                order_id,
                CANCEL,
                outcome,
                user=job.user,
                stripe_request_id=exc.request_id,
                error=error or exc.message,
            )
            key = card_key("order", order_id)
            if undone and before.get("next_change"):
                # The change that arrived during the cancel is now the one to decide.
                queue_decision_alerts(
                    self.storage,
                    order_id,
                    before["next_change"],
                    self.channel,
                    thread_notice=True,
                    broadcast=True,
                )
            self.storage.enqueue(key, CardJob(), channel=self.channel)
        self.wake()
        message = quoted_error(exc.message, http_status=exc.http_status)
        self._answer(job, answer.format(order_id=_code(order_id), message=message))

    def _answer(self, job: CancelJob, text: str) -> None:
        self.slack.respond(job.response_url, Message(text=text))


def _maybe_ours(order: dict) -> bool:
    """A final order that a cancel of ours may have made so (its answer lost on the way)."""
    return order.get("status") == "canceled" and order.get("cancellation_reason") == "requested"


def _clean_reason(reason: str | None) -> str | None:
    """A decider's reason as kept: text only, bounded; escaped wherever it is shown."""
    if not isinstance(reason, str):
        return None
    kept = "".join(ch for ch in reason if ch.isprintable() or ch in "\n\t").strip()
    return kept[: cards.REASON_LIMIT] or None


def _code(order_id: str) -> str:
    """An order id as shown in an answer: a code span, escaped, bounded."""
    return f"`{escape_mrkdwn(str(order_id)[:100]).replace('`', '')}`"


def _status_word(status: str) -> str:
    return {"delivered": _("delivered"), "canceled": _("cancelled")}.get(status, status)
