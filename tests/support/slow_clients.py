"""Slow or hostile clients: connections that stop mid-request, and what the server must still do."""

from __future__ import annotations

import socket

import requests

from bot.sandbox import stripe_objects as so
from tests.support.bot import WEBHOOK_SECRET

SLOW_CLIENTS = 40


def half_sent_requests(port: int, count: int) -> list[socket.socket]:
    """`count` connections that stop mid-request: half after part of the headers, half after the
    headers and one byte of a 100-byte body (what a slow or hostile client does)."""
    sockets = []
    for i in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        if i % 2:
            sock.sendall(b"POST /stripe/webhook HTTP/1.1\r\nHost: bot\r\nContent-Ty")
        else:
            sock.sendall(
                b"POST /stripe/webhook HTTP/1.1\r\nHost: bot\r\nContent-Type: application/json"
                b"\r\nContent-Length: 100\r\n\r\n{"
            )
        sockets.append(sock)
    return sockets


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closed `sock` (an answer, if any, then end of stream) by its timeout."""
    try:
        while data := sock.recv(4096):
            assert data.startswith(b"HTTP/") or data, data
        return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    finally:
        sock.close()


def assert_still_serving(base: str, env: dict[str, str], order: dict) -> None:
    """Within Slack's 3 seconds: a webhook is acknowledged, /healthz and a Slack request answer."""
    body, headers = so.webhook_request(so.event("climate.order.created", order), WEBHOOK_SECRET)
    answer = requests.post(base + "/stripe/webhook", data=body, headers=headers, timeout=3)
    assert answer.status_code == 200, answer.text
    assert requests.get(base + "/healthz", timeout=3).status_code == 200
    # An unsigned Slack request is refused at once: the Slack route is reachable too.
    assert requests.post(base + "/slack/events", data=b"x", timeout=3).status_code == 401
