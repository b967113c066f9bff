"""The Slack sandbox and the demo's story, against the real bot over HTTP (no browser).

Clicks, commands and modal submissions made on the sandbox page must reach the bot exactly as
Slack sends them, and the bot's answers must show up as Slack would show them, to the person who
acted only. Modals are also tried against a stand-in app (tests/support/form_bot.py) that answers a
submission with each of Slack's response_actions.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections.abc import Iterator

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.demo.story import PORTFOLIO_2028, Story, inventory
from bot.demo.webhooks import WebhookSender
from bot.demo.workspace import REQUIRED, SandboxError, SlackSandbox, create_sandbox_app
from bot.model import CANCEL_ACTION
from bot.sandbox import stripe_objects as so
from bot.sandbox.slack import RESPONSE_URL_METHOD, FakeSlack
from bot.sandbox.slack_requests import view_submission_body
from bot.settings import load_settings
from tests.support.bot import (
    CHANNEL,
    SIGNING_SECRET,
    WEBHOOK_SECRET,
    RunningBot,
    env_for,
    serve_bot,
    wait_until,
)
from tests.support.form_bot import HOSTILE_ERROR, FormBot, form_view, post_form_card
from tests.support.stripe_schema import validate_event

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


def wait_for_modal(sandbox: SlackSandbox, user: str, *, title: str | None = None) -> dict:
    """The modal `user` sees, once the app has opened it (or changed it to `title`)."""
    wait_until(
        lambda: sandbox.modal(user)["view_id"] and (title is None or title in modal_title(sandbox)),
        5,
        f"no modal opened for {user}",
    )
    return sandbox.modal(user)


def modal_title(sandbox: SlackSandbox, user: str = ALICE) -> str:
    html = sandbox.modal(user)["html"]
    return html.split('class="sk-view-title" id="sk-view-title">', 1)[-1].split("</h2>", 1)[0]


def test_cancel_opens_the_bot_s_modal_for_the_clicker_and_its_submission_cancels(
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
    assert action["text"]["text"].startswith("Cancel order") and action["style"] == "danger"
    assert payload["message"]["ts"] == ts and payload["message"]["blocks"]
    assert "confirm" not in payload["message"]["blocks"][block]["elements"][int(element)]

    # The modal: opened with the click's trigger, for alice only, with the order and its refund.
    modal = wait_for_modal(sandbox, ALICE)
    [opening] = fake_slack.view_openings()
    assert (opening["user"], opening["trigger_id"]) == (ALICE, payload["trigger_id"])
    view = opening["view"]
    assert view["callback_id"] == "cancel_order" and json.loads(view["private_metadata"])
    assert order["id"] in modal["html"] and "$5,665.00" in modal["html"]
    assert sandbox.modal(BOB)["view_id"] is None
    sent_before = len(recorded_slack_requests)
    after = sandbox.submit(ALICE, modal["view_id"], {"reason": {"reason": "Supplier <!channel>"}})
    assert after["view_id"] is None  # the bot's empty acknowledgement closed it
    [(headers, body)] = recorded_slack_requests[sent_before:]
    submission = json.loads(urllib.parse.parse_qs(body)["payload"][0])
    assert submission["type"] == "view_submission" and submission["user"]["id"] == ALICE
    assert submission["view"]["state"]["values"]["reason"]["reason"] == {
        "type": "plain_text_input",
        "value": "Supplier <!channel>",
    }

    # The bot answers through the click's response_url: under the card, for alice only.
    fake_slack.wait_for(lambda c: c.path.startswith("/hooks/"))
    answers = [m for m in sandbox.changes(ALICE, 0)["messages"] if m["key"].startswith("e")]
    assert answers and all(m["after"] == ts for m in answers)
    assert not [m for m in sandbox.changes(BOB, 0)["messages"] if m["key"].startswith("e")]
    running.deliver()
    assert fake_stripe.get_order(order["id"])["status"] == "canceled"
    card_html = next(m["html"] for m in sandbox.changes(ALICE, 0)["messages"] if m["key"] == ts)
    assert "Cancelled by" in card_html and "@alice" in card_html


def test_someone_who_may_not_decide_gets_no_modal_and_the_refusal_sits_under_the_card(
    tmp_path, fake_slack, fake_stripe
):
    settings = load_settings(
        {**env_for(tmp_path, fake_slack, fake_stripe), "SLACK_ALLOWED_DECIDERS": ALICE}
    )
    with serve_bot(settings) as running:
        sandbox = SlackSandbox(
            fake_slack, app_url=running.url, signing_secret=SIGNING_SECRET, deciders=(ALICE,)
        )
        _, ts = delayed_card(running, fake_stripe, fake_slack)
        block, element = cancel_button(fake_slack, ts)
        assert sandbox.click(BOB, ts, block, element).status == 200
        fake_slack.wait_for(lambda c: c.path.startswith("/hooks/"))
        [answer] = [m for m in sandbox.changes(BOB, 0)["messages"] if m["key"].startswith("e")]
        assert answer["after"] == ts  # under the card, not at the bottom of the channel
        assert "Only visible to you" in answer["html"] and "alice" in answer["html"]
        assert fake_slack.view_openings() == [] and sandbox.modal(BOB)["view_id"] is None


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
    # At once in the HTTP answer, or through the response_url once Slack or Stripe was asked.
    wait_until(lambda: fake_slack.ephemerals(CHANNEL), 5, "no answer to /climate pending")
    [answer] = fake_slack.ephemerals(CHANNEL)
    assert answer["user"] == ALICE and "No order is waiting for a decision" in answer["text"]
    assert [m["key"] for m in sandbox.changes(BOB, 0)["messages"]] == []


def test_next_in_an_ephemeral_answer_replaces_that_answer(sandbox, running, fake_slack):
    now = int(time.time())
    for n in range(12):
        running.send_event(so.event("climate.order.created", so.order(created=now - n)))
    sandbox.command(ALICE, "/climate orders")
    wait_until(lambda: fake_slack.ephemerals(CHANNEL), 5, "no answer to /climate orders")
    [first] = fake_slack.ephemerals(CHANNEL)
    [(block, element)] = [
        (i, str(j))
        for i, b in enumerate(first["blocks"])
        for j, e in enumerate(b.get("elements") or [])
        if e.get("type") == "button"
    ]
    answered = len(fake_slack.wait_for(RESPONSE_URL_METHOD, count=0))  # /climate orders' own
    assert sandbox.click(ALICE, "e" + first["message_ts"], block, element).status == 200
    fake_slack.wait_for(RESPONSE_URL_METHOD, count=answered + 1)
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
    assert not delta["messages"][1]["broadcast"]
    assert sandbox.changes(ALICE, delta["revision"], wait=0.05)["messages"] == []
    client = WebClient(token=fake_slack.bot_token, base_url=fake_slack.api_url)
    shared = client.chat_postMessage(
        channel=CHANNEL, text="also here", thread_ts=first.ts, reply_broadcast=True
    )
    [*_, entry] = sandbox.changes(ALICE, delta["revision"])["messages"]
    assert (entry["key"], entry["thread_ts"], entry["broadcast"]) == (shared["ts"], first.ts, True)
    assert "replied to a thread" in entry["html"]


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


# --- modals, against a stand-in app (tests/support/form_bot.py) ----------------------------------


@pytest.fixture
def form_bot(fake_slack) -> Iterator[FormBot]:
    bot = FormBot(fake_slack, SIGNING_SECRET).start()
    try:
        yield bot
    finally:
        bot.stop()


@pytest.fixture
def form_sandbox(fake_slack, form_bot) -> SlackSandbox:
    return SlackSandbox(fake_slack, app_url=form_bot.url, signing_secret=SIGNING_SECRET)


def open_form(sandbox: SlackSandbox, fake: FakeSlack, user: str = ALICE, element: str = "0"):
    """Post the stand-in's card, click its button `element` as `user`; the card's ts, the modal."""
    ts = post_form_card(fake)
    assert sandbox.click(user, ts, 1, element).status == 200
    return ts, wait_for_modal(sandbox, user)


def test_view_submission_body_is_what_slack_posts(fake_slack):
    client = WebClient(token=fake_slack.bot_token, base_url=fake_slack.api_url)
    trigger_id = fake_slack.new_trigger_id(user=ALICE)
    client.views_open(trigger_id=trigger_id, view=form_view("https://hooks.example/x"))
    [opening] = fake_slack.view_openings(ALICE)
    assert opening["trigger_id"] == trigger_id and fake_slack.view_openings(BOB) == []
    view = opening["view"]
    body = view_submission_body(view, values={"reason": {"reason": "too late"}}, user_id=BOB)
    assert body.startswith("payload=")
    payload = json.loads(urllib.parse.parse_qs(body)["payload"][0])
    assert payload["type"] == "view_submission"
    assert payload["user"] == {"id": BOB, "username": "bob", "name": "bob", "team_id": "T0TEST"}
    assert payload["team"]["id"] == "T0TEST" and payload["api_app_id"] and payload["trigger_id"]
    sent = payload["view"]
    assert (sent["id"], sent["type"], sent["callback_id"]) == (view["id"], "modal", "test_form")
    assert sent["private_metadata"] == view["private_metadata"] and sent["hash"]
    assert sent["root_view_id"] == view["id"] and sent["previous_view_id"] is None
    assert sent["blocks"] == view["blocks"] and sent["title"] == view["title"]
    assert sent["state"] == {
        "values": {"reason": {"reason": {"type": "plain_text_input", "value": "too late"}}}
    }
    empty = json.loads(urllib.parse.parse_qs(view_submission_body(view, values={}))["payload"][0])
    assert empty["view"]["state"]["values"]["reason"]["reason"]["value"] is None
    with pytest.raises(ValueError, match="not an input"):
        view_submission_body(view, values={"nope": {"reason": "x"}})


def test_views_open_checks_a_modal_s_limits_with_slack_s_errors(fake_slack):
    client = WebClient(token=fake_slack.bot_token, base_url=fake_slack.api_url)
    good = form_view("https://hooks.example/x")

    def refusal(**changes) -> list[str]:
        with pytest.raises(SlackApiError) as exc:
            client.views_open(trigger_id=fake_slack.new_trigger_id(), view={**good, **changes})
        assert exc.value.response["error"] == "invalid_arguments"
        return exc.value.response["response_metadata"]["messages"]

    long = {"type": "plain_text", "text": "x" * 25}
    assert refusal(title=long) == [
        "[ERROR] must be less than 25 characters [json-pointer:/view/title/text]"
    ]
    assert "[json-pointer:/view/submit/text]" in refusal(submit=long)[0]
    assert "[json-pointer:/view/close/text]" in refusal(close=long)[0]
    assert refusal(private_metadata="x" * 3001) == [
        "[ERROR] must be less than 3001 characters [json-pointer:/view/private_metadata]"
    ]
    assert refusal(callback_id="x" * 256) == [
        "[ERROR] must be less than 256 characters [json-pointer:/view/callback_id]"
    ]
    assert refusal(blocks=[{"type": "divider"}] * 101) == [
        "[ERROR] no more than 100 items allowed [json-pointer:/view/blocks]"
    ]
    assert "submit" in refusal(submit=None)[0]  # input blocks need a submit button
    assert fake_slack.view_openings() == []
    # At the limits, and from a trigger the fake never minted (a canned payload's): accepted.
    at_limits = {
        **good,
        "title": {"type": "plain_text", "text": "x" * 24},
        "private_metadata": "x" * 3000,
        "callback_id": "x" * 255,
        "blocks": [*good["blocks"], *[{"type": "divider"}] * 95],
    }
    assert client.views_open(trigger_id="1.2.abc", view=at_limits)["ok"]
    assert [o["user"] for o in fake_slack.view_openings()] == [None]


def test_the_modal_is_the_clicker_s_alone_and_its_submission_goes_signed_as_slack_sends_it(
    form_sandbox, form_bot, fake_slack
):
    ts, modal = open_form(form_sandbox, fake_slack)
    assert form_sandbox.modal(BOB)["view_id"] is None  # alice's modal is not on bob's screen
    assert "Cancel climorder_1?" in modal["html"] and "$5,665.00" in modal["html"]
    assert modal["version"] > 0
    hostile = "<script>alert(1)</script> <!channel> & co"
    after = form_sandbox.submit(ALICE, modal["view_id"], {"reason": {"reason": hostile}})
    assert after["view_id"] is None and after["version"] > modal["version"]
    [submission] = form_bot.submissions  # Bolt accepted it: signed, parsed, routed by callback
    assert submission["user"]["id"] == ALICE and submission["user"]["name"] == "alice"
    assert submission["view"]["id"] == modal["view_id"]
    assert submission["view"]["state"]["values"]["reason"]["reason"]["value"] == hostile
    fake_slack.wait_for(lambda c: c.path.startswith("/hooks/"))
    [answer] = [m for m in form_sandbox.changes(ALICE, 0)["messages"] if m["key"][0] == "e"]
    assert answer["after"] == ts  # shown under the card the click was on
    assert "&lt;script&gt;" in answer["html"] and "<script>" not in answer["html"]
    assert [m for m in form_sandbox.changes(BOB, 0)["messages"] if m["key"][0] == "e"] == []


def test_each_response_action_of_the_app_is_carried_out(form_sandbox, form_bot, fake_slack):
    _, modal = open_form(form_sandbox, fake_slack)
    view_id = modal["view_id"]

    shown = form_sandbox.submit(ALICE, view_id, {"reason": {"reason": "errors please"}})
    assert shown["view_id"] == view_id  # kept open, with the error under the reason
    assert 'class="sk-block sk-input sk-input-invalid" data-block-id="reason"' in shown["html"]
    assert "Say more than &lt;that&gt; &amp; &lt;!channel&gt;" in shown["html"]
    assert HOSTILE_ERROR not in shown["html"]
    assert ">\nerrors please</textarea>" in shown["html"]  # what was typed stays

    shown = form_sandbox.submit(ALICE, view_id, {"reason": {"reason": "update it"}})
    assert shown["view_id"] == view_id and modal_title(form_sandbox) == "Thanks"
    assert ">\nupdate it</textarea>" in shown["html"]  # same block and action ids: kept
    assert "sk-input-error" not in shown["html"]

    pushed = form_sandbox.submit(ALICE, view_id, {"reason": {"reason": "push one"}})
    assert pushed["view_id"] != view_id and modal_title(form_sandbox) == "Are you sure?"
    back = form_sandbox.close_modal(ALICE, pushed["view_id"])  # close goes back one view
    assert back["view_id"] == view_id and modal_title(form_sandbox) == "Thanks"

    pushed = form_sandbox.submit(ALICE, view_id, {"reason": {"reason": "push again"}})
    cleared = form_sandbox.submit(ALICE, pushed["view_id"], {"reason": {"reason": "clear"}})
    assert cleared["view_id"] is None  # clear closes every view
    assert len(form_bot.submissions) == 5
    with pytest.raises(SandboxError, match="no longer open"):
        form_sandbox.submit(ALICE, view_id, {})


def test_required_and_too_long_inputs_are_refused_before_anything_is_sent(
    form_sandbox, form_bot, fake_slack
):
    _, modal = open_form(form_sandbox, fake_slack, element="2")
    shown = form_sandbox.submit(ALICE, modal["view_id"], {"name": {"name": "  "}})
    assert REQUIRED in shown["html"] and form_bot.submissions == []
    shown = form_sandbox.submit(ALICE, modal["view_id"], {"name": {"name": "ab"}})
    assert "at least 3 characters" in shown["html"] and form_bot.submissions == []
    with pytest.raises(SandboxError, match="changed since you saw it"):
        form_sandbox.submit(ALICE, modal["view_id"], {"other": {"name": "x"}})
    sent = form_sandbox.submit(ALICE, modal["view_id"], {"name": {"name": "abc"}})
    assert sent["view_id"] is None
    assert len(form_bot.submissions) == 1

    _, modal = open_form(form_sandbox, fake_slack)  # the reason: optional, at most 500
    shown = form_sandbox.submit(ALICE, modal["view_id"], {"reason": {"reason": "x" * 501}})
    assert "500 characters or fewer" in shown["html"] and len(form_bot.submissions) == 1


def test_a_submission_not_acknowledged_in_3_seconds_keeps_the_modal_with_slack_s_error(
    form_sandbox, form_bot, fake_slack
):
    _, modal = open_form(form_sandbox, fake_slack)
    started = time.monotonic()
    shown = form_sandbox.submit(ALICE, modal["view_id"], {"reason": {"reason": "slow"}})
    assert time.monotonic() - started < 6
    form_bot.release.set()
    assert shown["view_id"] == modal["view_id"]
    assert 'class="sk-view-banner" role="alert">That form failed with the error' in shown["html"]
    assert ">\nslow</textarea>" in shown["html"]


def test_close_sends_nothing_and_a_closed_modal_cannot_be_submitted(
    form_sandbox, form_bot, fake_slack
):
    _, modal = open_form(form_sandbox, fake_slack)
    with pytest.raises(SandboxError, match="no longer open"):
        form_sandbox.close_modal(BOB, modal["view_id"])  # not bob's
    assert form_sandbox.close_modal(ALICE, modal["view_id"])["view_id"] is None
    with pytest.raises(SandboxError, match="no longer open"):
        form_sandbox.submit(ALICE, modal["view_id"], {"reason": {"reason": "x"}})
    assert form_bot.submissions == []


def test_a_refusal_sits_under_the_card_and_in_the_thread_when_clicked_there(
    form_sandbox, form_bot, fake_slack
):
    card = post_form_card(fake_slack)
    reply = post_form_card(fake_slack, thread_ts=card)
    form_sandbox.click(BOB, card, 1, "1")
    form_sandbox.click(BOB, reply, 1, "1", thread_ts=card, in_thread=card)
    form_sandbox.click(BOB, card, 1, "1", in_thread=card)  # the parent, atop the open thread
    [message] = [m for m in fake_slack.messages(CHANNEL) if m.ts == card]
    held = fake_slack.add_ephemeral(CHANNEL, BOB, "buttons", blocks=message.blocks)
    form_sandbox.click(BOB, "e" + held["message_ts"], 1, "1")  # a button on an ephemeral
    wait_until(lambda: len(fake_slack.ephemerals(CHANNEL)) == 5, 5, "four refusals")
    answers = [m for m in form_sandbox.changes(BOB, 0)["messages"] if m["key"][0] == "e"]
    assert [(m["after"], m["thread_ts"]) for m in answers] == [
        (card, None),  # in the channel, under the card
        (reply, card),  # in the thread, under the reply
        (card, card),  # in the thread, under its parent
        (None, None),  # the ephemeral with buttons (added by hand: answers nothing)
        ("e" + held["message_ts"], None),  # under that ephemeral
    ]
    assert fake_slack.view_openings() == [] and form_sandbox.modal(BOB)["view_id"] is None


def test_the_page_submits_and_closes_modals_through_json_endpoints(
    form_sandbox, form_bot, fake_slack
):
    _, modal = open_form(form_sandbox, fake_slack)
    app = create_sandbox_app(form_sandbox)
    local = {"Host": "127.0.0.1:3000"}
    with app.test_client() as client:
        wrong = client.post(
            "/sandbox/submit",
            json={"user": ALICE, "view_id": modal["view_id"], "values": {"reason": "x"}},
            headers=local,
        )
        assert wrong.status_code == 400
        shown = client.post(
            "/sandbox/submit",
            json={"user": ALICE, "view_id": modal["view_id"], "values": {"reason": {}}},
            headers=local,
        ).get_json()
        assert shown["ok"] and shown["modal"]["view_id"] is None  # empty, optional: sent
        changes = client.get(f"/sandbox/changes?user={ALICE}", headers=local).get_json()
        assert changes["modal"]["view_id"] is None
        gone = client.post(
            "/sandbox/close", json={"user": ALICE, "view_id": modal["view_id"]}, headers=local
        )
        assert gone.status_code == 409
