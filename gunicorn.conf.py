"""gunicorn settings for climate-bot; `gunicorn app:app` reads this file from the working dir."""

from bot.cli import settings_or_exit


def on_starting(server):
    # Check the configuration once, in the master, before any worker forks: a bad .env stops
    # gunicorn with one readable message instead of every worker failing on its own.
    settings_or_exit()
