"""The bounds on the numbers a Stripe event may carry, and the check that holds an event to them.

`check_numbers` walks a parsed event and raises `OutOfRange` naming the first field that breaks
the rule below; `read_json` reads a body so that an integer too long to be in range survives the
parse to be named. `bot.recording.parse_event` runs both on every webhook body and every object
a thin event's fetch brings.
"""

from __future__ import annotations

import json
import math
from typing import Any

from bot.model import HANDLED_EVENTS


class MalformedEvent(ValueError):
    """The body is signed but is not a Stripe event climate-bot can read (raised by
    `bot.recording.parse_event`; here because `OutOfRange` is one)."""


class OutOfRange(MalformedEvent):
    """A number in the event that climate-bot cannot keep; the message names its field."""


# -- the numbers an event may carry ----------------------------------------------------------
#
# What climate-bot keeps of a number ends up in SQLite, whose INTEGER is a signed 64-bit value
# (Python's sqlite3 raises OverflowError for anything larger, mid-transaction), or on a card.
# So a signed event is refused, with a 400 naming the field and nothing recorded, when:
#
# - any integer anywhere in it lies outside the signed 64-bit range, or any number is not a
#   finite one (Python's json reads NaN, Infinity and 1e400, which JSON itself does not allow);
# - a timestamp is not a moment from 1970-01-01 to the end of 2100 (UTC). Timestamps are the
#   event's `created` and, inside a Climate event's data, every `created` and `..._at` however
#   deeply nested (an expanded product, each delivery). Stripe stamps things as they happen, in
#   unix seconds: it never sends one before 1970, and none decades ahead (its fixtures use
#   1234567890, our tests small values like 100, which stay fine). The end of 2100 also keeps a
#   decision deadline (a stamp + 30 days) and every date a card shows well inside what Python and
#   SQLite can compute with.
# - a delivery year (`expected_delivery_year`, `delivery_year`) is not from 1970 to 2100: the
#   same span, so a year and the moments around it agree.
#
# Amounts (`amount_total`, prices per tonne …) are only held to the 64-bit range: Stripe's own.
# Metadata is not read, so its values are not held to the rules for timestamps and years.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
EARLIEST_TIMESTAMP = 0  # 1970-01-01T00:00:00Z
LATEST_TIMESTAMP = 4_133_980_799  # 2100-12-31T23:59:59Z
EARLIEST_YEAR, LATEST_YEAR = 1970, 2100
_YEAR_FIELDS = frozenset({"expected_delivery_year", "delivery_year"})
# An integer of more digits than this cannot be in range; Python would refuse to even read one of
# more than 4,300 digits (ValueError), so longer ones are not converted at all.
_MAX_INTEGER_DIGITS = len(str(INT64_MIN))
_PATH_KEY_LIMIT = 40


class _LongInteger:
    """An integer of the body too long to be in range, kept unconverted until it is named."""

    __slots__ = ()


_LONG_INTEGER = _LongInteger()


def _read_integer(text: str) -> int | _LongInteger:
    return int(text) if len(text) <= _MAX_INTEGER_DIGITS else _LONG_INTEGER


def read_json(raw: bytes | str) -> Any:
    """JSON read as climate-bot reads a body: an integer too long to be in range is kept
    unconverted (Python would refuse one of more than 4,300 digits), for `check_numbers` to name.
    Raises what `json.loads` raises."""
    return json.loads(raw, parse_int=_read_integer)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def plausible_timestamp(value: Any) -> bool:
    """True for a unix timestamp climate-bot accepts (see the rule above)."""
    return _whole(value) and EARLIEST_TIMESTAMP <= value <= LATEST_TIMESTAMP


def check_numbers(event: dict[str, Any]) -> None:
    """Raise OutOfRange naming the first number of `event` (in document order) that breaks the
    rule above."""
    climate = event.get("type") in HANDLED_EVENTS
    if _breaks_rule(event, climate):
        raise OutOfRange(_first_breach(event, climate))


def _breaks_rule(event: dict[str, Any], climate: bool) -> bool:
    """Whether any number of `event` breaks the rule: the quick look every webhook gets (no path
    is kept; `_first_breach` names the field)."""
    # (container, whether it is the envelope, whether the field rules apply within it); a stack,
    # so that depth costs no recursion.
    stack: list[tuple[Any, bool, bool]] = [(event, True, False)]
    while stack:
        node, envelope, ruled = stack.pop()
        for key, value in node.items() if isinstance(node, dict) else enumerate(node):
            kind = type(value)
            if kind is str or kind is bool or value is None:  # most values: nothing to check
                continue
            if kind is dict or kind is list:
                inside = ruled or (envelope and climate and key == "data")
                stack.append((value, False, inside and key != "metadata"))
            elif _number_problem(value, key, envelope=envelope, ruled=ruled):
                return True
    return False


def _first_breach(event: dict[str, Any], climate: bool) -> str:
    """`<field>: <what is wrong>` for the first number of `event` that breaks the rule."""
    stack: list[tuple[tuple[str | int, ...], Any, bool]] = [((), event, False)]
    while stack:
        path, value, ruled = stack.pop()
        if isinstance(value, dict | list):
            envelope = path == ()
            children = value.items() if isinstance(value, dict) else enumerate(value)
            for key, child in reversed(list(children)):
                inside = ruled or (envelope and climate and key == "data")
                stack.append(((*path, key), child, inside and key != "metadata"))
            continue
        problem = _number_problem(value, path[-1], envelope=len(path) == 1, ruled=ruled)
        if problem:
            return f"{_dotted(path)}: {problem}"
    return "a number: out of range"  # not reached: called only when `_breaks_rule` found one


def _number_problem(value: Any, name: str | int, *, envelope: bool, ruled: bool) -> str | None:
    """What is wrong with the number `value` of field `name`, or None (also for what is no
    number). `envelope`: a field of the event itself; `ruled`: inside a Climate event's data,
    outside metadata, where the rules for timestamps and years apply."""
    if value is _LONG_INTEGER:
        return "integer out of range"
    if isinstance(value, float):
        return None if math.isfinite(value) else "number is not finite"
    if not _whole(value):
        return None
    if not INT64_MIN <= value <= INT64_MAX:
        return "integer out of range"
    if not isinstance(name, str):
        return None
    stamp = (envelope and name == "created") or (
        ruled and (name == "created" or name.endswith("_at"))
    )
    if stamp and not plausible_timestamp(value):
        return "timestamp out of range"
    if ruled and name in _YEAR_FIELDS and not EARLIEST_YEAR <= value <= LATEST_YEAR:
        return "year out of range"
    return None


def _dotted(path: tuple[str | int, ...]) -> str:
    """A field's path as the 400 names it: `data.object.delivery_details[0].delivered_at`."""
    out = ""
    for step in path:
        if isinstance(step, int):
            out += f"[{step}]"
            continue
        key = "".join(char for char in step if char.isprintable())
        if len(key) > _PATH_KEY_LIMIT:
            key = key[: _PATH_KEY_LIMIT - 1] + "…"
        out += f".{key}" if out else key
    return out
