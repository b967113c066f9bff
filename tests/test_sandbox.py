"""The Slack sandbox and the demo's story, against the real bot over HTTP (no browser).

Clicks and commands made on the sandbox page must reach the bot exactly as Slack sends them, and
the bot's answers must show up as Slack would show them, to the person who acted only.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections.abc import Iterator

import pytest

from bot.demo.sandbox import SandboxError, SlackSandbox, create_sandbox_app
from bot.demo.story import PORTFOLIO_2028, Story, inventory
from bot.demo.webhooks import WebhookSender
from bot.fakes import stripe_objects as so
from bot.fakes.slack import FakeSlack
from bot.fakes.stripe_schema import validate_event
from bot.model import CANCEL_ACTION
from tests.conftest import CHANNEL, SIGNING_SECRET, WEBHOOK_SECRET, RunningBot

ALICE, BOB = "U0ALICE", "U0BOB"


@pytest.fixture
def sandbox(running: RunningBot, fake_slack: FakeSlack) -> SlackSandbox:
    return SlackSandbox(fake_slack, app_url=running.url, signing_secret=SIGNING_SECRET)


@pytest.fixture
def recorded_slack_requests(running: RunningBot) -> list[tuple[dict, str]]:
    """Every request that reaches the bot's /slack/events: (headers, body)."""
    seen: list[tuple[dict, str]] = []
    app = running.bot.bolt

    @app.middleware
    def record(req, resp, next):
        seen.append((dict(req.headers), req.raw_body))
        return next()

    return seen


def delayed_card(running: RunningBot, fake_stripe, fake_slack) -> tuple[dict, str]:
    order = so.order()
    fake_stripe.add_order(order)
    now = int(time.time())
    delayed = so.delayed(order, 2030, at=now)
    fake_stripe.add_order(delayed)
    running.send_event(so.event("climate.order.created", order, created=now - 100))
    running.send_event(so.event("climate.order.delayed", delayed, created=now))
    running.deliver()
    [card] = fake_slack.messages(CHANNEL)
    return delayed, card.ts


def cancel_button(fake_slack, ts: str) -> tuple[int, str]:
    [card] = [m for m in fake_slack.messages(CHANNEL) if m.ts == ts]
    for index, block in enumerate(card.blocks):
        for position, element in enumerate(block.get("elements") or []):
            if element.get("action_id") == CANCEL_ACTION:
                return index, str(position)
    raise AssertionError("the card has no Cancel button")


def test_a_click_reaches_the_bot_as_slack_sends_it_and_the_answer_is_for_the_clicker_only(
    sandbox, running, fake_slack, fake_stripe, recorded_slack_requests
):
    order, ts = delayed_card(running, fake_stripe, fake_slack)
    block, element = cancel_button(fake_slack, ts)
    sent = sandbox.click(ALICE, ts, block, element)
    assert sent.status == 200
    [(headers, body)] = recorded_slack_requests
    assert headers["x-slack-signature"][0].startswith("v0=")
    payload = json.loads(urllib.parse.parse_qs(body)["payload"][0])
    assert payload["type"] == "block_actions"
    assert payload["user"] == {
        "id": ALICE,
        "username": "alice",
        "name": "alice",
        "team_id": "T0TEST",
    }
    assert payload["response_url"].startswith(fake_slack.base_url + "/hooks/")
    assert payload["trigger_id"] and payload["container"]["message_ts"] == ts
    [action] = payload["actions"]
    assert (action["action_id"], action["value"]) == (CANCEL_ACTION, order["id"])
    assert action["text"]["text"] == "Cancel order" and action["style"] == "danger"
    assert payload["message"]["ts"] == ts and payload["message"]["blocks"]

    fake_slack.wait_for(lambda c: c.path.startswith("/hooks/"))
    seen_by_alice = sandbox.changes(ALICE, 0)["messages"]
    assert any("Cancelling order" in m["html"] for m in seen_by_alice if m["key"].startswith("e"))
    assert not [m for m in sandbox.changes(BOB, 0)["messages"] if m["key"].startswith("e")]
    running.deliver()
    assert fake_stripe.get_order(order["id"])["status"] == "canceled"
    card_html = next(m["html"] for m in sandbox.changes(ALICE, 0)["messages"] if m["key"] == ts)
    assert "Cancelled by" in card_html and "@alice" in card_html


def test_a_click_on_a_button_that_is_no_longer_there_sends_nothing(
    sandbox, running, fake_slack, fake_stripe, recorded_slack_requests
):
    _, ts = delayed_card(running, fake_stripe, fake_slack)
    with pytest.raises(SandboxError, match="changed since you saw it"):
        sandbox.click(ALICE, ts, 0, "0")  # the header: no button there
    with pytest.raises(SandboxError, match="gone"):
        sandbox.click(ALICE, "1.000001", 0, "0")
    with pytest.raises(SandboxError, match="Unknown user"):
        sandbox.click("U0BOT", ts, *cancel_button(fake_slack, ts))
    assert recorded_slack_requests == []


def test_a_slash_command_goes_as_slack_s_form_fields_and_its_answer_is_ephemeral(
    sandbox, running, fake_slack, recorded_slack_requests
):
    sent = sandbox.command(ALICE, "/climate pending")
    assert sent is not None and sent.status == 200
    [(headers, body)] = recorded_slack_requests
    assert headers["content-type"][0] == "application/x-www-form-urlencoded"
    form = dict(urllib.parse.parse_qsl(body))
    assert (form["command"], form["text"], form["user_id"]) == ("/climate", "pending", ALICE)
    assert form["channel_id"] == CHANNEL and form["response_url"] and form["trigger_id"]
    [answer] = fake_slack.ephemerals(CHANNEL)
    assert answer["user"] == ALICE and "No order is waiting for a decision" in answer["text"]
    assert [m["key"] for m in sandbox.changes(BOB, 0)["messages"]] == []


def test_next_in_an_ephemeral_answer_replaces_that_answer(sandbox, running, fake_slack):
    now = int(time.time())
    for n in range(12):
        running.send_event(so.event("climate.order.created", so.order(created=now - n)))
    sandbox.command(ALICE, "/climate orders")
    [first] = fake_slack.ephemerals(CHANNEL)
    [(block, element)] = [
        (i, str(j))
        for i, b in enumerate(first["blocks"])
        for j, e in enumerate(b.get("elements") or [])
        if e.get("type") == "button"
    ]
    assert sandbox.click(ALICE, "e" + first["message_ts"], block, element).status == 200
    fake_slack.wait_for(lambda c: c.path.startswith("/hooks/"))
    [second] = fake_slack.ephemerals(CHANNEL)  # replaced in place, as Slack does
    assert second["message_ts"] == first["message_ts"] and second["text"] != first["text"]
    with pytest.raises(SandboxError, match="gone"):
        sandbox.click(BOB, "e" + first["message_ts"], block, element)  # not his to click


def test_other_commands_and_plain_text_never_reach_the_bot(
    sandbox, fake_slack, recorded_slack_requests
):
    assert sandbox.command(ALICE, "/giphy cats") is None
    assert "is not a valid command" in fake_slack.ephemerals(CHANNEL)[0]["text"]
    assert sandbox.command(BOB, "hello <!channel> & co") is None
    [typed] = fake_slack.messages(CHANNEL)
    assert (typed.user, typed.text) == (BOB, "hello &lt;!channel&gt; &amp; co")
    assert recorded_slack_requests == []


def test_a_bot_that_does_not_answer_is_reported_like_slack_does(fake_slack):
    sandbox = SlackSandbox(fake_slack, app_url="http://127.0.0.1:9", signing_secret="x")
    sent = sandbox.command(ALICE, "/climate help")
    assert sent is not None and sent.status is None
    [note] = fake_slack.ephemerals(CHANNEL)
    assert note["user"] == ALICE and "operation_timeout" in note["text"]


def test_changes_list_only_what_changed_since_a_revision(sandbox, fake_slack):
    first = fake_slack.add_message(CHANNEL, "one")
    fake_slack.add_message(CHANNEL, "two")
    everything = sandbox.changes(ALICE, 0)
    assert everything["full"] and len(everything["messages"]) == 2
    reply = fake_slack.add_message(CHANNEL, "in the thread", thread_ts=first.ts)
    delta = sandbox.changes(ALICE, everything["revision"])
    assert not delta["full"]
    assert [(m["key"], m["thread_ts"]) for m in delta["messages"]] == [
        (first.ts, None),  # its reply count changed
        (reply.ts, first.ts),
    ]
    assert "1 reply" in delta["messages"][0]["html"]
    assert sandbox.changes(ALICE, delta["revision"], wait=0.05)["messages"] == []


def test_a_long_poll_returns_as_soon_as_something_changes(sandbox, fake_slack):
    since = sandbox.changes(ALICE, 0)["revision"]
    threading.Timer(0.2, lambda: fake_slack.add_message(CHANNEL, "news")).start()
    started = time.monotonic()
    delta = sandbox.changes(ALICE, since, wait=10)
    assert len(delta["messages"]) == 1 and time.monotonic() - started < 5


@pytest.fixture
def page_client(sandbox, fake_stripe) -> Iterator:
    app = create_sandbox_app(sandbox, fake_stripe)
    with app.test_client() as client:
        yield client


def test_the_page_refuses_other_hosts_cross_site_posts_and_non_json(page_client):
    assert page_client.get("/", headers={"Host": "evil.example"}).status_code == 403
    origin = {"Origin": "http://evil.example", "Host": "127.0.0.1:3000"}
    body = {"user": ALICE, "text": "hi"}
    assert page_client.post("/sandbox/command", json=body, headers=origin).status_code == 403
    local = {"Host": "127.0.0.1:3000"}
    form = page_client.post("/sandbox/command", data=body, headers=local)
    assert form.status_code == 400
    page = page_client.get("/", headers=local)
    assert (
        page.status_code == 200 and "script-src 'self'" in page.headers["Content-Security-Policy"]
    )
    assert page_client.get("/stripe", headers=local).status_code == 200


class CheckedSender(WebhookSender):
    """Checks every event the story makes up against Stripe's schemas, and keeps it."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.told: list[dict] = []

    def send(self, event) -> bool:
        assert validate_event(event) == [], event["type"]
        self.told.append(event)
        return super().send(event)


def test_the_story_tells_every_event_to_the_bot_and_stripe_agrees(running, fake_slack, fake_stripe):
    for product in inventory(int(time.time())):
        fake_stripe.add_product(product)
    webhooks = CheckedSender(running.url + "/stripe/webhook", WEBHOOK_SECRET, fake_stripe)
    story = Story(fake_stripe, webhooks, pause=0, seed=1)
    story.play()
    assert [e["type"] for e in webhooks.told] == [
        "climate.product.created",
        "climate.order.delayed",
        "climate.product.created",
        "climate.order.product_substituted",
        "climate.order.delivered",
        "climate.product.pricing_updated",
        "climate.order.canceled",
    ]
    assert running.bot.storage.count_events() == 7 + 4  # and Stripe's own four order.created
    running.deliver()
    headers = [m.blocks[0]["text"]["text"] for m in fake_slack.messages(CHANNEL)]
    assert any("Order delayed — decision needed" in h for h in headers)
    assert any("Product substituted — decision needed" in h for h in headers)
    swapped = fake_stripe.get_order(story.orders[1])
    assert swapped["product"] == PORTFOLIO_2028 and swapped["product_substituted_at"]
    assert fake_stripe.get_order(story.orders[3])["cancellation_reason"] == "product_unavailable"

    story.play_random(20)
    assert webhooks.sent == running.bot.storage.count_events() == 11 + 20
    running.deliver()
    assert running.bot.storage.failures() == []
