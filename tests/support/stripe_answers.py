"""Checks on everything a FakeStripe answered: Stripe's documented shapes, no bug in the fake.

Tests of the fake itself (and of the failures added to it) assert ``answer_problems(fake) ==
[]`` before closing it, so each answer is checked whatever the test looked at.
"""

from __future__ import annotations

from bot.sandbox.stripe import FakeStripe
from tests.support import stripe_schema

__all__ = ["answer_problems"]


def answer_problems(fake: FakeStripe) -> list[str]:
    """What is wrong with `fake`'s answers so far; ``[]`` when nothing is.

    Every JSON body must match the OpenAPI subset's schema for its operation and status (the
    ``error`` schema for a path outside the spec), every answer carry a ``req_`` request id, and
    the fake must not have hit a bug of its own (``fake.errors``).
    """
    problems = [f"the fake hit a bug of its own:\n{trace}" for trace in fake.errors]
    for call in fake.calls:
        where = f"{call.method} {call.path} -> {call.status}"
        if call.status and not (call.request_id or "").startswith("req_"):
            problems.append(f"{where}: no req_ request id")
        if call.response is None:
            continue  # a dropped connection or an HTML page: no JSON was sent
        try:
            found = stripe_schema.validate_response(
                call.method, call.path, call.status, call.response
            )
        except KeyError:  # a path outside the spec: Stripe still answers with an error body
            found = stripe_schema.validate(call.response, "error")
        problems += [f"{where}: {problem}" for problem in found]
    return problems
