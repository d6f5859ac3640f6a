"""django-socio-grpc: ``manage.py grpcrunaioserver`` with a socio ``Service`` whose
``@grpc_action`` methods are the benchmark's RPCs (:mod:`bench.peers.socio_bench`)."""

from __future__ import annotations

import os

from bench.peers.common_settings import *  # noqa: F403
from bench.peers.common_settings import INSTALLED_APPS

BASE_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INSTALLED_APPS = [*INSTALLED_APPS, "rest_framework", "django_socio_grpc", "bench.peers.socio_bench"]
GRPC_FRAMEWORK = {
    "ROOT_HANDLERS_HOOK": "bench.peers.socio_bench.handlers.grpc_handlers",
    "ENABLE_HEALTH_CHECK": False,
}
