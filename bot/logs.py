"""Logging: one line per thing that happened, as text or JSON (`LOG_FORMAT=json`), never a secret.

Every handler gets a filter that masks the configured secrets (tokens, signing secrets, the Stripe
key) and Slack response_urls wherever they appear in a record — our own lines and the libraries'
(slack_sdk logs request URLs at DEBUG, Bolt logs bodies it cannot verify). The same filter masks
the error texts of Stripe and Slack that people are shown in Slack (`redact`).
"""

from __future__ import annotations

import io
import logging
import os
import re
import sys
import threading
import time
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
        self.secrets: list[str] = []
        self.add_secrets(secrets)

    def add_secrets(self, secrets: Iterable[str]) -> None:
        """Mask these too, from now on (longest first, so no secret is half masked)."""
        known = set(self.secrets) | {s for s in secrets if s and len(s) >= 6}
        self.secrets = sorted(known, key=len, reverse=True)  # one assignment: thread-safe

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


# The process's one masking: every log handler gets it (`configure_logging`), and every error text
# of Stripe's or Slack's that is shown to a person goes through it too (`redact`, used by
# `bot.formatting.quoted_error`). It learns the secrets from the settings, once they are read.
PROCESS_FILTER = RedactingFilter()


def redact(text: str) -> str:
    """`text` with every secret this process knows, and anything shaped like one, masked."""
    return PROCESS_FILTER.redact(text)


def add_secrets(secrets: Iterable[str]) -> None:
    """Make the process's masking (log lines and quoted error texts) mask `secrets` too."""
    PROCESS_FILTER.add_secrets(secrets)


class BufferedStderrHandler(logging.StreamHandler):
    """Lines to stderr through a 64 KiB buffer, written out every `interval` seconds, at once
    for a warning or worse, and at exit.

    A write per line under load cost 15% of the webhook path (bench/ingest.py): each was a system
    call that handed the GIL to another thread. What a SIGKILL can lose is the last `interval`
    seconds of INFO lines, never a warning.
    """

    def __init__(self, interval: float = 0.2) -> None:
        try:
            stream = open(  # noqa: SIM115 — lives as long as the process
                sys.stderr.fileno(),
                "w",
                buffering=64 * 1024,
                encoding="utf-8",
                errors="backslashreplace",
                closefd=False,
            )
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            stream = sys.stderr  # a test runner's capture: no file descriptor to buffer
        super().__init__(stream)
        self.interval = interval
        self._flusher_pid: int | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.stream.write(self.format(record) + self.terminator)
            if record.levelno >= logging.WARNING:
                self.stream.flush()
            elif self._flusher_pid != os.getpid():  # first line of this process (or fork)
                self._flusher_pid = os.getpid()
                threading.Thread(target=self._flush_often, name="log-flusher", daemon=True).start()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def _flush_often(self) -> None:
        pid = os.getpid()
        while self._flusher_pid == pid:
            time.sleep(self.interval)
            self.flush()

    def close(self) -> None:
        """Write out what is buffered and stop flushing (the stream, stderr, stays open)."""
        self.flush()
        self._flusher_pid = None
        super().close()


def configure_logging(
    *, fmt: str = "text", level: int = logging.INFO, secrets: Iterable[str] = ()
) -> None:
    """Set up the root logger once per process: format, level and the redacting filter."""
    # No format of ours names the thread or the calling line: do not collect them for every
    # record (the logging HOWTO's "Optimization"). The process id stays: gunicorn's own error
    # log prints `[%(process)d]`, and without it every gunicorn line was a logging error.
    logging.logThreads = logging.logMultiprocessing = False
    logging._srcfile = None
    handler = BufferedStderrHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter(JSON_FIELDS, rename_fields={"levelname": "level"}))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    add_secrets(secrets)
    handler.addFilter(PROCESS_FILTER)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
