"""`climate-bot demo`: try climate-bot in a browser, without Slack or Stripe.

One process on 127.0.0.1 runs a Slack sandbox (`workspace`: the fake Slack from the tests,
shown as a web page where you click and type), a Stripe Climate sandbox (FakeStripe with
Frontier's inventory), the bot itself (the production app, configured only through its
settings) and a story (`story`) told to the bot as signed Stripe webhooks (`webhooks`).
`render` turns Block Kit into the page's HTML; `run` starts and stops it all.
"""

from bot.demo.run import DemoError, RunningDemo, run_demo, start_demo

__all__ = ["DemoError", "RunningDemo", "run_demo", "start_demo"]
