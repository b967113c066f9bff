"""Stripe's thin events (`v1.climate.*`): only a pointer to the object, which the bot fetches."""

from __future__ import annotations

import secrets


def thin(
    event_type: str,
    obj: dict,
    *,
    context: str | None = None,
    twin: str | None = None,
    created: str = "2026-11-29T12:00:00.000Z",
) -> dict:
    kind = obj["object"]
    path = "orders" if kind == "climate.order" else "products"
    event = {
        "id": f"evt_thin_{secrets.token_hex(6)}",
        "object": "v2.core.event",
        "type": f"v1.{event_type}",
        "created": created,
        "livemode": False,
        "related_object": {"id": obj["id"], "type": kind, "url": f"/v1/climate/{path}/{obj['id']}"},
    }
    if context:
        event["context"] = context
    if twin:
        event["snapshot_event"] = twin
    return event
