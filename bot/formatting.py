"""Small pure helpers that turn Stripe values into safe, readable Slack text.

Every helper that shows a value from Stripe returns *mrkdwn-safe* text: it never contains a raw
``&``, ``<`` or ``>``, nor a character that could open or close a mrkdwn style span (``*``, ``_``,
``~``, a backtick) or start a quote, so a caller can drop it into a mrkdwn text object without
escaping it again (``inert_mrkdwn``). The exception is ``slack_date`` (Slack's own ``<!date…>``
markup, on purpose).

Every user-visible word comes from the gettext catalog of the active locale (``bot.i18n``), and
numbers, money, tonnes, percentages and dates are formatted by Babel for that locale. Each helper
takes an optional ``locale``; ``None`` means the active one.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation, localcontext

from babel.dates import format_datetime
from babel.lists import format_list
from babel.numbers import format_currency, format_decimal, format_percent, get_currency_precision

from bot.i18n import N_, _, active_locale, use_locale
from bot.logs import redact

ELLIPSIS = "…"
MINUS = "\u2212"

# Entities escape_mrkdwn produces; truncate must never cut one in half.
_ENTITIES = ("&amp;", "&lt;", "&gt;")
_LONGEST_ENTITY = max(len(entity) for entity in _ENTITIES)

_CURRENCY_CODE = re.compile(r"[A-Z]{3}")
# Stripe amounts are 64-bit integers; anything far beyond that is not money we can show.
_MAX_AMOUNT_BITS = 128

# A tonne figure with more significant digits or a wilder exponent than this is not a quantity
# Stripe sends; formatting it in full could produce megabytes of digits.
_MAX_TONNE_DIGITS = 40
_MAX_TONNE_EXPONENT = 30
_MALFORMED_LIMIT = 40

# One decimal, always signed, with a true minus sign (U+2212) rather than a hyphen.
_SIGNED_PERCENT = f"+#,##0.0%;{MINUS}#,##0.0%"
_PERCENT = "#,##0.0%"

_PATHWAYS = {
    "biomass_carbon_removal_and_storage": N_("Biomass carbon removal and storage"),
    "direct_air_capture": N_("Direct air capture"),
    "enhanced_weathering": N_("Enhanced weathering"),
    "marine_carbon_removal": N_("Marine carbon removal"),
}
_PATHWAY_LIMIT = 60

_CANCELLATION_REASONS = {
    "expired": N_("it was never confirmed and expired"),
    "product_unavailable": N_("Frontier could not fulfil it: the product is no longer available"),
    "requested": N_("a cancellation was requested"),
}
_REASON_LIMIT = 80

# The one Dashboard address Stripe documents for Climate: its Climate page ("in the Dashboard
# (https://dashboard.stripe.com/climate)", docs.stripe.com/climate/commitments). Stripe documents
# no address for one Climate order or product (neither the API reference nor the Climate guides
# give one), nor a test-mode or connected-account form of this page, so cards link here and to
# nothing guessed.
CLIMATE_DASHBOARD_URL = "https://dashboard.stripe.com/climate"

# The Babel (CLDR) date pattern of every date in plain text (a date token's fallback, a
# notification text), translated like any other text: each language writes dates its own way
# ("1 Jan 2027 00:00 UTC", "2027年1月1日 0:00 UTC"). Moments are always shown in UTC, and the zone
# field ``z`` keeps saying so in every language: a date that did not name its zone would be read
# in the reader's own.
DEFAULT_DATE_FALLBACK = N_("d MMM y HH:mm z")


_NOT_AVAILABLE = N_("n/a")


def _locale(locale: str | None) -> str:
    return locale or active_locale()


def _in(locale: str, message: str) -> str:
    """``message`` from the catalog of ``locale``, so that a helper called with an explicit
    locale speaks it even where another one is active."""
    with use_locale(locale):
        return _(message)


_SLACK_ENTITY = re.compile(r"^[UWS][A-Z0-9]{2,30}$")


def slack_mention(entity: str) -> str:
    """A user (U…/W…) or user group (S…) id as a Slack mention; anything else gives ""."""
    if not isinstance(entity, str) or not _SLACK_ENTITY.match(entity):
        return ""
    return f"<!subteam^{entity}>" if entity.startswith("S") else f"<@{entity}>"


def escape_mrkdwn(text: str) -> str:
    """Escape Slack's three control characters so external text cannot mention, link or ping.

    ``&`` goes first so the entities produced for ``<`` and ``>`` are not escaped twice. This alone
    is right inside a code span (ids), where mrkdwn styling is inert; anywhere else external text
    goes through ``inert_mrkdwn``.
    """
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# Slack's mrkdwn has no escape for its style characters: ``*bold*``, ``_italic_``, ``~strike~``
# and code spans open and close on the bare characters, and ``>`` at the start of a line quotes
# it. External text therefore gets look-alikes that render the same but are no markup: ASTERISK
# OPERATOR, MODIFIER LETTER LOW MACRON, TILDE OPERATOR, MODIFIER LETTER GRAVE ACCENT and MODIFIER
# LETTER RIGHT ARROWHEAD. Look-alikes rather than zero-width characters: a zero-width space next
# to a style character is exactly how one forces Slack to style mid-word, and an invisible
# character would survive into copied text unseen. One exception keeps ids, URLs and snake_case
# names as they are: an underscore between two ASCII letters or digits can neither open nor close
# a span (Slack styles no part of a word: snake_case stays plain), so it stays a real underscore.
BACKTICK_LOOKALIKE = "\u02cb"
_STYLE_LOOKALIKES = {"*": "\u2217", "_": "\u02cd", "~": "\u223c", "`": BACKTICK_LOOKALIKE}
_STYLE_CHARACTER = re.compile(r"[*~`]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
QUOTE_LOOKALIKE = "\u02c3"


def neutralise_styles(text: str) -> str:
    """Replace every character of ``text`` (plain or already escaped) that could open or close a
    mrkdwn style span, or quote a line, by its look-alike (see ``_STYLE_LOOKALIKES``): the text
    reads the same and styles nothing. Our own markup, added around it afterwards, still works.

    Apply it last, after any cut: cutting ``snake_case`` to ``snake_…`` leaves an underscore at
    the edge of a word, where it could close a span.
    """
    text = _STYLE_CHARACTER.sub(lambda match: _STYLE_LOOKALIKES[match.group()], text)
    for quote in ("&gt;", ">"):
        if text.startswith(quote):
            return QUOTE_LOOKALIKE + text[len(quote) :]
    return text


def inert_mrkdwn(text: str) -> str:
    """External text made inert in mrkdwn: it cannot mention, link, ping, style or quote."""
    return neutralise_styles(escape_mrkdwn(text))


def truncate(text: str, limit: int) -> str:
    """Return ``text`` cut to at most ``limit`` characters, ending with "…" when it was cut.

    Safe on escaped text: a cut never splits an ``&amp;``/``&lt;``/``&gt;`` entity, nor one of
    our code spans (Stripe's backticks are look-alikes by then, so every backtick is ours: a cut
    that leaves one open goes back to before it, or the rest would show as code).
    """
    if len(text) <= limit:
        return text
    if limit <= 0:
        return ""
    cut = text[: limit - 1]
    amp = cut.rfind("&", max(0, len(cut) - _LONGEST_ENTITY + 1))
    if amp != -1 and text.startswith(_ENTITIES, amp) and ";" not in cut[amp:]:
        cut = cut[:amp]
    if cut.count("`") % 2:
        cut = cut[: cut.rfind("`")]
    return cut.rstrip() + ELLIPSIS


def single_line(text: str) -> str:
    """Collapse newlines and runs of whitespace into single spaces and drop invisible characters,
    so that external text cannot start a line of its own and pass for part of a message."""
    return "".join(char for char in " ".join(text.split()) if char.isprintable())


def _safe(value: object, limit: int) -> str:
    """Show an unexpected value as inert, bounded, single-line text."""
    try:
        text = str(value)
    except ValueError:  # an int too long for str(): nothing from Stripe, so nothing to show
        return ELLIPSIS
    return neutralise_styles(truncate(escape_mrkdwn(single_line(text)), limit))


# How much of an error text from Stripe or Slack a person is shown (then "…").
ERROR_LIMIT = 200
# What gives an HTML page away: a proxy's or load balancer's error page, which Slack's SDK puts in
# its error ("Received a response in a non-JSON format: <html>…") and Stripe's in its message
# ("Invalid response body from API: <html>…"). Slack's own markup (<!date^…>, <@U…>) is no tag.
_HTML = re.compile(
    r"<\s*(?:!doctype\b|/?(?:html|head|body|title|h[1-6]|p|div|center|pre|hr|br|table|meta|"
    r"style|script)\b)",
    re.IGNORECASE,
)


def quoted_error(text: object, *, http_status: int | None = None) -> str:
    """An error text from Stripe or Slack as a person may be shown it, in a sentence of ours:
    quoted, one line of at most ``ERROR_LIMIT`` characters, inert in mrkdwn (it cannot mention,
    ping, link, style or quote: ``_safe``), with every secret masked as in the logs
    (``bot.logs.redact``, applied before the cut so no half secret is left). An HTML page is never
    shown: it is named ("an error page (HTTP 502)", with ``http_status`` when known).

    The audit and the logs keep the full text; this is only for what a person reads.
    """
    try:
        raw = text if isinstance(text, str) else "" if text is None else str(text)
    except ValueError:  # an int too long for str(): nothing to show
        raw = ""
    masked = redact(raw)
    if _HTML.search(masked):
        if isinstance(http_status, int) and 100 <= http_status <= 599:
            return _("an error page (HTTP {status})").format(status=http_status)
        return _("an error page")
    shown = _safe(masked, ERROR_LIMIT)
    if not shown:
        return _("no explanation")
    return _("“{message}”").format(message=shown)


# Stripe's own definition of "the currency's smallest unit" (docs: currencies, zero-decimal and
# three-decimal). It differs from ISO/CLDR for a few currencies (HUF, TWD, ISK are two-decimal in
# Stripe's API; UGX is zero-decimal), and Stripe's amounts are what we convert.
STRIPE_ZERO_DECIMAL = frozenset(
    "BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF UGX VND VUV XAF XOF XPF".split()  # noqa: SIM905
)
STRIPE_THREE_DECIMAL = frozenset(["BHD", "JOD", "KWD", "OMR", "TND"])


def minor_unit_exponent(code: str) -> int:
    """How many decimals Stripe's integer amounts carry in currency `code` (upper case)."""
    if code in STRIPE_ZERO_DECIMAL:
        return 0
    if code in STRIPE_THREE_DECIMAL:
        return 3
    return 2


def format_money(amount_minor: int, currency: str, locale: str | None = None) -> str:
    """Format an amount in the currency's smallest unit, e.g. ``72187, "usd"`` → ``"$721.87"``.

    Minor units are converted with Stripe's exponent for the currency (0 for JPY, 3 for BHD), never
    a fixed 100, and every one of those decimals is shown whatever the locale; Babel writes the
    symbol, grouping and decimal mark of ``locale`` (default: the active one). An amount that is
    not an integer is shown escaped as-is instead of raising.
    """
    locale = _locale(locale)
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int):
        return _safe(amount_minor, _MALFORMED_LIMIT)
    if amount_minor.bit_length() > _MAX_AMOUNT_BITS:
        return _in(locale, N_("an implausibly large amount"))
    code = currency.upper() if isinstance(currency, str) else ""
    if not _CURRENCY_CODE.fullmatch(code):
        # Not an ISO code, so its precision is unknown: show the minor units and the code verbatim.
        return f"{format_decimal(amount_minor, locale=locale)} {_safe(currency, 12)}"
    precision = minor_unit_exponent(code)
    # Babel quantizes in the current decimal context; huge amounts need more than 28 digits.
    with localcontext() as context:
        context.prec = max(28, len(str(abs(amount_minor))) + precision + 4)
        value = Decimal(amount_minor).scaleb(-precision)
        # Show every decimal Stripe's amount has, even where CLDR rounds cash amounts (HUF, TWD).
        cldr_has_them = get_currency_precision(code) >= precision
        return escape_mrkdwn(
            format_currency(value, code, locale=locale, currency_digits=cldr_has_them)
        )


def format_number(value: int, locale: str | None = None) -> str:
    """Format a count (of suppliers, deliveries, …) with the grouping of ``locale``."""
    return format_decimal(value, locale=_locale(locale))


def format_tonnes(value: str | Decimal, locale: str | None = None) -> str:
    """Format a decimal tonne figure exactly ("0.01 t", "1,000,000 t"), never through float.

    Every decimal Stripe sent is kept; only the grouping, decimal mark and unit follow ``locale``
    (default: the active one). A value that is not a finite, sensibly sized decimal is shown
    escaped as-is.
    """
    locale = _locale(locale)
    if isinstance(value, bool) or not isinstance(value, str | Decimal | int):
        return _safe(value, _MALFORMED_LIMIT)
    try:
        number = Decimal(value.strip() if isinstance(value, str) else value)
    except (InvalidOperation, ValueError):
        return _safe(value, _MALFORMED_LIMIT)
    if (
        not number.is_finite()
        or len(number.as_tuple().digits) > _MAX_TONNE_DIGITS
        or abs(number.adjusted()) > _MAX_TONNE_EXPONENT
    ):
        return _safe(value, _MALFORMED_LIMIT)
    with localcontext() as context:
        context.prec = 2 * _MAX_TONNE_DIGITS + _MAX_TONNE_EXPONENT
        text = format_decimal(number, locale=locale, decimal_quantization=False)
    return _in(locale, N_("{tonnes} t")).format(tonnes=escape_mrkdwn(text))


def format_percent_change(old: int, new: int, locale: str | None = None) -> str:
    """Describe the change from ``old`` to ``new`` as "+5.2%" / "−3.0%", or "n/a" when old is 0.

    The change is rounded half up to one decimal; Babel writes it for ``locale`` (default: the
    active one), always with a sign so a rise and a fall cannot be confused.
    """
    locale = _locale(locale)
    if (
        isinstance(old, bool)
        or isinstance(new, bool)
        or not isinstance(old, int)
        or not isinstance(new, int)
        or old == 0
        or max(old.bit_length(), new.bit_length()) > _MAX_AMOUNT_BITS
    ):
        return _in(locale, _NOT_AVAILABLE)
    with localcontext() as context:
        context.prec = len(str(abs(old))) + len(str(abs(new))) + 10
        change = ((Decimal(new) - Decimal(old)) * 100 / abs(old)).quantize(
            Decimal("0.1"), rounding=ROUND_HALF_UP
        )
        # Babel multiplies by 100 again for "%"; the precision above keeps that exact.
        pattern = _SIGNED_PERCENT if change else _PERCENT
        return format_percent(change.scaleb(-2), pattern, locale=locale)


def _utc(ts: int) -> datetime | None:
    if isinstance(ts, bool) or not isinstance(ts, int):
        return None
    try:
        return datetime.fromtimestamp(ts, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def slack_date(
    ts: int,
    token: str = "{date_long}",
    fallback_format: str | None = None,
    locale: str | None = None,
) -> str:
    """Return ``<!date^TS^TOKEN|FALLBACK>``, shown in each reader's own time zone by Slack.

    The fallback, which Slack shows where it cannot render the date, is the moment in UTC written
    by Babel with ``fallback_format`` (a CLDR date pattern; default: the catalog's
    ``DEFAULT_DATE_FALLBACK``) for ``locale`` (default: the active one). A timestamp that is not a
    representable integer is shown escaped as-is.
    """
    locale = _locale(locale)
    moment = _utc(ts)
    if moment is None:
        return _safe(ts, _MALFORMED_LIMIT)
    pattern = fallback_format if fallback_format is not None else _in(locale, DEFAULT_DATE_FALLBACK)
    fallback = format_datetime(moment, pattern, tzinfo=UTC, locale=locale)
    # The fallback ends the markup at the first ">" and "|" separates parts, so neither may appear.
    fallback = escape_mrkdwn(fallback).replace("|", "¦")
    return f"<!date^{ts}^{token}|{fallback}>"


def plain_date(ts: int, locale: str | None = None) -> str:
    """Return a unix time for plain-text summaries (notification texts, where Slack renders no
    date token) as a date token's fallback writes it: the moment in UTC, saying so, in the
    catalog's ``DEFAULT_DATE_FALLBACK`` for ``locale`` (default: the active one), e.g.
    ``21 Oct 2026 14:13 UTC``."""
    locale = _locale(locale)
    moment = _utc(ts)
    if moment is None:
        return _safe(ts, _MALFORMED_LIMIT)
    pattern = _in(locale, DEFAULT_DATE_FALLBACK)
    return escape_mrkdwn(format_datetime(moment, pattern, tzinfo=UTC, locale=locale))


def removal_pathway_label(value: str | None) -> str:
    """Name a supplier's removal pathway; values Stripe adds later are humanised from snake_case."""
    if not isinstance(value, str) or not value.strip():
        return _("Unknown removal pathway")
    if value in _PATHWAYS:
        return _(_PATHWAYS[value])
    words = single_line(value.replace("_", " "))
    return neutralise_styles(truncate(escape_mrkdwn(words[:1].upper() + words[1:]), _PATHWAY_LIMIT))


def cancellation_reason_text(reason: str | None) -> str:
    """Say why an order was cancelled, in the active locale.

    In English it is a clause that reads after "Cancelled because"; each translation phrases it to
    fit its own catalog's cancellation sentences.
    """
    if not isinstance(reason, str) or not reason.strip():
        return _("no reason was given")
    if reason in _CANCELLATION_REASONS:
        return _(_CANCELLATION_REASONS[reason])
    return _("Stripe gave the reason “{reason}”").format(reason=_safe(reason, _REASON_LIMIT))


def format_names(names: list[str], locale: str | None = None) -> str:
    """Join already-safe names into one inline list, with the list punctuation of ``locale``
    (default: the active one): "A, B, C" in English, "A、B、C" in Japanese."""
    return format_list(names, style="standard-narrow", locale=_locale(locale))


def climate_dashboard_url() -> str:
    """The Stripe Dashboard's Climate page: the only Dashboard address Stripe documents for
    Climate orders and products (see ``CLIMATE_DASHBOARD_URL``)."""
    return CLIMATE_DASHBOARD_URL
