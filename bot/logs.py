"""Logging: one line per thing that happened, as text or JSON (`LOG_FORMAT=json`), never a secret.

Every handler gets a filter that masks the configured secrets (tokens, signing secrets, the Stripe
key) and Slack response_urls wherever they appear in a record — our own lines and the libraries'
(slack_sdk logs request URLs at DEBUG, Bolt logs bodies it cannot verify).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from pythonjsonlogger.json import JsonFormatter

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s"
MASK = "[redacted]"

# A response_url is a bearer capability for 30 minutes (hooks.slack.com/… in production, the
# sandbox's /hooks/… locally); Stripe and Slack secrets by their shapes, in case one leaks through
# an error message before the settings are known.
_PATTERNS = [
    re.compile(r"https?://[^\s\"']*/(?:actions|commands|hooks)/[^\s\"']+"),
    re.compile(r"\b(?:xox[abpr]|xapp)-[A-Za-z0-9-]{6,}"),
    re.compile(r"\b(?:sk|rk)_(?:test|live)_[A-Za-z0-9]{6,}"),
    re.compile(r"\bwhsec_[A-Za-z0-9]{6,}"),
]


class RedactingFilter(logging.Filter):
    """Masks secrets in a record's message, arguments and exception text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        for pattern in _PATTERNS:
            text = pattern.sub(MASK, text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg = self.redact(message)
        record.args = None
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        return True


def configure_logging(
    *, fmt: str = "text", level: int = logging.INFO, secrets: Iterable[str] = ()
) -> None:
    """Set up the root logger once per process: format, level and the redacting filter."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter(JSON_FIELDS, rename_fields={"levelname": "level"}))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
