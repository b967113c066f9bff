"""Slack's Socket Mode for the fake Slack: a real websocket server on loopback that the Bolt app's
``SocketModeHandler`` connects to, which delivers envelopes and collects their acknowledgements.

`FakeSlack` owns one, as ``fake.socket``. Its Web API method ``apps.connections.open`` (called
with the app-level token, ``xapp-…``) answers a fresh ``ws://127.0.0.1:PORT/link/?ticket=…`` URL;
a ticket is good for one handshake, and a ticket never issued or already used is refused with
HTTP 401 before any websocket opens. The server starts with the first such URL (or `start()`) and
stops with the fake.

On the wire it speaks what Slack's own Socket Mode servers speak:

- on connect, ``{"type": "hello", "num_connections": N, "debug_info": {…}, "connection_info":
  {"app_id": …}}``;
- then envelopes, ``{"envelope_id", "type", "payload", "accepts_response_payload",
  "retry_attempt", "retry_reason"}``, with type ``events_api``, ``interactive`` or
  ``slash_commands``; the payload is what Slack would have posted over HTTP, as a dict (the
  ``*_payload`` builders of `bot.sandbox.slack_requests`);
- the app acknowledges each with ``{"envelope_id": …, "payload": {…}}`` (payload optional; Slack
  reads it only where ``accepts_response_payload`` is true: slash commands, view submissions and
  block suggestions, where it is the answer an HTTP response body would carry);
- ``{"type": "disconnect", "reason": …}`` asks the app to go (``warning``,
  ``refresh_requested``, ``link_disabled``): Slack's client opens a new connection, then closes
  the old one.

Envelopes are spread over the open connections in turn (Slack allows an app up to 10 at once;
an 11th handshake is refused with HTTP 403 here). The fake's assumption about an envelope not
acknowledged within `ack_timeout` seconds (3, as Slack's): it is delivered again, on whichever
connection is open, with ``retry_attempt`` one higher and ``retry_reason: "timeout"``, up to 3
retries; one whose connection is gone meanwhile waits until another opens.

Dropping a connection abruptly is a failure tests script (tests/support/faults.py); here the
connections only end as Slack ends them: a close frame when the fake stops.
"""

from __future__ import annotations

import contextlib
import copy
import json
import secrets
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.sync.server import Server, ServerConnection, serve

if TYPE_CHECKING:
    from bot.sandbox.slack import FakeSlack

__all__ = [
    "ACK_TIMEOUT",
    "DISCONNECT_REASONS",
    "ENVELOPE_TYPES",
    "NotConnected",
    "SocketModeServer",
    "slack_accepts_response_payload",
]

ENVELOPE_TYPES = ("events_api", "interactive", "slash_commands")
DISCONNECT_REASONS = ("warning", "refresh_requested", "link_disabled")
ACK_TIMEOUT = 3.0  # seconds Slack waits for an envelope's acknowledgement
# Slack's servers ping their clients too. slack_sdk's builtin client reads with a 3 s timeout while
# holding the lock its close() needs, so a quiet connection takes it up to 3 s to close; a ping
# every half second wakes its reader and lets it close (or swap connections) in well under 1 s.
PING_INTERVAL = 0.5
MAX_RETRIES = 3
MAX_CONNECTIONS = 10
LINK_PATH = "/link/"
DEBUG_HOST = "applink-fake"
APPROXIMATE_CONNECTION_TIME = 18_060  # seconds Slack means to keep a connection, says its hello
# Interactive payloads whose acknowledgement carries the app's answer (a response_action, options).
_ANSWERED_INTERACTIONS = ("view_submission", "block_suggestion")


def slack_accepts_response_payload(type: str, payload: dict[str, Any]) -> bool:
    """Whether Slack reads the payload of the acknowledgement of an envelope of `type` carrying
    `payload`: true for slash commands, view submissions and block suggestions."""
    if type == "slash_commands":
        return True
    return type == "interactive" and payload.get("type") in _ANSWERED_INTERACTIONS


class NotConnected(RuntimeError):
    """`SocketModeServer.send` found no open connection to deliver on (Slack would tell the
    person who acted ``dispatch_failed``)."""


@dataclass
class _Link:
    """One open websocket, numbered 1, 2 … in the order connections opened."""

    connection: ServerConnection
    number: int
    leaving: bool = False  # told to disconnect: new envelopes go elsewhere while others are open


@dataclass
class _Envelope:
    id: str
    type: str
    payload: dict[str, Any]
    accepts_response_payload: bool
    deliveries: list[int] = field(default_factory=list)  # retry_attempt of each delivery
    delivered_on: list[int] = field(default_factory=list)  # link number of each delivery
    acks: list[dict[str, Any]] = field(default_factory=list)  # each ack's payload ({} if none)
    due: float | None = None  # monotonic time the ack is due by; None once acked or given up


class SocketModeServer:
    """The Socket Mode side of a `FakeSlack`: connections, envelopes, acknowledgements.

    Thread-safe, under the fake's own lock: the test thread sends and waits while the server's
    threads (one per connection, one for redeliveries) receive acknowledgements.
    """

    def __init__(
        self,
        fake: FakeSlack,
        *,
        ack_timeout: float = ACK_TIMEOUT,
        max_retries: int = MAX_RETRIES,
        ping_interval: float | None = PING_INTERVAL,
    ) -> None:
        """Serve `fake`'s Socket Mode; nothing listens until `start()` or the first URL.

        `ping_interval`: seconds between the server's pings (None: none), read at `start()`.
        """
        self.fake = fake
        self.ack_timeout = ack_timeout  # read at each delivery, so it may be changed any time
        self.max_retries = max_retries
        self.ping_interval = ping_interval
        self._cond = fake._cond  # one lock for the whole fake: its revision counts our changes
        self._server: Server | None = None
        self._threads: list[threading.Thread] = []
        self._running = False
        self._tickets: set[str] = set()  # issued and not used yet
        self._links: list[_Link] = []
        self._opened = 0
        self._turn = 0  # round-robin position over the open connections
        self._envelopes: dict[str, _Envelope] = {}

    # ---- lifecycle ------------------------------------------------------------------------------

    def start(self) -> SocketModeServer:
        """Listen on 127.0.0.1 (any free port) and serve on daemon threads; returns self."""
        with self._cond:
            if self._server is not None:
                return self
            server = serve(
                self._serve_connection,
                "127.0.0.1",
                0,
                process_request=self._check_handshake,
                compression=None,  # Slack's clients negotiate no permessage-deflate
                ping_interval=self.ping_interval,
                close_timeout=1,
            )
            self._server = server
            self._running = True
            port = self.port
            self._threads = [
                threading.Thread(
                    target=server.serve_forever, name=f"fake-slack-socket:{port}", daemon=True
                ),
                threading.Thread(
                    target=self._redeliver_forever,
                    name=f"fake-slack-socket-retries:{port}",
                    daemon=True,
                ),
            ]
            for thread in self._threads:
                thread.start()
        return self

    def stop(self) -> None:
        """Close every connection (code 1001, as Slack's servers going away) and stop serving.
        Safe to call twice, and when never started.

        A client still running reconnects through ``apps.connections.open``, which would start
        the server again: `FakeSlack.stop()` stops the Web API first, then this."""
        with self._cond:
            server, threads = self._server, self._threads
            self._server, self._threads, self._running = None, [], False
            self._tickets.clear()
            self._cond.notify_all()
        if server is not None:
            # Outside the lock: it waits for the connection threads, which take the lock to end.
            server.shutdown()
        for thread in threads:
            thread.join(timeout=5)

    @property
    def port(self) -> int:
        """The TCP port of the websocket server (only once started)."""
        if self._server is None:
            raise RuntimeError("the Socket Mode server is not started")
        return int(self._server.socket.getsockname()[1])

    def new_connection_url(self) -> str:
        """What ``apps.connections.open`` answers: a ws:// URL with a fresh one-time ticket.
        Starts the server if need be; refused (RuntimeError) while the fake is stopping."""
        with self._cond:
            if self.fake._stopping.is_set():
                raise RuntimeError("the fake Slack is stopping")
            self.start()
            ticket = secrets.token_urlsafe(18)
            self._tickets.add(ticket)
            query = urllib.parse.urlencode({"ticket": ticket, "app_id": self.fake.app_id})
            return f"ws://127.0.0.1:{self.port}{LINK_PATH}?{query}"

    # ---- observation ----------------------------------------------------------------------------

    def connections(self) -> int:
        """How many connections are open (each has had its hello)."""
        with self._cond:
            return len(self._links)

    @property
    def opened(self) -> int:
        """How many connections have opened (had their hello) so far, closed ones included."""
        with self._cond:
            return self._opened

    def wait_for_connections(self, n: int, timeout: float = 10.0) -> None:
        """Block until exactly `n` connections are open; AssertionError after `timeout` s."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._links) != n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"expected {n} open Socket Mode connection(s) within {timeout:g}s, "
                        f"got {len(self._links)} ({self._opened} opened so far)"
                    )
                self._cond.wait(remaining)

    def wait_ack(self, envelope_id: str, timeout: float = 5.0) -> dict[str, Any]:
        """Block until `envelope_id` is acknowledged; return the first acknowledgement's payload
        (``{}`` when it carried none). AssertionError after `timeout` seconds, saying how often
        the envelope went out."""
        deadline = time.monotonic() + timeout
        with self._cond:
            envelope = self._envelope(envelope_id)
            while not envelope.acks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"no ack for {envelope.type} envelope {envelope_id} within "
                        f"{timeout:g}s; delivered {len(envelope.deliveries)} time(s) (retry "
                        f"attempts {envelope.deliveries}), {len(self._links)} connection(s) open"
                    )
                self._cond.wait(remaining)
            return copy.deepcopy(envelope.acks[0])

    def acks(self, envelope_id: str) -> int:
        """How many acknowledgements `envelope_id` has had (a redelivered one may get two)."""
        with self._cond:
            return len(self._envelope(envelope_id).acks)

    def deliveries(self, envelope_id: str) -> list[int]:
        """The ``retry_attempt`` of each delivery of `envelope_id` so far: ``[0]``, ``[0, 1]`` …"""
        with self._cond:
            return list(self._envelope(envelope_id).deliveries)

    def delivered_on(self, envelope_id: str) -> list[int]:
        """Which connection (numbered 1, 2 … as they opened) took each delivery."""
        with self._cond:
            return list(self._envelope(envelope_id).delivered_on)

    def reset(self) -> None:
        """Forget envelopes and their acknowledgements (no more redeliveries); connections stay."""
        with self._cond:
            self._envelopes.clear()
            self._cond.notify_all()

    # ---- what Slack sends -----------------------------------------------------------------------

    def send(
        self,
        type: str,
        payload: dict[str, Any],
        *,
        accepts_response_payload: bool | None = None,
    ) -> str:
        """Deliver an envelope of `type` (``events_api``, ``interactive``, ``slash_commands``)
        on one open connection, in turn, and return its envelope_id.

        `accepts_response_payload` defaults to Slack's (`slack_accepts_response_payload`).
        Raises NotConnected when no connection is open. Unacknowledged, it goes out again after
        `ack_timeout` seconds (see the module's docstring).
        """
        if type not in ENVELOPE_TYPES:
            raise ValueError(f"type must be one of {ENVELOPE_TYPES}, not {type!r}")
        if accepts_response_payload is None:
            accepts_response_payload = slack_accepts_response_payload(type, payload)
        envelope = _Envelope(
            str(uuid.uuid4()), type, copy.deepcopy(payload), accepts_response_payload
        )
        with self._cond:
            link = self._next_link()
            if link is None:
                raise NotConnected(f"no Socket Mode connection is open to send {type} on")
            self._envelopes[envelope.id] = envelope
            text = self._deliver(envelope, link)
        _transmit(link, text)
        return envelope.id

    def disconnect(self, reason: str = "refresh_requested") -> int:
        """Send ``{"type": "disconnect", "reason": reason}`` on every open connection; returns
        how many. New envelopes avoid those connections while another one is open."""
        if reason not in DISCONNECT_REASONS:
            raise ValueError(f"reason must be one of {DISCONNECT_REASONS}, not {reason!r}")
        message = json.dumps(
            {"type": "disconnect", "reason": reason, "debug_info": {"host": DEBUG_HOST}}
        )
        with self._cond:
            links = list(self._links)
            for link in links:
                link.leaving = True
        for link in links:
            _transmit(link, message)
        return len(links)

    def _open_connections(self) -> list[ServerConnection]:
        """The open websockets themselves, for a subclass of the fake that breaks them."""
        with self._cond:
            return [link.connection for link in self._links]

    # ---- inside (the lock held unless said otherwise) -------------------------------------------

    def _envelope(self, envelope_id: str) -> _Envelope:
        envelope = self._envelopes.get(envelope_id)
        if envelope is None:
            raise KeyError(f"no envelope {envelope_id!r} was sent (or reset() forgot it)")
        return envelope

    def _next_link(self) -> _Link | None:
        staying = [link for link in self._links if not link.leaving] or self._links
        if not staying:
            return None
        self._turn += 1
        return staying[self._turn % len(staying)]

    def _deliver(self, envelope: _Envelope, link: _Link) -> str:
        """Record a delivery of `envelope` on `link` and return the text to send there."""
        attempt = len(envelope.deliveries)
        envelope.deliveries.append(attempt)
        envelope.delivered_on.append(link.number)
        envelope.due = time.monotonic() + self.ack_timeout
        self._cond.notify_all()  # the redelivery thread has a new deadline to watch
        return json.dumps(
            {
                "envelope_id": envelope.id,
                "type": envelope.type,
                "payload": envelope.payload,
                "accepts_response_payload": envelope.accepts_response_payload,
                "retry_attempt": attempt,
                "retry_reason": "timeout" if attempt else "",
            }
        )

    def _redeliver_forever(self) -> None:
        """The redelivery thread: sends again what was not acknowledged in time (lock free)."""
        while True:
            with self._cond:
                if not self._running:
                    return
                outgoing = self._due_redeliveries()
                if not outgoing:
                    self._cond.wait(self._until_next_due())
                    continue
            for link, text in outgoing:
                _transmit(link, text)

    def _due_redeliveries(self) -> list[tuple[_Link, str]]:
        now = time.monotonic()
        outgoing = []
        for envelope in self._envelopes.values():
            if envelope.due is None or envelope.due > now:
                continue
            if len(envelope.deliveries) > self.max_retries:
                envelope.due = None  # Slack gives up
                continue
            link = self._next_link()
            if link is None:
                break  # waits for a connection to open
            outgoing.append((link, self._deliver(envelope, link)))
        return outgoing

    def _until_next_due(self) -> float | None:
        if not self._links:
            return None  # nothing can go out before a connection opens, which wakes us
        dues = [e.due for e in self._envelopes.values() if e.due is not None]
        return max(0.0, min(dues) - time.monotonic()) if dues else None

    # ---- the websocket server's threads (lock free) ---------------------------------------------

    def _check_handshake(self, connection: ServerConnection, request: Request) -> Response | None:
        """Refuse a handshake without a valid one-time ticket, as Slack does, before it opens."""
        parts = urllib.parse.urlsplit(request.path)
        if parts.path.rstrip("/") != LINK_PATH.rstrip("/"):
            return connection.respond(404, "Not Found\n")
        ticket = dict(urllib.parse.parse_qsl(parts.query)).get("ticket", "")
        with self._cond:
            if ticket not in self._tickets:
                return connection.respond(401, "invalid or used ticket\n")
            if len(self._links) >= MAX_CONNECTIONS:
                return connection.respond(403, "too many connections for this app\n")
            self._tickets.discard(ticket)  # one handshake per ticket
        return None

    def _serve_connection(self, connection: ServerConnection) -> None:
        with self._cond:
            hello = self._hello(num_connections=len(self._links) + 1)
        try:
            connection.send(hello)  # before any envelope: Slack's clients expect hello first
        except ConnectionClosed:
            return
        with self._cond:
            self._opened += 1
            link = _Link(connection, self._opened)
            self._links.append(link)
            self.fake._bump()  # a watcher may show who is connected
        try:
            for message in connection:  # ends when the client closes or the socket drops
                self._receive(message)
        except ConnectionClosed:
            pass
        finally:
            with self._cond:
                if link in self._links:
                    self._links.remove(link)
                self.fake._bump()

    def _hello(self, *, num_connections: int) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(self.fake._clock()))
        return json.dumps(
            {
                "type": "hello",
                "num_connections": num_connections,
                "debug_info": {
                    "host": DEBUG_HOST,
                    "started": started,
                    "build_number": 1,
                    "approximate_connection_time": APPROXIMATE_CONNECTION_TIME,
                },
                "connection_info": {"app_id": self.fake.app_id},
            }
        )

    def _receive(self, message: str | bytes) -> None:
        """An acknowledgement from the app; anything else the client sends is ignored."""
        try:
            data = json.loads(message)
        except ValueError:
            return
        if not isinstance(data, dict) or not isinstance(data.get("envelope_id"), str):
            return
        payload = data.get("payload")
        with self._cond:
            envelope = self._envelopes.get(data["envelope_id"])
            if envelope is None:
                return
            envelope.acks.append(copy.deepcopy(payload) if isinstance(payload, dict) else {})
            envelope.due = None
            self._cond.notify_all()


def _transmit(link: _Link, text: str) -> None:
    """Send on `link` (lock free). A connection that is gone loses the message, as on a real
    network: an envelope then goes out again once its ack is overdue."""
    with contextlib.suppress(ConnectionClosed, OSError):
        link.connection.send(text)
