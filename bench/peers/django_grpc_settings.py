"""django-grpc: ``manage.py grpcserver``, its default thread-pool server (``grpc.server``),
which runs plain ``def`` handlers; django-grpc's async mode wraps handlers in plain
functions and so cannot run ``async def`` ones."""

from __future__ import annotations

from bench.peers.common_settings import *  # noqa: F403
from bench.peers.common_settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "django_grpc"]
GRPCSERVER = {"servicers": ["bench.servicers.register"], "async": False}
