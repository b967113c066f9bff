"""The requests Slack sends our app, built and signed as Slack does: button clicks
(`block_actions_body`), modal submissions (`view_submission_body`), slash commands
(`slash_command_body`), Events API callbacks (`event_callback_body`) and their v0 signature
(`sign_slack_request`). The tests, the demo's sandbox page and the benches click with these.

Each ``*_body`` (what goes over HTTP) wraps a ``*_payload`` (the same request as a dict), which is
what Socket Mode carries in an envelope's ``payload`` instead (`bot.sandbox.socket_mode`): the
slash command's fields, the ``block_actions``/``view_submission`` JSON, the ``event_callback``."""

from __future__ import annotations

import copy
import json
import secrets
import time
import urllib.parse
from typing import Any

from slack_sdk.signature import SignatureVerifier

from bot.sandbox.slack import APP_ID, TEAM_DOMAIN, Message

_USER_NAMES = {"U0ALICE": "alice", "U0BOB": "bob"}


def sign_slack_request(
    body: str, signing_secret: str, timestamp: int | None = None
) -> dict[str, str]:
    """Headers Slack would send with `body`: its v0 signature, timestamp and content type.

    Sign the exact string you send. Pass an old `timestamp` (now − 301) to test replay rejection.
    """
    ts = str(int(time.time()) if timestamp is None else timestamp)
    signature = SignatureVerifier(signing_secret).generate_signature(timestamp=ts, body=body)
    content_type = (
        "application/json" if body.lstrip().startswith("{") else "application/x-www-form-urlencoded"
    )
    return {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": signature,
        "Content-Type": content_type,
    }


def block_actions_body(**fields: Any) -> str:
    """A button click as Slack posts it: form-encoded ``payload=<block_actions JSON>``, the JSON
    being `block_actions_payload(**fields)`."""
    return _form_payload(block_actions_payload(**fields))


def block_actions_payload(
    *,
    action_id: str,
    value: str,
    user_id: str = "U0ALICE",
    channel_id: str = "C0CLIMATE",
    message_ts: str | None = None,
    response_url: str,
    block_id: str = "b",
    message: dict[str, Any] | Message | None = None,
    team_id: str = "T0TEST",
    trigger_id: str | None = None,
    user_team_id: str | None = None,
) -> dict[str, Any]:
    """A button click as Slack sends it: the ``block_actions`` payload.

    `team_id` is the workspace the app is installed in; `user_team_id` (default: the same) the
    clicker's own, another one for a guest of a Slack Connect channel.

    `message` is the message holding the button (a dict in Slack's shape, or a `Message` from
    `FakeSlack.messages()`); `message_ts` defaults to its ts, else ``"1.000100"``. Each body
    carries a fresh `trigger_id` unless one is given.
    """
    if isinstance(message, Message):
        message = _message_payload(message)
    if message_ts is None:
        message_ts = str((message or {}).get("ts") or "1.000100")
    if message is None:
        message = {"type": "message", "ts": message_ts, "text": "", "user": "U0BOT", "blocks": []}
    user_name = _USER_NAMES.get(user_id, user_id.lower())
    return {
        "type": "block_actions",
        "user": {
            "id": user_id,
            "username": user_name,
            "name": user_name,
            "team_id": user_team_id or team_id,
        },
        "api_app_id": APP_ID,
        "token": "deprecated-verification-token",
        "container": {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel_id,
            "is_ephemeral": False,
        },
        "trigger_id": trigger_id or _trigger_id(),
        "team": {"id": team_id, "domain": TEAM_DOMAIN},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel_id, "name": _channel_name(channel_id)},
        "message": message,
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [
            {
                "type": "button",
                "action_id": action_id,
                "block_id": block_id,
                "text": {"type": "plain_text", "text": action_id, "emoji": True},
                "value": value,
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }


def view_submission_body(view: dict[str, Any], **fields: Any) -> str:
    """A modal's submission as Slack posts it: form-encoded ``payload=<view_submission JSON>``,
    the JSON being `view_submission_payload(view, **fields)`."""
    return _form_payload(view_submission_payload(view, **fields))


def view_submission_payload(
    view: dict[str, Any],
    *,
    values: dict[str, dict[str, Any]],
    user_id: str = "U0ALICE",
    user_name: str | None = None,
    team_id: str = "T0TEST",
    trigger_id: str | None = None,
    response_urls: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A modal's submission as Slack sends it: the ``view_submission`` payload.

    `view` is the view as ``views.open`` answered it (`FakeSlack.view_openings()`); `values`
    maps block_id → action_id → what the person typed (a string, None for an empty field), or a
    whole state value for other elements (``{"type": "static_select", "selected_option": …}``).
    Like Slack, ``view.state.values`` holds every input block of the view, an empty plain-text
    input as ``"value": None``. A block_id or action_id that is no input of the view raises
    ValueError. `response_urls` is sent only when given (Slack sends it only for inputs with
    ``response_url_enabled``). Each body carries a fresh `trigger_id` unless one is given.
    """
    view = copy.deepcopy(view)
    blocks = view.get("blocks") if isinstance(view.get("blocks"), list) else []
    state: dict[str, dict[str, Any]] = {}
    for index, block in enumerate(blocks):
        if not isinstance(block, dict) or block.get("type") != "input":
            continue
        element = block.get("element") if isinstance(block.get("element"), dict) else {}
        # Slack gives every block and element an id when the app gave none.
        block_id = block.setdefault("block_id", f"input{index}")
        action_id = element.setdefault("action_id", f"element{index}")
        given = values.get(block_id, {}).get(action_id)
        if isinstance(given, dict):
            state[block_id] = {action_id: {"type": element.get("type"), **given}}
        else:
            value = None if given in (None, "") else str(given)
            state[block_id] = {action_id: {"type": element.get("type"), "value": value}}
    for block_id, actions in values.items():
        for action_id in actions:
            if action_id not in state.get(block_id, {}):
                raise ValueError(f"{block_id}/{action_id} is not an input of this view")
    view_id = str(view.get("id") or "V0000000001")
    name = user_name or _USER_NAMES.get(user_id, user_id.lower())
    payload: dict[str, Any] = {
        "type": "view_submission",
        "team": {"id": team_id, "domain": TEAM_DOMAIN},
        "user": {"id": user_id, "username": name, "name": name, "team_id": team_id},
        "api_app_id": APP_ID,
        "token": "deprecated-verification-token",
        "trigger_id": trigger_id or _trigger_id(),
        "view": {
            "id": view_id,
            "team_id": team_id,
            "type": "modal",
            "private_metadata": "",
            "callback_id": "",
            "external_id": "",
            "hash": f"{int(time.time())}.{secrets.token_hex(4)}",
            "clear_on_close": False,
            "notify_on_close": False,
            "close": None,
            "submit": None,
            "previous_view_id": None,
            "app_id": APP_ID,
            "app_installed_team_id": team_id,
            "bot_id": "B0BOT",
            **view,
            "root_view_id": view.get("root_view_id") or view_id,
            "blocks": blocks,
            "state": {"values": state},
        },
        "is_enterprise_install": False,
        "enterprise": None,
    }
    if response_urls is not None:
        payload["response_urls"] = response_urls
    return payload


def slash_command_body(**fields: Any) -> str:
    """A slash command as Slack posts it: `slash_command_payload(**fields)`, form-encoded."""
    return urllib.parse.urlencode(slash_command_payload(**fields))


def slash_command_payload(
    *,
    text: str,
    user_id: str = "U0ALICE",
    channel_id: str = "C0CLIMATE",
    response_url: str,
    command: str = "/climate",
    team_id: str = "T0TEST",
    trigger_id: str | None = None,
) -> dict[str, str]:
    """A slash command's fields as Slack sends them (strings all, as in the form it posts), with
    a fresh `trigger_id` unless one is given."""
    return {
        "token": "deprecated-verification-token",
        "team_id": team_id,
        "team_domain": TEAM_DOMAIN,
        "channel_id": channel_id,
        "channel_name": _channel_name(channel_id),
        "user_id": user_id,
        "user_name": _USER_NAMES.get(user_id, user_id.lower()),
        "command": command,
        "text": text,
        "api_app_id": APP_ID,
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": trigger_id or _trigger_id(),
    }


def event_callback_body(event: dict[str, Any], **fields: Any) -> str:
    """An Events API delivery as Slack posts it: `event_callback_payload(event, **fields)` as
    JSON."""
    return json.dumps(event_callback_payload(event, **fields))


def event_callback_payload(
    event: dict[str, Any], *, event_id: str = "Ev0001", team_id: str = "T0TEST"
) -> dict[str, Any]:
    """An Events API delivery as Slack sends it: the ``event_callback`` envelope around `event`."""
    return {
        "token": "deprecated-verification-token",
        "team_id": team_id,
        "api_app_id": APP_ID,
        "event": event,
        "type": "event_callback",
        "event_id": event_id,
        "event_time": int(time.time()),
        "authorizations": [
            {
                "enterprise_id": None,
                "team_id": team_id,
                "user_id": "U0BOT",
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "is_ext_shared_channel": False,
    }


def _form_payload(payload: dict[str, Any]) -> str:
    # Interactions are posted as a form with one field holding the JSON.
    return urllib.parse.urlencode({"payload": json.dumps(payload)})


def _trigger_id() -> str:
    # Every interaction carries a fresh trigger id; views.open accepts each one once.
    return f"{int(time.time())}.{secrets.randbelow(10**9)}.{secrets.token_hex(8)}"


def _channel_name(channel_id: str) -> str:
    return "climate" if channel_id == "C0CLIMATE" else channel_id.lower()


def _message_payload(message: Message) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "type": "message",
        "ts": message.ts,
        "text": message.text,
        "user": message.user,
        "blocks": copy.deepcopy(message.blocks),
    }
    if message.bot_id:
        payload["bot_id"] = message.bot_id
        payload["app_id"] = APP_ID
    if message.thread_ts:
        payload["thread_ts"] = message.thread_ts
    return payload
