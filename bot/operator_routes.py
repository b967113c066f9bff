"""The operator's endpoints: `GET /healthz` (alive, with what is wrong), `GET /readyz` (can this
process take a webhook now) and `GET /metrics` (Prometheus)."""

from __future__ import annotations

import sqlite3

from flask import Blueprint, Response, current_app, jsonify

from bot import metrics
from bot.storage import StorageUnavailable

blueprint = Blueprint("operator_routes", __name__)


@blueprint.get("/healthz")
def healthz():
    return jsonify(current_app.extensions["climate-bot"].health())


@blueprint.get("/readyz")
def readyz():
    # Ready means the database takes writes; parked deliveries are reported, not fatal, or one
    # archived channel would take the receiver out of rotation and lose Stripe's webhooks.
    bot = current_app.extensions["climate-bot"]
    try:
        problem = bot.storage.readiness()
        health = bot.health()
    except (sqlite3.Error, OSError, StorageUnavailable) as exc:
        problem = str(exc)
    # A Socket Mode bot without its socket still takes Stripe's webhooks: said, never fatal.
    socket = {"slack_socket": bot.socket.state()} if bot.socket is not None else {}
    if problem is not None:
        # Every webhook would get a 503 (or worse, be written where no restart finds it).
        return jsonify(status="unavailable", reasons=[f"database: {problem}"], **socket), 503
    return jsonify(status=health["status"], reasons=health["reasons"], **socket)


@blueprint.get("/metrics")
def metrics_endpoint():
    body, content_type = metrics.render(current_app.extensions["climate-bot"].storage)
    return Response(body, mimetype=content_type.split(";")[0], content_type=content_type)
