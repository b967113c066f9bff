"""A developer's `.env` in the working tree does not change the suite's outcome: every test that
starts a process gives it an environment and a working directory of its own
(tests/support/processes.py).

The `.env` goes into a copy of the repo, never into the repo itself, so a failure or a kill
cannot leave it behind for the next run or for someone else's.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from bot.settings import load_settings
from tests.support.processes import REPO, process_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

# The test modules that start the bot's own processes (test_install's run from another venv).
PROCESS_TESTS = [
    "tests/process/test_processes.py",
    "tests/process/test_crash.py",
    "tests/process/test_operations.py",
    "tests/scenario/test_check.py",
    "tests/unit/test_settings.py",
]

# A developer's working configuration: valid, and different from every test's in ways that show
# (fewer log lines, another language, deciders to message).
DEVELOPER_ENV = """\
STRIPE_WEBHOOK_SECRET=whsec_the_developers_own
STRIPE_API_KEY=sk_test_the_developers_own
SLACK_BOT_TOKEN=xoxb-the-developers-own
SLACK_SIGNING_SECRET=the-developers-own
SLACK_CHANNEL=C0DEVELOPER
DATABASE_PATH=developer.db
PORT=3000
LOG_FORMAT=json
LOG_LEVEL=WARNING
BOT_LOCALE=ja
SLACK_ALLOWED_DECIDERS=U0DEVELOPER
"""


def test_process_tests_pass_with_a_valid_env_file_in_the_repo(tmp_path):
    tree = tmp_path / "repo"
    tree.mkdir()
    for name in (
        "app.py",
        "web_tier.py",
        "gunicorn.conf.py",
        "pyproject.toml",
        "README.md",
        ".env.example",
    ):
        shutil.copy2(REPO / name, tree / name)
    junk = shutil.ignore_patterns("__pycache__", "artifacts", ".hypothesis")
    for name in ("bot", "tests"):
        shutil.copytree(REPO / name, tree / name, ignore=junk)
    (tree / ".env").write_text(DEVELOPER_ENV)
    assert load_settings(env_file=tree / ".env").SLACK_CHANNEL == "C0DEVELOPER"  # it is valid

    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        + [f"--basetemp={tmp_path / 'inner'}", *PROCESS_TESTS]
        # The same start and kill as the burst one, and 50 s: the burst one stands for both.
        + [
            "--deselect",
            f"{PROCESS_TESTS[1]}::test_sigkill_mid_page_of_the_events_api_reads_everything_once_after_restart",
        ],
        cwd=tree,
        env=process_env(tmp_path, PYTHONPATH=str(tree)),
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
