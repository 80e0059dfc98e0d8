"""A Flask app whose templates read secrets at render time.

Run it from the repository root:

    .venv/bin/pip install -q -e '.[flask]'
    .venv/bin/flask --app examples/flask/app.py run

then open http://127.0.0.1:5000/ (the page) and /status (a resolved settings
dict, shown without its values).
"""

from __future__ import annotations

from typing import Any

from flask import Flask, render_template

from jinja_apsecrets.integrations.flask import SecretsJinja, get_resolver

# Trusted settings: references here are resolved in code, with get_resolver().
DATABASE = {
    "user": "<<local|ap_sep_v1|prod/db:username>>",
    "password": "<<local|ap_sep_v1|prod/db:password>>",
}

app = Flask(__name__)
app.config["APSECRETS_CONFIG"] = "apsecrets.yaml"  # relative to this file's folder
SecretsJinja(app)


@app.get("/")
def index() -> str:
    # `visitor` is data: a reference typed into it would be printed, not resolved.
    return render_template("index.html", visitor="<<local|ap_sep_v1|prod/db:password>>")


@app.get("/status")
def status() -> dict[str, Any]:
    database = get_resolver().resolve(DATABASE)
    return {"database_user": database["user"], "password_length": len(database["password"])}
