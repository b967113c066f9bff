"""Block Kit → HTML for the Slack sandbox page: pure functions, and every input is hostile.

What a message shows in Slack is decided here, not in the browser: the page receives finished HTML
fragments and only inserts them. So everything that comes from a message (text, URLs, ids, names)
is escaped on the way out, and only our own fixed tags are ever emitted. Slack's ``mrkdwn`` is
rendered the way Slack shows it: ``*bold*``, ``_italic_``, ``~strike~``, ``code``, blockquotes,
``<https://…|label>`` links (http and https only), ``<@U…>`` mentions as @name, user groups and
``<!channel>`` as @handles, ``<!date^…|fallback>`` as its fallback; ``&lt; &gt; &amp;`` are shown
as the characters they stand for, and everything else as the text it is.

Modals are `bot.demo.modals`, the Stripe sandbox page `bot.demo.stripe_page`; both build on the
escaping here.
"""

from __future__ import annotations

import bisect
import datetime as dt
import html
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "Names",
    "ShownMessage",
    "block_html",
    "blocks_html",
    "message_html",
    "mrkdwn_html",
    "plain_html",
    "safe_url",
    "text_object_html",
]


@dataclass(frozen=True)
class Names:
    """What the page calls the ids it meets: users, user groups and channels."""

    users: Mapping[str, str] = field(default_factory=dict)
    usergroups: Mapping[str, str] = field(default_factory=dict)
    channels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ShownMessage:
    """One message as the page shows it: a channel message, a thread reply or an ephemeral."""

    key: str  # the ts of a message; "e" + message_ts for an ephemeral
    ts: str
    text: str
    blocks: list[Any]
    user: str | None = None
    is_bot: bool = False
    thread_ts: str | None = None
    reply_count: int = 0
    edited: bool = False
    ephemeral: bool = False
    broadcast: bool = False  # a thread reply also sent to the channel


# Slack's emoji short codes that Block Kit text may carry; others are shown as typed.
EMOJI = {
    "white_check_mark": "\u2705",
    "heavy_check_mark": "\u2714\ufe0f",
    "x": "\u274c",
    "warning": "\u26a0\ufe0f",
    "hourglass": "\u231b",
    "hourglass_flowing_sand": "\u23f3",
    "seedling": "\U0001f331",
    "earth_africa": "\U0001f30d",
    "earth_americas": "\U0001f30e",
    "package": "\U0001f4e6",
    "bell": "\U0001f514",
    "calendar": "\U0001f4c5",
    "moneybag": "\U0001f4b0",
    "tada": "\U0001f389",
    "rotating_light": "\U0001f6a8",
    "no_entry": "\u26d4",
    "information_source": "\u2139\ufe0f",
    "leaves": "\U0001f343",
    "factory": "\U0001f3ed",
    "receipt": "\U0001f9fe",
}

_EMOJI_CODE = re.compile(r":([a-z0-9_+-]{1,40}):")
# Only these three entities mean something in Slack text; any other "&…;" is just text.
_ENTITY = re.compile(r"&(lt|gt|amp);")
_ENTITY_CHARS = {"lt": "<", "gt": ">", "amp": "&"}
# Code and <…> tokens are cut out before styling, then put back as finished HTML.
_TOKEN = re.compile(r"```(?P<pre>.+?)```|`(?P<code>[^`\n]+)`|<(?P<angle>[^<>\n]*)>", re.DOTALL)
_MARK_OPEN, _MARK_CLOSE = "\ue000", "\ue001"  # private-use characters, removed from any input
_PLACEHOLDER = re.compile(f"{_MARK_OPEN}(\\d+){_MARK_CLOSE}")
_STYLE_TAGS = {"*": "b", "_": "i", "~": "s"}
_MAX_TEXT = 50_000  # far beyond Slack's limits; a hostile giant string is cut, not parsed


def _text(value: Any) -> str:
    """Any value as display text; non-strings (a hostile payload's numbers, lists) included."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    return text[:_MAX_TEXT]


def _esc(value: Any) -> str:
    return html.escape(_text(value), quote=True)


def _decode_entities(text: str) -> str:
    return _ENTITY.sub(lambda m: _ENTITY_CHARS[m.group(1)], text)


def _emoji(escaped: str) -> str:
    return _EMOJI_CODE.sub(lambda m: EMOJI.get(m.group(1), m.group(0)), escaped)


def safe_url(url: Any) -> str | None:
    """`url` if it is an absolute http(s) URL a page may link to, else None."""
    if not isinstance(url, str) or len(url) > 3000:
        return None
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return url


def plain_html(text: Any, *, emoji: bool = True) -> str:
    """A ``plain_text`` string: shown exactly as written (short codes become emoji)."""
    escaped = _esc(text)
    return _emoji(escaped) if emoji else escaped


def mrkdwn_html(text: Any, names: Names | None = None) -> str:
    """Slack ``mrkdwn`` as HTML, as Slack shows it; newlines stay newlines (CSS pre-wrap)."""
    names = names or Names()
    source = _text(text).replace(_MARK_OPEN, "\ufffd").replace(_MARK_CLOSE, "\ufffd")
    tokens: list[str] = []

    def cut(match: re.Match[str]) -> str:
        tokens.append(_token_html(match, names))
        return f"{_MARK_OPEN}{len(tokens) - 1}{_MARK_CLOSE}"

    marked = _TOKEN.sub(cut, source)
    out: list[str] = []
    quote: list[str] = []
    for line in marked.split("\n"):
        # A ">" typed at the start of a line quotes it; an escaped "&gt;" is just a character.
        if line.startswith(">"):
            quote.append(_styled(_decode_entities(line[1:].removeprefix(" ")), tokens))
            continue
        if quote:
            out.append(_blockquote(quote))
            quote = []
        out.append(_styled(_decode_entities(line), tokens) + "\n")
    if quote:
        out.append(_blockquote(quote))
    return "".join(out).removesuffix("\n")


def _blockquote(lines: list[str]) -> str:
    return '<blockquote class="sk-quote">' + "\n".join(lines) + "</blockquote>"


def _styled(text: str, tokens: list[str]) -> str:
    """Escape `text` and apply *bold*, _italic_ and ~strike~ where Slack would.

    One pass with the possible closing positions looked up by bisection, so hostile text full of
    markers costs n·log n, not n².
    """
    closers = {marker: _closers(text, marker) for marker in _STYLE_TAGS}
    out: list[str] = []
    stack: list[tuple[str, int]] = []  # open styles: (marker, index of their closing marker)
    run_start = 0
    for i, char in enumerate(text):
        if stack and stack[-1][1] == i:
            out.append(_literal(text[run_start:i], tokens))
            out.append(f"</{_STYLE_TAGS[stack.pop()[0]]}>")
            run_start = i + 1
            continue
        if char not in _STYLE_TAGS or not _opens(text, i):
            continue
        candidates = closers[char]
        k = bisect.bisect_left(candidates, i + 2)  # at least one character between the markers
        limit = stack[-1][1] if stack else len(text)
        if k == len(candidates) or candidates[k] >= limit:
            continue
        out.append(_literal(text[run_start:i], tokens))
        out.append(f"<{_STYLE_TAGS[char]}>")
        stack.append((char, candidates[k]))
        run_start = i + 1
    out.append(_literal(text[run_start:], tokens))
    return "".join(out)


def _opens(text: str, i: int) -> bool:
    before = text[i - 1] if i > 0 else " "
    after = text[i + 1] if i + 1 < len(text) else " "
    return not before.isalnum() and before != text[i] and not after.isspace()


def _closers(text: str, marker: str) -> list[int]:
    found = []
    j = text.find(marker, 1)
    while j != -1:
        after = text[j + 1] if j + 1 < len(text) else " "
        if not text[j - 1].isspace() and not after.isalnum() and after != marker:
            found.append(j)
        j = text.find(marker, j + 1)
    return found


def _literal(text: str, tokens: list[str]) -> str:
    escaped = _emoji(html.escape(text, quote=True))
    return _PLACEHOLDER.sub(lambda m: tokens[int(m.group(1))], escaped)


def _token_html(match: re.Match[str], names: Names) -> str:
    if match.group("pre") is not None:
        body = match.group("pre").removeprefix("\n")
        return f'<pre class="sk-pre">{_esc(_decode_entities(body))}</pre>'
    if match.group("code") is not None:
        return f'<code class="sk-code">{_esc(_decode_entities(match.group("code")))}</code>'
    return _angle_html(match.group("angle"), names)


def _angle_html(inner: str, names: Names) -> str:
    """A ``<…>`` token: link, mention, channel, special mention or date."""
    target, _, label = inner.partition("|")
    label = _decode_entities(label)
    if target.startswith("@"):
        user = target[1:]
        name = names.users.get(user) or label or user
        return _mention("@" + name, f"user {user}")
    if target.startswith("#"):
        channel = target[1:]
        name = names.channels.get(channel) or label or channel
        return _mention("#" + name, f"channel {channel}")
    if target.startswith("!"):
        return _special_html(target[1:], label, names)
    url = safe_url(_decode_entities(target))
    if url is None:
        # Not a link a page may follow (javascript:, mailto:, junk): show its words only.
        shown = label or f"<{_decode_entities(inner)}>"
        return f'<span class="sk-nolink">{_esc(shown)}</span>'
    return (
        f'<a class="sk-link" href="{_esc(url)}" target="_blank" rel="noopener noreferrer">'
        f"{_esc(label or url)}</a>"
    )


def _special_html(command: str, label: str, names: Names) -> str:
    head, _, rest = command.partition("^")
    if head in ("channel", "here", "everyone"):
        return _mention("@" + head, "notifies everyone here")
    if head == "subteam":
        group = rest.split("^", 1)[0]
        handle = names.usergroups.get(group) or label.removeprefix("@") or group
        return _mention("@" + handle, f"user group {group}")
    if head == "date":
        stamp = rest.split("^", 1)[0]
        return _date_html(stamp, label)
    return f'<span class="sk-nolink">{_esc(label or "<!" + command + ">")}</span>'


def _date_html(stamp: str, fallback: str) -> str:
    try:
        moment = dt.datetime.fromtimestamp(int(stamp), tz=dt.UTC)
    except (ValueError, OverflowError, OSError):
        return f"<span>{_esc(fallback)}</span>"
    iso = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return f'<time class="sk-date" datetime="{iso}" title="{iso}">{_esc(fallback)}</time>'


def _mention(shown: str, title: str) -> str:
    return f'<span class="sk-mention" title="{_esc(title)}">{_esc(shown)}</span>'


def text_object_html(obj: Any, names: Names | None = None) -> str:
    """A ``plain_text`` or ``mrkdwn`` text object; anything else renders as nothing."""
    if not isinstance(obj, Mapping):
        return ""
    if obj.get("type") == "mrkdwn":
        return mrkdwn_html(obj.get("text"), names)
    if obj.get("type") == "plain_text":
        return plain_html(obj.get("text"), emoji=obj.get("emoji", True) is not False)
    return ""


# --- blocks ---------------------------------------------------------------------------------------


def blocks_html(blocks: Any, names: Names | None = None) -> str:
    """Every block of a message, in order; a non-list renders as nothing."""
    if not isinstance(blocks, list):
        return ""
    names = names or Names()
    return "".join(block_html(block, names, index=i) for i, block in enumerate(blocks))


def block_html(block: Any, names: Names | None = None, *, index: int = 0) -> str:
    """One block. Interactive elements carry ``data-block``/``data-element`` so a click can be
    traced back to the element in the stored message (the page never sends a button's value)."""
    names = names or Names()
    if not isinstance(block, Mapping):
        return ""
    kind = block.get("type")
    render = _BLOCKS.get(kind) if isinstance(kind, str) else None
    if render is None:
        return f'<div class="sk-block sk-unsupported">[{_esc(kind)} block not shown here]</div>'
    return render(block, names, index)


def _header(block: Mapping[str, Any], names: Names, index: int) -> str:
    return f'<div class="sk-block sk-header">{text_object_html(block.get("text"), names)}</div>'


def _section(block: Mapping[str, Any], names: Names, index: int) -> str:
    parts = []
    if block.get("text") is not None:
        parts.append(f'<div class="sk-text">{text_object_html(block.get("text"), names)}</div>')
    fields = block.get("fields")
    if isinstance(fields, list) and fields:
        cells = "".join(f'<div class="sk-field">{text_object_html(f, names)}</div>' for f in fields)
        parts.append(f'<div class="sk-fields">{cells}</div>')
    body = f'<div class="sk-section-body">{"".join(parts)}</div>'
    accessory = block.get("accessory")
    if isinstance(accessory, Mapping):
        element = _element_html(accessory, names, index, "accessory")
        return (
            f'<div class="sk-block sk-section sk-with-accessory">{body}'
            f'<div class="sk-accessory">{element}</div></div>'
        )
    return f'<div class="sk-block sk-section">{body}</div>'


def _context(block: Mapping[str, Any], names: Names, index: int) -> str:
    elements = block.get("elements")
    items = []
    for element in elements if isinstance(elements, list) else []:
        if isinstance(element, Mapping) and element.get("type") == "image":
            items.append(_image_tag(element, "sk-context-image"))
        else:
            items.append(f'<span class="sk-context-text">{text_object_html(element, names)}</span>')
    return f'<div class="sk-block sk-context">{"".join(items)}</div>'


def _divider(block: Mapping[str, Any], names: Names, index: int) -> str:
    return '<hr class="sk-block sk-divider">'


def _image(block: Mapping[str, Any], names: Names, index: int) -> str:
    title = block.get("title")
    caption = f'<div class="sk-image-title">{text_object_html(title, names)}</div>' if title else ""
    return (
        f'<figure class="sk-block sk-image">{caption}{_image_tag(block, "sk-image-img")}</figure>'
    )


def _image_tag(element: Mapping[str, Any], css: str) -> str:
    alt = _esc(element.get("alt_text"))
    url = safe_url(element.get("image_url"))
    if url is None:
        return f'<span class="{css} sk-image-missing" role="img" aria-label="{alt}">{alt}</span>'
    return f'<img class="{css}" src="{_esc(url)}" alt="{alt}" loading="lazy">'


def _actions(block: Mapping[str, Any], names: Names, index: int) -> str:
    elements = block.get("elements")
    items = [
        _element_html(element, names, index, str(i))
        for i, element in enumerate(elements if isinstance(elements, list) else [])
    ]
    return f'<div class="sk-block sk-actions">{"".join(items)}</div>'


def _element_html(element: Any, names: Names, index: int, position: str) -> str:
    if not isinstance(element, Mapping):
        return ""
    kind = element.get("type")
    if kind == "button":
        return _button(element, names, index, position)
    if kind == "image":
        return _image_tag(element, "sk-accessory-image")
    label = _esc(kind)
    return f'<span class="sk-element-unsupported">[{label}]</span>'


def _button(element: Mapping[str, Any], names: Names, index: int, position: str) -> str:
    style = element.get("style")
    css = "sk-button" + (f" sk-{style}" if style in ("primary", "danger") else "")
    attributes = [
        f'class="{css}"',
        'type="button"',
        f'data-block="{index}"',
        f'data-element="{_esc(position)}"',
        f'data-action-id="{_esc(element.get("action_id"))}"',
    ]
    url = safe_url(element.get("url"))
    if url is not None:
        attributes.append(f'data-url="{_esc(url)}"')
    label = text_object_html(element.get("text"), names)
    button = f"<button {' '.join(attributes)}>{label}</button>"
    confirm = element.get("confirm")
    if not isinstance(confirm, Mapping):
        return button
    return f'<span class="sk-button-wrap">{button}{_confirm(confirm, names)}</span>'


def _confirm(confirm: Mapping[str, Any], names: Names) -> str:
    """The confirm dialog's contents, hidden; the page shows them in a modal on click."""
    danger = " sk-danger" if confirm.get("style") == "danger" else " sk-primary"
    yes = text_object_html(confirm.get("confirm"), names) or "Yes"
    no = text_object_html(confirm.get("deny"), names) or "Cancel"
    return (
        '<span class="sk-confirm" hidden>'
        f'<span class="sk-confirm-title">{text_object_html(confirm.get("title"), names)}</span>'
        f'<span class="sk-confirm-text">{text_object_html(confirm.get("text"), names)}</span>'
        f'<span class="sk-confirm-deny">{no}</span>'
        f'<span class="sk-confirm-yes{danger}">{yes}</span>'
        "</span>"
    )


_BLOCKS = {
    "header": _header,
    "section": _section,
    "context": _context,
    "divider": _divider,
    "image": _image,
    "actions": _actions,
}


# --- messages -------------------------------------------------------------------------------------


def message_html(message: ShownMessage, names: Names | None = None) -> str:
    """A whole message as the channel or a thread shows it: author, time, content, replies."""
    names = names or Names()
    if message.is_bot:
        author = names.users.get(message.user or "", "climate-bot")
    else:
        author = names.users.get(message.user or "", message.user or "someone")
    badge = '<span class="sk-badge">APP</span>' if message.is_bot else ""
    edited = ' <span class="sk-edited">(edited)</span>' if message.edited else ""
    content = (
        blocks_html(message.blocks, names)
        if message.blocks
        else f'<div class="sk-block sk-section"><div class="sk-text">'
        f"{mrkdwn_html(message.text, names)}</div></div>"
    )
    replies = ""
    if message.reply_count and not message.thread_ts:
        count = message.reply_count
        word = "reply" if count == 1 else "replies"
        replies = (
            f'<button type="button" class="sk-replies" data-thread="{_esc(message.ts)}">'
            f"{count} {word}</button>"
        )
    shared = ""
    if message.broadcast and message.thread_ts:
        # Slack shows the one message in both places, saying so in each.
        shared = (
            '<div class="sk-broadcast"><span class="sk-broadcast-channel">replied to a thread '
            f'<button type="button" class="sk-replies" data-thread="{_esc(message.thread_ts)}">'
            "View thread</button></span>"
            '<span class="sk-broadcast-thread">Also sent to the channel</span></div>'
        )
    css = "sk-msg sk-ephemeral" if message.ephemeral else "sk-msg"
    note = (
        '<div class="sk-ephemeral-note">Only visible to you '
        '<button type="button" class="sk-dismiss">Dismiss</button></div>'
        if message.ephemeral
        else ""
    )
    initial = _esc((author[:1] or "?").upper())
    return (
        f'<div class="{css}" data-key="{_esc(message.key)}" data-ts="{_esc(message.ts)}">'
        f'<div class="sk-avatar{" sk-avatar-bot" if message.is_bot else ""}">{initial}</div>'
        '<div class="sk-main">'
        f"{note}"
        f'<div class="sk-meta"><span class="sk-author">{_esc(author)}</span>{badge} '
        f"{_time_html(message.ts)}{edited}</div>"
        f"{shared}"
        f'<div class="sk-content">{content}</div>'
        f"{replies}</div></div>"
    )


def _time_html(ts: str) -> str:
    try:
        moment = dt.datetime.fromtimestamp(float(ts), tz=dt.UTC)
    except (ValueError, OverflowError, OSError):
        return ""
    iso = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return f'<time class="sk-time" datetime="{iso}">{moment.strftime("%H:%M")} UTC</time>'
