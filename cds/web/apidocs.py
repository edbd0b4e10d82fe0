"""The API page a person can browse: Swagger UI at ``GET /api-docs`` over ``GET /openapi.json``.

Swagger UI's files come from the installed ``flask-swagger-ui`` package (its ``dist`` folder: the
Swagger UI release it names, Apache-2.0), served by this service, so the page works with no internet
access. The page and the script that starts it are this package's (``cds/templates/apidocs/``): no
inline script, so the page is sent with a strict Content-Security-Policy of its own (scripts, styles and
calls to this origin only). Like ``/openapi.json`` the page is open: it describes the API, and every call
made from it ("Try it out") still needs the credentials of the endpoint it calls (a client JWT, pasted
under "Authorize").
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from flask import Blueprint, Flask, Response, abort, send_from_directory

bp = Blueprint("apidocs", __name__)

PAGE = Path(__file__).resolve().parent.parent / "templates" / "apidocs"
#: the Swagger UI files the page uses, out of the package's dist folder
ASSETS = {"swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png", "LICENSE", "VERSION"}
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def swagger_ui_dist() -> Path:
    """The folder of Swagger UI's files in the installed flask-swagger-ui package."""
    return Path(str(resources.files("flask_swagger_ui") / "dist"))


@bp.get("/api-docs")
def page() -> Response:
    return send_from_directory(PAGE, "index.html", mimetype="text/html", max_age=0)


@bp.get("/api-docs/start.js")
def start() -> Response:
    return send_from_directory(PAGE, "start.js", mimetype="text/javascript", max_age=0)


@bp.get("/api-docs/assets/<name>")
def asset(name: str) -> Response:
    if name not in ASSETS:
        abort(404)
    mimetype = "text/plain" if name in ("LICENSE", "VERSION") else None
    return send_from_directory(swagger_ui_dist(), name, mimetype=mimetype, max_age=3600)


@bp.after_request
def secure(response: Response) -> Response:
    response.headers.update(HEADERS)
    return response


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
