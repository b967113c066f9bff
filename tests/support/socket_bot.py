"""The bot in Socket Mode in tests: its settings, a quick socket, and requests sent as envelopes."""

from __future__ import annotations

import time
from typing import Any

from bot.model import CANCEL_ACTION
from bot.sandbox.slack import RESPONSE_URL_METHOD
from bot.sandbox.slack_requests import (
    slash_command_payload,
    view_submission_payload,
)
from bot.settings import Settings, load_settings
from bot.slack_socket import SlackSocket
from bot.wiring import ClimateBot
from tests.support.bot import env_for, wait_until
from tests.support.decisions import click_payload

# A ping every 0.2 s, a lease renewed every 0.5 s: reconnections and take-overs within a second.
PING_INTERVAL = 0.2
LEASE_SECONDS = 1.5


def socket_settings(tmp_path, fake_slack, fake_stripe, **overrides: str) -> Settings:
    """The settings of a bot in Socket Mode: the fake's app-level token, no signing secret."""
    env = env_for(tmp_path, fake_slack, fake_stripe)
    del env["SLACK_SIGNING_SECRET"]
    return load_settings({**env, "SLACK_APP_TOKEN": fake_slack.app_token, **overrides})


def quick_socket(bot: ClimateBot, *, holder: str | None = None) -> SlackSocket:
    """Give `bot` a socket that pings and renews its lease often (not started yet)."""
    settings = bot.settings
    assert settings.SLACK_APP_TOKEN is not None
    bot.socket = SlackSocket(
        bot.bolt,
        bot.storage,
        app_token=settings.SLACK_APP_TOKEN,
        api_url=settings.SLACK_API_URL,
        ping_interval=PING_INTERVAL,
        lease_seconds=LEASE_SECONDS,
        holder=holder,
    )
    return bot.socket


def start_socket(bot: ClimateBot, fake_slack, *, timeout: float = 10.0) -> SlackSocket:
    """Give `bot` a quick socket, start it, and wait until it is Slack's one connection."""
    socket = quick_socket(bot)
    socket.start()
    fake_slack.socket.wait_for_connections(1, timeout)
    wait_until(lambda: socket.connected, timeout, "the socket never counted itself connected")
    return socket


def press(fake_slack, action: str, order_id: str, user: str = "U0ALICE") -> tuple[str, str, str]:
    """Click a card's button over the socket; return (response_url, trigger_id, envelope_id)
    once the click is acknowledged."""
    url, trigger, payload = click_payload(fake_slack, action, order_id, user)
    envelope = fake_slack.socket.send("interactive", payload)
    assert fake_slack.socket.wait_ack(envelope) == {}
    return url, trigger, envelope


def cancel_dialog(fake_slack, order_id: str, user: str = "U0ALICE") -> tuple[str, dict]:
    """Click Cancel over the socket; return (its response_url, the dialog Slack opened)."""
    url, trigger, _ = press(fake_slack, CANCEL_ACTION, order_id, user)
    fake_slack.wait_for(
        lambda c: c.method == "views.open" and c.params.get("trigger_id") == trigger
    )
    [opening] = [o for o in fake_slack.view_openings() if o["trigger_id"] == trigger]
    return url, opening["view"]


def submit(fake_slack, view: dict, *, user: str = "U0ALICE") -> str:
    """Submit the cancel dialog over the socket, no reason given; return its envelope_id."""
    payload = view_submission_payload(view, values={"reason": {"reason": None}}, user_id=user)
    return fake_slack.socket.send("interactive", payload)


def ask(fake_slack, text: str) -> dict[str, Any]:
    """Run `/climate <text>` over the socket; the answer, from the ack or the response_url."""
    url = fake_slack.new_response_url()
    started = time.monotonic()
    envelope = fake_slack.socket.send(
        "slash_commands", slash_command_payload(text=text, response_url=url)
    )
    ack = fake_slack.socket.wait_ack(envelope)
    assert time.monotonic() - started < 3  # Slack's limit for the acknowledgement
    if ack:
        return {**ack, "via": "ack"}
    hook = url.rsplit("/", 1)[1]
    fake_slack.wait_for(lambda c: c.method == RESPONSE_URL_METHOD and c.path.endswith(hook))
    return {**fake_slack.responses(url)[0], "via": "response_url"}


def send_commands(fake_slack, text: str, count: int) -> list[str]:
    """Send `/climate <text>` `count` times over the socket; the envelope ids."""
    return [
        fake_slack.socket.send(
            "slash_commands",
            slash_command_payload(text=text, response_url=fake_slack.new_response_url()),
        )
        for _ in range(count)
    ]
