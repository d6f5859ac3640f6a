from __future__ import annotations

from django.apps import AppConfig


class CatalogConfig(AppConfig):
    """The catalog of books."""

    name = "project.catalog"
    label = "catalog"
    verbose_name = "Catalog"
