"""A small Flask guestbook served by Hearth (`wsgi guestbook:app`).

- GET /            the page: a signing form and the entries
- POST /sign       adds an entry; the form carries a CSRF token that must
                   match the one kept in Flask's signed session cookie
- GET /api/entries the entries as JSON
- /static/...      served by Caddy's file_server (Flask serves no static files)

Configuration comes from the environment: SECRET_KEY (required; Hearth's
`settings auto` provides it) and
GUESTBOOK_DATABASE (default: db.sqlite3 beside this file). Create the
database with `python -m flask --app guestbook init-db`.
"""

import hmac
import os
import secrets
import sqlite3
from contextlib import closing
from pathlib import Path

import click
from flask import Flask, abort, g, jsonify, redirect, render_template, request, session, url_for

SCHEMA = """
CREATE TABLE IF NOT EXISTS entry (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    message TEXT NOT NULL,
    created TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
)
"""

secret_key = os.environ.get("SECRET_KEY")
if not secret_key:
    raise RuntimeError("Set SECRET_KEY: `settings auto` in the Caddyfile's wsgi block provides one")

app = Flask(__name__, static_folder=None)  # Caddy serves /static/
app.config.update(
    SECRET_KEY=secret_key,
    DATABASE=os.environ.get("GUESTBOOK_DATABASE", str(Path(__file__).resolve().parent / "db.sqlite3")),
    SESSION_COOKIE_HTTPONLY=True,
    SESSION_COOKIE_SAMESITE="Lax",
    MAX_CONTENT_LENGTH=64 * 1024,
)


def db():
    """The request's database connection, opened on first use."""
    if "db" not in g:
        g.db = sqlite3.connect(app.config["DATABASE"])
        g.db.row_factory = sqlite3.Row
    return g.db


@app.teardown_appcontext
def close_db(_exc):
    conn = g.pop("db", None)
    if conn is not None:
        conn.close()


@app.cli.command("init-db")
def init_db():
    """Create the database and its table if they do not exist."""
    with closing(sqlite3.connect(app.config["DATABASE"])) as conn:
        conn.executescript(SCHEMA)
    click.echo(f"guestbook database ready: {app.config['DATABASE']}")


def csrf_token():
    """The session's CSRF token, created on first use (templates call it)."""
    if "csrf_token" not in session:
        session["csrf_token"] = secrets.token_urlsafe(32)
    return session["csrf_token"]


app.jinja_env.globals["csrf_token"] = csrf_token


@app.before_request
def check_csrf():
    """Refuse state-changing requests whose form token does not match the session's."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    sent = request.form.get("csrf_token", "").encode()
    expected = session.get("csrf_token", "").encode()
    if not expected or not hmac.compare_digest(sent, expected):
        abort(403, description="CSRF token missing or incorrect.")


def entries(limit=50):
    rows = db().execute("SELECT id, name, message, created FROM entry ORDER BY id DESC LIMIT ?", (limit,))
    return [dict(row) for row in rows]


@app.get("/")
def index():
    return render_template("index.html", entries=entries(), error=None)


@app.post("/sign")
def sign():
    name = request.form.get("name", "").strip()
    message = request.form.get("message", "").strip()
    if not name or not message or len(name) > 100 or len(message) > 2000:
        error = "Please give a name (up to 100 characters) and a message (up to 2000)."
        return render_template("index.html", entries=entries(), error=error), 400
    with db():  # commits
        db().execute("INSERT INTO entry (name, message) VALUES (?, ?)", (name, message))
    return redirect(url_for("index"), code=303)


@app.get("/api/entries")
def api_entries():
    return jsonify(entries=entries())
