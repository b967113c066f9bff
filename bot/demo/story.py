"""What happens in the demo: Frontier's inventory, the team's orders, and Frontier acting on them.

The team places orders through the real Stripe API (FakeStripe emits ``climate.order.created``
and the webhook sender forwards it). What Frontier does on its own (a delay, a substitution, a
delivery, a price change, a cancel) is changed in FakeStripe first, then told to the bot as the
snapshot event Stripe would send. So whatever the bot later reads from Stripe agrees with what it
was told, and a cancel clicked in Slack really cancels the order in the Stripe sandbox.
"""

from __future__ import annotations

import copy
import logging
import random
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from bot.demo.webhooks import EventSink
from bot.sandbox import stripe_objects as so
from bot.sandbox.stripe import FakeStripe

log = logging.getLogger(__name__)

PORTFOLIO_2027 = so.PRODUCT_ID
PORTFOLIO_2028 = "climsku_frontier_offtake_portfolio_2028"

# Per-tonne totals in minor units; 3% of each is Frontier's fee, as in Stripe's fixture.
PRICES_2027 = {"usd": 56650, "jpy": 84975}
PRICES_2027_RAISED = {"usd": 60000, "jpy": 90000}
PRICES_2028 = {"usd": 61800, "jpy": 92700}

BENEFICIARIES = (
    "Acme Robotics",
    "Tanuki Foods",
    "Northwind Logistics",
    "Blue Harbor Coffee",
    "Fjord Analytics",
    "Kestrel Air",
    "Lumen Books",
    "Orchard & Vine",
    "Polar Paper Co.",
    "Sol Cycles",
    # Stripe text is hostile until escaped: this one must ping nobody and stay plain text.
    "<!channel> *Totally Legit Corp*",
)
TONNES = ("0.5", "1", "2.5", "5", "10", "25", "100")


def inventory(now: int) -> list[dict[str, Any]]:
    """Frontier's products when the demo starts: the fixture's 2027 portfolio, its five
    suppliers, priced in US dollars and yen."""
    return [so.product(prices=PRICES_2027, created=now - 90 * 86400)]


def portfolio_2028(now: int) -> dict[str, Any]:
    """The product Frontier adds during the story; substitutions move orders to it."""
    return so.product(
        delivery_year=2028,
        prices=PRICES_2028,
        suppliers=["climsup_heirloom", "climsup_lithos", "climsup_vaulted"],
        metric_tons_available="250000",
        created=now,
    )


class Story:
    """Plays the scripted story, then random events, as webhooks to the bot.

    `pause` seconds pass between steps (0 with ``--fast``); setting `stop` ends the story at the
    next step.
    """

    def __init__(
        self,
        stripe: FakeStripe,
        webhooks: EventSink,
        *,
        pause: float = 3.0,
        stop: threading.Event | None = None,
        seed: int | None = None,
    ) -> None:
        self.stripe = stripe
        self.webhooks = webhooks
        self.pause = pause
        self.stop = stop or threading.Event()
        self.client = stripe.client()
        self.rng = random.Random(seed)
        self.orders: list[str] = []
        self.finished = threading.Event()

    def run(self, random_events: int = 0) -> None:
        """The whole show (a thread's target): the scripted story, then `random_events` more."""
        try:
            self.play()
            if random_events:
                self.play_random(random_events)
        except Exception:  # a broken story must not take the sandbox down with it
            log.exception("the demo story stopped")
        finally:
            self.finished.set()

    # -- the scripted story ----------------------------------------------------------------------

    def play(self) -> None:
        """A product appears, orders are placed, then Frontier delays one, substitutes one,
        delivers one, changes a price and cancels one."""
        orders: dict[str, str] = {}

        def order(name: str, tonnes: str, beneficiary: str, currency: str = "usd") -> Callable:
            def step() -> None:
                orders[name] = self.place_order(tonnes, beneficiary, currency)

            return step

        steps: list[tuple[str, Callable[[], Any]]] = [
            ("Frontier lists its 2027 portfolio", lambda: self.announce_product(PORTFOLIO_2027)),
            ("Acme Robotics orders 10 t", order("delayed", "10", "Acme Robotics")),
            ("Tanuki Foods orders 25 t in yen", order("swapped", "25", "Tanuki Foods", "jpy")),
            ("Northwind Logistics orders 3 t", order("delivered", "3", "Northwind Logistics")),
            ("Blue Harbor Coffee orders 50 t", order("cancelled", "50", "Blue Harbor Coffee")),
            ("Frontier delays Acme's order to 2028", lambda: self.delay(orders["delayed"])),
            ("Frontier lists its 2028 portfolio", self.add_portfolio_2028),
            (
                "Frontier substitutes the product of Tanuki's order",
                lambda: self.substitute(orders["swapped"], PORTFOLIO_2028),
            ),
            ("Frontier delivers Northwind's order", lambda: self.deliver(orders["delivered"])),
            (
                "The 2027 portfolio's price goes up",
                lambda: self.change_price(PORTFOLIO_2027, PRICES_2027_RAISED),
            ),
            (
                "Frontier cancels Blue Harbor's order",
                lambda: self.frontier_cancel(orders["cancelled"]),
            ),
        ]
        for number, (what, step) in enumerate(steps):
            if number and self.stop.wait(self.pause):
                return
            if self.stop.is_set():
                return
            log.info("story: %s", what)
            step()
        log.info("story: told; now it is your turn in the sandbox")

    # -- random events ---------------------------------------------------------------------------

    def play_random(self, count: int) -> None:
        """`count` random events of every kind, for a busy channel."""
        if self.stripe.products() and not any(
            p["id"] == PORTFOLIO_2028 for p in self.stripe.products()
        ):
            self.add_portfolio_2028()
        for number in range(count):
            if self.stop.is_set() or (number and self.pause and self.stop.wait(self.pause / 10)):
                return
            self.random_event()
        log.info("story: %d random events sent", count)

    def random_event(self) -> None:
        """One event picked at random among those that make sense for the orders there are."""
        open_orders = [o for o in self._orders() if o["status"] == "confirmed"]
        # Frontier changes an order at most once here: a second change within the same second
        # would be the same change to the bot (same order, same timestamp) and be recorded once.
        unchanged = [o for o in open_orders if not (o["delayed_at"] or o["product_substituted_at"])]
        kinds = ["order"] * 4 + ["price"]
        if unchanged:
            kinds += ["delay", "delay", "substitute"]
        if open_orders:
            kinds += ["deliver", "deliver", "cancel"]
        kind = self.rng.choice(kinds)
        if kind == "order":
            currency = self.rng.choice(("usd", "usd", "jpy"))
            self.place_order(
                self.rng.choice(TONNES), self.rng.choice(BENEFICIARIES), currency=currency
            )
        elif kind == "price":
            product = self.rng.choice(self.stripe.products())
            factor = Decimal(100 + self.rng.choice((-6, -3, 2, 4, 7))) / 100
            prices = {
                currency: int(Decimal(price["amount_total"]) * factor)
                for currency, price in product["current_prices_per_metric_ton"].items()
            }
            self.change_price(product["id"], prices)
        else:
            pool = unchanged if kind in ("delay", "substitute") else open_orders
            target = self.rng.choice(pool)["id"]
            if kind == "delay":
                self.delay(target)
            elif kind == "substitute":
                current = self.stripe.get_order(target)["product"]
                new = PORTFOLIO_2028 if current != PORTFOLIO_2028 else PORTFOLIO_2027
                self.substitute(target, new)
            elif kind == "deliver":
                self.deliver(target)
            else:
                self.frontier_cancel(target)

    def _orders(self) -> list[dict[str, Any]]:
        return [self.stripe.get_order(order_id) for order_id in self.orders]

    # -- what the team does ----------------------------------------------------------------------

    def place_order(self, tonnes: str, beneficiary: str, currency: str = "usd") -> str:
        """Order through the Stripe API, as the team's own code would; Stripe's
        ``climate.order.created`` follows. Returns the order id."""
        order = self.client.v1.climate.orders.create(
            params={
                "product": PORTFOLIO_2027,
                "metric_tons": tonnes,
                "currency": currency,
                "beneficiary": {"public_name": beneficiary},
            }
        )
        self.orders.append(order.id)
        self.webhooks.forward_new()
        return order.id

    # -- what Frontier does ----------------------------------------------------------------------

    def announce_product(self, product_id: str) -> None:
        """Tell the bot about a product in the inventory (``climate.product.created``)."""
        product = next(p for p in self.stripe.products() if p["id"] == product_id)
        self.webhooks.send(so.event("climate.product.created", product, created=_now()))

    def add_portfolio_2028(self) -> None:
        """Frontier adds a product to the inventory."""
        product = self.stripe.add_product(portfolio_2028(_now()))
        self.webhooks.send(so.event("climate.product.created", product, created=_now()))

    def delay(self, order_id: str) -> None:
        """Frontier moves delivery a year later (``climate.order.delayed``)."""
        before = self.stripe.get_order(order_id)
        after = so.delayed(before, before["expected_delivery_year"] + 1, at=_now())
        self._tell(
            "climate.order.delayed",
            after,
            {
                "delayed_at": before["delayed_at"],
                "expected_delivery_year": before["expected_delivery_year"],
            },
        )

    def substitute(self, order_id: str, product_id: str) -> None:
        """Frontier swaps the order's product (``climate.order.product_substituted``)."""
        before = self.stripe.get_order(order_id)
        product = next(p for p in self.stripe.products() if p["id"] == product_id)
        after = so.substituted(
            before, product_id, at=_now(), expected_delivery_year=product["delivery_year"]
        )
        self._tell(
            "climate.order.product_substituted",
            after,
            {
                "product": before["product"],
                "product_substituted_at": before["product_substituted_at"],
                "expected_delivery_year": before["expected_delivery_year"],
            },
        )

    def deliver(self, order_id: str) -> None:
        """Frontier retires the tonnes, split over the product's first suppliers, with a
        certificate and registry entries (``climate.order.delivered``)."""
        before = self.stripe.get_order(order_id)
        product = next(p for p in self.stripe.products() if p["id"] == before["product"])
        after = so.order(
            "delivered",
            product=before["product"],
            metric_tons=before["metric_tons"],
            currency=before["currency"],
            delivered_by=[s["id"] for s in product["suppliers"][:2]],
            id=before["id"],
            created=before["created"],
            delivered_at=_now(),
            beneficiary=before.get("beneficiary"),
            metadata=before["metadata"],
            amount_fees=before["amount_fees"],
            amount_subtotal=before["amount_subtotal"],
            amount_total=before["amount_total"],
            expected_delivery_year=before["expected_delivery_year"],
            delayed_at=before["delayed_at"],
            product_substituted_at=before["product_substituted_at"],
            livemode=before["livemode"],
        )
        self._tell(
            "climate.order.delivered",
            after,
            {"status": before["status"], "delivered_at": None, "certificate": None},
        )

    def frontier_cancel(self, order_id: str) -> None:
        """Frontier cannot deliver and cancels with a full refund (``climate.order.canceled``)."""
        before = self.stripe.get_order(order_id)
        after = copy.deepcopy(before)
        after.update(
            status="canceled", canceled_at=_now(), cancellation_reason="product_unavailable"
        )
        self._tell(
            "climate.order.canceled",
            after,
            {"status": before["status"], "canceled_at": None, "cancellation_reason": None},
        )

    def change_price(self, product_id: str, totals: dict[str, int]) -> None:
        """A product's price per tonne changes (``climate.product.pricing_updated``)."""
        before = next(p for p in self.stripe.products() if p["id"] == product_id)
        after = copy.deepcopy(before)
        after["current_prices_per_metric_ton"] = {
            currency: so.price_per_ton(total) for currency, total in totals.items()
        }
        self.stripe.add_product(after)
        self.webhooks.send(
            so.event(
                "climate.product.pricing_updated",
                after,
                created=_now(),
                previous_attributes={
                    "current_prices_per_metric_ton": before["current_prices_per_metric_ton"]
                },
            )
        )

    def _tell(self, event_type: str, order: dict[str, Any], previous: dict[str, Any]) -> None:
        self.stripe.add_order(order)
        self.webhooks.send(
            so.event(event_type, order, created=_now(), previous_attributes=previous)
        )


def _now() -> int:
    return int(time.time())
