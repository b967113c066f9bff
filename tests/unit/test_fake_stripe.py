"""FakeStripe driven through the real stripe-python 16 client, never a patched SDK.

Each test's fake is checked at teardown: every response it sent must match the OpenAPI subset's
schema for that operation and status, and the fake must not have hit a bug of its own.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from decimal import Decimal

import pytest
import stripe

from bot.sandbox import stripe_objects
from bot.sandbox.stripe import FakeStripe
from tests.support import stripe_schema
from tests.support.faults import FaultyStripe
from tests.support.stripe_answers import answer_problems

ORDERS = "/v1/climate/orders"
CONNECTED = "acct_1ConnectedShop000000000"


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with FakeStripe() as f:
        yield f
        assert answer_problems(f) == []


@pytest.fixture
def slow() -> Iterator[FaultyStripe]:
    """A fake the test can slow down, to catch requests in flight."""
    with FaultyStripe() as f:
        yield f
        assert answer_problems(f) == []


@pytest.fixture
def client(fake: FakeStripe) -> stripe.StripeClient:
    return fake.client()


def _body(obj: stripe.StripeObject) -> dict:
    """The raw JSON Stripe sent for an SDK object (the SDK turns decimal strings into Decimal)."""
    return json.loads(obj.last_response.body)


def test_list_is_newest_first_and_auto_paging_iter_walks_every_page(fake, client):
    added = [fake.add_order(stripe_objects.order(created=1_767_225_600 + i)) for i in range(23)]
    newest_first = [o["id"] for o in reversed(added)]

    first = client.v1.climate.orders.list(params={"limit": 10})
    assert first.has_more is True
    assert [o.id for o in first.data] == newest_first[:10]
    assert [o.id for o in first.auto_paging_iter()] == newest_first

    lists = fake.calls_to(ORDERS, method="GET")
    assert [c.params.get("starting_after") for c in lists] == [
        None,
        newest_first[9],
        newest_first[19],
    ]
    # Items in a list carry no last_response of their own: check the list body as a whole.
    assert stripe_schema.validate_response("GET", ORDERS, 200, _body(first)) == []


def test_list_default_limit_ending_before_and_bad_limit(fake, client):
    ids = [fake.add_order(stripe_objects.order(created=1_767_225_600 + i))["id"] for i in range(12)]
    assert len(client.v1.climate.orders.list().data) == 10  # Stripe's default limit

    page = client.v1.climate.orders.list(params={"limit": 3, "ending_before": ids[5]})
    assert [o.id for o in page.data] == [ids[8], ids[7], ids[6]]
    assert page.has_more is True

    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.climate.orders.list(params={"limit": 101})
    assert exc.value.param == "limit"


def test_retrieve_with_expanded_product(fake, client):
    stored = fake.add_order(stripe_objects.order("delivered"))
    plain = client.v1.climate.orders.retrieve(stored["id"])
    assert plain.product == stripe_objects.PRODUCT_ID
    assert plain.metric_tons == Decimal("10")  # the SDK hydrates decimal strings
    assert _body(plain) == stored

    expanded = client.v1.climate.orders.retrieve(stored["id"], params={"expand": ["product"]})
    assert isinstance(expanded.product, stripe.climate.Product)
    assert expanded.product.id == stripe_objects.PRODUCT_ID
    assert stripe_schema.validate(_body(expanded), "climate.order") == []


def test_unknown_order_is_404_resource_missing(client):
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.climate.orders.retrieve("climorder_x")
    err = exc.value
    assert (err.http_status, err.code, err.param) == (404, "resource_missing", "id")
    assert err.user_message == "No such climate order: 'climorder_x'"
    assert err.request_id.startswith("req_")


def test_create_rounds_amounts_into_minor_units_and_emits_created_event(fake, client):
    order = client.v1.climate.orders.create(
        params={
            "product": fake.product_id,
            "metric_tons": Decimal("0.01"),
            "beneficiary": {"public_name": "Acme Inc."},
            "metadata": {"slack_channel": "C0123"},
        },
        options={"idempotency_key": "create-1"},
    )
    # The docs' example: 0.01 t at 55000 + 1650 per ton is 550 + 16.5 → 17 = 567 cents.
    assert (order.amount_subtotal, order.amount_fees, order.amount_total) == (550, 17, 567)
    assert order.status == "confirmed" and order.confirmed_at == order.created
    assert order.beneficiary.public_name == "Acme Inc."
    assert fake.calls[-1].params["metadata"] == {"slack_channel": "C0123"}
    assert fake.get_order(order.id)["metric_tons"] == "0.01"

    (created,) = fake.events
    assert created["type"] == "climate.order.created"
    assert created["request"]["idempotency_key"] == "create-1"
    assert stripe_schema.validate_event(created) == []


def test_create_in_jpy_uses_whole_yen(fake, client):
    fake.add_product(
        stripe_objects.product(delivery_year=2028, prices={"usd": 56650, "jpy": 84975})
    )
    order = client.v1.climate.orders.create(
        params={
            "product": "climsku_frontier_offtake_portfolio_2028",
            "metric_tons": "2.5",
            "currency": "jpy",
        }
    )
    assert order.currency == "jpy"
    assert (order.amount_subtotal, order.amount_fees, order.amount_total) == (206250, 6188, 212438)
    assert order.expected_delivery_year == 2028


def test_create_rejects_what_stripe_rejects(fake, client):
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.climate.orders.create(params={"product": fake.product_id, "tons": "1"})
    assert (exc.value.code, exc.value.param) == ("parameter_unknown", "tons")

    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.climate.orders.create(params={"metric_tons": "1"})
    assert exc.value.code == "parameter_missing"

    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.climate.orders.create(params={"product": "climsku_nope", "metric_tons": "1"})
    assert (exc.value.http_status, exc.value.code) == (400, "resource_missing")
    assert fake.orders() == []


def test_update_metadata_and_beneficiary(fake, client):
    order = fake.add_order(stripe_objects.order(metadata={"keep": "1", "drop": "2"}))
    updated = client.v1.climate.orders.update(
        order["id"],
        params={"metadata": {"drop": "", "new": "3"}, "beneficiary": {"public_name": "Team"}},
    )
    assert updated.metadata.to_dict() == {"keep": "1", "new": "3"}
    assert fake.get_order(order["id"])["beneficiary"] == {"public_name": "Team"}

    cleared = client.v1.climate.orders.update(order["id"], params={"beneficiary": ""})
    assert "beneficiary" not in _body(cleared)


def test_cancel_confirmed_order(fake, client):
    order = fake.add_order(stripe_objects.order("confirmed"))
    canceled = client.v1.climate.orders.cancel(order["id"])
    assert canceled.status == "canceled"
    assert canceled.cancellation_reason == "requested"
    assert isinstance(canceled.canceled_at, int)
    assert fake.get_order(order["id"])["status"] == "canceled"
    assert [e["type"] for e in fake.events] == ["climate.order.canceled"]
    assert stripe_schema.validate_event(fake.events[0]) == []


@pytest.mark.parametrize("status", ["delivered", "canceled"])
def test_cancel_of_a_finished_order_is_invalid_request(fake, client, status):
    order = fake.add_order(stripe_objects.order(status))
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.climate.orders.cancel(order["id"])
    assert exc.value.http_status == 400
    assert status in exc.value.user_message
    assert fake.get_order(order["id"]) == order  # untouched


def test_refuse_cancel_until_allowed(fake, client):
    order = fake.add_order(stripe_objects.delayed(stripe_objects.order(), 2028, 1_790_000_000))
    fake.refuse_cancel(order["id"], message="The cancellation window for this order has closed.")
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.climate.orders.cancel(order["id"])
    assert exc.value.user_message == "The cancellation window for this order has closed."
    assert exc.value.code is None
    assert fake.get_order(order["id"])["status"] == "confirmed"

    fake.allow_cancel(order["id"])
    assert client.v1.climate.orders.cancel(order["id"]).status == "canceled"


def test_same_idempotency_key_replays_the_first_answer(fake, client):
    order = fake.add_order(stripe_objects.order())
    key = f"cancel:{order['id']}"
    first = client.v1.climate.orders.cancel(order["id"], options={"idempotency_key": key})
    second = client.v1.climate.orders.cancel(order["id"], options={"idempotency_key": key})

    assert first.last_response.body == second.last_response.body
    assert second.last_response.headers["Idempotent-Replayed"] == "true"
    assert second.last_response.headers["Original-Request"] == first.last_response.request_id
    assert [c.replayed for c in fake.calls_to(ORDERS)] == [False, True]
    assert len(fake.events) == 1  # one state change

    # A failed execution is replayed too: the refusal comes back for the same key.
    done = fake.add_order(stripe_objects.order("delivered"))
    for _ in range(2):
        with pytest.raises(stripe.InvalidRequestError):
            client.v1.climate.orders.cancel(done["id"], options={"idempotency_key": "k-done"})
    assert fake.calls[-1].replayed


def test_reusing_a_key_with_other_params_is_idempotency_error(fake, client):
    order = fake.add_order(stripe_objects.order())
    client.v1.climate.orders.update(
        order["id"], params={"metadata": {"a": "1"}}, options={"idempotency_key": "same"}
    )
    with pytest.raises(stripe.IdempotencyError) as exc:
        client.v1.climate.orders.update(
            order["id"], params={"metadata": {"a": "2"}}, options={"idempotency_key": "same"}
        )
    assert exc.value.http_status == 400
    assert "same parameters" in exc.value.user_message
    assert fake.get_order(order["id"])["metadata"] == {"a": "1"}


def test_concurrent_request_with_a_key_in_flight_gets_409(slow):
    client = slow.client()
    order = slow.add_order(stripe_objects.order())
    slow.set_delay(0.3)
    outcome: dict[str, object] = {}

    def click() -> None:
        outcome["first"] = client.v1.climate.orders.cancel(
            order["id"], options={"idempotency_key": "double-click"}
        )

    worker = threading.Thread(target=click)
    worker.start()
    slow.wait_for(f"{ORDERS}/{order['id']}/cancel", answered=False)
    with pytest.raises(stripe.APIError) as exc:
        client.v1.climate.orders.cancel(order["id"], options={"idempotency_key": "double-click"})
    worker.join(timeout=5)
    assert exc.value.http_status == 409
    assert outcome["first"].status == "canceled"


def test_missing_key_is_401(fake):
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(fake.url + ORDERS, timeout=5)
    assert exc.value.code == 401
    assert exc.value.headers["Request-Id"].startswith("req_")
    error = json.loads(exc.value.read())["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("You did not provide an API key.")


def test_unknown_key_is_authentication_error(fake):
    with pytest.raises(stripe.AuthenticationError) as exc:
        fake.client("sk_test_notmykey000000000xyz9").v1.climate.orders.list()
    assert exc.value.http_status == 401
    assert exc.value.user_message == "Invalid API Key provided: sk_test_*****************xyz9"


def test_restricted_key_without_permission_is_permission_error(fake):
    fake.add_api_key("rk_test_readonly0000000000000", ["climate_order_read"])
    order = fake.add_order(stripe_objects.order())
    reader = fake.client("rk_test_readonly0000000000000")
    assert reader.v1.climate.orders.retrieve(order["id"]).id == order["id"]

    with pytest.raises(stripe.PermissionError) as exc:
        reader.v1.climate.orders.cancel(order["id"])
    assert exc.value.http_status == 403
    assert "rak_climate_order_write" in exc.value.user_message
    assert exc.value.error.type == "invalid_request_error"
    assert fake.get_order(order["id"])["status"] == "confirmed"


def test_slow_answers_and_wait_for(slow):
    slow.set_delay(0.2)
    worker = threading.Thread(target=slow.client().v1.climate.products.list)
    worker.start()
    (in_flight,) = slow.wait_for("/v1/climate/products", answered=False)
    assert in_flight.status is None  # seen while the fake is still "thinking"
    (done,) = slow.wait_for("/v1/climate/products")
    worker.join(timeout=5)
    assert done.status == 200
    with pytest.raises(TimeoutError):
        slow.wait_for("/v1/climate/suppliers", timeout=0.05)


def test_connect_accounts_have_separate_orders(fake, client):
    theirs = fake.add_order(stripe_objects.order(), account=CONNECTED)
    mine = fake.add_order(stripe_objects.order())

    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.climate.orders.cancel(theirs["id"])
    assert exc.value.code == "resource_missing"

    as_them = client.v1.climate.orders.cancel(theirs["id"], options={"stripe_account": CONNECTED})
    assert as_them.status == "canceled"
    assert fake.calls[-1].account == CONNECTED
    assert fake.events[-1]["account"] == CONNECTED
    assert [o["id"] for o in fake.orders()] == [mine["id"]]
    assert fake.get_order(mine["id"])["status"] == "confirmed"

    connected_client = fake.client(stripe_account=CONNECTED)
    assert [o.id for o in connected_client.v1.climate.orders.list().data] == [theirs["id"]]

    with pytest.raises(stripe.PermissionError):
        client.v1.climate.orders.list(options={"stripe_account": "acct_1NotConnected0000000"})


def test_products_and_suppliers(fake, client):
    products = client.v1.climate.products.list()
    assert [p.id for p in products.data] == [fake.product_id]
    product = client.v1.climate.products.retrieve(fake.product_id)
    assert product.current_prices_per_metric_ton["usd"].amount_total == 56650
    assert product.metric_tons_available == Decimal("1000000")

    suppliers = client.v1.climate.suppliers.list(params={"limit": 2})
    assert [s.id for s in suppliers.auto_paging_iter()] == [
        "climsup_charm_industrial",
        "climsup_heirloom",
        "climsup_lithos",
        "climsup_vaulted",
        "climsup_carbon_capture_inc",
    ]
    assert client.v1.climate.suppliers.retrieve("climsup_lithos").name == "Lithos"
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.climate.suppliers.retrieve("climsup_nope")
    assert exc.value.user_message == "No such climate supplier: 'climsup_nope'"


def test_unrecognized_url_and_request_headers_are_recorded(fake, client):
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.raw_request("get", "/v1/climate/offsets")
    assert exc.value.http_status == 404
    assert "Unrecognized request URL" in exc.value.user_message

    client.v1.climate.orders.list()
    call = fake.calls[-1]
    assert call.headers["Authorization"] == f"Bearer {fake.api_key}"
    assert call.headers["stripe-version"] == stripe_objects.API_VERSION
    assert call.idempotency_key is None  # GETs carry none
