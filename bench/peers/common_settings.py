"""What both peers share: the example project's database settings and catalog app, without
hybridserver (not installed in the peers' virtualenv) and without the admin and HTTP
parts, which a gRPC-only server does not use."""

from __future__ import annotations

from project.settings import *  # noqa: F403

INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "project.catalog"]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "bench.peers.urls"
