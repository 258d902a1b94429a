"""End-to-end tests: the example app deployed as in production (nginx, gunicorn, Redis, PostgreSQL), see stack.py."""
