"""The project's ASGI application under another name than ``application``."""

from __future__ import annotations

from django.core.asgi import get_asgi_application

hybrid = get_asgi_application()
