"""A routing file that sends products, a Connect partner and delays each to their own channel."""

from __future__ import annotations

ROUTES = """
# products to their own channel; a Connect partner to theirs, in Japanese
[[route]]
events = ["climate.product.*"]
channel = "C0PRODUCTS"

[[route]]
accounts = ["acct_partner1"]
channel = "C0PARTNER"

[[route]]
events = ["climate.order.delayed"]
channel = "C0ALERTS"

[channels.C0PARTNER]
locale = "ja"
"""
