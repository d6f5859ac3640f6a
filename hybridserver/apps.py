from __future__ import annotations

from django.apps import AppConfig


class HybridServerConfig(AppConfig):
    name = "hybridserver"
    verbose_name = "hybridserver"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from hybridserver import checks  # noqa: F401  (registers the system checks)
