"""What `climate-bot` tells an operator: its help, the README's commands, replay's counts."""

from __future__ import annotations

import inspect
import re
import time

import time_machine
from click.testing import CliRunner

from bot.cli import main
from bot.jobs import CardJob
from bot.model import HANDLED_EVENTS
from bot.sandbox import stripe_objects as so
from bot.storage import Storage
from tests.support.bot import env_for
from tests.support.processes import REPO


def words(text: str) -> str:
    return " ".join(text.split())


def test_help_shows_each_commands_first_line_whole():
    result = CliRunner().invoke(main, ["--help"], terminal_width=80)
    assert result.exit_code == 0, result.output
    listed = words(result.output)
    for name, command in main.commands.items():
        first = words(inspect.cleandoc(command.help).split("\n\n", 1)[0])
        assert f"{name} {first}" in listed
    commands = result.output.split("Commands:", 1)[1]
    assert "..." not in commands and "…" not in commands


def test_trigger_help_lists_the_seven_event_types():
    result = CliRunner().invoke(main, ["trigger", "--help"], terminal_width=80)
    assert result.exit_code == 0, result.output
    lines = [line.strip() for line in result.output.splitlines()]
    assert len(HANDLED_EVENTS) == 7
    for event_type in HANDLED_EVENTS:
        assert event_type in lines


def readme_commands() -> list[tuple[str, str, str]]:
    """(as written, subcommand, its arguments) for each `climate-bot …` in the README's code,
    except in the Layout table, which names the commands rather than runs them."""
    text = (REPO / "README.md").read_text()
    sections = re.split(r"^## ", text, flags=re.MULTILINE)
    code = []
    for section in sections:
        if section.startswith("Layout"):
            continue
        code += re.findall(r"```\w*\n(.*?)```", section, flags=re.DOTALL)
        code += re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", section, flags=re.DOTALL))
    found = []
    for snippet in code:
        for line in snippet.splitlines():
            for match in re.finditer(r"(\S*climate-bot) ([a-z]+)([^#]*)", line):
                found.append(match.groups())
    return found


def test_readme_commands_are_written_as_make_install_leaves_them_and_exist():
    commands = readme_commands()
    assert len(commands) > 10
    for written, name, arguments in commands:
        assert written == ".venv/bin/climate-bot", f"{written} {name}{arguments}"
        assert name in main.commands, name
        options = {o for p in main.commands[name].params for o in getattr(p, "opts", [])}
        for option in re.findall(r"--[a-z-]+", arguments):
            assert option in options | {"--help"}, f"climate-bot {name} has no {option}"


def test_replay_counts_in_the_same_words_with_and_without_dry_run(
    tmp_path, fake_slack, fake_stripe
):
    now = int(time.time())
    fake_stripe.add_event(so.event("climate.order.created", so.order(), created=now - 60))
    broken = so.event("climate.order.created", so.order(), created=now - 30)
    del broken["data"]["object"]["id"]  # an event the bot cannot read
    fake_stripe.add_event(broken)
    env = env_for(tmp_path, fake_slack, fake_stripe)
    args = ["replay", "--since", str(now - 3600)]

    dry = CliRunner().invoke(main, [*args, "--dry-run"], env=env)
    real = CliRunner().invoke(main, args, env=env)

    assert "dry run: 1 would be new, 0 skipped (already recorded), 1 failed;" in dry.output
    assert "1 new, 0 skipped (already recorded), 1 failed" in real.output
    for result in (dry, real):
        assert result.exit_code == 1, result.output
        assert "FAILED" in result.output  # the same word on the event's own line


def test_retry_queues_parked_deliveries_again_and_releases_channels_held_past_a_minute(
    tmp_path, fake_slack, fake_stripe
):
    env = env_for(tmp_path, fake_slack, fake_stripe)
    with time_machine.travel(1_900_000_000, tick=False):
        storage = Storage(env["DATABASE_PATH"])
        with storage.transaction():
            storage.enqueue("order:a", CardJob(), channel="C_ARCHIVED")
        storage.fail(storage.lease_next("w", pace_seconds=0), "is_archived")
        storage.hold_channel("C_LIMITED", 90)  # a long Retry-After
        storage.hold_channel("C_PACED", 1)  # pacing after a post: left alone
        storage.close()

        result = CliRunner().invoke(main, ["retry"], env=env)

        assert result.exit_code == 0, result.output
        assert result.output.splitlines() == [
            "1 deliveries queued again",
            "1 channels released from a Slack rate-limit hold",
        ]
        storage = Storage(env["DATABASE_PATH"])
        assert storage.failures() == []
        assert storage.long_holds(time.time()) == {}
        assert list(storage.paced_channels(time.time())) == ["C_PACED"]
        storage.close()
