"""A fake Stripe API for the Climate endpoints, served over real HTTP on loopback.

Point the real stripe-python client at it and it answers like Stripe does, errors included::

    with FakeStripe() as fake:
        client = fake.client()      # StripeClient(fake.api_key, base_addresses={"api": fake.url})
        order = client.v1.climate.orders.create(
            params={"product": fake.product_id, "metric_tons": "0.25"}
        )
        fake.refuse_cancel(order.id)  # cancelling it now raises stripe.InvalidRequestError

What it models: orders (list/create/retrieve/update/cancel),
products and suppliers (list/retrieve); the Events API (list with ``type``/``types[]``/``created``
filters, retrieve; 30 days kept) over the events it generates and those given to ``add_event``;
form bodies in bracket notation; API-key auth with 401 and
403 bodies; ``Stripe-Account`` (Connect) with one order store per account; ``Idempotency-Key``
replay for POSTs; ``Request-Id`` on every response; scripted cancel refusals. Every request is
recorded as a :class:`Call` with the response it got.

It behaves like a healthy Stripe. A subclass makes it misbehave through one seam, `_intercept`
(answer a request before the API sees it: an error, a proxy's HTML page, a dropped connection)
and `_delay_for` (execute it late); the tests' outages, injected 500/429s and slow answers are
built that way in tests/support/faults.py.

Not modelled: live/test data separation, the cancel time window (script refusals instead), Frontier
acting on its own (use ``add_order`` with ``stripe_objects.delayed(...)`` etc.), webhook delivery.
Made-up details are marked [inferred] below.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import functools
import json
import re
import secrets
import socket
import string
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

import stripe

from bot.sandbox import stripe_objects
from bot.sandbox.stripe_spec import load_spec

__all__ = ["DEFAULT_API_KEY", "PLATFORM_ACCOUNT", "ApiError", "Call", "FakeStripe", "HtmlPage"]

DEFAULT_API_KEY = "sk_test_fake_climate_bot_0000000000"
PLATFORM_ACCOUNT = "acct_1FakePlatform0000000000"

# Restricted-key permission names [inferred]: Stripe's real names follow "rak_<resource>_<level>"
# (seen in 403 messages, e.g. 'rak_charge_read'); the climate ones are not documented.
ORDER_READ = "climate_order_read"
ORDER_WRITE = "climate_order_write"
PRODUCT_READ = "climate_product_read"
SUPPLIER_READ = "climate_supplier_read"
EVENT_READ = "event_read"

# Stripe lists and retrieves events for 30 days only, then answers 404 for them.
EVENT_RETENTION_SECONDS = 30 * 24 * 60 * 60
MAX_EVENT_TYPES = 20

_ALNUM = string.ascii_letters + string.digits
_ORDERS = "/v1/climate/orders"
_PRODUCTS = "/v1/climate/products"
_SUPPLIERS = "/v1/climate/suppliers"
_EVENTS = "/v1/events"

# The vendored spec subset stops at the Climate paths; these are the Events API's parameters as
# stripe-python 16 (generated from the full spec) sends them.
_EXTRA_PARAMS: dict[tuple[str, str], frozenset[str]] = {
    (_EVENTS, "get"): frozenset(
        {
            "created",
            "delivery_success",
            "ending_before",
            "expand",
            "limit",
            "starting_after",
            "type",
            "types",
        }
    ),
    (_EVENTS + "/{id}", "get"): frozenset({"expand"}),
}


class _Headers(dict[str, str]):
    """A plain dict whose lookups ignore case, as HTTP header names do. Keys are kept lowercase."""

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__((k.lower(), v) for k, v in items)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return super().__contains__(key.lower() if isinstance(key, str) else key)

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.lower(), default)


@dataclass
class Call:
    """One HTTP request the fake received, and (once answered) what it sent back.

    ``params`` is the decoded query string plus form body (``metadata[k]=v`` → nested dicts,
    ``expand[0]=…`` → lists; values stay strings as on the wire). ``headers`` lookups ignore
    case. ``status`` is ``None`` while in flight and for connections dropped unanswered (see
    ``FakeStripe._intercept``).
    """

    method: str
    path: str
    params: dict[str, Any]
    headers: dict[str, str]
    at: float
    status: int | None = None
    response: Any = None  # the parsed JSON body sent back
    request_id: str | None = None
    replayed: bool = False  # answered from the idempotency store
    answered_at: float | None = None

    @property
    def account(self) -> str | None:
        """The account acted on: ``Stripe-Account`` (Connect), else the last account of
        ``Stripe-Context`` (what thin events' ``fetch_related_object`` sends), if any."""
        context = self.headers.get("stripe-context")
        return self.headers.get("stripe-account") or (
            context.rsplit("/", 1)[-1] if context else None
        )

    @property
    def context(self) -> str | None:
        """The ``Stripe-Context`` header, if any."""
        return self.headers.get("stripe-context")

    @property
    def idempotency_key(self) -> str | None:
        """The ``Idempotency-Key`` header, if any (stripe-python sends one on every POST)."""
        return self.headers.get("idempotency-key")


class ApiError(Exception):
    """An error answer in Stripe's shape. ``saved`` says whether the idempotency layer keeps it:
    Stripe saves results only once an endpoint began executing, not for parameter validation."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        saved: bool = True,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"type": type, "message": message}
        if code:
            self.body["code"] = code
            self.body["doc_url"] = f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"
        if param:
            self.body["param"] = param
        self.saved = saved
        self.headers = dict(headers or {})


def _invalid(message: str, *, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code, saved=False)


@dataclass
class _Saved:
    method: str
    path: str
    params: dict[str, Any]
    status: int | None = None  # None while the first request is still executing
    body: bytes = b""
    request_id: str = ""


@dataclass
class _Admitted:
    account: str
    slot: tuple[str, str] | None  # (account, idempotency key) reserved for this POST


@dataclass
class _Replay:
    status: int
    body: bytes
    headers: dict[str, str]


class HtmlPage(Exception):
    """An error answered as an HTML page, as a proxy or load balancer in front of the API does."""

    def __init__(self, status: int, html: str, headers: Mapping[str, str]) -> None:
        super().__init__(status)
        self.status = status
        self.html = html
        self.headers = {**headers, "Content-Type": "text/html; charset=utf-8"}


@dataclass
class _Account:
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    order_seq: dict[str, int] = field(default_factory=dict)


def _new_request_id() -> str:
    return "req_" + "".join(secrets.choice(_ALNUM) for _ in range(14))


def _mask(key: str, visible: int) -> str:
    # Stripe echoes keys as prefix + stars + tail, e.g. 'sk_test_********************1234'.
    match = re.match(r"^[a-z]+_(?:test_|live_)?", key)
    prefix = match.group(0) if match else key[:3]
    tail = key[-visible:] if len(key) > len(prefix) + visible else ""
    return prefix + "*" * max(len(key) - len(prefix) - len(tail), 0) + tail


def _parse_params(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Decode Stripe's bracket notation: ``a[b][c]=v``, ``list[0]=v`` / ``list[]=v``."""
    root: dict[str, Any] = {}
    for raw_key, value in pairs:
        match = re.fullmatch(r"([^\[\]]+)((?:\[[^\[\]]*\])*)", raw_key)
        if not match:
            raise _invalid(f"Invalid parameter name: {raw_key}", param=raw_key)
        parts = [match.group(1), *re.findall(r"\[([^\[\]]*)\]", match.group(2))]
        node = root
        for i, part in enumerate(parts):
            if part == "":
                part = str(len(node))  # "[]" appends
            if i == len(parts) - 1:
                node[part] = value
                break
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise _invalid(f"Invalid hash or array: {raw_key}", param=raw_key)
            node = child
    return _listify(root, top=True)


def _listify(node: Any, top: bool = False, key: str = "") -> Any:
    # Dicts keyed 0..n-1 are arrays on the wire, except metadata, whose keys are user data.
    if not isinstance(node, dict):
        return node
    converted = {k: _listify(v, key=k if top else key) for k, v in node.items()}
    if (
        not top
        and key != "metadata"
        and converted
        and all(k.isdigit() for k in converted)
        and sorted(int(k) for k in converted) == list(range(len(converted)))
    ):
        return [converted[str(i)] for i in range(len(converted))]
    return converted


@functools.cache
def _spec_params(template: str, method: str) -> frozenset[str]:
    """The request parameters the spec allows for an operation (query and form body)."""
    if (template, method) in _EXTRA_PARAMS:
        return _EXTRA_PARAMS[template, method]
    operation = load_spec()["paths"][template][method]
    names = {p["name"] for p in operation.get("parameters", []) if p.get("in") == "query"}
    body = operation.get("requestBody", {}).get("content", {})
    form = body.get("application/x-www-form-urlencoded", {}).get("schema", {})
    names |= set(form.get("properties", {}))
    return frozenset(names)


@functools.cache
def _expandable(schema: str) -> frozenset[str]:
    return frozenset(load_spec()["components"]["schemas"][schema].get("x-expandableFields", []))


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a client holding a keep-alive connection must not block close()
    allow_reuse_address = True
    fake: FakeStripe


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like api.stripe.com
    server: _Server
    timeout = 30  # idle keep-alive connections are dropped eventually

    def version_string(self) -> str:
        return "nginx"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests read fake.calls; stderr noise helps nobody

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without NODELAY, Nagle plus delayed ACKs
        # add ~40 ms to every keep-alive request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.fake._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.fake._track(self.connection, False)

    def _serve(self) -> None:
        self.server.fake._serve(self)

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _serve


class FakeStripe:
    """A Stripe API double for the Climate endpoints on ``http://127.0.0.1:<port>``.

    Starts serving on construction; call :meth:`close` (or use it as a context manager) when done.
    Seeded (unless ``seed=False``) with the fixture product
    ``climsku_frontier_offtake_portfolio_2027`` and its five suppliers. ``api_key`` is accepted
    as a full secret key for the platform account ``account_id``; add keys with
    :meth:`add_api_key`.
    """

    def __init__(
        self,
        api_key: str = DEFAULT_API_KEY,
        *,
        account_id: str = PLATFORM_ACCOUNT,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.api_key = api_key
        self.account_id = account_id
        self._clock = clock
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._closing = threading.Event()
        self._keys: dict[str, frozenset[str] | None] = {api_key: None}
        self._accounts: dict[str, _Account] = {account_id: _Account()}
        self._products: dict[str, dict[str, Any]] = {}
        self._suppliers: dict[str, dict[str, Any]] = {}
        self._seq = 0
        self._refusals: dict[tuple[str, str], tuple[str, str | None]] = {}
        self._idempotency: dict[tuple[str, str], _Saved] = {}
        self._calls: list[Call] = []
        self._events: list[dict[str, Any]] = []
        self._connections: set[socket.socket] = set()
        self.errors: list[str] = []  # tracebacks of bugs in the fake itself; tests assert empty
        if seed:
            self.add_product(stripe_objects.product())
        self._httpd = _Server((host, port), _Handler)
        self._httpd.fake = self
        self._thread = threading.Thread(
            # A short poll interval keeps close() (shutdown) fast.
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="FakeStripe",
            daemon=True,
        )
        self._thread.start()

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base address to give stripe-python: ``base_addresses={"api": fake.url}``."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def product_id(self) -> str:
        """Id of the seeded fixture product."""
        return stripe_objects.PRODUCT_ID

    def client(self, api_key: str | None = None, **kwargs: Any) -> stripe.StripeClient:
        """A real ``stripe.StripeClient`` aimed at this fake (``max_network_retries=0`` unless
        given). Other keyword arguments go to ``StripeClient`` (``stripe_account``,
        ``http_client``, …).
        """
        kwargs.setdefault("max_network_retries", 0)
        base = {**kwargs.pop("base_addresses", {}), "api": self.url}
        return stripe.StripeClient(api_key or self.api_key, base_addresses=base, **kwargs)

    def close(self) -> None:
        """Stop serving and drop open connections. Safe to call twice."""
        if self._closing.is_set():
            return
        self._closing.set()  # wakes handlers waiting out a delay (_delay_for)
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):  # the client may have gone already
                conn.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeStripe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _track(self, conn: socket.socket, alive: bool) -> None:
        with self._lock:
            if alive:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    # -- state -------------------------------------------------------------------------------

    def add_api_key(self, key: str, permissions: Iterable[str] | None = None) -> None:
        """Accept ``key``. ``permissions=None`` is a full secret key; otherwise a restricted key
        holding only those permissions (``climate_order_read``/``_write``,
        ``climate_product_read``, ``climate_supplier_read``; write implies read). An empty list
        gives a key that can do nothing.
        """
        with self._lock:
            self._keys[key] = None if permissions is None else frozenset(permissions)

    def add_account(self, account: str) -> None:
        """Connect a Stripe account, so ``Stripe-Account: account`` is accepted (with no orders)."""
        with self._lock:
            self._accounts.setdefault(account, _Account())

    def _account(self, account: str | None) -> _Account:
        acct = account or self.account_id
        if acct not in self._accounts:
            raise KeyError(f"unknown account {acct!r}; add_account() or add_order(account=) first")
        return self._accounts[acct]

    def add_order(self, order: Mapping[str, Any], account: str | None = None) -> dict[str, Any]:
        """Store (or replace, keeping its list position) an order for ``account`` (default: the
        platform); connects the account if needed. An expanded ``product`` is stored as its id,
        as Stripe does. Returns a copy of what is stored."""
        stored = copy.deepcopy(dict(order))
        if isinstance(stored.get("product"), dict):
            stored["product"] = stored["product"]["id"]
        with self._lock:
            acct = self._accounts.setdefault(account or self.account_id, _Account())
            if stored["id"] not in acct.order_seq:
                self._seq += 1
                acct.order_seq[stored["id"]] = self._seq
            acct.orders[stored["id"]] = stored
            self._changed.notify_all()
            return copy.deepcopy(stored)

    def add_product(self, product: Mapping[str, Any]) -> dict[str, Any]:
        """Add (or replace) a catalog product, shared by all accounts, and its suppliers."""
        stored = copy.deepcopy(dict(product))
        with self._lock:
            self._products[stored["id"]] = stored
            for sup in stored.get("suppliers", []):
                self._suppliers.setdefault(sup["id"], copy.deepcopy(sup))
            return copy.deepcopy(stored)

    def add_supplier(self, supplier: Mapping[str, Any]) -> dict[str, Any]:
        """Add (or replace) a supplier in the catalog."""
        stored = copy.deepcopy(dict(supplier))
        with self._lock:
            self._suppliers[stored["id"]] = stored
            return copy.deepcopy(stored)

    def orders(self, account: str | None = None) -> list[dict[str, Any]]:
        """Copies of ``account``'s orders (default: the platform), newest first as the API lists."""
        with self._lock:
            return copy.deepcopy(self._sorted_orders(self._account(account)))

    def get_order(self, order_id: str, account: str | None = None) -> dict[str, Any]:
        """A copy of one stored order; ``KeyError`` if ``account`` (default platform) lacks it."""
        with self._lock:
            return copy.deepcopy(self._account(account).orders[order_id])

    def products(self) -> list[dict[str, Any]]:
        """Copies of the catalog products."""
        with self._lock:
            return copy.deepcopy(list(self._products.values()))

    @property
    def events(self) -> list[dict[str, Any]]:
        """Snapshot events the fake generated (``climate.order.created``/``canceled`` from API
        calls) and those given to :meth:`add_event`, in the order they arrived, ready for
        ``stripe_objects.webhook_request``."""
        with self._lock:
            return copy.deepcopy(self._events)

    def add_event(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """Make a snapshot event (e.g. ``stripe_objects.event(...)``) visible to ``GET
        /v1/events``, as if Stripe had created it; an event with a known id replaces that one.

        It belongs to the account in its ``account`` field (the platform when absent), and, as at
        Stripe, is neither listed nor retrievable once its ``created`` is more than 30 days
        before the fake's clock. Returns a copy of what is stored.
        """
        stored = copy.deepcopy(dict(event))
        for key, kind in (("id", str), ("type", str), ("created", int)):
            if not isinstance(stored.get(key), kind):
                raise ValueError(f"an event needs a {kind.__name__} {key!r}")
        with self._lock:
            for i, existing in enumerate(self._events):
                if existing["id"] == stored["id"]:
                    self._events[i] = stored
                    break
            else:
                self._events.append(stored)
            return copy.deepcopy(stored)

    # -- scripting ---------------------------------------------------------------------------

    def refuse_cancel(
        self,
        order_id: str,
        message: str = "This order can no longer be canceled.",
        *,
        code: str | None = None,
        account: str | None = None,
    ) -> None:
        """Answer cancels of ``order_id`` with 400 ``invalid_request_error`` until lifted by
        :meth:`allow_cancel`.

        Stripe does not document the refusal's exact shape [inferred]; by default it has no
        ``code``, so code under test cannot depend on one.
        """
        with self._lock:
            self._refusals[(account or self.account_id, order_id)] = (message, code)

    def allow_cancel(self, order_id: str, account: str | None = None) -> None:
        """Lift a :meth:`refuse_cancel`."""
        with self._lock:
            self._refusals.pop((account or self.account_id, order_id), None)

    # -- recorded calls ----------------------------------------------------------------------

    @property
    def calls(self) -> list[Call]:
        """Every request received so far, oldest first (a snapshot list of live ``Call``s)."""
        with self._lock:
            return list(self._calls)

    def calls_to(self, path_prefix: str, method: str | None = None) -> list[Call]:
        """Recorded calls whose path starts with ``path_prefix`` (and, if given, use ``method``)."""
        return [
            c
            for c in self.calls
            if c.path.startswith(path_prefix) and (method is None or c.method == method.upper())
        ]

    def clear_calls(self) -> None:
        """Forget recorded calls (e.g. after test setup), keeping all other state."""
        with self._lock:
            self._calls.clear()

    def wait_for(
        self,
        match: str | Callable[[Call], bool] = "/v1/",
        *,
        method: str | None = None,
        count: int = 1,
        timeout: float = 5.0,
        answered: bool = True,
    ) -> list[Call]:
        """Block until ``count`` matching calls were received (and, if ``answered``, answered).

        ``match`` is a path prefix or a predicate. Returns the matching calls; raises
        ``TimeoutError`` listing what did arrive when ``timeout`` seconds pass first. Wakes on each
        request rather than sleeping, so it returns as soon as the condition holds.
        """

        def matching() -> list[Call]:
            found = []
            for c in self._calls:
                hit = match(c) if callable(match) else c.path.startswith(match)
                done = not answered or c.answered_at is not None
                if hit and done and (method is None or c.method == method.upper()):
                    found.append(c)
            return found

        deadline = time.monotonic() + timeout
        with self._changed:
            while len(found := matching()) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = ", ".join(f"{c.method} {c.path} -> {c.status}" for c in self._calls)
                    raise TimeoutError(
                        f"waited {timeout}s for {count} call(s) matching {match!r}; "
                        f"got {len(found)}. Calls: [{seen}]"
                    )
                self._changed.wait(remaining)
            return found

    # -- HTTP --------------------------------------------------------------------------------

    def _now(self) -> int:
        return int(self._clock())

    def _serve(self, handler: _Handler) -> None:
        split = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        headers = _Headers(handler.headers.items())
        parse_error: ApiError | None = None
        try:
            pairs = parse_qsl(split.query, keep_blank_values=True)
            if body:
                pairs += parse_qsl(body.decode("utf-8"), keep_blank_values=True)
            params = _parse_params(pairs)
        except ApiError as exc:
            params, parse_error = {}, exc
        except UnicodeDecodeError:
            params, parse_error = {}, _invalid("Invalid request body: not UTF-8")
        call = Call(handler.command, split.path, params, headers, time.time())
        request_id = _new_request_id()
        # Recording and admission (interception, auth, idempotency reservation) are one atomic
        # step: once wait_for() sees a POST, its idempotency key is already held.
        with self._changed:
            self._calls.append(call)
            try:
                admission = self._admit(call, parse_error)
            except (ApiError, HtmlPage) as err:
                admission = err
            except Exception:
                admission = self._internal_error()
            self._changed.notify_all()

        if admission is None:
            handler.close_connection = True  # no bytes at all: the client sees a dropped connection
            self._answered(call, None, None, request_id)
            return
        try:
            if isinstance(admission, HtmlPage):
                status, extra = admission.status, admission.headers
                payload = admission.html.encode("utf-8")
            elif isinstance(admission, ApiError):
                status, extra = admission.status, admission.headers
                payload = self._error_payload(admission, request_id)
            elif isinstance(admission, _Replay):
                status, payload, extra = admission.status, admission.body, admission.headers
                call.replayed = True
            else:
                status, payload, extra = self._run(call, admission, request_id)
        except Exception:
            err = self._internal_error()
            status, payload, extra = err.status, self._error_payload(err, request_id), {}
        response_headers = {
            "Content-Type": "application/json",
            "Content-Length": str(len(payload)),
            "Request-Id": request_id,
            "Stripe-Version": headers.get("stripe-version") or stripe_objects.API_VERSION,
            "Cache-Control": "no-cache, no-store",
            **extra,
        }
        if call.account:
            response_headers["Stripe-Account"] = call.account
        # Record before writing: once the client has its answer, the Call must already show it.
        self._answered(call, status, payload, request_id)
        handler.send_response(status)
        for name, value in response_headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(payload)

    def _internal_error(self) -> ApiError:
        # A bug in the fake itself: answer like Stripe's 500 and keep the traceback for the test.
        self.errors.append(traceback.format_exc())
        return ApiError(500, "FakeStripe internal error (see fake.errors)", type="api_error")

    def _answered(
        self, call: Call, status: int | None, payload: bytes | None, request_id: str
    ) -> None:
        with self._changed:
            call.status = status
            try:
                call.response = json.loads(payload) if payload else None
            except ValueError:  # an HTML page (HtmlPage): no JSON to show
                call.response = None
            call.request_id = request_id if status is not None else None
            call.answered_at = time.time()
            self._changed.notify_all()

    def _encode(self, obj: Any) -> bytes:
        # Stripe pretty-prints its JSON responses.
        return (json.dumps(obj, indent=2) + "\n").encode("utf-8")

    def _error_payload(self, err: ApiError, request_id: str) -> bytes:
        body = dict(err.body)
        mode = "test/" if not self.api_key.startswith(("sk_live_", "rk_live_")) else ""
        body["request_log_url"] = (
            f"https://dashboard.stripe.com/{mode}logs/{request_id}?t={self._now()}"
        )
        return self._encode({"error": body})

    def _admit(self, call: Call, parse_error: ApiError | None) -> _Admitted | _Replay | None:
        """Everything decided before an endpoint runs (state lock held). ``None`` = drop the
        connection; raises ``ApiError`` or ``HtmlPage`` for an error answer."""
        if self._intercept(call) == "drop":
            return None
        account = self._authenticate(call)
        if parse_error is not None:
            raise parse_error
        key = call.idempotency_key if call.method == "POST" else None
        if not key:
            return _Admitted(account, None)
        slot = (account, key)
        saved = self._idempotency.get(slot)
        if saved is None:
            self._idempotency[slot] = _Saved(call.method, call.path, call.params)
            return _Admitted(account, slot)
        if saved.status is None:
            raise ApiError(
                409,
                "There is currently another in-progress request using this idempotent key "
                "(that probably means you submitted twice, and the other request is still "
                f"going through): {key}. Please try again later.",
                type="idempotency_error",
                code="idempotency_key_in_use",
                saved=False,
            )
        if saved.path != call.path or saved.method != call.method:
            raise ApiError(
                400,
                "Keys for idempotent requests can only be used for the same endpoint they "
                f"were first used for ('{saved.method} {saved.path}' vs '{call.method} "
                f"{call.path}'). Try using a key other than '{key}' if you meant to execute "
                "a different request.",
                type="idempotency_error",
                saved=False,
            )
        if saved.params != call.params:
            raise ApiError(
                400,
                "Keys for idempotent requests can only be used with the same parameters they "
                f"were first used with. Try using a key other than '{key}' if you meant to "
                "execute a different request.",
                type="idempotency_error",
                saved=False,
            )
        return _Replay(
            saved.status,
            saved.body,
            {
                "Idempotency-Key": key,
                "Idempotent-Replayed": "true",
                "Original-Request": saved.request_id,
            },
        )

    def _intercept(self, call: Call) -> Literal["drop"] | None:
        """Answer `call` before the API sees it, or return None (always, here) to let it through.

        Consulted for every request once it is recorded, with the state lock (`_lock`) held,
        under which an override keeps its own state too; before authentication and the
        idempotency layer, as an overloaded front end answers. An override raises `ApiError`
        (a Stripe-shaped error) or `HtmlPage` (a proxy's page) to answer with it, or returns
        ``"drop"`` to close the connection without a byte.
        """
        return None

    def _delay_for(self, call: Call) -> float:
        """Seconds an admitted request waits before it executes (none, here).

        Called without the lock; a POST holds its idempotency key meanwhile, so a concurrent
        retry with that key gets Stripe's 409. `close()` ends every wait at once.
        """
        return 0.0

    def _authenticate(self, call: Call) -> str:
        """Check the API key and ``Stripe-Account``; return the account whose data is used."""
        auth = call.headers.get("authorization", "")
        key = ""
        if auth.lower().startswith("bearer "):
            key = auth[7:].strip()
        elif auth.lower().startswith("basic "):
            try:
                key = base64.b64decode(auth[6:].strip()).decode().split(":", 1)[0]
            except (ValueError, UnicodeDecodeError):
                key = auth
        elif auth:
            key = auth
        if not key:
            raise ApiError(
                401,
                "You did not provide an API key. You need to provide your API key in the "
                "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
                "YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for details, "
                "or we can help at https://support.stripe.com/.",
            )
        if key.startswith("pk_"):
            raise ApiError(
                401,
                "This API call cannot be made with a publishable API key. Please use a secret "
                "API key. You can find a list of your API keys at "
                "https://dashboard.stripe.com/account/apikeys.",
            )
        if key not in self._keys:
            raise ApiError(401, f"Invalid API Key provided: {_mask(key, 4)}")
        permissions = self._keys[key]
        account = call.account or self.account_id
        if account not in self._accounts:
            # [inferred] Stripe answers an unknown or unconnected Stripe-Account with a 403.
            raise ApiError(
                403,
                f"The provided key '{_mask(key, 4)}' does not have access to account "
                f"'{account}' (or that account does not exist). Application access may "
                "have been revoked.",
            )
        needed = self._permission_for(call)
        if permissions is not None and needed is not None:
            granted = needed in permissions or needed.replace("_read", "_write") in permissions
            if not granted:
                # Stripe's real 403 body: invalid_request_error, no code (see stripe-node #2246).
                raise ApiError(
                    403,
                    f"The provided key '{_mask(key, 6)}' does not have the required permissions "
                    f"for this endpoint on account '{account}'. Having the 'rak_{needed}' "
                    "permission would allow this request to continue.",
                )
        return account

    @staticmethod
    def _permission_for(call: Call) -> str | None:
        if call.path.startswith(_ORDERS):
            return ORDER_READ if call.method == "GET" else ORDER_WRITE
        if call.path.startswith(_PRODUCTS):
            return PRODUCT_READ
        if call.path.startswith(_SUPPLIERS):
            return SUPPLIER_READ
        if call.path.startswith(_EVENTS):
            return EVENT_READ
        return None

    def _run(
        self, call: Call, admitted: _Admitted, request_id: str
    ) -> tuple[int, bytes, dict[str, str]]:
        """Execute an admitted request and, for a POST with a key, save or release its result."""
        extra: dict[str, str] = {}
        keep = False
        try:
            try:
                status, payload = self._execute(call, admitted.account, request_id)
                keep = True
            except ApiError as err:
                # Stripe saves results once the endpoint started, but not validation failures.
                keep = err.saved
                status, payload, extra = (
                    err.status,
                    self._error_payload(err, request_id),
                    err.headers,
                )
        finally:
            if admitted.slot is not None:
                with self._lock:
                    if keep:
                        entry = self._idempotency[admitted.slot]
                        entry.status, entry.body, entry.request_id = status, payload, request_id
                    else:
                        self._idempotency.pop(admitted.slot, None)
        if admitted.slot is not None:
            extra = {**extra, "Idempotency-Key": admitted.slot[1], "Original-Request": request_id}
        return status, payload, extra

    def _execute(self, call: Call, account: str, request_id: str) -> tuple[int, bytes]:
        delay = self._delay_for(call)
        if delay > 0:
            # An Event wait, not sleep(): close() wakes it so teardown never waits out a delay.
            self._closing.wait(delay)
        route = self._route(call)
        if route is None:
            raise ApiError(
                404,
                f"Unrecognized request URL ({call.method}: {call.path}). Please see "
                "https://stripe.com/docs or we can help at https://support.stripe.com/.",
            )
        template, handler, path_id = route
        unknown = sorted(set(call.params) - _spec_params(template, call.method.lower()))
        if unknown:
            raise _invalid(
                f"Received unknown parameter: {unknown[0]}",
                param=unknown[0],
                code="parameter_unknown",
            )
        with self._lock:
            result = handler(call, account, path_id, request_id)
        return 200, self._encode(result)

    def _route(self, call: Call) -> tuple[str, Callable[..., Any], str | None] | None:
        routes: list[tuple[str, str, str, Callable[..., Any]]] = [
            ("GET", rf"^{_ORDERS}$", _ORDERS, self._list_orders),
            ("POST", rf"^{_ORDERS}$", _ORDERS, self._create_order),
            ("GET", rf"^{_ORDERS}/([^/]+)$", _ORDERS + "/{order}", self._retrieve_order),
            ("POST", rf"^{_ORDERS}/([^/]+)$", _ORDERS + "/{order}", self._update_order),
            ("POST", rf"^{_ORDERS}/([^/]+)/cancel$", _ORDERS + "/{order}/cancel", self._cancel),
            ("GET", rf"^{_PRODUCTS}$", _PRODUCTS, self._list_products),
            ("GET", rf"^{_PRODUCTS}/([^/]+)$", _PRODUCTS + "/{product}", self._retrieve_product),
            ("GET", rf"^{_SUPPLIERS}$", _SUPPLIERS, self._list_suppliers),
            (
                "GET",
                rf"^{_SUPPLIERS}/([^/]+)$",
                _SUPPLIERS + "/{supplier}",
                self._retrieve_supplier,
            ),
            ("GET", rf"^{_EVENTS}$", _EVENTS, self._list_events),
            ("GET", rf"^{_EVENTS}/([^/]+)$", _EVENTS + "/{id}", self._retrieve_event),
        ]
        for method, pattern, template, handler in routes:
            match = re.match(pattern, call.path)
            if match and method == call.method:
                return template, handler, match.group(1) if match.groups() else None
        return None

    # -- endpoint helpers --------------------------------------------------------------------

    def _sorted_orders(self, acct: _Account) -> list[dict[str, Any]]:
        # Newest first; among equal `created`, the later-added first (as Stripe's ids sort).
        return sorted(
            acct.orders.values(),
            key=lambda o: (o.get("created", 0), acct.order_seq[o["id"]]),
            reverse=True,
        )

    @staticmethod
    def _expand_list(params: Mapping[str, Any]) -> list[str]:
        expand = params.get("expand", [])
        if isinstance(expand, str):
            expand = [expand]
        if not isinstance(expand, list) or not all(isinstance(e, str) for e in expand):
            raise _invalid("Invalid array", param="expand")
        return expand

    def _check_expand(self, params: Mapping[str, Any], schema: str, prefix: str = "") -> set[str]:
        wanted = set()
        for item in self._expand_list(params):
            if not item.startswith(prefix) or item[len(prefix) :] not in _expandable(schema):
                raise _invalid(f"This property cannot be expanded ({item}).", param="expand")
            wanted.add(item[len(prefix) :])
        return wanted

    def _render_order(self, order: dict[str, Any], expand: set[str]) -> dict[str, Any]:
        out = copy.deepcopy(order)
        if "product" in expand and isinstance(out["product"], str):
            product = self._products.get(out["product"])
            if product is not None:
                out["product"] = copy.deepcopy(product)
        return out

    @staticmethod
    def _limit(params: Mapping[str, Any]) -> int:
        raw = params.get("limit", "10")
        try:
            limit = int(raw)
        except (TypeError, ValueError):
            raise _invalid(
                f"Invalid integer: {raw}", param="limit", code="parameter_invalid_integer"
            ) from None
        if not 1 <= limit <= 100:
            raise _invalid(
                "This value must be greater than or equal to 1 and less than or equal to 100.",
                param="limit",
                code="parameter_invalid_integer",
            )
        return limit

    def _paginate(
        self, items: list[dict[str, Any]], params: Mapping[str, Any], url: str, noun: str
    ) -> tuple[list[dict[str, Any]], bool]:
        """Stripe cursor pagination over ``items`` (already in list order)."""
        limit = self._limit(params)
        ids = [item["id"] for item in items]
        after, before = params.get("starting_after"), params.get("ending_before")
        if after and before:
            raise _invalid(
                "You may only specify one of these parameters: ending_before, starting_after.",
                code="parameters_exclusive",
            )
        for name, cursor in (("starting_after", after), ("ending_before", before)):
            if cursor and cursor not in ids:
                raise ApiError(
                    400,
                    f"No such {noun}: '{cursor}'",
                    code="resource_missing",
                    param=name,
                    saved=False,
                )
        if before:
            end = ids.index(before)
            start = max(0, end - limit)
            return items[start:end], start > 0
        start = ids.index(after) + 1 if after else 0
        page = items[start : start + limit]
        return page, start + limit < len(items)

    def _order_or_404(self, acct: _Account, order_id: str) -> dict[str, Any]:
        order = acct.orders.get(order_id)
        if order is None:
            raise ApiError(
                404, f"No such climate order: '{order_id}'", code="resource_missing", param="id"
            )
        return order

    @staticmethod
    def _metadata(value: Any, existing: Mapping[str, str]) -> dict[str, str]:
        if value == "":
            return {}  # metadata="" unsets every key
        if not isinstance(value, dict):
            raise _invalid("Invalid hash", param="metadata")
        merged = dict(existing)
        for k, v in value.items():
            if not isinstance(v, str):
                raise _invalid(f"Invalid value for metadata[{k}]", param=f"metadata[{k}]")
            if len(k) > 40:
                raise _invalid(
                    f"Metadata keys can be at most 40 characters long: {k}", param="metadata"
                )
            if len(v) > 500:
                raise _invalid(
                    f"Metadata values can be at most 500 characters long: {k}",
                    param=f"metadata[{k}]",
                )
            if v == "":
                merged.pop(k, None)  # an empty value unsets the key
            else:
                merged[k] = v
        if len(merged) > 50:
            raise _invalid("Metadata can have at most 50 keys.", param="metadata")
        return merged

    @staticmethod
    def _beneficiary(value: Any) -> dict[str, str] | None:
        if value == "":
            return None  # beneficiary="" clears it
        if not isinstance(value, dict):
            raise _invalid("Invalid hash", param="beneficiary")
        extra = sorted(set(value) - {"public_name"})
        if extra:
            raise _invalid(
                f"Received unknown parameter: beneficiary[{extra[0]}]",
                param=f"beneficiary[{extra[0]}]",
                code="parameter_unknown",
            )
        name = value.get("public_name")
        if not name:
            raise _invalid(
                "Missing required param: beneficiary[public_name].",
                param="beneficiary[public_name]",
                code="parameter_missing",
            )
        return {"public_name": name}

    def _emit(self, type_: str, order: dict[str, Any], account: str, call: Call, req: str) -> None:
        self._events.append(
            stripe_objects.event(
                type_,
                order,
                created=self._now(),
                account=account if account != self.account_id else None,
                request_id=req,
                idempotency_key=call.idempotency_key,
                api_version=call.headers.get("stripe-version") or stripe_objects.API_VERSION,
            )
        )

    # -- endpoints (called with the state lock held) -----------------------------------------

    def _list_orders(self, call: Call, account: str, _id: None, _req: str) -> dict[str, Any]:
        expand = self._check_expand(call.params, "climate.order", prefix="data.")
        acct = self._accounts[account]
        page, more = self._paginate(
            self._sorted_orders(acct), call.params, _ORDERS, "climate order"
        )
        return {
            "object": "list",
            "data": [self._render_order(o, expand) for o in page],
            "has_more": more,
            "url": _ORDERS,
        }

    def _retrieve_order(self, call: Call, account: str, order_id: str, _req: str) -> dict:
        expand = self._check_expand(call.params, "climate.order")
        return self._render_order(self._order_or_404(self._accounts[account], order_id), expand)

    def _create_order(self, call: Call, account: str, _id: None, req: str) -> dict[str, Any]:
        params = call.params
        expand = self._check_expand(params, "climate.order")
        product_id = params.get("product")
        if not product_id:
            raise _invalid(
                "Missing required param: product.", param="product", code="parameter_missing"
            )
        has_tons, has_amount = "metric_tons" in params, "amount" in params
        if has_tons and has_amount:
            raise _invalid(
                "You may only specify one of these parameters: amount, metric_tons.",
                code="parameters_exclusive",
            )
        if not (has_tons or has_amount):
            raise _invalid(
                "You must specify one of these parameters: amount, metric_tons.",
                param="metric_tons",
                code="parameter_missing",
            )
        currency = str(params.get("currency") or "usd").lower()
        beneficiary = self._beneficiary(params["beneficiary"]) if "beneficiary" in params else None
        metadata = self._metadata(params.get("metadata", {}), {})
        product = self._products.get(product_id)
        if product is None:
            raise ApiError(
                400,
                f"No such climate product: '{product_id}'",
                code="resource_missing",
                param="product",
            )
        price = product["current_prices_per_metric_ton"].get(currency)
        if price is None:
            raise ApiError(
                400,
                f"The product {product_id} is not available in currency {currency}.",
                param="currency",
            )
        if has_tons:
            try:
                tons = Decimal(params["metric_tons"])
            except (InvalidOperation, TypeError):
                raise _invalid(
                    f"Invalid decimal: {params['metric_tons']}", param="metric_tons"
                ) from None
            if not tons.is_finite() or tons <= 0:
                raise _invalid("metric_tons must be greater than 0.", param="metric_tons")
            tons_text = stripe_objects.tons_str(params["metric_tons"])
        else:
            # [inferred] `amount` is documented only as "requested amount of carbon removal
            # units"; here it is the money to spend (minor units), converted to whole
            # thousandths of a ton at the per-ton total.
            try:
                amount = int(params["amount"])
            except (TypeError, ValueError):
                raise _invalid(
                    f"Invalid integer: {params['amount']}",
                    param="amount",
                    code="parameter_invalid_integer",
                ) from None
            tons = (Decimal(amount) / price["amount_total"]).quantize(Decimal("0.001"), ROUND_DOWN)
            if tons <= 0:
                raise _invalid("amount is too small to buy any carbon removal.", param="amount")
            tons_text = stripe_objects.tons_str(tons)
        available = Decimal(product["metric_tons_available"])
        if tons > available:
            raise ApiError(
                400,
                f"Only {product['metric_tons_available']} metric tons of {product_id} are "
                "available.",
                param="metric_tons" if has_tons else "amount",
            )
        now = self._now()
        order = stripe_objects.order(
            "confirmed",
            product=product_id,
            metric_tons=tons_text,
            currency=currency,
            id=stripe_objects.new_id("climorder"),
            created=now,
            livemode="_live_" in call.headers.get("authorization", ""),
            beneficiary=beneficiary,
            metadata=metadata,
            expected_delivery_year=product.get("delivery_year") or time.gmtime(now).tm_year,
            **stripe_objects.order_amounts(price, tons_text),
        )
        product["metric_tons_available"] = stripe_objects.tons_str(available - tons)
        self.add_order(order, account)
        self._emit("climate.order.created", order, account, call, req)
        return self._render_order(order, expand)

    def _update_order(self, call: Call, account: str, order_id: str, _req: str) -> dict:
        expand = self._check_expand(call.params, "climate.order")
        order = self._order_or_404(self._accounts[account], order_id)
        if "beneficiary" in call.params:
            beneficiary = self._beneficiary(call.params["beneficiary"])
            if beneficiary is None:
                order.pop("beneficiary", None)
            else:
                order["beneficiary"] = beneficiary
        if "metadata" in call.params:
            order["metadata"] = self._metadata(call.params["metadata"], order["metadata"])
        return self._render_order(order, expand)

    def _cancel(self, call: Call, account: str, order_id: str, req: str) -> dict[str, Any]:
        expand = self._check_expand(call.params, "climate.order")
        order = self._order_or_404(self._accounts[account], order_id)
        # [inferred] Stripe does not document these refusals; 400 invalid_request_error is its
        # convention for a request the object's state does not allow.
        if order["status"] == "canceled":
            raise ApiError(400, f"The climate order {order_id} has already been canceled.")
        if order["status"] == "delivered":
            raise ApiError(
                400, f"The climate order {order_id} has been delivered and cannot be canceled."
            )
        refusal = self._refusals.get((account, order_id))
        if refusal is not None:
            raise ApiError(400, refusal[0], code=refusal[1])
        order["status"] = "canceled"
        order["cancellation_reason"] = "requested"
        order["canceled_at"] = self._now()
        product = (
            self._products.get(order["product"]) if isinstance(order["product"], str) else None
        )
        if product is not None:
            # The reserved tons go back on sale.
            product["metric_tons_available"] = stripe_objects.tons_str(
                Decimal(product["metric_tons_available"]) + Decimal(order["metric_tons"])
            )
        self._emit("climate.order.canceled", order, account, call, req)
        return self._render_order(order, expand)

    def _list_products(self, call: Call, _acct: str, _id: None, _req: str) -> dict[str, Any]:
        self._check_expand(call.params, "climate.product", prefix="data.")
        items = sorted(self._products.values(), key=lambda p: p.get("created", 0), reverse=True)
        page, more = self._paginate(items, call.params, _PRODUCTS, "climate product")
        return {"object": "list", "data": copy.deepcopy(page), "has_more": more, "url": _PRODUCTS}

    def _retrieve_product(self, call: Call, _acct: str, product_id: str, _req: str) -> dict:
        return self._catalog_entry(call, "climate.product", self._products, product_id)

    def _list_suppliers(self, call: Call, _acct: str, _id: None, _req: str) -> dict[str, Any]:
        self._check_expand(call.params, "climate.supplier", prefix="data.")
        items = list(self._suppliers.values())
        page, more = self._paginate(items, call.params, _SUPPLIERS, "climate supplier")
        return {"object": "list", "data": copy.deepcopy(page), "has_more": more, "url": _SUPPLIERS}

    def _retrieve_supplier(self, call: Call, _acct: str, supplier_id: str, _req: str) -> dict:
        return self._catalog_entry(call, "climate.supplier", self._suppliers, supplier_id)

    def _catalog_entry(
        self, call: Call, schema: str, catalog: Mapping[str, dict[str, Any]], entry_id: str
    ) -> dict[str, Any]:
        """A copy of one product or supplier (`schema` names its kind); 404 when unknown."""
        self._check_expand(call.params, schema)
        entry = catalog.get(entry_id)
        if entry is None:
            noun = schema.replace(".", " ")  # "climate.product" -> "climate product"
            raise ApiError(
                404, f"No such {noun}: '{entry_id}'", code="resource_missing", param="id"
            )
        return copy.deepcopy(entry)

    def _visible_events(self, account: str) -> list[dict[str, Any]]:
        """The account's events Stripe still keeps, newest first (later-added first on ties)."""
        oldest = self._now() - EVENT_RETENTION_SECONDS
        mine = [
            (e["created"], i, e)
            for i, e in enumerate(self._events)
            if (e.get("account") or self.account_id) == account and e["created"] >= oldest
        ]
        return [e for _, _, e in sorted(mine, key=lambda t: t[:2], reverse=True)]

    @staticmethod
    def _created_filter(value: Any) -> Callable[[int], bool]:
        """``created=<ts>`` or ``created[gt|gte|lt|lte]=<ts>`` as a predicate on a timestamp."""
        if isinstance(value, str):
            value = {"eq": value}
        if not isinstance(value, dict):
            raise _invalid("Invalid hash", param="created")
        bounds: dict[str, int] = {}
        for op, raw in value.items():
            name = "created" if op == "eq" else f"created[{op}]"
            if op not in ("eq", "gt", "gte", "lt", "lte"):
                raise _invalid(
                    f"Received unknown parameter: {name}", param=name, code="parameter_unknown"
                )
            try:
                bounds[op] = int(raw)
            except (TypeError, ValueError):
                raise _invalid(
                    f"Invalid integer: {raw}", param=name, code="parameter_invalid_integer"
                ) from None
        checks = {
            "eq": lambda t, b: t == b,
            "gt": lambda t, b: t > b,
            "gte": lambda t, b: t >= b,
            "lt": lambda t, b: t < b,
            "lte": lambda t, b: t <= b,
        }
        return lambda ts: all(checks[op](ts, bound) for op, bound in bounds.items())

    @staticmethod
    def _type_filter(params: Mapping[str, Any]) -> Callable[[str], bool]:
        """``type`` (one name, ``*`` wildcards) or ``types[]`` (up to 20 exact names)."""
        if "type" in params and "types" in params:
            raise _invalid(
                "You may only specify one of these parameters: type, types.",
                code="parameters_exclusive",
            )
        if "type" in params:
            pattern = params["type"]
            if not isinstance(pattern, str):
                raise _invalid("Invalid string", param="type")
            regex = re.compile(".*".join(re.escape(part) for part in pattern.split("*")))
            return lambda t: regex.fullmatch(t) is not None
        if "types" in params:
            types = params["types"]
            if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
                raise _invalid("Invalid array", param="types")
            if len(types) > MAX_EVENT_TYPES:
                # [inferred] message: Stripe documents the limit, not the error's wording.
                raise _invalid(
                    f"You may pass at most {MAX_EVENT_TYPES} event types.", param="types"
                )
            wanted = set(types)
            return lambda t: t in wanted
        return lambda t: True

    def _list_events(self, call: Call, account: str, _id: None, _req: str) -> dict[str, Any]:
        params = call.params
        self._check_expand(params, "event", prefix="data.")
        type_ok = self._type_filter(params)
        created_ok = self._created_filter(params["created"]) if "created" in params else None
        delivered = params.get("delivery_success")
        if delivered not in (None, "true", "false"):
            raise _invalid(f"Invalid boolean: {delivered}", param="delivery_success")
        items = [
            e
            for e in self._visible_events(account)
            if type_ok(e["type"])
            and (created_ok is None or created_ok(e["created"]))
            # [inferred] "delivered" = no endpoint still pending; the fake delivers nothing.
            and (delivered is None or (e.get("pending_webhooks", 0) == 0) == (delivered == "true"))
        ]
        page, more = self._paginate(items, params, _EVENTS, "event")
        return {"object": "list", "data": copy.deepcopy(page), "has_more": more, "url": _EVENTS}

    def _retrieve_event(self, call: Call, account: str, event_id: str, _req: str) -> dict:
        self._check_expand(call.params, "event")
        for e in self._visible_events(account):
            if e["id"] == event_id:
                return copy.deepcopy(e)
        raise ApiError(404, f"No such event: '{event_id}'", code="resource_missing", param="id")
