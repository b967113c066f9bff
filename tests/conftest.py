"""Shared fixtures: a clean environment, fake Slack and Stripe, the bot served over HTTP."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings as hypothesis_settings

from bot.settings import Settings, load_settings
from bot.storage import Storage
from tests.support.bot import BOT_TOKEN, STRIPE_KEY, RunningBot, env_for, serve_bot
from tests.support.faults import FaultySlack, FaultyStripe

# Property tests explore new examples on developers' machines; CI replays a fixed set, so that a
# rare example cannot turn a submission red by luck (failures found locally become @example).
hypothesis_settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")

LEAKY_PREFIXES = ("SLACK_", "STRIPE_", "DATABASE_", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path) -> None:
    """A developer's shell (or a .env in the repo) must not leak into tests."""
    for name in list(os.environ):
        if name.startswith(LEAKY_PREFIXES) or name in ("PORT", "https_proxy"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def fake_slack() -> Iterator[FaultySlack]:
    """A started fake Slack whose failures the test can script (`tests.support.faults`)."""
    with FaultySlack(bot_token=BOT_TOKEN) as fake:
        yield fake


@pytest.fixture
def fake_stripe() -> Iterator[FaultyStripe]:
    """A fake Stripe whose failures the test can script (`tests.support.faults`)."""
    with FaultyStripe(api_key=STRIPE_KEY) as fake:
        yield fake


@pytest.fixture
def settings(tmp_path, fake_slack, fake_stripe) -> Settings:
    return load_settings(env_for(tmp_path, fake_slack, fake_stripe))


@pytest.fixture
def running(settings) -> Iterator[RunningBot]:
    with serve_bot(settings) as bot:
        yield bot


@pytest.fixture
def storage(tmp_path) -> Iterator[Storage]:
    """A `Storage` on a fresh database in the test's own directory, closed after the test."""
    store = Storage(tmp_path / "climate-bot.db")
    yield store
    store.close()
