"""Settings for tests that run the real ``hybridserver`` command in a subprocess.

``tests.settings`` plus a tests-only URLconf (``/slow/``), plus ``HYBRIDSERVER`` keys
taken from the ``TEST_HYBRIDSERVER`` environment variable (a JSON object), so that one
module covers every settings layer a test needs: ``TEST_HYBRIDSERVER='{"GRPC_PORT": "abc"}'``.
"""

from __future__ import annotations

import json
import os

from tests.settings import *  # noqa: F403
from tests.settings import HYBRIDSERVER

ROOT_URLCONF = "tests.urls"

HYBRIDSERVER = {**HYBRIDSERVER, **json.loads(os.environ.get("TEST_HYBRIDSERVER", "{}"))}
