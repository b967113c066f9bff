"""The one module that talks to Slack's Web API and knows its errors.

The rest of climate-bot sees our own exceptions, a typed taxonomy that says what to do next:
wait and retry (`RateLimited`, `Transient`), join and retry (`NotInChannel`), or park the work
and tell an operator (`Permanent`).
"""

from __future__ import annotations

import logging
import math
import threading
import urllib.parse
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.webhook import WebhookClient

from bot import metrics
from bot.model import MAX_RETRY_AFTER_SECONDS, Message

log = logging.getLogger(__name__)

# Errors that will not heal by retrying: the work is parked and /healthz says why.
PERMANENT_ERRORS = frozenset(
    {
        "channel_not_found",
        "is_archived",
        "is_inactive",
        "invalid_auth",
        "not_authed",
        "token_revoked",
        "token_expired",
        "account_inactive",
        "invalid_blocks",
        "invalid_blocks_format",
        "msg_too_long",
        "msg_blocks_too_long",
        "no_text",
        "missing_scope",
        "restricted_action",
        "restricted_action_read_only_channel",
        "restricted_action_thread_only_channel",
        "restricted_action_non_threadable_channel",
        "team_access_not_granted",
        "cant_update_message",
        "message_not_found",
        "edit_window_closed",
        "invalid_metadata_format",
        "invalid_metadata_schema",
        "metadata_too_large",
        "method_not_supported_for_channel_type",
        "channel_is_limited_access",
        "too_many_members",
        # direct messages: the person is gone, is a bot, or takes no messages from apps
        "user_not_found",
        "user_disabled",
        "cannot_dm_bot",
        "messages_tab_disabled",
    }
)

# slack_sdk logs a failed response_url call at ERROR, url included; we log our own warning
# instead (without the url), so its logger only passes on what is worse than that.
_RESPONSE_URL_LOG = logging.getLogger("climate-bot.response_url")
_RESPONSE_URL_LOG.setLevel(logging.CRITICAL)

# Where Slack serves response_urls. A signed payload's response_url elsewhere is not answered
# (SlackGateway.respond): only these and the origin of the Web API (a sandbox's, a test's).
RESPONSE_URL_ORIGINS = frozenset({("https", "hooks.slack.com", 443)})
# Origins already warned about; bounded, so odd payloads cannot grow it without end.
_IGNORED_ORIGINS: set[str] = set()
_IGNORED_ORIGINS_LIMIT = 100
_IGNORED_LOCK = threading.Lock()

# The wait after a 429 whose Retry-After is no usable number of seconds (missing, unparsable,
# negative, inf, nan). A finite one is kept, up to MAX_RETRY_AFTER_SECONDS (bot/model.py).
DEFAULT_RETRY_AFTER_SECONDS = 1.0

# Marks our own messages so a retry after an ambiguous failure can find what was already posted.
METADATA_EVENT = "climate_bot_outbox"


class SlackError(Exception):
    """Base of every Slack failure climate-bot handles; `http_status`: Slack's answer's, when
    there was one."""

    def __init__(self, error: str, detail: str = "", *, http_status: int | None = None) -> None:
        self.error = error
        self.http_status = http_status
        super().__init__(f"{error}: {detail}" if detail else error)


class RateLimited(SlackError):
    """HTTP 429: wait `retry_after` seconds."""

    def __init__(self, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__("ratelimited", f"retry after {retry_after:g}s")


class Transient(SlackError):
    """5xx, time-out, dropped connection, Slack's own hiccups: back off and retry."""


class NotInChannel(SlackError):
    """The bot is not a member of the channel: join it, then retry."""


class Permanent(SlackError):
    """Will not heal by retrying (archived channel, revoked token, rejected blocks …)."""


class SlackGateway:
    """Slack Web API calls climate-bot makes, raising the taxonomy above."""

    def __init__(self, token: str, base_url: str, *, timeout: int = 10) -> None:
        # No client-side retries: failed deliveries are retried from the persisted outbox,
        # after checking whether an ambiguous attempt did reach Slack.
        self.client = WebClient(token=token, base_url=base_url, timeout=timeout, retry_handlers=[])
        self._workspace_url: str | None = None
        self._response_origins = RESPONSE_URL_ORIGINS | {
            origin for origin in (url_origin(base_url),) if origin is not None
        }

    def _call(self, method: str, *, form: bool = False, **params: Any) -> dict[str, Any]:
        """Call `method` (JSON body, or form fields for the methods that want them)."""
        body = {"params": params} if form else {"json": params}
        try:
            response = self.client.api_call(method, **body)
        except SlackApiError as exc:
            error = classify(exc)
            metrics.SLACK_CALLS.labels(method, error.error).inc()
            raise error from None
        except (OSError, TimeoutError) as exc:  # URLError, connection reset, socket time-out
            metrics.SLACK_CALLS.labels(method, "connection_error").inc()
            raise Transient("connection_error", str(exc)) from None
        metrics.SLACK_CALLS.labels(method, "ok").inc()
        return response.data if isinstance(response.data, dict) else {}

    def post_message(
        self,
        channel: str,
        message: Message,
        *,
        thread_ts: str | None = None,
        broadcast: bool = False,
        marker: dict[str, Any] | None = None,
    ) -> tuple[str, str]:
        """Post a message (a card, or a reply when `thread_ts` is given; `broadcast`: the reply
        is also sent to the channel); return (channel, ts)."""
        params: dict[str, Any] = {
            "channel": channel,
            "text": message.text,
            "blocks": message.blocks,
            "unfurl_links": False,
            "unfurl_media": False,
        }
        if thread_ts:
            params["thread_ts"] = thread_ts
            if broadcast:
                params["reply_broadcast"] = True
        if marker:
            params["metadata"] = {"event_type": METADATA_EVENT, "event_payload": marker}
        data = self._call("chat.postMessage", **params)
        return data["channel"], data["ts"]

    def update_message(self, channel: str, ts: str, message: Message) -> None:
        """Replace a card's text and blocks in place."""
        self._call("chat.update", channel=channel, ts=ts, text=message.text, blocks=message.blocks)

    def join(self, channel: str) -> None:
        self._call("conversations.join", form=True, channel=channel)

    def find_marked(
        self, channel: str, marker: dict[str, Any], *, oldest: float, thread_ts: str | None = None
    ) -> str | None:
        """The ts of a message we posted with `marker`, if an earlier attempt did reach Slack."""
        method = "conversations.replies" if thread_ts else "conversations.history"
        params: dict[str, Any] = {
            "channel": channel,
            "oldest": f"{oldest:.6f}",
            "include_all_metadata": True,
            "limit": 200,
        }
        if thread_ts:
            params["ts"] = thread_ts
        cursor = None
        for _ in range(20):  # bounded: the window since the first attempt is short
            if cursor:
                params["cursor"] = cursor
            data = self._call(method, form=True, **params)
            for msg in data.get("messages", []):
                meta = msg.get("metadata") or {}
                if meta.get("event_type") == METADATA_EVENT and meta.get("event_payload") == marker:
                    return msg["ts"]
            cursor = (data.get("response_metadata") or {}).get("next_cursor")
            if not data.get("has_more") or not cursor:
                return None
        return None

    def permalink(self, channel: str, ts: str) -> str | None:
        """The link to a message, or None when Slack will not say."""
        try:
            return self._call("chat.getPermalink", form=True, channel=channel, message_ts=ts).get(
                "permalink"
            )
        except SlackError as exc:
            log.warning("no permalink for %s/%s: %s", channel, ts, exc)
            return None

    def message_link(self, channel: str, ts: str) -> str | None:
        """A message's permalink built from the workspace URL, without a call per message.

        Slack's permalinks have the form `<workspace url>archives/<channel>/p<ts without dot>`;
        the workspace URL comes from `auth.test`, asked once.
        """
        if self._workspace_url is None:
            try:
                self._workspace_url = str(self.auth_test().get("url") or "")
            except SlackError as exc:
                log.warning("no workspace url: %s", exc)
                return None
        if not self._workspace_url.startswith("https://"):
            return None
        base = self._workspace_url.rstrip("/")
        return f"{base}/archives/{channel}/p{ts.replace('.', '')}"

    def open_direct_message(self, user: str) -> str:
        """The id (`D…`) of the bot's direct-message conversation with `user`."""
        data = self._call("conversations.open", form=True, users=user)
        return str((data.get("channel") or {}).get("id") or "")

    def open_view(self, trigger_id: str, view: dict[str, Any]) -> None:
        """Open a modal for the person whose click carried `trigger_id` (valid ~3 s, once)."""
        self._call("views.open", trigger_id=trigger_id, view=view)

    def publish_home(self, user: str, view: dict[str, Any]) -> None:
        self._call("views.publish", user_id=user, view=view)

    def usergroup_members(self, usergroup: str) -> list[str]:
        """User ids in a user group (`S…`)."""
        data = self._call("usergroups.users.list", form=True, usergroup=usergroup)
        return list(data.get("users", []))

    def respond(
        self,
        response_url: str | None,
        message: Message,
        *,
        replace_original: bool = False,
    ) -> bool:
        """Answer the person who acted, ephemerally, through the interaction's response_url.

        Best effort and quick: the url expires after 30 minutes or 5 uses and nobody waits on a
        retry, so a failure is logged (without the url, a bearer capability), not raised.
        Only a url on hooks.slack.com or on the Web API's own origin is answered: a signed
        payload naming another server gets nothing sent there, and a warning naming the origin.
        """
        if not isinstance(response_url, str) or not response_url:
            return False
        origin = url_origin(response_url)
        if origin not in self._response_origins:
            _ignored_response_url(origin)
            return False
        try:
            client = WebhookClient(
                response_url, timeout=5, retry_handlers=[], logger=_RESPONSE_URL_LOG
            )
            response = client.send(
                text=message.text,
                blocks=message.blocks or None,
                response_type="ephemeral",
                replace_original=replace_original,
            )
        except (OSError, ValueError) as exc:
            log.warning("could not answer through the response_url: %s", type(exc).__name__)
            return False
        if response.status_code != 200:
            log.warning("the response_url answered %s", response.status_code)
        return response.status_code == 200

    def auth_test(self) -> dict[str, Any]:
        return self._call("auth.test", form=True)

    def schedule_and_delete(self, channel: str, post_at: int) -> None:
        """Prove the bot may post in `channel` without posting: schedule, then delete, a message."""
        data = self._call(
            "chat.scheduleMessage", channel=channel, post_at=post_at, text="climate-bot check"
        )
        self._call(
            "chat.deleteScheduledMessage",
            channel=channel,
            scheduled_message_id=data["scheduled_message_id"],
        )


def url_origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) URL, default ports filled in; None for anything else
    (another scheme, no host, user info, a port that is not a number)."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        return None
    return scheme, parts.hostname.lower(), port or (443 if scheme == "https" else 80)


def _ignored_response_url(origin: tuple[str, str, int] | None) -> None:
    """Say once per origin that a response_url there was not answered; never its path."""
    if origin is None:
        shown = "a URL that is not a plain http(s) URL"
    else:
        host = "".join(char for char in origin[1][:100] if char.isprintable() and char != " ")
        shown = f"{origin[0]}://{host}:{origin[2]}"
    with _IGNORED_LOCK:
        first = shown not in _IGNORED_ORIGINS and len(_IGNORED_ORIGINS) < _IGNORED_ORIGINS_LIMIT
        if first:
            _IGNORED_ORIGINS.add(shown)
    level = logging.WARNING if first else logging.DEBUG
    log.log(
        level,
        "not answering a response_url on %s: only hooks.slack.com and the Slack API's origin",
        shown,
    )


def retry_after_seconds(raw: object) -> float:
    """Seconds to wait as a 429's `Retry-After` says, bounded: 0 up to MAX_RETRY_AFTER_SECONDS.

    The wait is stored (the channel's hold survives restarts), so the header is not trusted as
    it comes: anything but a finite, non-negative number of seconds (missing, `abc`, an HTTP
    date, `-5`, `inf`, `nan`) waits DEFAULT_RETRY_AFTER_SECONDS, and a larger number (`3600`,
    `1e9`) waits the cap. If Slack still limits us after the cap, it answers 429 again.
    """
    try:
        seconds = float(str(raw).strip()) if raw is not None else math.nan
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        return DEFAULT_RETRY_AFTER_SECONDS
    return min(seconds, MAX_RETRY_AFTER_SECONDS)


def classify(exc: SlackApiError) -> SlackError:
    """Turn a slack_sdk error into what climate-bot should do about it."""
    response = exc.response
    status = getattr(response, "status_code", 200)
    data = response.data if isinstance(getattr(response, "data", None), dict) else {}
    error = data.get("error") or f"http_{status}"
    if status == 429 or error in ("ratelimited", "rate_limited"):
        headers = getattr(response, "headers", {}) or {}
        raw = headers.get("Retry-After") or headers.get("retry-after")
        return RateLimited(retry_after_seconds(raw))
    if error == "not_in_channel":
        return NotInChannel(error, http_status=status)
    if error in PERMANENT_ERRORS:
        detail = "; ".join((data.get("response_metadata") or {}).get("messages", []))
        return Permanent(error, detail, http_status=status)
    # 5xx, HTML error pages, fatal_error, internal_error, service_unavailable, unknown errors
    return Transient(error, http_status=status)
