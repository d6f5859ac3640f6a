"""Django settings for the example project, configured from the environment.

Environment variables:

- ``DJANGO_SECRET_KEY``: secret key (an insecure development key by default).
- ``DJANGO_DEBUG``: ``1``/``true``/``yes``/``on`` to enable debug mode (off by default).
- ``DJANGO_ALLOWED_HOSTS``: comma-separated host names.
- ``DATABASE_URL``: database URL as understood by dj-database-url; by default a
  SQLite file ``db.sqlite3`` in the current working directory.
- ``DJANGO_CONN_MAX_AGE``: seconds to keep database connections open (0 by default).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dj_database_url


def _env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def _database() -> dict[str, Any]:
    conn_max_age = int(os.environ.get("DJANGO_CONN_MAX_AGE", "0"))
    if url := os.environ.get("DATABASE_URL"):
        database = dict(
            dj_database_url.parse(url, conn_max_age=conn_max_age, conn_health_checks=True)
        )
    else:
        # In the working directory, not next to this file: the project may be installed
        # as a wheel into site-packages. A dict rather than a sqlite:// URL, which a "#"
        # or "?" in the path would break.
        database = {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": Path.cwd() / "db.sqlite3",
            "CONN_MAX_AGE": conn_max_age,
            "CONN_HEALTH_CHECKS": True,
        }
    if database["ENGINE"] == "django.db.backends.sqlite3":
        # Many threads write at once under load: wait for the write lock instead of
        # failing with "database is locked", and let readers go on beside a writer.
        database.setdefault("OPTIONS", {}).update(
            timeout=20,
            transaction_mode="IMMEDIATE",
            init_command="PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        )
    return database


SECRET_KEY = os.environ.get(
    "DJANGO_SECRET_KEY", "django-insecure-hybridserver-example-dev-key-do-not-use"
)

DEBUG = _env_bool("DJANGO_DEBUG")

ALLOWED_HOSTS = _env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "hybridserver",
    "project.catalog",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # API keys (Authorization: Bearer / X-API-Key) for the JSON API; sessions otherwise.
    # Last, so that Django's middleware above runs as one coalesced run (README).
    "hybridserver.auth.AuthenticationMiddleware",
]

ROOT_URLCONF = "project.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

ASGI_APPLICATION = "project.asgi.application"

DATABASES = {"default": _database()}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

HYBRIDSERVER = {
    "GRPC_SERVICERS": ["project.catalog.services.register"],
}
