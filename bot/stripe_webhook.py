"""`POST /stripe/webhook`: verify, record, acknowledge — no Slack or Stripe call here, and no
snapshot touched: the delivery worker applies what was recorded (`recording.apply_recorded`).

The signature is checked on the raw body with the SDK (300 s tolerance) and the JSON parsed once;
building SDK objects for every event cost a third of the receiver's throughput under gunicorn
(0.35-0.39 of a bare Flask route's requests/s with SDK objects, 0.52-0.62 without).
"""

from __future__ import annotations

import functools
import json
import logging

import stripe
from flask import Blueprint, Response, current_app, jsonify, request

from bot import metrics
from bot.event_numbers import MalformedEvent, OutOfRange
from bot.recording import Outcome, parse_event, record_inbound
from bot.storage import StorageUnavailable

log = logging.getLogger(__name__)

SIGNATURE_TOLERANCE_SECONDS = 300
MAX_BODY_BYTES = 1024 * 1024

blueprint = Blueprint("stripe_webhook", __name__)


@blueprint.post("/stripe/webhook")
def stripe_webhook():
    bot = current_app.extensions["climate-bot"]
    if not bot.settings.webhook_secrets:
        # Reading the Events API instead (STRIPE_POLL_INTERVAL): no secret, so nothing can be
        # verified; the endpoint says so rather than refusing each event as badly signed.
        metrics.count_event("unverified", "refused")
        return jsonify(
            error="webhooks are off: STRIPE_WEBHOOK_SECRET is not set, and this bot reads"
            " Stripe's Events API instead (STRIPE_POLL_INTERVAL)"
        ), 404
    raw = request.get_data(cache=False)  # over MAX_CONTENT_LENGTH → 413 before we get here
    header = request.headers.get("Stripe-Signature")
    if not header:
        return _refuse("missing Stripe-Signature header")
    refusal = _verify(raw, header, bot.settings.webhook_secrets)
    if refusal is not None:
        return _refuse(refusal)
    try:
        text = raw.decode("utf-8")
        event = parse_event(raw)
    except OutOfRange as exc:
        # A number SQLite cannot hold or no date can be: refused before anything is stored, so
        # Stripe is told which field (the 400 names it), not given a 500 to retry for 3 days.
        return _refuse(str(exc))
    except (UnicodeDecodeError, MalformedEvent) as exc:
        return _refuse(f"malformed event: {exc}")
    try:
        received = record_inbound(bot.storage, event, text)
    except StorageUnavailable as exc:
        # Not acknowledged: Stripe retries for three days, by when the database may be back.
        _log_unavailable(str(exc))
        metrics.count_event(metrics.event_label(event["type"].removeprefix("v1.")), "unavailable")
        return jsonify(error=f"database unavailable: {exc}"), 503
    outcome = received.outcome.value
    metrics.count_event(metrics.event_label(event["type"].removeprefix("v1.")), outcome)
    if received.outcome is Outcome.QUEUED:
        bot.deliverer.recorded()  # the worker applies it, then posts what it makes
    # A queued event is logged when the worker applies it: one line, off the request path.
    log.log(
        logging.DEBUG if received.outcome is Outcome.QUEUED else logging.INFO,
        "stripe event %s (%s): %s",
        event["id"],
        event["type"],
        outcome,
    )
    return Response(_acknowledgement(outcome), mimetype="application/json")


_last_unavailable: list[str] = []


def _log_unavailable(reason: str) -> None:
    """Log why webhooks are refused once per reason, not once per webhook."""
    if _last_unavailable != [reason]:
        _last_unavailable[:] = [reason]
        log.error(
            "refusing Stripe webhooks with 503 (Stripe retries them): %s. Restore the database"
            " from a backup or free the disk, then restart climate-bot.",
            reason,
        )


def _verify(raw: bytes, header: str, secrets: tuple[str, ...]) -> str | None:
    """None when the signature is valid for one of `secrets`; else why not (the first reason)."""
    reasons = []
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(
                raw, header, secret, tolerance=SIGNATURE_TOLERANCE_SECONDS
            )
        except stripe.SignatureVerificationError as exc:
            reasons.append(f"signature verification failed: {exc.user_message or exc}")
        except (UnicodeError, TypeError, ValueError):
            # The SDK trips over a body that is not UTF-8 or a header that is not ASCII.
            return "signature verification failed: unreadable body or header"
        else:
            return None
    return reasons[0]


@functools.cache
def _acknowledgement(outcome: str) -> bytes:
    """The body Stripe gets (it reads only the status), encoded once per outcome. "queued": the
    event is recorded, and the worker applies it next."""
    body = {"outcome": outcome, "received": True}
    return json.dumps(body, separators=(",", ":")).encode()


def _refuse(reason: str):
    log.warning("refused a Stripe webhook: %s", reason)
    metrics.count_event("unverified", "refused")
    return jsonify(error=reason), 400
