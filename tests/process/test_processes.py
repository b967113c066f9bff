"""Production process layouts: gunicorn with several workers, and web + `climate-bot worker`;
in Socket Mode, one socket per deployment whatever the number of processes."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest
import requests

from bot.sandbox import stripe_objects as so
from tests.support.bot import CHANNEL, env_for, wait_until
from tests.support.processes import (
    BIN,
    free_port,
    gunicorn_command,
    post,
    process_env,
    start_bot,
    start_gunicorn,
)
from tests.support.socket_bot import send_commands

# Starts processes (or a browser): left out by `make test-fast`.
pytestmark = pytest.mark.slow


def bot_env(tmp_path, fake_slack, fake_stripe) -> dict[str, str]:
    settings = env_for(tmp_path, fake_slack, fake_stripe)
    return process_env(tmp_path, **settings, PORT=str(free_port()))


def test_gunicorn_with_two_workers_posts_each_card_once(tmp_path, fake_slack, fake_stripe):
    env = bot_env(tmp_path, fake_slack, fake_stripe)
    log = tmp_path / "gunicorn.log"
    proc = start_gunicorn(env, tmp_path, log)
    try:
        orders = [so.order() for _ in range(4)]
        for order in orders:
            assert post(env, so.event("climate.order.created", order, created=1000)) == 200
            delayed = so.delayed(order, 2030, at=2000)
            assert post(env, so.event("climate.order.delayed", delayed, created=2000)) == 200
        wait_until(
            lambda: (
                sum(len(fake_slack.replies(CHANNEL, m.ts)) for m in fake_slack.messages(CHANNEL))
                == len(orders)
            ),
            30,
            "not every event was delivered:\n" + log.read_text(),
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
    top = fake_slack.messages(CHANNEL)
    assert len(top) == len(orders)
    for order in orders:
        assert sum(order["id"] in json.dumps(m.blocks) for m in top) == 1
    # gunicorn's own lines (its format names the process) get through our logging set-up.
    text = log.read_text()
    assert "Logging error" not in text, text
    assert "WARNING" not in text, text  # a clean start and stop warns about nothing
    assert "Control socket" not in text, text  # none in $HOME shared by every instance
    assert text.count("Booting worker with pid") == 2, text


def test_the_web_tier_only_records_and_the_worker_command_applies_and_delivers(
    tmp_path, fake_slack, fake_stripe
):
    """The split layout: `gunicorn web_tier:app` runs no delivery worker, so what its webhooks
    record waits until `climate-bot worker`, another process, applies it and posts the card."""
    env = bot_env(tmp_path, fake_slack, fake_stripe)
    base = f"http://127.0.0.1:{env['PORT']}"
    web = start_gunicorn(env, tmp_path, tmp_path / "web.log", workers=1, app="web_tier:app")
    order = so.order()
    try:
        assert post(env, so.event("climate.order.created", order)) == 200
        assert requests.get(base + "/healthz", timeout=10).json()["events_to_apply"] == 1
        # No worker looked at the outbox in the web tier (app:app's looks at once on start).
        assert "climate_bot_delivery_looks_total{" not in requests.get(base + "/metrics").text
        log = tmp_path / "worker.log"
        with open(log, "ab") as out:
            worker = subprocess.Popen(
                [str(BIN / "climate-bot"), "worker"], cwd=tmp_path, env=env, stdout=out, stderr=out
            )
        try:
            wait_until(lambda: len(fake_slack.messages(CHANNEL)) == 1, 30, "worker posted nothing")
            health = requests.get(base + "/healthz", timeout=10).json()
            assert health["events_to_apply"] == 0, health
        finally:
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=15) == 0, log.read_text()
    finally:
        web.send_signal(signal.SIGTERM)
        assert web.wait(timeout=15) == 0, (tmp_path / "web.log").read_text()
    assert order["id"] in json.dumps(fake_slack.messages(CHANNEL)[0].blocks)


def metrics_dirs(env: dict[str, str]) -> list[Path]:
    return sorted(Path(env["TMPDIR"]).glob("climate-bot-metrics-*"))


def test_gunicorn_removes_its_metrics_directory_when_it_stops(tmp_path, fake_slack, fake_stripe):
    env = bot_env(tmp_path, fake_slack, fake_stripe)
    log = tmp_path / "gunicorn.log"
    proc = start_gunicorn(env, tmp_path, log)
    try:
        assert post(env, so.event("climate.order.created", so.order())) == 200
        [live] = metrics_dirs(env)  # the workers count into it while gunicorn runs
        assert list(live.glob("*.db")), log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, log.read_text()
    assert metrics_dirs(env) == []
    # A configuration gunicorn refuses before forking leaves nothing behind either.
    refused = subprocess.run(
        gunicorn_command("-b", "127.0.0.1:0"),
        cwd=tmp_path,
        env=process_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2, refused.stderr
    assert metrics_dirs(env) == []


@pytest.mark.parametrize("layout", ["gunicorn", "app.py"])
def test_in_socket_mode_one_socket_answers_and_is_handed_on_when_the_bot_stops(
    tmp_path, fake_slack, fake_stripe, layout
):
    settings = env_for(tmp_path, fake_slack, fake_stripe)
    del settings["SLACK_SIGNING_SECRET"], settings["STRIPE_WEBHOOK_SECRET"]
    env = process_env(
        tmp_path,
        **settings,
        PORT=str(free_port()),
        SLACK_APP_TOKEN=fake_slack.app_token,
        STRIPE_POLL_INTERVAL="1",
    )
    log = tmp_path / f"{layout}.log"
    if layout == "gunicorn":
        proc = start_gunicorn(env, tmp_path, log, workers=3)
    else:
        proc = start_bot(env, tmp_path, log)
    try:
        fake_slack.socket.wait_for_connections(1, 30)
        # Three gunicorn workers, one socket: every command is answered once, by its holder.
        envelopes = send_commands(fake_slack, "help", 10)
        for envelope in envelopes:
            assert "/climate" in json.dumps(fake_slack.socket.wait_ack(envelope, timeout=10))
        assert [fake_slack.socket.acks(e) for e in envelopes] == [1] * 10
        assert fake_slack.socket.connections() == 1 and fake_slack.socket.opened == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()
    # Stopping, each process gave its leases back: a new deployment connects at once.
    with sqlite3.connect(env["DATABASE_PATH"]) as db:
        assert db.execute("SELECT name FROM leases").fetchall() == []
    assert "Traceback" not in log.read_text(), log.read_text()
