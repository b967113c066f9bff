"""/climate subcommands and the App Home, through signed requests to the real Bolt app."""

from __future__ import annotations

import json
import time

import requests

from bot.cards import ORDERS_NEXT_ACTION, ORDERS_PER_PAGE
from bot.fakes import stripe_objects as so
from bot.fakes.slack import (
    RESPONSE_URL_METHOD,
    block_actions_body,
    event_callback_body,
    sign_slack_request,
    slash_command_body,
)
from bot.model import DECISION_WINDOW_SECONDS
from tests.conftest import CHANNEL, SIGNING_SECRET


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
    assert "dashboard.stripe.com/test/climate/orders/" + order["id"] in text
    assert '"actions"' not in text


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
    assert answer["via"] == "ack"
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
    from tests.conftest import env_for, serve_bot

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
