"""Process tests: the bot as real OS processes (app.py, gunicorn, nginx, a fresh venv)."""
