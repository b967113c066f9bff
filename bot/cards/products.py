"""The product card and its thread replies (prices old → new), and how products and suppliers
are named on every card and answer."""

from __future__ import annotations

from typing import Any

from bot.cards.blocks import (
    _TEST_NOTE,
    _bounded_lines,
    _code,
    _context,
    _dashboard_link,
    _dict,
    _fields,
    _header,
    _is_test,
    _link,
    _list,
    _message,
    _money,
    _raw,
    _reply,
    _section,
    _strip_markup,
    _test_marked,
    _text,
    _utc_year,
    _year,
)
from bot.cards.limits import (
    LIST_BUDGET,
    NAME_LIMIT,
    PLACE_LIMIT,
    PRICE_BUDGET,
    PRICES_SHOWN,
    SUPPLIER_NAMES_SHOWN,
    SUPPLIERS_SHOWN,
)
from bot.formatting import (
    format_names,
    format_number,
    format_percent_change,
    format_tonnes,
    removal_pathway_label,
)
from bot.i18n import N_, _, ngettext
from bot.model import Message, ProductState, ProductUpdate

_PRODUCT_HEADLINES = {
    "climate.product.created": N_("New product from Frontier"),
    "climate.product.pricing_updated": N_("Product price changed"),
}
_PRODUCT_HEADLINE = N_("Carbon removal product")


# --- how products and suppliers are named, on every card and answer -------------------------------


def _supplier_name(supplier: dict[str, Any]) -> str:
    name = _text(supplier.get("name"))
    if name:
        return name
    return _code(supplier.get("id")) if _raw(supplier.get("id")) else _("Unnamed supplier")


def _location(location: dict[str, Any]) -> str:
    parts = (location.get("city"), location.get("region"), location.get("country"))
    return ", ".join(_text(part, PLACE_LIMIT) for part in parts if _raw(part).strip())


def _supplier_place(locations: list[Any]) -> str:
    """The first location that names a place, and how many more locations there are."""
    place = next((text for text in map(_location, map(_dict, locations)) if text), "")
    if not place or len(locations) == 1:
        return place
    more = len(locations) - 1
    return ngettext(
        "{place} (and {count} more location)", "{place} (and {count} more locations)", more
    ).format(place=place, count=format_number(more))


def _supplier_line(supplier: Any) -> str:
    """One bullet: linked name, pathway, first location."""
    supplier = _dict(supplier)
    plain_name = _supplier_name(supplier)
    name = _link(supplier.get("info_url"), plain_name) or plain_name
    pathway = removal_pathway_label(supplier.get("removal_pathway"))
    place = _supplier_place(_list(supplier.get("locations")))
    if place:
        return _("• {name} — {pathway} — {place}").format(name=name, pathway=pathway, place=place)
    return _("• {name} — {pathway}").format(name=name, pathway=pathway)


def _suppliers_section(product: dict[str, Any], budget: int) -> dict[str, Any] | None:
    """The product's suppliers, one line each, as many as fit in `budget` characters."""
    suppliers = _list(product.get("suppliers"))
    if not suppliers:
        return None
    lines = _bounded_lines(
        (_supplier_line(supplier) for supplier in suppliers),
        len(suppliers),
        budget,
        SUPPLIERS_SHOWN,
        lambda hidden: ngettext(
            "and {count} more supplier", "and {count} more suppliers", hidden
        ).format(count=format_number(hidden)),
    )
    return _section("\n".join([_("*Suppliers*"), *lines]))


def _supplier_names(suppliers: list[Any], shown: int = SUPPLIER_NAMES_SHOWN) -> str:
    """A short inline list: "Charm Industrial, Heirloom, Lithos and 3 more"."""
    names = format_names([_supplier_name(_dict(supplier)) for supplier in suppliers[:shown]])
    if len(suppliers) <= shown:
        return names
    more = len(suppliers) - shown
    return ngettext("{names} and {count} more", "{names} and {count} more", more).format(
        names=names, count=format_number(more)
    )


def _product_name(product: dict[str, Any], product_id: Any = None) -> str:
    return _text(product.get("name")) or _code(product.get("id") or product_id)


def _product_label(product: Any) -> str:
    """Name a product with its first suppliers; it may be just ``{"id": …}``."""
    product = _dict(product)
    if not product:
        return _("an unknown product")
    suppliers = _list(product.get("suppliers"))
    name = _product_name(product)
    if not suppliers:
        return name
    return _("{product} ({suppliers})").format(product=name, suppliers=_supplier_names(suppliers))


def _order_product(state_product: Any, order: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """The product snapshot to show (state's, else the expanded one on the order) and its id."""
    expanded = order.get("product")
    product = _dict(state_product) or _dict(expanded)
    product_id = product.get("id") or (expanded if isinstance(expanded, str) else None)
    return product, product_id


# --- the product card and its replies -------------------------------------------------------------


def _prices(product: dict[str, Any]) -> dict[str, dict[str, Any]]:
    prices = _dict(product.get("current_prices_per_metric_ton"))
    return {_raw(code): _dict(price) for code, price in prices.items()}


def _currency_label(code: str) -> str:
    return _text(code.upper(), 12) or "?"


def _delivery_year(product: dict[str, Any], now: int | None) -> str:
    year = product.get("delivery_year")
    if year is None:
        return _("Not set (spot inventory)")
    reference = _utc_year(now) if now is not None else _utc_year(product.get("created"))
    if isinstance(year, int) and reference is not None and year < reference:
        # Stripe: a past delivery year means spot inventory with guaranteed delivery.
        return _("{year} (spot inventory, guaranteed delivery)").format(year=_year(year))
    return _year(year)


def _price_lines(prices: dict[str, dict[str, Any]]) -> list[str]:
    codes = sorted(prices)
    return _bounded_lines(
        (
            _("{currency}: {total} per tonne").format(
                currency=_currency_label(code),
                total=_money(prices[code].get("amount_total"), code),
            )
            for code in codes
        ),
        len(codes),
        PRICE_BUDGET,
        PRICES_SHOWN,
        lambda hidden: ngettext(
            "and {count} more currency", "and {count} more currencies", hidden
        ).format(count=format_number(hidden)),
    )


def product_card(state: ProductState, now: int | None = None) -> Message:
    """Render a product's card. ``now`` (optional) tells whether the delivery year is past;
    without it the product's own ``created`` year is the reference. After a price change whose
    earlier prices are known (``state.old_prices``), each price shows old → new."""
    product = _dict(state.product)
    test = _is_test(product)
    headline = _(_PRODUCT_HEADLINES.get(state.headline_event, _PRODUCT_HEADLINE))
    blocks: list[tuple[str, dict[str, Any]]] = [("header", _header(_test_marked(headline, test)))]
    if test:
        blocks.append(("test", _context(_(_TEST_NOTE))))
    name = _product_name(product)
    tonnes = format_tonnes(product.get("metric_tons_available"))
    blocks.append(
        (
            "facts",
            _fields(
                [
                    (_("Product"), name),
                    (_("Delivery year"), _delivery_year(product, now)),
                    (_("Tonnes available"), tonnes),
                    (_("Product id"), _code(product.get("id"))),
                ]
            ),
        )
    )
    prices = _prices(product)
    if state.headline_event == "climate.product.pricing_updated" and state.old_prices is not None:
        price_lines = _price_change_lines(state.old_prices, prices)
    else:
        price_lines = _price_lines(prices) if prices else []
    price_lines = price_lines or [_("No prices listed")]
    blocks.append(("prices", _section("\n".join([_("*Price per tonne*"), *price_lines]))))

    suppliers_block = _suppliers_section(product, LIST_BUDGET)
    if suppliers_block is not None:
        blocks.append(("suppliers", suppliers_block))
    blocks.append(("dashboard", _context(_dashboard_link())))

    text = _("{headline}: {name}, {tonnes} available.").format(
        headline=headline, name=name, tonnes=tonnes
    )
    return _message(_test_marked(text, test), blocks)


def _price_change_lines(
    old_prices: dict[str, dict[str, int]] | None, new_prices: dict[str, dict[str, Any]]
) -> list[str]:
    if old_prices is None:
        # Without the earlier prices there is nothing to compare; list the new ones.
        return [_("New prices:"), *_price_lines(new_prices)] if new_prices else []
    old = {_raw(code): _dict(price) for code, price in _dict(old_prices).items()}
    codes = sorted(set(old) | set(new_prices))

    def line(code: str) -> str:
        currency = _currency_label(code)
        before = old.get(code, {}).get("amount_total")
        after = new_prices.get(code, {}).get("amount_total")
        if code not in new_prices:
            return _("{currency}: no longer offered (was {old} per tonne)").format(
                currency=currency, old=_money(before, code)
            )
        if code not in old:
            return _("{currency}: now offered at {new} per tonne").format(
                currency=currency, new=_money(after, code)
            )
        if before == after:
            return _("{currency}: {new} per tonne (unchanged)").format(
                currency=currency, new=_money(after, code)
            )
        return _("{currency}: {old} → {new} per tonne ({change})").format(
            currency=currency,
            old=_money(before, code),
            new=_money(after, code),
            change=format_percent_change(before, after),
        )

    return _bounded_lines(
        (line(code) for code in codes),
        len(codes),
        PRICE_BUDGET,
        PRICES_SHOWN,
        lambda hidden: ngettext(
            "and {count} more currency", "and {count} more currencies", hidden
        ).format(count=format_number(hidden)),
    )


def product_reply(update: ProductUpdate) -> Message:
    """Render the thread reply for one product event: the price change, or the listing."""
    product = _dict(update.product)
    name = _product_name(product)
    tonnes = format_tonnes(product.get("metric_tons_available"))
    prices = _prices(product)
    if update.event_type == "climate.product.pricing_updated":
        lines = _price_change_lines(update.old_prices, prices) or [_("No prices listed")]
        lines.append(_("Tonnes available: {tonnes}").format(tonnes=tonnes))
        text = _("Price change for {name}: {first}").format(
            name=name, first=_strip_markup(lines[0])
        )
    elif update.event_type == "climate.product.created":
        lines = [_("Listed: {name}, {tonnes} available.").format(name=name, tonnes=tonnes)]
        text = lines[0]
    else:
        lines = [_("Product updated ({event}).").format(event=_text(update.event_type, NAME_LIMIT))]
        text = _("{name}: {what}").format(name=name, what=lines[0])

    return _reply(lines, _test_marked(text, _is_test(product)), update.late, update.event_created)
