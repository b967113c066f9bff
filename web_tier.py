"""climate-bot's web tier alone: `gunicorn web_tier:app` serves the three routes without the
delivery worker and the scheduler, for a layout with `climate-bot worker` beside it.

Its webhooks record events and answer; the worker process applies them at its next look (within
a second) and delivers what they queue. Without a worker running, nothing is posted to Slack.
"""

from bot.cli import gunicorn_app

app = gunicorn_app(start_background=False)
