"""A decision nobody can miss: a delay on an old card reaches the channel, names the deciders, and
each decider named as a user hears of it in a direct message that links to the card."""

from __future__ import annotations

import json
import logging
import time

import pytest
import time_machine

from bot.model import DECISION_WINDOW_SECONDS
from bot.sandbox import stripe_objects as so
from bot.settings import load_settings
from tests.support.bot import CHANNEL, env_for, serve_bot, wait_until

START = 1_900_000_000
WEEKS = 6 * 7 * 86400


@pytest.fixture
def with_deciders(tmp_path, fake_slack, fake_stripe):
    """Deciders: Bob and Carol as users, and the user group S0FINANCE."""
    fake_slack.add_user("U0CAROL", "carol")
    fake_slack.add_usergroup("S0FINANCE", "finance", ["U0DAVE"])
    env = {
        **env_for(tmp_path, fake_slack, fake_stripe),
        "SLACK_ALLOWED_DECIDERS": "U0BOB,S0FINANCE,U0CAROL",
    }
    with serve_bot(load_settings(env)) as bot:
        yield bot


def old_card_then_delay(bot, fake_slack, clock) -> tuple[dict, object]:
    """An order whose card is weeks old; then Frontier delays it."""
    order = so.order()
    bot.send_event(so.event("climate.order.created", order, created=START))
    bot.deliver()
    clock.shift(WEEKS)
    at = START + WEEKS
    bot.send_event(so.event("climate.order.delayed", so.delayed(order, 2030, at=at), created=at))
    bot.deliver()
    [card] = fake_slack.messages(CHANNEL)
    return order, card


def direct_messages(fake_slack, user: str) -> list:
    return fake_slack.messages("D" + user[1:])


def test_a_delay_on_a_weeks_old_card_is_sent_to_the_channel_naming_the_deciders(
    with_deciders, fake_slack
):
    with time_machine.travel(START, tick=False) as clock:
        order, card = old_card_then_delay(with_deciders, fake_slack, clock)
    [reply] = fake_slack.replies(CHANNEL, card.ts)
    assert reply.broadcast  # in the thread AND in the channel's timeline
    [post] = [c for c in fake_slack.calls_to("chat.postMessage") if c.params.get("thread_ts")]
    assert post.params["reply_broadcast"] is True
    blocks = json.dumps(reply.blocks)
    assert "Delivery moved from 2027 to 2030" in blocks
    # Seen in the channel away from its card, it says which order: id, beneficiary, tonnes, amount.
    assert order["id"] in blocks and "10 t" in blocks and "$5,665.00" in blocks
    for mention in ("<@U0BOB>", "<!subteam^S0FINANCE>", "<@U0CAROL>"):
        assert mention in blocks and mention in reply.text
    assert "<!here>" not in blocks and "<!channel>" not in blocks
    # The card itself is updated in place, and keeps the buttons.
    assert fake_slack.messages(CHANNEL)[0].updates == 1
    assert '"actions"' in json.dumps(fake_slack.messages(CHANNEL)[0].blocks)


def test_each_decider_named_as_a_user_gets_a_direct_message_linking_to_the_card(
    with_deciders, fake_slack
):
    with time_machine.travel(START, tick=False) as clock:
        order, card = old_card_then_delay(with_deciders, fake_slack, clock)
    opened = sorted(c.params["users"] for c in fake_slack.calls_to("conversations.open"))
    assert opened == ["U0BOB", "U0CAROL"]  # the group's members are mentioned, not messaged
    for user in ("U0BOB", "U0CAROL"):
        [dm] = direct_messages(fake_slack, user)
        text = json.dumps(dm.blocks, ensure_ascii=False)
        assert order["id"] in text
        assert "10 t" in text and "$5,665.00" in text  # which order: tonnes and amount
        assert "Delivery moved from 2027 to 2030" in text
        deadline = START + WEEKS + DECISION_WINDOW_SECONDS
        assert f"<!date^{deadline}^" in text and "UTC" in text  # a date token, a UTC fallback
        [link] = fake_slack.calls_to("chat.getPermalink")
        assert link.params["message_ts"] == card.ts
        assert f"/archives/{CHANNEL}/p{card.ts.replace('.', '')}" in text
        assert '"actions"' not in text  # the card stays the one place with buttons
    # A retry of the job (or a second worker) sends nothing twice.
    with_deciders.bot.storage.retry_failed()
    with_deciders.deliver()
    assert len(direct_messages(fake_slack, "U0BOB")) == 1


def test_a_direct_message_that_fails_is_logged_once_and_never_blocks_the_channel(
    with_deciders, fake_slack, caplog
):
    fake_slack.fail_next("conversations.open", error="user_not_found")
    with time_machine.travel(START, tick=False) as clock, caplog.at_level(logging.WARNING):
        order, card = old_card_then_delay(with_deciders, fake_slack, clock)
        with_deciders.deliver()
    [reply] = fake_slack.replies(CHANNEL, card.ts)
    assert reply.broadcast
    failures = [r for r in caplog.records if "direct message to" in r.getMessage()]
    assert len(failures) == 1 and "user_not_found" in failures[0].getMessage()
    # The other decider still got theirs; nothing is parked, nothing is retried.
    assert (
        len(direct_messages(fake_slack, "U0BOB")) + len(direct_messages(fake_slack, "U0CAROL")) == 1
    )
    assert with_deciders.bot.storage.failures() == []
    assert with_deciders.bot.storage.outbox_counts().get("pending", 0) == 0


def test_a_delay_into_a_channel_held_by_slack_reaches_the_deciders_at_once(
    with_deciders, fake_slack
):
    """The channel's slot is taken (a 429's Retry-After): the delay's reply waits for it, but
    the deciders' direct messages wait for no channel and go at once."""
    bot = with_deciders
    order = so.order()
    bot.send_event(so.event("climate.order.created", order))
    bot.deliver()
    [card] = fake_slack.messages(CHANNEL)
    bot.bot.storage.hold_channel(CHANNEL, 120)  # as Slack's Retry-After does
    with bot.worker_running():
        wait_until(bot.worker_asleep, 10, "the worker never slept")
        now = int(time.time())
        delayed = so.event(
            "climate.order.delayed", so.delayed(order, 2030, at=now), created=now + 1
        )
        assert bot.send_event(delayed, apply=False).json()["outcome"] == "queued"
        wait_until(
            lambda: direct_messages(fake_slack, "U0BOB") and direct_messages(fake_slack, "U0CAROL"),
            10,
            "the direct messages waited for the channel's slot",
        )
        assert fake_slack.replies(CHANNEL, card.ts) == []  # the reply still waits for it


def test_a_slack_outage_delays_the_direct_message_but_not_the_card(with_deciders, fake_slack):
    fake_slack.fail_next("conversations.open", status=503, times=2)
    with time_machine.travel(START, tick=False) as clock:
        order, card = old_card_then_delay(with_deciders, fake_slack, clock)
        assert fake_slack.replies(CHANNEL, card.ts)[0].broadcast
        for _attempt in range(2):  # each retry waits out its back-off
            clock.shift(600)
            with_deciders.deliver()
    assert len(direct_messages(fake_slack, "U0BOB")) == 1
    assert len(direct_messages(fake_slack, "U0CAROL")) == 1


def test_without_deciders_the_delay_is_still_broadcast_and_mentions_nobody(running, fake_slack):
    with time_machine.travel(START, tick=False) as clock:
        order, card = old_card_then_delay(running, fake_slack, clock)
    [reply] = fake_slack.replies(CHANNEL, card.ts)
    assert reply.broadcast
    blocks = json.dumps(reply.blocks)
    assert "<@" not in blocks and "<!" not in blocks.replace("<!date^", "")
    assert fake_slack.calls_to("conversations.open") == []


def test_a_delay_that_opens_a_new_card_names_the_deciders_in_its_thread(with_deciders, fake_slack):
    with time_machine.travel(START, tick=False):
        order = so.delayed(so.order(), 2030, at=START)
        with_deciders.send_event(so.event("climate.order.delayed", order, created=START))
        with_deciders.deliver()
    [card] = fake_slack.messages(CHANNEL)  # the card is in the channel
    [reply] = fake_slack.replies(CHANNEL, card.ts)
    assert not reply.broadcast
    assert "Decision needed" in reply.text and "<!subteam^S0FINANCE>" in reply.text
    assert len(direct_messages(fake_slack, "U0CAROL")) == 1


def test_the_last_reminder_is_broadcast_and_sent_to_the_deciders(with_deciders, fake_slack):
    with time_machine.travel(START, tick=False) as clock:
        order, card = old_card_then_delay(with_deciders, fake_slack, clock)
        deadline = START + WEEKS + DECISION_WINDOW_SECONDS
        scheduler = with_deciders.bot.scheduler
        assert scheduler.send_reminders(deadline - 6 * 86400) == [(order["id"], 7)]
        with_deciders.deliver()
        assert scheduler.send_reminders(deadline - 3600) == [(order["id"], 1)]
        with_deciders.deliver()
    first, seven, last = fake_slack.replies(CHANNEL, card.ts)
    assert "7 days left" in seven.text and not seven.broadcast
    assert "<@U0BOB>" in seven.text  # reminders name the deciders
    assert "1 day left" in last.text and last.broadcast
    for user in ("U0BOB", "U0CAROL"):
        change, reminder = direct_messages(fake_slack, user)
        assert "Last reminder: 1 day left" in json.dumps(reminder.blocks)


def test_a_window_that_closes_undecided_is_told_in_the_channel(with_deciders, fake_slack):
    with time_machine.travel(START, tick=False) as clock:
        order, card = old_card_then_delay(with_deciders, fake_slack, clock)
        clock.shift(DECISION_WINDOW_SECONDS + 1)
        with_deciders.bot.scheduler.close_expired_windows(START + WEEKS + DECISION_WINDOW_SECONDS)
        with_deciders.deliver()
    closed = fake_slack.replies(CHANNEL, card.ts)[-1]
    assert closed.broadcast
    assert "accepted by default" in closed.text and "<@U0BOB>" in closed.text


def test_a_window_closing_after_a_decision_is_not_announced(with_deciders, fake_slack):
    with time_machine.travel(START, tick=False) as clock:
        order, card = old_card_then_delay(with_deciders, fake_slack, clock)
        storage = with_deciders.bot.storage
        with storage.transaction():
            row = storage.order_row(order["id"])
            storage.claim_decision(
                order["id"],
                "accepted",
                user="U0BOB",
                deadline=row["decision_deadline"],
                now=START + WEEKS + 60,
            )
        with_deciders.bot.scheduler.close_expired_windows(START + WEEKS + DECISION_WINDOW_SECONDS)
        with_deciders.deliver()
    assert [r.broadcast for r in fake_slack.replies(CHANNEL, card.ts)] == [True]


def test_a_window_that_closed_long_ago_is_shown_on_the_card_but_not_announced(
    with_deciders, fake_slack
):
    with time_machine.travel(START, tick=False) as clock:
        order, card = old_card_then_delay(with_deciders, fake_slack, clock)
        clock.shift(DECISION_WINDOW_SECONDS + 3 * 86400)  # the bot was down for days
        with_deciders.bot.scheduler.close_expired_windows(time.time())
        with_deciders.deliver()
    assert [r.broadcast for r in fake_slack.replies(CHANNEL, card.ts)] == [True]  # the delay's
    assert "accepted by default" in json.dumps(fake_slack.messages(CHANNEL)[0].blocks)


def test_a_direct_message_whose_card_is_not_posted_yet_waits_without_an_error(
    with_deciders, fake_slack, caplog
):
    storage = with_deciders.bot.storage
    with time_machine.travel(START, tick=False) as clock:
        order = so.order()
        with_deciders.send_event(so.event("climate.order.created", order, created=START))
        delayed = so.delayed(order, 2030, at=START + 1)
        with_deciders.send_event(so.event("climate.order.delayed", delayed, created=START + 1))
        storage.hold_channel(CHANNEL, 120)  # a Slack rate limit: the card cannot go yet
        with caplog.at_level(logging.INFO, logger="bot.delivery"):
            with_deciders.deliver()
        assert fake_slack.messages(CHANNEL) == [] and direct_messages(fake_slack, "U0BOB") == []
        waited = [r for r in caplog.records if "waits" in r.getMessage()]
        assert waited and "CardNotPosted" in waited[0].getMessage()
        assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
        assert all(r.exc_info is None for r in waited)  # an expected wait, not a traceback
        storage.release_long_holds()
        clock.shift(120)
        with_deciders.deliver()
    [card] = fake_slack.messages(CHANNEL)
    [dm] = direct_messages(fake_slack, "U0BOB")
    assert card.ts.replace(".", "") in json.dumps(dm.blocks)
