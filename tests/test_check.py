"""`climate-bot check` says in words what is wrong with the Slack token, channel and Stripe key."""

from __future__ import annotations

from click.testing import CliRunner

from bot.cli import main
from tests.conftest import CHANNEL, env_for


def run_check(monkeypatch, env: dict[str, str]):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return CliRunner().invoke(main, ["check"])


def test_all_checks_pass_and_post_nothing(monkeypatch, tmp_path, fake_slack, fake_stripe):
    result = run_check(monkeypatch, env_for(tmp_path, fake_slack, fake_stripe))
    assert result.exit_code == 0, result.output
    assert "All checks passed" in result.output
    assert fake_slack.messages(CHANNEL) == []  # proved by scheduling and deleting, not posting
    assert fake_slack.calls_to("chat.deleteScheduledMessage")


def test_revoked_slack_token_is_explained(monkeypatch, tmp_path, fake_slack, fake_stripe):
    fake_slack.set_token_state("token_revoked")
    result = run_check(monkeypatch, env_for(tmp_path, fake_slack, fake_stripe))
    assert result.exit_code == 1
    assert "reinstall the app" in result.output


def test_archived_or_missing_channel_is_explained(monkeypatch, tmp_path, fake_slack, fake_stripe):
    fake_slack.add_channel(CHANNEL, "climate", is_archived=True)
    result = run_check(monkeypatch, env_for(tmp_path, fake_slack, fake_stripe))
    assert result.exit_code == 1
    assert "archived" in result.output
    env = {**env_for(tmp_path, fake_slack, fake_stripe), "SLACK_CHANNEL": "C0NOWHERE"}
    result = run_check(monkeypatch, env)
    assert "no such channel" in result.output


def test_private_channel_without_the_bot_is_explained(
    monkeypatch, tmp_path, fake_slack, fake_stripe
):
    fake_slack.add_channel("G0SECRET", "secret", is_private=True, is_member=False)
    env = {**env_for(tmp_path, fake_slack, fake_stripe), "SLACK_CHANNEL": "G0SECRET"}
    result = run_check(monkeypatch, env)
    assert result.exit_code == 1
    assert "/invite @climate-bot" in result.output


def test_unknown_stripe_key_is_explained(monkeypatch, tmp_path, fake_slack, fake_stripe):
    env = {**env_for(tmp_path, fake_slack, fake_stripe), "STRIPE_API_KEY": "sk_test_unknown"}
    result = run_check(monkeypatch, env)
    assert result.exit_code == 1
    assert "Stripe rejected STRIPE_API_KEY" in result.output


def test_restricted_key_without_climate_access_is_explained(
    monkeypatch, tmp_path, fake_slack, fake_stripe
):
    fake_stripe.add_api_key("rk_test_nothing", permissions=[])
    env = {**env_for(tmp_path, fake_slack, fake_stripe), "STRIPE_API_KEY": "rk_test_nothing"}
    result = run_check(monkeypatch, env)
    assert result.exit_code == 1
    assert "may not use Climate" in result.output


def test_unreachable_stripe_is_explained(monkeypatch, tmp_path, fake_slack, fake_stripe):
    fake_stripe.set_down(True)
    result = run_check(monkeypatch, env_for(tmp_path, fake_slack, fake_stripe))
    assert result.exit_code == 1
    assert "cannot reach Stripe" in result.output


def test_bad_configuration_exits_2_with_every_problem(monkeypatch):
    result = CliRunner().invoke(main, ["check"], env={"SLACK_CHANNEL": "#x"})
    assert result.exit_code == 2
    assert "SLACK_BOT_TOKEN is not set" in result.output
    assert "Traceback" not in result.output
