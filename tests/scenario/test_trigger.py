"""`climate-bot trigger`: a realistic, signed event POSTed to the running bot over real HTTP."""

from __future__ import annotations

import json
import re
import socket

import pytest
from click.testing import CliRunner

from bot.cli import main
from bot.model import HANDLED_EVENTS
from tests.support.bot import CHANNEL, WEBHOOK_SECRET
from tests.support.stripe_schema import validate_event

# Only what trigger needs: no Slack or Stripe API keys in its environment.
TRIGGER_ENV = {"STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET}


def trigger(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, ["trigger", *args], env=TRIGGER_ENV if env is None else env)


def sent_event_id(output: str) -> str:
    return re.search(r"\b(evt_\w+)", output).group(1)


@pytest.fixture
def webhook(running) -> str:
    return running.url + "/stripe/webhook"


@pytest.mark.parametrize("event_type", HANDLED_EVENTS)
def test_each_climate_event_is_accepted_and_recorded(running, webhook, event_type):
    result = trigger(event_type, "--url", webhook)

    assert result.exit_code == 0, result.output
    assert f"POST {webhook}" in result.output
    assert "bot answered 200" in result.output and '"outcome":"queued"' in result.output
    recorded = running.bot.storage.event(sent_event_id(result.output))
    assert recorded is not None and recorded["type"] == event_type
    assert validate_event(recorded) == []  # what was sent is shaped exactly like Stripe's


def test_default_url_is_the_bots_port_on_this_host(running):
    port = running.url.rsplit(":", 1)[1]
    result = trigger("climate.order.created", env={**TRIGGER_ENV, "PORT": port})
    assert result.exit_code == 0, result.output
    assert f"POST http://127.0.0.1:{port}/stripe/webhook" in result.output
    assert running.bot.storage.count_events() == 1


def test_a_wrong_secret_reports_the_bots_refusal_and_fails(running, webhook):
    env = {"STRIPE_WEBHOOK_SECRET": "whsec_not_the_bots_secret"}
    result = trigger("climate.order.created", "--url", webhook, env=env)
    assert result.exit_code == 1
    assert "bot answered 400" in result.output
    assert "signature verification failed" in result.output
    assert "The bot refused the event." in result.output
    assert running.bot.storage.count_events() == 0


def test_unknown_type_lists_the_seven_and_exits_2():
    result = trigger("climate.order.confirmed")
    assert result.exit_code == 2
    assert "Unknown event type 'climate.order.confirmed'" in result.output
    for event_type in HANDLED_EVENTS:
        assert f"  {event_type}\n" in result.output


def test_one_order_id_tells_one_story_on_one_card(running, webhook, fake_slack):
    order_id = "climorder_1StoryTold0000000000000"
    story = ("climate.order.created", "climate.order.delayed", "climate.order.delivered")
    for event_type in story:
        result = trigger(event_type, "--url", webhook, "--order", order_id)
        assert result.exit_code == 0, result.output
    running.deliver()

    [card] = fake_slack.messages(CHANNEL)
    assert order_id in json.dumps(card.blocks)
    assert len(fake_slack.replies(CHANNEL, card.ts)) == 2  # the delay, then the delivery
    assert running.bot.storage.order_row(order_id)["status"] == "delivered"
    assert [e["type"] for e in running.bot.storage.order_events(order_id)] == list(story)


def test_order_is_refused_with_product_events_or_a_foreign_id(running, webhook):
    result = trigger("climate.product.created", "--url", webhook, "--order", "climorder_1")
    assert result.exit_code == 2
    result = trigger("climate.order.created", "--url", webhook, "--order", "ord_1")
    assert result.exit_code == 2
    assert "--order" in result.output
    assert running.bot.storage.count_events() == 0


def test_missing_secret_is_named_without_asking_for_other_keys():
    result = trigger("climate.order.created", env={})
    assert result.exit_code == 2
    assert "climate-bot trigger cannot send; fix the configuration" in result.output
    assert "STRIPE_WEBHOOK_SECRET is not set" in result.output
    assert "SLACK_BOT_TOKEN" not in result.output
    assert "cannot start" not in result.output  # trigger starts nothing


def test_no_bot_listening_is_said_plainly():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # The port is free again: nothing listens there.
    result = trigger("climate.order.created", "--url", f"http://127.0.0.1:{port}/stripe/webhook")
    assert result.exit_code == 1
    assert "climate-bot trigger cannot send climate.order.created: nothing answered" in (
        result.output
    )
    assert "Is the bot running there?" in result.output
    assert "cannot start" not in result.output
