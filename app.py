"""climate-bot's entry point.

`gunicorn app:app` serves the app in production; each worker process also runs the delivery worker
and the scheduler (safe: they lease rows in SQLite). `python app.py` runs everything in this one
process, listening on $PORT.
"""

import sys

from bot.cli import (
    configure_logging,
    database_or_exit,
    gunicorn_app,
    serve_forever,
    settings_or_exit,
)

if __name__ == "__main__":
    configure_logging()
    settings = settings_or_exit(2)
    with database_or_exit(2):
        serve_forever(settings)
    sys.exit(0)

app = gunicorn_app(start_background=True)
