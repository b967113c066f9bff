"""Translations: every word climate-bot shows comes from a gettext catalog, in the active locale.

Catalogs live in `bot/locales/<locale>/LC_MESSAGES/messages.po` and are compiled with Babel into
`.mo` files (`make messages`). Renderers call `_()` / `ngettext()`; whoever renders for a channel
activates that channel's locale with `use_locale()`. The active locale is a context variable, so
concurrent requests and the worker thread never see each other's language.
"""

from __future__ import annotations

import gettext
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache
from pathlib import Path

log = logging.getLogger(__name__)

LOCALES_DIR = Path(__file__).parent / "locales"
DOMAIN = "messages"
SUPPORTED_LOCALES = ("en", "ja")
DEFAULT_LOCALE = "en"

_active: ContextVar[str] = ContextVar("climate_bot_locale", default=DEFAULT_LOCALE)

# Strings that were looked up but are missing from a catalog; a test keeps this empty.
missing: set[tuple[str, str]] = set()
# When set, every msgid looked up in this context is added (tests prove they render every string).
_lookups: ContextVar[set[str] | None] = ContextVar("climate_bot_lookups", default=None)


@cache
def translations(locale: str) -> gettext.GNUTranslations:
    """The compiled catalog of `locale`; raises if it is not shipped."""
    if locale not in SUPPORTED_LOCALES:
        raise ValueError(f"unsupported locale {locale!r}; choose one of {SUPPORTED_LOCALES}")
    path = LOCALES_DIR / locale / "LC_MESSAGES" / f"{DOMAIN}.mo"
    with open(path, "rb") as fp:
        return gettext.GNUTranslations(fp)


def active_locale() -> str:
    return _active.get()


@contextmanager
def use_locale(locale: str) -> Iterator[None]:
    """Render in `locale` inside the block."""
    translations(locale)  # fail early on an unknown locale
    token = _active.set(locale)
    try:
        yield
    finally:
        _active.reset(token)


@contextmanager
def recording_lookups() -> Iterator[set[str]]:
    """Collect every msgid looked up inside the block."""
    seen: set[str] = set()
    token = _lookups.set(seen)
    try:
        yield seen
    finally:
        _lookups.reset(token)


def _note(message: str) -> None:
    seen = _lookups.get()
    if seen is not None:
        seen.add(message)


def _(message: str) -> str:
    """`message` (an English msgid) in the active locale."""
    _note(message)
    catalog = translations(_active.get())
    translated = catalog._catalog.get(message)  # noqa: SLF001 — the only way to tell a miss
    if translated is None:
        _record_missing(message)
        return message
    return translated


def ngettext(singular: str, plural: str, n: int) -> str:
    """The singular or plural form for `n`, in the active locale."""
    _note(singular)
    catalog = translations(_active.get())
    if (singular, 0) not in catalog._catalog:  # noqa: SLF001
        _record_missing(singular)
    return catalog.ngettext(singular, plural, n)


def N_(message: str) -> str:  # noqa: N802 — the conventional name for "mark, translate later"
    """Mark a string for extraction where it is defined; translate it with `_()` where used."""
    return message


def _record_missing(message: str) -> None:
    key = (_active.get(), message)
    if key not in missing:
        missing.add(key)
        log.warning("no %s translation for %r", key[0], message)


def fill_source_catalog(locale: str = DEFAULT_LOCALE) -> int:
    """Copy each untranslated msgid of the source-language catalog into its msgstr.

    English is the source language: its msgids are the English text, and its catalog exists so
    that every key is present in every language and wording can change without touching code.
    Returns how many entries were filled.
    """
    from babel.messages.pofile import read_po, write_po

    path = LOCALES_DIR / locale / "LC_MESSAGES" / f"{DOMAIN}.po"
    with open(path, "rb") as fp:
        catalog = read_po(fp, locale=locale)
    filled = 0
    for message in catalog:
        if not message.id or message.string and (not message.pluralizable or all(message.string)):
            continue
        message.string = message.id if not message.pluralizable else tuple(message.id)
        message.flags.discard("fuzzy")
        filled += 1
    with open(path, "wb") as fp:
        write_po(fp, catalog, width=100)
    return filled


if __name__ == "__main__":
    print(f"{fill_source_catalog()} English entries filled")
