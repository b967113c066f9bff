"""climate-bot: Stripe Climate (Frontier) orders in Slack; the README's Layout maps its modules."""
