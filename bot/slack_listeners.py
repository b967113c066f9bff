"""`POST /slack/events`: the Bolt app that answers Slack — buttons, `/climate`, events.

One Request URL serves slash commands, interactivity and the Events API (see manifest.yml).
Listeners acknowledge first and do slow work after. In Socket Mode (`SLACK_APP_TOKEN`, no signing
secret) the same app gets the same requests over the socket (`bot.slack_socket`), and this URL
refuses every request: nothing unsigned is ever handled.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from flask import Blueprint, Request, Response, current_app, request
from slack_bolt import App, BoltRequest, BoltResponse
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.context import BoltContext
from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped
from slack_bolt.request.internals import build_context
from slack_sdk import WebClient
from slack_sdk.signature import SignatureVerifier

from bot.cards import CANCEL_MODAL, ORDERS_NEXT_ACTION, REASON_BLOCK, REASON_INPUT, notice_view
from bot.commands import Commands
from bot.decisions import ACCEPT, CANCEL, Click, Decisions
from bot.i18n import _, use_locale
from bot.model import ACCEPT_ACTION, CANCEL_ACTION, Message
from bot.settings import Settings
from bot.slack_gateway import SlackError, SlackGateway
from bot.storage import Storage

log = logging.getLogger(__name__)


class _SameTokenFilter(logging.Filter):
    """Drops Bolt's start-up warning that the token is unused because a client was given.

    Bolt reads SLACK_BOT_TOKEN from the environment (our variable too) whenever no
    token is passed, then warns that it is ignored in favour of our client (which carries no
    token: `_authorizer` hands Bolt that same token for each request): every gunicorn worker
    logged it at every boot.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.levelno == logging.WARNING
            and record.getMessage() == warning_client_prioritized_and_token_skipped()
        )


_SAME_TOKEN = _SameTokenFilter()

# Threads that run Bolt's listeners. Each acknowledges first, then may wait on Slack (card
# links, answers through the response_url; 10 s time-outs) or Stripe (2 s): a listener that
# cannot start never acknowledges, and Slack shows the person an error after 3 s. Bolt's
# default of 5 was used up by five slow answers (a test of /climate sends ten commands and
# clicks at once against a slow Slack); threads are only started as requests need them.
LISTENER_THREADS = 32


def _authorizer(bot_token: str) -> Callable[..., AuthorizeResult]:
    """Bolt's `authorize=`: our one bot token for every request, without calling Slack.

    Given a client with a token, Bolt installs its single-workspace authorization, which asks
    `auth.test` on the first request before any listener runs, so a slow Slack delayed that
    request's acknowledgement past Slack's 3 seconds. climate-bot is installed in one workspace
    and never reads the bot's user id, scopes or the workspace URL from Bolt's context (the
    gateway asks `auth.test` itself, after acknowledging, when it builds card links).
    """

    def authorize(
        enterprise_id: str | None, team_id: str | None, user_id: str | None
    ) -> AuthorizeResult:
        return AuthorizeResult(
            enterprise_id=enterprise_id,
            team_id=team_id,
            user_id=user_id,
            bot_token=bot_token,
        )

    return authorize


def build_bolt_app(
    settings: Settings,
    decisions: Decisions,
    commands: Commands,
    storage: Storage,
    slack: SlackGateway,
) -> App:
    """The Bolt app with every listener climate-bot registers."""
    # No token on Bolt's client: with one, Bolt would call auth.test at construction or on the
    # first request. `authorize` gives each request's own client our token instead.
    client = WebClient(base_url=settings.SLACK_API_URL)
    logging.getLogger("slack_bolt.App").addFilter(_SAME_TOKEN)  # once: the same filter object
    app = App(
        # Socket Mode needs no signing secret (Bolt checks none over the socket). Without one,
        # Bolt would read $SLACK_SIGNING_SECRET, or verify HTTP requests against "": a secret
        # nobody knows keeps it from ever taking an HTTP request (`dispatch` refuses them first).
        signing_secret=settings.SLACK_SIGNING_SECRET or secrets.token_hex(32),
        client=client,
        authorize=_authorizer(settings.SLACK_BOT_TOKEN),
        listener_executor=ThreadPoolExecutor(
            max_workers=LISTENER_THREADS, thread_name_prefix="bolt-listener"
        ),
    )

    @app.action(ACCEPT_ACTION)
    @app.action(CANCEL_ACTION)
    def decision_clicked(ack, body, action):
        # Ack first: everything after runs once Slack has its answer (the database only; the
        # Stripe side of a cancel is queued for the worker).
        ack()
        channel = _id_of(body.get("channel"))
        click = Click(
            action=ACCEPT if action.get("action_id") == ACCEPT_ACTION else CANCEL,
            order_id=str(action.get("value") or ""),
            user=_id_of(body.get("user")),
            channel=channel,
            response_url=_text(body.get("response_url")) or None,
            trigger_id=_text(body.get("trigger_id")),
            user_team=_team_of_user(body),
            home_team=_id_of(body.get("team")),
        )
        with use_locale(settings.locale_for(channel)):
            text = decisions.click(click)  # None: the cancel dialog is open
        if text is not None:
            slack.respond(click.response_url, Message(text=text))

    @app.view(CANCEL_MODAL)
    def cancel_submitted(ack, body, view):
        # The submit of the dialog Cancel opened: decided in the database before the ack (Slack
        # waits 3 s for it), so that a refusal can be shown in the dialog itself.
        meta = _metadata(view.get("private_metadata"))
        channel = _text(meta.get("channel"))
        deadline = meta.get("deadline")
        click = Click(
            action=CANCEL,
            order_id=_text(meta.get("order_id")),
            user=_id_of(body.get("user")),
            channel=channel,
            response_url=_text(meta.get("response_url")) or None,
            user_team=_team_of_user(body),
            home_team=_id_of(body.get("team")),
            reason=_typed(view, REASON_BLOCK, REASON_INPUT),
            deadline=deadline if isinstance(deadline, int) else -1,
        )
        with use_locale(settings.locale_for(channel)):
            refused, text = decisions.submit_cancel(click)
            if refused:
                ack(response_action="update", view=notice_view(_("Not cancelled"), text))
                return
        ack()
        slack.respond(click.response_url, Message(text=text))

    @app.command("/climate")
    def climate_command(ack, command):
        text = _text(command.get("text"))
        offline = commands.answers_offline(text)
        if not offline:
            # Slack (card links) or Stripe must be asked: acknowledge now, answer through the
            # response_url once they have said.
            ack()
        with use_locale(settings.locale_for(_text(command.get("channel_id")))):
            answer = commands.answer(text)
        if offline:
            ack(text=answer.text, blocks=answer.blocks or None, response_type="ephemeral")
        else:
            slack.respond(_text(command.get("response_url")), answer)

    @app.action(ORDERS_NEXT_ACTION)
    def next_orders(ack, action, body):
        ack()
        with use_locale(settings.locale_for(_id_of(body.get("channel")))):
            answer = commands.next_orders(str(action.get("value") or ""))
        slack.respond(_text(body.get("response_url")), answer, replace_original=True)

    @app.event("app_home_opened")
    def home_opened(body, event):
        # Slack retries an event it thinks we missed; the view is published once per delivery id.
        if not storage.record_slack_event(str(body.get("event_id") or "")):
            return
        user = event.get("user")
        if event.get("tab", "home") != "home" or not isinstance(user, str):
            return
        with use_locale(settings.BOT_LOCALE):
            view = commands.home()
        try:
            slack.publish_home(user, view)
        except SlackError as exc:  # the next opening of the tab publishes again
            log.warning("Home tab for %s not published: %s", user, exc)

    return app


blueprint = Blueprint("slack_listeners", __name__)


@blueprint.post("/slack/events")
def slack_events() -> Response:
    bot = current_app.extensions["climate-bot"]
    return dispatch(bot.bolt, request, signing_secret=bot.settings.SLACK_SIGNING_SECRET)


def dispatch(app: App, request: Request, *, signing_secret: str | None) -> Response:
    """Hand a Flask request to Bolt, working around Bolt's "payload" parsing bug.

    Bolt parses any form body containing the letters "payload" as an interaction payload, so
    `/climate status payload-x` would be lost. For slash commands we give Bolt the
    already-parsed form; the signature is still checked on the raw body. Without a signing secret
    (Socket Mode) every request is refused: none can be told from a forgery.
    """
    if not signing_secret:
        return Response(
            '{"error": "Slack requests come over Socket Mode (SLACK_APP_TOKEN); this URL takes'
            ' none without SLACK_SIGNING_SECRET"}',
            status=401,
            mimetype="application/json",
        )
    raw = request.get_data(as_text=True)
    headers = dict(request.headers)
    # Bolt checks the signature too, but only after parsing the body, and a forged body that is
    # not JSON would crash its parser: check first, so forgeries get 401 and junk gets 400.
    # Slack's certificate probe (`ssl_check=1`) carries no signature; it only needs a 200.
    if request.form.get("ssl_check") == "1":
        return Response("", status=200)
    try:
        genuine = SignatureVerifier(signing_secret).is_valid_request(raw, headers)
    except (ValueError, TypeError):  # a timestamp that is not a number, a non-ASCII signature
        genuine = False
    if not genuine:
        return Response('{"error": "invalid request"}', status=401, mimetype="application/json")
    try:
        bolt_request = BoltRequest(
            body=raw, query=request.query_string.decode("utf-8"), headers=headers
        )
    except (ValueError, RecursionError, AttributeError, TypeError, KeyError):
        # Bolt parses and reads the body while building the request: not JSON, or not an object
        return _malformed()
    if not bolt_request.body and "command=" in raw:
        form = {k: v for k, v in request.form.items()}
        if "command" in form and "payload" not in form:
            bolt_request.body = form
            bolt_request.context = build_context(BoltContext({}), form)
    if not _shaped_like_slack(bolt_request.body):
        return _malformed()
    try:
        response: BoltResponse = app.dispatch(bolt_request)
    except Exception as exc:  # a signed body in a shape Slack never sends
        log.warning("Bolt could not dispatch a signed request: %s", type(exc).__name__)
        return _malformed()
    return Response(
        response.body, status=response.status, headers=response.first_headers_without_set_cookie()
    )


# Top-level keys Bolt reads as objects when it builds a request's context.
_OBJECT_KEYS = ("team", "user", "channel", "enterprise", "container", "event", "message", "view")


def _shaped_like_slack(body: object) -> bool:
    """True when a signed body has the shape Slack sends; Bolt assumes it without checking."""
    if not isinstance(body, dict) or not body:
        return False
    if any(key in body and not isinstance(body[key], dict | None) for key in _OBJECT_KEYS):
        return False
    if "command" in body:
        return isinstance(body["command"], str)
    kind = body.get("type")
    if kind == "block_actions":
        actions = body.get("actions")
        return (
            isinstance(actions, list)
            and bool(actions)
            and all(isinstance(a, dict) and isinstance(a.get("action_id"), str) for a in actions)
        )
    if kind == "event_callback":
        event = body.get("event")
        return isinstance(event, dict) and isinstance(event.get("type"), str)
    if kind == "url_verification":
        return isinstance(body.get("challenge"), str)
    return isinstance(kind, str)


def _id_of(entity: object) -> str:
    """The `id` of a payload's user or channel object, "" unless it is a string."""
    return _text(entity.get("id")) if isinstance(entity, dict) else ""


def _team_of_user(body: dict) -> str:
    """The clicker's own workspace (`user.team_id`; another one in a Slack Connect channel)."""
    user = body.get("user")
    return _text(user.get("team_id")) if isinstance(user, dict) else ""


def _metadata(raw: object) -> dict:
    """A view's private_metadata as we wrote it (a JSON object), or {}."""
    try:
        value = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _typed(view: dict, block_id: str, action_id: str) -> str | None:
    """What the person typed into a view's plain_text_input, or None."""
    values = (view.get("state") or {}).get("values") if isinstance(view, dict) else None
    block = values.get(block_id) if isinstance(values, dict) else None
    element = block.get(action_id) if isinstance(block, dict) else None
    value = element.get("value") if isinstance(element, dict) else None
    return value if isinstance(value, str) else None


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _malformed() -> Response:
    return Response('{"error": "malformed payload"}', status=400, mimetype="application/json")
