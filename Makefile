# The commands a newcomer needs: `make demo` shows the bot in a local Slack sandbox, `make run`
# starts it from .env, `make test` proves it works.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install run demo packages test test-fast lint format messages clean

$(BIN)/climate-bot: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/climate-bot

run: install
	$(BIN)/python app.py

# No Slack, no Stripe, no .env: a Slack sandbox page on http://127.0.0.1:3000/ with the real bot.
demo: install
	$(BIN)/climate-bot demo

# Debian packages the tests drive: chromium for the browser test (never a browser downloaded by
# Playwright), nginx for the production-proxy test (deploy/nginx.conf). Installing them needs
# root, as in CI; elsewhere run this target with sudo once.
packages:
	@(command -v chromium >/dev/null && test -x /usr/sbin/nginx) || \
		(apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y \
		--no-install-recommends chromium nginx-light)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint packages
	$(BIN)/pytest

# The tests that start no process and no browser (`slow` ones left out): a minute or two.
test-fast: lint
	$(BIN)/pytest -m "not slow"

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Message catalogs: extract every _()/ngettext()/N_() string, merge it into each language's .po,
# fill the English catalog (English is the source language), compile the .mo files the bot loads.
messages: install
	$(BIN)/pybabel extract -F babel.cfg -k N_ -k ngettext:1,2 --no-location --sort-output \
		--project climate-bot -o bot/locales/messages.pot .
	$(BIN)/pybabel update -i bot/locales/messages.pot -d bot/locales -D messages \
		--no-fuzzy-matching --ignore-obsolete --width 100
	$(BIN)/python -m bot.i18n
	$(BIN)/pybabel compile -d bot/locales -D messages --statistics

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
