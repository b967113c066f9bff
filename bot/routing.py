"""Routing: which Slack channel hears about which event, and in which language.

`ROUTING_FILE` names a TOML file; without it everything goes to `SLACK_CHANNEL`. The first route
whose `events` patterns and `accounts` both match wins:

    [[route]]
    events = ["climate.product.*"]      # shell-style patterns; omitted: every event
    channel = "C0PRODUCTS"

    [[route]]
    accounts = ["acct_1Nv0FGQ9RKHgCVdK"] # Stripe Connect accounts; omitted: any account
    channel = "C0PARTNER"

    [channels.C0PARTNER]
    locale = "ja"

A card never moves: once an order or product has a card, every later event about it goes to the
card's thread, whatever the routes say.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from bot.i18n import SUPPORTED_LOCALES

CHANNEL_ID = re.compile(r"^[CG][A-Z0-9]{2,}$")
ACCOUNT_ID = re.compile(r"^acct_[A-Za-z0-9]+$")


class RoutingError(ValueError):
    """The routing file is unreadable or wrong; the message names the file and the line."""


@dataclass(frozen=True)
class Route:
    channel: str
    events: tuple[str, ...] = ()
    accounts: tuple[str, ...] = ()

    def matches(self, event_type: str, account: str | None) -> bool:
        if self.events and not any(fnmatch.fnmatchcase(event_type, p) for p in self.events):
            return False
        return not self.accounts or account in self.accounts


@dataclass(frozen=True)
class Routing:
    """The routes, the default channel, and per-channel languages from the file."""

    default_channel: str
    routes: tuple[Route, ...] = ()
    locales: dict[str, str] = field(default_factory=dict)

    @property
    def accounts(self) -> tuple[str, ...]:
        """Every Connect account a route names, in the file's order."""
        return tuple(dict.fromkeys(a for route in self.routes for a in route.accounts))

    def channel_for(self, event_type: str, account: str | None) -> str:
        for route in self.routes:
            if route.matches(event_type, account):
                return route.channel
        return self.default_channel


def load_routing(path: str | Path | None, default_channel: str) -> Routing:
    """Read and validate the routing file; raise RoutingError naming every problem's line."""
    if not path:
        return Routing(default_channel)
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RoutingError(f"{path}: cannot read it ({exc.strerror})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RoutingError(f"{path}: {exc}") from None
    problems: list[str] = []
    route_lines = _lines_of(text, r"^\s*\[\[\s*route\s*\]\]")
    routes = []
    raw_routes = data.get("route", [])
    if not isinstance(raw_routes, list):
        problems.append(f"{path}: `route` must be a list of [[route]] tables")
        raw_routes = []
    for index, raw in enumerate(raw_routes):
        line = route_lines[index] if index < len(route_lines) else 0
        where = f"{path} line {line} (route {index + 1})"
        unknown = set(raw) - {"channel", "events", "accounts"}
        if unknown:
            problems.append(f"{where}: unknown keys {', '.join(sorted(unknown))}")
        channel = raw.get("channel")
        if not isinstance(channel, str) or not CHANNEL_ID.match(channel):
            problems.append(f"{where}: channel {channel!r} is not a channel ID such as C0123ABCD")
        events = raw.get("events", [])
        if not _strings(events) or not all(e.startswith("climate.") for e in events):
            problems.append(f'{where}: events must be patterns such as "climate.order.*"')
        accounts = raw.get("accounts", [])
        if not _strings(accounts) or not all(ACCOUNT_ID.match(a) for a in accounts):
            problems.append(f"{where}: accounts must be Stripe account ids such as acct_123")
        if not any(p.startswith(where) for p in problems):
            routes.append(Route(channel, tuple(events), tuple(accounts)))
    locales = {}
    channels = data.get("channels", {})
    for channel, options in channels.items() if isinstance(channels, dict) else []:
        line = (_lines_of(text, rf"^\s*\[\s*channels\.{re.escape(channel)}\s*\]") or [0])[0]
        where = f"{path} line {line} (channels.{channel})"
        locale = options.get("locale") if isinstance(options, dict) else None
        if not CHANNEL_ID.match(channel):
            problems.append(f"{where}: {channel!r} is not a channel ID")
        elif locale not in SUPPORTED_LOCALES:
            problems.append(f"{where}: locale {locale!r} is not one of {SUPPORTED_LOCALES}")
        else:
            locales[channel] = locale
    unknown_top = set(data) - {"route", "channels"}
    if unknown_top:
        problems.append(f"{path}: unknown sections {', '.join(sorted(unknown_top))}")
    if problems:
        raise RoutingError("\n".join(problems))
    return Routing(default_channel, tuple(routes), locales)


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)


def _lines_of(text: str, pattern: str) -> list[int]:
    regex = re.compile(pattern)
    return [n for n, line in enumerate(text.splitlines(), start=1) if regex.match(line)]
