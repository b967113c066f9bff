"""The states cards render (`OrderState`, `ProductState`), built from stored rows in one place.

Delivery renders a card from them, `/climate status` answers with one, the cancel dialog and the
deciders' direct messages read one: each asks a verb here, none rebuilds a state from a row.
"""

from __future__ import annotations

from typing import Any

from bot.model import Change, Decision, ExpectedRefund, OrderState, ProductState


class StateVerbs:
    """Rows read as the states of `bot.model` (a part of `Storage`)."""

    def order_state(
        self, order_id: str, *, order: dict[str, Any] | None = None
    ) -> OrderState | None:
        """What the order's card shows; None when the order is not recorded.

        `order`, an order just read from Stripe, replaces the stored snapshot (its product is
        the one shown); an order never recorded is then shown as just created, with nothing
        else known.
        """
        row = self.order_row(order_id)
        if row is None and order is None:
            return None
        shown = order if order is not None else row["snapshot"]
        return order_state_of(row, shown, self.order_product(shown))

    def product_state(self, product_id: str) -> ProductState | None:
        """What the product's card shows; None when the product is not recorded."""
        row = self.product_row(product_id)
        return product_state_of(row) if row is not None else None

    def decision(self, order_id: str) -> Decision | None:
        """The decision recorded on the order's current change, if any."""
        return decision_of(self.order_row(order_id) or {})

    def order_product(self, order: dict[str, Any]) -> dict[str, Any] | None:
        """The product of an order snapshot as known: expanded in it, else our snapshot of it."""
        product = order.get("product")
        if isinstance(product, dict):
            return product
        if isinstance(product, str):
            return self.product_snapshot(product)
        return None


def order_state_of(row: dict | None, order: dict, product: dict | None) -> OrderState:
    """The state an order's card shows: its row's change, decision and headline with `order`
    (the stored snapshot, or an order just read from Stripe) and its `product`. Without a row,
    an order never recorded, shown as just created."""
    if row is None:
        return OrderState(order=order, product=product, headline_event="climate.order.created")
    return OrderState(
        order=order,
        product=product,
        headline_event=row["headline_event"],
        change=Change(**row["change"]) if row["change"] else None,
        account=row["account"],
        decision=decision_of(row),
        next_change=Change(**row["next_change"]) if row.get("next_change") else None,
    )


def product_state_of(row: dict) -> ProductState:
    """A product row as the state its card shows."""
    return ProductState(
        product=row["snapshot"],
        headline_event=row["headline_event"],
        account=row["account"],
        old_prices=row.get("old_prices"),
    )


def decision_of(row: dict) -> Decision | None:
    """The decision recorded on an order row, if any."""
    if not row.get("decision"):
        return None
    detail = row.get("decision_detail") or {}
    refund = None
    if detail.get("refund_rule"):
        refund = ExpectedRefund(detail.get("refund"), detail["refund_rule"])
    return Decision(
        kind=row["decision"],
        by=row["decided_by"],
        at=int(row["decided_at"]),
        refund=refund,
        reason=detail.get("reason") if isinstance(detail.get("reason"), str) else None,
    )
