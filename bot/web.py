"""The Flask application factory: one app serving Stripe, Slack and the operator's endpoints,
each a blueprint (`bot.stripe_webhook`, `bot.slack_listeners`, `bot.operator_routes`)."""

from __future__ import annotations

from collections.abc import Mapping

from flask import Flask, jsonify

from bot import operator_routes, slack_listeners, stripe_webhook
from bot.settings import Settings, load_settings
from bot.wiring import build_bot


def create_app(
    config: Mapping[str, str] | Settings | None = None, *, start_background: bool = False
) -> Flask:
    """Build the app. `config` overrides the environment (tests pass their own settings).

    With `start_background`, this process also runs the delivery worker and the scheduler.
    """
    settings = config if isinstance(config, Settings) else load_settings(config)
    bot = build_bot(settings)
    app = Flask("climate-bot")
    app.config["MAX_CONTENT_LENGTH"] = stripe_webhook.MAX_BODY_BYTES
    app.extensions["climate-bot"] = bot
    app.register_blueprint(stripe_webhook.blueprint)
    app.register_blueprint(slack_listeners.blueprint)
    app.register_blueprint(operator_routes.blueprint)

    @app.errorhandler(413)
    def too_large(_exc):
        return jsonify(error=f"body larger than {stripe_webhook.MAX_BODY_BYTES} bytes"), 413

    if start_background:
        bot.start_background()
    return app
