"""The scheduler closes decision windows on the card once, however many processes run it."""

from __future__ import annotations

import json
import time

import time_machine

from bot.model import DECISION_WINDOW_SECONDS
from bot.sandbox import stripe_objects as so
from bot.scheduler import Scheduler
from bot.storage import Storage
from tests.support.bot import CHANNEL


def test_card_loses_its_buttons_when_the_window_closes(running, fake_slack, settings):
    start = 1_900_000_000
    order = so.order()
    with time_machine.travel(start, tick=False) as clock:
        delayed = so.delayed(order, 2030, at=start)
        running.send_event(so.event("climate.order.delayed", delayed, created=start))
        running.deliver()
        [card] = fake_slack.messages(CHANNEL)
        assert '"actions"' in json.dumps(card.blocks)

        other = Scheduler(Storage(settings.DATABASE_PATH), CHANNEL)
        assert running.bot.scheduler.close_expired_windows(time.time()) == []
        clock.shift(DECISION_WINDOW_SECONDS + 1)
        # Two processes run the scheduler at the same moment: the window closes once.
        closed = running.bot.scheduler.close_expired_windows(time.time())
        closed += other.close_expired_windows(time.time())
        assert closed == [order["id"]]
        running.deliver()
    [card] = fake_slack.messages(CHANNEL)
    assert card.updates == 1
    blocks = json.dumps(card.blocks)
    assert '"actions"' not in blocks
    assert "No decision by" in blocks and "accepted by default" in blocks
    other.storage.close()


def test_event_replayed_after_its_window_has_closed_has_no_buttons(running, fake_slack):
    long_ago = int(time.time()) - DECISION_WINDOW_SECONDS - 3600
    order = so.order()
    running.send_event(so.event("climate.order.delayed", so.delayed(order, 2030, at=long_ago)))
    running.deliver()
    [card] = fake_slack.messages(CHANNEL)
    assert '"actions"' not in json.dumps(card.blocks)


def test_a_new_delay_reopens_a_closed_window(running, fake_slack):
    start = 1_900_000_000
    order = so.order()
    with time_machine.travel(start, tick=False) as clock:
        first = so.delayed(order, 2029, at=start)
        running.send_event(so.event("climate.order.delayed", first, created=start))
        clock.shift(DECISION_WINDOW_SECONDS + 1)
        assert running.bot.scheduler.close_expired_windows(time.time()) == [order["id"]]
        later = int(time.time())
        second = so.delayed(first, 2030, at=later)
        running.send_event(so.event("climate.order.delayed", second, created=later))
        running.deliver()
        row = running.bot.storage.order_row(order["id"])
        assert row["window_closed"] == 0
        assert row["decision_deadline"] == later + DECISION_WINDOW_SECONDS
    [card] = fake_slack.messages(CHANNEL)
    assert '"actions"' in json.dumps(card.blocks)
