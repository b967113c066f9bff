"""climate-bot's entry point.

`gunicorn app:app` serves the app in production; each worker process also runs the delivery worker
and the scheduler (safe: they lease rows in SQLite). `python app.py` runs everything in this one
process, listening on $PORT.
"""

import sys

from bot.cli import configure_logging, database_or_exit, serve_forever, settings_or_exit

# Under gunicorn, exit code 3 means "worker failed to boot": gunicorn stops instead of
# restarting the worker forever with the same bad configuration.
GUNICORN_BOOT_ERROR = 3

configure_logging()
settings = settings_or_exit(2 if __name__ == "__main__" else GUNICORN_BOOT_ERROR)

if __name__ == "__main__":
    with database_or_exit(2):
        serve_forever(settings)
    sys.exit(0)

from bot.web import create_app  # noqa: E402

with database_or_exit(GUNICORN_BOOT_ERROR):  # read-only, unreadable: one line, no traceback
    app = create_app(settings, start_background=True)
