"""The Slack sandbox: a FakeSlack workspace shown as a web page, where a person clicks and types.

The page (``static/``) asks ``/sandbox/changes`` for what changed since the revision it last saw
(a long poll: the answer comes as soon as anything changes) and inserts the finished HTML that
``bot.demo.render`` made. A click or a ``/climate`` command typed on the page reaches the bot the
way Slack would send it: a signed POST to its Request URL, interactions as a form-encoded
``payload=`` JSON with a fresh ``response_url`` and ``trigger_id``, slash commands as Slack's form
fields. What the bot answers shows up in the workspace like in Slack: a response_url answer or a
slash command's immediate answer becomes an ephemeral message for the person who acted (an
answer to a click is shown under the message clicked). A modal the bot opens with ``views.open``
is shown to the person whose click carried the trigger_id, and only to them; its submission goes
to the bot as a signed ``view_submission``, and the bot's ``response_action`` is carried out.
"""

from __future__ import annotations

import copy
import json
import logging
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import requests
from flask import Flask, Response, abort, jsonify, request, send_from_directory

from bot.demo import modals, render
from bot.demo.stripe_page import stripe_page_html
from bot.sandbox.slack import PERMALINK_BASE, FakeSlack, Message, view_errors
from bot.sandbox.slack_requests import (
    block_actions_payload,
    sign_slack_request,
    slash_command_payload,
    view_submission_payload,
)
from bot.sandbox.socket_mode import NotConnected
from bot.sandbox.stripe import FakeStripe

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
SLASH_COMMANDS = ("/climate",)  # what the app's manifest registers
SLACK_TIMEOUT = 3.0  # Slack gives an app three seconds to answer a command or a click
LONG_POLL_SECONDS = 25.0
MAX_TEXT = 4_000
SLACKBOT = "USLACKBOT"
MODAL_STACK = 3  # Slack's limit on pushed views
MAX_TYPED = 3_000  # a plain_text_input holds at most this much (max_length's own cap)
REQUIRED = "Please complete this required field."

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


@dataclass
class _ShownView:
    """One view of a person's modal, with what they typed and the errors the app reported."""

    view: dict[str, Any]
    values: dict[str, dict[str, str]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


@dataclass
class _Modal:
    """A person's open modal: its stack of views (pushed ones on top) and a failure to show."""

    stack: list[_ShownView]
    banner: str = ""
    sending: bool = False

    @property
    def top(self) -> _ShownView:
        return self.stack[-1]


class SlackSandbox:
    """The Slack side of the demo: a workspace, and a person acting in it.

    `app_url` is the bot's base URL; requests go to its ``/slack/events`` Request URL, signed
    with `signing_secret`. With `socket_mode`, they go as Socket Mode envelopes over the
    websocket the bot opened to the fake Slack instead, and the bot's acknowledgement is the
    answer (what the HTTP response's body would have been).
    """

    def __init__(
        self,
        fake: FakeSlack,
        *,
        app_url: str,
        signing_secret: str | None,
        channel: str = "C0CLIMATE",
        deciders: tuple[str, ...] = (),
        socket_mode: bool = False,
    ) -> None:
        self.fake = fake
        self.app_url = app_url.rstrip("/")
        self.signing_secret = signing_secret or ""
        self.socket_mode = socket_mode
        self.channel = channel
        self.deciders = deciders
        self.closing = threading.Event()
        # A page left open across a restart holds the old run's revisions: it must start over.
        self.instance = secrets.token_hex(6)
        self._http = requests.Session()
        self._http.trust_env = False  # loopback only: a proxy from the environment must not apply
        self._cache: dict[str, tuple[tuple[Any, ...], str]] = {}
        self._cache_lock = threading.Lock()
        # Modals: one per person at most, as in Slack. Every change bumps a counter the page
        # compares with what it shows, so a slow long poll cannot bring back a closed modal.
        self._modal_lock = threading.RLock()
        self._modals: dict[str, _Modal] = {}
        self._modal_versions: dict[str, int] = {}
        self._modal_counter = 0
        self._seen_views: set[str] = set()

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
            # How the bot is reached, said on the page: its Request URL, or Socket Mode.
            "transport": "socket_mode" if self.socket_mode else "http",
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
        mine = [e for e in delta.ephemerals if e["user"] == user and e["channel"] == self.channel]
        # Answers to a click on an ephemeral (its "Next" button) are shown under that ephemeral.
        ephemeral_ts = (
            {e["message_ts"] for e in self.fake.ephemerals(self.channel)}
            if any(e.get("for_message_ts") for e in mine)
            else set()
        )
        entries = [self._entry(m, names) for m in delta.messages if m.channel == self.channel] + [
            self._ephemeral_entry(e, names, ephemeral_ts) for e in mine
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
            "modal": self.modal(user),
        }

    def _entry(self, message: Message, names: render.Names) -> dict[str, Any]:
        version = (
            message.updates,
            message.reply_count,
            message.edited_ts,
            message.text,
            message.broadcast,
        )
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
                    broadcast=message.broadcast,
                ),
                names,
            )
            with self._cache_lock:
                self._cache[message.ts] = (version, html)
        return {
            "key": message.ts,
            "ts": message.ts,
            "thread_ts": message.thread_ts,
            "broadcast": message.broadcast,  # a reply shown in the channel too
            "html": html,
        }

    def _ephemeral_entry(
        self, ephemeral: dict[str, Any], names: render.Names, ephemeral_ts: set[str]
    ) -> dict[str, Any]:
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
            "after": _answered_key(ephemeral, ephemeral_ts),
            "html": html,
        }

    # -- what a person does --------------------------------------------------------------------

    def click(
        self,
        user: str,
        key: str,
        block: int,
        element: str,
        thread_ts: str | None = None,
        *,
        in_thread: str | None = None,
    ) -> Sent:
        """Click the element at (`block`, `element`) of the message `key`, as Slack reports it.

        `thread_ts` is the message's thread when it is a reply; `in_thread` the thread it was
        clicked in (the open thread pane, its parent included), where an answer only the
        clicker sees then appears, under the message clicked; clicked in the channel, the
        answer shows there. The button is looked up in the stored message, never taken from the
        page: a click on a message that changed since the page drew it is refused, as Slack
        would refuse it.
        """
        self._check_user(user)
        ephemeral = key.startswith("e")
        shown_in = in_thread
        message = self._ephemeral(user, key[1:]) if ephemeral else self._message(key, thread_ts)
        blocks = message["blocks"] if isinstance(message, dict) else message.blocks
        button, block_id = _button_at(blocks, block, element)
        ts = key[1:] if ephemeral else key
        response_url = self.fake.new_response_url(
            channel=self.channel, message_ts=ts, user=user, thread_ts=shown_in
        )
        payload = block_actions_payload(
            action_id=str(button["action_id"]),
            value=str(button.get("value") or ""),
            user_id=user,
            channel_id=self.channel,
            message_ts=ts,
            response_url=response_url,
            block_id=block_id,
            message=None if ephemeral else message,
            team_id=self.fake.team_id,
            trigger_id=self.fake.new_trigger_id(user=user),
        )
        self._as_slack_reports_it(payload, user, button, ephemeral=ephemeral, thread_ts=thread_ts)
        sent = self._post("interactive", payload)
        if sent.status != 200:
            self._slackbot(user, _failure_text("That button", sent), shown_in, answers=ts)
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
        form = slash_command_payload(
            text=rest.strip(),
            user_id=user,
            channel_id=self.channel,
            response_url=self.fake.new_response_url(channel=self.channel, user=user),
            command=command,
            team_id=self.fake.team_id,
            trigger_id=self.fake.new_trigger_id(user=user),
        )
        form["user_name"] = self._user_name(user)
        sent = self._post("slash_commands", form)
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

    def _slackbot(
        self, user: str, text: str, thread_ts: str | None = None, *, answers: str | None = None
    ) -> None:
        self.fake.add_ephemeral(
            self.channel, user, text, thread_ts=thread_ts, source="slackbot", for_message_ts=answers
        )

    # -- modals ----------------------------------------------------------------------------------

    def modal(self, user: str) -> dict[str, Any]:
        """The modal `user` sees: ``{"version", "view_id", "html"}`` (``view_id`` None: none).

        A modal is `user`'s when the bot opened it with a trigger_id minted for them (their
        click or command); `version` grows with every change, for every person.
        """
        self._sync_modals()
        with self._modal_lock:
            version = self._modal_versions.get(user, 0)
            modal = self._modals.get(user)
            if modal is None:
                return {"version": version, "view_id": None, "html": ""}
            shown = modal.top
            html = modals.modal_html(
                shown.view,
                self.names(),
                values=shown.values,
                errors=shown.errors,
                banner=modal.banner,
                busy=modal.sending,
            )
            return {"version": version, "view_id": shown.view.get("id"), "html": html}

    def submit(self, user: str, view_id: str, values: Any) -> dict[str, Any]:
        """Submit `user`'s modal with what they typed (block_id → action_id → text), as Slack:
        required inputs and lengths are checked first (nothing is sent when one is wrong), then
        a signed ``view_submission`` goes to the bot and its answer is carried out: an empty
        200 closes the view, ``response_action`` ``errors`` shows them under their inputs,
        ``update`` replaces the view, ``push`` stacks a new one, ``clear`` closes them all. No
        answer within 3 s (or an error) keeps the modal open and says so. Returns `modal()`."""
        self._check_user(user)
        self._sync_modals()
        with self._modal_lock:
            modal = self._open_modal(user, view_id)
            if modal.sending:
                raise SandboxError("This form is being sent already.", 409)
            shown = modal.top
            shown.values = _typed_values(shown.view, values)
            shown.errors = _form_errors(shown.view, shown.values)
            modal.banner = ""
            if shown.errors:
                self._modal_changed(user)
                return self.modal(user)
            modal.sending = True
            view = copy.deepcopy(shown.view)
            typed = copy.deepcopy(shown.values)
        try:
            payload = view_submission_payload(
                view,
                values=typed,
                user_id=user,
                user_name=self._user_name(user),
                team_id=self.fake.team_id,
                trigger_id=self.fake.new_trigger_id(user=user),
            )
            sent = self._post("interactive", payload)
        finally:
            with self._modal_lock:
                modal.sending = False
        with self._modal_lock:
            # Closed, replaced or answered meanwhile: the answer is about a view gone from sight.
            if self._modals.get(user) is modal and modal.top is shown:
                self._carry_out(user, modal, sent)
            self._modal_changed(user)
        return self.modal(user)

    def close_modal(self, user: str, view_id: str) -> dict[str, Any]:
        """Close the top view of `user`'s modal (the one below shows again), as its close
        button does in Slack; all of them when it says ``clear_on_close``. Returns `modal()`."""
        self._check_user(user)
        self._sync_modals()
        with self._modal_lock:
            modal = self._open_modal(user, view_id)
            if modal.top.view.get("clear_on_close") is True:
                modal.stack.clear()
            else:
                modal.stack.pop()
            modal.banner = ""
            if not modal.stack:
                self._modals.pop(user, None)
            self._modal_changed(user)
        return self.modal(user)

    def _open_modal(self, user: str, view_id: str) -> _Modal:
        modal = self._modals.get(user)
        if modal is None or modal.top.view.get("id") != view_id:
            raise SandboxError("This form is no longer open.", 409)
        return modal

    def _sync_modals(self) -> None:
        """Take up the modals the bot opened since last time, each for its trigger's person."""
        openings = self.fake.view_openings()
        people = {p["id"] for p in self.people()}
        with self._modal_lock:
            for opening in openings:
                view = opening["view"]
                view_id = str(view.get("id"))
                if view_id in self._seen_views:
                    continue
                self._seen_views.add(view_id)
                if opening["user"] in people:  # another views.open replaces the modal, as in Slack
                    self._modals[opening["user"]] = _Modal([_ShownView(view)])
                    self._modal_changed(opening["user"])

    def _modal_changed(self, user: str) -> None:
        self._modal_counter += 1
        self._modal_versions[user] = self._modal_counter

    def _carry_out(self, user: str, modal: _Modal, sent: Sent) -> None:
        """Do what Slack does with the app's answer to a view_submission."""
        if sent.status != 200:
            modal.banner = _failure_text("That form", sent)
            return
        text = sent.body.strip()
        try:
            answer = json.loads(text) if text else {}
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            modal.banner = 'That form failed with the error "invalid_response": not JSON.'
            return
        action = answer.get("response_action")
        if action is None:  # an empty acknowledgement closes the view
            modal.stack.pop()
        elif action == "clear":
            modal.stack.clear()
        elif action == "errors":
            self._show_errors(modal, answer.get("errors"))
        elif action in ("update", "push"):
            self._replace_view(modal, answer.get("view"), push=action == "push")
        else:
            shown = _text_snippet(action)
            modal.banner = f'That form failed: "{shown}" is no response_action Slack knows.'
        if not modal.stack:
            self._modals.pop(user, None)

    def _show_errors(self, modal: _Modal, errors: Any) -> None:
        shown = modal.top
        if (
            not isinstance(errors, dict)
            or not errors
            or not all(isinstance(v, str) for v in errors.values())
        ):
            modal.banner = 'That form failed: "errors" must map block ids to messages.'
            return
        unknown = [str(k) for k in errors if k not in _input_block_ids(shown.view)]
        if unknown:
            names = ", ".join(_text_snippet(k) for k in unknown[:3])
            modal.banner = f"That form failed: the app reported errors for no input here ({names})."
            return
        shown.errors = {str(k): v[:MAX_TYPED] for k, v in errors.items()}

    def _replace_view(self, modal: _Modal, raw: Any, *, push: bool) -> None:
        problems = view_errors(raw, kind="modal")
        if problems:
            modal.banner = f'That form failed with the error "invalid_arguments": {problems[0]}'
            return
        if push and len(modal.stack) >= MODAL_STACK:
            modal.banner = 'That form failed with the error "push_limit_reached".'
            return
        old = modal.top.view
        new = {
            **copy.deepcopy(raw),
            "id": f"V{secrets.token_hex(5).upper()}" if push else old.get("id"),
            "team_id": old.get("team_id"),
            "app_id": old.get("app_id"),
            "bot_id": old.get("bot_id"),
            "state": {"values": {}},
            "hash": f"{int(time.time())}.{secrets.token_hex(4)}",
            "private_metadata": raw.get("private_metadata", ""),
            "callback_id": raw.get("callback_id", ""),
            "root_view_id": old.get("root_view_id") or old.get("id"),
            "previous_view_id": old.get("id") if push else old.get("previous_view_id"),
        }
        if push:
            modal.stack.append(_ShownView(new))
            return
        # Slack keeps what was typed in inputs whose block_id and action_id stay the same.
        kept = {
            block_id: {action_id: modal.top.values[block_id][action_id]}
            for block_id, action_id in _text_inputs(new)
            if action_id in modal.top.values.get(block_id, {})
        }
        modal.stack[-1] = _ShownView(new, values=kept)

    def _post(self, kind: str, payload: dict[str, Any]) -> Sent:
        """Send the bot what Slack sends for an interaction (`kind` ``interactive``: the payload
        JSON, form-encoded as ``payload=`` over HTTP) or a slash command (``slash_commands``: its
        fields, form-encoded), signed over HTTP, or as an envelope over Socket Mode."""
        if self.socket_mode:
            return self._over_socket(kind, payload)
        if kind == "interactive":
            body = urllib.parse.urlencode({"payload": json.dumps(payload)})
        else:
            body = urllib.parse.urlencode(payload)
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

    def _over_socket(self, kind: str, payload: dict[str, Any]) -> Sent:
        """Send it as the envelope Slack sends over Socket Mode; the acknowledgement's payload is
        the answer an HTTP response's body would have been."""
        try:
            envelope = self.fake.socket.send(kind, payload)
        except NotConnected:
            log.warning("the bot is not connected to the sandbox's Socket Mode")
            return Sent(None)
        try:
            answer = self.fake.socket.wait_ack(envelope, timeout=SLACK_TIMEOUT)
        except AssertionError:  # not acknowledged in time, as Slack would report it
            log.warning("the bot did not acknowledge envelope %s in time", envelope)
            return Sent(None)
        return Sent(200, json.dumps(answer) if answer else "")

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


def _answered_key(ephemeral: dict[str, Any], ephemeral_ts: set[str]) -> str | None:
    """The key of the message an ephemeral answers a click on (the page shows it under that
    message), or None (a slash command's answer: at the bottom, as in Slack). `ephemeral_ts`
    holds the ts of every ephemeral, to tell a click on one of them from one on a message."""
    answered = ephemeral.get("for_message_ts")
    if not answered:
        return None
    if answered != ephemeral["message_ts"] and answered in ephemeral_ts:
        return "e" + answered
    return answered


def _text_inputs(view: dict[str, Any]) -> list[tuple[str, str]]:
    """(block_id, action_id) of the view's text inputs the page shows."""
    found = []
    blocks = view.get("blocks")
    for index, block in enumerate(blocks if isinstance(blocks, list) else []):
        if not isinstance(block, dict) or block.get("type") != "input":
            continue
        element = block.get("element")
        if isinstance(element, dict) and element.get("type") in modals.TEXT_INPUTS:
            found.append(modals.input_ids(block, index))
    return found


def _input_block_ids(view: dict[str, Any]) -> set[str]:
    blocks = view.get("blocks")
    return {
        modals.input_ids(block, index)[0]
        for index, block in enumerate(blocks if isinstance(blocks, list) else [])
        if isinstance(block, dict) and block.get("type") == "input"
    }


def _typed_values(view: dict[str, Any], values: Any) -> dict[str, dict[str, str]]:
    """What the page sent, checked against the view's inputs: every one of them, as text."""
    changed = SandboxError("This form has changed since you saw it; nothing was sent.", 409)
    if not isinstance(values, dict):
        raise SandboxError("values must be an object.")
    inputs = _text_inputs(view)
    known = {(b, a) for b, a in inputs}
    for block_id, actions in values.items():
        if not isinstance(actions, dict):
            raise SandboxError("values must be an object of objects.")
        for action_id, value in actions.items():
            if (block_id, action_id) not in known:
                raise changed
            if not isinstance(value, str) or len(value) > MAX_TYPED:
                raise SandboxError(f"A field holds at most {MAX_TYPED} characters.")
    return {
        block_id: {action_id: values[block_id][action_id]}
        for block_id, action_id in inputs
        if action_id in values.get(block_id, {})
    }


def _form_errors(view: dict[str, Any], typed: dict[str, dict[str, str]]) -> dict[str, str]:
    """What Slack's client says before sending anything: a required input left empty, a text
    shorter than min_length or longer than max_length."""
    errors: dict[str, str] = {}
    blocks = view.get("blocks")
    for index, block in enumerate(blocks if isinstance(blocks, list) else []):
        if not isinstance(block, dict) or block.get("type") != "input":
            continue
        element = block.get("element")
        if not isinstance(element, dict) or element.get("type") not in modals.TEXT_INPUTS:
            continue  # not shown here: nothing to check
        block_id, action_id = modals.input_ids(block, index)
        value = typed.get(block_id, {}).get(action_id, "")
        minimum, maximum = modals.input_limits(element)
        if not value.strip():
            if block.get("optional") is not True:
                errors[block_id] = REQUIRED
        elif maximum is not None and len(value) > maximum:
            errors[block_id] = f"Please use {maximum} characters or fewer (now {len(value)})."
        elif minimum is not None and len(value) < minimum:
            errors[block_id] = f"Please use at least {minimum} characters."
    return errors


def _text_snippet(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 40 else text[:39] + "…"


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
        sent = sandbox.click(
            _string(data, "user"),
            _string(data, "key"),
            block,
            _string(data, "element"),
            thread_ts=_optional_string(data, "thread_ts"),
            in_thread=_optional_string(data, "in_thread"),
        )
        return jsonify(ok=sent.status == 200, status=sent.status)

    @app.post("/sandbox/submit")
    def submit():
        data = _json_body()
        return jsonify(
            ok=True,
            modal=sandbox.submit(
                _string(data, "user"), _string(data, "view_id"), data.get("values")
            ),
        )

    @app.post("/sandbox/close")
    def close_modal():
        data = _json_body()
        return jsonify(
            ok=True, modal=sandbox.close_modal(_string(data, "user"), _string(data, "view_id"))
        )

    @app.post("/sandbox/command")
    def command():
        data = _json_body()
        sent = sandbox.command(_string(data, "user"), _string(data, "text", MAX_TEXT + 1))
        return jsonify(ok=sent is None or sent.status == 200)

    @app.get("/stripe")
    def stripe_page():
        if stripe is None:
            abort(404)
        body = stripe_page_html(stripe.orders(), stripe.products())
        return Response(STRIPE_PAGE.replace("{body}", body), mimetype="text/html")

    return app


def _json_body() -> dict[str, Any]:
    # JSON only: a cross-site form cannot send it without a CORS preflight, which we never allow.
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise SandboxError("Send a JSON object.")
    return data


def _optional_string(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    return value[:100] if isinstance(value, str) and value else None


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
