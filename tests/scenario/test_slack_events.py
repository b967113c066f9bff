"""POST /slack/events: signed requests only; clicks and /climate answer honestly and never 5xx."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from bot.cards import ORDERS_NEXT_ACTION
from bot.model import CANCEL_ACTION
from bot.sandbox.slack import RESPONSE_URL_METHOD
from bot.sandbox.slack_requests import block_actions_body, sign_slack_request, slash_command_body
from bot.slack_gateway import url_origin
from tests.support.bot import SIGNING_SECRET, wait_until


def post_slack(running, body: str, *, timestamp: int | None = None, secret=SIGNING_SECRET):
    headers = sign_slack_request(body, secret, timestamp=timestamp)
    return requests.post(running.url + "/slack/events", data=body, headers=headers, timeout=10)


def test_forged_click_gets_401_and_does_nothing(running, fake_slack):
    url = fake_slack.new_response_url()
    body = block_actions_body(action_id=CANCEL_ACTION, value="climorder_x", response_url=url)
    assert post_slack(running, body, secret="not-the-secret").status_code == 401
    assert fake_slack.responses(url) == []


def test_replayed_click_older_than_five_minutes_gets_401(running, fake_slack):
    url = fake_slack.new_response_url()
    body = block_actions_body(action_id=CANCEL_ACTION, value="climorder_x", response_url=url)
    assert post_slack(running, body, timestamp=int(time.time()) - 301).status_code == 401


def test_malformed_interaction_payload_never_5xx(running):
    for body in ("payload=%7Bnot-json", "payload=", "garbage", json.dumps({"type": "nope"})):
        assert post_slack(running, body).status_code < 500, body


def test_climate_command_answers_usage_even_with_payload_in_the_text(running, fake_slack):
    for text in ("help", "frobnicate", "", "history", "payload please"):
        url = fake_slack.new_response_url()
        response = post_slack(running, slash_command_body(text=text, response_url=url))
        assert response.status_code == 200, text
        assert "/climate" in response.text and "status <order_id>" in response.text


def test_a_bad_id_with_payload_in_it_is_named_plainly(running, fake_slack):
    url = fake_slack.new_response_url()
    body = slash_command_body(text="status payload-x", response_url=url)
    assert post_slack(running, body).status_code == 200
    fake_slack.wait_for(lambda c: c.method == RESPONSE_URL_METHOD and c.path.endswith(url[-16:]))
    assert fake_slack.responses(url)[0]["text"] == "No order payload-x."


def test_slacks_unsigned_certificate_check_gets_an_empty_200(running, fake_slack):
    response = requests.post(
        running.url + "/slack/events",
        data="ssl_check=1&token=legacy",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=10,
    )
    assert (response.status_code, response.text) == (200, "")
    assert fake_slack.calls == []


@pytest.fixture
def elsewhere() -> Iterator[tuple[str, list[str]]]:
    """Another HTTP server on loopback, not Slack's: its URL and the paths POSTed to it."""
    received: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", received
    finally:
        server.shutdown()
        server.server_close()


def test_a_response_url_on_another_server_is_never_answered(running, fake_slack, caplog, elsewhere):
    origin, received = elsewhere
    caplog.set_level(logging.DEBUG, logger="bot.slack_gateway")
    secret = "/commands/T0TEST/1234/SECRETxPATHxOFxTHExHOOK"
    command = slash_command_body(text="pending", response_url=origin + secret)
    click = block_actions_body(
        action_id=ORDERS_NEXT_ACTION, value="|1800000000|climorder_x", response_url=origin + secret
    )
    # A lookalike of the Web API's own origin, with user info before the other server's host.
    lookalike = f"http://127.0.0.1:{fake_slack.port}@{origin.removeprefix('http://')}{secret}"
    tricked = slash_command_body(text="orders", response_url=lookalike)
    for body in (command, click, tricked):
        assert post_slack(running, body).status_code == 200

    def ignored() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "not answering a response_url" in r.getMessage()]

    wait_until(lambda: len(ignored()) == 3, 10, "the bot did not say it ignored every answer")
    assert received == []
    assert fake_slack.calls_to(RESPONSE_URL_METHOD) == []
    # One warning per origin (the second answer to the same server is a debug line), naming
    # the server but never the path: a response_url is a bearer capability.
    records = ignored()
    warned = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert len(records) == 3 and len(warned) == 2
    assert sum(origin in message for message in warned) == 1
    assert sum("not a plain http(s) URL" in message for message in warned) == 1  # the lookalike
    [again] = [r for r in records if r.levelno == logging.DEBUG]
    assert origin in again.getMessage()
    for record in caplog.records:
        assert "SECRETxPATH" not in record.getMessage()


def test_response_url_origins_are_compared_whole():
    slack = ("https", "hooks.slack.com", 443)
    assert url_origin("https://hooks.slack.com/commands/T1/2/abc") == slack
    assert url_origin("HTTPS://Hooks.Slack.COM:443/actions/T1/2/abc") == slack
    assert url_origin("http://127.0.0.1:8080/hooks/x") == ("http", "127.0.0.1", 8080)
    for elsewhere in (
        "https://hooks.slack.com.evil.example/commands/x",
        "https://evil.example/https://hooks.slack.com/",
        "https://hooks.slack.com:444/commands/x",
        "http://hooks.slack.com/commands/x",
    ):
        assert url_origin(elsewhere) not in (slack, None), elsewhere
    for unusable in (
        "https://hooks.slack.com@evil.example/commands/x",
        "https://user:pw@hooks.slack.com/commands/x",
        "https://hooks.slack.com:99999/x",
        "javascript:alert(1)",
        "/hooks/relative",
        "",
    ):
        assert url_origin(unusable) is None, unusable
