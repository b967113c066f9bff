"""The one module that talks to Stripe's API and knows its errors.

Objects come back as the plain JSON dicts Stripe sent (the same shape webhooks carry), and failures
as our own exceptions: `Refused` (Stripe said no: a normal outcome to show the user), `NotFound`,
`IdempotencyConflict` (a repeat of another request) and `Unavailable` (network, outage, rate
limit, bad key: try again later).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import stripe


class StripeFailure(Exception):
    """Base of every Stripe failure climate-bot handles; `http_status`: Stripe's answer's, when
    there was one."""

    def __init__(
        self, message: str, *, request_id: str | None = None, http_status: int | None = None
    ) -> None:
        self.message = message
        self.request_id = request_id
        self.http_status = http_status
        super().__init__(message)


class Refused(StripeFailure):
    """Stripe refused the request (for a cancel: outside the window, already final …)."""


class NotFound(StripeFailure):
    """No such object in this account."""


class Unavailable(StripeFailure):
    """Stripe could not be reached or answered with an error of its own."""


class IdempotencyConflict(StripeFailure):
    """Stripe turned the request down as a repeat: its Idempotency-Key is in use by a request
    still running, or was used for a different one."""


@dataclass(frozen=True)
class StripeResult:
    """A Stripe object as JSON, and the id of the request that returned it (for the record)."""

    data: dict[str, Any]
    request_id: str | None


def cancel_idempotency_key(order_id: str, attempt: int = 0) -> str:
    """One key per cancel attempt on an order: a retry of the same attempt (a crash, a network
    error inside the SDK) replays Stripe's first answer instead of cancelling twice. A new attempt
    after a refusal gets a new key, or Stripe would replay the refusal for 24 hours."""
    return f"climate-bot-cancel:{order_id}:{attempt}"


class StripeGateway:
    """Stripe Climate calls climate-bot makes."""

    def __init__(
        self, api_key: str, api_base: str, *, timeout: float = 10.0, retries: int = 2
    ) -> None:
        self.client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base},
            http_client=stripe.RequestsClient(timeout=timeout),
            # Network errors and 5xx are retried by the SDK with the same Idempotency-Key.
            max_network_retries=retries,
        )

    def retrieve_order(self, order_id: str, *, account: str | None = None) -> StripeResult:
        """The order as Stripe has it now."""
        return self._call(
            lambda options: self.client.v1.climate.orders.retrieve(order_id, options=options),
            account,
        )

    def retrieve_product(self, product_id: str, *, account: str | None = None) -> StripeResult:
        """The product as Stripe has it now."""
        return self._call(
            lambda options: self.client.v1.climate.products.retrieve(product_id, options=options),
            account,
        )

    def fetch_related_object(self, url: str, *, context: str | None, event_id: str) -> StripeResult:
        """A thin event's related object, fetched as the SDK's `fetch_related_object` does: GET
        its `url` in the event's `context` (`Stripe-Context`), naming the event that asks."""

        def fetch(options: dict[str, Any]) -> Any:
            response = self.client.raw_request(
                "get",
                url,
                stripe_context=context,
                headers={"Stripe-Request-Trigger": f"event={event_id}"},
                usage=["fetch_related_object"],
            )
            return self.client.deserialize(response, api_mode="V1")

        return self._call(fetch, None)

    def cancel_order(
        self, order_id: str, *, attempt: int = 0, account: str | None = None
    ) -> StripeResult:
        """Cancel the order, with the Idempotency-Key of this attempt."""
        return self._call(
            lambda options: self.client.v1.climate.orders.cancel(order_id, options=options),
            account,
            idempotency_key=cancel_idempotency_key(order_id, attempt),
        )

    def list_products(self, *, max_pages: int = 20) -> list[dict[str, Any]]:
        """Every Climate product Stripe offers now (all pages, 100 at a time)."""
        products: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 100}
        for _ in range(max_pages):
            page = self._call(
                lambda options, p=dict(params): self.client.v1.climate.products.list(
                    params=p, options=options
                ),
                None,
            ).data
            products.extend(page.get("data", []))
            if not page.get("has_more") or not page.get("data"):
                break
            params["starting_after"] = page["data"][-1]["id"]
        return products

    def events(
        self,
        *,
        types: list[str] | tuple[str, ...],
        created_gte: int | None = None,
        created_lte: int | None = None,
        starting_after: str | None = None,
        limit: int = 100,
        account: str | None = None,
    ) -> dict[str, Any]:
        """One page of `GET /v1/events` (newest first; Stripe keeps 30 days) as the JSON Stripe
        sent: `{"data": [...], "has_more": ...}`, each event a plain dict as a webhook carries it.
        Pass the last event's id as `starting_after` for the next page; `account`: a connected
        account's events (`Stripe-Account`)."""
        params: dict[str, Any] = {"types": list(types), "limit": limit}
        created = {"gte": created_gte, "lte": created_lte}
        if any(v is not None for v in created.values()):
            params["created"] = {k: v for k, v in created.items() if v is not None}
        if starting_after:
            params["starting_after"] = starting_after
        return self._call(
            lambda options: self.client.v1.events.list(params=params, options=options), account
        ).data

    def _call(
        self, request, account: str | None, *, idempotency_key: str | None = None
    ) -> StripeResult:
        options: dict[str, Any] = {}
        if account:
            options["stripe_account"] = account
        if idempotency_key:
            options["idempotency_key"] = idempotency_key
        try:
            obj = request(options)
        except stripe.IdempotencyError as exc:
            raise IdempotencyConflict(
                exc.user_message or str(exc), request_id=exc.request_id, http_status=exc.http_status
            ) from None
        except stripe.InvalidRequestError as exc:
            message = exc.user_message or str(exc)
            known = {"request_id": exc.request_id, "http_status": exc.http_status}
            if exc.http_status == 404:
                raise NotFound(message, **known) from None
            raise Refused(message, **known) from None
        except stripe.StripeError as exc:
            raise Unavailable(
                exc.user_message or str(exc), request_id=exc.request_id, http_status=exc.http_status
            ) from None
        return StripeResult(dict(obj.last_response.data), obj.last_response.request_id)
