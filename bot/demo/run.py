"""Start and stop the whole demo: the Slack and Stripe sandboxes, the bot, and the story.

Everything runs in this one process on 127.0.0.1. The bot is the production app, built by
``create_app(settings, start_background=True)`` from the same settings an operator writes, with
``SLACK_API_URL`` and ``STRIPE_API_BASE`` pointing at the sandboxes.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server

from bot.demo.story import Story, inventory
from bot.demo.webhooks import EventsApiPublisher, EventSink, WebhookSender
from bot.demo.workspace import SlackSandbox, create_sandbox_app
from bot.sandbox.bot_env import fake_bot_env
from bot.sandbox.slack import FakeSlack
from bot.sandbox.stripe import FakeStripe
from bot.settings import load_settings
from bot.web import create_app
from bot.wiring import ClimateBot

log = logging.getLogger(__name__)

CHANNEL = "C0CLIMATE"
DECIDER = "U0ALICE"  # alice may decide; bob, the other member, may not
STORY_PAUSE = 3.0
POLL_SECONDS = 1  # with --socket-mode: how often the bot reads the Stripe sandbox's events


class DemoError(Exception):
    """The demo cannot start; the text says why and what to do."""


@dataclass
class RunningDemo:
    """A started demo. `stop()` ends every thread and server and removes its files."""

    sandbox_url: str
    bot_url: str
    slack: FakeSlack
    stripe: FakeStripe
    bot: ClimateBot
    sandbox: SlackSandbox
    story: Story
    workdir: Path
    stop_event: threading.Event
    servers: list[BaseWSGIServer] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def stop(self) -> None:
        """Shut everything down, newest first; safe to call twice."""
        self.stop_event.set()
        self.sandbox.closing.set()
        for server in reversed(self.servers):
            server.shutdown()
            server.server_close()
        self.servers.clear()
        self.bot.stop_background()
        for thread in self.threads:
            thread.join(timeout=10)
        self.threads.clear()
        self.bot.storage.close()
        self.slack.stop()
        self.stripe.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_demo(
    *, port: int = 3000, fast: bool = False, events: int = 0, socket_mode: bool = False
) -> RunningDemo:
    """Start the sandboxes, the bot and the story; return at once with everything running.

    `port` is the sandbox page's (0: any free port); `fast` plays the story without pauses;
    `events` adds that many random events after it. With `socket_mode` the bot takes no
    request at all: it connects to the Slack sandbox over Socket Mode and reads the Stripe
    sandbox's Events API, as a bot with no public URL does. Raises DemoError when the port is
    taken.
    """
    _bypass_proxies_on_loopback()
    workdir = Path(tempfile.mkdtemp(prefix="climate-bot-demo-"))
    stop_event = threading.Event()
    secrets_: dict[str, str | None] = {
        "STRIPE_API_KEY": "sk_test_demo" + secrets.token_hex(12),
        "SLACK_BOT_TOKEN": "xoxb-demo-" + secrets.token_hex(12),
    }
    if socket_mode:  # no request reaches the bot: nothing to verify a signature with
        secrets_["SLACK_APP_TOKEN"] = "xapp-1-A0DEMO-1-" + secrets.token_hex(12)
        secrets_["STRIPE_WEBHOOK_SECRET"] = secrets_["SLACK_SIGNING_SECRET"] = None
    else:
        secrets_["STRIPE_WEBHOOK_SECRET"] = "whsec_" + secrets.token_hex(16)
        secrets_["SLACK_SIGNING_SECRET"] = secrets.token_hex(16)
    slack = FakeSlack(
        bot_token=secrets_["SLACK_BOT_TOKEN"],
        app_token=secrets_.get("SLACK_APP_TOKEN", "xapp-1-A0DEMO-1-unused"),
    ).start()
    stripe = FakeStripe(api_key=secrets_["STRIPE_API_KEY"], seed=False)
    for product in inventory(int(time.time())):
        stripe.add_product(product)
    settings = load_settings(
        fake_bot_env(
            workdir / "climate-bot.db",
            slack.api_url,
            stripe.url,
            **secrets_,
            SLACK_CHANNEL=CHANNEL,
            SLACK_ALLOWED_DECIDERS=DECIDER,
            **({"STRIPE_POLL_INTERVAL": str(POLL_SECONDS)} if socket_mode else {}),
        )
    )
    app = create_app(settings, start_background=True)
    bot: ClimateBot = app.extensions["climate-bot"]
    bot_server = make_server("127.0.0.1", 0, app, threaded=True)
    bot_thread = _thread(bot_server.serve_forever, "bot-http", 0.1)
    bot_url = f"http://127.0.0.1:{bot_server.server_port}"
    sandbox = SlackSandbox(
        slack,
        app_url=bot_url,
        signing_secret=settings.SLACK_SIGNING_SECRET,
        channel=CHANNEL,
        deciders=settings.allowed_deciders,
        socket_mode=socket_mode,
    )
    webhooks: EventSink
    if socket_mode:
        webhooks = EventsApiPublisher(stripe)
    else:
        secret = settings.STRIPE_WEBHOOK_SECRET or ""
        webhooks = WebhookSender(bot_url + "/stripe/webhook", secret, stripe, stop=stop_event)
    story = Story(stripe, webhooks, pause=0.0 if fast else STORY_PAUSE, stop=stop_event)
    demo = RunningDemo(
        sandbox_url="",
        bot_url=bot_url,
        slack=slack,
        stripe=stripe,
        bot=bot,
        sandbox=sandbox,
        story=story,
        workdir=workdir,
        stop_event=stop_event,
        servers=[bot_server],
        threads=[bot_thread],
    )
    try:
        sandbox_server = make_server(
            "127.0.0.1", port, create_sandbox_app(sandbox, stripe), threaded=True
        )
    except (OSError, SystemExit):  # werkzeug exits when the port is taken
        demo.stop()
        raise DemoError(
            f"cannot listen on 127.0.0.1:{port}; is another demo running? "
            f"Try --port {port + 1 if port else 3001}."
        ) from None
    demo.servers.append(sandbox_server)
    demo.sandbox_url = f"http://127.0.0.1:{sandbox_server.server_port}/"
    if socket_mode and not _wait_for_transports(bot, slack):
        demo.stop()
        raise DemoError("the bot did not connect to the Slack sandbox over Socket Mode")
    demo.threads += [
        _thread(sandbox_server.serve_forever, "sandbox-http", 0.1),
        _thread(webhooks.forward_forever, "stripe-webhooks"),
        _thread(story.run, "story", events),
    ]
    return demo


def _wait_for_transports(bot: ClimateBot, slack: FakeSlack, timeout: float = 20.0) -> bool:
    """Whether, within `timeout`, the bot's socket is open and its first reading of Stripe's
    events is done: the story's first events come after it, or the reading would start after
    them (a first reading begins at now)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if slack.socket.connections() and bot.storage.poll_cursor(None) is not None:
            return True
        time.sleep(0.05)  # polling for start-up, not waiting for behaviour
    return False


def _say(text: str) -> None:
    print(text, flush=True)  # flushed: whoever reads our stdout (a test, a pipe) sees it at once


def run_demo(
    *,
    port: int = 3000,
    fast: bool = False,
    events: int = 0,
    socket_mode: bool = False,
    echo: Any = _say,
) -> None:
    """Run the demo until Ctrl-C or SIGTERM, then shut it down cleanly."""
    # The bot logs what it does; the sandbox's own requests (a long poll every few seconds)
    # would drown that out.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    # Handlers first: a Ctrl-C while starting up still stops everything that did start.
    done = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: done.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        demo = start_demo(port=port, fast=fast, events=events, socket_mode=socket_mode)
    except BaseException:
        _restore(previous)
        raise
    try:
        transports = (
            "Socket Mode to the Slack sandbox, Stripe's Events API read every"
            f" {POLL_SECONDS} s: no request reaches the bot"
            if socket_mode
            else "signed HTTP requests to /slack/events and /stripe/webhook"
        )
        echo(
            "\nclimate-bot demo: everything runs on this machine, nothing reaches Slack or "
            f"Stripe.\n\n  Slack sandbox:  {demo.sandbox_url}   <- open this in your browser\n"
            f"  Stripe sandbox: {demo.sandbox_url}stripe\n"
            f"  the bot:        {demo.bot_url}  (SLACK_API_URL={demo.slack.api_url}, "
            f"STRIPE_API_BASE={demo.stripe.url})\n"
            f"  transports:     {transports}\n\n"
            "You are alice, who may decide; switch to bob to be refused. "
            "Press Ctrl-C to stop.\n"
        )
        while not done.wait(0.5):
            pass
    finally:
        echo("stopping the demo…")
        demo.stop()
        _restore(previous)
        echo("stopped.")


def _restore(handlers: dict[Any, Any]) -> None:
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


def _thread(target: Any, name: str, *args: Any) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, name=name, daemon=True)
    thread.start()
    return thread


def _bypass_proxies_on_loopback() -> None:
    """Every call in the demo is to 127.0.0.1; a proxy set in the shell must not see them."""
    present = [p for p in os.environ.get("NO_PROXY", "").split(",") if p]
    wanted = [h for h in ("127.0.0.1", "localhost") if h not in present]
    if wanted:
        os.environ["NO_PROXY"] = os.environ["no_proxy"] = ",".join(present + wanted)
