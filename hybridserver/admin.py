"""Admin pages of the hybridserver app."""

import hybridserver.auth.admin  # noqa: F401  (registers APIKeyAdmin)
