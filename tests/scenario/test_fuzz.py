"""Fuzz the two doors the outside world knocks on: whatever arrives, signed or not, never gets a
5xx and never raises in the process (no ERROR record in the log), and nothing unsigned is
recorded or acted on.

`/stripe/webhook` gets random JSON, near-valid Climate events (keys missing, wrong types, huge
strings, unicode, deep nesting), random text and random bytes; what it acknowledges is then
delivered by the worker, which must not crash or park anything either. `/slack/events` gets
button clicks, slash commands and Events API callbacks with hostile values, and junk. Bodies are
signed with the right secret, the wrong one, a stale timestamp, a garbage header, or not at all.

Each bug the fuzz found is pinned by an `xfail(strict=True)` test whose reason names it and whose
`@example` reproduces it deterministically: once the bug is fixed the test passes, strict xfail
fails the run, and the marker must go.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import itertools
import json
import logging
import math
import time
import urllib.parse
from concurrent.futures import Executor, Future, wait
from typing import Any

import pytest
import requests
from hypothesis import (
    HealthCheck,
    assume,
    currently_in_test_context,
    event,
    example,
    given,
    settings,
)
from hypothesis import strategies as st

from bot.cards import ORDERS_NEXT_ACTION
from bot.model import ACCEPT_ACTION, CANCEL_ACTION
from bot.sandbox import stripe_objects as so
from bot.sandbox.slack_requests import (
    block_actions_body,
    event_callback_body,
    slash_command_body,
    view_submission_body,
)
from tests.support.bot import SIGNING_SECRET, WEBHOOK_SECRET

FUZZ = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # one bot serves every example, on purpose
        HealthCheck.too_slow,
        HealthCheck.large_base_example,
        HealthCheck.data_too_large,
    ],
)

UNSIGNED = ("wrong_secret", "stale", "none", "garbage")
SIGNINGS = ("right", *UNSIGNED)
mostly_signed = st.one_of(st.just("right"), st.sampled_from(UNSIGNED))  # half signed right
fresh_ids = itertools.count()


# -- what arrives ----------------------------------------------------------------------------

HOSTILE_FRAGMENTS = ["<!channel>", "climorder_x", "\u202e", "💥", "\x00", "é", "\\", "%", "&"]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),  # NaN and Infinity too: json.dumps writes them, json.loads reads them back
    st.text(),
    st.sampled_from(HOSTILE_FRAGMENTS),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
hostile_text = st.one_of(
    st.text(max_size=60),
    st.lists(st.sampled_from(HOSTILE_FRAGMENTS), max_size=8).map("".join),
    # Up to 200,000 characters: some bodies end up over the 1 MB limit (413), most under it.
    st.tuples(st.sampled_from(HOSTILE_FRAGMENTS), st.integers(0, 200_000)).map(
        lambda pair: pair[0] * pair[1]
    ),
)
DELETE = object()
hostile_values = st.one_of(
    st.just(DELETE),
    json_values,
    hostile_text,
    st.integers(1, 60).map(lambda depth: json.loads("[" * depth + "]" * depth)),
)


def same_type_as(value: Any) -> st.SearchStrategy:
    """Hostile values of the type Slack's schema gives this field (strings stay strings)."""
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return st.integers()
    if isinstance(value, str):
        return hostile_text
    if value is None:
        return st.one_of(st.none(), hostile_text)
    return st.just(value)


def paths_in(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value inside a JSON document."""
    paths = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            paths += paths_in(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            paths += paths_in(value, (*prefix, index))
    return paths


def value_at(document: Any, path: tuple) -> Any:
    for step in path:
        document = document[step]
    return document


def replace_at(document: Any, path: tuple, value: Any) -> None:
    """Put `value` at `path` (DELETE removes it); a path an earlier change removed is skipped."""
    try:
        parent = value_at(document, path[:-1])
    except (KeyError, IndexError, TypeError):
        return
    last = path[-1]
    if isinstance(parent, list) and not (isinstance(last, int) and last < len(parent)):
        return
    if not isinstance(parent, dict | list):
        return
    if value is not DELETE:
        parent[last] = value
    elif isinstance(parent, dict):
        parent.pop(last, None)
    else:
        del parent[last]


def _climate_events() -> list[dict[str, Any]]:
    """One valid event of each Climate type, to break."""
    product = so.product()
    order = so.order(product=product)
    return [
        so.event("climate.order.created", order, created=1000),
        so.event("climate.order.delayed", so.delayed(order, 2030, at=2000), created=2000),
        so.event(
            "climate.order.product_substituted",
            so.substituted(order, so.product(), at=2100),
            created=2100,
            previous_attributes={"product": product["id"]},
        ),
        so.event("climate.order.delivered", so.order(status="delivered", id=order["id"])),
        so.event("climate.order.canceled", so.order(status="canceled", id=order["id"])),
        so.event("climate.product.created", product, created=1000),
        so.event(
            "climate.product.pricing_updated",
            product,
            created=3000,
            previous_attributes={"current_prices_per_metric_ton": {"usd": 1}},
        ),
    ]


CLIMATE_EVENTS = _climate_events()


@st.composite
def near_valid_events(draw) -> dict[str, Any]:
    """A real Climate event with one to four fields deleted or replaced by something hostile."""
    event = copy.deepcopy(draw(st.sampled_from(CLIMATE_EVENTS)))
    event["id"] = f"evt_fuzz{next(fresh_ids)}"  # fresh, unless a change below hits it
    for path in draw(st.lists(st.sampled_from(paths_in(event)), min_size=1, max_size=4)):
        replace_at(event, path, draw(hostile_values))
    return event


@st.composite
def reshaped(draw, document: dict[str, Any], keep: tuple[str, ...] = ()) -> dict[str, Any]:
    """`document` with a few fields deleted or replaced by values of any type."""
    document = copy.deepcopy(document)
    paths = [p for p in paths_in(document) if p[0] not in keep]
    for path in draw(st.lists(st.sampled_from(paths), max_size=4)):
        replace_at(document, path, draw(hostile_values))
    return document


@st.composite
def retexted(draw, document: dict[str, Any], keep: tuple[str, ...] = ()) -> dict[str, Any]:
    """`document` with a few of its scalar fields given hostile values of the same type."""
    document = copy.deepcopy(document)
    leaves = [
        p
        for p in paths_in(document)
        if p[0] not in keep and not isinstance(value_at(document, p), dict | list)
    ]
    for path in draw(st.lists(st.sampled_from(leaves), max_size=5)):
        replace_at(document, path, draw(same_type_as(value_at(document, path))))
    return document


def click_payload(response_url: str, action_id: str, value: str, user: str) -> dict[str, Any]:
    body = block_actions_body(
        action_id=action_id, value=value, user_id=user, response_url=response_url
    )
    return json.loads(urllib.parse.parse_qs(body)["payload"][0])


def as_form(payload: dict[str, Any]) -> bytes:
    return urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()


action_ids = st.one_of(
    st.sampled_from([ACCEPT_ACTION, CANCEL_ACTION, ORDERS_NEXT_ACTION]), st.text(max_size=20)
)
action_values = st.one_of(
    st.sampled_from(["climorder_fuzz", "climorder_", "<!channel>", "", "climorder_" + "a" * 300]),
    hostile_text,
    json_values.map(json.dumps),
)
users = st.one_of(st.sampled_from(["U0ALICE", "U0BOB", "U0NOBODY", ""]), st.text(max_size=12))
callback_types = st.one_of(
    st.sampled_from(["event_callback", "url_verification", "app_rate_limited"]),
    st.text(max_size=20),
)
inner_events = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("app_home_opened"), "user": st.sampled_from(["U0ALICE", "U0BOB"])},
        optional={"tab": st.one_of(st.sampled_from(["home", "messages"]), hostile_text)},
    ),
    st.fixed_dictionaries(
        {"type": st.one_of(st.sampled_from(["message", "app_mention"]), st.text(max_size=20))},
        optional={
            "user": users,
            "channel": hostile_text,
            "text": hostile_text,
            "ts": hostile_text,
            "event_ts": hostile_text,
        },
    ),
)


def signed_stripe_headers(body: bytes, how: str) -> dict[str, str]:
    """The Stripe-Signature header for `body`, signed as `how` says."""
    timestamp = int(time.time()) - (400 if how == "stale" else 0)
    secret = WEBHOOK_SECRET if how in ("right", "stale") else "whsec_someone_else"
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    headers = {"Content-Type": "application/json; charset=utf-8"}
    if how == "garbage":
        headers["Stripe-Signature"] = f"t=yesterday,v1={mac.hexdigest()[:7]},v0=,,="
    elif how != "none":
        headers["Stripe-Signature"] = f"t={timestamp},v1={mac.hexdigest()}"
    return headers


def signed_slack_headers(body: bytes, how: str, content_type: str | None = None) -> dict:
    """Slack's v0 signature headers for `body`, signed as `how` says."""
    timestamp = int(time.time()) - (400 if how == "stale" else 0)
    secret = SIGNING_SECRET if how in ("right", "stale") else "not-the-signing-secret"
    mac = hmac.new(secret.encode(), f"v0:{timestamp}:".encode() + body, hashlib.sha256)
    if content_type is None:
        json_body = body.lstrip().startswith(b"{")
        content_type = "application/json" if json_body else "application/x-www-form-urlencoded"
    headers = {"Content-Type": content_type}
    if how == "garbage":
        headers.update({"X-Slack-Request-Timestamp": str(timestamp), "X-Slack-Signature": "v0="})
    elif how != "none":
        headers.update(
            {
                "X-Slack-Request-Timestamp": str(timestamp),
                "X-Slack-Signature": "v0=" + mac.hexdigest(),
            }
        )
    return headers


# -- what must hold --------------------------------------------------------------------------


def label(outcome: str) -> None:
    """Count outcomes for `pytest --hypothesis-show-statistics` (inside a fuzz run only)."""
    if currently_in_test_context():
        event(outcome)


def errors_logged(caplog) -> list[str]:
    """ERROR records from anywhere in the process: Flask's 500s, Bolt's listener failures, ours."""
    formatter = logging.Formatter()
    return [
        f"{r.name}: {r.getMessage()}\n{formatter.formatException(r.exc_info) if r.exc_info else ''}"
        for r in caplog.records
        if r.levelno >= logging.ERROR
    ]


class SettlingExecutor(Executor):
    """Bolt's listener executor, remembering what it ran so a test can wait for all of it."""

    def __init__(self, inner: Executor) -> None:
        self.inner = inner
        self.futures: list[Future] = []

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future = self.inner.submit(fn, *args, **kwargs)
        self.futures.append(future)
        return future

    def settle(self, timeout: float = 30.0) -> None:
        """Wait until every listener run so far has finished (their errors are then logged)."""
        _, pending = wait(self.futures, timeout=timeout)
        assert not pending, f"{len(pending)} listener runs still going after {timeout}s"


@pytest.fixture
def listeners(running) -> SettlingExecutor:
    """Bolt runs listeners after the ack, on its executor: track them to wait for them."""
    runner = running.bot.bolt.listener_runner
    runner.listener_executor = SettlingExecutor(runner.listener_executor)
    return runner.listener_executor


@pytest.fixture
def log(caplog):
    caplog.set_level(logging.WARNING)
    return caplog


def post_webhook(running, log, body: bytes, how: str, **headers: str) -> requests.Response:
    """POST `body` to /stripe/webhook; check what must hold whatever it is."""
    log.clear()  # this example's records only
    before = running.bot.storage.count_events()
    response = requests.post(
        running.url + "/stripe/webhook",
        data=body,
        headers={**signed_stripe_headers(body, how), **headers},
        timeout=30,
    )
    label(f"{how}: {response.status_code}")
    assert response.status_code < 500, (response.status_code, response.text[:300])
    assert errors_logged(log) == []
    if how != "right":
        assert response.status_code in (400, 413)
        assert running.bot.storage.count_events() == before, "an unverified body was recorded"
    return response


def post_slack(
    running, listeners, log, body: bytes, how: str, content_type: str | None = None, **headers
) -> requests.Response:
    """POST `body` to /slack/events, wait for the listeners it started; check what must hold."""
    log.clear()
    response = requests.post(
        running.url + "/slack/events",
        data=body,
        headers={**signed_slack_headers(body, how, content_type), **headers},
        timeout=30,
    )
    label(f"{how}: {response.status_code}")
    assert response.status_code < 500, (response.status_code, response.text[:300])
    listeners.settle()
    assert errors_logged(log) == []
    return response


@pytest.fixture
def delayed_order(running, fake_stripe):
    """An order awaiting a decision, so fuzzed clicks and commands reach the decision path."""
    order = so.delayed(so.order(id="climorder_fuzz"), 2030, at=int(time.time()))
    fake_stripe.add_order(order)
    assert running.send_event(so.event("climate.order.delayed", order)).status_code == 200
    running.deliver()
    return order


# -- /stripe/webhook -------------------------------------------------------------------------


@FUZZ
@given(document=json_values, how=mostly_signed)
def test_random_json_webhook_bodies_never_get_a_5xx(running, log, document, how):
    response = post_webhook(running, log, json.dumps(document).encode(), how)
    if not (isinstance(document, dict) and isinstance(document.get("id"), str)):
        assert response.status_code == 400  # not an event


@settings(FUZZ, max_examples=200)
@given(event=near_valid_events(), how=mostly_signed, indent=st.sampled_from([None, 2]))
def test_near_valid_climate_events_are_refused_or_acknowledged_then_delivered_without_a_crash(
    running, log, event, how, indent
):
    body = json.dumps(event, indent=indent, ensure_ascii=indent is None).encode()
    response = post_webhook(running, log, body, how)
    assert response.status_code in (200, 400, 413)
    if response.status_code == 200:
        assert response.json()["outcome"] in ("queued", "duplicate", "ignored")
    # What was acknowledged reaches Slack: the worker neither crashes nor parks it.
    running.deliver()
    storage = running.bot.storage
    assert storage.outbox_counts().get("pending", 0) == 0, storage.outbox_counts()
    assert [f.last_error for f in storage.failures()] == []
    assert errors_logged(log) == []


@FUZZ
@given(text=st.text(max_size=300), how=mostly_signed)
@example(text="", how="right")
@example(text="{", how="right")
@example(text='{"id": "evt_1", "type": "climate.order.created", "created": 1e400}', how="right")
@example(text='{"id": "evt_1", "type": "climate.order.created", "created": true}', how="right")
def test_random_text_webhook_bodies_never_get_a_5xx(running, log, text, how):
    response = post_webhook(running, log, text.encode(), how)
    assert response.status_code == 400 or response.json()["received"] is True


@FUZZ
@given(body=st.binary(max_size=300), how=st.sampled_from(SIGNINGS))
@example(body=b"\xff\xfe{}", how="none")
def test_random_byte_webhook_bodies_never_get_a_5xx(running, log, body, how):
    post_webhook(running, log, body, how)


# What an HTTP client can put in a header at all: no control characters, no outer whitespace.
header_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=80
).map(str.strip)


@FUZZ
@given(header=header_text)
@example(header="t=1700000000,v1=é")
def test_random_stripe_signature_headers_never_get_a_5xx(running, log, header):
    body = json.dumps(so.event("climate.order.created", so.order())).encode()
    # HTTP headers are bytes: send the UTF-8 of `header`, as a hostile client can.
    raw_header = header.encode("utf-8").decode("latin-1")
    response = post_webhook(running, log, body, "none", **{"Stripe-Signature": raw_header})
    assert response.status_code == 400


@pytest.mark.parametrize("outer", ["[]", '{"id": "evt_1", "type": "x", "created": 1, "a": []}'])
def test_deeply_nested_signed_webhook_body_gets_a_400(running, log, outer):
    depth = 100_000
    body = outer.replace("[]", "[" * depth + "]" * depth).encode()
    assert post_webhook(running, log, body, "right").status_code == 400


# Numbers climate-bot cannot keep: past SQLite's signed 64 bits, or not finite (Python's json
# reads NaN, Infinity and 1e400). Each such value anywhere in an event is a 400 naming its field.
INT64 = (-(2**63), 2**63 - 1)
beyond_64_bits = st.one_of(
    st.integers(min_value=INT64[1] + 1),
    st.integers(max_value=INT64[0] - 1),
    st.sampled_from([10**19, -(10**19), 10**30, 2**63, -(2**63) - 1]),
    st.sampled_from([math.inf, -math.inf, math.nan]),
)
# Within 64 bits, at either end of it or of the spans of timestamps and years: kept (200), or a
# 400 naming the field when it is a timestamp or year no moment Stripe stamps can be.
within_64_bits = st.one_of(
    st.integers(*INT64),
    st.sampled_from([*INT64, -1, 0, 1969, 2101, 4_133_980_799, 4_133_980_800, 10**15]),
    st.floats(allow_nan=False, allow_infinity=False),
)


def is_beyond_64_bits(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    return not INT64[0] <= value <= INT64[1]


def numeric_paths(document: Any) -> list[tuple]:
    return [
        p
        for p in paths_in(document)
        if isinstance(value_at(document, p), int | float)
        and not isinstance(value_at(document, p), bool)
    ]


def dotted(path: tuple) -> str:
    """A path as the 400 names it: `data.object.delivery_details[0].delivered_at`."""
    out = ""
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else step)
    return out


@st.composite
def events_with_hostile_numbers(draw) -> tuple[dict[str, Any], list[tuple], bool]:
    """A valid Climate event with one to three of its numbers replaced; returns it, the paths
    replaced, and whether one of them now holds a number beyond 64 bits or not finite."""
    event = copy.deepcopy(draw(st.sampled_from(CLIMATE_EVENTS)))
    event["id"] = f"evt_number{next(fresh_ids)}"
    paths = draw(
        st.lists(st.sampled_from(numeric_paths(event)), min_size=1, max_size=3, unique=True)
    )
    beyond = False
    for path in paths:
        value = draw(st.one_of(beyond_64_bits, within_64_bits))
        replace_at(event, path, value)
        beyond = beyond or is_beyond_64_bits(value)
    return event, paths, beyond


def _at(event_index: int, path: tuple, value: Any) -> tuple[dict[str, Any], list[tuple], bool]:
    event = copy.deepcopy(CLIMATE_EVENTS[event_index])
    event["id"] = f"evt_number_example{event_index}{dotted(path)}{value!r}"[:200]
    replace_at(event, path, value)
    return event, [path], is_beyond_64_bits(value)


def _stored(storage) -> tuple:
    return tuple(
        storage.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        for table in ("events", "orders", "products", "outbox")
    )


@settings(FUZZ, max_examples=150)
@given(case=events_with_hostile_numbers(), indent=st.sampled_from([None, 2]))
@example(case=_at(0, ("created",), 10**30), indent=None)
@example(case=_at(1, ("data", "object", "delayed_at"), 10**19), indent=None)
@example(case=_at(1, ("data", "object", "delayed_at"), -(10**19)), indent=2)
@example(
    case=_at(
        6, ("data", "object", "current_prices_per_metric_ton", "usd", "amount_total"), math.nan
    ),
    indent=None,
)
@example(
    case=_at(3, ("data", "object", "delivery_details", 0, "delivered_at"), math.inf), indent=None
)
def test_numbers_sqlite_cannot_hold_anywhere_in_a_climate_event_are_a_400_naming_the_field(
    running, log, case, indent
):
    event, paths, beyond = case
    storage = running.bot.storage
    before = _stored(storage)
    response = post_webhook(running, log, json.dumps(event, indent=indent).encode(), "right")
    assert response.status_code in (200, 400), response.text[:300]
    if beyond:
        assert response.status_code == 400
    if response.status_code == 400:
        named = response.json()["error"]
        floated = isinstance(event.get("created"), float)  # a float is no integer, finite or not
        assert named.startswith(tuple(f"{dotted(p)}: " for p in paths)) or (
            floated and named == "malformed event: event has no integer created"
        ), (named, paths)
        assert _stored(storage) == before, "a refused event wrote something"
        return
    # What was kept reaches Slack: the worker neither crashes nor parks it.
    running.deliver()
    assert storage.outbox_counts().get("pending", 0) == 0, storage.outbox_counts()
    assert [f.last_error for f in storage.failures()] == []
    assert errors_logged(log) == []


# -- /slack/events ---------------------------------------------------------------------------


@FUZZ
@given(
    body=st.one_of(
        st.binary(max_size=300),
        st.text(max_size=300).map(str.encode),
        json_values.map(lambda value: json.dumps(value).encode()),
        st.builds(
            click_payload, st.just("http://127.0.0.1:9/hook"), action_ids, action_values, users
        )
        .flatmap(reshaped)
        .map(as_form),
        st.builds(
            lambda text: slash_command_body(text=text, response_url="http://127.0.0.1:9/hook"),
            hostile_text,
        ).map(str.encode),
    ),
    content_type=st.sampled_from([None, "application/json", "text/plain", ""]),
    how=st.sampled_from(UNSIGNED),
)
def test_unsigned_slack_requests_of_any_shape_get_401_and_do_nothing(
    running, listeners, log, fake_slack, fake_stripe, body, content_type, how
):
    assume(b"ssl_check" not in body)  # Slack's unsigned certificate probe gets its 200
    slack_calls, stripe_calls = len(fake_slack.calls), len(fake_stripe.calls)
    response = post_slack(running, listeners, log, body, how, content_type)
    assert response.status_code in (401, 413)
    assert (len(fake_slack.calls), len(fake_stripe.calls)) == (slack_calls, stripe_calls)


@FUZZ
@given(data=st.data())
def test_signed_clicks_with_hostile_values_never_get_a_5xx(
    running, listeners, log, fake_slack, delayed_order, data
):
    # A real click always carries a working response_url; every other value may be hostile.
    payload = click_payload(
        fake_slack.new_response_url(),
        data.draw(action_ids),
        data.draw(action_values),
        data.draw(users),
    )
    payload = data.draw(retexted(payload, keep=("response_url",)))
    post_slack(running, listeners, log, as_form(payload), "right")


@FUZZ
@given(
    text=st.one_of(
        hostile_text,
        st.sampled_from(["status", "history", "orders", "products", "pending", "help"]).flatmap(
            lambda word: hostile_text.map(lambda rest: f"{word} {rest}")
        ),
    ),
    command=st.one_of(st.just("/climate"), st.text(max_size=10)),
    extra=st.dictionaries(st.text(max_size=10).filter(lambda k: "payload" not in k), hostile_text),
    dropped=st.lists(st.sampled_from(["user_id", "channel_id", "team_id", "text"]), max_size=2),
)
@example(text="status climorder_fuzz", command="/climate", extra={}, dropped=[])
@example(text="history climorder_fuzz", command="/climate", extra={}, dropped=[])
@example(text="orders", command="/climate", extra={}, dropped=["user_id"])
def test_signed_slash_commands_with_hostile_text_never_get_a_5xx(
    running, listeners, log, fake_slack, delayed_order, text, command, extra, dropped
):
    body = slash_command_body(
        text=text, command=command, response_url=fake_slack.new_response_url()
    )
    fields = dict(urllib.parse.parse_qsl(body, keep_blank_values=True))
    for name in dropped:
        fields.pop(name, None)
    fields.update({k: v for k, v in extra.items() if k != "response_url"})
    post_slack(running, listeners, log, urllib.parse.urlencode(fields).encode(), "right")


@FUZZ
@given(
    inner=inner_events,
    callback_type=callback_types,
    extra=st.dictionaries(st.sampled_from(["event_id", "team_id", "challenge"]), hostile_text),
)
@example(
    inner={"type": "app_home_opened", "user": "U0ALICE"}, callback_type="event_callback", extra={}
)
@example(inner={}, callback_type="url_verification", extra={"challenge": "x" * 5000})
def test_signed_event_callbacks_with_hostile_values_never_get_a_5xx(
    running, listeners, log, inner, callback_type, extra
):
    document = json.loads(event_callback_body(inner, event_id=f"Ev{next(fresh_ids)}"))
    document.update({"type": callback_type, **extra})
    response = post_slack(running, listeners, log, json.dumps(document).encode(), "right")
    if callback_type == "url_verification" and "challenge" in extra:
        assert response.status_code in (200, 413)  # 413: the body is over the 1 MB limit
        if response.status_code == 200:
            assert response.json()["challenge"] == extra["challenge"]


@FUZZ
@given(
    body=st.one_of(
        json_values.map(lambda value: json.dumps(value).encode()),
        json_values.map(lambda value: b"payload=" + urllib.parse.quote(json.dumps(value)).encode()),
        st.builds(
            click_payload, st.just("http://127.0.0.1:9/hook"), action_ids, action_values, users
        )
        .flatmap(lambda payload: reshaped(payload, keep=("response_url",)))
        .map(as_form),
        inner_events.map(lambda inner: json.loads(event_callback_body(inner)))
        .flatmap(reshaped)
        .map(lambda document: json.dumps(document).encode()),
    )
)
@example(body=b"payload=null")
@example(body=b"null")
@example(body=json.dumps({"type": "event_callback", "event": {"channel": False}}).encode())
@example(
    body=json.dumps(
        {"type": "event_callback", "event_id": "Ev1", "event": {"type": "app_home_opened"}}
    ).encode()
)
def test_signed_slack_bodies_of_any_shape_never_get_a_5xx(running, listeners, log, body):
    post_slack(running, listeners, log, body, "right")


@FUZZ
@given(timestamp=header_text, signature=header_text)
@example(timestamp="yesterday", signature="v0=00")
@example(timestamp="0", signature="v0=é")
def test_random_slack_signature_headers_never_get_a_5xx(
    running, listeners, log, timestamp, signature
):
    headers = {
        "X-Slack-Request-Timestamp": timestamp.encode("utf-8").decode("latin-1"),
        "X-Slack-Signature": signature.encode("utf-8").decode("latin-1"),
    }
    body = b"command=%2Fclimate&text=help"
    response = post_slack(running, listeners, log, body, "none", **headers)
    assert response.status_code == 401


# What a Next button of `/climate orders` carries back: "filter|created|order id", as we wrote it
# or tampered with (a number past 64 bits, no number, a number Python will not even read).
hostile_cursors = st.tuples(
    st.one_of(st.sampled_from(["", "delayed", "open", "canceled"]), hostile_text),
    st.one_of(
        st.integers().map(str),
        beyond_64_bits.map(str),
        st.sampled_from(["9" * 5000, " 1", "+1", "1_0", "١٢", "1e3", "nan", ""]),
        hostile_text,
    ),
    st.one_of(st.just("climorder_fuzz"), hostile_text),
).map("|".join)


@FUZZ
@given(cursor=st.one_of(hostile_cursors, hostile_text))
@example(cursor=f"|{10**30}|climorder_fuzz")
@example(cursor=f"delayed|{-(2**63) - 1}|climorder_fuzz")
@example(cursor="|" + "9" * 5000 + "|climorder_fuzz")
def test_next_page_clicks_with_hostile_cursors_are_answered_never_crash(
    running, listeners, log, fake_slack, delayed_order, cursor
):
    url = fake_slack.new_response_url()
    payload = click_payload(url, ORDERS_NEXT_ACTION, cursor, "U0ALICE")
    if post_slack(running, listeners, log, as_form(payload), "right").status_code == 413:
        return  # over the 1 MB limit: Slack sends no such click
    [answer] = fake_slack.responses(url)  # a page, or the sentence that the link is stale
    assert answer["text"]


def test_home_tab_that_slack_fails_to_publish_logs_no_error_traceback(
    running, listeners, log, fake_slack
):
    fake_slack.fail_next("views.publish", retry_after=5)  # Slack rate-limits the Home tab
    body = event_callback_body({"type": "app_home_opened", "user": "U0ALICE", "tab": "home"})
    assert post_slack(running, listeners, log, body.encode(), "right").status_code == 200
    assert len(fake_slack.calls_to("views.publish")) == 1


def submission_payload(order_id: str, reason: str, response_url: str) -> dict[str, Any]:
    """The cancel dialog's submission, as Slack posts it, for `order_id`."""
    view = {
        "id": "V0FUZZ",
        "type": "modal",
        "callback_id": "cancel_order",
        "private_metadata": json.dumps(
            {"order_id": order_id, "channel": "C0CLIMATE", "response_url": response_url}
        ),
        "title": {"type": "plain_text", "text": "Cancel order"},
        "blocks": [
            {
                "type": "input",
                "block_id": "reason",
                "optional": True,
                "label": {"type": "plain_text", "text": "Reason"},
                "element": {"type": "plain_text_input", "action_id": "reason"},
            }
        ],
    }
    body = view_submission_body(view, values={"reason": {"reason": reason}})
    return json.loads(urllib.parse.parse_qs(body)["payload"][0])


@FUZZ
@given(data=st.data())
@example(data=None)
def test_signed_dialog_submissions_with_hostile_values_never_get_a_5xx(
    running, listeners, log, fake_slack, delayed_order, data
):
    if data is None:  # the plain case: a real submission, with a reason Slack would not allow
        payload = submission_payload("climorder_fuzz", "<!channel> " * 600, "")
    else:
        payload = submission_payload(
            data.draw(action_values), data.draw(hostile_text), fake_slack.new_response_url()
        )
        payload = data.draw(retexted(payload))
    post_slack(running, listeners, log, as_form(payload), "right")
