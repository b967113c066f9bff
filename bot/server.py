"""The embedded web server of `python app.py` and `climate-bot serve`: waitress, with a deadline.

A server that gives a thread to each connection as soon as it is accepted can be stopped by a
handful of slow clients: twenty connections that send their headers and one byte of the body
held all sixteen threads of the werkzeug pool this replaced, and webhooks, /healthz and Slack's
3-second deadline all timed out. waitress reads requests on one event loop and hands a request to
a thread only once it has arrived whole, so a slow client costs a socket, not a thread. On top of
its idle timeout (no byte for `REQUEST_SECONDS`), a request that is still arriving after
`REQUEST_SECONDS` in all is dropped, so a client trickling a byte at a time cannot keep a
connection for ever either.

gunicorn's threaded worker reads each request on a pool thread, and its body without a timeout:
in production it runs behind a buffering proxy (README, deploy/nginx.conf).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher

from bot.stripe_webhook import MAX_BODY_BYTES

# Headers and body of one request must arrive within this many seconds; Stripe and Slack send a
# few kilobytes at once.
REQUEST_SECONDS = 5.0
# Threads running requests, as gunicorn's gthread workers have (a thread keeps its database
# connection, bench/ingest.py).
THREADS = 16
# Connections open at once (reading, running or idle); beyond it waitress stops accepting until
# one closes, and the kernel queues new ones meanwhile.
CONNECTION_LIMIT = 500

log = logging.getLogger("climate-bot")


class _Channel(HTTPChannel):
    """A connection that remembers when the request it is reading began to arrive."""

    reading_since: float | None = None

    def received(self, data: bytes) -> bool:
        if self.request is None and data:
            self.reading_since = time.time()
        result = super().received(data)
        if self.request is None:  # every request in `data` arrived whole
            self.reading_since = None
        return result


class _Server(TcpWSGIServer):
    channel_class = _Channel

    def maintenance(self, now: float) -> None:
        super().maintenance(now)  # idle connections
        cutoff = now - REQUEST_SECONDS
        for channel in list(self.active_channels.values()):
            since = getattr(channel, "reading_since", None)
            if since is not None and since < cutoff and not channel.will_close:
                log.info("dropped a request still arriving after %gs", REQUEST_SECONDS)
                channel.will_close = True


def make_server(app: Any, host: str, port: int) -> _Server:
    """A server bound to `host`:`port` (0: any free port); `run()` serves until SystemExit."""
    adj = Adjustments(
        host=host,
        port=port,
        threads=THREADS,
        channel_timeout=REQUEST_SECONDS,
        cleanup_interval=1,  # how often deadlines are checked
        connection_limit=CONNECTION_LIMIT,
        # The app answers 413 itself above MAX_BODY_BYTES; waitress never buffers much more.
        max_request_body_size=2 * MAX_BODY_BYTES,
        asyncore_use_poll=True,  # select() fails past 1,024 descriptors
        ident="climate-bot",
    )
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(adj.threads)
    return _Server(app, dispatcher=dispatcher, adj=adj)
