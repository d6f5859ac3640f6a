"""``tests.settings_cli`` with the Django cache in Redis, so that servers in several
processes share their rate-limit counts.

``TEST_REDIS_URL`` names the server and database (default: :data:`REDIS_URL`);
``TEST_REDIS_PREFIX`` is the cache's ``KEY_PREFIX``, unique per test so that runs never
see each other's counts.
"""

from __future__ import annotations

import os

from tests.settings_cli import *  # noqa: F403

REDIS_URL = "redis://127.0.0.1:6379/9"

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": os.environ.get("TEST_REDIS_URL", REDIS_URL),
        "KEY_PREFIX": os.environ.get("TEST_REDIS_PREFIX", "hybridserver-tests"),
    }
}
