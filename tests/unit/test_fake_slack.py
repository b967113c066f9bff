"""The fake Slack behaves like Slack's Web API, as seen through the real slack_sdk clients."""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Iterator

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.webhook import WebhookClient

from bot.sandbox.slack import RESPONSE_URL_METHOD, FakeSlack, block_kit_errors
from bot.sandbox.slack_requests import (
    block_actions_body,
    event_callback_body,
    sign_slack_request,
    slash_command_body,
)

CHANNEL = "C0CLIMATE"


class ManualClock:
    """A clock the test moves by hand, so time-based rules are tested without sleeping."""

    def __init__(self, now: float = 1_767_225_600.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # urllib would send loopback calls to a developer's HTTP(S)_PROXY.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack() as server:
        yield server


@pytest.fixture
def client(fake: FakeSlack) -> WebClient:
    return WebClient(token=fake.bot_token, base_url=fake.api_url)


def slack_error(exc: pytest.ExceptionInfo[SlackApiError]) -> str:
    return exc.value.response["error"]


# ---- happy path ---------------------------------------------------------------------------------


def test_post_update_and_thread_reply_round_trip(fake: FakeSlack, client: WebClient) -> None:
    card = client.chat_postMessage(channel=CHANNEL, text="Order created", blocks=[_section("v1")])
    assert card["channel"] == CHANNEL
    assert card["message"]["bot_id"] == fake.bot_id

    client.chat_update(
        channel=CHANNEL, ts=card["ts"], text="Order delayed", blocks=[_section("v2")]
    )
    reply = client.chat_postMessage(channel=CHANNEL, thread_ts=card["ts"], text="Delayed to 2027")

    [message] = fake.messages(CHANNEL)
    assert (message.ts, message.text, message.updates) == (card["ts"], "Order delayed", 1)
    assert message.blocks == [_section("v2")]
    assert message.reply_count == 1
    [threaded] = fake.replies(CHANNEL, card["ts"])
    assert (threaded.ts, threaded.text, threaded.thread_ts) == (
        reply["ts"],
        "Delayed to 2027",
        card["ts"],
    )
    assert float(reply["ts"]) > float(card["ts"])

    thread = client.conversations_replies(channel=CHANNEL, ts=card["ts"])["messages"]
    assert [m["ts"] for m in thread] == [card["ts"], reply["ts"]]
    assert thread[0]["reply_count"] == 1
    assert "edited" in thread[0]


def test_ts_values_are_unique_and_increasing(fake: FakeSlack, client: WebClient) -> None:
    stamps = [client.chat_postMessage(channel=CHANNEL, text=str(i))["ts"] for i in range(5)]
    assert len(set(stamps)) == 5
    assert all(isinstance(ts, str) and len(ts.split(".")[1]) == 6 for ts in stamps)
    assert [float(ts) for ts in stamps] == sorted(float(ts) for ts in stamps)


def test_auth_test_reports_identity_and_scopes(fake: FakeSlack, client: WebClient) -> None:
    response = client.auth_test()
    assert (response["user_id"], response["bot_id"], response["team_id"]) == (
        "U0BOT",
        "B0BOT",
        "T0TEST",
    )
    assert "channels:join" in response.headers["x-oauth-scopes"].split(",")


def test_unknown_fields_are_ignored_and_calls_recorded(fake: FakeSlack, client: WebClient) -> None:
    # Bolt adds team_id to every listener call.
    client.api_call("chat.postMessage", json={"channel": CHANNEL, "text": "x", "team_id": "T0TEST"})
    [call] = fake.calls_to("chat.postMessage")
    assert call.params["team_id"] == "T0TEST"
    assert call.headers["authorization"] == f"Bearer {fake.bot_token}"
    assert call.ok


def test_token_in_form_body_is_accepted(fake: FakeSlack) -> None:
    anonymous = WebClient(token=None, base_url=fake.api_url)
    response = anonymous.api_call("auth.test", params={"token": fake.bot_token})
    assert response["user_id"] == fake.bot_user_id


def test_unknown_method(client: WebClient) -> None:
    with pytest.raises(SlackApiError) as exc:
        client.api_call("pins.add", params={"channel": CHANNEL})
    assert slack_error(exc) == "unknown_method"


# ---- ok:false errors ----------------------------------------------------------------------------


def test_missing_token_is_not_authed(fake: FakeSlack) -> None:
    with pytest.raises(SlackApiError) as exc:
        WebClient(token=None, base_url=fake.api_url).chat_postMessage(channel=CHANNEL, text="x")
    assert slack_error(exc) == "not_authed"
    assert exc.value.response.status_code == 200


def test_unknown_token_is_invalid_auth(fake: FakeSlack) -> None:
    with pytest.raises(SlackApiError) as exc:
        WebClient(token="xoxb-wrong", base_url=fake.api_url).auth_test()
    assert slack_error(exc) == "invalid_auth"


def test_revoked_token(fake: FakeSlack, client: WebClient) -> None:
    fake.set_token_state("token_revoked")
    with pytest.raises(SlackApiError) as exc:
        client.chat_postMessage(channel=CHANNEL, text="x")
    assert slack_error(exc) == "token_revoked"

    fake.set_token_state(None)
    assert client.chat_postMessage(channel=CHANNEL, text="x")["ok"]


def test_unknown_channel(client: WebClient) -> None:
    with pytest.raises(SlackApiError) as exc:
        client.chat_postMessage(channel="C0NOPE", text="x")
    assert slack_error(exc) == "channel_not_found"


def test_not_in_channel_until_joined(fake: FakeSlack, client: WebClient) -> None:
    fake.add_channel("C0OTHER", "other", is_member=False)
    with pytest.raises(SlackApiError) as exc:
        client.chat_postMessage(channel="C0OTHER", text="x")
    assert slack_error(exc) == "not_in_channel"

    assert client.conversations_join(channel="C0OTHER")["channel"]["is_member"] is True
    assert client.chat_postMessage(channel="C0OTHER", text="x")["channel"] == "C0OTHER"


def test_archived_channel(fake: FakeSlack, client: WebClient) -> None:
    fake.add_channel("C0OLD", "old", is_archived=True)
    with pytest.raises(SlackApiError) as exc:
        client.chat_postMessage(channel="C0OLD", text="x")
    assert slack_error(exc) == "is_archived"


def test_private_channel_without_the_bot(fake: FakeSlack, client: WebClient) -> None:
    fake.add_channel("G0SECRET", "secret", is_private=True, is_member=False)
    for call in (
        lambda: client.chat_postMessage(channel="G0SECRET", text="x"),
        lambda: client.conversations_join(channel="G0SECRET"),
    ):
        with pytest.raises(SlackApiError) as exc:
            call()
        assert slack_error(exc) == "channel_not_found"


def test_private_channels_cannot_be_joined(fake: FakeSlack, client: WebClient) -> None:
    fake.add_channel("G0TEAM", "team", is_private=True)
    with pytest.raises(SlackApiError) as exc:
        client.conversations_join(channel="G0TEAM")
    assert slack_error(exc) == "method_not_supported_for_channel_type"


def test_update_checks_the_message(fake: FakeSlack, client: WebClient) -> None:
    human = fake.add_message(CHANNEL, "hello from alice")
    card = client.chat_postMessage(channel=CHANNEL, text="card")
    cases = [
        ({"ts": "1.000001", "text": "x"}, "message_not_found"),
        ({"ts": human.ts, "text": "x"}, "cant_update_message"),
        ({"ts": card["ts"], "text": "x" * 4001}, "msg_too_long"),
    ]
    for params, error in cases:
        with pytest.raises(SlackApiError) as exc:
            client.chat_update(channel=CHANNEL, **params)
        assert slack_error(exc) == error
    assert fake.messages(CHANNEL)[1].updates == 0


def test_schedule_message_checks_post_at(fake: FakeSlack, client: WebClient) -> None:
    now = int(time.time())
    for post_at, error in ((now - 10, "time_in_past"), (now + 121 * 86400, "time_too_far")):
        with pytest.raises(SlackApiError) as exc:
            client.chat_scheduleMessage(channel=CHANNEL, post_at=post_at, text="x")
        assert slack_error(exc) == error

    scheduled = client.chat_scheduleMessage(channel=CHANNEL, post_at=now + 60, text="x")
    client.chat_deleteScheduledMessage(
        channel=CHANNEL, scheduled_message_id=scheduled["scheduled_message_id"]
    )
    assert fake.scheduled() == [] and fake.messages(CHANNEL) == []


def test_ephemeral_needs_a_member_and_views_open_a_fresh_trigger(
    fake: FakeSlack, client: WebClient
) -> None:
    fake.add_channel("C0SMALL", "small", members=["U0ALICE"])
    client.chat_postEphemeral(channel="C0SMALL", user="U0ALICE", text="just you")
    with pytest.raises(SlackApiError) as exc:
        client.chat_postEphemeral(channel="C0SMALL", user="U0BOB", text="x")
    assert slack_error(exc) == "user_not_in_channel"
    assert [e["text"] for e in fake.ephemerals("C0SMALL")] == ["just you"]

    modal = {"type": "modal", "title": {"type": "plain_text", "text": "Cancel?"}, "blocks": []}
    trigger_id = fake.new_trigger_id()
    assert client.views_open(trigger_id=trigger_id, view=modal)["view"]["id"]
    with pytest.raises(SlackApiError) as exc:
        client.views_open(trigger_id=trigger_id, view=modal)
    assert slack_error(exc) == "exchanged_trigger_id"


# ---- Block Kit validation -----------------------------------------------------------------------


def test_more_than_50_blocks_is_invalid_blocks(client: WebClient) -> None:
    with pytest.raises(SlackApiError) as exc:
        client.chat_postMessage(channel=CHANNEL, text="x", blocks=[{"type": "divider"}] * 51)
    assert slack_error(exc) == "invalid_blocks"


def test_long_section_text_is_invalid_blocks(client: WebClient) -> None:
    with pytest.raises(SlackApiError) as exc:
        client.chat_postMessage(channel=CHANNEL, text="x", blocks=[_section("y" * 3001)])
    assert slack_error(exc) == "invalid_blocks"
    [message] = exc.value.response["response_metadata"]["messages"]
    assert message.startswith("[ERROR]") and "/blocks/0" in message


def test_no_text_and_no_blocks_is_no_text(
    client: WebClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SKIP_SLACK_SDK_WARNING", "1")  # slack_sdk warns about the missing text too
    with pytest.raises(SlackApiError) as exc:
        client.chat_postMessage(channel=CHANNEL)
    assert slack_error(exc) == "no_text"


def test_block_kit_errors_catches_what_the_models_miss() -> None:
    button = {"type": "button", "text": {"type": "mrkdwn", "text": "Go"}, "action_id": "a"}
    assert block_kit_errors([_section("ok", block_id="a"), _section("ok", block_id="b")]) == []
    assert block_kit_errors([_section("ok", block_id="a"), _section("ok", block_id="a")])
    assert block_kit_errors([{"type": "section", "fields": [_mrkdwn("f" * 2001)]}])
    assert block_kit_errors([{"type": "header", "text": _mrkdwn("Title")}])
    assert block_kit_errors([{"type": "actions", "elements": [button]}])
    assert block_kit_errors([{"type": "no_such_block"}])


# ---- history, metadata, pagination --------------------------------------------------------------


def test_history_shows_metadata_only_when_asked(client: WebClient) -> None:
    metadata = {"event_type": "climate_bot_outbox", "event_payload": {"id": "ob_1"}}
    client.chat_postMessage(channel=CHANNEL, text="card", metadata=metadata)

    [with_meta] = client.conversations_history(channel=CHANNEL, include_all_metadata=True)[
        "messages"
    ]
    [without] = client.conversations_history(channel=CHANNEL)["messages"]
    assert with_meta["metadata"] == metadata
    assert "metadata" not in without


def test_history_is_newest_first_and_paginates(client: WebClient) -> None:
    stamps = [client.chat_postMessage(channel=CHANNEL, text=str(i))["ts"] for i in range(5)]
    first = client.conversations_history(channel=CHANNEL, limit=3)
    assert [m["ts"] for m in first["messages"]] == stamps[:1:-1]
    assert first["has_more"] is True
    second = client.conversations_history(
        channel=CHANNEL, limit=3, cursor=first["response_metadata"]["next_cursor"]
    )
    assert [m["ts"] for m in second["messages"]] == stamps[1::-1]
    assert second["has_more"] is False

    newer = client.conversations_history(channel=CHANNEL, oldest=stamps[2])["messages"]
    assert [m["ts"] for m in newer] == stamps[:2:-1]


# ---- pacing -------------------------------------------------------------------------------------


def test_pacing_limits_one_post_per_second_per_channel() -> None:
    clock = ManualClock()
    with FakeSlack(enforce_pacing=True, clock=clock) as fake:
        client = WebClient(token=fake.bot_token, base_url=fake.api_url)
        client.chat_postMessage(channel=CHANNEL, text="first")
        with pytest.raises(SlackApiError) as exc:
            client.chat_postMessage(channel=CHANNEL, text="too soon")
        assert exc.value.response.status_code == 429
        assert exc.value.response.headers["Retry-After"] == "1"
        assert fake.ratelimited_count == 1

        clock.now += 1
        assert client.chat_postMessage(channel=CHANNEL, text="later")["ok"]
        assert [m.text for m in fake.messages(CHANNEL)] == ["first", "later"]


def test_no_pacing_by_default(client: WebClient, fake: FakeSlack) -> None:
    for i in range(3):
        client.chat_postMessage(channel=CHANNEL, text=str(i))
    assert fake.ratelimited_count == 0


# ---- response_urls ------------------------------------------------------------------------------


def test_response_url_allows_five_uses(fake: FakeSlack) -> None:
    url = fake.new_response_url()
    webhook = WebhookClient(url)
    assert [webhook.send(text=f"answer {i}").status_code for i in range(5)] == [200] * 5
    sixth = webhook.send(text="one too many")
    assert sixth.status_code == 404
    assert json.loads(sixth.body)["error"] == "used_url"
    assert [body["text"] for body in fake.responses(url)] == [f"answer {i}" for i in range(5)]
    assert len(fake.wait_for(RESPONSE_URL_METHOD, count=6)) == 6


def test_response_url_expires_after_30_minutes() -> None:
    clock = ManualClock()
    with FakeSlack(clock=clock) as fake:
        url = fake.new_response_url()
        clock.now += 30 * 60 + 1
        response = WebhookClient(url).send(text="late")
        assert response.status_code == 404
        assert json.loads(response.body)["error"] == "expired_url"


def test_response_url_replaces_the_original_message(fake: FakeSlack, client: WebClient) -> None:
    card = client.chat_postMessage(channel=CHANNEL, text="pending", blocks=[_section("pending")])
    url = fake.new_response_url(channel=CHANNEL, message_ts=card["ts"], user="U0ALICE")
    WebhookClient(url).send(text="cancelled", blocks=[_section("cancelled")], replace_original=True)
    WebhookClient(url).send(text="only you can see this")

    [message] = fake.messages(CHANNEL)
    assert (message.text, message.updates) == ("cancelled", 1)
    [ephemeral] = fake.ephemerals(CHANNEL)
    assert (ephemeral["user"], ephemeral["text"]) == ("U0ALICE", "only you can see this")


# ---- waiting ------------------------------------------------------------------------------------


def test_wait_for_explains_a_timeout(fake: FakeSlack, client: WebClient) -> None:
    client.auth_test()
    with pytest.raises(AssertionError, match=r"chat.postMessage.*calls seen: auth.test \(ok\)"):
        fake.wait_for("chat.postMessage", timeout=0.05)


def test_reset_keeps_configuration_and_forgets_activity(fake: FakeSlack, client: WebClient) -> None:
    fake.add_channel("C0OTHER", "other", is_member=False)
    client.conversations_join(channel="C0OTHER")
    client.chat_postMessage(channel=CHANNEL, text="x")
    fake.set_token_state("account_inactive")

    fake.reset()
    assert fake.calls == [] and fake.messages(CHANNEL) == []
    assert client.conversations_info(channel="C0OTHER")["channel"]["is_member"] is False


# ---- requests from Slack to the app -------------------------------------------------------------


def test_signed_headers_verify() -> None:
    body = slash_command_body(text="status climorder_1", response_url="http://127.0.0.1:1/hooks/x")
    headers = sign_slack_request(body, "secret")
    assert SignatureVerifier("secret").is_valid_request(body, headers)
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    stale = sign_slack_request(body, "secret", timestamp=int(time.time()) - 301)
    assert not SignatureVerifier("secret").is_valid_request(body, stale)


def test_block_actions_body_matches_slacks_shape() -> None:
    body = block_actions_body(
        action_id="cancel_order", value="climorder_1", response_url="http://x/hooks/1"
    )
    [raw] = urllib.parse.parse_qs(body)["payload"]
    payload = json.loads(raw)
    assert payload["type"] == "block_actions"
    assert payload["actions"][0]["action_id"] == "cancel_order"
    assert payload["actions"][0]["value"] == "climorder_1"
    assert payload["container"]["message_ts"] == payload["message"]["ts"] == "1.000100"
    assert payload["user"]["id"] == "U0ALICE"


def test_event_callback_body_is_json() -> None:
    body = event_callback_body({"type": "app_uninstalled"})
    assert json.loads(body)["event"] == {"type": "app_uninstalled"}
    assert sign_slack_request(body, "s")["Content-Type"] == "application/json"


def _section(text: str, *, block_id: str | None = None) -> dict:
    block: dict = {"type": "section", "text": _mrkdwn(text)}
    if block_id:
        block["block_id"] = block_id
    return block


def _mrkdwn(text: str) -> dict:
    return {"type": "mrkdwn", "text": text}
