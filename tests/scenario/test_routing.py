"""ROUTING_FILE: event types and Stripe accounts to channels; a card never moves."""

from __future__ import annotations

import json

import pytest

from bot.sandbox import stripe_objects as so
from bot.settings import SettingsError, load_settings
from tests.support.bot import CHANNEL, env_for, serve_bot
from tests.support.routing import ROUTES


@pytest.fixture
def routed(tmp_path, fake_slack, fake_stripe):
    for channel, name in (("C0PRODUCTS", "products"), ("C0PARTNER", "partner"), ("C0ALERTS", "a")):
        fake_slack.add_channel(channel, name)
    (tmp_path / "routing.toml").write_text(ROUTES)
    env = {
        **env_for(tmp_path, fake_slack, fake_stripe),
        "ROUTING_FILE": str(tmp_path / "routing.toml"),
    }
    with serve_bot(load_settings(env)) as bot:
        yield bot


def test_events_go_to_their_routes_channel_and_language(routed, fake_slack):
    routed.send_event(so.event("climate.product.created", so.product()))
    routed.send_event(so.event("climate.order.created", so.order()))
    routed.send_event(so.event("climate.order.created", so.order(), account="acct_partner1"))
    routed.deliver()
    assert len(fake_slack.messages("C0PRODUCTS")) == 1
    assert len(fake_slack.messages(CHANNEL)) == 1
    [partner_card] = fake_slack.messages("C0PARTNER")
    assert "注文" in json.dumps(partner_card.blocks, ensure_ascii=False)


def test_a_card_never_moves_even_when_a_later_event_routes_elsewhere(routed, fake_slack):
    order = so.order()
    routed.send_event(so.event("climate.order.created", order, created=1000))
    routed.deliver()
    routed.send_event(
        so.event("climate.order.delayed", so.delayed(order, 2030, at=2000), created=2000)
    )
    routed.deliver()
    [card] = fake_slack.messages(CHANNEL)
    assert len(fake_slack.replies(CHANNEL, card.ts)) == 1
    assert fake_slack.messages("C0ALERTS") == []
    # A new order whose first event is a delay is born in the alerts channel.
    routed.send_event(so.event("climate.order.delayed", so.delayed(so.order(), 2030, at=2000)))
    routed.deliver()
    assert len(fake_slack.messages("C0ALERTS")) == 1


def test_a_bad_routing_file_stops_start_up_naming_the_line(tmp_path, fake_slack, fake_stripe):
    (tmp_path / "routing.toml").write_text(
        '[[route]]\nchannel = "C0OK"\n\n[[route]]\nchannel = "#general"\nevents = ["plan.*"]\n'
        '\n[channels.C0OK]\nlocale = "fr"\n'
    )
    env = {
        **env_for(tmp_path, fake_slack, fake_stripe),
        "ROUTING_FILE": str(tmp_path / "routing.toml"),
    }
    with pytest.raises(SettingsError) as info:
        load_settings(env)
    text = str(info.value)
    assert "line 4 (route 2): channel '#general'" in text
    assert "line 4 (route 2): events must be patterns" in text
    assert "line 8 (channels.C0OK): locale 'fr'" in text


def test_unparseable_or_missing_routing_files_are_named(tmp_path, fake_slack, fake_stripe):
    (tmp_path / "routing.toml").write_text("[[route]\nchannel = 1\n")
    env = {
        **env_for(tmp_path, fake_slack, fake_stripe),
        "ROUTING_FILE": str(tmp_path / "routing.toml"),
    }
    with pytest.raises(SettingsError, match="line 1"):
        load_settings(env)
    env["ROUTING_FILE"] = str(tmp_path / "nope.toml")
    with pytest.raises(SettingsError, match="cannot read it"):
        load_settings(env)
