"""Socket Mode (SLACK_APP_TOKEN): clicks, dialogs, /climate and events come over the fake Slack's
websocket to the same Bolt app as over HTTP; one socket per database, reconnected, never looped
on a bad token, and /slack/events refuses everything without a signing secret."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator

import pytest
import requests

from bot.model import ACCEPT_ACTION
from bot.sandbox import stripe_objects as so
from bot.sandbox.slack_requests import (
    event_callback_payload,
    sign_slack_request,
    slash_command_body,
)
from bot.slack_socket import LEASE
from tests.support.bot import CHANNEL, SIGNING_SECRET, RunningBot, serve_bot, wait_until
from tests.support.decisions import delayed_order, first_answer
from tests.support.socket_bot import (
    LEASE_SECONDS,
    ask,
    cancel_dialog,
    press,
    quick_socket,
    send_commands,
    socket_settings,
    start_socket,
    submit,
)


@pytest.fixture
def socket_bot(tmp_path, fake_slack, fake_stripe) -> Iterator[RunningBot]:
    """The bot in Socket Mode, connected; its worker driven by hand (`deliver()`)."""
    with serve_bot(socket_settings(tmp_path, fake_slack, fake_stripe)) as running:
        start_socket(running.bot, fake_slack)
        yield running


def get(running: RunningBot, path: str) -> requests.Response:
    return requests.get(running.url + path, timeout=10)


def card_blocks(fake_slack) -> str:
    [card] = fake_slack.messages(CHANNEL)
    return json.dumps(card.blocks)


def lease_expiry(running: RunningBot) -> float:
    row = running.bot.storage.conn.execute(
        "SELECT expires_at FROM leases WHERE name = ?", (LEASE,)
    ).fetchone()
    return row[0] if row else 0.0


def test_a_cancel_over_the_socket_reaches_stripe_once_and_updates_the_card(
    socket_bot, fake_slack, fake_stripe
):
    order = delayed_order(socket_bot, fake_stripe)
    url, dialog = cancel_dialog(fake_slack, order["id"])
    envelope = submit(fake_slack, dialog)
    assert fake_slack.socket.wait_ack(envelope) == {}  # the dialog closes
    assert "Cancelling order" in first_answer(fake_slack, url)
    assert fake_stripe.calls_to(f"/v1/climate/orders/{order['id']}/cancel") == []  # the worker's
    socket_bot.deliver()
    assert len(fake_stripe.calls_to(f"/v1/climate/orders/{order['id']}/cancel")) == 1
    assert fake_stripe.get_order(order["id"])["status"] == "canceled"
    blocks = card_blocks(fake_slack)
    assert "Cancelled by <@U0ALICE>" in blocks and '"actions"' not in blocks
    assert fake_slack.socket.deliveries(envelope) == [0]
    outcomes = [r["outcome"] for r in socket_bot.bot.storage.audit_rows(order["id"])]
    assert outcomes == ["cancelled"]


def test_climate_over_the_socket_is_answered_in_the_ack_or_through_the_response_url(
    socket_bot, fake_slack, fake_stripe
):
    order = so.order()
    fake_stripe.add_order(order)
    socket_bot.send_event(so.event("climate.order.created", order))
    socket_bot.deliver()
    fake_stripe.add_order(so.order(status="delivered", id=order["id"]))
    status = ask(fake_slack, f"status {order['id']}")  # Stripe is asked: after the ack
    assert status["via"] == "response_url"
    text = status["text"] + json.dumps(status.get("blocks") or [])
    assert "Delivered" in text and "Fresh from Stripe" in text
    usage = ask(fake_slack, "help")  # answered offline: in the ack itself
    assert usage["via"] == "ack" and usage["response_type"] == "ephemeral"
    assert "status <order_id>" in usage["text"]


def test_app_home_opened_over_the_socket_publishes_the_home_view(socket_bot, fake_slack):
    event = {"type": "app_home_opened", "user": "U0ALICE", "channel": "D0HOME", "tab": "home"}
    envelope = fake_slack.socket.send("events_api", event_callback_payload(event, event_id="Ev1"))
    assert fake_slack.socket.wait_ack(envelope) == {}
    [published] = fake_slack.wait_for("views.publish")
    assert published.params["user_id"] == "U0ALICE"
    assert "Every delivery to Slack succeeded" in json.dumps(published.params["view"])


def test_an_envelope_sent_again_is_acknowledged_again_and_handled_once(
    tmp_path, fake_slack, fake_stripe
):
    # Alice may decide by name, Carol through a user group that Slack is slow to list: Carol's
    # submission is acknowledged only after it is read, later than Slack waits, so Slack sends
    # the same envelope again while the first delivery is still being handled.
    fake_slack.add_user("U0CAROL", "carol")
    fake_slack.add_usergroup("S0DECIDERS", "climate-deciders", ["U0CAROL"])
    settings = socket_settings(
        tmp_path, fake_slack, fake_stripe, SLACK_ALLOWED_DECIDERS="U0ALICE,S0DECIDERS"
    )
    with serve_bot(settings) as running:
        start_socket(running.bot, fake_slack)
        order = delayed_order(running, fake_stripe)
        url, dialog = cancel_dialog(fake_slack, order["id"], user="U0ALICE")
        fake_slack.delay("usergroups.users.list", 1.0)
        fake_slack.ack_timeout = 0.3
        envelope = submit(fake_slack, dialog, user="U0CAROL")
        assert fake_slack.socket.wait_ack(envelope) == {}
        wait_until(
            lambda: fake_slack.socket.acks(envelope) == len(fake_slack.socket.deliveries(envelope)),
            5,
            "every delivery of the envelope was not acknowledged",
        )
        assert fake_slack.socket.deliveries(envelope)[:2] == [0, 1]  # it was sent again
        assert "Cancelling order" in first_answer(fake_slack, url)
        running.deliver()
        assert len(fake_stripe.calls_to(f"/v1/climate/orders/{order['id']}/cancel")) == 1
        outcomes = [r["outcome"] for r in running.bot.storage.audit_rows(order["id"])]
        assert outcomes == ["cancelled"]  # no "already_decided": handled once
        assert len(fake_slack.calls_to("usergroups.users.list")) == 1
        assert [r["text"] for r in fake_slack.responses(url)][0].startswith("Cancelling order")
        assert not any("under way" in r["text"] for r in fake_slack.responses(url))


def test_slack_asking_the_bot_to_reconnect_gets_a_new_connection_and_the_next_click_works(
    socket_bot, fake_slack, fake_stripe
):
    order = delayed_order(socket_bot, fake_stripe)
    opened = fake_slack.socket.opened
    asked = time.monotonic()
    fake_slack.socket.disconnect("refresh_requested")
    wait_until(lambda: fake_slack.socket.opened == opened + 1, 5, "no new connection opened")
    assert time.monotonic() - asked < 2
    fake_slack.socket.wait_for_connections(1, 10)  # and the old one is closed
    url, _, _ = press(fake_slack, ACCEPT_ACTION, order["id"])
    assert "You accepted the delay" in first_answer(fake_slack, url)
    wait_until(lambda: socket_bot.bot.socket.connected, 5, "the socket is not connected")


def test_a_dropped_connection_is_opened_again_and_the_next_command_works(socket_bot, fake_slack):
    opened = fake_slack.socket.opened
    assert fake_slack.drop_socket() == 1
    wait_until(lambda: fake_slack.socket.opened == opened + 1, 10, "no new connection opened")
    fake_slack.socket.wait_for_connections(1, 10)
    assert "status <order_id>" in ask(fake_slack, "help")["text"]
    assert get(socket_bot, "/healthz").json()["slack_socket"] == "connected"


def test_a_bad_app_token_stops_the_socket_with_one_error_line_and_healthz_says_why(
    tmp_path, fake_slack, fake_stripe, caplog
):
    settings = socket_settings(
        tmp_path, fake_slack, fake_stripe, SLACK_APP_TOKEN="xapp-1-A0FAKE-1-wrong"
    )
    with serve_bot(settings) as running:
        socket = quick_socket(running.bot)
        with caplog.at_level(logging.INFO):
            thread = socket.start()
            thread.join(10)
        assert not thread.is_alive()  # stopped for good, not trying again and again
        assert len(fake_slack.calls_to("apps.connections.open")) == 1
        assert fake_slack.socket.opened == 0
        [error] = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert error.name == "bot.slack_socket"
        assert "SLACK_APP_TOKEN is not valid: create an app-level token" in error.getMessage()
        assert "xapp-1-A0FAKE-1-wrong" not in caplog.text
        health = get(running, "/healthz").json()
        assert health["status"] == "degraded"
        assert any("Slack refused SLACK_APP_TOKEN (invalid_auth)" in r for r in health["reasons"])
        assert health["slack_socket"].startswith("stopped: Slack refused SLACK_APP_TOKEN")
        ready = get(running, "/readyz")  # Stripe's webhooks are still taken
        assert ready.status_code == 200
        assert ready.json()["slack_socket"].startswith("stopped: Slack refused SLACK_APP_TOKEN")


def test_two_bots_on_one_database_hold_one_socket_and_the_other_takes_over(
    tmp_path, fake_slack, fake_stripe
):
    settings = socket_settings(tmp_path, fake_slack, fake_stripe)
    with serve_bot(settings) as first, serve_bot(settings) as second:
        holder = start_socket(first.bot, fake_slack)
        other = quick_socket(second.bot)
        other.start()
        wait_until(lambda: other.state() == "standing by", 5, "the second bot did not stand by")
        # The holder renews its lease twice; the other asks for it as often, and is refused.
        renewed = lease_expiry(first)
        wait_until(
            lambda: lease_expiry(first) >= renewed + LEASE_SECONDS / 2,
            5,
            "the holder did not renew its lease",
        )
        assert (fake_slack.socket.connections(), fake_slack.socket.opened) == (1, 1)
        assert get(first, "/readyz").json()["slack_socket"] == "connected"
        standing_by = get(second, "/healthz").json()
        assert (standing_by["status"], standing_by["slack_socket"]) == ("ok", "standing by")
        assert get(second, "/readyz").json()["slack_socket"] == "standing by"
        holder.stop()  # gives the lease up: the other connects within a renewal
        wait_until(lambda: other.connected, 5, "the second bot did not take the socket over")
        fake_slack.socket.wait_for_connections(1, 5)
        assert fake_slack.socket.opened == 2
        assert ask(fake_slack, "help")["via"] == "ack"
        assert second.bot.storage.lease_holder(LEASE, now=time.time()) == other.holder


def test_with_two_sockets_open_at_once_each_envelope_is_still_handled_once(
    tmp_path, fake_slack, fake_stripe
):
    # Two processes that both hold the socket (during a take-over, or two deployments sharing
    # a database): Slack spreads envelopes over both, and what one of them changes, the other
    # sees in the database. Each envelope is answered once; a click or an event told to both
    # (Slack's redelivery to the other connection) changes things once.
    settings = socket_settings(tmp_path, fake_slack, fake_stripe)
    with serve_bot(settings) as first, serve_bot(settings) as second:
        start_socket(first.bot, fake_slack)
        quick_socket(second.bot, holder=first.bot.socket.holder).start()  # the same lease holder
        fake_slack.socket.wait_for_connections(2, 10)
        envelopes = send_commands(fake_slack, "help", 6)
        for envelope in envelopes:
            assert "status <order_id>" in fake_slack.socket.wait_ack(envelope)["text"]
        assert [fake_slack.socket.acks(e) for e in envelopes] == [1] * 6
        assert {fake_slack.socket.delivered_on(e)[0] for e in envelopes} == {1, 2}  # both used

        event = {"type": "app_home_opened", "user": "U0ALICE", "channel": "D0HOME", "tab": "home"}
        for _ in range(2):  # one event, told on each connection
            envelope = fake_slack.socket.send(
                "events_api", event_callback_payload(event, event_id="EvTwice")
            )
            fake_slack.socket.wait_ack(envelope)
        wait_until(lambda: fake_slack.calls_to("views.publish"), 5, "no Home view published")
        assert len(fake_slack.calls_to("views.publish")) == 1

        order = delayed_order(first, fake_stripe)
        for _ in range(2):  # Accept, told on each connection
            press(fake_slack, ACCEPT_ACTION, order["id"])
        first.deliver()
        second.deliver()
        outcomes = [r["outcome"] for r in first.bot.storage.audit_rows(order["id"])]
        assert outcomes.count("accepted") == 1


def test_the_lease_of_a_killed_holder_lapses_and_another_bot_connects(
    tmp_path, fake_slack, fake_stripe
):
    with serve_bot(socket_settings(tmp_path, fake_slack, fake_stripe)) as running:
        # A process that held the socket and was killed: its lease is left behind.
        dead = "gone-host:4242:deadbeef"
        assert running.bot.storage.take_lease(LEASE, dead, seconds=LEASE_SECONDS, now=time.time())
        socket = quick_socket(running.bot)
        socket.start()
        wait_until(lambda: socket.state() == "standing by", 5, "it did not stand by")
        assert fake_slack.socket.opened == 0
        wait_until(lambda: socket.connected, 10, "it did not connect once the lease lapsed")
        assert running.bot.storage.lease_holder(LEASE, now=time.time()) == socket.holder


def test_while_slack_cannot_be_reached_the_socket_retries_and_healthz_says_for_how_long(
    tmp_path, fake_slack, fake_stripe
):
    with serve_bot(socket_settings(tmp_path, fake_slack, fake_stripe)) as running:
        fake_slack.set_down(True)
        socket = quick_socket(running.bot)
        socket.start()
        wait_until(lambda: socket.failures >= 1, 5, "no failed try")
        assert get(running, "/readyz").json()["slack_socket"] == "connecting"

        def reported() -> bool:
            return any(
                r.startswith("Slack socket not connected: connecting for")
                for r in get(running, "/healthz").json()["reasons"]
            )

        wait_until(reported, 10, "/healthz never said the socket is not connected")
        tries = len(fake_slack.calls_to("apps.connections.open"))
        assert 2 <= tries <= 4  # 1, 2, 4 s apart: backing off, not hammering
        fake_slack.set_down(False)
        wait_until(lambda: socket.connected, 15, "it did not connect once Slack was back")
        health = get(running, "/healthz").json()
        assert (health["status"], health["slack_socket"]) == ("ok", "connected")


def test_without_a_signing_secret_slack_events_refuses_every_request(socket_bot, fake_slack):
    url = fake_slack.new_response_url()
    body = slash_command_body(text="help", response_url=url)
    signed = [sign_slack_request(body, secret) for secret in (SIGNING_SECRET, "a-guess")]
    unsigned = {"Content-Type": "application/x-www-form-urlencoded"}
    for headers, data in [(h, body) for h in signed] + [(unsigned, "ssl_check=1&token=x")]:
        response = requests.post(
            socket_bot.url + "/slack/events", data=data, headers=headers, timeout=10
        )
        assert response.status_code == 401
        assert "Socket Mode" in response.json()["error"]
    assert fake_slack.responses(url) == []
