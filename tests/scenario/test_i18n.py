"""Message catalogs: complete in every language, compiled, and chosen per channel."""

from __future__ import annotations

import io
import json
import re

import pytest
import requests
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from bot.i18n import LOCALES_DIR, SUPPORTED_LOCALES
from bot.sandbox import stripe_objects as so
from bot.sandbox.slack_requests import sign_slack_request, slash_command_body
from bot.settings import load_settings
from tests.support.bot import CHANNEL, SIGNING_SECRET, env_for, serve_bot
from tests.support.paths import REPO

PLACEHOLDER = re.compile(r"\{[a-z_]+\}")


def catalog(locale: str):
    with open(LOCALES_DIR / locale / "LC_MESSAGES" / "messages.po", "rb") as fp:
        return read_po(fp, locale=locale)


def ids(messages) -> set:
    return {m.id for m in messages if m.id}


def extracted_from_code() -> set:
    with open(REPO / "babel.cfg") as fp:
        method_map, options_map = parse_mapping_cfg(fp)
    keywords = {**DEFAULT_KEYWORDS, "N_": None, "ngettext": (1, 2)}
    found = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
        str(REPO), method_map, options_map, keywords=keywords
    ):
        found.add(message if isinstance(message, str) else tuple(message))
    return found


def test_every_string_in_the_code_is_in_every_catalog():
    in_code = {m if isinstance(m, str) else m[0] for m in extracted_from_code()}
    assert in_code, "nothing extracted: is babel.cfg right?"
    for locale in SUPPORTED_LOCALES:
        in_catalog = {m if isinstance(m, str) else m[0] for m in ids(catalog(locale))}
        assert in_code - in_catalog == set(), f"{locale}: run `make messages`"
        assert in_catalog - in_code == set(), f"{locale}: stale entries, run `make messages`"


@pytest.mark.parametrize("locale", SUPPORTED_LOCALES)
def test_every_entry_is_translated_and_keeps_its_placeholders(locale):
    for message in catalog(locale):
        if not message.id:
            continue
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        sources = message.id if isinstance(message.id, tuple) else (message.id,)
        assert all(strings), f"{locale}: untranslated {message.id!r}"
        assert not message.fuzzy, f"{locale}: fuzzy {message.id!r}"
        wanted = set(PLACEHOLDER.findall(sources[-1]))
        for string in strings:
            assert set(PLACEHOLDER.findall(string)) == wanted, f"{locale}: {message.id!r}"


@pytest.mark.parametrize("locale", SUPPORTED_LOCALES)
def test_compiled_catalogs_match_their_po_files(locale):
    compiled = io.BytesIO()
    write_mo(compiled, catalog(locale))
    shipped = (LOCALES_DIR / locale / "LC_MESSAGES" / "messages.mo").read_bytes()
    assert compiled.getvalue() == shipped, f"{locale}: run `make messages` to recompile"


def ask_help(bot, fake_slack, channel: str) -> str:
    body = slash_command_body(
        text="help", channel_id=channel, response_url=fake_slack.new_response_url()
    )
    headers = sign_slack_request(body, SIGNING_SECRET)
    response = requests.post(bot.url + "/slack/events", data=body, headers=headers, timeout=10)
    assert response.status_code == 200
    return response.text


def test_a_channel_override_speaks_japanese_while_the_default_stays_english(
    tmp_path, fake_slack, fake_stripe
):
    env = {**env_for(tmp_path, fake_slack, fake_stripe), "BOT_LOCALE_CHANNELS": f"{CHANNEL}:ja"}
    with serve_bot(load_settings(env)) as bot:
        bot.send_event(so.event("climate.order.created", so.order(currency="jpy")))
        bot.deliver()
        [card] = fake_slack.messages(CHANNEL)
        blocks = json.dumps(card.blocks, ensure_ascii=False)
        assert "注文" in blocks
        assert "New carbon removal order" not in blocks
        assert "Usage" not in ask_help(bot, fake_slack, CHANNEL)
        assert "Usage" in ask_help(bot, fake_slack, "C0ELSEWHERE")


def test_bot_locale_ja_makes_everything_japanese(tmp_path, fake_slack, fake_stripe):
    env = {**env_for(tmp_path, fake_slack, fake_stripe), "BOT_LOCALE": "ja"}
    with serve_bot(load_settings(env)) as bot:
        answer = ask_help(bot, fake_slack, "C0ELSEWHERE")
        assert "Usage" not in answer and "/climate" in answer
