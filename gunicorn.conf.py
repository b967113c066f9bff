"""gunicorn settings for climate-bot; `gunicorn app:app` reads this file from the working dir.

Production defaults: two sync workers with threads (each also runs the delivery worker and the
scheduler, which lease rows in SQLite), bound to $PORT, short graceful shutdown, access log on.
"""

import os
import tempfile

from bot.cli import settings_or_exit

bind = f"0.0.0.0:{os.environ.get('PORT', '3000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = 8  # Bolt acknowledges from request threads; keep some free for Slack's 3 seconds
timeout = 30
graceful_timeout = 10
accesslog = "-"
preload_app = False  # the background threads must start in each worker, after the fork
# gunicorn's control socket (for `gunicornc`) defaults to one path per user, $HOME/.gunicorn/
# gunicorn.ctl: a second instance on the host took it from the first, the first one's exit
# deleted it, and a read-only home logged a warning at every start. Signals do the same work.
control_socket_disable = True

# Counters from every worker are summed at /metrics (prometheus-client multiprocess mode).
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="climate-bot-metrics-")


def on_starting(server):
    # Check the configuration once, in the master, before any worker forks: a bad .env stops
    # gunicorn with one readable message instead of every worker failing on its own.
    settings_or_exit()


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
