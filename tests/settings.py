"""The example project's settings, plus a test servicer that covers every handler shape."""

from project.settings import *  # noqa: F403
from project.settings import HYBRIDSERVER

HYBRIDSERVER = {
    **HYBRIDSERVER,
    "GRPC_SERVICERS": [
        *HYBRIDSERVER["GRPC_SERVICERS"],
        "tests.servicers.register",
        "tests.servicers_auth.register",
        "tests.servicers_ratelimit.register",
    ],
}
