"""Deciding from Slack: signed clicks on the real Bolt app; a fake Stripe cancels or refuses."""

from __future__ import annotations

import json
import threading
import time

import pytest
import requests

from bot.model import ACCEPT_ACTION, CANCEL_ACTION, DECISION_WINDOW_SECONDS
from bot.sandbox import stripe_objects as so
from bot.sandbox.slack_requests import sign_slack_request, slash_command_body, view_submission_body
from bot.settings import load_settings
from bot.stripe_gateway import StripeGateway, cancel_idempotency_key
from tests.support.bot import CHANNEL, STRIPE_KEY, env_for, serve_bot
from tests.support.decisions import (
    answers,
    cancel,
    cancel_dialog,
    click,
    delayed_order,
    first_answer,
    post_to_slack_events,
    press,
    submit,
)


def card_blocks(fake_slack) -> str:
    [card] = fake_slack.messages(CHANNEL)
    return json.dumps(card.blocks)


def test_accept_records_the_decision_without_calling_stripe(running, fake_slack, fake_stripe):
    order = delayed_order(running, fake_stripe)
    fake_stripe.clear_calls()
    answer = click(running, fake_slack, ACCEPT_ACTION, order["id"])
    assert "You accepted the delay" in answer
    running.deliver()
    blocks = card_blocks(fake_slack)
    assert '"actions"' not in blocks
    assert "Delay accepted by <@U0ALICE>" in blocks
    assert "Delivery moved from 2027 to 2030" in blocks  # the facts stay visible
    [card] = fake_slack.messages(CHANNEL)
    assert "Delay accepted by <@U0ALICE>" in fake_slack.replies(CHANNEL, card.ts)[-1].text
    assert fake_stripe.calls == []
    [row] = running.bot.storage.audit_rows(order["id"])
    assert (row["action"], row["outcome"], row["slack_user"]) == ("accept", "accepted", "U0ALICE")


def test_cancel_re_reads_the_order_then_cancels_once_with_an_idempotency_key(
    running, fake_slack, fake_stripe
):
    order = delayed_order(running, fake_stripe)
    answer = click(running, fake_slack, CANCEL_ACTION, order["id"])
    assert "Cancelling order" in answer
    assert fake_stripe.calls_to("/v1/climate/orders") == []  # never on the web worker
    running.deliver()
    [retrieve] = fake_stripe.calls_to(f"/v1/climate/orders/{order['id']}", method="GET")
    [cancel] = fake_stripe.calls_to(f"/v1/climate/orders/{order['id']}/cancel")
    assert retrieve.at <= cancel.at
    assert cancel.idempotency_key == cancel_idempotency_key(order["id"], 0)
    assert fake_stripe.get_order(order["id"])["status"] == "canceled"
    blocks = card_blocks(fake_slack)
    assert "Cancelled by <@U0ALICE>" in blocks and "$5,665.00" in blocks  # full refund
    assert '"actions"' not in blocks
    [card] = fake_slack.messages(CHANNEL)
    assert "Cancelled by <@U0ALICE>" in fake_slack.replies(CHANNEL, card.ts)[-1].text
    assert any("is cancelled" in text for text in answers(fake_slack))
    outcomes = [r["outcome"] for r in running.bot.storage.audit_rows(order["id"])]
    assert outcomes == ["cancelled"]
    assert running.bot.storage.audit_rows(order["id"])[0]["stripe_request_id"].startswith("req_")


def test_double_click_cancels_once_and_the_second_click_is_told_who_decided(
    running, fake_slack, fake_stripe
):
    order = delayed_order(running, fake_stripe)
    # Two dialogs opened by a double click, both submitted: one cancel.
    _url, first_view, _ = cancel_dialog(running, fake_slack, order["id"])
    _url, second_view, _ = cancel_dialog(running, fake_slack, order["id"])
    assert submit(running, fake_slack, first_view) == {}
    refused = submit(running, fake_slack, second_view)
    assert refused["response_action"] == "update"
    assert "A cancel of order" in json.dumps(refused["view"]) and "<@U0ALICE>" in json.dumps(
        refused["view"]
    )
    # A click while the cancel is under way opens no dialog and says who is cancelling.
    second = click(running, fake_slack, CANCEL_ACTION, order["id"], user="U0BOB")
    assert "A cancel of order" in second and "by <@U0ALICE> is under way" in second
    running.deliver()
    assert len(fake_stripe.calls_to(f"/v1/climate/orders/{order['id']}/cancel")) == 1
    # Once cancelled, a click is told the order is final.
    assert "already cancelled" in click(running, fake_slack, ACCEPT_ACTION, order["id"])


def test_two_users_clicking_at_once_decide_once(running, fake_slack, fake_stripe):
    order = delayed_order(running, fake_stripe)
    results: dict[str, str] = {}

    def clicker(user: str, action: str) -> None:
        results[user] = click(running, fake_slack, action, order["id"], user=user)

    threads = [
        threading.Thread(target=clicker, args=("U0ALICE", CANCEL_ACTION)),
        threading.Thread(target=clicker, args=("U0BOB", ACCEPT_ACTION)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    running.deliver()
    losers = [t for t in results.values() if "already decided by" in t or "under way" in t]
    assert len(losers) == 1
    decided = running.bot.storage.order_row(order["id"])
    assert decided["decision"] in ("accepted", "cancelled")
    cancels = fake_stripe.calls_to(f"/v1/climate/orders/{order['id']}/cancel")
    assert len(cancels) == (1 if decided["decision"] == "cancelled" else 0)


@pytest.fixture
def guarded(tmp_path, fake_slack, fake_stripe):
    """The bot with deciders: Bob himself, and the user group S0DECIDERS (Carol)."""
    fake_slack.add_user("U0CAROL", "carol")
    fake_slack.add_usergroup("S0DECIDERS", "climate-deciders", ["U0CAROL"])
    env = {
        **env_for(tmp_path, fake_slack, fake_stripe),
        "SLACK_ALLOWED_DECIDERS": "U0BOB,S0DECIDERS",
    }
    with serve_bot(load_settings(env)) as bot:
        yield bot


def test_only_allowed_deciders_may_decide_and_refusals_are_recorded(
    guarded, fake_slack, fake_stripe
):
    order = delayed_order(guarded, fake_stripe)
    fake_stripe.clear_calls()
    answer = click(guarded, fake_slack, CANCEL_ACTION, order["id"], user="U0ALICE")
    assert "Only <@U0BOB>, <!subteam^S0DECIDERS> may decide" in answer
    guarded.deliver()
    assert fake_stripe.calls == []
    assert '"actions"' in card_blocks(fake_slack)
    assert [r["outcome"] for r in guarded.bot.storage.audit_rows(order["id"])] == ["not_allowed"]
    # Carol is in the user group; the group is read once and cached.
    assert "You accepted" in click(guarded, fake_slack, ACCEPT_ACTION, order["id"], user="U0CAROL")
    click(guarded, fake_slack, ACCEPT_ACTION, order["id"], user="U0CAROL")
    assert len(fake_slack.calls_to("usergroups.users.list")) == 1


def test_stripe_refusal_keeps_the_buttons_and_shows_stripes_message(
    running, fake_slack, fake_stripe
):
    order = delayed_order(running, fake_stripe)
    fake_stripe.refuse_cancel(order["id"], message="Orders can only be canceled within 30 days.")
    click(running, fake_slack, CANCEL_ACTION, order["id"])
    running.deliver()
    assert any("Orders can only be canceled within 30 days." in t for t in answers(fake_slack))
    assert '"actions"' in card_blocks(fake_slack)
    [row] = running.bot.storage.audit_rows(order["id"])
    assert row["outcome"] == "refused" and row["stripe_request_id"].startswith("req_")
    # Clicking again is safe, and works once Stripe agrees.
    fake_stripe.allow_cancel(order["id"])
    click(running, fake_slack, CANCEL_ACTION, order["id"])
    running.deliver()
    assert fake_stripe.get_order(order["id"])["status"] == "canceled"
    keys = [c.idempotency_key for c in fake_stripe.calls_to(f"/v1/climate/orders/{order['id']}/")]
    assert keys == [cancel_idempotency_key(order["id"], 0), cancel_idempotency_key(order["id"], 1)]


def test_stripe_down_during_a_cancel_changes_nothing_and_says_so(running, fake_slack, fake_stripe):
    order = delayed_order(running, fake_stripe)
    fake_stripe.set_down(True)
    click(running, fake_slack, CANCEL_ACTION, order["id"])
    running.deliver()
    assert any("could not be reached" in t for t in answers(fake_slack))
    assert '"actions"' in card_blocks(fake_slack)
    assert running.bot.storage.order_row(order["id"])["decision"] is None
    assert [r["outcome"] for r in running.bot.storage.audit_rows(order["id"])] == ["failed"]


def test_order_already_cancelled_at_stripe_is_not_cancelled_again(running, fake_slack, fake_stripe):
    order = delayed_order(running, fake_stripe)
    fake_stripe.add_order(
        {
            **order,
            "status": "canceled",
            "canceled_at": int(time.time()),
            "cancellation_reason": "product_unavailable",
        }
    )
    click(running, fake_slack, CANCEL_ACTION, order["id"])
    running.deliver()
    assert fake_stripe.calls_to(f"/v1/climate/orders/{order['id']}/cancel") == []
    assert any("already cancelled at Stripe" in t for t in answers(fake_slack))
    blocks = card_blocks(fake_slack)
    assert "Order cancelled" in blocks and '"actions"' not in blocks


def test_unknown_order_and_malformed_values_answer_cleanly(running, fake_slack, fake_stripe):
    assert "No order climorder_nothere" in click(
        running, fake_slack, CANCEL_ACTION, "climorder_nothere"
    )
    assert "does not name an order" in click(running, fake_slack, CANCEL_ACTION, "<!channel>")
    assert fake_stripe.calls == []


def test_click_on_an_old_copy_after_the_deadline_reaches_nothing_at_stripe(
    running, fake_slack, fake_stripe
):
    order = delayed_order(running, fake_stripe, at=int(time.time()) - DECISION_WINDOW_SECONDS - 60)
    fake_stripe.clear_calls()
    answer = click(running, fake_slack, CANCEL_ACTION, order["id"])
    assert "decision window" in answer and "closed" in answer
    running.deliver()
    assert fake_stripe.calls == []
    assert [r["outcome"] for r in running.bot.storage.audit_rows(order["id"])] == ["too_late"]


def test_click_on_a_delivered_order_explains_and_calls_nobody(running, fake_slack, fake_stripe):
    order = delayed_order(running, fake_stripe)
    delivered = so.order(status="delivered", id=order["id"])
    running.send_event(so.event("climate.order.delivered", delivered, created=int(time.time())))
    running.deliver()
    fake_stripe.clear_calls()
    assert "already delivered" in click(running, fake_slack, ACCEPT_ACTION, order["id"])
    assert fake_stripe.calls == []


def test_history_and_pending_answer_from_the_record(running, fake_slack, fake_stripe):
    first = delayed_order(running, fake_stripe, at=int(time.time()) - 10 * 86400)
    second = so.delayed(so.order(), 2031, at=int(time.time()))
    running.send_event(so.event("climate.order.delayed", second))
    running.deliver()
    pending = slash(running, fake_slack, "pending")
    assert pending.index(first["id"]) < pending.index(second["id"])  # soonest deadline first
    click(running, fake_slack, ACCEPT_ACTION, first["id"])
    history = slash(running, fake_slack, f"history {first['id']}")
    assert history.index("Order placed") < history.index("Delivery delayed")
    assert history.index("Delivery delayed") < history.index("accepted the change")
    assert "<@U0ALICE>" in history
    assert first["id"] not in slash(running, fake_slack, "pending")
    assert "No order climorder_x" in slash(running, fake_slack, "history climorder_x")


def slash(bot, fake_slack, text: str) -> str:
    """Run `/climate <text>`; return the answer, given in the ack or through the response_url."""
    url = fake_slack.new_response_url()
    response = post_to_slack_events(bot, slash_command_body(text=text, response_url=url))
    if response.text.strip():
        return response.text
    first_answer(fake_slack, url)
    return json.dumps(fake_slack.responses(url))


def test_reminders_come_before_the_deadline_once_and_stop_after_a_decision(
    guarded, fake_slack, fake_stripe
):
    now = int(time.time())
    order = delayed_order(guarded, fake_stripe, at=now - DECISION_WINDOW_SECONDS + 6 * 86400)
    scheduler = guarded.bot.scheduler
    assert scheduler.send_reminders(now) == [(order["id"], 7)]
    assert scheduler.send_reminders(now) == []  # once
    guarded.deliver()
    [card] = fake_slack.messages(CHANNEL)
    reminder = fake_slack.replies(CHANNEL, card.ts)[-1]
    assert "Reminder" in reminder.text
    assert "<@U0BOB>" in json.dumps(reminder.blocks)
    assert "<!subteam^S0DECIDERS>" in json.dumps(reminder.blocks)
    click(guarded, fake_slack, ACCEPT_ACTION, order["id"], user="U0BOB")
    assert scheduler.send_reminders(now + 5 * 86400 + 3600) == []  # decided: no 1-day reminder


def test_cancel_of_a_connected_accounts_order_acts_on_that_account(
    running, fake_slack, fake_stripe
):
    fake_stripe.add_account("acct_partner1")
    order = so.delayed(so.order(), 2030, at=int(time.time()))
    fake_stripe.add_order(order, account="acct_partner1")
    running.send_event(so.event("climate.order.delayed", order, account="acct_partner1"))
    running.deliver()
    click(running, fake_slack, CANCEL_ACTION, order["id"])
    running.deliver()
    calls = fake_stripe.calls_to(f"/v1/climate/orders/{order['id']}")
    assert [c.account for c in calls] == ["acct_partner1", "acct_partner1"]  # retrieve, cancel
    assert fake_stripe.get_order(order["id"], account="acct_partner1")["status"] == "canceled"


def test_cancel_opens_a_dialog_showing_the_order_and_its_expected_refund_with_its_rule(
    running, fake_slack, fake_stripe
):
    order = delayed_order(running, fake_stripe)
    fake_stripe.clear_calls()
    url, view, answer = cancel_dialog(running, fake_slack, order["id"])
    assert answer is None and view["callback_id"] == "cancel_order"
    shown = json.dumps(view["blocks"])
    assert order["id"] in shown and "10 t" in shown and "$5,665.00" in shown
    assert "Expected refund $5,665.00, the full total" in shown
    assert "Stripe's Climate webhooks guide" in shown
    [reason] = [b for b in view["blocks"] if b["type"] == "input"]
    assert reason["optional"] is True and reason["element"]["max_length"] == 500
    assert (
        fake_stripe.calls == [] and running.bot.storage.order_row(order["id"])["decision"] is None
    )
    # Closing the dialog (never submitting it) decides nothing; Accept stays one click.
    assert "You accepted the delay" in click(running, fake_slack, ACCEPT_ACTION, order["id"])


def test_a_hostile_reason_is_kept_bounded_and_shown_escaped_on_the_card_and_in_history(
    running, fake_slack, fake_stripe
):
    order = delayed_order(running, fake_stripe)
    reason = "<!channel> *urgent* <https://evil.example|Stripe> " + "x" * 5000
    answer = cancel(running, fake_slack, order["id"], reason=reason)
    assert "Cancelling order" in answer
    running.deliver()
    [card] = fake_slack.messages(CHANNEL)
    blocks = json.dumps(card.blocks)
    assert "&lt;!channel&gt;" in blocks and "<!channel>" not in blocks
    assert "<https://evil.example" not in blocks
    assert "x" * 400 in blocks and "x" * 500 not in blocks  # bounded to 500 characters
    # Said once: who cancelled, when, the expected refund and its rule.
    assert blocks.count("Cancelled by <@U0ALICE>") == 1
    assert "because a cancellation was requested" not in blocks
    assert "Expected refund $5,665.00, the full total" in blocks
    replies = fake_slack.replies(CHANNEL, card.ts)
    assert sum("Cancelled by <@U0ALICE>" in json.dumps(r.blocks) for r in replies) == 1
    [row] = running.bot.storage.audit_rows(order["id"])
    assert row["detail"]["refund_rule"] == "change_window"
    assert row["detail"]["refund"] == order["amount_total"]
    assert row["detail"]["reason"].startswith("<!channel> *urgent*")
    history = slash(running, fake_slack, f"history {order['id']}")
    assert "&lt;!channel&gt;" in history and "<!channel>" not in history
    assert "Expected refund $5,665.00" in history


def test_stripes_confirmation_of_our_cancel_is_not_told_twice(running, fake_slack, fake_stripe):
    order = delayed_order(running, fake_stripe)
    cancel(running, fake_slack, order["id"])
    running.deliver()
    cancelled = fake_stripe.get_order(order["id"])
    running.send_event(so.event("climate.order.canceled", cancelled, created=int(time.time())))
    running.deliver()
    [card] = fake_slack.messages(CHANNEL)
    last = fake_slack.replies(CHANNEL, card.ts)[-1]
    assert "Stripe confirmed the cancellation requested by <@U0ALICE>" in last.text
    assert "refund" not in json.dumps(last.blocks).lower()
    assert json.dumps(card.blocks).count("Cancelled by <@U0ALICE>") == 1


def test_a_non_decider_is_refused_before_any_dialog_with_the_order_and_who_may_decide(
    guarded, fake_slack, fake_stripe
):
    order = delayed_order(guarded, fake_stripe)
    _url, view, answer = cancel_dialog(guarded, fake_slack, order["id"], user="U0ALICE")
    assert view is None and fake_slack.calls_to("views.open") == []
    assert order["id"] in answer
    assert "Only <@U0BOB>, <!subteam^S0DECIDERS> may decide on order" in answer


def test_a_guest_from_another_workspace_may_not_decide_unless_named(
    tmp_path, fake_slack, fake_stripe
):
    env = {**env_for(tmp_path, fake_slack, fake_stripe), "SLACK_ALLOWED_DECIDERS": "U0BOB"}
    with serve_bot(load_settings(env)) as bot:
        order = delayed_order(bot, fake_stripe)
        fake_slack.add_user("U0CAROL", "carol")
        fake_slack.add_usergroup("S0X", "x", [])
        answer = click(bot, fake_slack, ACCEPT_ACTION, order["id"], "U0BOB", user_team="T0OTHER")
        assert "You accepted the delay" in answer  # named as a decider: may decide
    with serve_bot(load_settings(env_for(tmp_path / "b", fake_slack, fake_stripe))) as bot:
        order = delayed_order(bot, fake_stripe)
        # Anyone of the workspace may decide here, but not a guest from another one.
        answer = click(bot, fake_slack, CANCEL_ACTION, order["id"], "U0ALICE", user_team="T0OTHER")
        assert "another workspace" in answer and order["id"] in answer
        assert fake_slack.calls_to("views.open") == []
        [row] = bot.bot.storage.audit_rows(order["id"])
        assert row["outcome"] == "not_allowed" and row["error"] == "another workspace"


def test_a_cancel_under_way_is_not_reset_by_a_new_delay_nor_contradicted_by_a_click(
    running, fake_slack, fake_stripe
):
    """The reported race: Cancel, then Frontier delays again, then someone else accepts."""
    order = delayed_order(running, fake_stripe)
    assert "Cancelling order" in cancel(running, fake_slack, order["id"])  # Stripe not yet asked
    again = so.delayed(fake_stripe.get_order(order["id"]), 2031, at=int(time.time()) + 1)
    fake_stripe.add_order(again)
    running.send_event(so.event("climate.order.delayed", again, created=int(time.time()) + 1))
    row = running.bot.storage.order_row(order["id"])
    assert (row["decision"], row["decided_by"]) == ("cancelling", "U0ALICE")
    assert row["next_change"]["new_year"] == 2031
    card_now = json.dumps(running.bot.deliverer.render_card(f"order:{order['id']}").blocks)
    assert "Cancellation requested by <@U0ALICE>" in card_now
    assert "Meanwhile: Delivery moved from 2030 to 2031" in card_now
    bob = click(running, fake_slack, ACCEPT_ACTION, order["id"], user="U0BOB")
    assert "A cancel of order" in bob and "by <@U0ALICE> is under way" in bob
    running.deliver()  # Stripe cancels
    assert fake_stripe.get_order(order["id"])["status"] == "canceled"
    blocks = card_blocks(fake_slack)
    assert "Cancelled by <@U0ALICE>" in blocks
    assert "accepted" not in blocks and '"actions"' not in blocks
    final = running.bot.storage.order_row(order["id"])
    assert final["decision"] == "cancelled" and final["next_change"] is None


def test_a_refused_cancel_opens_the_window_of_the_change_that_arrived_meanwhile(
    running, fake_slack, fake_stripe
):
    order = delayed_order(running, fake_stripe)
    fake_stripe.refuse_cancel(order["id"], message="This order can no longer be canceled.")
    cancel(running, fake_slack, order["id"])
    later = int(time.time()) + 5
    again = so.delayed(fake_stripe.get_order(order["id"]), 2031, at=later)
    running.send_event(so.event("climate.order.delayed", again, created=later))
    running.deliver()  # Stripe refuses
    row = running.bot.storage.order_row(order["id"])
    assert row["decision"] is None and row["next_change"] is None
    assert row["change"]["new_year"] == 2031
    assert row["decision_deadline"] == later + DECISION_WINDOW_SECONDS
    blocks = card_blocks(fake_slack)
    assert "Delivery moved from 2030 to 2031" in blocks and '"actions"' in blocks
    [card] = fake_slack.messages(CHANNEL)
    assert any(
        r.broadcast and "Decision needed" in r.text for r in fake_slack.replies(CHANNEL, card.ts)
    )
    assert "You accepted the delay" in click(running, fake_slack, ACCEPT_ACTION, order["id"])


def test_a_dialog_submitted_after_the_order_changed_again_is_refused_in_the_dialog(
    running, fake_slack, fake_stripe
):
    order = delayed_order(running, fake_stripe)
    _url, view, _ = cancel_dialog(running, fake_slack, order["id"])
    later = int(time.time()) + 5
    again = so.delayed(fake_stripe.get_order(order["id"]), 2031, at=later)
    running.send_event(so.event("climate.order.delayed", again, created=later))
    refused = submit(running, fake_slack, view)
    assert refused["response_action"] == "update"
    assert "changed again" in json.dumps(refused["view"])
    running.deliver()
    assert fake_stripe.calls_to(f"/v1/climate/orders/{order['id']}/cancel") == []


def test_a_forged_or_malformed_dialog_submission_cancels_nothing(running, fake_slack, fake_stripe):
    order = delayed_order(running, fake_stripe)
    _url, view, _ = cancel_dialog(running, fake_slack, order["id"])
    for metadata in ("not json", json.dumps([1]), json.dumps({"order_id": "<!channel>"})):
        refused = submit(running, fake_slack, {**view, "private_metadata": metadata})
        assert refused["response_action"] == "update"
    body = view_submission_body(view, values={})
    forged = requests.post(
        running.url + "/slack/events",
        data=body,
        headers=sign_slack_request(body, "not-the-secret"),
        timeout=10,
    )
    assert forged.status_code == 401
    running.deliver()
    assert fake_stripe.calls_to(f"/v1/climate/orders/{order['id']}/cancel") == []


def test_an_order_that_expired_unconfirmed_shows_no_refund_anywhere(running, fake_slack):
    order = so.order(status="open")
    running.send_event(so.event("climate.order.created", order, created=1000))
    expired = {
        **order,
        "status": "canceled",
        "cancellation_reason": "expired",
        "canceled_at": 2000,
    }
    running.send_event(so.event("climate.order.canceled", expired, created=2000))
    running.deliver()
    [card] = fake_slack.messages(CHANNEL)
    [reply] = fake_slack.replies(CHANNEL, card.ts)
    for text in (json.dumps(card.blocks), card.text, json.dumps(reply.blocks), reply.text):
        assert "Expected refund" not in text and "refund $" not in text.lower()
    assert "No refund: the order was never confirmed" in json.dumps(card.blocks)


def test_a_cancel_whose_answer_was_lost_after_stripe_cancelled_is_reported_as_done(
    running, fake_slack, fake_stripe
):
    """The worker called Stripe, Stripe cancelled, the worker died before recording it."""
    order = delayed_order(running, fake_stripe)
    cancel(running, fake_slack, order["id"])
    dead_worker = StripeGateway(STRIPE_KEY, fake_stripe.url)
    dead_worker.cancel_order(order["id"], attempt=0)  # ... and the process is killed here
    fake_stripe.clear_calls()
    running.deliver()  # the job runs again
    [replayed] = fake_stripe.calls_to(f"/v1/climate/orders/{order['id']}/cancel")
    assert replayed.replayed  # the same Idempotency-Key: Stripe's first answer, not a new cancel
    assert any("is cancelled" in t for t in answers(fake_slack))
    assert not any("nothing was cancelled" in t for t in answers(fake_slack))
    blocks = card_blocks(fake_slack)
    assert "Cancelled by <@U0ALICE>" in blocks
    row = running.bot.storage.order_row(order["id"])
    assert (row["decision"], row["decided_by"]) == ("cancelled", "U0ALICE")
    assert [r["outcome"] for r in running.bot.storage.audit_rows(order["id"])] == ["cancelled"]


def test_an_order_someone_else_cancelled_meanwhile_is_not_claimed_as_ours(
    running, fake_slack, fake_stripe
):
    order = delayed_order(running, fake_stripe)
    cancel(running, fake_slack, order["id"])
    StripeGateway(STRIPE_KEY, fake_stripe.url).cancel_order(order["id"], attempt=7)  # Dashboard
    running.deliver()
    assert any("already cancelled at Stripe" in t for t in answers(fake_slack))
    assert running.bot.storage.order_row(order["id"])["decision"] is None
    assert [r["outcome"] for r in running.bot.storage.audit_rows(order["id"])] == ["already_final"]


def test_an_idempotency_error_is_reported_as_what_it_is(running, fake_slack, fake_stripe):
    order = delayed_order(running, fake_stripe)
    fake_stripe.fail_next(
        f"/v1/climate/orders/{order['id']}/cancel",
        status=400,
        error={
            "type": "idempotency_error",
            "message": "Keys for idempotent requests can only be used with the same parameters.",
        },
    )
    cancel(running, fake_slack, order["id"])
    running.deliver()
    [answer] = [t for t in answers(fake_slack) if "Cancel" in t and "order" in t][-1:]
    assert "as a repeat of another request" in answer and "could not be reached" not in answer
    [row] = running.bot.storage.audit_rows(order["id"])
    assert row["outcome"] == "failed" and row["error"].startswith("idempotency:")
    assert running.bot.storage.order_row(order["id"])["decision"] is None  # click again: safe


# -- what Stripe and Slack say, as the clicker is shown it -----------------------------------

BAD_GATEWAY_PAGE = (
    "<html><head><title>502 Bad Gateway</title></head>"
    "<body><center><h1>502 Bad Gateway</h1></center></body></html>"
)


def _only_ours(text: str) -> None:
    """No HTML, no Slack markup and no styling from anyone but us in an answer."""
    assert "<" not in text and ">" not in text and "html" not in text.lower()
    for styling in ("*", "~", "_x_"):
        assert styling not in text


def test_a_user_group_lookup_answered_with_an_html_page_names_the_page_and_shows_none_of_it(
    guarded, fake_slack, fake_stripe
):
    order = delayed_order(guarded, fake_stripe)
    fake_slack.fail_next("usergroups.users.list", status=502)
    answer = click(guarded, fake_slack, ACCEPT_ACTION, order["id"], user="U0CAROL")
    assert answer == (
        "climate-bot could not check who may decide: Slack answered with an error page "
        "(HTTP 502). Try again."
    )
    # The record keeps Slack's words; /climate history shows them as the answer did.
    [row] = guarded.bot.storage.audit_rows(order["id"])
    assert row["outcome"] == "failed" and "<html>" in row["error"]
    history = slash(guarded, fake_slack, f"history {order['id']}")
    assert "tried to decide; it failed: an error page" in history
    assert "html" not in history.lower() and "Bad Gateway" not in history


def test_a_cancel_dialog_slack_would_not_open_names_its_error_page(
    running, fake_slack, fake_stripe
):
    order = delayed_order(running, fake_stripe)
    fake_slack.fail_next("views.open", status=502)
    url, _trigger = press(running, fake_slack, CANCEL_ACTION, order["id"])
    assert first_answer(fake_slack, url) == (
        "Slack did not open the cancel dialog: it answered with an error page (HTTP 502). "
        "Nothing was changed; click Cancel again."
    )


def test_stripes_refusal_is_quoted_bounded_inert_and_masked_like_the_logs(
    running, fake_slack, fake_stripe
):
    order = delayed_order(running, fake_stripe)
    hostile = (
        "<!channel> *Refused* ~now~ _x_ `rm -rf` <@U0BOB> > quoted; key sk_test_fake, token "
        "xoxb-test-token, secret slack-signing-secret; " + "and more " * 60
    )
    fake_stripe.refuse_cancel(order["id"], message=hostile)
    click(running, fake_slack, CANCEL_ACTION, order["id"])
    running.deliver()
    [answer] = [t for t in answers(fake_slack) if t.startswith("Stripe did not cancel")]
    prefix = f"Stripe did not cancel order `{order['id']}`: “"
    assert answer.startswith(prefix) and answer.endswith("…”")
    quoted = answer[len(prefix) : -1]
    assert len(quoted) <= 200
    assert quoted.startswith("&lt;!channel&gt; ∗Refused∗ ∼now∼ ˍxˍ ˋrm -rfˋ &lt;@U0BOB&gt; &gt;")
    _only_ours(quoted.replace("&lt;", "").replace("&gt;", ""))
    # This bot's own secrets (known from its settings) and anything shaped like one: masked.
    for secret in ("sk_test_fake", "xoxb-test-token", "slack-signing-secret"):
        assert secret not in answer
    assert quoted.count("[redacted]") == 3
    # The audit keeps Stripe's message as it came.
    [row] = running.bot.storage.audit_rows(order["id"])
    assert row["error"] == hostile


def test_stripe_answering_a_cancel_with_an_html_page_is_named_not_shown(
    running, fake_slack, fake_stripe
):
    order = delayed_order(running, fake_stripe)
    # Three times: the worker's client retries a 5xx twice.
    fake_stripe.fail_next("/v1/climate/orders/", status=502, times=3, html=BAD_GATEWAY_PAGE)
    click(running, fake_slack, CANCEL_ACTION, order["id"])
    running.deliver()
    [answer] = [t for t in answers(fake_slack) if "could not be reached" in t]
    assert answer == (
        f"Stripe could not be reached to cancel order `{order['id']}`: an error page (HTTP 502). "
        "Nothing changed; you can click Cancel again."
    )
    assert running.bot.storage.order_row(order["id"])["decision"] is None
