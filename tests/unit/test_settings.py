"""Configuration: one typed object, every problem reported at once, no traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bot.settings import SettingsError, load_settings
from tests.support.paths import REPO
from tests.support.processes import gunicorn_command, process_env

VALID = {
    "STRIPE_WEBHOOK_SECRET": "whsec_abc",
    "STRIPE_API_KEY": "rk_live_abc",
    "SLACK_BOT_TOKEN": "xoxb-1-2-3",
    "SLACK_SIGNING_SECRET": "s3cret",
    "SLACK_CHANNEL": "C0123ABCD",
}


def test_defaults_fill_the_optional_variables():
    settings = load_settings(VALID)
    assert settings.DATABASE_PATH == "climate-bot.db"
    assert settings.SLACK_API_URL == "https://slack.com/api/"
    assert settings.STRIPE_API_BASE == "https://api.stripe.com"
    assert settings.PORT == 3000


def test_every_missing_and_malformed_variable_is_named_at_once():
    with pytest.raises(SettingsError) as info:
        load_settings({"SLACK_CHANNEL": "#climate", "PORT": "eighty", "STRIPE_API_KEY": "pk_x"})
    text = str(info.value)
    for name in ("STRIPE_WEBHOOK_SECRET", "SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"):
        assert f"{name} is not set" in text
    for name in ("SLACK_CHANNEL", "PORT", "STRIPE_API_KEY"):
        assert f"{name} is malformed" in text
    assert len(info.value.problems) == 6


def test_secrets_never_appear_in_the_settings_repr():
    text = repr(load_settings(VALID))
    assert "s3cret" not in text and "xoxb-1-2-3" not in text and "whsec_abc" not in text


def test_dotenv_is_read_and_the_real_environment_wins(tmp_path, monkeypatch):
    lines = [f"{k}={v}" for k, v in VALID.items()] + ["PORT=4000"]
    (tmp_path / ".env").write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("PORT", "5000")
    settings = load_settings()
    assert settings.SLACK_CHANNEL == "C0123ABCD"
    assert settings.PORT == 5000


def test_app_py_with_bad_configuration_exits_nonzero_without_a_traceback(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "SLACK_CHANNEL": "general"}
    result = subprocess.run(
        [sys.executable, str(REPO / "app.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "SLACK_BOT_TOKEN is not set" in result.stderr
    assert "SLACK_CHANNEL is malformed" in result.stderr


def test_gunicorn_with_bad_configuration_stops_instead_of_rebooting_workers(tmp_path):
    # gunicorn.conf.py checks the configuration before forking; from a folder of its own, so
    # that a developer's .env in the repo cannot make the configuration valid.
    result = subprocess.run(
        gunicorn_command("-w", "2", "-b", "127.0.0.1:0"),
        cwd=tmp_path,
        env=process_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "STRIPE_WEBHOOK_SECRET is not set" in result.stderr
    assert "Traceback" not in result.stderr
    assert "Booting worker" not in result.stderr


@pytest.mark.parametrize(
    "secret", ["sk_test_pasted_the_wrong_key", "WHSEC_abc", "whsec_abc,sk_test_x", "whsec_a,,"]
)
def test_a_webhook_secret_without_whsec_is_refused_by_the_bot_and_by_trigger(secret):
    from bot.trigger import load_trigger_settings

    for load in (load_settings, load_trigger_settings):
        with pytest.raises(SettingsError) as info:
            load({**VALID, "STRIPE_WEBHOOK_SECRET": secret})
        assert "STRIPE_WEBHOOK_SECRET is malformed: " in str(info.value)
        assert "whsec_" in str(info.value) or "empty secret" in str(info.value)
        for part in secret.split(","):
            assert not part or part not in str(info.value)  # no secret is ever echoed
    assert "whsec_abc" not in repr(load_trigger_settings(VALID))


def test_several_webhook_secrets_are_each_validated_and_each_masked():
    settings = load_settings({**VALID, "STRIPE_WEBHOOK_SECRET": "whsec_first, whsec_second"})
    assert settings.webhook_secrets == ("whsec_first", "whsec_second")
    assert {"whsec_first", "whsec_second"} <= set(settings.secrets())  # masked in every log line
    assert "whsec_" not in repr(settings)


def test_each_secret_is_needed_only_without_its_alternative():
    stripped = {k: v for k, v in VALID.items() if k not in ("STRIPE_WEBHOOK_SECRET",)}
    with pytest.raises(SettingsError) as info:
        load_settings(stripped)
    assert "STRIPE_WEBHOOK_SECRET is not set" in str(info.value)
    assert "not needed when STRIPE_POLL_INTERVAL is set" in str(info.value)  # the way out, named

    reading = load_settings({**stripped, "STRIPE_POLL_INTERVAL": "10"})
    assert (reading.STRIPE_POLL_INTERVAL, reading.webhook_secrets) == (10.0, ())
    assert reading.polls_stripe and not reading.socket_mode

    both = load_settings({**VALID, "STRIPE_POLL_INTERVAL": "10"})
    assert both.webhook_secrets == ("whsec_abc",)  # webhooks and readings together

    no_signing = {k: v for k, v in VALID.items() if k != "SLACK_SIGNING_SECRET"}
    socket = load_settings({**no_signing, "SLACK_APP_TOKEN": "xapp-1-A0-1-abc"})
    assert socket.socket_mode and socket.SLACK_SIGNING_SECRET is None
    assert "xapp-1-A0-1-abc" in socket.secrets() and "xapp-" not in repr(socket)


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("STRIPE_POLL_INTERVAL", "0.5", "greater than or equal to 1"),
        ("STRIPE_POLL_INTERVAL", "1e9", "less than or equal to 86400"),
        ("STRIPE_POLL_INTERVAL", "nan", "STRIPE_POLL_INTERVAL is malformed"),
        ("STRIPE_POLL_INTERVAL", "soon", "STRIPE_POLL_INTERVAL is malformed"),
        ("SLACK_APP_TOKEN", "xoxb-1-2-3", "starting with xapp-"),
    ],
)
def test_a_malformed_alternative_is_named(name, value, reason):
    with pytest.raises(SettingsError) as info:
        load_settings({**VALID, name: value})
    assert f"{name} is malformed" in str(info.value) and reason in str(info.value)
    assert value not in str(info.value) or name == "STRIPE_POLL_INTERVAL"


def test_an_empty_alternative_is_unset():
    settings = load_settings({**VALID, "STRIPE_POLL_INTERVAL": " ", "SLACK_APP_TOKEN": ""})
    assert not settings.polls_stripe and not settings.socket_mode


def test_the_env_example_is_a_socket_mode_polling_configuration_once_filled_in():
    text = (REPO / ".env.example").read_text()
    filled = text.replace("xoxb-FILL-IN", "xoxb-1-2-3").replace("xapp-FILL-IN", "xapp-1-A0-1-x")
    filled = filled.replace("C-FILL-IN", "C0123ABCD").replace("rk_test_FILL-IN", "rk_test_abc")
    env = dict(
        line.split("=", 1)
        for line in filled.splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert not [value for value in env.values() if "FILL-IN" in value]
    settings = load_settings(env)
    assert settings.socket_mode and settings.polls_stripe
    assert settings.webhook_secrets == () and settings.SLACK_SIGNING_SECRET is None
    with pytest.raises(SettingsError) as info:  # as shipped, it names what is to fill in
        load_settings(
            dict(
                line.split("=", 1)
                for line in text.splitlines()
                if line.strip() and not line.startswith("#")
            )
        )
    assert {"SLACK_CHANNEL", "STRIPE_API_KEY"} <= {p.split()[0] for p in info.value.problems}
