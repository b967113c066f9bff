"""The settings of a bot wired to the fake Slack and Stripe servers, in one place: the tests, the
demo and the benches each start a real bot against the fakes with these."""

from __future__ import annotations

from pathlib import Path

# The secrets of a bot that only ever talks to the fakes: fixed, so a test can sign a request
# the bot accepts. The demo draws its own (`fake_bot_env(..., **secrets)`).
WEBHOOK_SECRET = "whsec_test_secret"
SIGNING_SECRET = "slack-signing-secret"
STRIPE_KEY = "sk_test_fake"
BOT_TOKEN = "xoxb-test-token"
CHANNEL = "C0CLIMATE"  # FakeSlack's default channel


def fake_bot_env(
    database: str | Path, slack_api_url: str, stripe_api_base: str, **overrides: str | None
) -> dict[str, str]:
    """The variables of a bot whose database is `database` and whose Slack and Stripe are the
    fakes at those URLs; `overrides` replace or add variables (other secrets, deciders, PORT),
    and one given as None is left out (a Socket Mode bot has no signing secret)."""
    env = {
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "STRIPE_API_KEY": STRIPE_KEY,
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_CHANNEL": CHANNEL,
        "DATABASE_PATH": str(database),
        "SLACK_API_URL": slack_api_url,
        "STRIPE_API_BASE": stripe_api_base,
        **overrides,
    }
    return {name: value for name, value in env.items() if value is not None}
