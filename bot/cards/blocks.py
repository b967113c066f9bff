"""Block Kit builders and readers of hostile Stripe values, shared by every renderer.

Readers turn whatever Stripe sent into mrkdwn-safe text of a fixed size (``_text``, ``_code``,
``_money``, ``_link``…); builders make the blocks (``_header``, ``_section``, ``_fields``,
``_context``), the message with its block ids (``_message``) and a thread reply (``_reply``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from bot.cards.limits import (
    ID_LIMIT,
    MAX_CONTEXT_ELEMENTS,
    MAX_FIELDS,
    MAX_HEADER,
    NAME_LIMIT,
    SHOWN_URL_LIMIT,
    TEXT_LIMIT,
    URL_LIMIT,
)
from bot.formatting import (
    BACKTICK_LOOKALIKE,
    ELLIPSIS,
    climate_dashboard_url,
    escape_mrkdwn,
    format_money,
    neutralise_styles,
    single_line,
    slack_date,
    truncate,
)
from bot.i18n import N_, _
from bot.model import Message

_LINKABLE = re.compile(r"https?://[^\s<>|\x00-\x1f\x7f]+", re.IGNORECASE)

# Marks the header and the notification text of a test-mode object (cards, thread replies and
# notices alike); {text} is what it marks.
_TEST_PREFIX = N_("[TEST] {text}")
_TEST_NOTE = N_("Test mode — no real money moved")


# --- reading hostile Stripe objects ---------------------------------------------------------------


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _raw(value: Any) -> str:
    """A Stripe value as unescaped text: for plain_text objects, button values and hashing."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    try:
        return str(value)
    except ValueError:  # an int too long for str(): not something Stripe sends
        return ELLIPSIS


def _text(value: Any, limit: int = NAME_LIMIT) -> str:
    """A Stripe value as one line of mrkdwn-safe text of at most ``limit`` characters: it cannot
    mention, link, ping, style or quote (``neutralise_styles`` after the cut)."""
    return neutralise_styles(truncate(escape_mrkdwn(single_line(_raw(value))), limit))


def _code(value: Any, limit: int = ID_LIMIT) -> str:
    """An id in a code span, so it reads as an identifier, exactly as Stripe wrote it: styling is
    inert inside a code span, so only a backtick (which would end it) gets its look-alike."""
    shown = truncate(escape_mrkdwn(single_line(_raw(value))), limit)
    if not shown:
        return _("(no id)")
    return "`" + shown.replace("`", BACKTICK_LOOKALIKE) + "`"


def _year(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if value is None:
        return _("not set")
    return _text(value, 12)


def _utc_year(ts: Any) -> int | None:
    if isinstance(ts, bool) or not isinstance(ts, int):
        return None
    try:
        return datetime.fromtimestamp(ts, tz=UTC).year
    except (OverflowError, OSError, ValueError):
        return None


def _money(amount: Any, currency: Any) -> str:
    if amount is None:
        return _("an unknown amount")
    return format_money(amount, _raw(currency))


def _is_test(obj: dict[str, Any]) -> bool:
    # Anything but an explicit livemode=true is marked as test: better a false "test" label
    # than a test order that looks like real money.
    return obj.get("livemode") is not True


def _link(url: Any, label: str) -> str | None:
    """``<url|label>`` for a plain http(s) URL, or None when the URL cannot be shown as a link.

    ``label`` must already be mrkdwn-safe; a ``|`` in it would end the URL part early, so it is
    replaced by a look-alike.
    """
    if not isinstance(url, str) or len(url) > URL_LIMIT or not _LINKABLE.fullmatch(url):
        return None
    return "<{url}|{label}>".format(url=url.replace("&", "&amp;"), label=label.replace("|", "¦"))


def _link_or_text(url: Any, label: str) -> str:
    """A link when possible; else the label followed by the URL as inert text; else the label."""
    link = _link(url, label)
    if link is not None:
        return link
    if url is None or _raw(url) == "":
        return label
    return _("{label}: {url}").format(label=label, url=_text(url, SHOWN_URL_LIMIT))


def _test_marked(text: str, test: bool) -> str:
    """``text`` marked as test mode when ``test``."""
    return _(_TEST_PREFIX).format(text=text) if test else text


def _bounded_lines(
    lines: Iterable[str],
    count: int,
    budget: int,
    shown: int,
    more: Callable[[int], str],
) -> list[str]:
    """Keep the first lines that fit in ``budget`` characters (at most ``shown`` of them), and
    say how many were left out with ``more(hidden)``.

    Lines are never cut, so links inside them stay whole.
    """
    kept: list[str] = []
    used = 0
    reserve = len(more(count)) + 1
    for index, line in enumerate(lines):
        last = index == count - 1
        cost = len(line) + 1
        if len(kept) >= shown or used + cost + (0 if last else reserve) > budget:
            break
        kept.append(line)
        used += cost
    hidden = count - len(kept)
    if hidden > 0:
        kept.append(more(hidden))
    return kept


# --- blocks ---------------------------------------------------------------------------------------


def _mrkdwn(text: str) -> dict[str, Any]:
    # verbatim: Slack must not turn names into links or mentions; our own <…> markup still works.
    return {"type": "mrkdwn", "text": text, "verbatim": True}


def _plain(text: str, limit: int) -> dict[str, Any]:
    return {"type": "plain_text", "text": truncate(text, limit), "emoji": True}


def _header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": _plain(text, MAX_HEADER)}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": _mrkdwn(text)}


def _fields(fields: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "type": "section",
        "fields": [_mrkdwn(f"*{label}*\n{value}") for label, value in fields[:MAX_FIELDS]],
    }


def _context(*texts: str) -> dict[str, Any]:
    return {"type": "context", "elements": [_mrkdwn(text) for text in texts[:MAX_CONTEXT_ELEMENTS]]}


def _message(text: str, named_blocks: list[tuple[str, dict[str, Any]]]) -> Message:
    """Give every block an id that is unique in the message and new whenever anything changes.

    A hash of the whole rendered message makes Slack re-render every block of an updated card
    (and drop stale button state) instead of reusing what it has under an old id.
    """
    text = truncate(text, TEXT_LIMIT) or _("Carbon removal update")
    content = json.dumps([text, named_blocks], sort_keys=True, ensure_ascii=False, default=str)
    digest = hashlib.sha256(content.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    blocks = [{**block, "block_id": f"{name}.{digest}"} for name, block in named_blocks]
    return Message(text=text, blocks=blocks)


def _dashboard_link() -> str:
    """The way to Stripe: its Dashboard's Climate page, the one Dashboard address Stripe
    documents for Climate (there is none for one order or one product)."""
    return _link(climate_dashboard_url(), _("Climate in the Stripe Dashboard")) or ""


def _late_sentence() -> str:
    return _("This update is older than what the card shows; the card was not changed.")


def _reply(lines: list[str], summary: str, late: bool, event_created: Any) -> Message:
    """A thread reply: the lines in one section, and for a late event a note saying so, in the
    blocks and in the notification text."""
    blocks: list[tuple[str, dict[str, Any]]] = [("reply", _section("\n".join(lines)))]
    if not late:
        return _message(summary, blocks)
    note = _("{late} Event time: {when}.").format(
        late=_late_sentence(), when=slack_date(event_created, "{date_long} {time}")
    )
    blocks.append(("late", _context(note)))
    with_note = _("{summary} {late}")
    # Cut the summary, never the note: the note is what makes a late reply make sense.
    room = TEXT_LIMIT - len(with_note.format(summary="", late=_late_sentence()))
    return _message(
        with_note.format(summary=truncate(summary, room), late=_late_sentence()), blocks
    )


_MARKUP = re.compile(r"<(?:!date\^[^|>]*\|([^>]*)|[^|>]*\|([^>]*))>")


def _strip_markup(line: str) -> str:
    """Replace our own ``<…|label>`` markup by its label, for the notification text."""
    return _MARKUP.sub(lambda match: match.group(1) or match.group(2) or "", line).replace("*", "")
