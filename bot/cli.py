"""The `climate-bot` operator commands: serve, worker, check, failed, retry."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time

import click
import stripe
from werkzeug.serving import make_server

from bot.settings import Settings, SettingsError, load_settings
from bot.slack_api import SlackError, SlackGateway


def settings_or_exit(exit_code: int = 2) -> Settings:
    """Load the settings, or print every problem and exit with `exit_code` — never a traceback."""
    try:
        return load_settings()
    except SettingsError as exc:
        click.echo(str(exc), err=True)
        sys.exit(exit_code)


def configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


@click.group()
def main() -> None:
    """climate-bot: Stripe Climate orders in Slack."""
    configure_logging()


@main.command()
@click.option("--host", default="0.0.0.0", show_default=True)
@click.option("--port", type=int, default=None, help="default: $PORT or 3000")
def serve(host: str, port: int | None) -> None:
    """Serve the web app with the delivery worker and scheduler in this one process."""
    serve_forever(settings_or_exit(), host=host, port=port)


def serve_forever(settings: Settings, *, host: str = "0.0.0.0", port: int | None = None) -> None:
    from bot.web import create_app

    app = create_app(settings, start_background=True)
    server = make_server(host, port or settings.PORT, app, threaded=True)
    logging.getLogger("climate-bot").info("listening on %s:%s", host, server.server_port)

    def stop(_signum, _frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever()
    finally:
        app.extensions["climate-bot"].stop_background()


@main.command()
def worker() -> None:
    """Run only the delivery worker and scheduler (beside a web tier that does not)."""
    from bot.web import build_bot

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
    """Check the Slack token, posting rights in the channel, and the Stripe key."""
    settings = settings_or_exit()
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

    client = stripe.StripeClient(
        settings.STRIPE_API_KEY,
        base_addresses={"api": settings.STRIPE_API_BASE},
        http_client=stripe.RequestsClient(timeout=10),
    )
    try:
        client.v1.climate.products.list(params={"limit": 1})
        report(True, "Stripe key can read Climate products")
    except stripe.AuthenticationError:
        report(False, "Stripe rejected STRIPE_API_KEY: it is unknown, revoked or mistyped")
    except stripe.PermissionError:
        report(
            False,
            "STRIPE_API_KEY may not use Climate: give the restricted key read and write "
            "access to Climate orders and products",
        )
    except stripe.APIConnectionError:
        report(False, f"cannot reach Stripe at {settings.STRIPE_API_BASE}")
    except stripe.StripeError as exc:
        report(False, f"Stripe answered an error: {exc.user_message or exc}")
    return problems


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
    """List deliveries parked after a permanent error."""
    from bot.storage import Storage

    storage = Storage(settings_or_exit().database_path)
    rows = storage.failures()
    for f in rows:
        click.echo(f"{f.id}\t{f.card_key}\t{f.kind}\t{f.last_error}")
    click.echo(f"{len(rows)} failed deliveries")


@main.command()
def retry() -> None:
    """Queue every failed delivery again (after fixing what made it fail)."""
    from bot.storage import Storage

    storage = Storage(settings_or_exit().database_path)
    click.echo(f"{storage.retry_failed()} deliveries queued again")
