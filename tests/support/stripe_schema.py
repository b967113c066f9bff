"""Validate Stripe Climate payloads against the vendored OpenAPI subset (tests only).

Proves that an object, an error body or a webhook event has exactly the shape Stripe documents,
for the fakes' answers and for what the bot and `trigger` send. The OpenAPI 3.0 ``nullable`` is
rewritten as JSON Schema ``null``, the document is registered under a made-up URI, and objects are
validated with Draft 4 (which, like OpenAPI 3.0, ignores keywords placed next to a ``$ref``).
jsonschema is a dev dependency, which is why this lives here and not beside the fakes.
"""

from __future__ import annotations

import copy
import functools
import re
from typing import Any
from urllib.parse import quote

import jsonschema
import referencing
import referencing.jsonschema

from bot.sandbox.stripe_spec import load_spec

__all__ = ["SCHEMA_URI", "schema_names", "validate", "validate_event", "validate_response"]

# A made-up URI: the document has no real home and must never be fetched from the network.
SCHEMA_URI = "urn:stripe-climate"


@functools.cache
def _raw_spec() -> dict[str, Any]:
    return load_spec()


def _allow_null(node: Any) -> Any:
    """Rewrite OpenAPI ``nullable: true`` as JSON Schema, in place, over the whole document."""
    if isinstance(node, dict):
        if node.pop("nullable", False) is True:
            if "type" in node:
                types = node["type"] if isinstance(node["type"], list) else [node["type"]]
                node["type"] = [*types, "null"]
                if "enum" in node:
                    node["enum"] = [*node["enum"], None]
            elif "anyOf" in node:
                node["anyOf"] = [*node["anyOf"], {"type": "null"}]
            # A nullable node with neither (none in this subset) would already accept null.
        for value in node.values():
            _allow_null(value)
    elif isinstance(node, list):
        for item in node:
            _allow_null(item)
    return node


@functools.cache
def _registry() -> referencing.Registry:
    doc = _allow_null(copy.deepcopy(_raw_spec()))
    resource = referencing.Resource(contents=doc, specification=referencing.jsonschema.DRAFT4)
    return referencing.Registry().with_resource(SCHEMA_URI, resource)


@functools.cache
def _validator(pointer: str) -> jsonschema.Draft4Validator:
    return jsonschema.Draft4Validator({"$ref": f"{SCHEMA_URI}#{pointer}"}, registry=_registry())


def schema_names() -> list[str]:
    """Names accepted by :func:`validate` (every component schema in the subset)."""
    return sorted(_raw_spec()["components"]["schemas"])


def _format(errors: list[jsonschema.ValidationError], root: str = "$") -> list[str]:
    out = []
    for err in sorted(errors, key=lambda e: (list(map(str, e.absolute_path)), e.message)):
        path = err.json_path
        if root != "$":
            path = root + path[1:]
        out.append(f"{path}: {err.message}")
    return out


def _check(pointer: str, obj: Any, root: str = "$") -> list[str]:
    return _format(list(_validator(pointer).iter_errors(obj)), root)


def validate(obj: Any, schema: str) -> list[str]:
    """Validate ``obj`` against the component schema ``schema`` (e.g. ``"climate.order"``).

    Returns one ``"<json path>: <problem>"`` line per violation; an empty list means valid.
    Raises ``KeyError`` for a schema name the subset does not contain (a typo, not a bad payload).
    """
    if schema not in _raw_spec()["components"]["schemas"]:
        raise KeyError(f"unknown schema {schema!r}; known: {', '.join(schema_names())}")
    return _check(f"/components/schemas/{schema}", obj)


def validate_event(event: Any) -> list[str]:
    """Validate a snapshot webhook event: the envelope against ``event``, then ``data.object``
    against the schema its ``object`` field names (``climate.order``, ``climate.product``, …).

    Call it on the parsed JSON of a webhook body. An object type the subset has no schema for is
    reported as a problem, since every event this bot handles carries a Climate object.
    """
    problems = validate(event, "event")
    try:
        obj = event["data"]["object"]
    except (KeyError, TypeError):
        return problems  # the envelope check has already said what is missing
    if not isinstance(obj, dict):
        return problems
    kind = obj.get("object")
    if kind in _raw_spec()["components"]["schemas"]:
        problems += _check(f"/components/schemas/{kind}", obj, root="$.data.object")
    else:
        problems.append(f"$.data.object.object: no schema for object type {kind!r}")
    return problems


def _escape(token: str) -> str:
    # JSON pointer escaping, then URI escaping: path templates contain "/" and "{…}".
    return quote(token.replace("~", "~0").replace("/", "~1"), safe="~")


@functools.cache
def _path_patterns() -> list[tuple[re.Pattern[str], str]]:
    patterns = []
    for template in _raw_spec()["paths"]:
        regex = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
        patterns.append((re.compile(f"^{regex}$"), template))
    # Literal templates first, so "/v1/climate/orders" never loses to a "{order}" template.
    patterns.sort(key=lambda p: p[1].count("{"))
    return patterns


def validate_response(method: str, path: str, status: int, body: Any) -> list[str]:
    """Validate a response ``body`` (parsed JSON) for ``method path`` with HTTP ``status``.

    Uses the schema the spec gives that operation for that status (or its ``default`` response,
    which is the ``error`` body), so list envelopes are checked too. ``path`` is a concrete path
    such as ``/v1/climate/orders/climorder_123``; a query string is ignored. Raises ``KeyError``
    when the spec has no such operation.
    """
    path = path.split("?", 1)[0]
    spec_paths = _raw_spec()["paths"]
    template = next((t for regex, t in _path_patterns() if regex.match(path)), None)
    if template is None:
        raise KeyError(f"no path in the spec matches {path!r}")
    operation = spec_paths[template].get(method.lower())
    if operation is None:
        raise KeyError(f"the spec has no {method.upper()} {template}")
    code = str(status) if str(status) in operation["responses"] else "default"
    pointer = "/".join(
        [
            "",
            "paths",
            _escape(template),
            method.lower(),
            "responses",
            code,
            "content",
            _escape("application/json"),
            "schema",
        ]
    )
    return _check(pointer, body)
