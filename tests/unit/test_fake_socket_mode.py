"""The fake Slack's Socket Mode, as the real Bolt ``SocketModeHandler`` (slack_sdk's builtin
client) sees it: hello, envelopes and their acks, refused tokens and tickets, redelivery of what
is not acknowledged in time, disconnect requests, dropped connections, two connections at once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from slack_bolt import App
from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from bot.sandbox.slack_requests import (
    block_actions_payload,
    event_callback_payload,
    slash_command_payload,
    view_submission_payload,
)
from bot.sandbox.socket_mode import NotConnected
from tests.support.bot import BOT_TOKEN, wait_until
from tests.support.faults import FaultySlack

REASON_FORM = {
    "type": "modal",
    "callback_id": "reason_form",
    "title": {"type": "plain_text", "text": "Why?"},
    "submit": {"type": "plain_text", "text": "Send"},
    "blocks": [
        {
            "type": "input",
            "block_id": "reason",
            "label": {"type": "plain_text", "text": "Reason"},
            "element": {"type": "plain_text_input", "action_id": "text"},
        }
    ],
}


def bolt_app(fake: FaultySlack) -> App:
    return App(
        client=WebClient(token=BOT_TOKEN, base_url=fake.api_url),
        signing_secret="unused",
        token_verification_enabled=False,
    )


@contextmanager
def socket_mode(fake: FaultySlack, app: App) -> Iterator[SocketModeHandler]:
    """`app` connected to `fake` by Socket Mode; the client checks its connection every second."""
    handler = SocketModeHandler(app, app_token=fake.app_token, ping_interval=1)
    try:
        handler.connect()
        yield handler
    finally:
        handler.close()


def slash_command(fake: FaultySlack, text: str) -> dict[str, str]:
    return slash_command_payload(
        text=text,
        response_url=fake.new_response_url(channel="C0CLIMATE", user="U0ALICE"),
        trigger_id=fake.new_trigger_id(user="U0ALICE"),
    )


def echo_app(fake: FaultySlack, name: str = "") -> App:
    app = bolt_app(fake)

    @app.command("/climate")
    def climate(ack: Any, command: dict[str, Any]) -> None:
        ack(f"{name}{command['text']}")

    return app


def retry_num(request: Any) -> str:
    return request.headers.get("x-slack-retry-num", ["0"])[0]


def round_trip(fake: FaultySlack, text: str) -> dict[str, Any]:
    """Send a slash command and wait for its ack: the connection is up and being read."""
    return fake.socket.wait_ack(fake.socket.send("slash_commands", slash_command(fake, text)))


# ---- one connection, each kind of envelope ------------------------------------------------------


def test_after_hello_a_slash_command_is_acked_with_the_listeners_answer(fake_slack):
    with socket_mode(fake_slack, echo_app(fake_slack, "you said ")):
        fake_slack.socket.wait_for_connections(1, timeout=5)
        envelope_id = fake_slack.socket.send("slash_commands", slash_command(fake_slack, "hi"))

        assert fake_slack.socket.wait_ack(envelope_id) == {"text": "you said hi"}
        assert fake_slack.socket.acks(envelope_id) == 1
        assert fake_slack.socket.deliveries(envelope_id) == [0]
    opens = fake_slack.calls_to("apps.connections.open")
    assert [call.headers["authorization"] for call in opens] == [f"Bearer {fake_slack.app_token}"]


def test_a_button_click_is_acked_without_a_payload(fake_slack):
    app = bolt_app(fake_slack)
    clicked = threading.Event()

    @app.action("approve")
    def approve(ack: Any, body: dict[str, Any]) -> None:
        ack()
        if body["actions"][0]["value"] == "order_1":
            clicked.set()

    click = block_actions_payload(
        action_id="approve", value="order_1", response_url=fake_slack.new_response_url()
    )
    with socket_mode(fake_slack, app):
        fake_slack.socket.wait_for_connections(1, timeout=5)
        envelope_id = fake_slack.socket.send("interactive", click)

        assert fake_slack.socket.wait_ack(envelope_id) == {}
        assert clicked.is_set()


def test_a_view_submission_ack_carries_the_response_action(fake_slack):
    app = bolt_app(fake_slack)

    @app.view("reason_form")
    def reason(ack: Any, view: dict[str, Any]) -> None:
        if not view["state"]["values"]["reason"]["text"]["value"]:
            ack(response_action="errors", errors={"reason": "Say why, please."})
        else:
            ack()

    submission = view_submission_payload(REASON_FORM, values={"reason": {"text": ""}})
    with socket_mode(fake_slack, app):
        fake_slack.socket.wait_for_connections(1, timeout=5)
        envelope_id = fake_slack.socket.send("interactive", submission)

        assert fake_slack.socket.wait_ack(envelope_id) == {
            "response_action": "errors",
            "errors": {"reason": "Say why, please."},
        }


def test_an_events_api_envelope_is_acked_and_its_listener_runs(fake_slack):
    app = bolt_app(fake_slack)
    mentioned = threading.Event()

    @app.event("app_mention")
    def mention(event: dict[str, Any]) -> None:
        if event["text"] == "<@U0BOT> status":
            mentioned.set()

    event = {
        "type": "app_mention",
        "user": "U0ALICE",
        "text": "<@U0BOT> status",
        "channel": "C0CLIMATE",
        "ts": "1767225600.000100",
    }
    with socket_mode(fake_slack, app):
        fake_slack.socket.wait_for_connections(1, timeout=5)
        envelope_id = fake_slack.socket.send("events_api", event_callback_payload(event))

        assert fake_slack.socket.wait_ack(envelope_id) == {}
        assert mentioned.wait(5), "the app_mention listener never ran"


def test_nothing_is_sent_while_no_connection_is_open(fake_slack):
    with pytest.raises(NotConnected):
        fake_slack.socket.send("slash_commands", slash_command(fake_slack, "hi"))


# ---- tokens and tickets -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "error"),
    [("xapp-1-A0FAKE-1-wrong", "invalid_auth"), (BOT_TOKEN, "not_allowed_token_type")],
)
def test_apps_connections_open_wants_the_app_token(fake_slack, token, error):
    client = WebClient(base_url=fake_slack.api_url)
    with pytest.raises(SlackApiError) as refused:
        client.apps_connections_open(app_token=token)
    assert refused.value.response["ok"] is False
    assert refused.value.response["error"] == error


def test_the_app_token_calls_no_other_method(fake_slack):
    client = WebClient(token=fake_slack.app_token, base_url=fake_slack.api_url)
    with pytest.raises(SlackApiError) as refused:
        client.chat_postMessage(channel="C0CLIMATE", text="hi")
    assert refused.value.response["error"] == "not_allowed_token_type"


def test_a_ticket_opens_one_connection_which_says_hello_first(fake_slack):
    client = WebClient(base_url=fake_slack.api_url)
    url = client.apps_connections_open(app_token=fake_slack.app_token)["url"]
    assert url.startswith(f"ws://127.0.0.1:{fake_slack.socket.port}/link/?ticket=")

    with ws_connect(url, open_timeout=5) as websocket:
        hello = websocket.recv(timeout=5)
        fake_slack.socket.wait_for_connections(1, timeout=5)
        with pytest.raises(InvalidStatus) as reused:
            ws_connect(url, open_timeout=5)
        with pytest.raises(InvalidStatus) as unknown:
            ws_connect(url.split("?")[0] + "?ticket=never-issued", open_timeout=5)

    assert '"type": "hello"' in str(hello)
    assert '"num_connections": 1' in str(hello)
    assert f'"app_id": "{fake_slack.app_id}"' in str(hello)
    assert reused.value.response.status_code == 401
    assert unknown.value.response.status_code == 401
    fake_slack.socket.wait_for_connections(0, timeout=5)


# ---- what is not acknowledged in time -----------------------------------------------------------


def test_an_envelope_not_acked_in_time_is_delivered_again_as_retry_1(fake_slack):
    fake_slack.ack_timeout = 0.5
    app = bolt_app(fake_slack)
    release_first = threading.Event()

    @app.command("/climate")
    def slow_at_first(ack: Any, request: Any) -> None:
        attempt = retry_num(request)
        if attempt == "0":
            release_first.wait(5)  # busy past the ack timeout
        ack(f"attempt {attempt}")

    with socket_mode(fake_slack, app):
        fake_slack.socket.wait_for_connections(1, timeout=5)
        envelope_id = fake_slack.socket.send("slash_commands", slash_command(fake_slack, "hi"))

        assert fake_slack.socket.wait_ack(envelope_id, timeout=5) == {"text": "attempt 1"}
        assert fake_slack.socket.deliveries(envelope_id) == [0, 1]
        release_first.set()
        wait_until(
            lambda: fake_slack.socket.acks(envelope_id) == 2,
            5,
            "the first delivery's late ack never arrived",
        )
        assert fake_slack.socket.deliveries(envelope_id) == [0, 1]  # acked: no retry 2


# ---- connections coming and going ---------------------------------------------------------------


def test_after_a_disconnect_request_the_client_moves_to_a_new_connection(fake_slack):
    with socket_mode(fake_slack, echo_app(fake_slack)):
        fake_slack.socket.wait_for_connections(1, timeout=5)
        assert round_trip(fake_slack, "before") == {"text": "before"}

        assert fake_slack.socket.disconnect("refresh_requested") == 1
        wait_until(lambda: fake_slack.socket.opened == 2, 10, "no new connection after disconnect")
        fake_slack.socket.wait_for_connections(1, timeout=10)  # the old one is closed
        envelope_id = fake_slack.socket.send("slash_commands", slash_command(fake_slack, "again"))

        assert fake_slack.socket.wait_ack(envelope_id) == {"text": "again"}
        assert fake_slack.socket.delivered_on(envelope_id) == [2]
        assert fake_slack.socket.acks(envelope_id) == 1
    assert len(fake_slack.calls_to("apps.connections.open")) == 2


def test_after_a_dropped_connection_the_client_reconnects(fake_slack):
    with socket_mode(fake_slack, echo_app(fake_slack)):
        fake_slack.socket.wait_for_connections(1, timeout=5)
        # In use first: a reset before the client reads its new socket races with its first
        # ping, and a ping that meets the reset makes it wait 5 checks before reconnecting.
        assert round_trip(fake_slack, "before") == {"text": "before"}

        assert fake_slack.drop_socket() == 1
        wait_until(lambda: fake_slack.socket.opened == 2, 10, "no reconnection after the drop")
        fake_slack.socket.wait_for_connections(1, timeout=5)
        envelope_id = fake_slack.socket.send("slash_commands", slash_command(fake_slack, "back"))

        assert fake_slack.socket.wait_ack(envelope_id) == {"text": "back"}
        assert fake_slack.socket.delivered_on(envelope_id) == [2]


def test_envelopes_are_spread_over_two_connections_each_acked_once(fake_slack):
    with (
        socket_mode(fake_slack, echo_app(fake_slack, "one:")),
        socket_mode(fake_slack, echo_app(fake_slack, "two:")),
    ):
        fake_slack.socket.wait_for_connections(2, timeout=5)
        sent = [
            fake_slack.socket.send("slash_commands", slash_command(fake_slack, str(n)))
            for n in range(4)
        ]

        answers = [fake_slack.socket.wait_ack(envelope_id)["text"] for envelope_id in sent]
        assert sorted(answer.split(":")[0] for answer in answers) == ["one", "one", "two", "two"]
        assert [answer.split(":")[1] for answer in answers] == ["0", "1", "2", "3"]
        assert [fake_slack.socket.acks(envelope_id) for envelope_id in sent] == [1, 1, 1, 1]
        assert {fake_slack.socket.delivered_on(envelope_id)[0] for envelope_id in sent} == {1, 2}


def test_reset_restores_slacks_ack_timeout(fake_slack):
    fake_slack.ack_timeout = 0.5
    with pytest.raises(ValueError):
        fake_slack.ack_timeout = 0

    fake_slack.reset()

    assert fake_slack.ack_timeout == 3.0
