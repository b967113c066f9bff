"""Messages of the bot about itself, at the top of a channel and about no card: that Stripe events
may be missing (a reading of the Events API after more than the 30 days Stripe keeps them)."""

from __future__ import annotations

from bot.cards.blocks import _code, _context, _dashboard_link, _header, _message, _section
from bot.formatting import plain_date, slack_date
from bot.i18n import _
from bot.model import Message


def events_gap_notice(since: int, until: int, account: str | None = None) -> Message:
    """Stripe was last read at `since` and keeps events only from `until` on: what happened to
    orders and products in between (on `account`, when a connected account's) may be untold."""
    what = (
        _(
            "climate-bot could not read Stripe's events from {since} to {until}, and Stripe keeps"
            " events for 30 days only: an order placed, delayed, substituted or cancelled then may"
            " be missing from this channel."
        )
        if account is None
        else _(
            "climate-bot could not read the events of Stripe account {account} from {since} to"
            " {until}, and Stripe keeps events for 30 days only: an order placed, delayed,"
            " substituted or cancelled then may be missing from this channel."
        )
    )
    blocks = [
        ("head", _header(_("Some Stripe events may be missing"))),
        (
            "what",
            _section(
                what.format(
                    since=slack_date(since, "{date_long} {time}"),
                    until=slack_date(until, "{date_long} {time}"),
                    account=_code(account),
                )
            ),
        ),
        (
            "todo",
            _section(
                _(
                    "*What to do:* look at the Climate orders of that time in {dashboard}; each"
                    " order's card comes back up to date with its next event. Whoever runs"
                    " climate-bot acknowledges this notice with `climate-bot retry`."
                ).format(dashboard=_dashboard_link())
            ),
        ),
        ("note", _context(_("Reading Stripe's events goes on; nothing after the gap is lost."))),
    ]
    text = _("Some Stripe events may be missing: nothing was read from {since} to {until}").format(
        since=plain_date(since), until=plain_date(until)
    )
    return _message(text, blocks)
