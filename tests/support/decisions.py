"""Deciding from Slack in tests: signed clicks, dialog submissions, what the clicker is told."""

from __future__ import annotations

import json
import time
import urllib.parse

import requests

from bot.model import CANCEL_ACTION
from bot.sandbox import stripe_objects as so
from bot.sandbox.slack import RESPONSE_URL_METHOD
from bot.sandbox.slack_requests import (
    block_actions_payload,
    sign_slack_request,
    view_submission_body,
)
from tests.support.bot import CHANNEL, SIGNING_SECRET


def post_to_slack_events(bot, body: str) -> requests.Response:
    response = requests.post(
        bot.url + "/slack/events",
        data=body,
        headers=sign_slack_request(body, SIGNING_SECRET),
        timeout=10,
    )
    assert response.status_code == 200
    return response


def click_payload(
    fake_slack, action: str, order_id: str, user: str = "U0ALICE", *, user_team=None
) -> tuple[str, str, dict]:
    """A click on the first card's button as Slack reports it, over HTTP or Socket Mode alike:
    (its response_url, its trigger_id, the block_actions payload). `user_team`: the clicker's
    own workspace, when not the bot's (a Slack Connect guest)."""
    url = fake_slack.new_response_url()
    trigger = fake_slack.new_trigger_id(user=user)
    cards = fake_slack.messages(CHANNEL)
    payload = block_actions_payload(
        action_id=action,
        value=order_id,
        user_id=user,
        response_url=url,
        message=cards[0] if cards else None,
        trigger_id=trigger,
        user_team_id=user_team,
    )
    return url, trigger, payload


def press(
    bot, fake_slack, action: str, order_id: str, user: str = "U0ALICE", *, user_team=None
) -> tuple[str, str]:
    """Click a card's button as Slack would; return (its response_url, its trigger_id)."""
    url, trigger, payload = click_payload(fake_slack, action, order_id, user, user_team=user_team)
    post_to_slack_events(bot, urllib.parse.urlencode({"payload": json.dumps(payload)}))
    return url, trigger


def first_answer(fake_slack, url: str) -> str:
    hook = url.rsplit("/", 1)[1]
    fake_slack.wait_for(lambda c: c.method == RESPONSE_URL_METHOD and c.path.endswith(hook))
    return fake_slack.responses(url)[0]["text"]


def click(bot, fake_slack, action: str, order_id: str, user: str = "U0ALICE", **kw) -> str:
    """Click a button; return the ephemeral answer the clicker sees. Cancel opens a dialog:
    this submits it with no reason (see `cancel_dialog` to look at it first)."""
    if action == CANCEL_ACTION:
        return cancel(bot, fake_slack, order_id, user=user, **kw)
    url, _trigger = press(bot, fake_slack, action, order_id, user, **kw)
    return first_answer(fake_slack, url)


def cancel_dialog(bot, fake_slack, order_id: str, user: str = "U0ALICE", **kw):
    """Click Cancel; return (the response_url, the dialog Slack opened, or None and the answer)."""
    url, trigger = press(bot, fake_slack, CANCEL_ACTION, order_id, user, **kw)
    hook = url.rsplit("/", 1)[1]

    def opened_or_answered(call) -> bool:
        if call.method == "views.open":
            return call.params.get("trigger_id") == trigger
        return call.method == RESPONSE_URL_METHOD and call.path.endswith(hook)

    call = fake_slack.wait_for(opened_or_answered)[0]
    if call.method == RESPONSE_URL_METHOD:
        return url, None, fake_slack.responses(url)[0]["text"]
    [opening] = [o for o in fake_slack.view_openings() if o["trigger_id"] == trigger]
    return url, opening["view"], None


def submit(bot, fake_slack, view: dict, *, user: str = "U0ALICE", reason: str | None = None):
    """Submit the cancel dialog; return Bolt's answer to Slack (a dict, {} for "close")."""
    body = view_submission_body(view, values={"reason": {"reason": reason}}, user_id=user)
    response = post_to_slack_events(bot, body)
    return response.json() if response.text.strip() else {}


def cancel(bot, fake_slack, order_id: str, user: str = "U0ALICE", reason=None, **kw) -> str:
    """Click Cancel and submit its dialog; return what the clicker is told."""
    url, view, answer = cancel_dialog(bot, fake_slack, order_id, user, **kw)
    if view is None:
        return answer
    ack = submit(bot, fake_slack, view, user=user, reason=reason)
    if ack.get("response_action") == "update":
        return ack["view"]["blocks"][0]["text"]["text"]
    return first_answer(fake_slack, url)


def answers(fake_slack, url_count: int = 1) -> list[str]:
    return [r["text"] for r in fake_slack.responses()]


def delayed_order(bot, fake_stripe, *, at: int | None = None) -> dict:
    """A confirmed order, known to Stripe, whose delay the bot has posted with buttons."""
    order = so.order()
    fake_stripe.add_order(order)
    at = at or int(time.time())
    delayed = so.delayed(order, 2030, at=at)
    fake_stripe.add_order(delayed)
    bot.send_event(so.event("climate.order.created", order, created=at - 100))
    bot.send_event(so.event("climate.order.delayed", delayed, created=at))
    bot.deliver()
    return delayed
