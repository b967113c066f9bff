"""The bot's web tier alone, for `bench/ingest.py`: app.py without the background threads.

Exactly what ``app.py`` serves under gunicorn (same settings, same ``create_app``), except that
the delivery worker and the scheduler do not run in the web processes — the layout the README
describes for ``climate-bot worker`` beside a web tier that does not run them. Set beside the
production bot in the same run, it shows what the background threads cost the receiving path.

Run by the bench: ``gunicorn -c gunicorn.conf.py --pythonpath bench [flags] web_tier_app:app``.
"""

from bot.cli import configure_logging, settings_or_exit
from bot.web import create_app

# Exit code 3 tells gunicorn the worker cannot boot (as in app.py).
GUNICORN_BOOT_ERROR = 3

configure_logging()
settings = settings_or_exit(GUNICORN_BOOT_ERROR)
app = create_app(settings, start_background=False)
