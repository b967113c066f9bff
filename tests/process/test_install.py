"""`pip install .` without extras runs every `climate-bot` command: the runtime needs no dev
dependency. One fresh venv per test session holds the plain install (pip's cache makes it quick).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from bot.model import HANDLED_EVENTS
from tests.support.bot import WEBHOOK_SECRET
from tests.support.processes import REPO, LineReader, process_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SANDBOX_URL = r"Slack sandbox:\s+(http://127\.0\.0\.1:\d+/)"
# Every module of the package, imported in the plain venv: a dev dependency anywhere fails here.
IMPORT_ALL = """
import importlib, pkgutil, bot
for module in pkgutil.walk_packages(bot.__path__, "bot."):
    importlib.import_module(module.name)
"""


@pytest.fixture(scope="session")
def plain_bin(tmp_path_factory) -> Path:
    """`bin/` of a fresh venv into which a copy of the sources was `pip install`ed, no extras."""
    root = tmp_path_factory.mktemp("plain-install")
    source = root / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    # A copy, so that pip's build leaves nothing (build/, *.egg-info) in the working tree.
    shutil.copytree(REPO / "bot", source / "bot", ignore=shutil.ignore_patterns("__pycache__"))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    # The installer keeps the shell's network settings (proxies, index, cache), not our venv's.
    installer = {
        k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
    }
    pip = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(source)],
        env=installer,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert pip.returncode == 0, pip.stdout + pip.stderr
    return venv / "bin"


def plain_env(workdir: Path, **variables: str) -> dict[str, str]:
    """The clean environment, without the PYTHONPATH that would run the repo's code instead."""
    env = process_env(workdir, **variables)
    del env["PYTHONPATH"]
    env["PATH"] = "/usr/bin:/bin"
    return env


def test_the_plain_install_has_no_dev_dependency_and_imports_every_module(plain_bin, tmp_path):
    env = plain_env(tmp_path)
    probe = subprocess.run(
        [str(plain_bin / "python"), "-c", "import jsonschema"], env=env, capture_output=True
    )
    assert probe.returncode != 0, "the venv is not a plain install: it has jsonschema"
    where = subprocess.run(
        [str(plain_bin / "python"), "-c", "import bot; print(bot.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert where.stdout.startswith(str(plain_bin.parent)), where.stdout + where.stderr
    imported = subprocess.run(
        [str(plain_bin / "python"), "-c", IMPORT_ALL],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert imported.returncode == 0, imported.stderr


def test_trigger_from_a_plain_install_reaches_the_running_bot(plain_bin, running, tmp_path):
    result = subprocess.run(
        [str(plain_bin / "climate-bot"), "trigger", HANDLED_EVENTS[0], "--url"]
        + [running.url + "/stripe/webhook"],
        cwd=tmp_path,
        env=plain_env(tmp_path, STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "bot answered 200" in result.stdout
    assert running.bot.storage.count_events() == 1


@pytest.fixture
def plain_demo(plain_bin, tmp_path) -> Iterator[tuple[subprocess.Popen, LineReader]]:
    process = subprocess.Popen(
        [str(plain_bin / "climate-bot"), "demo", "--fast", "--port", "0"],
        cwd=tmp_path,
        env=plain_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield process, LineReader(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_demo_from_a_plain_install_serves_its_page_and_stops_cleanly(plain_demo):
    process, output = plain_demo
    url = output.wait_for(SANDBOX_URL, timeout=60).group(1)

    page = requests.get(url, timeout=10)
    assert page.status_code == 200
    assert "climate-bot sandbox" in page.text

    process.send_signal(signal.SIGTERM)
    output.wait_for(r"^stopped\.$", timeout=20)
    assert process.wait(timeout=10) == 0, output.text
    assert "Traceback" not in output.text
