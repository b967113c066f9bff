"""`climate-bot check` says in words what is wrong with the Slack tokens, channel and Stripe key."""

from __future__ import annotations

import subprocess

import pytest
from click.testing import CliRunner

from bot.cli import CHECK_ORDER_ID, STRIPE_ACCESS, main
from bot.sandbox.stripe import EVENT_READ, ORDER_READ, ORDER_WRITE, PRODUCT_READ
from bot.slack_socket import app_token_problem
from tests.support.bot import BOT_TOKEN, CHANNEL, env_for
from tests.support.processes import BIN, REPO, process_env

# What the README tells an operator to grant a restricted key.
README_ACCESS = [ORDER_WRITE, PRODUCT_READ, EVENT_READ]


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
    for access in STRIPE_ACCESS:
        assert f"FAIL  STRIPE_API_KEY may not {access.action}: give the key {access.needs}" in (
            result.output
        )


def test_a_restricted_key_with_what_the_readme_names_passes_and_nothing_is_cancelled(
    monkeypatch, tmp_path, fake_slack, fake_stripe
):
    fake_stripe.add_api_key("rk_test_enough", permissions=README_ACCESS)
    env = {**env_for(tmp_path, fake_slack, fake_stripe), "STRIPE_API_KEY": "rk_test_enough"}
    result = run_check(monkeypatch, env)
    assert result.exit_code == 0, result.output
    for access in STRIPE_ACCESS:
        assert f"ok    Stripe key can {access.action}" in result.output
    asked = {(c.method, c.path.split("?")[0], c.status) for c in fake_stripe.calls}
    assert asked == {
        ("GET", "/v1/climate/products", 200),
        ("GET", "/v1/climate/orders", 200),
        ("POST", f"/v1/climate/orders/{CHECK_ORDER_ID}/cancel", 404),  # no such order
        ("GET", "/v1/events", 200),
    }
    readme = " ".join((REPO / "README.md").read_text().split())
    for access in STRIPE_ACCESS:  # the README asks for what check asks Stripe for
        assert access.needs in readme


@pytest.mark.parametrize(
    ("granted", "missing"),
    [
        ([ORDER_READ, PRODUCT_READ, EVENT_READ], "cancel Climate orders"),
        ([ORDER_WRITE, EVENT_READ], "read Climate products"),
        ([ORDER_WRITE, PRODUCT_READ], "read Events (climate-bot replay)"),
    ],
)
def test_each_access_a_restricted_key_lacks_is_named(
    monkeypatch, tmp_path, fake_slack, fake_stripe, granted, missing
):
    fake_stripe.add_api_key("rk_test_short", permissions=granted)
    env = {**env_for(tmp_path, fake_slack, fake_stripe), "STRIPE_API_KEY": "rk_test_short"}
    result = run_check(monkeypatch, env)
    assert result.exit_code == 1
    assert [line for line in result.output.splitlines() if line.startswith("FAIL")] == [
        f"FAIL  STRIPE_API_KEY may not {missing}: give the key "
        + next(a.needs for a in STRIPE_ACCESS if a.action == missing)
    ]


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


def test_check_prints_its_findings_and_no_library_log_lines(tmp_path, fake_slack, fake_stripe):
    result = subprocess.run(
        [str(BIN / "climate-bot"), "check"],
        cwd=tmp_path,
        env=process_env(tmp_path, **env_for(tmp_path, fake_slack, fake_stripe)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "All checks passed." in result.stdout
    assert result.stderr == ""  # no "INFO stripe: Request to Stripe api" per request


def socket_mode_env(tmp_path, fake_slack, fake_stripe, app_token: str) -> dict[str, str]:
    env = {**env_for(tmp_path, fake_slack, fake_stripe), "SLACK_APP_TOKEN": app_token}
    del env["SLACK_SIGNING_SECRET"]
    return env


def test_the_app_token_of_socket_mode_is_checked_without_opening_a_connection(
    monkeypatch, tmp_path, fake_slack, fake_stripe
):
    env = socket_mode_env(tmp_path, fake_slack, fake_stripe, fake_slack.app_token)
    result = run_check(monkeypatch, env)
    assert result.exit_code == 0, result.output
    assert "ok    SLACK_APP_TOKEN may open a Socket Mode connection" in result.output
    assert len(fake_slack.calls_to("apps.connections.open")) == 1
    assert fake_slack.socket.opened == 0  # a URL was handed out; nothing connected to it


def test_a_wrong_app_token_is_explained(monkeypatch, tmp_path, fake_slack, fake_stripe):
    env = socket_mode_env(tmp_path, fake_slack, fake_stripe, "xapp-1-A0FAKE-1-mistyped")
    result = run_check(monkeypatch, env)
    assert result.exit_code == 1
    assert [line for line in result.output.splitlines() if line.startswith("FAIL")] == [
        "FAIL  Slack refused SLACK_APP_TOKEN (invalid_auth): SLACK_APP_TOKEN is not valid: create"
        " an app-level token with connections:write (the app's Basic Information → App-Level"
        " Tokens) and copy it whole"
    ]
    assert "xapp-1-A0FAKE-1-mistyped" not in result.output


def test_a_bot_token_where_the_app_token_goes_is_named_as_such(fake_slack):
    # Settings refuse a SLACK_APP_TOKEN without xapp-; Slack tells the type apart by itself.
    problem = app_token_problem(BOT_TOKEN, fake_slack.api_url)
    assert problem is not None
    assert "(not_allowed_token_type): SLACK_APP_TOKEN is not an app-level token" in problem


def test_an_unreachable_slack_is_said_for_the_app_token_too(
    monkeypatch, tmp_path, fake_slack, fake_stripe
):
    env = socket_mode_env(tmp_path, fake_slack, fake_stripe, fake_slack.app_token)
    fake_slack.fail_next("apps.connections.open", status=503)
    result = run_check(monkeypatch, env)
    assert result.exit_code == 1
    assert "FAIL  Slack answered HTTP 503 when asked for a Socket Mode URL" in result.output
