"""manifest.yml is a valid Slack app manifest whose every URL points at a route the app serves;
manifest-socket-mode.yml is the same app in Socket Mode, with no URL at all."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlparse

import jsonschema
import pytest
import yaml

from bot.web import create_app
from tests.support.paths import REPO

SCHEMAS = Path(__file__).resolve().parent / "data" / "slack"  # copied with their licences


MANIFESTS = ["manifest.yml", "manifest-socket-mode.yml"]


@pytest.fixture(scope="module")
def manifest() -> dict:
    return yaml.safe_load((REPO / "manifest.yml").read_text())


@pytest.fixture(scope="module")
def socket_manifest() -> dict:
    return yaml.safe_load((REPO / "manifest-socket-mode.yml").read_text())


def schema(relative: str) -> dict:
    return json.loads((SCHEMAS / relative).read_text())


# Slack's own schema (draft 7) and SchemaStore's (draft 4).
SCHEMAS_AND_DRAFTS = [
    ("manifest-schema/manifest.schema.1.0.0.json", jsonschema.Draft7Validator),
    ("schemastore/slack-app-manifest.json", jsonschema.Draft4Validator),
]


@pytest.mark.parametrize("name", MANIFESTS)
@pytest.mark.parametrize(("relative", "draft"), SCHEMAS_AND_DRAFTS, ids=["slack", "schemastore"])
def test_manifest_is_valid_against_each_schema(name, relative, draft):
    document = yaml.safe_load((REPO / name).read_text())
    errors = [f"{list(e.path)}: {e.message}" for e in draft(schema(relative)).iter_errors(document)]
    assert errors == []


def test_the_socket_mode_manifest_is_the_same_app_with_no_url(manifest, socket_manifest):
    assert list(urls(socket_manifest)) == []  # nothing for Slack to verify, nothing public
    assert socket_manifest["settings"]["socket_mode_enabled"] is True
    assert manifest["settings"]["socket_mode_enabled"] is False
    without_urls = yaml.safe_load((REPO / "manifest.yml").read_text())
    del without_urls["features"]["slash_commands"][0]["url"]
    del without_urls["settings"]["interactivity"]["request_url"]
    del without_urls["settings"]["event_subscriptions"]["request_url"]
    without_urls["settings"]["socket_mode_enabled"] = True
    assert socket_manifest == without_urls  # scopes, command, events: they cannot drift apart


def urls(node):
    if isinstance(node, dict):
        for value in node.values():
            yield from urls(value)
    elif isinstance(node, list):
        for value in node:
            yield from urls(value)
    elif isinstance(node, str) and node.startswith(("http://", "https://")):
        yield node


def test_every_manifest_url_is_a_route_the_app_serves(manifest, settings):
    app = create_app(settings)
    routes = {(rule.rule, method) for rule in app.url_map.iter_rules() for method in rule.methods}
    found = list(urls(manifest))
    assert found, "the manifest names no request URL"
    for url in found:
        assert urlparse(url).netloc == "YOUR-HOST"
        assert (urlparse(url).path, "POST") in routes, url
    app.extensions["climate-bot"].storage.close()


def test_manifest_asks_only_for_the_scopes_the_bot_uses(manifest):
    assert set(manifest["oauth_config"]["scopes"]["bot"]) == {
        "chat:write",
        "commands",
        "channels:join",
        "channels:history",
        "groups:history",
        "usergroups:read",
        "im:write",
    }
    [command] = manifest["features"]["slash_commands"]
    assert command["command"] == "/climate"
    assert "status <order_id>" in command["usage_hint"]
    assert manifest["settings"]["interactivity"]["is_enabled"] is True
    assert manifest["settings"]["event_subscriptions"]["bot_events"] == ["app_home_opened"]
    assert manifest["features"]["app_home"]["home_tab_enabled"] is True
    # Deciders read their direct messages in the app's Messages tab; they answer on the card.
    assert manifest["features"]["app_home"]["messages_tab_enabled"] is True
    assert manifest["features"]["app_home"]["messages_tab_read_only_enabled"] is True
