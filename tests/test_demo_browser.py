"""`climate-bot demo` end to end in a real browser: Debian's Chromium driven by Playwright.

The demo runs as its own process, exactly as `make demo` starts it (with `--fast --port 0`). The
browser is the `chromium` package that `make test` installs (its `browser` target); Playwright's
own browser downloads are never used. Screenshots land in tests/artifacts/ (git-ignored).
"""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, expect, sync_playwright
from slack_sdk import WebClient
from werkzeug.serving import make_server

from bot import cards
from bot.demo.sandbox import SlackSandbox, create_sandbox_app
from bot.fakes import stripe_objects as so
from bot.fakes.slack import FakeSlack
from bot.model import Change, OrderState

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).parent / "artifacts"
SANDBOX_URL = re.compile(r"Slack sandbox:\s+(http://127\.0\.0\.1:\d+/)")
# The bot posts at Slack's pace (one message a second): the delayed order's card gets its buttons
# after the product's and four orders' cards and the delay's reply.
STORY_SECONDS = 40_000


@pytest.fixture
def demo_url(tmp_path) -> Iterator[str]:
    """The demo in its own process; yields the sandbox page's URL. On the way out, SIGTERM must
    stop it cleanly (exit code 0) within a few seconds."""
    log = (tmp_path / "demo.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-c", "from bot.cli import main; main()", "demo", "--fast", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        cwd=tmp_path,
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(
        target=lambda: [lines.put(line) for line in process.stdout], daemon=True
    )
    reader.start()
    try:
        yield _wait_for_url(lines, process, tmp_path / "demo.log")
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            raise AssertionError("the demo did not stop within 20 s of SIGTERM") from None
        finally:
            log.close()
        assert code == 0, (tmp_path / "demo.log").read_text()[-3000:]


def _wait_for_url(lines: queue.Queue[str], process: subprocess.Popen, log: Path) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            break
        found = SANDBOX_URL.search(line)
        if found:
            return found.group(1)
        if process.poll() is not None:
            break
    raise AssertionError(f"the demo did not print its URL; its log:\n{log.read_text()[-3000:]}")


@pytest.fixture
def browser(tmp_path) -> Iterator[BrowserContext]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make browser` installs Debian's chromium package")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # a fresh user data dir for every run
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def test_cancel_in_the_sandbox_updates_the_card_and_pending_answers(demo_url, browser):
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(demo_url)

    delayed = page.locator("#messages .sk-msg").filter(has_text="Order delayed — decision needed")
    expect(delayed).to_have_count(1, timeout=STORY_SECONDS)
    card = page.locator(f'#messages .sk-msg[data-ts="{delayed.get_attribute("data-ts")}"]')
    order_id = card.locator("code").first.inner_text()
    cancel = card.get_by_role("button", name="Cancel order")
    expect(cancel).to_be_visible()
    card.scroll_into_view_if_needed()
    screenshot(page, "1-delayed-card")

    cancel.click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Cancel this order?")
    expect(dialog).to_contain_text(order_id)
    screenshot(page, "2-confirm-dialog")
    dialog.get_by_role("button", name="Cancel order").click()

    expect(card).to_contain_text("Cancelled by", timeout=20_000)
    expect(card).to_contain_text("@alice")
    expect(card.locator(".sk-actions")).to_have_count(0)  # the decision is made: buttons gone
    ARTIFACTS.mkdir(exist_ok=True)
    card.screenshot(path=str(ARTIFACTS / "3-cancelled-card.png"))
    card.locator(".sk-replies").click()  # the thread tells the story, decision included
    replies = page.locator("#thread-messages .sk-msg:not(.thread-parent)")
    expect(replies.first).to_contain_text("Delivery moved from 2027 to 2028")
    # Posted at the bot's pace, after the rest of the story: the open thread shows it live.
    expect(replies.filter(has_text="Cancelled by @alice")).to_have_count(1, timeout=30_000)

    page.get_by_label("Message #climate").fill("/climate pending")
    page.keyboard.press("Enter")
    answer = page.locator("#messages .sk-ephemeral").filter(has_text="awaits a decision")
    expect(answer).to_contain_text("Only visible to you", timeout=10_000)
    expect(answer).to_contain_text("1 order awaits a decision")  # the substitution, not ours
    expect(answer).not_to_contain_text(order_id)
    screenshot(page, "4-pending-answer")

    # Bob may not decide: his click is refused, and only he is told.
    page.get_by_label("You are").select_option("U0BOB")
    swapped = page.locator("#messages .sk-msg").filter(has_text="Product substituted")
    swapped.get_by_role("button", name="Accept substitution").click()
    refusal = page.locator("#messages .sk-ephemeral").filter(has_text="may decide")
    expect(refusal).to_contain_text("Only @alice may decide", timeout=10_000)
    screenshot(page, "5-bob-refused")

    # The Stripe sandbox really holds the order as cancelled, at the team's request.
    page.goto(demo_url + "stripe")
    row = page.locator("tr").filter(has_text=order_id)
    expect(row).to_contain_text("canceled")
    expect(row).to_contain_text("requested")
    assert errors == []


@pytest.fixture
def busy_sandbox() -> Iterator[tuple[str, FakeSlack]]:
    """A sandbox page over a workspace with no bot behind it (only the page is under test)."""
    with FakeSlack() as fake:
        sandbox = SlackSandbox(fake, app_url="http://127.0.0.1:9", signing_secret="unused")
        server = make_server("127.0.0.1", 0, create_sandbox_app(sandbox), threaded=True)
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_port}/", fake
        finally:
            sandbox.closing.set()
            server.shutdown()


def test_a_thousand_cards_load_and_an_update_sends_only_that_card(busy_sandbox, browser):
    url, fake = busy_sandbox
    slack = WebClient(token=fake.bot_token, base_url=fake.api_url)
    now = int(time.time())
    change = Change(kind="delayed", at=now, old_year=2027, new_year=2028)
    card = cards.order_card(
        OrderState(so.order(), so.product(), "climate.order.delayed", change=change), now
    )
    posted = [
        slack.chat_postMessage(channel="C0CLIMATE", text=card.text, blocks=card.blocks)["ts"]
        for _ in range(1000)
    ]
    page = browser.new_page()
    page.goto(url)
    messages = page.locator("#messages .sk-msg")
    expect(messages).to_have_count(1000, timeout=30_000)
    expect(messages.last).to_be_in_viewport()  # the newest message is shown, as in Slack

    cancelled = cards.order_card(
        OrderState(
            so.order(status="canceled", id="climorder_UPDATED"), None, "climate.order.canceled"
        ),
        now,
    )
    with page.expect_response(
        lambda r: "/sandbox/changes" in r.url and "since=0" not in r.url
    ) as r:
        slack.chat_update(
            channel="C0CLIMATE", ts=posted[500], text=cancelled.text, blocks=cancelled.blocks
        )
    assert [m["key"] for m in r.value.json()["messages"]] == [posted[500]]
    expect(page.locator(f'#messages .sk-msg[data-ts="{posted[500]}"]')).to_contain_text(
        "climorder_UPDATED"
    )
    expect(messages).to_have_count(1000)
    screenshot(page, "6-thousand-cards")
