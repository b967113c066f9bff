"""climate-bot's web tier alone: `gunicorn web_tier:app` serves the three routes without the
delivery worker and the scheduler, for a layout with `climate-bot worker` beside it.

Its webhooks record events and answer; the worker process applies them at its next look (within
a second) and delivers what they queue. Without a worker running, nothing is posted to Slack.
"""

from bot.cli import configure_logging, database_or_exit, settings_or_exit

# Under gunicorn, exit code 3 means "worker failed to boot" (as in app.py).
GUNICORN_BOOT_ERROR = 3

configure_logging()
settings = settings_or_exit(GUNICORN_BOOT_ERROR)

from bot.web import create_app  # noqa: E402

with database_or_exit(GUNICORN_BOOT_ERROR):
    app = create_app(settings, start_background=False)
