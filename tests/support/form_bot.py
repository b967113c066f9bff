"""A stand-in Slack app with a modal, for the Slack sandbox's tests (no climate-bot behind it).

It is a real Bolt app served over HTTP, so what the sandbox sends it is checked the way Slack's
requests are (signature, form body, payload shape). A message from `post_form_card` carries two
buttons: **Cancel order** opens `form_view` with ``views.open`` (the click's trigger_id, the
click's response_url kept in ``private_metadata``), **Refuse** opens nothing and answers "Not
you." through the response_url, as climate-bot answers someone who may not decide, and **Name
it** (behind a ``confirm`` dialog) opens `required_view`, whose one input is required.

What the form's submission gets back depends on the reason typed: ``errors`` → an error under the
reason, ``update`` → the view replaced, ``push`` → a second view on top, ``clear`` → all views
closed, ``slow`` → no answer until `release` is set (Slack gives up after 3 s), anything else → an
empty acknowledgement, then "Done: <reason>" only the person sees, through the click's
response_url.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from flask import Flask, request
from slack_bolt import App
from slack_bolt.adapter.flask import SlackRequestHandler
from slack_sdk import WebClient
from slack_sdk.webhook import WebhookClient
from werkzeug.serving import make_server

from bot.sandbox.slack import FakeSlack

FORM = "test_form"
REQUIRED_FORM = "test_required_form"
HOSTILE_ERROR = "Say more than <that> & <!channel>"


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text}


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def form_view(response_url: str, *, title: str = "Cancel order") -> dict[str, Any]:
    """A modal shaped like climate-bot's cancel dialog: facts, then an optional reason."""
    return {
        "type": "modal",
        "callback_id": FORM,
        "private_metadata": json.dumps({"response_url": response_url}),
        "title": _plain(title),
        "submit": _plain("Cancel order"),
        "close": _plain("Keep it"),
        "blocks": [
            {"type": "header", "text": _plain("Cancel climorder_1?")},
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": "*Refund* of *$5,665.00* to <!channel>"},
                "fields": [
                    {"type": "mrkdwn", "text": "*Order*\n`climorder_1`"},
                    {"type": "mrkdwn", "text": "*Expected refund*\n$5,665.00"},
                ],
            },
            {"type": "divider"},
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": "Stripe refunds in 5–10 days."}],
            },
            {
                "type": "input",
                "block_id": "reason",
                "optional": True,
                "label": _plain("Why cancel?"),
                "hint": _plain("Only the team sees this."),
                "element": {
                    "type": "plain_text_input",
                    "action_id": "reason",
                    "multiline": True,
                    "max_length": 500,
                    "placeholder": _plain("A reason helps the next person"),
                },
            },
        ],
    }


def required_view() -> dict[str, Any]:
    return {
        "type": "modal",
        "callback_id": REQUIRED_FORM,
        "title": _plain("Name it"),
        "submit": _plain("Save"),
        "blocks": [
            {
                "type": "input",
                "block_id": "name",
                "label": _plain("Name"),
                "element": {"type": "plain_text_input", "action_id": "name", "min_length": 3},
            }
        ],
    }


class FormBot:
    """The stand-in app, served on 127.0.0.1; `submissions` holds every view_submission body."""

    def __init__(self, fake: FakeSlack, signing_secret: str) -> None:
        self.fake = fake
        self.submissions: list[dict[str, Any]] = []
        self.release = threading.Event()
        client = WebClient(token=fake.bot_token, base_url=fake.api_url)
        app = App(signing_secret=signing_secret, client=client, token_verification_enabled=False)

        @app.action("open_form")
        def open_form(ack, body, client):
            ack()
            client.views_open(trigger_id=body["trigger_id"], view=form_view(body["response_url"]))

        @app.action("open_required")
        def open_required(ack, body, client):
            ack()
            client.views_open(trigger_id=body["trigger_id"], view=required_view())

        @app.action("refuse")
        def refuse(ack, respond):
            ack()
            respond(text="Not you.", response_type="ephemeral", replace_original=False)

        @app.view(FORM)
        def submitted(ack, body, view):
            self.submissions.append(body)
            reason = view["state"]["values"]["reason"]["reason"]["value"] or ""
            if "errors" in reason:
                ack(response_action="errors", errors={"reason": HOSTILE_ERROR})
            elif "update" in reason:
                ack(response_action="update", view=form_view("unused", title="Thanks"))
            elif "push" in reason:
                ack(response_action="push", view=form_view("unused", title="Are you sure?"))
            elif "clear" in reason:
                ack(response_action="clear")
            elif "slow" in reason:
                self.release.wait(10)  # past Slack's 3 seconds: the sandbox gives up first
                ack()
            else:
                ack()
                url = json.loads(view["private_metadata"])["response_url"]
                WebhookClient(url).send(text=f"Done: {escape(reason)}", response_type="ephemeral")

        @app.view(REQUIRED_FORM)
        def required_submitted(ack, body):
            self.submissions.append(body)
            ack()

        handler = SlackRequestHandler(app)
        web = Flask("form-bot")

        @web.post("/slack/events")
        def events():
            return handler.handle(request)

        self._server = make_server("127.0.0.1", 0, web, threaded=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> FormBot:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()


def post_form_card(fake: FakeSlack, channel: str = "C0CLIMATE", thread_ts: str | None = None):
    """A message with the stand-in's buttons, posted as the app; returns its ts."""
    blocks = [
        {"type": "section", "text": {"type": "mrkdwn", "text": "*Order climorder_1* is delayed"}},
        {
            "type": "actions",
            "block_id": "decide",
            "elements": [
                {
                    "type": "button",
                    "action_id": "open_form",
                    "style": "danger",
                    "text": _plain("Cancel order"),
                    "value": "climorder_1",
                },
                {"type": "button", "action_id": "refuse", "text": _plain("Refuse")},
                {
                    "type": "button",
                    "action_id": "open_required",
                    "text": _plain("Name it"),
                    "confirm": {  # a confirm object: the page asks first, as Slack does
                        "title": _plain("Name it?"),
                        "text": _plain("A <b>name</b> is forever."),
                        "confirm": _plain("Yes"),
                        "deny": _plain("No"),
                    },
                },
            ],
        },
    ]
    client = WebClient(token=fake.bot_token, base_url=fake.api_url)
    kwargs = {"thread_ts": thread_ts} if thread_ts else {}
    return client.chat_postMessage(
        channel=channel, text="Order climorder_1 is delayed", blocks=blocks, **kwargs
    )["ts"]
