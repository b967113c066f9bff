"""What the engineer running climate-bot sees: /metrics, /readyz, and logs without secrets."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys

import pytest
import requests
import time_machine
from prometheus_client.parser import text_string_to_metric_families

from bot.model import CANCEL_ACTION
from bot.sandbox import stripe_objects as so
from bot.sandbox.slack import RESPONSE_URL_METHOD
from bot.sandbox.slack_requests import block_actions_body, sign_slack_request, slash_command_body
from tests.support.bot import (
    BOT_TOKEN,
    CHANNEL,
    SIGNING_SECRET,
    STRIPE_KEY,
    WEBHOOK_SECRET,
    env_for,
    wait_until,
)
from tests.support.processes import free_port, post, process_env, start_bot, start_gunicorn


def scrape(bot) -> dict[tuple[str, tuple], float]:
    text = requests.get(bot.url + "/metrics", timeout=10).text
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_events_slack_calls_deliveries_and_the_outbox(running, fake_slack):
    before = scrape(running)
    event = so.event("climate.order.created", so.order())
    running.send_event(event)
    running.send_event(event)  # a redelivery
    running.send_event(so.event("climate.order.created", so.order()), secret="whsec_wrong")
    during = scrape(running)
    assert value(during, "climate_bot_outbox_pending") == 1
    assert value(during, "climate_bot_outbox_oldest_pending_age_seconds") >= 0
    running.deliver()
    after = scrape(running)

    def grew(name: str, **labels) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    created = "climate.order.created"
    assert grew("climate_bot_events_received_total", type=created, outcome="queued") == 1
    assert grew("climate_bot_events_received_total", type=created, outcome="duplicate") == 1
    assert grew("climate_bot_events_received_total", type="unverified", outcome="refused") == 1
    assert grew("climate_bot_slack_calls_total", method="chat.postMessage", result="ok") == 1
    assert grew("climate_bot_delivery_seconds_count") == 1
    assert value(after, "climate_bot_outbox_pending") == 0
    assert value(after, "climate_bot_outbox_failed") == 0


def test_readyz_checks_the_database_and_reports_parked_deliveries(running, fake_slack):
    assert requests.get(running.url + "/readyz").json() == {"status": "ok", "reasons": []}
    fake_slack.add_channel(CHANNEL, "climate", is_archived=True)
    running.send_event(so.event("climate.order.created", so.order()))
    running.deliver()
    ready = requests.get(running.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "degraded"
    db = sqlite3.connect(running.bot.settings.DATABASE_PATH)
    db.execute("DROP TABLE outbox")
    db.commit()
    db.close()
    broken = requests.get(running.url + "/readyz")
    assert broken.status_code == 503 and "database" in broken.json()["reasons"][0]


def test_a_channel_held_past_a_minute_degrades_healthz_and_shows_in_metrics(running, fake_slack):
    """A long Retry-After stops a channel's posts: /healthz says which channel and until when,
    /metrics how long it is still held. A few seconds' hold is ordinary pacing: nothing to say."""
    t0 = 1_900_000_000
    with time_machine.travel(t0, tick=False) as clock:
        fake_slack.fail_next("chat.postMessage", retry_after=5)
        running.send_event(so.event("climate.order.created", so.order()))
        running.deliver()
        assert requests.get(running.url + "/healthz").json()["status"] == "ok"
        samples = scrape(running)
        assert value(samples, "climate_bot_channel_held_seconds", channel=CHANNEL) == 5
        assert value(samples, "climate_bot_channels_held_long") == 0

        clock.shift(6)
        running.deliver()
        fake_slack.fail_next("chat.postMessage", retry_after=90)
        running.send_event(so.event("climate.order.created", so.order()))
        running.deliver()
        health = requests.get(running.url + "/healthz").json()
        assert health["status"] == "degraded"
        assert health["reasons"] == [
            f"channel {CHANNEL} is held by a Slack rate limit until 2030-03-17T17:48:16Z"
            " (90 s from now); `climate-bot retry` releases it"
        ]
        ready = requests.get(running.url + "/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "degraded"
        samples = scrape(running)
        assert value(samples, "climate_bot_channel_held_seconds", channel=CHANNEL) == 90
        assert value(samples, "climate_bot_channels_held_long") == 1

        clock.shift(31)  # 59 s left: no longer reported
        assert requests.get(running.url + "/healthz").json()["status"] == "ok"
        assert value(scrape(running), "climate_bot_channels_held_long") == 0
        clock.shift(60)
        running.deliver()
        assert len(fake_slack.messages(CHANNEL)) == 2
        samples = scrape(running)
    assert not [key for key in samples if key[0] == "climate_bot_channel_held_seconds"]


@pytest.mark.slow
def test_logs_are_json_lines_and_never_carry_a_secret_url_or_body(
    tmp_path, fake_slack, fake_stripe
):
    env = {
        **env_for(tmp_path, fake_slack, fake_stripe),
        "PORT": str(free_port()),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "NO_PROXY": "127.0.0.1,localhost",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "DEBUG",
    }
    log = tmp_path / "bot.log"
    proc = start_bot(env, tmp_path, log)
    base = f"http://127.0.0.1:{env['PORT']}"
    marker = "BODY-MARKER-7f3a"
    response_url = fake_slack.new_response_url()
    try:
        order = so.order()
        fake_stripe.add_order(order)
        # The marker travels only inside the request bodies we receive, never in API answers.
        assert post(env, so.event("climate.order.created", order, idempotency_key=marker)) == 200
        delayed = so.delayed(order, 2030, at=int(__import__("time").time()))
        assert post(env, so.event("climate.order.delayed", delayed)) == 200
        forged = so.webhook_request(so.event("climate.order.created", so.order()), "whsec_other1")
        requests.post(base + "/stripe/webhook", data=forged[0], headers=forged[1], timeout=10)
        wait_until(lambda: len(fake_slack.messages(CHANNEL)) == 1, 30, "no card")
        click = block_actions_body(
            action_id=CANCEL_ACTION,
            value=order["id"],
            response_url=response_url,
            message={"type": "message", "ts": "1.000100", "text": marker, "blocks": []},
        )
        for secret in (SIGNING_SECRET, "forged-secret"):
            requests.post(
                base + "/slack/events",
                data=click,
                headers=sign_slack_request(click, secret),
                timeout=10,
            )
        command = slash_command_body(text="history climorder_x", response_url=response_url)
        acked = requests.post(
            base + "/slack/events",
            data=command,
            headers=sign_slack_request(command, SIGNING_SECRET),
            timeout=10,
        )
        fake_slack.wait_for("views.open", timeout=30)  # the genuine click opened the dialog
        if not acked.text.strip():  # the command is answered through its response_url
            fake_slack.wait_for(RESPONSE_URL_METHOD, timeout=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    assert len(lines) > 10
    for line in lines:
        record = json.loads(line)  # every line is one JSON object
        assert {"level", "name", "message"} <= set(record)
    text = log.read_text()
    for secret in (BOT_TOKEN, SIGNING_SECRET, WEBHOOK_SECRET, STRIPE_KEY, response_url, marker):
        leaks = [line for line in lines if secret in line]
        assert leaks == [], secret
    assert "delivered card" in text  # one line per thing that happened


@pytest.mark.slow
def test_app_py_metrics_under_one_process(tmp_path, fake_slack, fake_stripe):
    env = {
        **env_for(tmp_path, fake_slack, fake_stripe),
        "PORT": str(free_port()),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "NO_PROXY": "127.0.0.1,localhost",
    }
    proc = start_bot(env, tmp_path, tmp_path / "bot.log")
    try:
        assert post(env, so.event("climate.order.created", so.order())) == 200
        body = requests.get(f"http://127.0.0.1:{env['PORT']}/metrics", timeout=10).text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
    assert (
        'climate_bot_events_received_total{outcome="queued",type="climate.order.created"} 1.0'
        in body
    )
    assert created_series(body) == []
    assert sys.executable  # the same interpreter ran the bot


def created_series(body: str) -> list[str]:
    """prometheus-client's `_created` samples, which double every counter's and histogram's."""
    return re.findall(r"^\w+_created\b.*$", body, re.MULTILINE)


@pytest.mark.slow
def test_gunicorn_metrics_add_up_every_worker_without_created_series(
    tmp_path, fake_slack, fake_stripe
):
    env = process_env(tmp_path, **env_for(tmp_path, fake_slack, fake_stripe), PORT=str(free_port()))
    base = f"http://127.0.0.1:{env['PORT']}"
    log = tmp_path / "gunicorn.log"
    proc = start_gunicorn(env, tmp_path, log)
    try:
        sent = 6
        for _ in range(sent):
            assert post(env, so.event("climate.order.created", so.order())) == 200
        # Whichever worker answers a scrape, it reports what both of them counted.
        scrapes = [requests.get(base + "/metrics", timeout=10).text for _ in range(4)]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
    queued = 'climate_bot_events_received_total{outcome="queued",type="climate.order.created"}'
    for body in scrapes:
        assert f"{queued} {float(sent)}" in body, log.read_text()
        assert "climate_bot_delivery_seconds_bucket" in body
        assert created_series(body) == []


def test_a_scrape_while_a_worker_creates_its_metrics_file_still_answers(tmp_path, monkeypatch):
    # prometheus-client creates a worker's file empty, then sizes it: a scrape in between used to
    # raise struct.error (a 500 seen in CI, when the delivery worker first timed a delivery).
    from prometheus_client.mmap_dict import MmapedDict, mmap_key

    from bot import metrics
    from bot.storage import Storage

    folder = tmp_path / "metrics"
    folder.mkdir()
    counts = MmapedDict(str(folder / "counter_101.db"))
    key = mmap_key(
        "climate_bot_decisions",
        "climate_bot_decisions_total",
        ["action", "outcome"],
        ["cancel", "cancelled"],
        "Clicks on Accept/Cancel by action and outcome.",
    )
    counts.write_value(key, 2.0, 0.0)
    counts.close()
    (folder / "histogram_102.db").touch()  # the other worker, between create and size
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))

    body, _ = metrics.render(Storage(tmp_path / "bot.db"))

    text = body.decode()
    assert 'climate_bot_decisions_total{action="cancel",outcome="cancelled"} 2.0' in text
    assert "climate_bot_outbox_pending 0.0" in text


LOGGING_SCRIPT = """
import logging, sys
from bot.logs import configure_logging
configure_logging(secrets=["sk_test_abcdefgh"])
log = logging.getLogger("bot.test")
log.info("first info line")
sys.stdin.readline()
log.info("second info line")
log.warning("a warning with sk_test_abcdefgh in it")
sys.stdin.readline()
log.info("last info line")
"""


@pytest.mark.slow
def test_log_lines_are_buffered_briefly_but_warnings_and_exit_write_everything(tmp_path):
    """Lines go out through a buffer (a write per line cost 15% under load): an INFO line
    within a fraction of a second, a warning at once with everything before it, and all at
    exit."""
    err = tmp_path / "stderr"
    with open(err, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", LOGGING_SCRIPT],
            cwd=tmp_path,
            env=process_env(tmp_path),
            stdin=subprocess.PIPE,
            stderr=out,
            text=True,
        )
    try:
        wait_until(lambda: "first info line" in err.read_text(), 10, "INFO never written")
        proc.stdin.write("\n")
        proc.stdin.flush()
        wait_until(lambda: "a warning" in err.read_text(), 10, "the warning never written")
        text = err.read_text()
        assert text.index("second info line") < text.index("a warning")
        assert "sk_test_abcdefgh" not in text  # still through the redacting filter
        proc.stdin.write("\n")
        proc.stdin.close()
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
    assert err.read_text().rstrip().endswith("last info line")
