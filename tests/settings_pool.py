"""``tests.settings_cli`` with Django's PostgreSQL connection pool (``psycopg_pool``).

Django pools only with ``CONN_MAX_AGE = 0``: a request gives its connection back to the
pool when it ends, instead of closing it.
"""

from __future__ import annotations

from tests.settings_cli import *  # noqa: F403
from tests.settings_cli import DATABASES

POOL = {"min_size": 2, "max_size": 8, "timeout": 30}

# A new dict: the one imported is the test process's own settings.
DATABASES = {
    **DATABASES,
    "default": {
        **DATABASES["default"],
        "CONN_MAX_AGE": 0,
        "OPTIONS": {**DATABASES["default"].get("OPTIONS", {}), "pool": POOL},
    },
}
