"""The `climate-bot` commands an operator runs; `climate-bot --help` lists them."""

from __future__ import annotations

import inspect
import logging
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import click
import stripe

from bot import logs
from bot.model import HANDLED_EVENTS
from bot.settings import Settings, SettingsError, load_settings, webhook_secrets
from bot.slack_gateway import SlackError, SlackGateway
from bot.storage import StorageUnavailable


def settings_or_exit(exit_code: int = 2) -> Settings:
    """Load the settings, or print every problem and exit with `exit_code` — never a traceback."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        click.echo(str(exc), err=True)
        sys.exit(exit_code)
    # Now that the secrets are known, every log line is filtered for them.
    logs.configure_logging(
        fmt=settings.LOG_FORMAT,
        level=logging.getLevelName(settings.LOG_LEVEL),
        secrets=settings.secrets(),
    )
    return settings


@contextmanager
def database_or_exit(exit_code: int = 2) -> Iterator[None]:
    """A database that cannot be opened (read-only, unreadable, not SQLite) or that vanished:
    one line saying which and why, and exit with `exit_code` — never a traceback."""
    try:
        yield
    except StorageUnavailable as exc:
        click.echo(f"climate-bot: {exc}", err=True)
        sys.exit(exit_code)


def configure_logging() -> None:
    """Logging before the settings are read (text, INFO, generic secret patterns masked)."""
    logs.configure_logging()


class Command(click.Command):
    """A command whose line in `climate-bot --help` is the first paragraph of its help, whole."""

    def get_short_help_str(self, limit: int = 45) -> str:
        # click cuts that paragraph at the terminal's width with "..."; ours are written short.
        if self.short_help or not self.help:
            return super().get_short_help_str(limit)
        return " ".join(inspect.cleandoc(self.help).split("\n\n", 1)[0].split())


class Group(click.Group):
    command_class = Command

    def invoke(self, ctx: click.Context) -> Any:
        with database_or_exit():
            return super().invoke(ctx)


@click.group(cls=Group)
def main() -> None:
    """climate-bot: Stripe Climate orders in Slack."""
    configure_logging()


@main.command()
@click.option("--host", default="0.0.0.0", show_default=True)
@click.option("--port", type=int, default=None, help="default: $PORT or 3000")
def serve(host: str, port: int | None) -> None:
    """Serve the web app with the delivery worker and scheduler in this one process."""
    serve_forever(settings_or_exit(), host=host, port=port)


# Under gunicorn, exit code 3 means "worker failed to boot": gunicorn stops instead of
# restarting the worker forever with the same bad configuration.
GUNICORN_BOOT_ERROR = 3


def gunicorn_app(*, start_background: bool) -> Any:
    """The Flask app a gunicorn worker serves: app.py's, or web_tier.py's without the delivery
    worker and scheduler. A bad configuration or an unusable database is one message and exit
    code 3, never a traceback."""
    configure_logging()
    settings = settings_or_exit(GUNICORN_BOOT_ERROR)
    from bot.web import create_app

    with database_or_exit(GUNICORN_BOOT_ERROR):  # read-only, unreadable: one line, no traceback
        return create_app(settings, start_background=start_background)


def serve_forever(settings: Settings, *, host: str = "0.0.0.0", port: int | None = None) -> None:
    from bot.server import make_server
    from bot.web import create_app

    app = create_app(settings, start_background=True)
    server = make_server(app, host, settings.PORT if port is None else port)
    logging.getLogger("climate-bot").info("listening on %s:%s", host, server.effective_port)

    def stop(_signum, _frame):
        # waitress's loop ends on SystemExit and lets the requests it is running finish.
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.run()
    finally:
        app.extensions["climate-bot"].stop_background()


@main.command()
def worker() -> None:
    """Run the delivery worker and scheduler (and Events API reader, Slack socket), no web app.

    Beside a web tier that does not run them. With SLACK_APP_TOKEN, only the process that holds
    the socket's lease connects to Slack; the others stand by."""
    from bot.wiring import build_bot

    bot = build_bot(settings_or_exit())
    signal.signal(signal.SIGTERM, lambda *_: bot.stop_background())
    bot.start_background()
    try:
        while bot.threads and any(t.is_alive() for t in bot.threads):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        bot.stop_background()


@main.command()
def check() -> None:
    """Check the Slack tokens, posting rights in the channel, and the Stripe key."""
    settings = settings_or_exit()
    # The findings below are the output; the libraries' INFO line per request would bury them.
    root = logging.getLogger()
    if root.level > logging.DEBUG:
        root.setLevel(max(root.level, logging.WARNING))
    problems = run_checks(settings, echo=click.echo)
    if problems:
        click.echo(f"\n{len(problems)} problem(s) found.", err=True)
        sys.exit(1)
    click.echo("\nAll checks passed.")


def run_checks(settings: Settings, *, echo=print) -> list[str]:
    """Check each external dependency and say in words what is wrong; return the problems."""
    problems: list[str] = []

    def report(ok: bool, text: str) -> None:
        echo(("ok    " if ok else "FAIL  ") + text)
        if not ok:
            problems.append(text)

    slack = SlackGateway(settings.SLACK_BOT_TOKEN, settings.SLACK_API_URL)
    try:
        who = slack.auth_test()
        report(True, f"Slack token works: bot {who.get('user')} in workspace {who.get('team')}")
        token_ok = True
    except SlackError as exc:
        report(False, f"Slack token rejected ({exc.error}): {SLACK_HINTS.get(exc.error, exc)}")
        token_ok = False
    if token_ok:
        try:
            slack.schedule_and_delete(settings.SLACK_CHANNEL, int(time.time()) + 3600)
            report(True, f"the bot can post in channel {settings.SLACK_CHANNEL}")
        except SlackError as exc:
            hint = SLACK_HINTS.get(exc.error, str(exc))
            report(False, f"the bot cannot post in {settings.SLACK_CHANNEL} ({exc.error}): {hint}")
    if settings.SLACK_APP_TOKEN is not None:
        from bot.slack_socket import app_token_problem

        # apps.connections.open only hands out a socket URL: no connection is opened.
        problem = app_token_problem(settings.SLACK_APP_TOKEN, settings.SLACK_API_URL)
        report(problem is None, problem or "SLACK_APP_TOKEN may open a Socket Mode connection")

    client = stripe.StripeClient(
        settings.STRIPE_API_KEY,
        base_addresses={"api": settings.STRIPE_API_BASE},
        http_client=stripe.RequestsClient(timeout=10),
    )
    for access in STRIPE_ACCESS:
        try:
            access.ask(client)
        except stripe.AuthenticationError:
            report(False, "Stripe rejected STRIPE_API_KEY: it is unknown, revoked or mistyped")
            break
        except stripe.PermissionError:
            report(False, f"STRIPE_API_KEY may not {access.action}: give the key {access.needs}")
            continue
        except stripe.APIConnectionError:
            report(False, f"cannot reach Stripe at {settings.STRIPE_API_BASE}")
            break
        except stripe.InvalidRequestError as exc:
            if not (access.missing_is_ok and exc.http_status == 404):
                report(False, f"Stripe answered an error: {exc.user_message or exc}")
                continue
        except stripe.StripeError as exc:
            report(False, f"Stripe answered an error: {exc.user_message or exc}")
            continue
        report(True, f"Stripe key can {access.action}")
    return problems


@dataclass(frozen=True)
class StripeAccess:
    """One access the bot needs from a restricted key, and a request that proves it."""

    action: str  # "the key can …"
    needs: str  # what to grant in the Dashboard, as the README says it
    ask: Callable[[stripe.StripeClient], object]
    # A 404 proves the access too: a restricted key's permission is checked per endpoint, before
    # the object is looked up [inferred from Stripe's 403 wording; the fake does the same].
    missing_is_ok: bool = False


# An id no order has: cancelling it proves the key may cancel, and cancels nothing.
CHECK_ORDER_ID = "climorder_climatebotcheck000000000000"

STRIPE_ACCESS = (
    StripeAccess(
        "read Climate products",
        "Read access to Climate products",
        lambda client: client.v1.climate.products.list(params={"limit": 1}),
    ),
    StripeAccess(
        "read Climate orders",
        "Write access to Climate orders",
        lambda client: client.v1.climate.orders.list(params={"limit": 1}),
    ),
    StripeAccess(
        "cancel Climate orders",
        "Write access to Climate orders",
        lambda client: client.v1.climate.orders.cancel(CHECK_ORDER_ID),
        missing_is_ok=True,
    ),
    StripeAccess(
        "read Events (climate-bot replay)",
        "Read access to Events",
        lambda client: client.v1.events.list(params={"limit": 1}),
    ),
)


SLACK_HINTS = {
    "invalid_auth": "SLACK_BOT_TOKEN is not a valid token; copy the Bot User OAuth Token again",
    "not_authed": "no token was sent; set SLACK_BOT_TOKEN",
    "token_revoked": "the app was uninstalled or the token revoked; reinstall the app",
    "account_inactive": "the bot user or workspace is deactivated",
    "channel_not_found": "no such channel, or it is private and the bot is not in it; "
    "check SLACK_CHANNEL and /invite @climate-bot",
    "not_in_channel": "the bot is not a member; /invite @climate-bot into the channel "
    "(public channels are joined automatically when posting)",
    "is_archived": "the channel is archived; unarchive it or choose another",
    "missing_scope": "the app lacks a scope; reinstall it from manifest.yml",
    "connection_error": "cannot reach Slack; check SLACK_API_URL and the network",
}


@main.command()
def failed() -> None:
    """List parked deliveries, and Stripe events that could not be applied."""
    from bot.storage import Storage

    storage = Storage(settings_or_exit().database_path)
    rows = storage.failures()
    for f in rows:
        click.echo(f"{f.id}\t{f.card_key}\t{f.kind}\t{f.last_error}")
    click.echo(f"{len(rows)} failed deliveries")
    parked = storage.parked_events()
    for event in parked:
        click.echo(
            f"{event['id']}\t{event['type']}\t{event['object_id'] or '-'}\t{event['apply_error']}"
        )
    if parked:
        click.echo(f"{len(parked)} Stripe events recorded but not applied")


@main.command()
def retry() -> None:
    """Queue every failed delivery again (after fixing what made it fail).

    Channels held by a Slack rate limit for more than a minute from now (what /healthz reports)
    may post again at once; ordinary pacing, a second after each post, is left alone. Stripe
    events that could not be applied are applied again; gaps found in Stripe's events (a reading
    after more than 30 days) are acknowledged."""
    from bot.storage import Storage

    storage = Storage(settings_or_exit().database_path)
    click.echo(f"{storage.retry_failed()} deliveries queued again")
    events = storage.retry_parked_events()
    if events:
        click.echo(f"{events} Stripe events to be applied again (by the running bot's worker)")
    click.echo(f"{storage.release_long_holds()} channels released from a Slack rate-limit hold")
    gaps = storage.acknowledge_gaps(now=time.time())
    if gaps:
        click.echo(f"{gaps} gaps in Stripe's events acknowledged (/healthz no longer reports them)")


def _when(value: str, option: str, *, end_of_day: bool = False) -> int:
    from bot.replay import parse_when

    try:
        return parse_when(value, end_of_day=end_of_day)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


@main.command("replay")
@click.option(
    "--since",
    required=True,
    metavar="DATE",
    help="2026-11-01 (UTC), an ISO datetime or unix seconds",
)
@click.option("--until", default=None, metavar="DATE", help="as --since; a date includes its day")
@click.option("--dry-run", is_flag=True, help="List what would be processed; write nothing.")
@click.option(
    "--account",
    "accounts",
    multiple=True,
    metavar="ACCT",
    help="also replay this connected account (acct_…); repeatable",
)
def replay_command(since: str, until: str | None, dry_run: bool, accounts: tuple[str, ...]) -> None:
    """Receive the Climate events Stripe created since DATE, as webhooks are received.

    Stripe keeps events for 30 days; ids already recorded are skipped. Safe while the bot runs:
    its worker posts them."""
    from bot.replay import replay, replay_accounts, retention_warning
    from bot.storage import Storage
    from bot.stripe_gateway import StripeFailure, StripeGateway

    for account in accounts:
        if not re.fullmatch(r"acct_[A-Za-z0-9]+", account):
            raise click.BadParameter(f"{account!r} is not an acct_… id", param_hint="--account")
    start = _when(since, "--since")
    end = _when(until, "--until", end_of_day=True) if until else None
    if end is not None and end < start:
        raise click.BadParameter("is before --since", param_hint="--until")
    settings = settings_or_exit()
    warning = retention_warning(start)
    if warning:
        click.echo(warning, err=True)
    # A dry run must not even create the database file.
    exists = settings.database_path.exists()
    storage = Storage(settings.database_path) if exists or not dry_run else None

    def progress(events):
        click.echo(f"{len(events)} Climate events at Stripe in that range", err=True)
        return click.progressbar(
            events, label="Receiving", file=sys.stderr, hidden=dry_run or not events
        )

    try:
        summary = replay(
            StripeGateway(settings.STRIPE_API_KEY, settings.STRIPE_API_BASE),
            storage,
            settings,
            since=start,
            until=end,
            dry_run=dry_run,
            progress=progress,
            accounts=replay_accounts(settings, storage, accounts),
        )
    except StripeFailure as exc:
        click.echo(f"Stripe could not list the events; nothing was written: {exc}", err=True)
        sys.exit(1)
    for event in summary.events:
        if dry_run:
            click.echo(event.line())
        elif event.status == "failed":
            click.echo(event.line(), err=True)
    click.echo(str(summary))
    if summary.new and not dry_run:
        click.echo(
            "Their Slack messages are queued: the running bot (climate-bot serve, python app.py "
            "or climate-bot worker) posts them. If no bot is running, start one."
        )
    if summary.failed:
        sys.exit(1)


TRIGGER_HELP = "\n\n".join(
    [
        "POST a realistic, signed EVENT_TYPE event to a running bot, like `stripe trigger`.",
        "EVENT_TYPE is one of the seven Climate events climate-bot handles:",
        # "\b" keeps click from joining the types into one wrapped line.
        "\b\n" + "\n".join(f"  {name}" for name in HANDLED_EVENTS),
        "Several triggers with one --order tell one order's story on one card.",
    ]
)


@main.command("trigger", help=TRIGGER_HELP)
@click.argument("event_type")
@click.option("--url", default=None, help="default: http://127.0.0.1:$PORT/stripe/webhook")
@click.option(
    "--order", "order_id", default=None, metavar="ID", help="reuse this order id (climorder_…)"
)
def trigger_command(event_type: str, url: str | None, order_id: str | None) -> None:
    from bot.model import ORDER_EVENTS
    from bot.trigger import (
        TRIGGER_TYPES,
        BotUnreachable,
        build_event,
        describe,
        load_trigger_settings,
        send_event,
    )

    if event_type not in TRIGGER_TYPES:
        click.echo(f"Unknown event type {event_type!r}; choose one of:", err=True)
        for name in TRIGGER_TYPES:
            click.echo(f"  {name}", err=True)
        sys.exit(2)
    if order_id is not None and (
        event_type not in ORDER_EVENTS or not order_id.startswith("climorder_")
    ):
        raise click.BadParameter(
            "takes a climorder_… id, and only with a climate.order.* event", param_hint="--order"
        )
    try:
        target = load_trigger_settings()
    except SettingsError as exc:
        problems = "\n".join(f"  - {p}" for p in exc.problems)
        click.echo(f"climate-bot trigger cannot send; fix the configuration:\n{problems}", err=True)
        sys.exit(2)
    event = build_event(event_type, order_id=order_id)
    destination = url or target.webhook_url
    click.echo(f"POST {destination}\n  {describe(event)}")
    try:
        # Signed with the first of the secrets; the bot accepts any of them.
        secret = webhook_secrets(target.STRIPE_WEBHOOK_SECRET)[0]
        result = send_event(event, destination, secret)
    except BotUnreachable as exc:
        click.echo(
            f"climate-bot trigger cannot send {event_type}: {exc}.\n"
            "Is the bot running there? Start it with `climate-bot serve`.",
            err=True,
        )
        sys.exit(1)
    click.echo(f"bot answered {result.status}: {result.answer}")
    if not result.accepted:
        click.echo("The bot refused the event.", err=True)
        sys.exit(1)


@main.command()
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=3000,
    show_default=True,
    help="port of the Slack sandbox page on 127.0.0.1 (0: any free port)",
)
@click.option("--fast", is_flag=True, help="tell the story at once instead of a few seconds apart")
@click.option(
    "--events",
    type=click.IntRange(0, 100_000),
    default=0,
    show_default=True,
    metavar="N",
    help="add N random events after the story, for a busy channel",
)
@click.option(
    "--socket-mode",
    is_flag=True,
    help="connect the bot over Socket Mode and have it read Stripe's Events API (no webhook)",
)
def demo(port: int, fast: bool, events: int, socket_mode: bool) -> None:
    """Try climate-bot without Slack or Stripe: a Slack sandbox in your browser.

    Starts, on 127.0.0.1, a fake Slack workspace shown as a web page, a fake Stripe Climate with
    Frontier's inventory, and the bot itself between them; then tells a story as signed Stripe
    webhooks. With --socket-mode the bot takes no request at all, as with no public URL: Slack's
    clicks and commands come over a websocket the bot opened, and it reads Stripe's Events API
    every second. The bot posts at Slack's pace, about one message a second. Ctrl-C stops it all.
    """
    from bot.demo import DemoError, run_demo

    try:
        run_demo(port=port, fast=fast, events=events, socket_mode=socket_mode)
    except DemoError as exc:
        click.echo(f"climate-bot demo: {exc}", err=True)
        sys.exit(1)
