"""The Slack sandbox: a FakeSlack workspace shown as a web page, where a person clicks and types.

The page (``static/``) asks ``/sandbox/changes`` for what changed since the revision it last saw
(a long poll: the answer comes as soon as anything changes) and inserts the finished HTML that
``bot.demo.render`` made. A click or a ``/climate`` command typed on the page reaches the bot the
way Slack would send it: a signed POST to its Request URL, interactions as a form-encoded
``payload=`` JSON with a fresh ``response_url`` and ``trigger_id``, slash commands as Slack's form
fields. What the bot answers shows up in the workspace like in Slack: a response_url answer or a
slash command's immediate answer becomes an ephemeral message for the person who acted.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import requests
from flask import Flask, Response, abort, jsonify, request, send_from_directory

from bot.demo import render
from bot.fakes.slack import (
    PERMALINK_BASE,
    FakeSlack,
    Message,
    block_actions_body,
    sign_slack_request,
    slash_command_body,
)
from bot.fakes.stripe import FakeStripe

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
SLASH_COMMANDS = ("/climate",)  # what the app's manifest registers
SLACK_TIMEOUT = 3.0  # Slack gives an app three seconds to answer a command or a click
LONG_POLL_SECONDS = 25.0
MAX_TEXT = 4_000
SLACKBOT = "USLACKBOT"

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' http: https: data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


class SandboxError(Exception):
    """A request from the page that cannot be carried out; its text is shown to the person."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Sent:
    """What happened to one request forwarded to the bot."""

    status: int | None  # None: the bot did not answer in time or could not be reached
    body: str = ""


class SlackSandbox:
    """The Slack side of the demo: a workspace, and a person acting in it.

    `app_url` is the bot's base URL; requests go to its ``/slack/events`` Request URL, signed
    with `signing_secret`.
    """

    def __init__(
        self,
        fake: FakeSlack,
        *,
        app_url: str,
        signing_secret: str,
        channel: str = "C0CLIMATE",
        deciders: tuple[str, ...] = (),
    ) -> None:
        self.fake = fake
        self.app_url = app_url.rstrip("/")
        self.signing_secret = signing_secret
        self.channel = channel
        self.deciders = deciders
        self.closing = threading.Event()
        # A page left open across a restart holds the old run's revisions: it must start over.
        self.instance = secrets.token_hex(6)
        self._http = requests.Session()
        self._http.trust_env = False  # loopback only: a proxy from the environment must not apply
        self._cache: dict[str, tuple[tuple[Any, ...], str]] = {}
        self._cache_lock = threading.Lock()

    # -- what the page shows -------------------------------------------------------------------

    def names(self) -> render.Names:
        """The names mentions are shown with."""
        return render.Names(
            users={u["id"]: u["name"] for u in self.fake.users()},
            usergroups=self.fake.usergroups(),
            channels=self.fake.channel_names(),
        )

    def people(self) -> list[dict[str, Any]]:
        """The people one can be on the page: every member who is not a bot."""
        return [
            {"id": u["id"], "name": u["name"], "may_decide": self._may_decide(u["id"])}
            for u in self.fake.users()
            if not u["is_bot"]
        ]

    def _may_decide(self, user: str) -> bool:
        return not self.deciders or user in self.deciders

    def workspace(self) -> dict[str, Any]:
        """What the page needs to draw itself: channel, people, who it is by default."""
        people = self.people()
        default = next((p["id"] for p in people if p["may_decide"]), people[0]["id"])
        return {
            "channel": {"id": self.channel, "name": self.fake.channel_names().get(self.channel)},
            "users": people,
            "default_user": default,
            "permalink_base": PERMALINK_BASE,
            "commands": list(SLASH_COMMANDS),
        }

    def changes(
        self, user: str, since: int, *, wait: float = 0.0, instance: str | None = None
    ) -> dict[str, Any]:
        """What `user` sees change after revision `since`, as HTML; waits up to `wait` seconds
        for a change first (a long poll), waking early when the sandbox closes. A revision from
        another `instance` (the page outlived a restart) gets everything, at once."""
        self._check_user(user)
        if instance is not None and instance != self.instance:
            since, wait = 0, 0.0
        deadline = time.monotonic() + wait
        while not self.closing.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.fake.wait_for_change(since, min(remaining, 1.0)) > since:
                break
        delta = self.fake.changes_since(since)
        names = self.names()
        entries = [self._entry(m, names) for m in delta.messages if m.channel == self.channel] + [
            self._ephemeral_entry(e, names)
            for e in delta.ephemerals
            if e["user"] == user and e["channel"] == self.channel
        ]
        entries.sort(key=lambda e: Decimal(e["ts"]))  # a float would round a ts's last digits
        deleted = [ts for channel, ts in delta.deleted if channel == self.channel]
        deleted += ["e" + ts for ts in delta.deleted_ephemerals]
        return {
            "instance": self.instance,
            "revision": delta.revision,
            "full": delta.full,
            "messages": entries,
            "deleted": deleted,
        }

    def _entry(self, message: Message, names: render.Names) -> dict[str, Any]:
        version = (message.updates, message.reply_count, message.edited_ts, message.text)
        with self._cache_lock:
            cached = self._cache.get(message.ts)
        if cached is not None and cached[0] == version:
            html = cached[1]
        else:
            html = render.message_html(
                render.ShownMessage(
                    key=message.ts,
                    ts=message.ts,
                    text=message.text,
                    blocks=message.blocks,
                    user=message.user,
                    is_bot=message.bot_id is not None,
                    thread_ts=message.thread_ts,
                    reply_count=message.reply_count,
                    edited=message.edited_ts is not None,
                ),
                names,
            )
            with self._cache_lock:
                self._cache[message.ts] = (version, html)
        return {"key": message.ts, "ts": message.ts, "thread_ts": message.thread_ts, "html": html}

    def _ephemeral_entry(self, ephemeral: dict[str, Any], names: render.Names) -> dict[str, Any]:
        key = "e" + ephemeral["message_ts"]
        is_slackbot = ephemeral.get("source") == "slackbot"
        html = render.message_html(
            render.ShownMessage(
                key=key,
                ts=ephemeral["message_ts"],
                text=ephemeral["text"],
                blocks=ephemeral["blocks"],
                user=SLACKBOT if is_slackbot else self.fake.bot_user_id,
                is_bot=not is_slackbot,
                thread_ts=ephemeral.get("thread_ts"),
                ephemeral=True,
            ),
            render.Names(
                users={**names.users, SLACKBOT: "Slackbot"},
                usergroups=names.usergroups,
                channels=names.channels,
            ),
        )
        return {
            "key": key,
            "ts": ephemeral["message_ts"],
            "thread_ts": ephemeral.get("thread_ts"),
            "html": html,
        }

    # -- what a person does --------------------------------------------------------------------

    def click(
        self, user: str, key: str, block: int, element: str, thread_ts: str | None = None
    ) -> Sent:
        """Click the element at (`block`, `element`) of the message `key`, as Slack reports it.

        The button is looked up in the stored message, never taken from the page: a click on a
        message that changed since the page drew it is refused, as Slack would refuse it.
        """
        self._check_user(user)
        ephemeral = key.startswith("e")
        message = self._ephemeral(user, key[1:]) if ephemeral else self._message(key, thread_ts)
        blocks = message["blocks"] if isinstance(message, dict) else message.blocks
        button, block_id = _button_at(blocks, block, element)
        ts = key[1:] if ephemeral else key
        response_url = self.fake.new_response_url(channel=self.channel, message_ts=ts, user=user)
        body = block_actions_body(
            action_id=str(button["action_id"]),
            value=str(button.get("value") or ""),
            user_id=user,
            channel_id=self.channel,
            message_ts=ts,
            response_url=response_url,
            block_id=block_id,
            message=None if ephemeral else message,
            team_id=self.fake.team_id,
            trigger_id=self.fake.new_trigger_id(),
        )
        payload = json.loads(urllib.parse.parse_qs(body)["payload"][0])
        self._as_slack_reports_it(payload, user, button, ephemeral=ephemeral, thread_ts=thread_ts)
        sent = self._post(urllib.parse.urlencode({"payload": json.dumps(payload)}))
        if sent.status != 200:
            self._slackbot(user, _failure_text("That button", sent), thread_ts)
        return sent

    def _as_slack_reports_it(
        self,
        payload: dict[str, Any],
        user: str,
        button: dict[str, Any],
        *,
        ephemeral: bool,
        thread_ts: str | None,
    ) -> None:
        name = self._user_name(user)
        payload["user"].update({"username": name, "name": name})
        action = payload["actions"][0]
        action["text"] = button.get("text")
        if "value" not in button:
            action.pop("value", None)
        if button.get("style"):
            action["style"] = button["style"]
        if ephemeral:
            payload["container"]["is_ephemeral"] = True
            payload.pop("message", None)  # Slack sends no copy of an ephemeral message
        if thread_ts:
            payload["container"]["thread_ts"] = thread_ts

    def command(self, user: str, text: str) -> Sent | None:
        """Send what was typed in the message box: ``/climate …`` goes to the bot as a slash
        command; other text is posted to the channel as `user`. None when nothing was sent."""
        self._check_user(user)
        text = text.strip()
        if not text:
            return None
        if len(text) > MAX_TEXT:
            raise SandboxError(f"That message is longer than {MAX_TEXT} characters.")
        if not text.startswith("/"):
            self.fake.add_message(self.channel, render_typed(text), user=user)
            return None
        command, _, rest = text.partition(" ")
        if command not in SLASH_COMMANDS:
            self._slackbot(
                user,
                f"`{command[:80]}` is not a valid command. In Slack, all messages that start with "
                'the "/" character are interpreted as commands.',
            )
            return None
        body = slash_command_body(
            text=rest.strip(),
            user_id=user,
            channel_id=self.channel,
            response_url=self.fake.new_response_url(channel=self.channel, user=user),
            command=command,
            team_id=self.fake.team_id,
            trigger_id=self.fake.new_trigger_id(),
        )
        form = urllib.parse.parse_qs(body, keep_blank_values=True)
        form = {k: v[0] for k, v in form.items()}
        form["user_name"] = self._user_name(user)
        sent = self._post(urllib.parse.urlencode(form))
        if sent.status != 200:
            self._slackbot(user, _failure_text(command, sent))
        elif sent.body.strip():
            self._show_immediate_answer(user, sent.body)
        return sent

    def _show_immediate_answer(self, user: str, body: str) -> None:
        """A command's HTTP answer is shown at once, like Slack: ephemeral unless in_channel."""
        try:
            answer = json.loads(body)
        except ValueError:
            answer = {"text": body}
        if not isinstance(answer, dict):
            answer = {"text": body}
        text = str(answer.get("text") or "")
        blocks = answer.get("blocks") if isinstance(answer.get("blocks"), list) else []
        if answer.get("response_type") == "in_channel":
            self.fake.add_message(self.channel, text, user=self.fake.bot_user_id, blocks=blocks)
        else:
            self.fake.add_ephemeral(self.channel, user, text, blocks=blocks)

    def _slackbot(self, user: str, text: str, thread_ts: str | None = None) -> None:
        self.fake.add_ephemeral(self.channel, user, text, thread_ts=thread_ts, source="slackbot")

    def _post(self, body: str) -> Sent:
        headers = sign_slack_request(body, self.signing_secret)
        try:
            response = self._http.post(
                self.app_url + "/slack/events",
                data=body.encode("utf-8"),
                headers=headers,
                timeout=SLACK_TIMEOUT,
            )
        except requests.RequestException as exc:
            log.warning("the bot did not answer the sandbox: %s", exc)
            return Sent(None)
        return Sent(response.status_code, response.text)

    # -- lookups -------------------------------------------------------------------------------

    def _check_user(self, user: str) -> None:
        if not any(p["id"] == user for p in self.people()):
            raise SandboxError("Unknown user.", 403)

    def _user_name(self, user: str) -> str:
        return next((u["name"] for u in self.fake.users() if u["id"] == user), user.lower())

    def _message(self, ts: str, thread_ts: str | None) -> Message:
        pool = (
            self.fake.replies(self.channel, thread_ts)
            if thread_ts
            else self.fake.messages(self.channel)
        )
        found = next((m for m in pool if m.ts == ts), None)
        if found is None:
            raise SandboxError("That message is gone.", 409)
        return found

    def _ephemeral(self, user: str, message_ts: str) -> dict[str, Any]:
        found = next(
            (
                e
                for e in self.fake.ephemerals(self.channel)
                if e["message_ts"] == message_ts and e["user"] == user
            ),
            None,
        )
        if found is None:
            raise SandboxError("That message is gone.", 409)
        return found


def render_typed(text: str) -> str:
    """What Slack stores for text a person typed: ``&``, ``<`` and ``>`` escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _button_at(blocks: Any, block: int, element: str) -> tuple[dict[str, Any], str]:
    """The button at that place in `blocks`, and its block's id (Slack makes one up if absent)."""
    changed = SandboxError("This message has changed since you saw it; nothing was sent.", 409)
    if not isinstance(blocks, list) or not 0 <= block < len(blocks):
        raise changed
    holder = blocks[block]
    if not isinstance(holder, dict):
        raise changed
    if element == "accessory":
        found = holder.get("accessory")
    else:
        elements = holder.get("elements")
        try:
            found = elements[int(element)] if isinstance(elements, list) else None
        except (ValueError, IndexError):
            found = None
    if not isinstance(found, dict) or found.get("type") != "button" or not found.get("action_id"):
        raise changed
    return found, str(holder.get("block_id") or f"sandbox{block}")


def _failure_text(what: str, sent: Sent) -> str:
    if sent.status is None:
        return f'{what} failed with the error "operation_timeout": climate-bot did not answer.'
    return f'{what} failed with the error "http_service_error" (HTTP {sent.status}).'


# --- the web app ------------------------------------------------------------------------------


def create_sandbox_app(sandbox: SlackSandbox, stripe: FakeStripe | None = None) -> Flask:
    """The sandbox's web app: the page, its state and the endpoints a person acts through."""
    app = Flask("climate-bot-sandbox", static_folder=str(STATIC), static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024

    @app.before_request
    def loopback_only():
        # The page is for this machine only: refuse other host names (DNS rebinding) and
        # cross-site posts.
        if request.host.rsplit(":", 1)[0] not in ("127.0.0.1", "localhost"):
            abort(403)
        origin = request.headers.get("Origin")
        if request.method == "POST" and origin and origin != request.host_url.rstrip("/"):
            abort(403)

    @app.after_request
    def security_headers(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.errorhandler(SandboxError)
    def refused(exc: SandboxError):
        return jsonify(ok=False, error=str(exc)), exc.status

    @app.get("/")
    def page():
        return send_from_directory(STATIC, "sandbox.html")

    @app.get("/sandbox/workspace")
    def workspace():
        return jsonify(sandbox.workspace())

    @app.get("/sandbox/changes")
    def changes():
        user = request.args.get("user", "")
        try:
            since = max(0, int(request.args.get("since", "0")))
            wait = min(LONG_POLL_SECONDS, max(0.0, float(request.args.get("wait", "0"))))
        except ValueError:
            raise SandboxError("since and wait must be numbers.") from None
        instance = request.args.get("instance") or None
        return jsonify(sandbox.changes(user, since, wait=wait if since else 0.0, instance=instance))

    @app.post("/sandbox/click")
    def click():
        data = _json_body()
        try:
            block = int(data.get("block"))
        except (TypeError, ValueError):
            raise SandboxError("block must be a number.") from None
        thread_ts = data.get("thread_ts")
        sent = sandbox.click(
            _string(data, "user"),
            _string(data, "key"),
            block,
            _string(data, "element"),
            thread_ts=thread_ts if isinstance(thread_ts, str) and thread_ts else None,
        )
        return jsonify(ok=sent.status == 200, status=sent.status)

    @app.post("/sandbox/command")
    def command():
        data = _json_body()
        sent = sandbox.command(_string(data, "user"), _string(data, "text", MAX_TEXT + 1))
        return jsonify(ok=sent is None or sent.status == 200)

    @app.get("/stripe")
    def stripe_page():
        if stripe is None:
            abort(404)
        body = render.stripe_page_html(stripe.orders(), stripe.products())
        return Response(STRIPE_PAGE.replace("{body}", body), mimetype="text/html")

    return app


def _json_body() -> dict[str, Any]:
    # JSON only: a cross-site form cannot send it without a CORS preflight, which we never allow.
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise SandboxError("Send a JSON object.")
    return data


def _string(data: dict[str, Any], name: str, limit: int = 100) -> str:
    value = data.get(name)
    if not isinstance(value, str) or len(value) > limit:
        raise SandboxError(f"{name} must be a string of at most {limit} characters.")
    return value


STRIPE_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="3">
<title>Stripe Climate sandbox</title>
<link rel="stylesheet" href="/static/sandbox.css"></head>
<body class="stripe-page">
<header class="st-header"><h1>Stripe Climate sandbox <span class="st-test">test mode</span></h1>
<p>What Stripe holds right now. The bot reads and cancels orders here through the Stripe API;
this page refreshes itself every few seconds. <a href="/">Back to #climate</a></p></header>
<main>{body}</main>
</body></html>
"""
