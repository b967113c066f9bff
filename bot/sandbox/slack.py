"""A fake Slack on loopback: a real HTTP server that speaks the Web API like slack.com does.

Point the real ``slack_sdk.WebClient(token=..., base_url=fake.api_url)`` (or ``SLACK_API_URL``)
at a started ``FakeSlack`` and it answers in Slack's wire format: ``ok: false`` errors on HTTP 200,
429 with ``Retry-After`` when pacing is on, Block Kit validation, threads, metadata, pagination.
It also serves ``response_url``s (``/hooks/<id>``) and records every call, and speaks Socket Mode
on a real websocket (``fake.socket``, `bot.sandbox.socket_mode`): ``apps.connections.open``,
called with the app-level token, hands Bolt's ``SocketModeHandler`` a URL to connect to.

It behaves like a healthy Slack. A subclass makes it misbehave through one seam, `_intercept`
(answer a call in Slack's place: an error, a 5xx page, a dropped connection) and `_delay_for`
(answer late); the tests' failures are built that way in tests/support/faults.py.

Tests start one per test; ``climate-bot demo`` reuses it as a local Slack sandbox, so nothing here
depends on pytest. Requests going the other way (Slack → our app: signed slash commands, button
clicks, Events API callbacks) are built in ``slack_requests``.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import secrets
import socketserver
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from slack_sdk.models.blocks import Block

from bot.sandbox.socket_mode import SocketModeServer

__all__ = [
    "DEFAULT_SCOPES",
    "RESPONSE_URL_METHOD",
    "Call",
    "FakeSlack",
    "Message",
    "Reply",
    "WorkspaceChanges",
    "block_kit_errors",
    "ratelimited",
    "view_errors",
]

DEFAULT_SCOPES = (
    "chat:write",
    "commands",
    "channels:join",
    "channels:history",
    "groups:history",
    "usergroups:read",
)
APP_ID = "A0CLIMATE"
APP_TOKEN = "xapp-1-A0FAKE-1-test"
# Methods an app-level token (xapp-) calls, and only it; other tokens are the wrong type there.
APP_TOKEN_METHODS = frozenset({"apps.connections.open"})
TEAM_DOMAIN = "fake-workspace"
PERMALINK_BASE = "https://fake-slack.example"
# Calls to response_urls are recorded next to Web API calls under this pseudo method name,
# so `wait_for(RESPONSE_URL_METHOD)` can wait for a `respond()` made on a Bolt worker thread.
RESPONSE_URL_METHOD = "response_url"

MAX_MESSAGE_BLOCKS = 50
MAX_SURFACE_BLOCKS = 100  # modals and Home tabs
MAX_VIEW_LABEL = 24  # a modal's title, submit and close
MAX_PRIVATE_METADATA = 3_000
MAX_VIEW_BYTES = 250_000  # views.open answers view_too_large past it
MAX_POST_TEXT = 40_000
MAX_UPDATE_TEXT = 4_000
MAX_SECTION_FIELD = 2_000
RESPONSE_URL_USES = 5
RESPONSE_URL_LIFETIME = 30 * 60
TRIGGER_LIFETIME = 3
SCHEDULE_HORIZON = 120 * 24 * 60 * 60
PACING_INTERVAL = 1.0


# --------------------------------------------------------------------------------------------
# What the fake records
# --------------------------------------------------------------------------------------------


@dataclass
class Call:
    """One request the fake received: a Web API call, or a POST to a response_url.

    `status`/`response` are filled in once the fake has answered (`done`); `status` stays None
    when the connection was dropped instead of answered (a `Reply` with ``disconnect=True``).
    """

    method: str
    params: dict[str, Any]
    headers: dict[str, str]
    at: float
    path: str = ""
    status: int | None = None
    response: dict[str, Any] | None = None
    done: bool = False

    @property
    def ok(self) -> bool:
        """True when the fake answered HTTP 200 with ``"ok": true``."""
        return self.status == 200 and bool(self.response and self.response.get("ok"))

    @property
    def error(self) -> str | None:
        """The ``error`` field of the answer, if any."""
        return (self.response or {}).get("error")


@dataclass
class Message:
    """A message in a channel; `thread_ts` is None at top level, the parent's ts in a thread."""

    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)
    thread_ts: str | None = None
    metadata: dict[str, Any] | None = None
    user: str | None = None
    bot_id: str | None = None
    updates: int = 0  # how many chat.update (or replace_original) calls hit it
    reply_count: int = 0
    edited_ts: str | None = None
    broadcast: bool = False  # a thread reply also sent to the channel (reply_broadcast)


@dataclass
class WorkspaceChanges:
    """What changed in the workspace since a revision (see `FakeSlack.changes_since`).

    `full` is True when everything is listed (a first look, or the revision predates a `reset`):
    the watcher should then forget what it showed before.
    """

    revision: int
    full: bool
    messages: list[Message]  # new or changed, thread replies included, in post order (copies)
    deleted: list[tuple[str, str]]  # (channel, ts) of deleted messages
    ephemerals: list[dict[str, Any]]  # new or replaced ephemerals, shaped as in `ephemerals()`
    deleted_ephemerals: list[str]  # message_ts of ephemerals deleted by `delete_original`


@dataclass
class _Channel:
    id: str
    name: str
    is_private: bool
    is_archived: bool
    is_member: bool
    members: set[str] | None  # None: every known user is a member
    created: int


@dataclass
class _User:
    id: str
    name: str
    is_bot: bool


@dataclass
class _ResponseUrl:
    url: str
    created: float
    channel: str | None
    message_ts: str | None
    user: str | None
    thread_ts: str | None = None  # the thread the interaction happened in
    uses: int = 0


@dataclass
class Reply:
    """An answer the fake sends: `json` (or else the HTML page `html`) with `status` and extra
    `headers`; ``disconnect=True`` closes the connection without sending a byte."""

    status: int = 200
    json: dict[str, Any] | None = None
    html: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    disconnect: bool = False


class _ApiError(Exception):
    """An ``ok: false`` answer, raised by a method implementation."""

    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


# --------------------------------------------------------------------------------------------
# Block Kit validation (what Slack checks server-side; slack_sdk's models miss some of it)
# --------------------------------------------------------------------------------------------


def block_kit_errors(
    blocks: Any, *, max_blocks: int = MAX_MESSAGE_BLOCKS, pointer: str = "/blocks"
) -> list[str]:
    """Say why Slack would answer ``invalid_blocks`` to `blocks`; ``[]`` when it would accept them.

    Combines ``slack_sdk.models.blocks.Block.parse`` (lengths, counts, required fields) with the
    limits the models do not check: blocks per message, section field length, header and button
    text types, unknown block types and duplicate ``block_id``s. Messages look like Slack's own
    ``response_metadata.messages`` (``"[ERROR] ... [json-pointer:/blocks/3]"``; `pointer` is
    where the blocks are: ``/view/blocks`` in a view).
    """
    if not isinstance(blocks, list):
        return [f"[ERROR] must provide an array [json-pointer:{pointer}]"]
    errors: list[str] = []
    if len(blocks) > max_blocks:
        errors.append(f"[ERROR] no more than {max_blocks} items allowed [json-pointer:{pointer}]")
    seen_ids: set[str] = set()
    for index, block in enumerate(blocks):
        where = f"[json-pointer:{pointer}/{index}]"
        if not isinstance(block, dict):
            errors.append(f"[ERROR] must provide an object {where}")
            continue
        try:
            parsed = Block.parse(block)
            if parsed is None:
                errors.append(f"[ERROR] unsupported type: {block.get('type')!r} {where}")
                continue
            parsed.to_dict()  # runs the model's validators recursively
        except Exception as exc:  # any rejection by the models is a rejection by Slack
            errors.append(f"[ERROR] {exc} {where}")
            continue
        errors.extend(f"[ERROR] {problem} {where}" for problem in _extra_block_problems(block))
        block_id = block.get("block_id")
        if block_id is not None:
            if block_id in seen_ids:
                errors.append(f"[ERROR] duplicate block_id {block_id!r} {where}")
            seen_ids.add(block_id)
    return errors


def _extra_block_problems(block: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    kind = block.get("type")
    if kind == "section":
        if "text" in block and not _is_text_object(block["text"]):
            problems.append("text must be a text object")
        for field_ in block.get("fields") or []:
            if not _is_text_object(field_):
                problems.append("fields must be text objects")
            elif len(field_["text"]) > MAX_SECTION_FIELD:
                problems.append(f"field text must be at most {MAX_SECTION_FIELD} characters")
    elif kind == "header":
        if not _is_text_object(block.get("text"), "plain_text"):
            problems.append("header text must be a plain_text object")
    elif kind == "actions":
        for element in block.get("elements") or []:
            is_button = isinstance(element, dict) and element.get("type") == "button"
            if is_button and not _is_text_object(element.get("text"), "plain_text"):
                problems.append("button text must be a plain_text object")
    return problems


def _is_text_object(value: Any, kind: str | None = None) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("text"), str)
        and value.get("type") in ((kind,) if kind else ("plain_text", "mrkdwn"))
    )


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Keep-alive clients may hold handler threads open; don't join them on close.
    block_on_close = False

    def __init__(self, address: tuple[str, int], fake: FakeSlack) -> None:
        self.fake = fake
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup that can stall
        # for seconds in sandboxes; loopback needs no name.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # explicit content-length, like Slack
    timeout = 30  # idle keep-alive connections give their thread back eventually
    server: _Server

    def do_POST(self) -> None:
        self.server.fake._serve(self)

    do_GET = do_POST

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the fake's record of calls is the log; stderr noise would hide test output


def _wall_clock() -> float:
    # Looked up on each call so time-machine's travel applies to the fake as well.
    return time.time()


class FakeSlack:
    """A loopback Slack workspace: Web API, response_urls and observation.

    Start it (``with FakeSlack() as fake:`` or ``fake.start()``), point a ``WebClient`` at
    ``fake.api_url``, then inspect ``calls``, ``messages()``, ``replies()`` … Everything is
    thread-safe: Bolt listeners call it from worker threads while the test thread waits with
    ``wait_for``.
    """

    def __init__(
        self,
        *,
        bot_token: str = "xoxb-test-token",
        app_token: str = APP_TOKEN,
        app_id: str = APP_ID,
        team_id: str = "T0TEST",
        bot_user_id: str = "U0BOT",
        bot_id: str = "B0BOT",
        port: int = 0,
        enforce_pacing: bool = False,
        scopes: tuple[str, ...] = DEFAULT_SCOPES,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """Configure the workspace; nothing listens until `start()`.

        `clock` (default ``time.time``) drives message ts, pacing, response_url and trigger
        expiry and scheduling checks; pass your own to move time without sleeping.
        `app_token` is the app-level token ``apps.connections.open`` (Socket Mode) takes.
        """
        self.bot_token = bot_token
        self.app_token = app_token
        self.app_id = app_id
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.enforce_pacing = enforce_pacing
        self.scopes = scopes
        self._port = port
        self._clock = clock or _wall_clock
        self._cond = threading.Condition(threading.RLock())
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()  # set by stop(): delayed answers go out at once

        self._channel_config: dict[str, _Channel] = {}
        self._channels: dict[str, _Channel] = {}
        self._users: dict[str, _User] = {}
        self._usergroups: dict[str, tuple[str, list[str]]] = {}
        self._ts_second = 0
        self._ts_counter = 0
        self._id_counter = 0
        self._revision = 0  # counts changes a watcher can see; never goes back, even on reset
        self._clear_activity()

        self.add_user(bot_user_id, "climate-bot", is_bot=True)
        self.add_user("U0ALICE", "alice")
        self.add_user("U0BOB", "bob")
        self.add_channel("C0CLIMATE", "climate")
        # Socket Mode: listens from the first apps.connections.open (or socket.start()) on.
        self.socket = SocketModeServer(self)

    def _clear_activity(self) -> None:
        self.calls: list[Call] = []
        self._messages: dict[str, list[Message]] = {}
        self._ephemerals: list[dict[str, Any]] = []
        self._scheduled: list[dict[str, Any]] = []
        self._home_views: dict[str, dict[str, Any]] = {}
        self._opened_views: list[dict[str, Any]] = []
        self._triggers: dict[str, float] = {}  # trigger ids minted by new_trigger_id -> when
        self._used_triggers: set[str] = set()
        self._trigger_users: dict[str, str] = {}  # trigger ids minted for a person -> who
        self._view_openings: list[dict[str, Any]] = []
        self._hooks: dict[str, _ResponseUrl] = {}
        self._responses: list[tuple[str, dict[str, Any]]] = []
        self._token_state: str | None = None
        self._last_post: dict[str, float] = {}
        self._ratelimited_count = 0
        # Watching (the demo's sandbox page): what changed at which revision.
        self._revision += 1
        self._reset_revision = self._revision
        self._touched: dict[tuple[str, str], int] = {}
        self._deleted: dict[tuple[str, str], int] = {}
        self._touched_ephemerals: dict[str, int] = {}
        self._deleted_ephemerals: dict[str, int] = {}

    # ---- lifecycle ------------------------------------------------------------------------------

    def start(self) -> FakeSlack:
        """Bind 127.0.0.1 (port 0 = any free port) and serve on a daemon thread; returns self."""
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server(("127.0.0.1", self._port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            # A short poll interval keeps stop() fast: shutdown() waits for the next poll.
            kwargs={"poll_interval": 0.02},
            name=f"fake-slack:{self._server.server_port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket, then Socket Mode's. Safe to call twice."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        self._stopping.set()
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        # After the Web API: a client told to go away must find no apps.connections.open.
        self.socket.stop()

    def __enter__(self) -> FakeSlack:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The TCP port the fake listens on (only after `start()`)."""
        if self._server is None:
            raise RuntimeError("FakeSlack is not started; call start() first")
        return self._server.server_port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``: where response_urls live."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        """``http://127.0.0.1:PORT/api/``: the WebClient ``base_url`` / ``SLACK_API_URL``."""
        return f"{self.base_url}/api/"

    # ---- workspace state ------------------------------------------------------------------------

    def add_channel(
        self,
        id: str,
        name: str,
        *,
        is_private: bool = False,
        is_archived: bool = False,
        is_member: bool = True,
        members: list[str] | None = None,
    ) -> None:
        """Add (or replace) a channel. `members` lists its human members; None means everyone.

        The configuration survives `reset()`, which undoes joins made through the API.
        """
        channel = _Channel(
            id=id,
            name=name,
            is_private=is_private,
            is_archived=is_archived,
            is_member=is_member,
            members=set(members) if members is not None else None,
            created=int(self._clock()),
        )
        with self._cond:
            self._channel_config[id] = channel
            self._channels[id] = copy.deepcopy(channel)

    def add_user(self, id: str, name: str, *, is_bot: bool = False) -> None:
        """Add (or replace) a workspace member."""
        with self._cond:
            self._users[id] = _User(id=id, name=name, is_bot=is_bot)

    def add_usergroup(self, id: str, handle: str, user_ids: list[str]) -> None:
        """Add (or replace) a user group (``S…``) for ``usergroups.users.list``."""
        with self._cond:
            self._usergroups[id] = (handle, list(user_ids))

    def add_message(
        self,
        channel: str,
        text: str,
        *,
        user: str = "U0ALICE",
        blocks: list[dict[str, Any]] | None = None,
        thread_ts: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Message:
        """Put a message in a channel as if a person typed it in Slack; returns a copy."""
        with self._cond:
            message = self._store_message(
                channel,
                text=text,
                blocks=blocks or [],
                thread_ts=thread_ts,
                metadata=metadata,
                user=user,
                bot_id=None,
            )
            return copy.deepcopy(message)

    def set_token_state(self, state: str | None) -> None:
        """Make every call with the bot token fail with `state`; None restores a working token.

        `state` is the error Slack would answer: ``token_revoked``, ``account_inactive``,
        ``invalid_auth``, ``token_expired`` …
        """
        with self._cond:
            self._token_state = state

    # ---- observation ----------------------------------------------------------------------------

    @property
    def ratelimited_count(self) -> int:
        """How many 429s pacing (``enforce_pacing=True``) has answered."""
        with self._cond:
            return self._ratelimited_count

    def calls_to(self, method: str) -> list[Call]:
        """Calls to `method` so far (answered or still in flight), oldest first."""
        with self._cond:
            return [call for call in self.calls if call.method == method]

    def wait_for(
        self,
        predicate_or_method: str | Callable[[Call], bool],
        *,
        count: int = 1,
        timeout: float = 10.0,
    ) -> list[Call]:
        """Block until at least `count` answered calls match, and return all that match.

        Pass a method name (``"chat.postMessage"``, or ``RESPONSE_URL_METHOD``) or a predicate on
        `Call`. Only answered calls count, so the fake's state already reflects them. Raises
        AssertionError listing the calls seen when `timeout` seconds pass first.
        """
        if isinstance(predicate_or_method, str):
            method = predicate_or_method

            def matches(call: Call) -> bool:
                return call.method == method

            wanted = f"call(s) to {method}"
        else:
            matches = predicate_or_method
            wanted = f"call(s) matching {getattr(matches, '__name__', repr(matches))}"
        # monotonic, not the (possibly frozen) wall clock: the deadline is about real waiting.
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [call for call in self.calls if call.done and matches(call)]
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = ", ".join(_describe(call) for call in self.calls) or "none"
                    raise AssertionError(
                        f"expected {count} {wanted} within {timeout:g}s, got {len(found)}; "
                        f"calls seen: {seen}"
                    )
                self._cond.wait(remaining)

    def messages(self, channel: str) -> list[Message]:
        """Top-level messages in `channel`, in post order (copies)."""
        with self._cond:
            return [
                copy.deepcopy(m) for m in self._messages.get(channel, []) if m.thread_ts is None
            ]

    def replies(self, channel: str, thread_ts: str) -> list[Message]:
        """Replies in the thread under `thread_ts`, in post order (copies; the parent excluded)."""
        with self._cond:
            return [
                copy.deepcopy(m)
                for m in self._messages.get(channel, [])
                if m.thread_ts == thread_ts
            ]

    def ephemerals(self, channel: str | None = None) -> list[dict[str, Any]]:
        """Ephemeral messages (``chat.postEphemeral`` and ephemeral response_url answers).

        Each is ``{"channel", "user", "text", "blocks", "thread_ts", "message_ts", "source",
        "for_message_ts"}``; `for_message_ts` is the message (or ephemeral) whose button was
        clicked when the ephemeral answers that click through its response_url, else None.
        """
        with self._cond:
            return [
                copy.deepcopy(e)
                for e in self._ephemerals
                if channel is None or e["channel"] == channel
            ]

    def scheduled(self, channel: str | None = None) -> list[dict[str, Any]]:
        """Messages scheduled with ``chat.scheduleMessage`` and not deleted (never delivered)."""
        with self._cond:
            return [
                copy.deepcopy(s)
                for s in self._scheduled
                if channel is None or s["channel"] == channel
            ]

    def home_view(self, user_id: str) -> dict[str, Any] | None:
        """The Home tab last published for `user_id` with ``views.publish``."""
        with self._cond:
            return copy.deepcopy(self._home_views.get(user_id))

    def opened_views(self) -> list[dict[str, Any]]:
        """Modals opened with ``views.open``, in order."""
        with self._cond:
            return copy.deepcopy(self._opened_views)

    def view_openings(self, user: str | None = None) -> list[dict[str, Any]]:
        """Who opened which modal: ``{"view", "trigger_id", "user"}`` per ``views.open``, in order.

        `user` is the person the trigger was minted for (``new_trigger_id(user=...)``), None for
        a trigger the fake did not mint; pass `user` to list only that person's.
        """
        with self._cond:
            return [
                copy.deepcopy(o) for o in self._view_openings if user is None or o["user"] == user
            ]

    def reset(self) -> None:
        """Forget calls, messages, views, response_urls and Socket Mode envelopes; restore
        channels and users as configured (undoing joins) and a working token. Socket Mode
        connections stay open."""
        with self._cond:
            self._clear_activity()
            self._channels = copy.deepcopy(self._channel_config)
            self.socket.reset()
            self._cond.notify_all()

    # ---- watching (the demo's Slack sandbox) ----------------------------------------------------

    @property
    def revision(self) -> int:
        """A number that grows whenever a message or ephemeral appears, changes or goes."""
        with self._cond:
            return self._revision

    def wait_for_change(self, since: int, timeout: float) -> int:
        """Block until the revision is past `since` or `timeout` seconds pass; return it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._revision <= since:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return self._revision

    def changes_since(self, since: int) -> WorkspaceChanges:
        """What changed after revision `since` (0, or one from before a `reset`: everything).

        A page showing the workspace calls this with the revision it last saw and redraws only
        what is listed, so a channel with thousands of messages stays cheap to watch.
        """
        with self._cond:
            full = since < self._reset_revision
            everything = [m for channel in self._messages.values() for m in channel]
            if full:
                messages = everything
                ephemerals = list(self._ephemerals)
            else:
                messages = [
                    m for m in everything if self._touched.get((m.channel, m.ts), 0) > since
                ]
                ephemerals = [
                    e
                    for e in self._ephemerals
                    if self._touched_ephemerals.get(e["message_ts"], 0) > since
                ]
            return WorkspaceChanges(
                revision=self._revision,
                full=full,
                messages=copy.deepcopy(sorted(messages, key=lambda m: _ts_key(m.ts))),
                deleted=[] if full else [k for k, rev in self._deleted.items() if rev > since],
                ephemerals=copy.deepcopy(ephemerals),
                deleted_ephemerals=[]
                if full
                else [ts for ts, rev in self._deleted_ephemerals.items() if rev > since],
            )

    def users(self) -> list[dict[str, Any]]:
        """Workspace members as ``{"id", "name", "is_bot"}``, in the order they were added."""
        with self._cond:
            return [{"id": u.id, "name": u.name, "is_bot": u.is_bot} for u in self._users.values()]

    def usergroups(self) -> dict[str, str]:
        """User-group ids (``S…``) and their handles."""
        with self._cond:
            return {group_id: handle for group_id, (handle, _) in self._usergroups.items()}

    def channel_names(self) -> dict[str, str]:
        """Channel ids and their names."""
        with self._cond:
            return {channel.id: channel.name for channel in self._channels.values()}

    def add_ephemeral(
        self,
        channel: str,
        user: str,
        text: str,
        *,
        blocks: list[dict[str, Any]] | None = None,
        thread_ts: str | None = None,
        source: str = "slash_command",
        for_message_ts: str | None = None,
    ) -> dict[str, Any]:
        """Show `user` an ephemeral message, as Slack shows an app's immediate answer to a slash
        command (the body of its HTTP response); `for_message_ts`: the message it answers a
        click on. Returns a copy."""
        with self._cond:
            ephemeral = {
                "channel": channel,
                "user": user,
                "text": text,
                "blocks": copy.deepcopy(blocks or []),
                "thread_ts": thread_ts,
                "message_ts": self._next_ts(),
                "source": source,
                "for_message_ts": for_message_ts,
            }
            self._ephemerals.append(ephemeral)
            self._touch_ephemeral(ephemeral["message_ts"])
            return copy.deepcopy(ephemeral)

    # ---- response_urls and trigger ids ----------------------------------------------------------

    def new_response_url(
        self,
        *,
        channel: str | None = None,
        message_ts: str | None = None,
        user: str | None = None,
        thread_ts: str | None = None,
    ) -> str:
        """Mint a response_url (``http://127.0.0.1:PORT/hooks/<id>``): 5 uses within 30 minutes.

        Bind it to the `channel`/`message_ts` the interaction came from and answers act on them
        like Slack's: ``replace_original`` updates that message, ``delete_original`` deletes it,
        ``response_type: in_channel`` posts a new message there, and anything else becomes an
        ephemeral message for `user` (in `thread_ts`, the thread the interaction happened in,
        unless the answer names one), marked as answering `message_ts`. Unbound URLs only
        record what they receive.
        """
        hook_id = secrets.token_urlsafe(12)
        url = f"{self.base_url}/hooks/{hook_id}"
        with self._cond:
            self._hooks[hook_id] = _ResponseUrl(
                url, self._clock(), channel, message_ts, user, thread_ts=thread_ts
            )
        return url

    def responses(self, url: str | None = None) -> list[dict[str, Any]]:
        """Bodies accepted by response_urls (all of them, or only `url`'s), in order."""
        with self._cond:
            return [copy.deepcopy(body) for u, body in self._responses if url is None or u == url]

    def new_trigger_id(self, user: str | None = None) -> str:
        """Mint a trigger_id for ``views.open``: single use, expires after 3 seconds.

        `user` is the person whose click or command carries it: a modal opened with it is theirs
        (`view_openings`). ``views.open`` also accepts, once, trigger ids it has never seen (so
        canned payloads work).
        """
        with self._cond:
            trigger_id = f"{int(self._clock())}.{self._next_id()}.{secrets.token_hex(8)}"
            self._triggers[trigger_id] = self._clock()
            if user is not None:
                self._trigger_users[trigger_id] = user
            return trigger_id

    # ---- the seam for a misbehaving Slack ------------------------------------------------------

    def _intercept(self, call: Call) -> Reply | None:
        """Answer `call` in Slack's place, or None (always, here) to let Slack answer it.

        Consulted for every Web API call whose parameters parsed and every POST to a
        response_url (``call.path`` starts with ``/hooks/``), once `call` is recorded and with
        the fake's lock (`_cond`) held, under which an override keeps its own state too. An
        override may carry a Web API call out first with ``self._run(call)`` and answer
        otherwise: Slack did the work but the answer never arrived.
        """
        return None

    def _delay_for(self, method: str) -> float:
        """Seconds a Web API call to `method` waits before it is carried out (none, here).

        Called with the lock held. A delayed call is recorded at once (``done`` False) while
        other calls are answered meanwhile; `stop()` ends every wait at once.
        """
        return 0.0

    # ---- HTTP -----------------------------------------------------------------------------------

    def _serve(self, handler: _Handler) -> None:
        parts = urllib.parse.urlsplit(handler.path)
        length = int(handler.headers.get("content-length") or 0)
        # Read the whole body even when we will drop the connection: unread bytes turn a clean
        # close into a TCP reset, which the client would see as a different error.
        body = handler.rfile.read(length) if length > 0 else b""
        headers = {k.lower(): v for k, v in handler.headers.items()}
        if parts.path.startswith("/api/") and len(parts.path) > len("/api/"):
            reply = self._answer_api(parts.path[len("/api/") :], parts.query, headers, body)
        elif parts.path.startswith("/hooks/") and handler.command == "POST":
            reply = self._answer_hook(parts.path[len("/hooks/") :], headers, body)
        else:
            reply = Reply(status=404, html="<html><body>Not Found</body></html>")
        if reply.disconnect:
            handler.close_connection = True
            return
        if reply.json is not None:
            payload = json.dumps(reply.json).encode("utf-8")
            content_type = "application/json; charset=utf-8"
        else:
            payload = (reply.html or "").encode("utf-8")
            content_type = "text/html; charset=utf-8"
        handler.send_response(reply.status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(payload)))
        for name, value in reply.headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(payload)

    def _answer_api(self, method: str, query: str, headers: dict[str, str], body: bytes) -> Reply:
        params, parse_error = _parse_params(query, headers.get("content-type", ""), body)
        call = Call(method, params, headers, self._clock(), path=f"/api/{method}")
        with self._cond:
            delay = self._delay_for(method)
        return self._record_and_answer(
            call, lambda: parse_error or self._intercept(call) or self._run(call), delay=delay
        )

    def _record_and_answer(
        self, call: Call, answer: Callable[[], Reply], *, delay: float = 0.0
    ) -> Reply:
        if delay > 0:
            with self._cond:
                self.calls.append(call)  # in flight until the delay is over
                self._cond.notify_all()
            self._stopping.wait(delay)  # outside the lock: other calls go on meanwhile
            with self._cond:
                return self._answer(call, answer)
        with self._cond:
            self.calls.append(call)  # recorded before answering, whatever the answer
            return self._answer(call, answer)

    def _answer(self, call: Call, answer: Callable[[], Reply]) -> Reply:
        """Answer a recorded call (with the lock held) and wake whoever waits for it."""
        try:
            reply = answer()
        except Exception as exc:
            # A bug in the fake must not look like a dropped connection, nor leave
            # wait_for() hanging on a call that never finishes.
            reply = Reply(
                status=500,
                json={"ok": False, "error": "internal_error", "detail": f"fake bug: {exc!r}"},
            )
        call.status = None if reply.disconnect else reply.status
        call.response = reply.json
        call.done = True
        self._cond.notify_all()
        return reply

    def _run(self, call: Call) -> Reply:
        """Carry out a Web API call on the workspace and answer it as Slack does."""
        implementation = self._methods().get(call.method)
        if implementation is None:
            return Reply(json={"ok": False, "error": "unknown_method"})
        auth_error = self._auth_error(call)
        if auth_error:
            return Reply(json={"ok": False, "error": auth_error})
        if call.method == "chat.postMessage" and self.enforce_pacing:
            throttled = self._pace(call.params)
            if throttled:
                return throttled
        try:
            result = implementation(call.params)
        except _ApiError as exc:
            return Reply(json={"ok": False, "error": exc.error, **exc.extra})
        reply = Reply(json={"ok": True, **result})
        if call.method == "auth.test":
            reply.headers["x-oauth-scopes"] = ",".join(self.scopes)
        return reply

    def _auth_error(self, call: Call) -> str | None:
        header = call.headers.get("authorization", "")
        token = header[len("Bearer ") :].strip() if header.startswith("Bearer ") else ""
        token = token or str(call.params.get("token") or "")
        if not token:
            return "not_authed"
        if call.method in APP_TOKEN_METHODS:
            if token == self.app_token:
                return None
            # A bot or user token is refused for its type before anything else is checked.
            return "not_allowed_token_type" if token.startswith("xox") else "invalid_auth"
        if token == self.app_token:
            return "not_allowed_token_type"
        if token != self.bot_token:
            return "invalid_auth"
        return self._token_state

    def _pace(self, params: dict[str, Any]) -> Reply | None:
        channel = self._resolve_channel(str(params.get("channel") or ""))
        if channel is None:
            return None  # let chat.postMessage answer channel_not_found
        last = self._last_post.get(channel.id)
        if last is not None and self._clock() - last < PACING_INTERVAL:
            self._ratelimited_count += 1
            return ratelimited(1)
        return None

    def _methods(self) -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
        return {
            "apps.connections.open": self._apps_connections_open,
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.delete": self._chat_delete,
            "chat.getPermalink": self._chat_get_permalink,
            "chat.scheduleMessage": self._chat_schedule_message,
            "chat.deleteScheduledMessage": self._chat_delete_scheduled_message,
            "conversations.join": self._conversations_join,
            "conversations.open": self._conversations_open,
            "conversations.info": self._conversations_info,
            "conversations.history": self._conversations_history,
            "conversations.replies": self._conversations_replies,
            "usergroups.users.list": self._usergroups_users_list,
            "users.info": self._users_info,
            "views.publish": self._views_publish,
            "views.open": self._views_open,
        }

    # ---- Web API methods ------------------------------------------------------------------------

    def _apps_connections_open(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"url": self.socket.new_connection_url()}

    def _auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": f"{PERMALINK_BASE}/",
            "team": "Fake Workspace",
            "user": self._users[self.bot_user_id].name,
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _chat_post_message(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._postable_channel(params.get("channel"))
        text, blocks = _content(params, max_text=MAX_POST_TEXT)
        metadata = _metadata(params.get("metadata"))
        thread_ts = _optional_str(params.get("thread_ts"))
        message = self._store_message(
            channel.id,
            text=text,
            blocks=blocks or [],
            thread_ts=thread_ts,
            metadata=metadata or None,
            user=self.bot_user_id,
            bot_id=self.bot_id,
        )
        # Slack ignores reply_broadcast on a top-level message.
        message.broadcast = bool(thread_ts) and _truthy(params.get("reply_broadcast"))
        self._last_post[channel.id] = self._clock()
        return {
            "channel": channel.id,
            "ts": message.ts,
            "message": self._message_json(message, include_metadata=True),
        }

    def _chat_update(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channels.get(str(params.get("channel") or ""))
        if channel is None or (channel.is_private and not channel.is_member):
            raise _ApiError("channel_not_found")
        if channel.is_archived:
            raise _ApiError("is_inactive")  # what chat.update answers for archived channels
        message = self._find_message(channel.id, str(params.get("ts") or ""))
        if message is None:
            raise _ApiError("message_not_found")
        if message.bot_id != self.bot_id:
            raise _ApiError("cant_update_message")
        text, blocks = _content(params, max_text=MAX_UPDATE_TEXT, current=message)
        metadata = _metadata(params.get("metadata"))
        # Omitted text/blocks/metadata are kept, like Slack; {} metadata removes it.
        message.text = text
        if blocks is not None:
            message.blocks = blocks
        if metadata is not None:
            message.metadata = metadata or None
        message.updates += 1
        message.edited_ts = self._next_ts()
        self._touch(message)
        return {
            "channel": channel.id,
            "ts": message.ts,
            "text": message.text,
            "message": self._message_json(message, include_metadata=True),
        }

    def _chat_post_ephemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._postable_channel(params.get("channel"))
        user = str(params.get("user") or "")
        if not self._is_in_channel(user, channel):
            raise _ApiError("user_not_in_channel")
        text, blocks = _content(params, max_text=MAX_POST_TEXT)
        message_ts = self._next_ts()
        self._ephemerals.append(
            {
                "channel": channel.id,
                "user": user,
                "text": text,
                "blocks": blocks or [],
                "thread_ts": _optional_str(params.get("thread_ts")),
                "message_ts": message_ts,
                "source": "chat.postEphemeral",
                "for_message_ts": None,
            }
        )
        self._touch_ephemeral(message_ts)
        return {"message_ts": message_ts}

    def _chat_delete(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._readable_channel(params.get("channel"), require_member=False)
        ts = str(params.get("ts") or "")
        message = self._find_message(channel.id, ts)
        if message is None:
            raise _ApiError("message_not_found")
        if message.bot_id != self.bot_id:
            raise _ApiError("cant_delete_message")
        self._delete_message(message)
        return {"channel": channel.id, "ts": ts}

    def _chat_get_permalink(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._readable_channel(params.get("channel"), require_member=False)
        message = self._find_message(channel.id, str(params.get("message_ts") or ""))
        if message is None:
            raise _ApiError("message_not_found")
        permalink = f"{PERMALINK_BASE}/archives/{channel.id}/p{message.ts.replace('.', '')}"
        if message.thread_ts:
            permalink += f"?thread_ts={message.thread_ts}&cid={channel.id}"
        return {"channel": channel.id, "permalink": permalink}

    def _chat_schedule_message(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._postable_channel(params.get("channel"))
        try:
            post_at = int(params.get("post_at"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise _ApiError("invalid_time") from None
        now = self._clock()
        if post_at <= now:
            raise _ApiError("time_in_past")
        if post_at > now + SCHEDULE_HORIZON:
            raise _ApiError("time_too_far")
        text, blocks = _content(params, max_text=MAX_POST_TEXT)
        metadata = _metadata(params.get("metadata"))
        scheduled_id = f"Q{self._next_id():010d}"
        self._scheduled.append(
            {
                "id": scheduled_id,
                "channel": channel.id,
                "post_at": post_at,
                "text": text,
                "blocks": blocks or [],
                "thread_ts": _optional_str(params.get("thread_ts")),
                "metadata": metadata or None,
            }
        )
        return {
            "channel": channel.id,
            "scheduled_message_id": scheduled_id,
            "post_at": post_at,
            "message": {
                "type": "delayed_message",
                "subtype": "bot_message",
                "text": text,
                "blocks": blocks or [],
                "bot_id": self.bot_id,
                "user": self.bot_user_id,
            },
        }

    def _chat_delete_scheduled_message(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._readable_channel(params.get("channel"), require_member=False)
        wanted = params.get("scheduled_message_id")
        for item in self._scheduled:
            if item["id"] == wanted and item["channel"] == channel.id:
                self._scheduled.remove(item)
                return {}
        raise _ApiError("invalid_scheduled_message_id")

    def _conversations_join(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channels.get(str(params.get("channel") or ""))
        if channel is None or (channel.is_private and not channel.is_member):
            raise _ApiError("channel_not_found")
        if channel.is_private:
            raise _ApiError("method_not_supported_for_channel_type")
        if channel.is_archived:
            raise _ApiError("is_archived")
        if channel.is_member:
            return {
                "channel": self._channel_json(channel),
                "warning": "already_in_channel",
                "response_metadata": {"warnings": ["already_in_channel"]},
            }
        channel.is_member = True
        return {"channel": self._channel_json(channel)}

    def _conversations_open(self, params: dict[str, Any]) -> dict[str, Any]:
        """The bot's direct-message conversation with one user (`users`), opened if need be."""
        users = [u for u in str(params.get("users") or "").split(",") if u]
        if not users:
            raise _ApiError("users_list_not_supplied")
        if len(users) > 1:
            raise _ApiError("not_enough_users")  # a group DM: not something this bot opens
        user = self._users.get(users[0])
        if user is None:
            raise _ApiError("user_not_found")
        if user.is_bot:
            raise _ApiError("cannot_dm_bot")
        dm_id = "D" + user.id[1:]
        if dm_id not in self._channels:
            self._channels[dm_id] = _Channel(
                id=dm_id,
                name=dm_id,
                is_private=True,
                is_archived=False,
                is_member=True,
                members={user.id},
                created=int(self._clock()),
            )
        return {"channel": {"id": dm_id}}

    def _conversations_info(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._readable_channel(params.get("channel"), require_member=False)
        return {"channel": self._channel_json(channel)}

    def _conversations_history(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._readable_channel(params.get("channel"))
        top_level = [m for m in self._messages.get(channel.id, []) if m.thread_ts is None]
        window = _in_window(top_level, params)
        newest_first = list(reversed(window))
        cursor = _decode_cursor(params.get("cursor"))
        if cursor is not None:
            newest_first = [m for m in newest_first if _ts_key(m.ts) <= cursor]
        return self._page(newest_first, params)

    def _conversations_replies(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._readable_channel(params.get("channel"))
        ts = str(params.get("ts") or "")
        parent = self._find_message(channel.id, ts)
        if parent is None:
            raise _ApiError("thread_not_found")
        if parent.thread_ts is not None:
            thread = [parent]  # the ts of a reply names just that reply
        else:
            replies = [m for m in self._messages[channel.id] if m.thread_ts == parent.ts]
            # The parent always comes first; oldest/latest only narrow the replies.
            thread = [parent, *_in_window(replies, params)]
        cursor = _decode_cursor(params.get("cursor"))
        if cursor is not None:
            thread = [m for m in thread if _ts_key(m.ts) >= cursor]
        return self._page(thread, params)

    def _page(self, ordered: list[Message], params: dict[str, Any]) -> dict[str, Any]:
        try:
            limit = int(params.get("limit") or 100)
        except (TypeError, ValueError):
            limit = 100
        limit = min(max(limit, 1), 999)
        include_metadata = _truthy(params.get("include_all_metadata"))
        page = ordered[:limit]
        result: dict[str, Any] = {
            "messages": [self._message_json(m, include_metadata=include_metadata) for m in page],
            "has_more": len(ordered) > limit,
            "pin_count": 0,
        }
        if len(ordered) > limit:
            result["response_metadata"] = {"next_cursor": _encode_cursor(ordered[limit].ts)}
        return result

    def _usergroups_users_list(self, params: dict[str, Any]) -> dict[str, Any]:
        group = self._usergroups.get(str(params.get("usergroup") or ""))
        if group is None:
            raise _ApiError("no_such_subteam")
        return {"users": list(group[1])}

    def _users_info(self, params: dict[str, Any]) -> dict[str, Any]:
        user = self._users.get(str(params.get("user") or ""))
        if user is None:
            raise _ApiError("user_not_found")
        return {
            "user": {
                "id": user.id,
                "team_id": self.team_id,
                "name": user.name,
                "real_name": user.name.title(),
                "deleted": False,
                "is_bot": user.is_bot,
                "is_app_user": False,
                "tz": "UTC",
                "profile": {"real_name": user.name.title(), "display_name": user.name},
            }
        }

    def _views_publish(self, params: dict[str, Any]) -> dict[str, Any]:
        user_id = str(params.get("user_id") or "")
        if user_id not in self._users:
            raise _ApiError("user_not_found")
        view = _view(params.get("view"), kind="home")
        published = self._view_json(view)
        self._home_views[user_id] = published
        return {"view": published}

    def _views_open(self, params: dict[str, Any]) -> dict[str, Any]:
        trigger_id = str(params.get("trigger_id") or "")
        if not trigger_id:
            raise _ApiError(
                "invalid_arguments",
                response_metadata={"messages": ["[ERROR] missing required field: trigger_id"]},
            )
        if trigger_id in self._used_triggers:
            raise _ApiError("exchanged_trigger_id")
        minted_at = self._triggers.get(trigger_id)
        if minted_at is not None and self._clock() - minted_at > TRIGGER_LIFETIME:
            raise _ApiError("expired_trigger_id")
        view = _view(params.get("view"), kind="modal")
        self._used_triggers.add(trigger_id)
        opened = self._view_json(view)
        self._opened_views.append(opened)
        self._view_openings.append(
            {
                "view": copy.deepcopy(opened),
                "trigger_id": trigger_id,
                "user": self._trigger_users.get(trigger_id),
            }
        )
        self._bump()  # a watcher (the sandbox page) shows the modal to its person
        return {"view": opened}

    # ---- state helpers (called with the lock held) ----------------------------------------------

    def _next_id(self) -> int:
        self._id_counter += 1
        return self._id_counter

    def _next_ts(self) -> str:
        # Wall-clock seconds + a per-server counter in the fraction: unique and strictly
        # increasing even when many messages land in the same second or the clock steps back.
        second = max(int(self._clock()), self._ts_second)
        self._ts_counter += 100
        if self._ts_counter > 999_999:
            second, self._ts_counter = max(second, self._ts_second + 1), 100
        self._ts_second = second
        return f"{second}.{self._ts_counter:06d}"

    def _resolve_channel(self, raw: str) -> _Channel | None:
        if raw in self._channels:
            return self._channels[raw]
        name = raw.removeprefix("#")
        return next((c for c in self._channels.values() if c.name == name), None)

    def _postable_channel(self, raw: Any) -> _Channel:
        channel = self._resolve_channel(str(raw or ""))
        if channel is None or (channel.is_private and not channel.is_member):
            raise _ApiError("channel_not_found")
        if channel.is_archived:
            raise _ApiError("is_archived")
        if not channel.is_member:
            # Real Slack lets bots with chat:write.public post anyway; this bot lacks that scope.
            raise _ApiError("not_in_channel")
        return channel

    def _readable_channel(self, raw: Any, *, require_member: bool = True) -> _Channel:
        channel = self._channels.get(str(raw or ""))
        if channel is None or (channel.is_private and not channel.is_member):
            raise _ApiError("channel_not_found")
        if require_member and not channel.is_member:
            raise _ApiError("not_in_channel")
        return channel

    def _is_in_channel(self, user: str, channel: _Channel) -> bool:
        if user not in self._users:
            return False
        return channel.members is None or user in channel.members

    def _store_message(
        self,
        channel: str,
        *,
        text: str,
        blocks: list[dict[str, Any]],
        thread_ts: str | None,
        metadata: dict[str, Any] | None,
        user: str | None,
        bot_id: str | None,
    ) -> Message:
        message = Message(
            channel=channel,
            ts=self._next_ts(),
            text=text,
            blocks=blocks,
            thread_ts=thread_ts,
            metadata=metadata,
            user=user,
            bot_id=bot_id,
        )
        self._messages.setdefault(channel, []).append(message)
        self._touch(message)
        if thread_ts:
            parent = self._find_message(channel, thread_ts)
            if parent is not None and parent.thread_ts is None:
                parent.reply_count += 1
                self._touch(parent)
        return message

    def _find_message(self, channel: str, ts: str) -> Message | None:
        return next((m for m in self._messages.get(channel, []) if m.ts == ts), None)

    def _delete_message(self, message: Message) -> None:
        self._messages[message.channel].remove(message)
        key = (message.channel, message.ts)
        self._touched.pop(key, None)
        self._deleted[key] = self._bump()
        if message.thread_ts:
            parent = self._find_message(message.channel, message.thread_ts)
            if parent is not None and parent.thread_ts is None:
                parent.reply_count -= 1
                self._touch(parent)

    def _bump(self) -> int:
        self._revision += 1
        self._cond.notify_all()
        return self._revision

    def _touch(self, message: Message) -> None:
        self._touched[(message.channel, message.ts)] = self._bump()

    def _touch_ephemeral(self, message_ts: str) -> None:
        self._touched_ephemerals[message_ts] = self._bump()

    def _find_ephemeral(self, message_ts: str) -> dict[str, Any] | None:
        return next((e for e in self._ephemerals if e["message_ts"] == message_ts), None)

    def _message_json(self, message: Message, *, include_metadata: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "message",
            "user": message.user,
            "text": message.text,
            "ts": message.ts,
            "team": self.team_id,
        }
        if message.bot_id:
            out["bot_id"] = message.bot_id
            out["app_id"] = self.app_id
        if message.blocks:
            out["blocks"] = copy.deepcopy(message.blocks)
        if message.thread_ts:
            out["thread_ts"] = message.thread_ts
            parent = self._find_message(message.channel, message.thread_ts)
            if parent is not None:
                out["parent_user_id"] = parent.user
        elif message.reply_count:
            replies = [m for m in self._messages[message.channel] if m.thread_ts == message.ts]
            out["thread_ts"] = message.ts
            out["reply_count"] = message.reply_count
            out["reply_users"] = sorted({m.user for m in replies if m.user})
            out["latest_reply"] = replies[-1].ts if replies else message.ts
        if message.broadcast:
            out["subtype"] = "thread_broadcast"
        if message.edited_ts:
            out["edited"] = {"user": message.user, "ts": message.edited_ts}
        if include_metadata and message.metadata:
            out["metadata"] = copy.deepcopy(message.metadata)
        return out

    def _channel_json(self, channel: _Channel) -> dict[str, Any]:
        return {
            "id": channel.id,
            "name": channel.name,
            "name_normalized": channel.name,
            "is_channel": True,
            "is_group": False,
            "is_im": False,
            "is_mpim": False,
            "is_private": channel.is_private,
            "is_archived": channel.is_archived,
            "is_general": False,
            "is_shared": False,
            "is_ext_shared": False,
            "is_org_shared": False,
            "is_member": channel.is_member,
            "created": channel.created,
            "context_team_id": self.team_id,
        }

    def _view_json(self, view: dict[str, Any]) -> dict[str, Any]:
        return {
            **copy.deepcopy(view),
            "id": f"V{self._next_id():010d}",
            "team_id": self.team_id,
            "app_id": self.app_id,
            "bot_id": self.bot_id,
            "state": {"values": {}},
            "hash": f"{int(self._clock())}.{secrets.token_hex(4)}",
            "private_metadata": view.get("private_metadata", ""),
            "callback_id": view.get("callback_id", ""),
            "external_id": view.get("external_id", ""),
            "clear_on_close": bool(view.get("clear_on_close", False)),
            "notify_on_close": bool(view.get("notify_on_close", False)),
            "root_view_id": None,
            "previous_view_id": None,
        }

    # ---- response_urls --------------------------------------------------------------------------

    def _answer_hook(self, hook_id: str, headers: dict[str, str], body: bytes) -> Reply:
        try:
            payload = json.loads(body.decode("utf-8") or "null")
        except (UnicodeDecodeError, ValueError):
            payload = None
        params = payload if isinstance(payload, dict) else {}
        call = Call(RESPONSE_URL_METHOD, params, headers, self._clock(), path=f"/hooks/{hook_id}")
        return self._record_and_answer(
            call, lambda: self._intercept(call) or self._hook_reply(hook_id, payload)
        )

    def _hook_reply(self, hook_id: str, payload: Any) -> Reply:
        hook = self._hooks.get(hook_id)
        if hook is None:
            return Reply(status=404, json={"ok": False, "error": "no_service"})
        if self._clock() - hook.created > RESPONSE_URL_LIFETIME:
            return Reply(status=404, json={"ok": False, "error": "expired_url"})
        if hook.uses >= RESPONSE_URL_USES:
            return Reply(status=404, json={"ok": False, "error": "used_url"})
        if not isinstance(payload, dict):
            return Reply(status=400, json={"ok": False, "error": "invalid_payload"})
        deleting = _truthy(payload.get("delete_original"))
        try:
            text, blocks = _content(payload, max_text=MAX_POST_TEXT, allow_empty=deleting)
            metadata = _metadata(payload.get("metadata"))
        except _ApiError as exc:
            return Reply(status=400, json={"ok": False, "error": exc.error, **exc.extra})
        hook.uses += 1
        self._responses.append((hook.url, copy.deepcopy(payload)))
        self._apply_response(hook, payload, text, blocks, metadata)
        return Reply(json={"ok": True})

    def _apply_response(
        self,
        hook: _ResponseUrl,
        payload: dict[str, Any],
        text: str,
        blocks: list[dict[str, Any]] | None,
        metadata: dict[str, Any] | None,
    ) -> None:
        """Do to the workspace what Slack does with a response_url answer."""
        if hook.channel is None:
            return
        original = self._find_message(hook.channel, hook.message_ts) if hook.message_ts else None
        # A response_url minted for a click on an ephemeral message acts on that ephemeral.
        ephemeral = (
            self._find_ephemeral(hook.message_ts) if original is None and hook.message_ts else None
        )
        if _truthy(payload.get("delete_original")):
            if original is not None:
                self._delete_message(original)
            elif ephemeral is not None:
                self._ephemerals.remove(ephemeral)
                self._touched_ephemerals.pop(ephemeral["message_ts"], None)
                self._deleted_ephemerals[ephemeral["message_ts"]] = self._bump()
        elif _truthy(payload.get("replace_original")):
            if original is not None:
                original.text = text
                original.blocks = blocks or []
                original.updates += 1
                original.edited_ts = self._next_ts()
                self._touch(original)
            elif ephemeral is not None:
                ephemeral["text"] = text
                ephemeral["blocks"] = blocks or []
                self._touch_ephemeral(ephemeral["message_ts"])
        elif payload.get("response_type") == "in_channel":
            self._store_message(
                hook.channel,
                text=text,
                blocks=blocks or [],
                thread_ts=_optional_str(payload.get("thread_ts")),
                metadata=metadata or None,
                user=self.bot_user_id,
                bot_id=self.bot_id,
            )
        else:
            self._ephemerals.append(
                {
                    "channel": hook.channel,
                    "user": hook.user,
                    "text": text,
                    "blocks": blocks or [],
                    "thread_ts": _optional_str(payload.get("thread_ts")) or hook.thread_ts,
                    "message_ts": self._next_ts(),
                    "source": RESPONSE_URL_METHOD,
                    "for_message_ts": hook.message_ts,
                }
            )
            self._touch_ephemeral(self._ephemerals[-1]["message_ts"])


# --------------------------------------------------------------------------------------------
# Request parsing and answer building
# --------------------------------------------------------------------------------------------


def _parse_params(
    query: str, content_type: str, body: bytes
) -> tuple[dict[str, Any], Reply | None]:
    """Query string, then JSON, form or empty body on top (slack_sdk sends all three)."""
    params: dict[str, Any] = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return params, Reply(json={"ok": False, "error": "invalid_form_data"})
    if not text.strip():
        return params, None  # slack_sdk's no-param calls: empty body, JSON content type
    media_type = content_type.split(";")[0].strip().lower()
    if media_type == "application/json" or (not media_type and text.lstrip().startswith("{")):
        try:
            data = json.loads(text)
        except ValueError:
            return params, Reply(json={"ok": False, "error": "invalid_json"})
        if not isinstance(data, dict):
            return params, Reply(json={"ok": False, "error": "invalid_json"})
        params.update(data)
    else:
        params.update(urllib.parse.parse_qsl(text, keep_blank_values=True))
    return params, None


def ratelimited(retry_after: int | str, *, error: str = "ratelimited") -> Reply:
    """Slack's 429: ``{"ok": false, "error": error}`` with ``Retry-After`` sent as written."""
    return Reply(
        status=429,
        json={"ok": False, "error": error},
        headers={"Retry-After": str(retry_after)},
    )


def _content(
    params: dict[str, Any],
    *,
    max_text: int,
    current: Message | None = None,
    allow_empty: bool = False,
) -> tuple[str, list[dict[str, Any]] | None]:
    """Validate text/blocks like Slack. Blocks are None when omitted (chat.update keeps them)."""
    raw_text = params.get("text")
    text = str(raw_text) if raw_text is not None else (current.text if current else "")
    raw_blocks = params.get("blocks")
    blocks: list[dict[str, Any]] | None = None
    if raw_blocks not in (None, ""):
        blocks = _json_field(raw_blocks, "invalid_blocks_format")
        if not isinstance(blocks, list):
            raise _ApiError("invalid_blocks_format")
    shown_blocks = blocks if blocks is not None else (current.blocks if current else [])
    if not text and not shown_blocks and not params.get("attachments") and not allow_empty:
        raise _ApiError("no_text")
    if blocks:
        problems = block_kit_errors(blocks)
        if problems:
            raise _ApiError("invalid_blocks", response_metadata={"messages": problems})
    if len(text) > max_text:
        raise _ApiError("msg_too_long")
    return text, blocks


def _metadata(raw: Any) -> dict[str, Any] | None:
    """None when omitted, {} to remove, else a checked ``{event_type, event_payload}``."""
    if raw in (None, ""):
        return None
    metadata = _json_field(raw, "invalid_metadata_format")
    if metadata == {}:
        return {}
    if (
        not isinstance(metadata, dict)
        or not isinstance(metadata.get("event_type"), str)
        or not metadata["event_type"]
        or not isinstance(metadata.get("event_payload"), dict)
    ):
        raise _ApiError("invalid_metadata_format")
    return {"event_type": metadata["event_type"], "event_payload": metadata["event_payload"]}


def _view(raw: Any, *, kind: str) -> dict[str, Any]:
    view = _json_field(raw, "invalid_arguments")
    if isinstance(view, dict) and len(json.dumps(view)) > MAX_VIEW_BYTES:
        raise _ApiError("view_too_large")
    problems = view_errors(view, kind=kind)
    if problems:
        raise _ApiError("invalid_arguments", response_metadata={"messages": problems})
    return view


def view_errors(view: Any, *, kind: str = "modal") -> list[str]:
    """Say why Slack would answer ``invalid_arguments`` to `view` (``views.open``,
    ``views.publish``, a ``response_action`` of ``update`` or ``push``); ``[]`` when it would
    accept it.

    A modal's title, submit and close are plain_text of at most 24 characters (title required,
    submit required with input blocks), its private_metadata at most 3000 characters, its
    callback_id at most 255, and a view holds at most 100 blocks. Messages look like Slack's
    (``"[ERROR] must be less than 25 characters [json-pointer:/view/title/text]"``).
    """
    if not isinstance(view, dict):
        return ["[ERROR] missing required field: view"]
    problems: list[str] = []
    if view.get("type") != kind:
        problems.append(f"[ERROR] view type must be {kind} [json-pointer:/view/type]")
    if kind == "modal":
        for name in ("title", "submit", "close"):
            value = view.get(name)
            if value is None and name != "title":
                continue
            if not _is_text_object(value, "plain_text"):
                problems.append(
                    f"[ERROR] missing required field: {name} [json-pointer:/view/{name}]"
                    if value is None
                    else f"[ERROR] must provide a plain_text object [json-pointer:/view/{name}]"
                )
            elif len(value["text"]) > MAX_VIEW_LABEL:
                problems.append(
                    f"[ERROR] must be less than {MAX_VIEW_LABEL + 1} characters "
                    f"[json-pointer:/view/{name}/text]"
                )
        blocks = view.get("blocks")
        has_input = isinstance(blocks, list) and any(
            isinstance(b, dict) and b.get("type") == "input" for b in blocks
        )
        if has_input and view.get("submit") is None:
            problems.append(
                "[ERROR] a view with input blocks must have a submit [json-pointer:/view/submit]"
            )
    for name, limit in (("private_metadata", MAX_PRIVATE_METADATA), ("callback_id", 255)):
        value = view.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            problems.append(f"[ERROR] must provide a string [json-pointer:/view/{name}]")
        elif len(value) > limit:
            problems.append(
                f"[ERROR] must be less than {limit + 1} characters [json-pointer:/view/{name}]"
            )
    problems.extend(
        block_kit_errors(
            view.get("blocks", []), max_blocks=MAX_SURFACE_BLOCKS, pointer="/view/blocks"
        )
    )
    return problems


def _json_field(value: Any, error: str) -> Any:
    # JSON bodies carry lists/objects; form bodies carry the same as JSON strings.
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise _ApiError(error) from None
    return value


def _optional_str(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def _truthy(value: Any) -> bool:
    # slack_sdk turns form booleans into "1"/"0"; JSON bodies carry real booleans.
    return str(value).lower() in ("1", "true")


def _ts_key(ts: str) -> Decimal:
    # Decimal, not float: "1700000000.000100" has more digits than a float keeps exactly.
    return Decimal(ts)


def _parse_ts(value: Any, error: str) -> Decimal | None:
    if value in (None, ""):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise _ApiError(error) from None


def _in_window(messages: list[Message], params: dict[str, Any]) -> list[Message]:
    """`oldest`/`latest` bounds, exclusive unless `inclusive` is set, as in Slack."""
    oldest = _parse_ts(params.get("oldest"), "invalid_ts_oldest")
    latest = _parse_ts(params.get("latest"), "invalid_ts_latest")
    inclusive = _truthy(params.get("inclusive"))
    kept = []
    for message in messages:
        key = _ts_key(message.ts)
        if oldest is not None and (key < oldest or (key == oldest and not inclusive)):
            continue
        if latest is not None and (key > latest or (key == latest and not inclusive)):
            continue
        kept.append(message)
    return kept


def _encode_cursor(ts: str) -> str:
    # Slack's cursors look like this too: base64 of "next_ts:<ts without the dot>".
    return base64.b64encode(f"next_ts:{ts}".encode()).decode()


def _decode_cursor(value: Any) -> Decimal | None:
    if value in (None, ""):
        return None
    try:
        decoded = base64.b64decode(str(value), validate=True).decode()
        prefix, _, ts = decoded.partition(":")
        if prefix != "next_ts":
            raise ValueError(decoded)
        return Decimal(ts)
    except (binascii.Error, UnicodeDecodeError, ValueError, InvalidOperation):
        raise _ApiError("invalid_cursor") from None


def _describe(call: Call) -> str:
    if not call.done:
        outcome = "in flight"
    elif call.status is None:
        outcome = "dropped"
    elif call.ok:
        outcome = "ok"
    else:
        outcome = f"{call.status} {call.error or ''}".strip()
    return f"{call.method} ({outcome})"
