"""gunicorn settings for climate-bot; `gunicorn app:app` reads this file from the working dir.

Production defaults: two sync workers with threads (each also runs the delivery worker and the
scheduler, which lease rows in SQLite), bound to $PORT, short graceful shutdown, access log on.
"""

import atexit
import os
import shutil
import tempfile

# Counters from every worker are summed at /metrics (prometheus-client multiprocess mode). The
# library picks that mode when it is first imported, and bot.cli imports it: the directory must be
# set before. A directory of our own is removed when this master process exits.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(
        prefix="climate-bot-metrics-"
    )
    _master = os.getpid()

    @atexit.register
    def _remove_metrics_dir() -> None:
        # Workers are forks of this process and inherit the handler; only the master removes it.
        if os.getpid() == _master:
            shutil.rmtree(_metrics_dir, ignore_errors=True)


from bot.cli import database_or_exit, settings_or_exit  # noqa: E402  (after the metrics directory, see above)

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


def on_starting(server):
    # Check the configuration and open the database once, in the master, before any worker
    # forks: a bad .env or a read-only database stops gunicorn with one readable message
    # instead of every worker failing on its own.
    from bot.storage import Storage

    settings = settings_or_exit()
    with database_or_exit():
        Storage(settings.database_path).close()


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def worker_exit(server, worker):
    # A worker stopping (a restart, a deploy, SIGTERM) hands on what it holds: the Slack socket
    # and the Stripe events reading are leases in the database, released here at once, instead
    # of lapsing half a minute later with no socket open meanwhile.
    app = getattr(worker, "wsgi", None)
    bot = getattr(app, "extensions", {}).get("climate-bot")
    if bot is not None:
        bot.stop_background()
