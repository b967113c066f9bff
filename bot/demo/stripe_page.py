"""The read-only "Stripe Climate sandbox" page as HTML, rendered from FakeStripe's orders and
products (every value escaped: they are as hostile as any Stripe text)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from bot.demo.render import _esc, _text

_ZERO_DECIMAL = {"jpy", "krw", "vnd", "clp", "isk", "ugx", "xaf", "xof", "pyg", "rwf", "kmf"}


def _amount(minor: Any, currency: Any) -> str:
    code = _text(currency).lower()
    if not isinstance(minor, int):
        return "—"
    if code in _ZERO_DECIMAL:
        return f"{minor:,} {code.upper()}"
    return f"{Decimal(minor) / 100:,.2f} {code.upper()}"


def _tonnes(value: Any) -> str:
    try:
        return f"{Decimal(_text(value)).normalize():f} t"
    except (InvalidOperation, ValueError):
        return _text(value)


def _when(stamp: Any) -> str:
    if not isinstance(stamp, int) or isinstance(stamp, bool):
        return ""
    try:
        return dt.datetime.fromtimestamp(stamp, tz=dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    except (ValueError, OverflowError, OSError):
        return ""


def stripe_page_html(
    orders: Iterable[Mapping[str, Any]], products: Iterable[Mapping[str, Any]]
) -> str:
    """The body of the Stripe Climate sandbox page: orders as Stripe holds them, and products."""
    order_rows = []
    for order in orders:
        beneficiary = order.get("beneficiary")
        name = beneficiary.get("public_name") if isinstance(beneficiary, Mapping) else ""
        status = _text(order.get("status"))
        notes = []
        if order.get("delayed_at"):
            notes.append(f"delayed {_when(order.get('delayed_at'))}")
        if order.get("product_substituted_at"):
            notes.append(f"product substituted {_when(order.get('product_substituted_at'))}")
        if order.get("canceled_at"):
            reason = _text(order.get("cancellation_reason"))
            notes.append(f"cancelled {_when(order.get('canceled_at'))} ({reason})")
        if order.get("delivered_at"):
            notes.append(f"delivered {_when(order.get('delivered_at'))}")
        order_rows.append(
            "<tr>"
            f"<td><code>{_esc(order.get('id'))}</code></td>"
            f'<td><span class="st-status st-{_esc(status)}">{_esc(status)}</span></td>'
            f"<td>{_esc(name)}</td>"
            f'<td class="num">{_esc(_tonnes(order.get("metric_tons")))}</td>'
            f'<td class="num">{_esc(_order_total(order))}</td>'
            f"<td>{_esc(order.get('expected_delivery_year'))}</td>"
            f"<td><code>{_esc(_product_id(order.get('product')))}</code></td>"
            f"<td>{_esc('; '.join(notes))}</td>"
            "</tr>"
        )
    product_rows = []
    for product in products:
        prices = product.get("current_prices_per_metric_ton")
        price_text = ", ".join(
            _amount(p.get("amount_total"), currency)
            for currency, p in (prices.items() if isinstance(prices, Mapping) else [])
            if isinstance(p, Mapping)
        )
        suppliers = product.get("suppliers")
        supplier_names = ", ".join(
            _text(s.get("name")) for s in suppliers or [] if isinstance(s, Mapping)
        )
        product_rows.append(
            "<tr>"
            f"<td>{_esc(product.get('name'))}<br><code>{_esc(product.get('id'))}</code></td>"
            f"<td>{_esc(product.get('delivery_year'))}</td>"
            f'<td class="num">{_esc(_tonnes(product.get("metric_tons_available")))}</td>'
            f'<td class="num">{_esc(price_text)}</td>'
            f"<td>{_esc(supplier_names)}</td>"
            "</tr>"
        )
    empty = '<tr><td colspan="8">No orders yet.</td></tr>'
    return (
        "<h2>Orders</h2>"
        '<table class="st-table"><thead><tr><th>Order</th><th>Status</th><th>Beneficiary</th>'
        "<th>Tonnes</th><th>Total</th><th>Delivery year</th><th>Product</th><th>What happened</th>"
        f"</tr></thead><tbody>{''.join(order_rows) or empty}</tbody></table>"
        "<h2>Products</h2>"
        '<table class="st-table"><thead><tr><th>Product</th><th>Delivery year</th>'
        "<th>Available</th><th>Price per tonne</th><th>Suppliers</th></tr></thead>"
        f"<tbody>{''.join(product_rows)}</tbody></table>"
    )


def _order_total(order: Mapping[str, Any]) -> str:
    return _amount(order.get("amount_total"), order.get("currency"))


def _product_id(product: Any) -> str:
    if isinstance(product, Mapping):
        return _text(product.get("id"))
    return _text(product)
