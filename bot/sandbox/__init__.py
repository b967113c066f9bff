"""Fake Slack and Stripe servers and Stripe object factories: the sandbox of the demo and tests."""
