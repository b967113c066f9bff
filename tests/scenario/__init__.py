"""Scenario tests: a real bot in this process against the fake Slack and Stripe over real HTTP."""
