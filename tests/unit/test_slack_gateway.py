"""The Slack gateway's reading of Slack's answers: a hostile `Retry-After` has a bounded wait."""

from __future__ import annotations

import pytest

from bot.model import MAX_RETRY_AFTER_SECONDS, Message
from bot.slack_gateway import DEFAULT_RETRY_AFTER_SECONDS, RateLimited, SlackGateway
from tests.support.bot import BOT_TOKEN, CHANNEL


def test_the_cap_is_two_minutes_and_the_default_one_second():
    # Slack's own Retry-After values are a second to about a minute; the cap leaves room for that.
    assert MAX_RETRY_AFTER_SECONDS == 120
    assert DEFAULT_RETRY_AFTER_SECONDS == 1.0


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("7", 7.0),  # what Slack sends: kept as it is
        ("0.5", 0.5),
        ("0", 0.0),
        ("120", MAX_RETRY_AFTER_SECONDS),
        ("3600", MAX_RETRY_AFTER_SECONDS),  # an hour: capped
        ("1e9", MAX_RETRY_AFTER_SECONDS),  # thirty years: capped
        ("1e400", DEFAULT_RETRY_AFTER_SECONDS),  # parses as inf
        ("inf", DEFAULT_RETRY_AFTER_SECONDS),
        ("-inf", DEFAULT_RETRY_AFTER_SECONDS),
        ("nan", DEFAULT_RETRY_AFTER_SECONDS),
        ("-5", DEFAULT_RETRY_AFTER_SECONDS),
        ("abc", DEFAULT_RETRY_AFTER_SECONDS),
        ("Wed, 21 Oct 2037 07:28:00 GMT", DEFAULT_RETRY_AFTER_SECONDS),  # an HTTP-date
        ("", DEFAULT_RETRY_AFTER_SECONDS),
    ],
)
def test_a_429s_retry_after_becomes_a_bounded_wait(fake_slack, header, seconds):
    fake_slack.fail_next("chat.postMessage", retry_after=header)
    slack = SlackGateway(BOT_TOKEN, fake_slack.api_url)
    with pytest.raises(RateLimited) as caught:
        slack.post_message(CHANNEL, Message(text="hello"))
    assert caught.value.retry_after == seconds
    assert caught.value.error == "ratelimited"
    assert fake_slack.messages(CHANNEL) == []
    # The next call goes through: one scripted 429 only.
    slack.post_message(CHANNEL, Message(text="hello"))
    assert len(fake_slack.messages(CHANNEL)) == 1
