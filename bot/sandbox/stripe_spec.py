"""Stripe's Climate OpenAPI subset and fixtures, vendored in ``stripe_data/``, read as JSON.

The fakes and the object factories build on these files at run time (``climate-bot demo`` and
``trigger`` among them), so this module needs nothing beyond the standard library. Validating a
payload against the schemas is the tests' business: ``tests/support/stripe_schema.py``.
"""

from __future__ import annotations

import copy
import functools
import json
from importlib import resources
from typing import Any

__all__ = ["FIXTURES_FILE", "SPEC_FILE", "load_fixtures", "load_spec"]

SPEC_FILE = "climate-openapi-subset.json"
FIXTURES_FILE = "climate-fixtures.json"


@functools.cache
def _read_json(name: str) -> Any:
    # importlib.resources keeps this working from a wheel or zip, not only from a source checkout.
    data = resources.files("bot.sandbox").joinpath("stripe_data", name)
    return json.loads(data.read_text(encoding="utf-8"))


def load_spec() -> dict[str, Any]:
    """A fresh copy of the vendored OpenAPI subset, exactly as shipped (no conversion)."""
    return copy.deepcopy(_read_json(SPEC_FILE))


def load_fixtures() -> dict[str, Any]:
    """A fresh copy of the vendored upstream fixtures (``resources``, ``beta_resources``)."""
    return copy.deepcopy(_read_json(FIXTURES_FILE))
