"""Starting the bot's own processes in tests: a clean environment and a working directory of their
own, so that nothing of the developer's shell or tree (a `.env` in the repo) changes an outcome.
"""

from __future__ import annotations

import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

from bot.sandbox import stripe_objects as so
from tests.support.bot import WEBHOOK_SECRET, env_for, wait_until
from tests.support.paths import REPO

BIN = Path(sys.executable).parent
LOOPBACK = "127.0.0.1,localhost"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_env(workdir: Path, **variables: str) -> dict[str, str]:
    """The whole environment of a process started in `workdir`: `variables` and only what any
    process needs. PYTHONPATH runs this repo's code from anywhere; TMPDIR inside `workdir` shows
    what a process leaves in the temp dir and keeps it from other tests'."""
    tmp = workdir / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    return {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "NO_PROXY": LOOPBACK,
        "PYTHONPATH": str(REPO),
        "TMPDIR": str(tmp),
        **variables,
    }


def gunicorn_command(*args: str, app: str = "app:app") -> list[str]:
    """gunicorn serving the repo's `app` (or the web tier alone, `web_tier:app`) with its
    settings file, from any working directory."""
    return [str(BIN / "gunicorn"), "--config", str(REPO / "gunicorn.conf.py"), *args, app]


def start_gunicorn(
    env: dict[str, str], workdir: Path, log: Path, *, workers: int = 2, app: str = "app:app"
) -> subprocess.Popen:
    """gunicorn with `workers` workers on `env`'s PORT, run in `workdir` and writing to `log`;
    returned once /healthz answers (a process that dies first fails the test with its log)."""
    with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            gunicorn_command("-w", str(workers), "-b", f"127.0.0.1:{env['PORT']}", app=app),
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=out,
        )
    url = f"http://127.0.0.1:{env['PORT']}/healthz"

    def up() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            return requests.get(url, timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    wait_until(up, 30, "gunicorn did not start")
    return proc


def start_bot(env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "app.py")], cwd=cwd, env=env, stdout=out, stderr=out
        )
    url = f"http://127.0.0.1:{env['PORT']}/healthz"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return proc
        except requests.ConnectionError:
            pass
        time.sleep(0.05)  # polling for start-up, not waiting for behaviour
    raise AssertionError("bot did not start:\n" + log.read_text())


def post(env: dict[str, str], event: dict) -> int:
    body, headers = so.webhook_request(event, WEBHOOK_SECRET)
    url = f"http://127.0.0.1:{env['PORT']}/stripe/webhook"
    return requests.post(url, data=body, headers=headers, timeout=10).status_code


def bot_env(tmp_path, fake_slack, fake_stripe) -> dict[str, str]:
    return {
        **env_for(tmp_path, fake_slack, fake_stripe),
        "PORT": str(free_port()),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "NO_PROXY": "127.0.0.1,localhost",
    }


def stop(proc) -> None:
    proc.terminate()
    proc.wait(timeout=10)


class LineReader:
    """The lines a process writes to its stdout pipe, read on a thread so that waiting for one
    can have a deadline."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self._queue.put(line)

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first match of `pattern` in a line; fail with everything read after `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=min(0.2, max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                if self.process.poll() is not None and self._queue.empty():
                    break
                continue
            self.lines.append(line)
            found = re.search(pattern, line)
            if found:
                return found
        raise AssertionError(f"no line matched {pattern!r}; the process wrote:\n{self.text}")

    @property
    def text(self) -> str:
        while not self._queue.empty():
            self.lines.append(self._queue.get_nowait())
        return "".join(self.lines)
