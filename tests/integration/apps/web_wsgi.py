"""Flask and Django apps for the server tests (run by gunicorn in a subprocess).

``WEB_BEFORE_INIT=1`` builds the apps before ``otelkit.init()``: the Flask app must be traced all the same;
the Django handler cannot be (its middleware is loaded), and says how to fix it in one warning.
``WEB_SERVED_BEFORE_INIT=1`` (with ``WEB_BEFORE_INIT=1``) has the Flask app serve a request (a warm-up call)
before ``otelkit.init()``: Flask then refuses new request hooks, and the app must be traced all the same.
"""

from __future__ import annotations

# ruff: noqa: E402  (otelkit.init() runs before or after the imports, on purpose)
import logging
import os

BEFORE = os.environ.get("WEB_BEFORE_INIT") == "1"

if not BEFORE:
    import otelkit

    otelkit.init()

import django
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path
from flask import Flask, jsonify

log = logging.getLogger("web_wsgi")
log.setLevel(logging.INFO)

flask_app = Flask(__name__)


@flask_app.route("/items/<int:item_id>")
def flask_item(item_id: int) -> object:
    log.info("flask item %s", item_id)
    return jsonify(item=item_id, pid=os.getpid())


@flask_app.route("/boom")
def flask_boom() -> object:
    raise RuntimeError("boom")


@flask_app.route("/health")
def flask_health() -> object:
    return "ok"


def django_item(request: HttpRequest, item_id: int) -> HttpResponse:
    log.info("django item %s", item_id)
    return JsonResponse({"item": item_id, "pid": os.getpid()})


def django_health(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


urlpatterns = [path("items/<int:item_id>", django_item), path("health", django_health)]

settings.configure(
    DEBUG=False, ALLOWED_HOSTS=["*"], ROOT_URLCONF=__name__, SECRET_KEY="not-a-secret-test-only",
    MIDDLEWARE=[], INSTALLED_APPS=[], DATABASES={}, LOGGING_CONFIG=None,
)
django.setup()

from django.core.asgi import get_asgi_application
from django.core.wsgi import get_wsgi_application

django_app = get_wsgi_application()
django_asgi_app = get_asgi_application()

if BEFORE:
    if os.environ.get("WEB_SERVED_BEFORE_INIT") == "1":
        warm = flask_app.test_client().get("/items/0", headers={"X-Correlation-ID": "warm-up"})
        assert warm.status_code == 200 and flask_app._got_first_request
    import otelkit

    otelkit.init()
