"""/climate subcommands and the App Home, through signed requests to the real Bolt app."""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import requests

from bot.cards import ORDERS_NEXT_ACTION, ORDERS_PER_PAGE, limit_problems
from bot.model import DECISION_WINDOW_SECONDS, Message
from bot.sandbox import stripe_objects as so
from bot.sandbox.slack import RESPONSE_URL_METHOD
from bot.sandbox.slack_requests import (
    block_actions_body,
    event_callback_body,
    sign_slack_request,
    slash_command_body,
)
from tests.support.bot import CHANNEL, SIGNING_SECRET


def post(bot, body: str, headers: dict | None = None) -> requests.Response:
    headers = {**sign_slack_request(body, SIGNING_SECRET), **(headers or {})}
    return requests.post(bot.url + "/slack/events", data=body, headers=headers, timeout=10)


def ask(bot, fake_slack, text: str) -> dict:
    """Run `/climate <text>`; return the answer, whether in the ack or via the response_url."""
    url = fake_slack.new_response_url()
    started = time.monotonic()
    response = post(bot, slash_command_body(text=text, response_url=url))
    assert response.status_code == 200
    assert time.monotonic() - started < 3  # Slack's limit for the acknowledgement
    if response.text:
        return {
            "text": json.loads(response.text)["text"],
            "blocks": json.loads(response.text).get("blocks", []),
            "via": "ack",
        }
    hook = url.rsplit("/", 1)[1]
    fake_slack.wait_for(lambda c: c.method == RESPONSE_URL_METHOD and c.path.endswith(hook))
    answer = fake_slack.responses(url)[0]
    assert answer.get("response_type", "ephemeral") == "ephemeral"
    return {**answer, "via": "response_url"}


def everything(answer: dict) -> str:
    return answer["text"] + json.dumps(answer.get("blocks") or [], ensure_ascii=False)


def known_order(bot, fake_stripe, **overrides) -> dict:
    order = so.order(**overrides)
    fake_stripe.add_order(order)
    bot.send_event(so.event("climate.order.created", order))
    bot.deliver()
    return order


def test_status_reads_stripe_now_and_links_the_card(running, fake_slack, fake_stripe):
    order = known_order(running, fake_stripe)
    fake_stripe.add_order(so.order(status="delivered", id=order["id"]))
    answer = ask(running, fake_slack, f"status {order['id']}")
    assert answer["via"] == "response_url"
    text = everything(answer)
    assert "Delivered" in text and "Fresh from Stripe" in text
    assert "https://fake-slack.example/archives/C0CLIMATE/p" in text  # chat.getPermalink
    assert "<https://dashboard.stripe.com/climate|" in text  # the Climate page Stripe documents
    assert '"actions"' not in text


def test_status_lists_every_supplier_the_card_only_counts(running, fake_slack, fake_stripe):
    product = so.product()
    running.send_event(so.event("climate.product.created", product))
    order = known_order(running, fake_stripe, product=product["id"])
    names = [supplier["name"] for supplier in product["suppliers"]]
    assert len(names) > 2
    text = everything(ask(running, fake_slack, f"status {order['id']}"))
    assert "*Suppliers*" in text and all(name in text for name in names)


def test_status_when_stripe_is_down_answers_from_the_database_as_of(
    running, fake_slack, fake_stripe
):
    order = known_order(running, fake_stripe)
    fake_stripe.set_down(True)
    text = everything(ask(running, fake_slack, f"status {order['id']}"))
    assert order["id"] in text and "as of" in text


def test_status_of_unknown_or_bad_ids_says_so_plainly(running, fake_slack, fake_stripe):
    assert ask(running, fake_slack, "status climorder_nope")["text"] == "No order climorder_nope."
    assert ask(running, fake_slack, "status <!channel>")["text"] == "No order &lt;!channel&gt;."


def test_orders_pages_newest_first_with_a_next_button(running, fake_slack, fake_stripe):
    orders = []
    for i in range(ORDERS_PER_PAGE + 3):
        order = so.order(created=1_800_000_000 + i)
        orders.append(order)
        running.send_event(so.event("climate.order.created", order, created=1_800_000_000 + i))
    answer = ask(running, fake_slack, "orders")
    assert answer["via"] == "response_url"  # acknowledged first: card links ask Slack
    text = everything(answer)
    newest = [o["id"] for o in reversed(orders)]
    assert text.index(newest[0]) < text.index(newest[1])
    assert newest[-1] not in text
    [actions] = [b for b in answer["blocks"] if b["type"] == "actions"]
    url = fake_slack.new_response_url()
    button = actions["elements"][0]
    assert button["action_id"] == ORDERS_NEXT_ACTION
    post(
        running,
        block_actions_body(action_id=ORDERS_NEXT_ACTION, value=button["value"], response_url=url),
    )
    hook = url.rsplit("/", 1)[1]
    fake_slack.wait_for(lambda c: c.method == RESPONSE_URL_METHOD and c.path.endswith(hook))
    [second] = fake_slack.responses(url)
    assert second["replace_original"] is True
    assert newest[-1] in json.dumps(second["blocks"]) and newest[0] not in json.dumps(
        second["blocks"]
    )
    assert not [b for b in second["blocks"] if b["type"] == "actions"]  # last page


def test_orders_filters_by_status_and_by_delay(running, fake_slack, fake_stripe):
    delivered = so.order(status="delivered")
    late = so.order()
    running.send_event(so.event("climate.order.delivered", delivered))
    running.send_event(
        so.event("climate.order.delayed", so.delayed(late, 2030, at=int(time.time())))
    )
    assert delivered["id"] in everything(ask(running, fake_slack, "orders delivered"))
    assert late["id"] not in everything(ask(running, fake_slack, "orders delivered"))
    assert late["id"] in everything(ask(running, fake_slack, "orders delayed"))
    assert "No Cancelled orders" in ask(running, fake_slack, "orders canceled")["text"]
    assert "Usage" in ask(running, fake_slack, "orders sideways")["text"]


def test_products_lists_stripes_inventory_and_caches_it(running, fake_slack, fake_stripe):
    fake_stripe.add_product(so.product(delivery_year=2031, prices={"usd": 60000, "eur": 55000}))
    text = everything(ask(running, fake_slack, "products"))
    assert (
        "Frontier's 2027 offtake portfolio" in text and "Frontier's 2031 offtake portfolio" in text
    )
    assert "$600.00" in text and "€550.00" in text
    ask(running, fake_slack, "products")
    assert len(fake_stripe.calls_to("/v1/climate/products")) == 1  # cached


def test_products_when_stripe_is_down_falls_back_to_what_webhooks_told_us(
    running, fake_slack, fake_stripe
):
    running.send_event(so.event("climate.product.created", so.product()))
    fake_stripe.set_down(True)
    text = everything(ask(running, fake_slack, "products"))
    assert "Frontier's 2027 offtake portfolio" in text and "as of" in text


def test_pending_lists_soonest_deadline_first_with_card_links(running, fake_slack, fake_stripe):
    now = int(time.time())
    later = so.delayed(so.order(), 2030, at=now)
    sooner = so.delayed(so.order(), 2030, at=now - 20 * 86400)
    expired = so.delayed(so.order(), 2030, at=now - DECISION_WINDOW_SECONDS - 1)
    for order in (later, sooner, expired):
        running.send_event(so.event("climate.order.delayed", order))
    running.deliver()
    text = everything(ask(running, fake_slack, "pending"))
    assert text.index(sooner["id"]) < text.index(later["id"])
    assert expired["id"] not in text
    assert "https://fake-slack.example/archives/C0CLIMATE/p" in text
    assert len(fake_slack.calls_to("chat.getPermalink")) == 0  # links built, not one call each


def test_home_tab_shows_pending_events_and_health_once_per_event(running, fake_slack, fake_stripe):
    order = so.delayed(so.order(), 2030, at=int(time.time()))
    running.send_event(so.event("climate.order.delayed", order))
    running.deliver()
    event = {"type": "app_home_opened", "user": "U0ALICE", "channel": "D0HOME", "tab": "home"}
    body = event_callback_body(event, event_id="Ev0HOME")
    assert post(running, body).status_code == 200
    fake_slack.wait_for("views.publish")
    # Slack retries the same delivery: it is not processed twice.
    assert (
        post(
            running, body, {"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}
        ).status_code
        == 200
    )
    [published] = fake_slack.wait_for("views.publish")
    view = json.dumps(published.params["view"])
    assert published.params["user_id"] == "U0ALICE"
    assert order["id"] in view and "Last Stripe event received" in view
    assert "Every delivery to Slack succeeded" in view
    assert len(fake_slack.calls_to("views.publish")) == 1


def test_every_answer_respects_the_channel_language(tmp_path, fake_slack, fake_stripe):
    from bot.settings import load_settings
    from tests.support.bot import env_for, serve_bot

    env = {**env_for(tmp_path, fake_slack, fake_stripe), "BOT_LOCALE_CHANNELS": f"{CHANNEL}:ja"}
    with serve_bot(load_settings(env)) as bot:
        for text in ("pending", "orders", "help", "status climorder_nope", "products"):
            answer = everything(ask(bot, fake_slack, text))
            assert any("\u3040" <= ch <= "\u30ff" or "\u4e00" <= ch <= "\u9fff" for ch in answer), (
                text
            )


def test_pending_counts_every_waiting_order_not_just_the_first_page(running, fake_slack):
    """Regression: with more orders than one answer shows, the count said 50 (bench/slash.py)."""
    now = int(time.time())
    for i in range(60):
        running.send_event(
            so.event("climate.order.delayed", so.delayed(so.order(), 2030, at=now - i))
        )
    answer = ask(running, fake_slack, "pending")
    assert answer["text"] == "60 orders await a decision."
    blocks = everything(answer)
    shown = blocks.count("climorder_")
    assert f"and {60 - shown} more orders" in blocks


def test_products_reads_every_page_of_the_inventory(running, fake_slack, fake_stripe):
    for i in range(120):
        fake_stripe.add_product(so.product(id=f"climsku_bench_{i:03d}", name=f"Portfolio {i}"))
    answer = ask(running, fake_slack, "products")
    assert answer["text"] == "Frontier offers 121 products."
    assert len(fake_stripe.calls_to("/v1/climate/products")) == 2  # 100 per page
    assert "and 101 more products" in everything(answer)


def response_url_of(body: str) -> str:
    """The response_url a signed command or click carries."""
    form = urllib.parse.parse_qs(body)
    if "payload" in form:
        return json.loads(form["payload"][0])["response_url"]
    return form["response_url"][0]


def lines_of(answer: dict) -> list[str]:
    """Every line of every section of an answer, in order."""
    return [
        line
        for block in answer.get("blocks") or []
        if block["type"] == "section" and "text" in block
        for line in block["text"]["text"].split("\n")
    ]


def line_about(answer: dict, order_id: str) -> str:
    [line] = [line for line in lines_of(answer) if order_id in line]
    return line


def test_pending_and_orders_name_each_order_so_it_is_recognised(running, fake_slack, fake_stripe):
    now = int(time.time())
    named = so.order(beneficiary={"public_name": "Acme Climate Fund"}, metric_tons="12.5")
    named_delayed = so.delayed(named, 2030, at=now)
    pinging = so.delayed(so.order(beneficiary={"public_name": "<!channel>"}), 2030, at=now - 86400)
    styled = so.order(beneficiary={"public_name": "*bold*\n<@U0BOB> & co"})
    running.send_event(so.event("climate.order.delayed", named_delayed))
    running.send_event(so.event("climate.order.delayed", pinging))
    running.send_event(so.event("climate.order.created", styled))
    running.deliver()
    card_link = "https://fake-slack.example/archives/C0CLIMATE/p"
    total = f"${named['amount_total'] / 100:,.2f}"

    pending = ask(running, fake_slack, "pending")
    line = line_about(pending, named["id"])
    assert "Acme Climate Fund" in line and "12.5 t" in line and total in line
    assert f"decide by <!date^{now + DECISION_WINDOW_SECONDS}^" in line
    assert card_link in line and line.endswith("|card>")
    assert "&lt;!channel&gt;" in line_about(pending, pinging["id"])
    assert styled["id"] not in everything(pending)  # nothing to decide

    orders = ask(running, fake_slack, "orders")
    line = line_about(orders, named["id"])
    assert "Acme Climate Fund" in line and "Confirmed" in line and "12.5 t" in line
    assert total in line and card_link in line
    assert "&lt;!channel&gt;" in line_about(orders, pinging["id"])
    # Stripe's text stays on its order's line, escaped: no mention, no ping, no line of its own,
    # no styling (its asterisks are look-alikes).
    line = line_about(orders, styled["id"])
    assert line.startswith(f"`{styled['id']}` — \u2217bold\u2217 &lt;@U0BOB&gt; &amp; co · ")
    for answer in (pending, orders):
        assert "<!channel>" not in everything(answer) and "<@U0BOB>" not in everything(answer)
        assert not [line for line in lines_of(answer) if line.startswith("*bold*")]
        assert limit_problems(Message(answer["text"], answer["blocks"])) == []


def test_ten_commands_and_clicks_at_once_are_acknowledged_in_time_while_slack_is_slow(
    running, fake_slack, fake_stripe
):
    """Slack's contract: every command and click is answered within 3 seconds. Listeners ack
    before they ask Slack or Stripe, Bolt authorises without auth.test, and its listener pool
    has room for all of them while Slack takes 6 seconds to answer."""
    now = int(time.time())
    listed = known_order(running, fake_stripe)
    waiting = so.delayed(so.order(), 2030, at=now)
    fake_stripe.add_order(waiting)
    running.send_event(so.event("climate.order.delayed", waiting))
    running.deliver()
    fake_slack.delay("auth.test", 6)  # the workspace URL for card links, and Bolt's own check
    fake_slack.delay("chat.getPermalink", 6)  # the card link of /climate status
    cursor = f"|{listed['created'] + 1}|{listed['id']}"
    asked = {  # what is sent → what its answer must show
        "status": (f"status {listed['id']}", "fake-slack.example/archives/"),
        "orders": ("orders", "fake-slack.example/archives/"),
        "confirmed": ("orders confirmed", "fake-slack.example/archives/"),
        "pending": ("pending", "fake-slack.example/archives/"),
        "products": ("products", "Frontier's 2027 offtake portfolio"),
        "history": (f"history {listed['id']}", "Order placed"),
        "help": ("help", "status <order_id>"),
        "empty": ("", "status <order_id>"),
        "unknown": ("frobnicate now", "status <order_id>"),
        "bad filter": ("orders sideways", "status <order_id>"),
    }
    requests_ = {
        name: (
            slash_command_body(text=text, response_url=fake_slack.new_response_url()),
            expected,
        )
        for name, (text, expected) in asked.items()
    }
    for i in range(3):
        url = fake_slack.new_response_url()
        body = block_actions_body(action_id=ORDERS_NEXT_ACTION, value=cursor, response_url=url)
        requests_[f"next {i}"] = (body, "fake-slack.example/archives/")
    assert len(requests_) == 13
    start = threading.Barrier(len(requests_))

    def listener_threads() -> int:
        return len([t for t in threading.enumerate() if t.name.startswith("bolt-listener")])

    idle_listener_threads = listener_threads()

    def send(body: str) -> tuple[int, float, str]:
        headers = sign_slack_request(body, SIGNING_SECRET)
        start.wait()
        started = time.monotonic()
        response = requests.post(
            running.url + "/slack/events", data=body, headers=headers, timeout=10
        )
        return response.status_code, time.monotonic() - started, response.text

    with ThreadPoolExecutor(len(requests_)) as pool:
        sent = {name: pool.submit(send, body) for name, (body, _) in requests_.items()}
        acks = {name: future.result(timeout=30) for name, future in sent.items()}
    for name, (status, took, _) in acks.items():
        assert status == 200, (name, acks[name])
        assert took < 3, f"{name} acknowledged after {took:.1f}s"
    # The acks did not wait for Slack: its answers were still on their way, to listeners
    # waiting on Bolt's own, named, threads.
    assert [call for call in fake_slack.calls_to("auth.test") if not call.done]
    assert listener_threads() >= idle_listener_threads + 7  # the seven that ask Slack

    for name, (body, expected) in requests_.items():
        _, _, acked = acks[name]
        if acked:  # the usage, and history: made without asking Slack or Stripe
            assert expected in everything(json.loads(acked)), name
            continue
        url = response_url_of(body)
        hook = url.rsplit("/", 1)[1]
        fake_slack.wait_for(
            lambda c, hook=hook: c.method == RESPONSE_URL_METHOD and c.path.endswith(hook),
            timeout=15,
        )
        assert expected in everything(fake_slack.responses(url)[0]), name
    assert {name for name, (_, _, acked) in acks.items() if acked} == {
        "history",
        "help",
        "empty",
        "unknown",
        "bad filter",
    }


def test_a_next_button_with_a_huge_or_malformed_cursor_is_told_to_run_the_command_again(
    running, fake_slack, caplog
):
    """A Next button's value comes back from Slack: one that names no page of ours is answered
    with a sentence, and the listener neither crashes nor shows some other page."""
    order = so.order(created=1_800_000_000)
    running.send_event(so.event("climate.order.created", order, created=1_800_000_000))
    caplog.set_level(logging.ERROR)
    for value in (
        f"|{10**30}|{order['id']}",  # past SQLite's 64 bits: the listener crashed
        f"|{-(2**63) - 1}|{order['id']}",
        f"|{'9' * 5000}|{order['id']}",  # more digits than Python reads
        f"|abc|{order['id']}",  # not a number: answered with the first page instead
        f"| 1800000000|{order['id']}",
        f"|1_800_000_000|{order['id']}",
        f"delayed|١٨٠٠|{order['id']}",
        "|1800000000",
        "sideways|1800000000|climorder_x",
        "",
    ):
        url = fake_slack.new_response_url()
        body = block_actions_body(action_id=ORDERS_NEXT_ACTION, value=value, response_url=url)
        assert post(running, body).status_code == 200
        hook = url.rsplit("/", 1)[1]
        fake_slack.wait_for(
            lambda c, h=hook: c.method == RESPONSE_URL_METHOD and c.path.endswith(h)
        )
        [answer] = fake_slack.responses(url)
        assert answer["text"] == (
            "That page link is no longer valid. Run `/climate orders` again."
        ), value
        assert order["id"] not in json.dumps(answer.get("blocks") or [])
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    # A cursor of ours still pages: 64-bit values at either end are valid keys.
    url = fake_slack.new_response_url()
    value = f"|{2**63 - 1}|climorder_zzzz"
    post(running, block_actions_body(action_id=ORDERS_NEXT_ACTION, value=value, response_url=url))
    hook = url.rsplit("/", 1)[1]
    fake_slack.wait_for(lambda c: c.method == RESPONSE_URL_METHOD and c.path.endswith(hook))
    assert order["id"] in json.dumps(fake_slack.responses(url)[0]["blocks"])
