"""Small pure helpers that turn Stripe values into safe, readable Slack text.

Every helper that shows a value from Stripe returns *mrkdwn-safe* text: it never contains a raw
``&``, ``<`` or ``>``, so a caller can drop it into a mrkdwn text object without escaping it again.
The exceptions are ``slack_date`` (Slack's own ``<!date…>`` markup, on purpose), ``plain_date`` and
``dashboard_url`` (our own text, with every Stripe-supplied part URL-quoted).

User-visible sentences are literals passed through ``_`` so that moving them to gettext catalogs
later is a change of that one function, not of every call site.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation, localcontext
from typing import Literal
from urllib.parse import quote

from babel.numbers import format_currency, format_decimal, get_currency_precision

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

_PATHWAYS = {
    "biomass_carbon_removal_and_storage": "Biomass carbon removal and storage",
    "direct_air_capture": "Direct air capture",
    "enhanced_weathering": "Enhanced weathering",
    "marine_carbon_removal": "Marine carbon removal",
}
_PATHWAY_LIMIT = 60

_CANCELLATION_REASONS = {
    "expired": "it was never confirmed and expired",
    "product_unavailable": "Frontier could not fulfil it: the product is no longer available",
    "requested": "a cancellation was requested",
}
_REASON_LIMIT = 80

_DASHBOARD = "https://dashboard.stripe.com/"
_DASHBOARD_PATHS = {"order": "climate/orders/", "product": "climate/products/"}

DEFAULT_DATE_FALLBACK = "%-d %b %Y %H:%M UTC"


def _(message: str) -> str:
    """Mark a user-visible string for translation; English only until the catalogs exist."""
    return message


def escape_mrkdwn(text: str) -> str:
    """Escape Slack's three control characters so external text cannot mention, link or ping.

    ``&`` goes first so the entities produced for ``<`` and ``>`` are not escaped twice.
    """
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def truncate(text: str, limit: int) -> str:
    """Return ``text`` cut to at most ``limit`` characters, ending with "…" when it was cut.

    Safe on escaped text: a cut never splits an ``&amp;``/``&lt;``/``&gt;`` entity.
    """
    if len(text) <= limit:
        return text
    if limit <= 0:
        return ""
    cut = text[: limit - 1]
    amp = cut.rfind("&", max(0, len(cut) - _LONGEST_ENTITY + 1))
    if amp != -1 and text.startswith(_ENTITIES, amp) and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut.rstrip() + ELLIPSIS


def single_line(text: str) -> str:
    """Collapse newlines and runs of whitespace into single spaces and drop invisible characters,
    so that external text cannot start a line of its own and pass for part of a message."""
    return "".join(char for char in " ".join(text.split()) if char.isprintable())


def _safe(value: object, limit: int) -> str:
    """Show an unexpected value as escaped, bounded, single-line text."""
    try:
        text = str(value)
    except ValueError:  # an int too long for str(): nothing from Stripe, so nothing to show
        return ELLIPSIS
    return truncate(escape_mrkdwn(single_line(text)), limit)


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


def format_money(amount_minor: int, currency: str, locale: str = "en") -> str:
    """Format an amount in the currency's smallest unit, e.g. ``72187, "usd"`` → ``"$721.87"``.

    Minor units are converted with Stripe's exponent for the currency (0 for JPY, 3 for BHD), never
    a fixed 100; Babel formats the value for the locale. An amount that is not an integer is shown
    escaped as-is instead of raising.
    """
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int):
        return _safe(amount_minor, _MALFORMED_LIMIT)
    if amount_minor.bit_length() > _MAX_AMOUNT_BITS:
        return _("an implausibly large amount")
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


def format_tonnes(value: str | Decimal, locale: str = "en") -> str:
    """Format a decimal tonne figure exactly ("0.01 t", "1,000,000 t"), never through float.

    A value that is not a finite, sensibly sized decimal is shown escaped as-is.
    """
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
    return _("{tonnes} t").format(tonnes=escape_mrkdwn(text))


def format_percent_change(old: int, new: int) -> str:
    """Describe the change from ``old`` to ``new`` as "+5.2%" / "−3.0%", or "n/a" when old is 0."""
    if isinstance(old, bool) or isinstance(new, bool):
        return _("n/a")
    if not isinstance(old, int) or not isinstance(new, int) or old == 0:
        return _("n/a")
    if max(old.bit_length(), new.bit_length()) > _MAX_AMOUNT_BITS:
        return _("n/a")
    with localcontext() as context:
        context.prec = len(str(abs(old))) + len(str(abs(new))) + 10
        change = ((Decimal(new) - Decimal(old)) * 100 / abs(old)).quantize(
            Decimal("0.1"), rounding=ROUND_HALF_UP
        )
    if change > 0:
        return f"+{change}%"
    if change < 0:
        return f"{MINUS}{-change}%"
    return "0.0%"


def _utc(ts: int) -> datetime | None:
    if isinstance(ts, bool) or not isinstance(ts, int):
        return None
    try:
        return datetime.fromtimestamp(ts, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def slack_date(
    ts: int, token: str = "{date_long}", fallback_format: str = DEFAULT_DATE_FALLBACK
) -> str:
    """Return ``<!date^TS^TOKEN|FALLBACK>``, shown in each reader's own time zone by Slack.

    ``fallback_format`` is a ``strftime`` format rendered in UTC (``%-d`` is the day without a
    leading zero on every platform); Slack shows it where it cannot render the date. A timestamp
    that is not a representable integer is shown escaped as-is.
    """
    moment = _utc(ts)
    if moment is None:
        return _safe(ts, _MALFORMED_LIMIT)
    fallback = moment.strftime(fallback_format.replace("%-d", str(moment.day)))
    # The fallback ends the markup at the first ">" and "|" separates parts, so neither may appear.
    fallback = escape_mrkdwn(fallback).replace("|", "¦")
    return f"<!date^{ts}^{token}|{fallback}>"


def plain_date(ts: int) -> str:
    """Return the UTC calendar date of a unix time as ``YYYY-MM-DD`` for plain-text summaries."""
    moment = _utc(ts)
    if moment is None:
        return _safe(ts, _MALFORMED_LIMIT)
    return moment.strftime("%Y-%m-%d")


def removal_pathway_label(value: str | None) -> str:
    """Name a supplier's removal pathway; values Stripe adds later are humanised from snake_case."""
    if not isinstance(value, str) or not value.strip():
        return _("Unknown removal pathway")
    if value in _PATHWAYS:
        return _(_PATHWAYS[value])
    words = single_line(value.replace("_", " "))
    return truncate(escape_mrkdwn(words[:1].upper() + words[1:]), _PATHWAY_LIMIT)


def cancellation_reason_text(reason: str | None) -> str:
    """Say why an order was cancelled, as a clause that reads after "Cancelled because"."""
    if not isinstance(reason, str) or not reason.strip():
        return _("no reason was given")
    if reason in _CANCELLATION_REASONS:
        return _(_CANCELLATION_REASONS[reason])
    return _("Stripe gave the reason “{reason}”").format(reason=_safe(reason, _REASON_LIMIT))


def dashboard_url(
    kind: Literal["order", "product"],
    object_id: str,
    *,
    livemode: bool,
    account: str | None,
) -> str:
    """Return the Stripe Dashboard address of an order or product.

    Connect accounts get their ``acct_…`` path segment and test-mode objects the ``test/`` one;
    ids are URL-quoted so the result is safe inside Slack's ``<url|label>`` markup.
    """
    url = _DASHBOARD
    if account:
        url += quote(str(account), safe="") + "/"
    if not livemode:
        url += "test/"
    return url + _DASHBOARD_PATHS[kind] + quote(str(object_id), safe="")
