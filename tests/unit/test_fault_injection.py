"""FaultySlack and FaultyStripe fail the way Slack and Stripe do, as the real SDK clients see it.

These are the failures tests script (`tests.support.faults`); what the fakes do when nothing
fails is tested in test_fake_slack and test_fake_stripe.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import stripe
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.webhook import WebhookClient

from bot.sandbox import stripe_objects
from tests.support.bot import wait_until
from tests.support.faults import FaultySlack, FaultyStripe
from tests.support.stripe_answers import answer_problems

CHANNEL = "C0CLIMATE"
ORDERS = "/v1/climate/orders"


@pytest.fixture
def slack_fake() -> Iterator[FaultySlack]:
    with FaultySlack() as server:
        yield server


@pytest.fixture
def slack_client(slack_fake: FaultySlack) -> WebClient:
    return WebClient(token=slack_fake.bot_token, base_url=slack_fake.api_url)


@pytest.fixture
def stripe_fake() -> Iterator[FaultyStripe]:
    with FaultyStripe() as f:
        yield f
        assert answer_problems(f) == []  # injected failures are Stripe-shaped too


@pytest.fixture
def stripe_client(stripe_fake: FaultyStripe) -> stripe.StripeClient:
    return stripe_fake.client()


def slack_error(exc: pytest.ExceptionInfo[SlackApiError]) -> str:
    return exc.value.response["error"]


# ---- Slack --------------------------------------------------------------------------------------


def test_rate_limit_carries_retry_after(slack_fake: FaultySlack, slack_client: WebClient) -> None:
    slack_fake.fail_next("chat.postMessage", retry_after=7)
    with pytest.raises(SlackApiError) as exc:
        slack_client.chat_postMessage(channel=CHANNEL, text="x")
    assert exc.value.response.status_code == 429
    assert exc.value.response.headers["Retry-After"] == "7"
    assert slack_error(exc) == "ratelimited"
    # One scripted failure only: the next call goes through.
    assert slack_client.chat_postMessage(channel=CHANNEL, text="x")["ok"]


@pytest.mark.parametrize("raw", ["inf", "nan", "1e9", "-5", "abc"])
def test_a_retry_after_string_is_sent_as_written(
    slack_fake: FaultySlack, slack_client: WebClient, raw: str
) -> None:
    slack_fake.fail_next("chat.postMessage", retry_after=raw)
    with pytest.raises(SlackApiError) as exc:
        slack_client.chat_postMessage(channel=CHANNEL, text="x")
    assert exc.value.response.status_code == 429
    assert exc.value.response.headers["Retry-After"] == raw
    assert exc.value.response.data == {"ok": False, "error": "ratelimited"}
    assert slack_fake.messages(CHANNEL) == []


def test_server_error_is_an_http_500(slack_fake: FaultySlack, slack_client: WebClient) -> None:
    slack_fake.fail_next("chat.postMessage", status=500)
    with pytest.raises(SlackApiError) as exc:
        slack_client.chat_postMessage(channel=CHANNEL, text="x")
    assert exc.value.response.status_code == 500
    assert slack_fake.messages(CHANNEL) == []


def test_dropped_connection_is_a_connection_error(slack_fake: FaultySlack) -> None:
    no_retry = WebClient(token=slack_fake.bot_token, base_url=slack_fake.api_url, retry_handlers=[])
    slack_fake.fail_next("chat.postMessage", disconnect=True)
    with pytest.raises(ConnectionError):
        no_retry.chat_postMessage(channel=CHANNEL, text="x")
    [call] = slack_fake.calls_to("chat.postMessage")
    assert call.done and call.status is None


def test_scripted_failures_can_target_a_channel_and_repeat(
    slack_fake: FaultySlack, slack_client: WebClient
) -> None:
    slack_fake.add_channel("C0OTHER", "other")
    slack_fake.fail_next("chat.postMessage", error="fatal_error", channel="C0OTHER", times=2)
    assert slack_client.chat_postMessage(channel=CHANNEL, text="x")["ok"]
    for _ in range(2):
        with pytest.raises(SlackApiError) as exc:
            slack_client.chat_postMessage(channel="C0OTHER", text="x")
        assert slack_error(exc) == "fatal_error"
    assert slack_client.chat_postMessage(channel="C0OTHER", text="x")["ok"]


def test_outage_answers_503_until_over(slack_fake: FaultySlack, slack_client: WebClient) -> None:
    slack_fake.set_down(True)
    with pytest.raises(SlackApiError) as exc:
        slack_client.auth_test()
    assert exc.value.response.status_code == 503
    slack_fake.set_down(False)
    assert slack_client.auth_test()["ok"]


def test_a_delayed_method_answers_late_without_holding_up_others(
    slack_fake: FaultySlack, slack_client: WebClient
) -> None:
    slack_fake.delay("auth.test", 1.0)
    slow: dict[str, Any] = {}

    def ask() -> None:
        started = time.monotonic()
        slow["answer"] = slack_client.auth_test()
        slow["took"] = time.monotonic() - started

    thread = threading.Thread(target=ask)
    thread.start()
    wait_until(lambda: slack_fake.calls_to("auth.test"), 5, "auth.test never arrived")
    [call] = slack_fake.calls_to("auth.test")
    assert not call.done  # recorded at once, answered later
    started = time.monotonic()
    assert slack_client.chat_postMessage(channel=CHANNEL, text="meanwhile")["ok"]
    assert time.monotonic() - started < 0.5  # other methods are not held up
    assert not call.done
    thread.join(timeout=5)
    assert slow["answer"]["ok"] and slow["took"] >= 1.0
    assert call.done and call.ok
    slack_fake.delay("auth.test", 0)  # removed: answers at once again
    started = time.monotonic()
    assert slack_client.auth_test()["ok"]
    assert time.monotonic() - started < 0.5


def test_stopping_sends_delayed_answers_at_once() -> None:
    fake = FaultySlack().start()
    client = WebClient(token=fake.bot_token, base_url=fake.api_url, timeout=30)
    fake.delay("*", 60)
    answers: list[Any] = []
    thread = threading.Thread(target=lambda: answers.append(client.auth_test()))
    thread.start()
    wait_until(lambda: fake.calls_to("auth.test"), 5, "auth.test never arrived")
    assert not fake.calls_to("auth.test")[0].done  # waiting out its minute
    started = time.monotonic()
    fake.stop()
    thread.join(timeout=5)
    assert not thread.is_alive() and time.monotonic() - started < 5
    assert answers and answers[0]["ok"]


def test_random_failures_are_429_or_500(slack_fake: FaultySlack, slack_client: WebClient) -> None:
    slack_fake.set_random_failures(1.0, seed=3)
    statuses = set()
    for _ in range(10):
        with pytest.raises(SlackApiError) as exc:
            slack_client.auth_test()
        statuses.add(exc.value.response.status_code)
    assert statuses == {429, 500}


def test_an_outage_answers_response_urls_too_but_scripted_failures_do_not(
    slack_fake: FaultySlack,
) -> None:
    url = slack_fake.new_response_url()
    slack_fake.fail_next("*", status=500)
    assert WebhookClient(url).send(text="not a Web API call").status_code == 200
    slack_fake.set_down(True)
    assert WebhookClient(url).send(text="down").status_code == 503
    slack_fake.set_down(False)
    assert slack_fake.responses(url) == [{"text": "not a Web API call"}]


def test_reset_forgets_scripted_failures_and_delays(
    slack_fake: FaultySlack, slack_client: WebClient
) -> None:
    slack_fake.fail_next("*", error="fatal_error", times=5)
    slack_fake.delay("*", 60)
    slack_fake.set_down(True)
    slack_fake.set_random_failures(1.0)

    slack_fake.reset()
    started = time.monotonic()
    assert slack_client.auth_test()["ok"]
    assert time.monotonic() - started < 5


# ---- Stripe -------------------------------------------------------------------------------------


def test_injected_500_is_api_error_then_service_resumes(stripe_fake, stripe_client):
    stripe_fake.fail_next(ORDERS, status=500)
    with pytest.raises(stripe.APIError) as exc:
        stripe_client.v1.climate.orders.list()
    assert exc.value.http_status == 500
    assert exc.value.error.type == "api_error"
    assert stripe_client.v1.climate.orders.list().data == []


def test_sdk_retry_after_500_keeps_the_idempotency_key_and_acts_once(stripe_fake):
    order = stripe_fake.add_order(stripe_objects.order())
    stripe_fake.fail_next(f"{ORDERS}/{order['id']}/cancel", status=500)
    retrying = stripe_fake.client(max_network_retries=1)
    assert retrying.v1.climate.orders.cancel(order["id"]).status == "canceled"
    attempts = stripe_fake.calls_to(f"{ORDERS}/{order['id']}/cancel")
    assert [c.status for c in attempts] == [500, 200]
    assert attempts[0].idempotency_key == attempts[1].idempotency_key
    assert len(stripe_fake.events) == 1


def test_injected_429_is_rate_limit_error(stripe_fake, stripe_client):
    stripe_fake.fail_next("/v1/climate/", status=429, method="GET")
    with pytest.raises(stripe.RateLimitError) as exc:
        stripe_client.v1.climate.products.list()
    assert exc.value.http_status == 429
    # stripe-python does not copy `code` onto RateLimitError; it is on the error object.
    assert exc.value.error.code == "rate_limit"


def test_down_refuse_is_connection_error_and_503_is_api_error(stripe_fake, stripe_client):
    stripe_fake.set_down(True)
    with pytest.raises(stripe.APIConnectionError):
        stripe_client.v1.climate.orders.list()
    assert stripe_fake.calls[-1].status is None

    stripe_fake.set_down(True, mode="503")
    with pytest.raises(stripe.APIError) as exc:
        stripe_client.v1.climate.orders.list()
    assert exc.value.http_status == 503

    stripe_fake.set_down(False)
    assert stripe_client.v1.climate.orders.list().object == "list"


def test_an_injected_html_page_is_sent_as_a_proxy_sends_it(stripe_fake, stripe_client):
    page = "<html><body><h1>502 Bad Gateway</h1></body></html>"
    stripe_fake.fail_next(ORDERS, status=502, html=page, should_retry=False, times=2)
    with pytest.raises(stripe.APIError) as exc:
        stripe_client.v1.climate.orders.list()
    assert (exc.value.http_status, exc.value.http_body) == (502, page)
    assert stripe_fake.calls[-1].response is None  # no JSON to show

    # stripe-python keeps no headers of a body it cannot read: look at them on the wire (no
    # API key needed: an injected failure is answered before authentication).
    request = urllib.request.Request(stripe_fake.url + ORDERS)
    with pytest.raises(urllib.error.HTTPError) as raw:
        urllib.request.urlopen(request, timeout=5)
    assert raw.value.code == 502
    assert raw.value.headers["Content-Type"] == "text/html; charset=utf-8"
    assert raw.value.headers["Stripe-Should-Retry"] == "false"
    assert raw.value.read().decode() == page
