"""Direct messages to the deciders: each one named as a user hears of a decision in person.

A job of the delivery worker (outbox kind ``direct_message``), queued beside the channel-visible
message whenever a delay or substitution awaits a decision, and with the last reminder. The DM
says which order, what changed and by when, and links to the card, which stays the one place
with buttons. A DM that fails for good (user gone, DMs closed) is logged once and recorded, and
never holds the card's own rows: the job has an outbox key of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from bot import cards
from bot.jobs import DirectMessageJob, NotYet
from bot.model import FINAL_STATUSES, OrderState
from bot.slack_gateway import NotInChannel, Permanent, SlackGateway
from bot.storage import Lease, Storage, card_key

log = logging.getLogger(__name__)


class CardNotPosted(NotYet):
    """The order's card is not in Slack yet: the DM, which links to it, waits (retried)."""


class DirectMessages:
    """Carries out ``direct_message`` jobs."""

    def __init__(
        self,
        storage: Storage,
        slack: SlackGateway,
        users: tuple[str, ...],
        state_of: Callable[[str], OrderState],
    ) -> None:
        self.storage = storage
        self.slack = slack
        self.users = users  # the deciders named as users
        self.state_of = state_of

    def carry_out(self, lease: Lease, job: DirectMessageJob) -> None:
        """DM every decider not yet told of this occasion; a transient failure raises, so the
        job is retried for those left (the ones told are recorded)."""
        if not self.users:
            return
        order_id = lease.card_key.split(":", 1)[1]
        occasion = str(job.occasion or "")
        state = self.state_of(order_id)
        if not self._still_to_decide(state, occasion):
            log.info("direct messages for %s (%s) not needed any more", order_id, occasion)
            return
        card = self.storage.card(card_key("order", order_id))
        if card is None:
            raise CardNotPosted(order_id)
        link = self.slack.permalink(card["channel"], card["ts"])
        days = job.days
        message = cards.decision_direct_message(
            state, link, days_left=days if isinstance(days, int) else None
        )
        for user in self.users:
            if self.storage.direct_message_sent(order_id, occasion, user):
                continue
            try:
                self.slack.post_message(self.slack.open_direct_message(user), message)
            except (Permanent, NotInChannel) as exc:
                log.warning("direct message to %s about %s not sent: %s", user, order_id, exc)
                outcome = exc.error
            else:
                outcome = "sent"
            with self.storage.transaction():
                self.storage.record_direct_message(order_id, occasion, user, outcome)

    @staticmethod
    def _still_to_decide(state: OrderState, occasion: str) -> bool:
        change = state.change
        return (
            change is not None
            and state.decision is None
            and state.order.get("status") not in FINAL_STATUSES
            and occasion.startswith(f"{change.kind}:{change.at}")
        )
