"""Faults of the database itself, under the real `python app.py` (and gunicorn at start-up):
deleted or replaced while the bot runs, a full disk, and a database that cannot be opened.

The rule each test holds the bot to: a webhook is acknowledged (200) only when it is stored in
the file a restart will read; otherwise it gets a 503 (Stripe retries for three days), /readyz
says not ready and why, and the operator reads one line, not a traceback.

The full and read-only disks are small tmpfs mounts, which needs root (as `make test` runs in CI).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from bot.sandbox import stripe_objects as so
from tests.support.bot import CHANNEL, WEBHOOK_SECRET, wait_until
from tests.support.processes import (
    BIN,
    REPO,
    bot_env,
    gunicorn_command,
    process_env,
    start_bot,
    stop,
)

# Starts processes (or a browser): left out by `make test-fast`.
pytestmark = pytest.mark.slow


def post(base: str, event: dict) -> requests.Response:
    body, headers = so.webhook_request(event, WEBHOOK_SECRET)
    return requests.post(base + "/stripe/webhook", data=body, headers=headers, timeout=10)


def database_files(path: Path) -> list[Path]:
    return [Path(f"{path}{suffix}") for suffix in ("", "-wal", "-shm")]


def recorded_events(path: Path) -> set[str]:
    db = sqlite3.connect(path)
    try:
        return {row[0] for row in db.execute("SELECT id FROM events")}
    finally:
        db.close()


@contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A filesystem of `size` mounted at `where`, unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.fail("the disk-fault tests mount a small tmpfs: run them as root (make test in CI)")
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.fixture
def bot(tmp_path, fake_slack, fake_stripe):
    """A running `python app.py`; yields (base URL, env, log path), stops it afterwards."""
    env = bot_env(tmp_path, fake_slack, fake_stripe)
    log = tmp_path / "bot.log"
    proc = start_bot(env, tmp_path, log)
    yield f"http://127.0.0.1:{env['PORT']}", env, log
    stop(proc)


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_database_deleted_or_replaced_under_the_running_bot_stops_acknowledging(
    bot, fake_slack, how
):
    base, env, log = bot
    database = Path(env["DATABASE_PATH"])
    first = so.event("climate.order.created", so.order())
    assert post(base, first).status_code == 200
    wait_until(lambda: len(fake_slack.messages(CHANNEL)) == 1, 30, "first card not posted")

    if how == "deleted":
        for path in database_files(database):
            path.unlink(missing_ok=True)
    else:  # an operator's `mv other.db climate-bot.db` while the bot runs
        other = database.with_name("other.db")
        sqlite3.connect(other).close()
        os.replace(other, database)

    refused = [post(base, so.event("climate.order.created", so.order())) for _ in range(3)]
    ready = requests.get(base + "/readyz", timeout=10)
    health = requests.get(base + "/healthz", timeout=10)

    assert [r.status_code for r in refused] == [503] * 3, [r.text for r in refused]
    assert how in refused[0].json()["error"]
    assert ready.status_code == 503 and how in ready.json()["reasons"][0], ready.text
    assert health.status_code == 200  # alive: a restart would only start an empty database
    assert health.json()["status"] == "degraded" and how in health.json()["reasons"][0]
    if how == "deleted":
        # No connection brings the file back empty (a restart would then find no card at all).
        assert not database.exists()
    else:
        db = sqlite3.connect(database)
        tables = db.execute("SELECT name FROM sqlite_master").fetchall()
        db.close()
        assert tables == []  # the bot wrote nothing into the replacement either
    said = log.read_text()
    assert said.count("refusing Stripe webhooks with 503") == 1, said  # once, not per webhook
    assert "Traceback" not in said
    assert len(fake_slack.messages(CHANNEL)) == 1


def test_a_full_disk_gets_503s_and_not_ready_then_recovers_by_itself(
    tmp_path, fake_slack, fake_stripe
):
    with tmpfs(tmp_path / "disk", "3m") as disk:
        env = {**bot_env(tmp_path, fake_slack, fake_stripe), "DATABASE_PATH": str(disk / "bot.db")}
        base = f"http://127.0.0.1:{env['PORT']}"
        log = tmp_path / "bot.log"
        proc = start_bot(env, tmp_path, log)
        try:
            assert requests.get(base + "/readyz", timeout=10).status_code == 200
            filler = disk / "filler"
            with open(filler, "wb") as out:  # fill the disk to its last byte
                try:
                    while True:
                        out.write(b"\0" * 65536)
                        out.flush()
                except OSError:
                    pass
            events = [so.event("climate.order.created", so.order()) for _ in range(20)]
            answers = [post(base, event) for event in events]
            full = requests.get(base + "/readyz", timeout=10)

            filler.unlink()
            ready_again = requests.get(base + "/readyz", timeout=10)
            later = so.event("climate.order.created", so.order())
            after = post(base, later)
        finally:
            stop(proc)
        statuses = [a.status_code for a in answers]
        acknowledged = {e["id"] for e, a in zip(events, answers, strict=True) if a.ok}
        stored = recorded_events(disk / "bot.db")

    assert set(statuses) <= {200, 503}, [a.text for a in answers if a.status_code not in (200, 503)]
    assert full.status_code == 503 and "disk" in full.json()["reasons"][0], full.text
    for answer in answers:
        if answer.status_code == 503:
            assert "database unavailable" in answer.json()["error"]
    assert ready_again.status_code == 200, ready_again.text
    assert after.status_code == 200
    assert acknowledged | {later["id"]} <= stored  # nothing acknowledged is lost
    assert "Traceback" not in log.read_text()


def start_up(env: dict[str, str], command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def assert_one_line(result: subprocess.CompletedProcess, says: str) -> None:
    assert result.returncode != 0, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("climate-bot:")]
    assert len(lines) == 1, result.stderr
    assert says in lines[0], lines[0]
    assert "Traceback" not in result.stderr, result.stderr


@pytest.mark.parametrize(
    "problem, says",
    [
        ("not_sqlite", "not a SQLite database"),
        ("directory", "cannot be opened"),
        ("read_only_disk", "Read-only file system"),
    ],
)
def test_a_database_that_cannot_be_opened_gives_one_line_at_start_up(
    tmp_path, fake_slack, fake_stripe, problem, says
):
    env = bot_env(tmp_path, fake_slack, fake_stripe)
    database = Path(env["DATABASE_PATH"])
    mounted = None
    if problem == "not_sqlite":
        database.write_bytes(b"these are not the pages of a database\n" * 200)
    elif problem == "directory":
        database.mkdir()
    else:
        mounted = tmp_path / "ro"
        mounted.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mounted)], check=True)
        env["DATABASE_PATH"] = str(mounted / "bot.db")
        sqlite3.connect(env["DATABASE_PATH"]).close()
        subprocess.run(["mount", "-o", "remount,ro", str(mounted)], check=True)
    try:
        app = start_up(env, [sys.executable, str(REPO / "app.py")], tmp_path)
        command = start_up(env, [str(BIN / "climate-bot"), "failed"], tmp_path)
        gunicorn = start_up(
            process_env(tmp_path, **env), gunicorn_command("-b", "127.0.0.1:0"), tmp_path
        )
    finally:
        if mounted is not None:
            subprocess.run(["umount", "-l", str(mounted)], check=False)
        elif database.is_dir():
            shutil.rmtree(database)
    assert_one_line(app, says)
    assert_one_line(command, says)
    assert_one_line(gunicorn, says)
