"""The baseline for `bench/ingest.py`: a bare Flask app whose webhook route only answers 200.

Served by the same gunicorn, with the same flags, as the bot, so `bot / bare` in the ingest bench
is what climate-bot's receiving path costs on top of gunicorn, Flask and the HTTP exchange. It
reads the body (any receiver must) and answers a small JSON like the bot's ack; nothing else.

Run by the bench from this directory: ``gunicorn [flags] bare_app:app``.
"""

from flask import Flask, request

app = Flask("bare")


@app.post("/stripe/webhook")
def stripe_webhook() -> tuple[dict[str, bool], int]:
    request.get_data(cache=False)
    return {"received": True}, 200


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}
