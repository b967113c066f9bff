"""Fault injection for the sandbox's fakes: a Slack and a Stripe that fail when a test says so.

`FaultySlack` and `FaultyStripe` are the product's `FakeSlack` and `FakeStripe` plus the failures
tests script: errors, rate limits, 5xx and proxy pages, outages, dropped connections and slow
answers. They add them through the one seam each fake offers a subclass (``_intercept`` to
answer a call in the service's place, ``_delay_for`` to answer it late), so the fakes themselves
carry only the services' real behaviour. The ``fake_slack`` and ``fake_stripe`` fixtures are
these. `FaultySlack` also breaks Socket Mode: `drop_socket` resets its connections, and a short
`ack_timeout` makes Slack redeliver envelopes sooner.
"""

from __future__ import annotations

import random
import socket
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Literal

from bot.sandbox.slack import Call as SlackCall
from bot.sandbox.slack import FakeSlack, Reply, ratelimited
from bot.sandbox.socket_mode import ACK_TIMEOUT
from bot.sandbox.stripe import ApiError, FakeStripe, HtmlPage
from bot.sandbox.stripe import Call as StripeCall

__all__ = ["FaultySlack", "FaultyStripe"]

_OUTAGE_PAGE = (
    "<html><head><title>Slack is down</title></head>"
    "<body><h1>Service Unavailable</h1><p>Slack is having trouble.</p></body></html>"
)
_SERVER_ERROR_PAGE = (
    "<html><head><title>Server Error</title></head>"
    "<body><h1>Internal Server Error</h1></body></html>"
)


# --------------------------------------------------------------------------------------------
# Slack
# --------------------------------------------------------------------------------------------


@dataclass
class _SlackFailure:
    method: str
    error: str | None
    status: int
    retry_after: int | str | None
    disconnect: bool
    times: int
    channel: str | None
    after_success: bool = False


class FaultySlack(FakeSlack):
    """A `FakeSlack` whose Web API fails as scripted: `fail_next`, `delay`, `set_down` and
    `set_random_failures`; whose Socket Mode connections `drop_socket` breaks and whose
    `ack_timeout` a test may shorten. `reset()` forgets what was scripted too."""

    def __init__(self, **options: Any) -> None:
        """Take `FakeSlack`'s options; nothing fails until a test says so."""
        self._clear_faults()
        super().__init__(**options)

    def _clear_faults(self) -> None:
        self._failures: list[_SlackFailure] = []
        self._delays: dict[str, float] = {}
        self._down = False
        self._random_rate = 0.0
        self._rng = random.Random(0)

    def fail_next(
        self,
        method: str,
        *,
        error: str | None = None,
        status: int = 200,
        retry_after: int | str | None = None,
        disconnect: bool = False,
        times: int = 1,
        channel: str | None = None,
        after_success: bool = False,
    ) -> None:
        """Script the next `times` calls to `method` (``"*"``: any method) to fail.

        - ``error="channel_not_found"``: HTTP 200 ``{"ok": false, "error": ...}``
        - ``status=500``/``502``/``503``: that status, with an HTML page naming it (or JSON when
          `error` is given)
        - ``retry_after=N``: HTTP 429 (or `status`, if set) + ``Retry-After: N`` + ``ratelimited``;
          a string is sent as written (``"inf"``, ``"1e9"``, ``"abc"``: a header to survive)
        - ``disconnect=True``: close the connection without answering
        - ``after_success=True``: carry the call out first (the message IS posted), then fail as
          above: the ambiguous case of a time-out or 5xx after Slack accepted the request
        `channel` limits the failure to calls for that channel (ID or name). Failures queue up
        in the order they were scripted; the call is still recorded in `calls`.
        """
        if not (error or status != 200 or retry_after is not None or disconnect):
            raise ValueError("fail_next needs error=, status=, retry_after= or disconnect=True")
        if times < 1:
            raise ValueError("times must be at least 1")
        with self._cond:
            self._failures.append(
                _SlackFailure(
                    method, error, status, retry_after, disconnect, times, channel, after_success
                )
            )

    def delay(self, method: str, seconds: float) -> None:
        """Make Web API calls to `method` (``"*"``: any method) answer `seconds` late.

        A slow Slack: each call is recorded at once (in flight: ``done`` is False), then
        carried out and answered once `seconds` have passed, while other calls are answered
        as usual meanwhile. ``seconds=0`` removes the delay, and so does `reset()`; `stop()`
        sends the answers still waiting at once, so a test never waits for them.
        """
        if seconds < 0:
            raise ValueError("seconds must not be negative")
        with self._cond:
            if seconds:
                self._delays[method] = float(seconds)
            else:
                self._delays.pop(method, None)

    def set_down(self, down: bool) -> None:
        """While down, every Web API and response_url call answers 503 with an HTML page."""
        with self._cond:
            self._down = down

    def set_random_failures(self, rate: float, seed: int = 0) -> None:
        """Answer a fraction `rate` of Web API calls with 429 (``Retry-After: 1``) or 500.

        The sequence of outcomes is fixed by `seed`; which call gets which depends on call order.
        ``rate=0`` turns it off.
        """
        if not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be between 0 and 1")
        with self._cond:
            self._random_rate = rate
            self._rng = random.Random(seed)

    def drop_socket(self) -> int:
        """Break every open Socket Mode connection at once, as a network failure does: a TCP
        reset, no close frame; returns how many. Slack's client sees the connection lost and
        opens a new one on its next check (every `ping_interval` seconds).

        A reset, never a bare FIN: a half-closed socket is a different failure, which sends
        slack_sdk's builtin client into a busy loop rather than a reconnection.
        """
        connections = self.socket._open_connections()
        for connection in connections:
            raw = connection.socket
            try:
                # Linger on, timeout 0: close() discards what is unsent and sends RST.
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                raw.close()
            except OSError:
                pass  # closed meanwhile
            connection.close_socket()  # wakes the connection's reader, so its thread ends
        return len(connections)

    @property
    def ack_timeout(self) -> float:
        """Seconds Slack waits for a Socket Mode envelope's ack before delivering it again
        (3, as Slack; `reset()` restores that)."""
        return self.socket.ack_timeout

    @ack_timeout.setter
    def ack_timeout(self, seconds: float) -> None:
        if seconds <= 0:
            raise ValueError("ack_timeout must be positive")
        self.socket.ack_timeout = float(seconds)

    def reset(self) -> None:
        """Forget calls, messages, views, response_urls, scripted failures and delays; restore
        channels and users as configured (undoing joins), a working token and Slack's
        `ack_timeout`."""
        with self._cond:
            super().reset()
            self._clear_faults()
            self.socket.ack_timeout = ACK_TIMEOUT

    # ---- the seam -------------------------------------------------------------------------------

    def _intercept(self, call: SlackCall) -> Reply | None:
        if self._down:
            return Reply(status=503, html=_OUTAGE_PAGE)
        if call.path.startswith("/hooks/"):
            return None  # scripted and random failures are for Web API calls only
        for failure in self._failures:
            if failure.method in (call.method, "*") and self._failure_matches_channel(
                failure, call.params
            ):
                failure.times -= 1
                if failure.times == 0:
                    self._failures.remove(failure)
                if failure.after_success:
                    self._run(call)
                return _failure_reply(failure)
        if self._random_rate and self._rng.random() < self._random_rate:
            if self._rng.random() < 0.5:
                return ratelimited(1)
            return Reply(status=500, html=_SERVER_ERROR_PAGE)
        return None

    def _delay_for(self, method: str) -> float:
        return self._delays.get(method, self._delays.get("*", 0.0))

    def _failure_matches_channel(self, failure: _SlackFailure, params: dict[str, Any]) -> bool:
        if failure.channel is None:
            return True
        raw = params.get("channel")
        if not isinstance(raw, str):
            return False
        resolved = self._resolve_channel(raw)
        return failure.channel in (raw, resolved.id if resolved else None)


def _failure_reply(failure: _SlackFailure) -> Reply:
    if failure.disconnect:
        return Reply(disconnect=True)
    if failure.retry_after is not None:
        reply = ratelimited(failure.retry_after, error=failure.error or "ratelimited")
        if failure.status != 200:
            reply.status = failure.status
        return reply
    if failure.status != 200 and failure.error is None:
        return Reply(status=failure.status, html=_error_page(failure.status))
    return Reply(status=failure.status, json={"ok": False, "error": failure.error})


def _error_page(status: int) -> str:
    """The HTML page the load balancer in front of Slack's API answers a 5xx with (a 502 when
    Slack's backends are unreachable), naming its status as such pages do."""
    try:
        name = f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        name = f"{status} Error"
    return (
        f"<html><head><title>{name}</title></head>"
        f"<body><center><h1>{name}</h1></center><hr><center>server</center></body></html>"
    )


# --------------------------------------------------------------------------------------------
# Stripe
# --------------------------------------------------------------------------------------------


@dataclass
class _StripeFailure:
    path_prefix: str
    status: int
    times: int
    method: str | None
    should_retry: bool | None
    error: dict[str, Any] | None
    html: str | None = None
    after: int = 0  # matching requests answered as usual before the first failure


class FaultyStripe(FakeStripe):
    """A `FakeStripe` that fails as scripted: `set_down`, `fail_next` and `set_delay`."""

    def __init__(self, *args: Any, **options: Any) -> None:
        """Take `FakeStripe`'s arguments; nothing fails until a test says so."""
        # Set before FakeStripe starts serving, which it does on construction.
        self._failures: list[_StripeFailure] = []
        self._down: Literal["refuse", "503"] | None = None
        self._delay = 0.0
        super().__init__(*args, **options)

    def set_down(self, down: bool = True, mode: Literal["refuse", "503"] = "refuse") -> None:
        """Simulate an outage. ``refuse``: read the request, then close the connection without an
        answer (stripe-python raises ``APIConnectionError``). ``503``: answer 503 ``api_error``
        (``APIError``). ``set_down(False)`` restores service."""
        if mode not in ("refuse", "503"):
            raise ValueError(f"mode must be 'refuse' or '503', not {mode!r}")
        with self._lock:
            self._down = mode if down else None

    def fail_next(
        self,
        path_prefix: str = "/v1/",
        status: int = 500,
        times: int = 1,
        *,
        method: str | None = None,
        should_retry: bool | None = None,
        error: Mapping[str, Any] | None = None,
        html: str | None = None,
        after: int = 0,
    ) -> None:
        """Answer the next ``times`` requests under ``path_prefix`` with HTTP ``status``
        (``after``: once that many more have been answered as usual, e.g. mid-way through pages).

        Bodies are Stripe-shaped: 429 → ``invalid_request_error``/``rate_limit``, others
        ``api_error``; ``error`` replaces the fields of ``{"error": …}``. ``html`` answers that
        page instead, as ``text/html`` (what a proxy or load balancer in front of Stripe sends
        with a 502; stripe-python reads no JSON in it). ``should_retry`` sets the
        ``Stripe-Should-Retry`` header stripe-python obeys when its retries are on. Injected
        failures are answered before authentication and the idempotency layer (as an overloaded
        front end would), so they are never replayed and a retry with the same key executes.
        """
        with self._lock:
            self._failures.append(
                _StripeFailure(
                    path_prefix,
                    status,
                    times,
                    method.upper() if method else None,
                    should_retry,
                    dict(error) if error is not None else None,
                    html,
                    after,
                )
            )

    def set_delay(self, seconds: float) -> None:
        """Wait ``seconds`` before executing each request (0 to stop). POSTs hold their
        idempotency key meanwhile, so a concurrent retry gets Stripe's 409 "in-progress" error."""
        with self._lock:
            self._delay = max(0.0, float(seconds))

    # -- the seam ----------------------------------------------------------------------------

    def _intercept(self, call: StripeCall) -> Literal["drop"] | None:
        if self._down == "refuse":
            return "drop"
        if self._down == "503":
            raise ApiError(
                503, "Stripe is temporarily unavailable. Please try again later.", type="api_error"
            )
        failure = self._take_failure(call)
        if failure is not None:
            raise _injected(failure)
        return None

    def _delay_for(self, call: StripeCall) -> float:
        return self._delay

    def _take_failure(self, call: StripeCall) -> _StripeFailure | None:
        """The first scripted failure for `call`, used up by one."""
        for failure in self._failures:
            if call.path.startswith(failure.path_prefix) and failure.method in (None, call.method):
                if failure.after > 0:
                    failure.after -= 1
                    return None
                failure.times -= 1
                if failure.times <= 0:
                    self._failures.remove(failure)
                return failure
        return None


def _injected(failure: _StripeFailure) -> ApiError | HtmlPage:
    headers = {}
    if failure.should_retry is not None:
        headers["Stripe-Should-Retry"] = "true" if failure.should_retry else "false"
    if failure.html is not None:
        return HtmlPage(failure.status, failure.html, headers)
    if failure.status == 429:
        err = ApiError(
            429,
            "Request rate limit exceeded. You can learn more about rate limits here "
            "https://stripe.com/docs/rate-limits.",
            code="rate_limit",
            headers=headers,
        )
    else:
        err = ApiError(
            failure.status,
            "Sorry, something went wrong. We've already been notified of the problem, "
            "but if you need any help, you can reach us at support.stripe.com/contact.",
            type="api_error",
            headers=headers,
        )
    if failure.error is not None:
        err.body = {**err.body, **failure.error}
    return err
