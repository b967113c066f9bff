"""Slack over Socket Mode (`SLACK_APP_TOKEN`): the bot opens a websocket to Slack, no public URL.

Slack sends each button click, dialog submission, `/climate` command and event as an envelope over
the socket. Bolt's builtin `SocketModeHandler` hands the envelope's payload to the same Bolt app
that serves `POST /slack/events` (`bot.slack_listeners.build_bolt_app`), so every listener runs
exactly as over HTTP, and what its `ack()` answers goes back over the socket as the envelope's
acknowledgement. `SlackSocket` owns that handler. Its thread asks Slack for a socket URL
(`apps.connections.open`, with the app-level token) and connects, retrying with back-off from 1 to
60 s while that fails; it reconnects when the socket closes or goes silent (pings unanswered for
three ping intervals, 15 s), and the client reconnects by itself within a second or two when Slack
asks (a `disconnect` message: `refresh_requested`, `warning`). When Slack refuses the token itself
(`invalid_auth`, `not_allowed_token_type`, `token_revoked` …) it stops for good, with one ERROR
line saying what to do with SLACK_APP_TOKEN, and /healthz says so until the bot is restarted (it
gives the lease up: each process that takes it over finds the same and says it once).

One socket per deployment. Every process that runs the background threads (each gunicorn worker,
`python app.py`, `climate-bot worker`) has a `SlackSocket`, but only the one that holds the lease
"slack-socket" in the database connects; it renews the lease every 10 s, and the lease lapses 30 s
after the last renewal. The others stand by and ask for the lease as often: one takes over when the
holder stops (it gives the lease up) or is killed (the lease lapses).

Two or more connections anyway (two deployments on one app token; a process cut off from the
database while its lease lapsed): Slack sends each envelope to one of them, and sends an envelope
that is not acknowledged in time again (`retry_attempt` > 0), possibly to another. Handling is
idempotent either way. An event is handled once per `event_id` (`Storage.record_slack_event`). An
envelope sent again to a process that already handled it is acknowledged again, with the same
answer, and not handled twice (`Envelopes`). A click or dialog submission sent again to another
process decides nothing twice: each decision is a compare-and-set in the database
(`bot.decisions`), so a second Accept, or a second submission of the cancel dialog, is refused and
told who decided; a second Cancel click before any decision opens one more dialog (or, its trigger
spent, tells the clicker to click again), whose submission is refused the same way.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import OrderedDict

from slack_bolt import App
from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_bolt.adapter.socket_mode.internals import run_bolt_app, send_response
from slack_bolt.response import BoltResponse
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientNotConnectedError
from slack_sdk.socket_mode.builtin import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse

from bot.storage import Storage
from bot.stripe_polling import holder_name

log = logging.getLogger(__name__)

LEASE = "slack-socket"
LEASE_SECONDS = 30.0  # renewed every third of it
PING_INTERVAL = 5.0  # seconds between the client's pings; Bolt's default is 10
SILENT_PINGS = 3  # pings unanswered before the socket counts as lost
# The builtin client reads with a 3 s time-out, and while it replaces a connection (Slack asked it
# to) the old one answers no ping until that read ends: never call a socket lost sooner.
MIN_SILENCE_SECONDS = 5.0
MIN_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 60.0
ENVELOPES_KEPT = 1_000  # envelope ids remembered, to handle one sent again only once
REDELIVERY_WAIT_SECONDS = 2.0  # how long an envelope sent again waits for the first one's answer

# What Slack's refusals of an app-level token mean, and what to do. None of them heals by trying
# again: the socket stops until the bot is restarted with another token.
APP_TOKEN_HINTS = {
    "invalid_auth": "SLACK_APP_TOKEN is not valid: create an app-level token with connections:write"
    " (the app's Basic Information → App-Level Tokens) and copy it whole",
    "not_authed": "no app-level token reached Slack: set SLACK_APP_TOKEN",
    "not_allowed_token_type": "SLACK_APP_TOKEN is not an app-level token: use the xapp-… token of"
    " Basic Information → App-Level Tokens, not the bot token",
    "missing_scope": "SLACK_APP_TOKEN lacks the connections:write scope: generate an app-level"
    " token with it",
    "token_revoked": "SLACK_APP_TOKEN was revoked: generate a new app-level token with"
    " connections:write",
    "token_expired": "SLACK_APP_TOKEN has expired: generate a new app-level token with"
    " connections:write",
    "account_inactive": "the app's workspace or the token's owner is deactivated",
    "forbidden_team": "this workspace may not use Socket Mode with SLACK_APP_TOKEN's app",
}


class _OnlyWhenDebugging(logging.Filter):
    """The socket client's own lines (each failed try, each reconnection, at INFO and ERROR),
    passed on only at DEBUG: `SlackSocket` says what matters itself, once."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not log.isEnabledFor(logging.DEBUG):
            return False
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


_CLIENT_LOG = logging.getLogger(__name__ + ".client")
_CLIENT_LOG.addFilter(_OnlyWhenDebugging())


class _Refused(Exception):
    """Slack refused the app-level token: `error` is its error code."""

    def __init__(self, error: str) -> None:
        self.error = error
        super().__init__(error)


def slack_error(exc: SlackApiError) -> str:
    """Slack's error code (`invalid_auth` …), or the HTTP status of an answer without one (an
    outage page: slack_sdk puts the page itself where the code would be)."""
    response = exc.response
    try:
        error = response.get("error") if response is not None else None
    except (AttributeError, TypeError):
        error = None
    if isinstance(error, str) and re.fullmatch(r"[a-z0-9_]{1,64}", error):
        return error
    status = getattr(response, "status_code", None)
    return f"HTTP {status}" if status else "no answer"


def _web_client(api_url: str) -> WebClient:
    # slack_sdk logs an ERROR with the page for an answer that is not JSON (a 503 page): the
    # socket and `climate-bot check` say what went wrong themselves.
    return WebClient(base_url=api_url, timeout=10, logger=_CLIENT_LOG)


def app_token_problem(app_token: str, api_url: str) -> str | None:
    """What is wrong with `app_token`, in words, as Slack's `apps.connections.open` tells (it only
    hands out a socket URL: no connection is opened); None when it may open a socket."""
    try:
        _web_client(api_url).apps_connections_open(app_token=app_token)
    except SlackApiError as exc:
        error = slack_error(exc)
        if error in APP_TOKEN_HINTS:
            return f"Slack refused SLACK_APP_TOKEN ({error}): {APP_TOKEN_HINTS[error]}"
        then = "try again later" if error.startswith("HTTP ") else "is Socket Mode on for the app?"
        return (
            f"Slack answered {error} when asked for a Socket Mode URL with SLACK_APP_TOKEN"
            f" (apps.connections.open): {then}"
        )
    except Exception as exc:  # refused or timed-out connection
        return f"cannot reach Slack at {api_url} to check SLACK_APP_TOKEN ({type(exc).__name__})"
    return None


class _Handling:
    """One envelope handled (or being handled) by this process, and Bolt's answer to it."""

    __slots__ = ("done", "response")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.response: BoltResponse | None = None


class Envelopes:
    """The envelopes this process handled lately, by `envelope_id` (the newest `limit`)."""

    def __init__(self, limit: int = ENVELOPES_KEPT) -> None:
        self.limit = limit
        self._seen: OrderedDict[str, _Handling] = OrderedDict()
        self._lock = threading.Lock()

    def claim(self, envelope_id: str) -> tuple[_Handling, bool]:
        """The handling of `envelope_id`, and True when this is its first delivery here."""
        with self._lock:
            handling = self._seen.get(envelope_id)
            if handling is not None:
                self._seen.move_to_end(envelope_id)
                return handling, False
            handling = self._seen[envelope_id] = _Handling()
            while len(self._seen) > self.limit:
                self._seen.popitem(last=False)
            return handling, True


class _Handler(SocketModeHandler):
    """Bolt's builtin handler, which handles an envelope Slack sends again only once."""

    def __init__(self, app: App, app_token: str, envelopes: Envelopes, **options) -> None:
        self.envelopes = envelopes
        super().__init__(app, app_token, **options)

    def handle(self, client: SocketModeClient, req: SocketModeRequest) -> None:
        start = time.time()
        try:
            handling, first = self.envelopes.claim(req.envelope_id)
            if not first and (req.retry_attempt or 0) > 0:
                self._acknowledge_again(client, req, handling, start)
                return
            try:
                response = run_bolt_app(self.app, req)
                handling.response = response
            finally:
                handling.done.set()
            send_response(client, req, response, start)
        except SlackClientNotConnectedError:
            log.warning(
                "the acknowledgement of a %s envelope was not sent: the socket closed meanwhile;"
                " Slack sends the envelope again",
                req.type,
            )
        except Exception:  # the client would log it at DEBUG only (`_OnlyWhenDebugging`)
            log.exception("a %s envelope from Slack could not be handled", req.type)

    def _acknowledge_again(
        self, client: SocketModeClient, req: SocketModeRequest, handling: _Handling, start: float
    ) -> None:
        # Slack did not see the first acknowledgement in time (or not at all): answer as that one
        # did, once it is known, or with a bare acknowledgement.
        response = handling.response if handling.done.wait(REDELIVERY_WAIT_SECONDS) else None
        log.info(
            "Slack sent envelope %s (%s) again (retry %s, %s): acknowledged, not handled twice",
            req.envelope_id,
            req.type,
            req.retry_attempt,
            req.retry_reason or "no reason given",
        )
        if response is not None and response.status == 200:
            send_response(client, req, response, start)
        else:
            client.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))


class SlackSocket:
    """This process's Socket Mode connection to Slack, when it holds the "slack-socket" lease."""

    def __init__(
        self,
        app: App,
        storage: Storage,
        *,
        app_token: str,
        api_url: str,
        ping_interval: float = PING_INTERVAL,
        lease_seconds: float = LEASE_SECONDS,
        holder: str | None = None,
    ) -> None:
        self.app = app
        self.storage = storage
        self.app_token = app_token
        self.api_url = api_url
        self.ping_interval = ping_interval
        self.lease_seconds = lease_seconds
        self.holder = holder or holder_name()
        # Bolt's own client carries no token (build_bolt_app); this one asks for socket URLs.
        self.web_client = _web_client(api_url)
        self.envelopes = Envelopes()
        self.stopped_because: str | None = None  # Slack refused the token: no more tries
        self.last_error: str | None = None  # why the last try to connect failed
        self.failures = 0  # tries in a row that failed
        self._handler: _Handler | None = None
        self._holding = False
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._renew_at = 0.0
        self._lease_failing = False  # said once while the database refuses the lease
        self._retry_at = 0.0
        self._down_since: float | None = None  # holding the lease, not connected since then
        self._ever_connected = False
        self._session_id: str | None = None  # the session last seen, and since when
        self._session_seen = 0.0
        self._socket_error: str | None = None  # the client's last error on the websocket
        self._disconnect_reason: str | None = None  # Slack's, in its last `disconnect` message

    # -- what the operator sees -------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """This process holds the socket, and Slack answered a ping lately."""
        session = self._session()
        return self._holding and session is not None and not self._silent(session, time.time())

    def state(self) -> str:
        """connected | connecting | standing by | stopped: why | not started (/readyz says it)."""
        if self.stopped_because is not None:
            return f"stopped: {self.stopped_because}"
        if self._thread is None:
            return "not started"
        if self._stopping.is_set():
            return "stopped: the bot is stopping"
        if not self._holding:
            return "standing by"
        return "connected" if self.connected else "connecting"

    def health_reasons(self, now: float) -> list[str]:
        """Why /healthz says degraded about the socket (empty when all is well, and in a process
        that stands by: another one holds the socket)."""
        if self.stopped_because is not None:
            return [self.stopped_because]
        if self._thread is None or self._stopping.is_set() or not self._holding:
            return []
        session = self._session()
        if session is not None:
            quiet = self._quiet_seconds(session, now)
            if quiet < self._silence_limit:
                return []
            return [f"Slack socket: no answer to pings for {quiet:.0f} s; reconnecting"]
        down = now - self._down_since if self._down_since is not None else 0.0
        if down < self._silence_limit:  # a reconnection Slack asked for takes a second or two
            return []
        why = f" (last error: {self.last_error})" if self.last_error else ""
        return [
            f"Slack socket not connected: connecting for {down:.0f} s{why}; clicks, /climate and"
            " the Home tab do not reach the bot meanwhile"
        ]

    # -- the thread --------------------------------------------------------------------------

    def start(self) -> threading.Thread:
        """Run the socket's thread (once): it takes the lease when it can, then connects."""
        if self._thread is None:
            self._thread = threading.Thread(target=self.run, name="slack-socket", daemon=True)
            self._thread.start()
        return self._thread

    def stop(self, timeout: float = 10.0) -> None:
        """Disconnect, give the lease up, and wait for the thread (closing takes 2-3 s)."""
        self._stopping.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def run(self) -> None:
        """Hold the socket while this process holds the lease, until stopped (a thread's target)."""
        try:
            while not self._stopping.is_set():
                try:
                    wait = self._step(time.time())
                except Exception:  # a bug or the database: logged, and tried again
                    log.exception("the Slack socket's thread failed; it tries again in 5 s")
                    wait = 5.0
                self._wake.wait(max(wait, 0.01))
                self._wake.clear()
        finally:
            self._close_handler()
            if self._holding:
                try:
                    self.storage.release_lease(LEASE, self.holder)
                except Exception:  # the database is gone: the lease lapses by itself
                    log.debug("could not release the Slack socket lease", exc_info=True)
            self._holding = False

    @property
    def _tick(self) -> float:
        return min(1.0, self.ping_interval / 2)

    @property
    def _silence_limit(self) -> float:
        return max(SILENT_PINGS * self.ping_interval, MIN_SILENCE_SECONDS)

    def _step(self, now: float) -> float:
        """One look at the lease and the connection; the seconds until the next look."""
        if now >= self._renew_at:
            self._renew(now)
        if not self._holding:
            if self._handler is not None:  # the lease went to another process
                self._close_handler()
                self._ever_connected = False
            self._down_since = None
            return self._renew_at - now
        until_renewal = self._renew_at - now
        session = self._session()
        if session is not None:
            self._note(session, now)
            quiet = self._quiet_seconds(session, now)
            if quiet < self._silence_limit:
                self._down_since = None
                return min(self._tick, until_renewal)
            log.warning("Slack socket: no answer to pings for %.0f s; reconnecting", quiet)
            session.close()
        if self._down_since is None:
            self._down_since = now
            if self._ever_connected:
                log.warning("Slack socket lost; reconnecting")
        if now < self._retry_at:
            return min(self._retry_at - now, until_renewal)
        self._connect(now, lost=self._current())
        return min(self._tick, until_renewal)

    def _renew(self, now: float) -> None:
        try:
            held = self.storage.take_lease(LEASE, self.holder, seconds=self.lease_seconds, now=now)
        except Exception as exc:  # a database no process can write hands the lease to none
            if not self._lease_failing:
                log.warning("could not renew the Slack socket lease (trying again): %s", exc)
            self._lease_failing = True
            self._renew_at = now + self._tick
            return
        self._lease_failing = False
        self._renew_at = now + self.lease_seconds / 3
        if held and not self._holding:
            log.info("this process holds the Slack socket (lease %s)", LEASE)
        elif self._holding and not held:
            log.warning("another process took the Slack socket lease; this one disconnects")
        self._holding = held

    def _connect(self, now: float, *, lost: object = None) -> None:
        """Open a new connection in place of `lost` (the client's connection found closed or
        silent; None: there was none yet)."""
        try:
            url = self._socket_url()
        except _Refused as exc:
            self._stop_for_good(exc.error)
            return
        except Exception as exc:  # Slack unreachable, rate-limited, a 5xx
            self._failed(self._why(exc), now)
            return
        handler = self._handler or self._new_handler()
        client = handler.client
        # The client reconnects by itself when Slack says `disconnect`: never both at once, and
        # not again when it has just done so.
        if not client.connect_operation_lock.acquire(timeout=5):
            return
        try:
            if lost is not None and client.current_session is not lost:
                return
            self._socket_error = None
            client.wss_uri = url
            client.connect()  # logs, and leaves the socket closed, when the handshake fails
        finally:
            client.connect_operation_lock.release()
        session = self._session()
        if session is None:
            self._failed(f"the websocket did not open: {self._socket_error or 'refused'}", now)
            return
        self._session_id, self._session_seen = session.session_id, now
        if self.failures:
            log.info("connected to Slack over Socket Mode after %d failed tries", self.failures)
        else:
            log.info("connected to Slack over Socket Mode%s", " again" * self._ever_connected)
        self._ever_connected = True
        self._down_since = None
        self.failures = 0
        self.last_error = None
        self._retry_at = 0.0

    def _socket_url(self) -> str:
        try:
            response = self.web_client.apps_connections_open(app_token=self.app_token)
        except SlackApiError as exc:
            error = slack_error(exc)
            if error in APP_TOKEN_HINTS:
                raise _Refused(error) from None
            raise
        return str(response["url"])

    def _why(self, exc: Exception) -> str:
        if isinstance(exc, SlackApiError):
            return f"Slack answered {slack_error(exc)} to apps.connections.open"
        return f"cannot reach Slack at {self.api_url} ({type(exc).__name__}: {exc})"

    def _failed(self, why: str, now: float) -> None:
        self.failures += 1
        self.last_error = why
        wait = min(MIN_BACKOFF_SECONDS * 2 ** min(self.failures - 1, 16), MAX_BACKOFF_SECONDS)
        self._retry_at = now + wait
        if self.failures == 1 or self.failures % 10 == 0:  # said once, then now and then
            log.warning(
                "Slack socket: could not connect (%d in a row; next try in %.0f s): %s",
                self.failures,
                wait,
                why,
            )

    def _stop_for_good(self, error: str) -> None:
        self.stopped_because = (
            f"Slack refused SLACK_APP_TOKEN ({error}): {APP_TOKEN_HINTS[error]}; Socket Mode is"
            " off until the bot is restarted with a valid token"
        )
        log.error("%s", self.stopped_because)
        self._stopping.set()

    # -- the handler and its client ------------------------------------------------------------

    def _new_handler(self) -> _Handler:
        # The client's own reconnection is off: this thread reconnects, with back-off, and only
        # while it holds the lease. A `disconnect` from Slack still reconnects the client at once.
        handler = _Handler(
            self.app,
            self.app_token,
            self.envelopes,
            logger=_CLIENT_LOG,
            web_client=self.web_client,
            auto_reconnect_enabled=False,
            ping_interval=self.ping_interval,
        )
        handler.client.on_message_listeners.append(self._on_message)
        handler.client.on_error_listeners.append(self._on_error)
        handler.client.on_close_listeners.append(self._on_close)
        self._handler = handler
        return handler

    def _close_handler(self) -> None:
        handler, self._handler = self._handler, None
        if handler is None:
            return
        try:
            handler.close()
        except Exception:  # closing a socket that is already gone
            log.debug("closing the Slack socket failed", exc_info=True)
        log.info("Slack socket closed")

    def _current(self):
        """The client's current connection, open or not (None before the first)."""
        handler = self._handler
        return handler.client.current_session if handler is not None else None

    def _session(self):
        """The client's current connection when its socket is open, else None."""
        session = self._current()
        return session if session is not None and session.is_active() else None

    def _quiet_seconds(self, session, now: float) -> float:
        """Seconds since Slack last answered a ping on `session` (or since it was opened)."""
        heard = session.last_ping_pong_time
        if heard is None:
            heard = self._session_seen if session.session_id == self._session_id else now
        return max(0.0, now - heard)

    def _silent(self, session, now: float) -> bool:
        return self._quiet_seconds(session, now) >= self._silence_limit

    def _note(self, session, now: float) -> None:
        """A session the client opened by itself (Slack asked it to reconnect)."""
        if session.session_id != self._session_id:
            self._session_id, self._session_seen = session.session_id, now
            log.info(
                "Slack socket reconnected (Slack asked: %s)", self._disconnect_reason or "unknown"
            )

    def _on_message(self, message: str) -> None:
        if '"disconnect"' not in message:
            return
        try:
            data = json.loads(message)
        except ValueError:
            return
        if not isinstance(data, dict) or data.get("type") != "disconnect":
            return
        self._disconnect_reason = str(data.get("reason") or "unknown")
        if self._disconnect_reason == "link_disabled":
            log.warning(
                "Slack closed the socket: Socket Mode was turned off for the app (link_disabled);"
                " turn it on in the app's settings, or unset SLACK_APP_TOKEN and give Slack a"
                " Request URL"
            )

    def _on_error(self, error: Exception) -> None:
        self._socket_error = f"{type(error).__name__}: {error}"

    def _on_close(self, code: int, reason: str | None = None) -> None:
        self._wake.set()  # reconnect now rather than at the next look
