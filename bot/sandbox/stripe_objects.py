"""Factories for realistic, schema-valid Stripe Climate objects and snapshot webhook events.

Built on the vendored upstream fixtures (``stripe_data/climate-fixtures.json``) so the shapes are
Stripe's, but with lifecycle-consistent values: the upstream GA order fixture is ``open`` while
carrying every timestamp, which no real order does. Use these in tests and in the demo; every
function returns a fresh dict that is safe to mutate.

Conventions (as in the API): money is an ``int`` in the currency's minor unit (cents for USD, yen
for the zero-decimal JPY), tons are decimal *strings*, timestamps are unix seconds.
"""

from __future__ import annotations

import calendar
import copy
import functools
import json
import secrets
import string
import time
from collections.abc import Iterable, Mapping
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

import stripe

from bot.sandbox.stripe_spec import load_fixtures, load_spec

__all__ = [
    "API_VERSION",
    "CLIMATE_EVENT_TYPES",
    "DEFAULT_CREATED",
    "DEFAULT_PRICES_PER_TON",
    "ORDER_STATUSES",
    "PRODUCT_ID",
    "WEBHOOK_USER_AGENT",
    "delayed",
    "delivery",
    "event",
    "new_id",
    "order",
    "order_amounts",
    "price_per_ton",
    "product",
    "substituted",
    "supplier",
    "tons_str",
    "webhook_request",
]

# The version stripe-python 16.1 pins; events are rendered with the endpoint's version, and a
# bot created with this SDK would normally register its endpoint with it.
API_VERSION = "2026-10-28.endive"

# 2026-01-01T00:00:00Z. A fixed default keeps factory output deterministic; the fixtures' own
# 1234567890 (2009) predates Stripe Climate and would make every order look ancient.
DEFAULT_CREATED = 1_767_225_600

PRODUCT_ID = "climsku_frontier_offtake_portfolio_2027"

CLIMATE_EVENT_TYPES = (
    "climate.order.created",
    "climate.order.delayed",
    "climate.order.delivered",
    "climate.order.product_substituted",
    "climate.order.canceled",
    "climate.product.created",
    "climate.product.pricing_updated",
)

ORDER_STATUSES = ("open", "awaiting_funds", "confirmed", "delivered", "canceled")

WEBHOOK_USER_AGENT = "Stripe/1.0 (+https://stripe.com/docs/webhooks)"

# Per-ton prices used when an order's product does not list its currency. USD is the fixture's;
# JPY is the same price at ~150 JPY/USD, in whole yen because JPY is zero-decimal.
DEFAULT_PRICES_PER_TON: dict[str, dict[str, int]] = {
    "usd": {"amount_fees": 1650, "amount_subtotal": 55000, "amount_total": 56650},
    "jpy": {"amount_fees": 2475, "amount_subtotal": 82500, "amount_total": 84975},
}

# Frontier's fee in the fixture is 3% of the subtotal (1650 / 55000).
_FEE_RATE = Decimal("0.03")

# Which timestamp an event's `created` follows by default, so events and objects agree.
_EVENT_TIME_FIELD = {
    "climate.order.created": "created",
    "climate.order.delayed": "delayed_at",
    "climate.order.delivered": "delivered_at",
    "climate.order.product_substituted": "product_substituted_at",
    "climate.order.canceled": "canceled_at",
    "climate.product.created": "created",
}

_ID_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str) -> str:
    """A fresh Stripe-looking id, e.g. ``climorder_1Pgc73B7WZ01zgkWaebIwEZ7`` (24 random chars)."""
    return f"{prefix}_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


@functools.cache
def _fixtures() -> dict[str, Any]:
    return load_fixtures()


def _fixture(name: str) -> dict[str, Any]:
    # Shared and read-only: every caller that returns or mutates it takes a deep copy first.
    return _fixtures()["resources"][name]


@functools.cache
def _property_names(schema: str) -> frozenset[str]:
    return frozenset(load_spec()["components"]["schemas"][schema]["properties"])


def _check_keys(schema: str, overrides: Mapping[str, Any]) -> None:
    # Catch typos early: an unknown key would silently produce an object Stripe never sends.
    unknown = set(overrides) - _property_names(schema)
    if unknown:
        raise TypeError(
            f"unknown {schema} field(s): {', '.join(sorted(unknown))} "
            "(to test unknown fields, add them to the returned dict)"
        )


def tons_str(value: str | Decimal | int) -> str:
    """Normalise a tonnage to the decimal string Stripe uses (``"10"``, ``"0.25"``).

    Floats are refused: tons are decimals, and ``0.1`` as a float is not ``"0.1"``.
    """
    if isinstance(value, (bool, float)):
        raise TypeError(f"metric tons must be str, Decimal or int, not {type(value).__name__}")
    try:
        dec = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"not a decimal: {value!r}") from None
    if not dec.is_finite():
        raise ValueError(f"not a finite decimal: {value!r}")
    if isinstance(value, str):
        return value.strip()
    text = format(dec, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def price_per_ton(total: int) -> dict[str, int]:
    """Split a per-ton total (minor units) into Frontier's subtotal + 3% fee, like the fixture."""
    subtotal = int((Decimal(total) / (1 + _FEE_RATE)).quantize(Decimal(1), ROUND_HALF_UP))
    return {"amount_fees": total - subtotal, "amount_subtotal": subtotal, "amount_total": total}


def order_amounts(price: Mapping[str, int], metric_tons: str | Decimal | int) -> dict[str, int]:
    """Order amounts for ``metric_tons`` at a per-ton ``price``, rounded into minor units.

    Subtotal and fee are each rounded half-up and the total is their sum: that reproduces the
    docs' 0.01 t example (550 + 17 = 567), where a rounded total would give 566.
    """
    tons = Decimal(tons_str(metric_tons))
    subtotal = int((tons * price["amount_subtotal"]).quantize(Decimal(1), ROUND_HALF_UP))
    fees = int((tons * price["amount_fees"]).quantize(Decimal(1), ROUND_HALF_UP))
    return {"amount_fees": fees, "amount_subtotal": subtotal, "amount_total": subtotal + fees}


def _fixture_suppliers() -> list[dict[str, Any]]:
    return _fixture("climate.product")["suppliers"]


def supplier(**overrides: Any) -> dict[str, Any]:
    """A ``climate.supplier`` (Charm Industrial from the fixture) with ``overrides`` applied.

    ``id=`` naming another supplier of the fixture product (e.g. ``"climsup_heirloom"``) starts
    from that supplier instead, so ``supplier(id="climsup_lithos")`` is the real Lithos entry.
    """
    _check_keys("climate.supplier", overrides)
    known = {s["id"]: s for s in _fixture_suppliers()}
    base = copy.deepcopy(known.get(overrides.get("id", ""), _fixture("climate.supplier")))
    base.update(copy.deepcopy(dict(overrides)))
    return base


def _supplier_of(value: str | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(value, str):
        known = {s["id"]: s for s in _fixture_suppliers()}
        if value not in known:
            raise KeyError(f"no fixture supplier {value!r}; known: {', '.join(sorted(known))}")
        return copy.deepcopy(known[value])
    return copy.deepcopy(dict(value))


def product(
    *,
    prices: Mapping[str, int | Mapping[str, int]] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """A ``climate.product`` (Frontier's 2027 offtake portfolio from the fixture).

    - ``prices={"usd": 56650, "jpy": 84975}``: per-ton *totals* in minor units, split into
      subtotal + 3% fee; a mapping value is used as the full price object instead. Replaces
      ``current_prices_per_metric_ton`` (which may also be passed directly).
    - ``delivery_year=2028`` also renames ``id``/``name`` to the 2028 portfolio unless given.
    - ``suppliers=[...]`` takes supplier dicts or fixture supplier ids.
    - ``livemode=True`` is applied to the nested suppliers too, unless ``suppliers`` is given.
    """
    _check_keys("climate.product", overrides)
    base = copy.deepcopy(_fixture("climate.product"))
    base["created"] = DEFAULT_CREATED
    year = overrides.get("delivery_year")
    if isinstance(year, int) and not isinstance(year, bool):
        base["id"] = f"climsku_frontier_offtake_portfolio_{year}"
        base["name"] = f"Frontier's {year} offtake portfolio"
    if prices is not None:
        base["current_prices_per_metric_ton"] = {
            cur: dict(p) if isinstance(p, Mapping) else price_per_ton(p)
            for cur, p in prices.items()
        }
    if "suppliers" in overrides:
        overrides = {**overrides, "suppliers": [_supplier_of(s) for s in overrides["suppliers"]]}
    elif "livemode" in overrides:
        for sup in base["suppliers"]:
            sup["livemode"] = overrides["livemode"]
    if "metric_tons_available" in overrides:
        overrides = {
            **overrides,
            "metric_tons_available": tons_str(overrides["metric_tons_available"]),
        }
    base.update(copy.deepcopy(dict(overrides)))
    return base


def delivery(
    supplier: str | Mapping[str, Any] = "climsup_charm_industrial",
    metric_tons: str | Decimal | int = "10",
    delivered_at: int = DEFAULT_CREATED,
    *,
    registry_url: str | None = None,
    location: Mapping[str, Any] | None | bool = True,
) -> dict[str, Any]:
    """One ``delivery_details[]`` entry: ``supplier`` (dict or fixture id) delivered these tons.

    ``location=True`` (default) uses the supplier's first location, ``None`` leaves it null.
    ``registry_url`` defaults to a made-up but URL-shaped registry entry.
    """
    sup = _supplier_of(supplier)
    if location is True:
        loc = copy.deepcopy(sup["locations"][0]) if sup["locations"] else None
    elif location is False or location is None:
        loc = None
    else:
        loc = copy.deepcopy(dict(location))
    return {
        "delivered_at": delivered_at,
        "location": loc,
        "metric_tons": tons_str(metric_tons),
        "registry_url": registry_url
        or f"https://registry.isometric.com/removal/{secrets.token_hex(8)}",
        "supplier": sup,
    }


def _split_tons(total: str, parts: int) -> list[str]:
    # Equal shares to the thousandth of a ton; the rounding remainder goes to the first share,
    # so the shares always add up to exactly the order's tons.
    tons = Decimal(total)
    share = (tons / parts).quantize(Decimal("0.001"), ROUND_DOWN)
    first = tons - share * (parts - 1)
    return [tons_str(first)] + [tons_str(share)] * (parts - 1)


def _mid_year(year: int) -> int:
    return calendar.timegm((year, 6, 30, 0, 0, 0))


def order(
    status: str = "confirmed",
    *,
    product: str | Mapping[str, Any] | None = None,
    metric_tons: str | Decimal | int = "10",
    currency: str = "usd",
    delivered_by: Iterable[str | Mapping[str, Any]] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """A lifecycle-consistent ``climate.order`` in ``status``; ``overrides`` win over everything.

    - ``open`` / ``awaiting_funds``: every lifecycle timestamp null.
    - ``confirmed``: ``confirmed_at == created`` (as in Stripe's create example).
    - ``delivered``: also ``delivered_at`` (mid expected year, or 30 days after a spot purchase),
      a certificate URL and ``delivery_details`` split across ``delivered_by`` (supplier ids or
      dicts; default the product's first supplier).
    - ``canceled``: ``canceled_at`` (an hour after ``created``) and ``cancellation_reason``
      (default ``requested``; ``expired`` orders were never confirmed).

    ``product`` is an id, or a product dict which is embedded as if expanded (``expand[]=product``)
    and priced from. Amounts come from the product's per-ton price in ``currency`` (falling back to
    :data:`DEFAULT_PRICES_PER_TON`) unless ``amount_*`` overrides are given.
    """
    if status not in ORDER_STATUSES:
        raise ValueError(f"status must be one of {ORDER_STATUSES}, not {status!r}")
    _check_keys("climate.order", overrides)
    if isinstance(product, Mapping):
        product_field: str | dict[str, Any] = copy.deepcopy(dict(product))
        pricing = product_field
    else:
        product_field = product or PRODUCT_ID
        fixture_product = _fixture("climate.product")
        pricing = fixture_product if product_field == fixture_product["id"] else {}
    prices = pricing.get("current_prices_per_metric_ton", {})
    price = prices.get(currency) or DEFAULT_PRICES_PER_TON.get(currency)
    tons = tons_str(metric_tons)
    if price is None and not {"amount_fees", "amount_subtotal", "amount_total"} <= set(overrides):
        raise ValueError(
            f"no per-ton price in {currency!r}: "
            "pass a product with that price, or amount_* overrides"
        )
    amounts = order_amounts(price, tons) if price else {}
    delivery_year = pricing.get("delivery_year") or _fixture("climate.product")["delivery_year"]

    order_id = overrides.get("id") or new_id("climorder")
    created = overrides.get("created", DEFAULT_CREATED)
    obj: dict[str, Any] = {
        **amounts,
        "beneficiary": {"public_name": "Frontier Climate"},
        "canceled_at": None,
        "cancellation_reason": None,
        "certificate": None,
        "confirmed_at": None,
        "created": created,
        "currency": currency,
        "delayed_at": None,
        "delivered_at": None,
        "delivery_details": [],
        "expected_delivery_year": overrides.get("expected_delivery_year", delivery_year),
        "id": order_id,
        "livemode": False,
        "metadata": {},
        "metric_tons": tons,
        "object": "climate.order",
        "product": product_field,
        "product_substituted_at": None,
        "status": status,
    }
    if status in ("confirmed", "delivered"):
        obj["confirmed_at"] = created
    if status == "delivered":
        year = obj["expected_delivery_year"]
        delivered_at = overrides.get("delivered_at")
        if delivered_at is None:
            delivered_at = max(_mid_year(year), created + 30 * 24 * 3600)
        obj["delivered_at"] = delivered_at
        # Made-up form: Stripe does not document where certificates live, only that it is a URL.
        obj["certificate"] = f"https://climate.stripe.com/certificates/{order_id}"
        if delivered_by is None:
            default_suppliers = pricing.get("suppliers") or _fixture_suppliers()
            delivered_by = [default_suppliers[0]]
        suppliers = [_supplier_of(s) for s in delivered_by]
        if not suppliers:
            raise ValueError("a delivered order needs at least one supplier in delivered_by")
        obj["delivery_details"] = [
            delivery(sup, share, delivered_at)
            for sup, share in zip(suppliers, _split_tons(tons, len(suppliers)), strict=True)
        ]
    if status == "canceled":
        reason = overrides.get("cancellation_reason", "requested")
        obj["cancellation_reason"] = reason
        obj["canceled_at"] = overrides.get("canceled_at", created + 3600)
        if reason != "expired":
            # Requested and product_unavailable cancels happen to confirmed orders.
            obj["confirmed_at"] = created
    for key, value in overrides.items():
        if key == "beneficiary" and value is None:
            obj.pop("beneficiary", None)  # optional field: absent, never null
        elif key == "metric_tons":
            obj[key] = tons_str(value)
        else:
            obj[key] = copy.deepcopy(value)
    return obj


def _require_open_for_change(order: Mapping[str, Any], what: str) -> None:
    if order.get("status") in ("delivered", "canceled"):
        raise ValueError(f"a {order.get('status')} order cannot be {what}")


def delayed(order: Mapping[str, Any], new_year: int, at: int) -> dict[str, Any]:
    """The order after Frontier pushed delivery back to ``new_year`` at unix time ``at``.

    Status is unchanged (a delay is not a status); ``delayed_at`` and ``expected_delivery_year``
    move. Raises ``ValueError`` for a terminal order or a year that is not later.
    """
    _require_open_for_change(order, "delayed")
    if new_year <= order["expected_delivery_year"]:
        raise ValueError(
            f"a delay moves delivery later: {new_year} <= {order['expected_delivery_year']}"
        )
    result = copy.deepcopy(dict(order))
    result["delayed_at"] = at
    result["expected_delivery_year"] = new_year
    return result


def substituted(
    order: Mapping[str, Any],
    new_product_id: str | Mapping[str, Any],
    at: int,
    *,
    expected_delivery_year: int | None = None,
) -> dict[str, Any]:
    """The order after Frontier substituted its product at unix time ``at``.

    ``new_product_id`` is an id or a product dict (embedded as expanded). Status and amounts stay
    (prices never change for confirmed orders); ``product`` and ``product_substituted_at`` move,
    and ``expected_delivery_year`` too when given.
    """
    _require_open_for_change(order, "substituted")
    result = copy.deepcopy(dict(order))
    if isinstance(new_product_id, Mapping):
        result["product"] = copy.deepcopy(dict(new_product_id))
    else:
        result["product"] = new_product_id
    result["product_substituted_at"] = at
    if expected_delivery_year is not None:
        result["expected_delivery_year"] = expected_delivery_year
    return result


def event(
    type: str,
    obj: Mapping[str, Any],
    *,
    id: str | None = None,
    created: int | None = None,
    account: str | None = None,
    livemode: bool | None = None,
    previous_attributes: Mapping[str, Any] | None = None,
    request_id: str | None = None,
    idempotency_key: str | None = None,
    pending_webhooks: int = 1,
    api_version: str | None = API_VERSION,
) -> dict[str, Any]:
    """A snapshot event envelope (``object: "event"``) carrying a copy of ``obj``.

    Defaults: a fresh ``evt_…`` id; ``created`` from the timestamp the event type is about
    (``delayed_at`` for ``climate.order.delayed``, …; now when there is none); ``livemode``
    from the object; ``request`` with null id/key (Frontier acted on its own) unless
    ``request_id``/``idempotency_key`` are given. ``account`` is set only for Connect events
    and ``data.previous_attributes`` only when given.
    """
    kind = obj.get("object")
    for prefix in ("climate.order.", "climate.product."):
        if type.startswith(prefix) and kind != prefix[:-1]:
            raise ValueError(f"{type} carries a {prefix[:-1]}, not {kind!r}")
    if created is None:
        field = _EVENT_TIME_FIELD.get(type)
        stamp = obj.get(field) if field else None
        created = stamp if isinstance(stamp, int) else int(time.time())
    data: dict[str, Any] = {"object": copy.deepcopy(dict(obj))}
    if previous_attributes is not None:
        data["previous_attributes"] = copy.deepcopy(dict(previous_attributes))
    envelope: dict[str, Any] = {
        "id": id or new_id("evt"),
        "object": "event",
    }
    if account is not None:
        envelope["account"] = account
    envelope.update(
        {
            "api_version": api_version,
            "created": created,
            "data": data,
            "livemode": bool(obj.get("livemode", False)) if livemode is None else livemode,
            "pending_webhooks": pending_webhooks,
            "request": {"id": request_id, "idempotency_key": idempotency_key},
            "type": type,
        }
    )
    return envelope


def webhook_request(
    event: Mapping[str, Any] | str,
    secret: str,
    *,
    timestamp: int | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The exact body bytes and headers Stripe would POST to a webhook endpoint for ``event``.

    A dict is serialised the way Stripe does (pretty-printed JSON, UTF-8); a ``str`` is sent as
    is, for tests that need byte-exact control. ``Stripe-Signature`` is signed with ``secret`` at
    ``timestamp`` (default now); pass an old one to exercise the 300 s tolerance. Content-Length
    and Host are left to the HTTP client.
    """
    payload = event if isinstance(event, str) else json.dumps(event, indent=2, ensure_ascii=False)
    signature = stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp)
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "Stripe-Signature": signature,
        "User-Agent": WEBHOOK_USER_AGENT,
        "Accept": "*/*; q=0.5, application/xml",
        "Cache-Control": "no-cache",
    }
    return payload.encode("utf-8"), headers
