"""`climate-bot demo --socket-mode`: the whole demo with the transports of a bot that has no
public URL. The bot connects to the Slack sandbox over a real websocket and reads the Stripe
sandbox's Events API; a click, a modal and a command made on the sandbox page work as over HTTP.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from bot.demo.run import CHANNEL, RunningDemo, start_demo
from bot.model import CANCEL_ACTION
from tests.support.bot import wait_until

ALICE = "U0ALICE"


@pytest.fixture
def demo() -> Iterator[RunningDemo]:
    running = start_demo(port=0, fast=True, socket_mode=True)
    try:
        yield running
    finally:
        running.stop()


def cancel_button(demo: RunningDemo) -> tuple[str, int, str]:
    """The card that offers Cancel, and where its button is."""
    for message in demo.slack.messages(CHANNEL):
        for index, block in enumerate(message.blocks):
            for position, element in enumerate(block.get("elements") or []):
                if element.get("action_id") == CANCEL_ACTION:
                    return message.ts, index, str(position)
    raise AssertionError("no card offers Cancel")


def test_the_story_arrives_through_the_events_api_and_nothing_through_http(demo):
    settings = demo.bot.settings
    assert settings.socket_mode and settings.polls_stripe
    assert settings.webhook_secrets == () and settings.SLACK_SIGNING_SECRET is None
    assert demo.story.finished.wait(60)
    wait_until(lambda: len(demo.slack.messages(CHANNEL)) >= 6, 60, "the story's cards are missing")
    sources = demo.bot.storage.conn.execute("SELECT DISTINCT source FROM events").fetchall()
    assert [row[0] for row in sources] == ["poll"]  # read from the Events API, no webhook
    assert demo.slack.socket.connections() == 1
    assert demo.bot.health()["status"] == "ok"


def test_a_cancel_clicked_on_the_page_goes_over_the_socket_and_cancels_at_stripe(demo):
    assert demo.story.finished.wait(60)
    wait_until(lambda: _offers_cancel(demo), 60, "no delayed card came")
    ts, block, element = cancel_button(demo)
    order_id = _order_of(demo, ts)
    sent = demo.sandbox.click(ALICE, ts, block, element)
    assert sent.status == 200  # the bot's acknowledgement of the envelope
    wait_until(lambda: demo.sandbox.modal(ALICE)["view_id"], 10, "the cancel dialog did not open")
    modal = demo.sandbox.modal(ALICE)
    closed = demo.sandbox.submit(ALICE, modal["view_id"], {"reason": {"reason": "over budget"}})
    assert closed["view_id"] is None  # the acknowledgement closed the dialog
    wait_until(
        lambda: demo.stripe.get_order(order_id)["status"] == "canceled",
        20,
        "the cancel did not reach the Stripe sandbox",
    )
    wait_until(
        lambda: "Cancelled by" in json.dumps(_blocks_of(demo, ts)),
        20,
        "the card does not say who cancelled",
    )
    # The cancel's own event came back through the Events API and was told once on the card.
    wait_until(
        lambda: any("cancel" in m.text.lower() for m in demo.slack.replies(CHANNEL, ts)),
        20,
        "the cancellation was not told in the card's thread",
    )


def test_a_slash_command_typed_on_the_page_is_answered_over_the_socket(demo):
    assert demo.story.finished.wait(60)
    wait_until(lambda: _offers_cancel(demo), 60, "no delayed card came")
    ts, _, _ = cancel_button(demo)
    order_id = _order_of(demo, ts)
    sent = demo.sandbox.command(ALICE, f"/climate status {order_id}")
    assert sent is not None and sent.status == 200
    wait_until(
        lambda: any(order_id in json.dumps(e) for e in demo.slack.ephemerals(CHANNEL)),
        10,
        "the status answer was not shown to alice",
    )


def _offers_cancel(demo: RunningDemo) -> bool:
    try:
        cancel_button(demo)
    except AssertionError:
        return False
    return True


def _blocks_of(demo: RunningDemo, ts: str) -> list:
    return next(m.blocks for m in demo.slack.messages(CHANNEL) if m.ts == ts)


def _order_of(demo: RunningDemo, ts: str) -> str:
    """The order a card offering Cancel is about: the button's value."""
    for block in _blocks_of(demo, ts):
        for element in block.get("elements") or []:
            if element.get("action_id") == CANCEL_ACTION:
                return str(element["value"])
    raise AssertionError("the card offers no Cancel")
