"""Settings of ``bench.auth_overhead``: the test settings (the example project plus the
``hybridtest.Auth`` servicer), the auth test views as URLs, and no access log."""

from __future__ import annotations

import os

from tests.settings import *  # noqa: F403
from tests.settings import HYBRIDSERVER

ROOT_URLCONF = "tests.auth_views"

HYBRIDSERVER = {
    **HYBRIDSERVER,
    "ACCESS_LOG": False,
    "GRPC_AUTH": os.environ.get("BENCH_GRPC_AUTH", "1") == "1",
}
