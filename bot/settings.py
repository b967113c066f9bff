"""Configuration: one typed settings object, read from the environment and `.env` at start-up.

The real environment wins over `.env`. Every missing or malformed variable is reported at once in a
readable `SettingsError`, so an operator fixes the whole file in one go.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.i18n import DEFAULT_LOCALE, SUPPORTED_LOCALES
from bot.routing import Routing, RoutingError, load_routing

# What each variable means, for error messages (the README has the same table).
DESCRIPTIONS = {
    "STRIPE_WEBHOOK_SECRET": (
        "Stripe webhook signing secrets (whsec_…, comma-separated);"
        " not needed when STRIPE_POLL_INTERVAL is set"
    ),
    "STRIPE_API_KEY": "Stripe secret or restricted key (sk_… or rk_…)",
    "SLACK_BOT_TOKEN": "Slack bot token (xoxb-…)",
    "SLACK_SIGNING_SECRET": "Slack app signing secret; not needed when SLACK_APP_TOKEN is set",
    "SLACK_APP_TOKEN": "app-level token (xapp-…, connections:write): Socket Mode, no public URL",
    "STRIPE_POLL_INTERVAL": "seconds between readings of Stripe's Events API (instead of webhooks)",
    "SLACK_CHANNEL": "ID of the channel that receives notifications (C…, G…)",
    "DATABASE_PATH": "SQLite file",
    "SLACK_API_URL": "base URL of the Slack Web API",
    "STRIPE_API_BASE": "base URL of the Stripe API",
    "PORT": "port of `python app.py`",
    "BOT_LOCALE": "language of every message: en or ja",
    "BOT_LOCALE_CHANNELS": "per-channel language, e.g. C123:ja,C456:en",
    "SLACK_ALLOWED_DECIDERS": "user ids (U…) and user-group ids (S…) who may decide; empty: anyone",
    "REMINDER_DAYS": "days before a decision deadline to remind, e.g. 7,1",
    "ROUTING_FILE": "TOML file routing event types and Stripe accounts to channels",
    "LOG_FORMAT": "text or json (one JSON object per line)",
    "LOG_LEVEL": "DEBUG, INFO, WARNING or ERROR",
}


class SettingsError(Exception):
    """Raised when the configuration is incomplete or malformed; its text lists every problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"climate-bot cannot start; fix the configuration:\n{lines}")


def _are_webhook_secrets(v: str) -> str:
    """One or more `whsec_…` secrets, comma-separated: a thin-event destination and a snapshot
    endpoint each have their own, and while a secret is rolled the old and the new are valid."""
    parts = [part.strip() for part in v.split(",")]
    if not all(parts):
        raise ValueError("is an empty secret in a comma-separated list")
    for index, part in enumerate(parts, start=1):
        if not part.startswith("whsec_"):
            which = f" (secret {index} of {len(parts)})" if len(parts) > 1 else ""
            raise ValueError(f"must start with whsec_{which}")
    return ",".join(parts)


# STRIPE_WEBHOOK_SECRET, as `Settings` and `climate-bot trigger`'s settings both read it.
WebhookSecret = Annotated[str, Field(min_length=1), AfterValidator(_are_webhook_secrets)]


def webhook_secrets(value: str) -> tuple[str, ...]:
    """The secrets of a validated STRIPE_WEBHOOK_SECRET, in the order given."""
    return tuple(value.split(","))


class Settings(BaseSettings):
    """All of climate-bot's configuration, validated."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=True
    )

    # Required unless its alternative is set (`_either_transport`): None then.
    STRIPE_WEBHOOK_SECRET: WebhookSecret | None = Field(repr=False)
    STRIPE_API_KEY: str = Field(min_length=1, repr=False)
    SLACK_BOT_TOKEN: str = Field(min_length=1, repr=False)
    SLACK_SIGNING_SECRET: str | None = Field(min_length=1, repr=False)
    SLACK_APP_TOKEN: str | None = Field(default=None, repr=False)
    STRIPE_POLL_INTERVAL: float | None = Field(default=None, ge=1, le=86_400)
    SLACK_CHANNEL: str = Field(min_length=1)
    DATABASE_PATH: str = "climate-bot.db"
    SLACK_API_URL: str = "https://slack.com/api/"
    STRIPE_API_BASE: str = "https://api.stripe.com"
    PORT: int = Field(default=3000, ge=1, le=65535)
    _routing: Routing = PrivateAttr()
    BOT_LOCALE: str = DEFAULT_LOCALE
    BOT_LOCALE_CHANNELS: str = ""
    SLACK_ALLOWED_DECIDERS: str = ""
    REMINDER_DAYS: str = "7,1"
    ROUTING_FILE: str = ""
    LOG_FORMAT: Literal["text", "json"] = "text"
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @model_validator(mode="before")
    @classmethod
    def _either_transport(cls, data: Any) -> Any:
        # Socket Mode needs no Slack signing secret, reading the Events API no webhook secret:
        # with its alternative set, a secret left out is None instead of missing.
        if isinstance(data, dict):
            data = dict(data)
            for secret, alternative in (
                ("STRIPE_WEBHOOK_SECRET", "STRIPE_POLL_INTERVAL"),
                ("SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN"),
            ):
                if data.get(alternative) and not data.get(secret):
                    data[secret] = None
        return data

    @field_validator("SLACK_APP_TOKEN", "STRIPE_POLL_INTERVAL", mode="before")
    @classmethod
    def _empty_is_unset(cls, v: Any) -> Any:
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("SLACK_APP_TOKEN")
    @classmethod
    def _app_token(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("xapp-"):
            raise ValueError("must be an app-level token starting with xapp-")
        return v

    @field_validator("STRIPE_API_KEY")
    @classmethod
    def _stripe_key(cls, v: str) -> str:
        if not re.match(r"^(sk|rk)_(test|live)_\w+$", v):
            raise ValueError("must be a secret (sk_test_…/sk_live_…) or restricted (rk_…) key")
        return v

    @field_validator("SLACK_BOT_TOKEN")
    @classmethod
    def _bot_token(cls, v: str) -> str:
        if not v.startswith("xoxb-"):
            raise ValueError("must be a bot token starting with xoxb-")
        return v

    @field_validator("SLACK_CHANNEL")
    @classmethod
    def _channel(cls, v: str) -> str:
        if not re.match(r"^[CG][A-Z0-9]{2,}$", v):
            raise ValueError("must be a channel ID such as C0123ABCD (not a #name)")
        return v

    @field_validator("SLACK_API_URL", "STRIPE_API_BASE")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://[^\s/]+", v):
            raise ValueError("must be an http(s) URL")
        return v

    @field_validator("SLACK_API_URL")
    @classmethod
    def _slack_url_slash(cls, v: str) -> str:
        return v if v.endswith("/") else v + "/"

    @field_validator("BOT_LOCALE")
    @classmethod
    def _locale(cls, v: str) -> str:
        if v not in SUPPORTED_LOCALES:
            raise ValueError(f"must be one of {', '.join(SUPPORTED_LOCALES)}")
        return v

    @field_validator("BOT_LOCALE_CHANNELS")
    @classmethod
    def _channel_locales(cls, v: str) -> str:
        parse_channel_locales(v)
        return v

    @field_validator("SLACK_ALLOWED_DECIDERS")
    @classmethod
    def _deciders(cls, v: str) -> str:
        bad = [d for d in _items(v) if not re.match(r"^[UWS][A-Z0-9]{2,}$", d)]
        if bad:
            raise ValueError(
                f"{', '.join(repr(b) for b in bad)} are not Slack user (U…) or user-group (S…) ids"
            )
        return v

    @field_validator("REMINDER_DAYS")
    @classmethod
    def _reminder_days(cls, v: str) -> str:
        if not all(d.isdigit() and 0 < int(d) < 30 for d in _items(v)):
            raise ValueError("must be whole days between 1 and 29, comma-separated, e.g. 7,1")
        return v

    @model_validator(mode="after")
    def _routing_file(self) -> Settings:
        # Read once at start-up: a mistake in the file stops the bot with the line named.
        try:
            object.__setattr__(
                self, "_routing", load_routing(self.ROUTING_FILE or None, self.SLACK_CHANNEL)
            )
        except RoutingError as exc:
            raise ValueError(str(exc)) from None
        return self

    @property
    def routing(self) -> Routing:
        return self._routing

    def secrets(self) -> list[str]:
        """Values that must never appear in a log line or an error message."""
        values = [
            *self.webhook_secrets,
            self.STRIPE_API_KEY,
            self.SLACK_BOT_TOKEN,
            self.SLACK_SIGNING_SECRET,
            self.SLACK_APP_TOKEN,
        ]
        return [value for value in values if value]

    @property
    def webhook_secrets(self) -> tuple[str, ...]:
        """Every signing secret a webhook may be signed with (none: webhooks are refused)."""
        if self.STRIPE_WEBHOOK_SECRET is None:
            return ()
        return webhook_secrets(self.STRIPE_WEBHOOK_SECRET)

    @property
    def socket_mode(self) -> bool:
        """Slack's requests come over a websocket the bot opens (SLACK_APP_TOKEN)."""
        return self.SLACK_APP_TOKEN is not None

    @property
    def polls_stripe(self) -> bool:
        """The bot reads Stripe's Events API itself (STRIPE_POLL_INTERVAL)."""
        return self.STRIPE_POLL_INTERVAL is not None

    @property
    def allowed_deciders(self) -> tuple[str, ...]:
        return tuple(_items(self.SLACK_ALLOWED_DECIDERS))

    @property
    def reminder_days(self) -> list[int]:
        return sorted({int(d) for d in _items(self.REMINDER_DAYS)}, reverse=True)

    def locale_for(self, channel: str | None) -> str:
        """The language of messages shown in `channel`: BOT_LOCALE_CHANNELS, then the routing
        file's `[channels.X] locale`, else BOT_LOCALE."""
        overrides = parse_channel_locales(self.BOT_LOCALE_CHANNELS)
        return overrides.get(channel or "") or self.routing.locales.get(
            channel or "", self.BOT_LOCALE
        )

    @property
    def database_path(self) -> Path:
        return Path(self.DATABASE_PATH)


def _items(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


@cache
def parse_channel_locales(value: str) -> dict[str, str]:
    """Parse `C123:ja,C456:en`; raise ValueError naming every bad entry."""
    result: dict[str, str] = {}
    bad = []
    for entry in filter(None, (part.strip() for part in value.split(","))):
        channel, _, locale = entry.partition(":")
        if not re.match(r"^[CGD][A-Z0-9]{2,}$", channel) or locale not in SUPPORTED_LOCALES:
            bad.append(entry)
        else:
            result[channel] = locale
    if bad:
        raise ValueError(
            f"entries {', '.join(repr(b) for b in bad)} are not CHANNEL_ID:LOCALE with LOCALE in "
            + ", ".join(SUPPORTED_LOCALES)
        )
    return result


def load_settings(
    env: Mapping[str, str] | None = None, *, env_file: str | Path | None = ".env"
) -> Settings:
    """Build the settings from `env` (default: the process environment) and `env_file`.

    Raises SettingsError naming every missing or malformed variable.
    """
    try:
        if env is None:
            return Settings(_env_file=env_file)  # type: ignore[call-arg]
        # Explicit mappings (tests, the demo) bypass the process environment entirely.
        return Settings.model_validate({k: v for k, v in env.items() if k in DESCRIPTIONS})
    except ValidationError as exc:
        raise SettingsError(_problems(exc)) from None


def _problems(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        if not err["loc"]:  # the routing file, checked once the fields are valid
            reason = err["msg"].removeprefix("Value error, ")
            problems.extend(f"ROUTING_FILE: {line}" for line in reason.splitlines())
            continue
        name = str(err["loc"][0])
        what = DESCRIPTIONS.get(name, "")
        if err["type"] == "missing":
            problems.append(f"{name} is not set ({what})")
        else:
            reason = err["msg"].removeprefix("Value error, ")
            problems.append(f"{name} is malformed: {reason} ({what})")
    return problems
