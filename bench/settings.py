"""The example project's settings plus the benchmark's servicer and views.

The middleware, apps and database configuration are the example project's own, so the
benchmark measures a stock Django project; only URLs and one servicer are added.
"""

from __future__ import annotations

import os

from project.settings import *  # noqa: F403
from project.settings import HYBRIDSERVER

ROOT_URLCONF = "bench.urls"

HYBRIDSERVER = {
    **HYBRIDSERVER,
    "GRPC_SERVICERS": [*HYBRIDSERVER["GRPC_SERVICERS"], "bench.servicers.register"],
    # The benchmark answers thousands of requests a second: one log line each would
    # measure the terminal. `--access-log` turns them back on.
    "ACCESS_LOG": False,
}

# The "auth off" server of the auth benchmark: no API-key middleware, no RPC auth.
if os.environ.get("BENCH_AUTH") == "off":
    from project.settings import MIDDLEWARE

    MIDDLEWARE = [m for m in MIDDLEWARE if not m.startswith("hybridserver.auth.")]
    HYBRIDSERVER["GRPC_AUTH"] = False
